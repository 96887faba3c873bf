//! The scale benchmark (issue 14): a real `nmo run` process (the release binary Cargo built for
//! the bench) against a large cluster, on the in-process sandbox and on the real control plane
//! (`tests/control-plane/run`, with the kubelet simulator `nmo::kubelet` playing the nodes).
//!
//! For each backend, in order:
//! 1. seed the nodes (three zones, two pools) and the idle MaintenanceWindows (each selects a
//!    pool and a zone; they open only on 29 February), no pods yet;
//! 2. start `nmo run` #1, wait until it has reconciled every window and its requests stopped,
//!    then measure its RSS and CPU over an idle span: the figures with **0 pods**;
//! 3. seed the pods while #1 runs (its RSS after that shows whether pods reach its memory),
//!    then stop #1;
//! 4. measure the API server's CPU over an idle span with no nmo (the baseline);
//! 5. start `nmo run` #2 against the full cluster: start-up peak, idle RSS and CPU, and the API
//!    server's CPU with nmo idle;
//! 6. roll one more window (opened with the run-now annotation, `release.after: 0s`) through
//!    `NMO_SCALE_ROLL` nodes, `NMO_SCALE_MAX_UNAVAILABLE` at a time: nmo's CPU during it, the
//!    time from each NodeMaintenance's creation to `Succeeded`, the handover gap, nmo's API
//!    requests per node maintained (counted at the server: the sandbox counts by User-Agent,
//!    kube-apiserver writes an audit log with it), and the API server's CPU.
//!
//! Times come from a watch of the NodeMaintenances in this process, stamped on its clock. The
//! handover gap: with budget M, the k-th NodeMaintenance created (k >= M) took the slot the
//! (k-M)-th release freed, so its gap is created[k] - deleted[k-M] (both sorted).
//! Memory is `VmRSS`/`VmHWM` from /proc/PID/status, CPU is utime + stime from /proc/PID/stat,
//! the API server's CPU is `process_cpu_seconds_total` from its own `/metrics`.
//!
//! Sizes (environment): `NMO_SCALE_NODES` (5000), `NMO_SCALE_PODS_PER_NODE` (30),
//! `NMO_SCALE_WINDOWS` (100), `NMO_SCALE_ROLL` (100), `NMO_SCALE_MAX_UNAVAILABLE` (5),
//! `NMO_SCALE_IDLE_SECS` (20), `NMO_SCALE_BACKENDS` (`sandbox,real`), `NMO_SCALE_QPS` and
//! `NMO_SCALE_BURST` (nmo's client-side rate limit; default its own 20/30), and for the real control
//! plane `NMO_SCALE_REAL_NODES` and `NMO_SCALE_REAL_PODS_PER_NODE` (as NMO_SCALE_NODES and
//! NMO_SCALE_PODS_PER_NODE: every pod is a create and a status write through etcd, and the
//! kubelet simulator keeps up with what kube-apiserver answers).
//! A small run: `NMO_SCALE_NODES=500 NMO_SCALE_ROLL=20 cargo bench --bench scale`.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use nmo::api::{MaintenancePhase, MaintenanceWindow, NodeMaintenance, RUN_NOW_ANNOTATION};
use nmo::kubelet::{KubeletSimulator, SimulatorConfig, SimulatorHandle};
use nmo::sandbox::Sandbox;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../tests/support/real_cluster.rs"]
mod real_cluster;

/// Grace periods run this many times faster than real time (both backends).
const SPEED: f64 = 10.0;
/// Every pod's terminationGracePeriodSeconds: 1 s at SPEED.
const GRACE: i64 = 10;
/// The name of the rolling window.
const ROLL_WINDOW: &str = "scale-roll";
/// Requests in flight while seeding the real control plane.
const SEED_CONCURRENCY: usize = 32;

fn env_or(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

#[derive(Clone, Debug)]
struct Sizes {
    nodes: usize,
    pods_per_node: usize,
    windows: usize,
    roll: usize,
    max_unavailable: usize,
    idle: Duration,
}

fn main() {
    let nodes = env_or("NMO_SCALE_NODES", 5_000);
    let common = Sizes {
        nodes,
        pods_per_node: env_or("NMO_SCALE_PODS_PER_NODE", 30),
        windows: env_or("NMO_SCALE_WINDOWS", 100),
        roll: env_or("NMO_SCALE_ROLL", 100).min(nodes),
        max_unavailable: env_or("NMO_SCALE_MAX_UNAVAILABLE", 5).max(1),
        idle: Duration::from_secs(env_or("NMO_SCALE_IDLE_SECS", 20) as u64),
    };
    let backends = std::env::var("NMO_SCALE_BACKENDS").unwrap_or_else(|_| "sandbox,real".into());
    let audit_dir = tempfile::tempdir().expect("temp dir");
    let audit_log = audit_dir.path().join("audit.log");
    // tests/control-plane/run writes kube-apiserver's audit log here (every request's user
    // agent, verb and resource); set before any thread starts.
    // SAFETY: single-threaded here, nothing reads the environment concurrently.
    unsafe { std::env::set_var("CONTROL_PLANE_AUDIT_LOG", &audit_log) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    for backend in backends.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        match backend {
            "sandbox" => runtime.block_on(run(Backend::Sandbox, common.clone(), &audit_log)),
            "real" => {
                let mut sizes = common.clone();
                sizes.nodes = env_or("NMO_SCALE_REAL_NODES", common.nodes);
                sizes.pods_per_node = env_or("NMO_SCALE_REAL_PODS_PER_NODE", common.pods_per_node);
                sizes.roll = sizes.roll.min(sizes.nodes);
                runtime.block_on(run(Backend::Real, sizes, &audit_log))
            }
            other => panic!("NMO_SCALE_BACKENDS: unknown backend {other:?} (sandbox or real)"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Sandbox,
    Real,
}

/// The cluster of one run. Fields drop in order: the simulator's loops before the control plane.
enum Cluster {
    Sandbox(Sandbox),
    Real(Box<Real>),
}

struct Real {
    _loops: SimulatorHandle,
    simulator: KubeletSimulator,
    _cluster: real_cluster::RealCluster,
    audit: Mutex<Audit>,
}

struct Env {
    name: &'static str,
    cluster: Cluster,
    client: Client,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

fn node_name(i: usize) -> String {
    format!("node-{i:05}")
}

/// Labels of node `i`: zone, pool, worker, and `scale-roll=yes` for the first `roll` nodes.
fn node_labels(i: usize, roll: usize) -> Vec<(String, String)> {
    let mut labels = vec![
        (
            "topology.kubernetes.io/zone".into(),
            format!("zone-{}", i % 3),
        ),
        (
            "pool".into(),
            if i.is_multiple_of(2) {
                "general"
            } else {
                "batch"
            }
            .into(),
        ),
        ("node-role.kubernetes.io/worker".into(), String::new()),
    ];
    if i < roll {
        labels.push(("scale-roll".into(), "yes".into()));
    }
    labels
}

impl Env {
    async fn start(backend: Backend, sizes: &Sizes, audit_log: &Path) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        let started = Instant::now();
        let env = match backend {
            Backend::Sandbox => {
                let sandbox = Sandbox::builder()
                    .speed(SPEED)
                    .start()
                    .await
                    .expect("sandbox starts");
                sandbox.install_crds().expect("CRDs install");
                sandbox
                    .write_kubeconfig(&kubeconfig)
                    .expect("kubeconfig written");
                for i in 0..sizes.nodes {
                    let labels = node_labels(i, sizes.roll);
                    let labels: Vec<(&str, &str)> = labels
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    sandbox
                        .add_node(&node_name(i), &labels)
                        .expect("node added");
                }
                let client = sandbox.client().expect("client");
                Env {
                    name: "sandbox",
                    cluster: Cluster::Sandbox(sandbox),
                    client,
                    kubeconfig,
                    dir,
                }
            }
            Backend::Real => {
                let _ = std::fs::remove_file(audit_log);
                let cluster = real_cluster::RealCluster::start().await;
                std::fs::copy(cluster.kubeconfig(), &kubeconfig).expect("copy kubeconfig");
                let config = kube::Config::from_custom_kubeconfig(
                    kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
                    &Default::default(),
                )
                .await
                .expect("config");
                let client = Client::try_from(config).expect("client");
                install_crds(&client).await;
                // No node lifecycle controller reads the heartbeat Leases here: renew them
                // hourly, so that 5,000 renewals every 10 s do not load the API server.
                let simulator = KubeletSimulator::new(
                    client.clone(),
                    SimulatorConfig {
                        speed: SPEED,
                        lease_renew: Duration::from_secs(3600),
                        ..Default::default()
                    },
                );
                futures::stream::iter(0..sizes.nodes)
                    .map(|i| {
                        let simulator = simulator.clone();
                        async move {
                            let labels = node_labels(i, sizes.roll);
                            let labels: Vec<(&str, &str)> = labels
                                .iter()
                                .map(|(k, v)| (k.as_str(), v.as_str()))
                                .collect();
                            simulator.register_node(&node_name(i), &labels).await
                        }
                    })
                    .buffer_unordered(SEED_CONCURRENCY)
                    .try_collect::<Vec<()>>()
                    .await
                    .expect("nodes registered");
                let loops = simulator.start();
                Env {
                    name: "real",
                    cluster: Cluster::Real(Box::new(Real {
                        _loops: loops,
                        simulator,
                        _cluster: cluster,
                        audit: Mutex::new(Audit::new(audit_log)),
                    })),
                    client,
                    kubeconfig,
                    dir,
                }
            }
        };
        create_windows(&env.client, sizes.windows).await;
        println!(
            "[{}] {} nodes and {} MaintenanceWindows seeded in {:.1} s",
            env.name,
            sizes.nodes,
            sizes.windows,
            started.elapsed().as_secs_f64()
        );
        env
    }

    /// `pods_per_node` pods on every node, Running ([`pod_object`]). On the sandbox: put in
    /// its store directly (`Sandbox::seed`, Running and Ready); on the real control plane:
    /// created through the API and started by the kubelet simulator.
    async fn seed_pods(&self, sizes: &Sizes) {
        let started = Instant::now();
        match &self.cluster {
            Cluster::Sandbox(sandbox) => {
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                for t in 0..10 {
                    sandbox
                        .seed(json!({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": format!("team-{t}")}}))
                        .expect("namespace seeded");
                }
                for n in 0..sizes.nodes {
                    for p in 0..sizes.pods_per_node {
                        let mut pod = pod_object(n, p);
                        pod["status"] = json!({"phase": "Running", "startTime": now,
                            "conditions": [{"type": "Ready", "status": "True",
                                "lastTransitionTime": now}]});
                        sandbox.seed(pod).expect("pod seeded");
                    }
                }
            }
            Cluster::Real(_) => {
                for t in 0..10 {
                    let ns: Namespace =
                        serde_json::from_value(json!({"metadata": {"name": format!("team-{t}")}}))
                            .expect("namespace");
                    match Api::<Namespace>::all(self.client.clone())
                        .create(&PostParams::default(), &ns)
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 409 => {}
                        Err(e) => panic!("create namespace team-{t}: {e}"),
                    }
                }
                let total = sizes.nodes * sizes.pods_per_node;
                futures::stream::iter(0..total)
                    .map(|i| {
                        let client = self.client.clone();
                        let n = i / sizes.pods_per_node;
                        let p = i % sizes.pods_per_node;
                        async move { create_real_pod(client, n, p).await }
                    })
                    .buffer_unordered(SEED_CONCURRENCY)
                    .collect::<Vec<()>>()
                    .await;
                // Wait until the simulator has started every pod.
                let pods: Api<Pod> = Api::all(self.client.clone());
                let deadline = Instant::now() + Duration::from_secs(3600);
                loop {
                    let pending = pods
                        .list(
                            &ListParams::default()
                                .fields("status.phase!=Running")
                                .limit(1),
                        )
                        .await
                        .expect("list pods not Running");
                    if pending.items.is_empty() {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "[real] pods still not Running after an hour"
                    );
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
        println!(
            "[{}] {} pods seeded and Running in {:.1} s",
            self.name,
            sizes.nodes * sizes.pods_per_node,
            started.elapsed().as_secs_f64()
        );
    }

    /// nmo's requests so far, by (verb, resource), as the API server counted them.
    fn nmo_requests(&self) -> BTreeMap<(String, String), u64> {
        match &self.cluster {
            Cluster::Sandbox(sandbox) => sandbox.request_counts_of("nmo"),
            Cluster::Real(real) => {
                let mut audit = real.audit.lock().unwrap();
                audit.poll();
                audit.of("nmo")
            }
        }
    }

    fn nmo_total(&self) -> u64 {
        self.nmo_requests().values().sum()
    }

    /// kube-apiserver's own `process_cpu_seconds_total` (the real control plane only).
    async fn apiserver_cpu(&self) -> Option<f64> {
        if !matches!(self.cluster, Cluster::Real(_)) {
            return None;
        }
        let req = http::Request::get("/metrics")
            .body(Vec::new())
            .expect("request");
        let text = self
            .client
            .request_text(req)
            .await
            .expect("GET /metrics of kube-apiserver");
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
            .expect("process_cpu_seconds_total in kube-apiserver's /metrics");
        Some(value.trim().parse().expect("a number of seconds"))
    }

    fn simulated_nodes(&self) -> Option<usize> {
        match &self.cluster {
            Cluster::Real(real) => Some(real.simulator.nodes().len()),
            Cluster::Sandbox(_) => None,
        }
    }
}

/// Pod `p` of node `n`: bound to the node, in one of ten namespaces. Bare pods on both
/// backends (the real garbage collector deletes pods whose owner does not exist); a drain
/// evicts them as it does unmanaged pods.
fn pod_object(n: usize, p: usize) -> Value {
    let node = node_name(n);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{node}-{p}"), "namespace": format!("team-{}", n % 10),
            "labels": {"app": format!("app-{}", p % 15)}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": GRACE,
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
    })
}

async fn create_real_pod(client: Client, n: usize, p: usize) {
    let node = node_name(n);
    let ns = format!("team-{}", n % 10);
    let pod: Pod = serde_json::from_value(pod_object(n, p)).expect("pod");
    let api: Api<Pod> = Api::namespaced(client, &ns);
    // A new namespace's `default` ServiceAccount comes a moment after the namespace: until
    // then the ServiceAccount admission plugin refuses pods.
    let mut tries = 0;
    loop {
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 409 => return,
            Err(e) if tries < 50 => {
                tries += 1;
                tracing_note(&format!("create pod {ns}/{node}-{p}: {e}; retrying"), tries);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("create pod {ns}/{node}-{p}: {e}"),
        }
    }
}

/// Print the first retry of a kind only, to keep the output readable.
fn tracing_note(message: &str, tries: u32) {
    if tries == 1 {
        eprintln!("{message}");
    }
}

async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("crds/") {
        let path = entry.expect("crds/ entry").path();
        let text = std::fs::read_to_string(&path).expect("CRD file");
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not a CRD: {e}", path.display()));
        names.push(crd.name_any());
        api.create(&PostParams::default(), &crd)
            .await
            .unwrap_or_else(|e| panic!("create CRD {}: {e}", crd.name_any()));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in names {
        loop {
            let crd = api.get(&name).await.expect("get CRD");
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(Instant::now() < deadline, "CRD {name} not Established");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `n` windows, each selecting a pool and a zone, opening only on 29 February.
async fn create_windows(client: &Client, n: usize) {
    let api: Api<MaintenanceWindow> = Api::all(client.clone());
    for w in 0..n {
        let pool = if w.is_multiple_of(2) {
            "general"
        } else {
            "batch"
        };
        let window: MaintenanceWindow = serde_json::from_value(json!({
            "apiVersion": "nodemaintenance.medik8s.io/v1alpha1",
            "kind": "MaintenanceWindow",
            "metadata": {"name": format!("window-{w:03}")},
            "spec": {
                "schedule": format!("{} {} 29 2 *", w % 60, 1 + (w / 60) % 20),
                "timeZone": "Europe/Berlin",
                "duration": "2h",
                "maxUnavailable": "10%",
                "release": {"after": "30m"},
                "nodeSelector": {"matchLabels": {
                    "pool": pool,
                    "topology.kubernetes.io/zone": format!("zone-{}", w % 3),
                }},
            },
        }))
        .expect("window");
        api.create(&PostParams::default(), &window)
            .await
            .unwrap_or_else(|e| panic!("create window-{w:03}: {e}"));
    }
}

/// kube-apiserver's audit log, read as it grows: requests by (user agent up to its first `/`,
/// verb, resource[/subresource]). A request is its `ResponseComplete` event, a watch its
/// `ResponseStarted` (it completes only when it ends). kube-apiserver rotates the log at
/// 100 MB (150,000 pods write several hundred MB): the rest of the rotated file
/// (`audit-<time>.log`, found by the inode read so far) and any later rotated one are read
/// before the new `audit.log`.
struct Audit {
    path: PathBuf,
    /// The inode of the file `offset` is in.
    inode: Option<u64>,
    offset: u64,
    partial: String,
    counts: BTreeMap<(String, String, String), u64>,
}

impl Audit {
    fn new(path: &Path) -> Audit {
        Audit {
            path: path.to_path_buf(),
            inode: None,
            offset: 0,
            partial: String::new(),
            counts: BTreeMap::new(),
        }
    }

    fn poll(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return;
        };
        if let Some(inode) = self.inode
            && inode != meta.ino()
        {
            let dir = self.path.parent().expect("the audit log is in a directory");
            let mut rotated: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
                .expect("audit log directory")
                .filter_map(|e| {
                    let e = e.ok()?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !(name.starts_with("audit-") && name.ends_with(".log")) {
                        return None;
                    }
                    Some((e.path(), e.metadata().ok()?.ino()))
                })
                .collect();
            rotated.sort();
            if let Some(i) = rotated.iter().position(|(_, ino)| *ino == inode) {
                let rest: Vec<PathBuf> = rotated.drain(i..).map(|(p, _)| p).collect();
                for (k, path) in rest.iter().enumerate() {
                    self.read(path, if k == 0 { self.offset } else { 0 });
                }
            } else {
                eprintln!("audit log rotated and the rotated file is gone: counts are short");
            }
            self.partial.clear();
            self.offset = 0;
        }
        self.inode = Some(meta.ino());
        let path = self.path.clone();
        self.offset = self.read(&path, self.offset);
    }

    /// Count the complete lines of `path` from `offset`; the new offset.
    fn read(&mut self, path: &Path, offset: u64) -> u64 {
        let Ok(mut file) = std::fs::File::open(path) else {
            return offset;
        };
        file.seek(SeekFrom::Start(offset)).expect("seek");
        let mut text = String::new();
        let read = file.read_to_string(&mut text).expect("audit log is UTF-8");
        self.partial.push_str(&text);
        let complete = match self.partial.rfind('\n') {
            Some(i) => i + 1,
            None => return offset + read as u64,
        };
        let lines: String = self.partial.drain(..complete).collect();
        for line in lines.lines() {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let verb = event["verb"].as_str().unwrap_or_default();
            let stage = event["stage"].as_str().unwrap_or_default();
            let counted = if verb == "watch" {
                stage == "ResponseStarted"
            } else {
                stage == "ResponseComplete"
            };
            if !counted {
                continue;
            }
            let agent = event["userAgent"]
                .as_str()
                .unwrap_or_default()
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let mut resource = event["objectRef"]["resource"]
                .as_str()
                .unwrap_or("(non-resource)")
                .to_string();
            if let Some(sub) = event["objectRef"]["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            *self
                .counts
                .entry((agent, verb.to_string(), resource))
                .or_default() += 1;
        }
        offset + read as u64
    }

    fn of(&self, agent: &str) -> BTreeMap<(String, String), u64> {
        self.counts
            .iter()
            .filter(|((a, _, _), _)| a == agent)
            .map(|((_, v, r), n)| ((v.clone(), r.clone()), *n))
            .collect()
    }
}

/// A running `nmo run`.
struct Nmo {
    child: Child,
    pid: u32,
    log: PathBuf,
}

impl Nmo {
    fn start(env: &Env, label: &str) -> Nmo {
        let log = env.dir.path().join(format!("nmo-{label}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let nmo = env!("CARGO_BIN_EXE_nmo");
        let child = Command::new(nmo)
            .arg("run")
            .arg("--kubeconfig")
            .arg(&env.kubeconfig)
            .args(["--metrics-bind-address", "127.0.0.1:0"])
            .args(["--health-probe-bind-address", "127.0.0.1:0"])
            .args(rate_limit_flags())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("nmo run starts");
        let pid = child.id();
        Nmo { child, pid, log }
    }

    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "nmo run exited early: {status}\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    fn rss(&self) -> f64 {
        mib(memory(self.pid, "VmRSS"))
    }

    fn hwm(&self) -> f64 {
        mib(memory(self.pid, "VmHWM"))
    }

    fn cpu(&self) -> f64 {
        cpu_ticks(self.pid) as f64 / clock_ticks_per_second()
    }

    /// SIGTERM, then wait for the exit (SIGKILL after 15 s).
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--kube-api-qps`/`--kube-api-burst` from `NMO_SCALE_QPS`/`NMO_SCALE_BURST` (default: nmo's
/// own defaults, 20 and 30, as a production install runs).
fn rate_limit_flags() -> Vec<String> {
    let mut flags = Vec::new();
    if let Ok(qps) = std::env::var("NMO_SCALE_QPS") {
        flags.extend(["--kube-api-qps".to_string(), qps]);
    }
    if let Ok(burst) = std::env::var("NMO_SCALE_BURST") {
        flags.extend(["--kube-api-burst".to_string(), burst]);
    }
    flags
}

/// Wait until nmo has written the status of every window (its first reconcile of each).
async fn wait_for_windows_reconciled(env: &Env, nmo: &mut Nmo, windows: usize) {
    let api: Api<MaintenanceWindow> = Api::all(env.client.clone());
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        nmo.check_alive();
        let list = api
            .list(&ListParams::default())
            .await
            .expect("list windows");
        let reconciled = list
            .items
            .iter()
            .filter(|w| {
                let v = serde_json::to_value(w).unwrap_or_default();
                v["status"]["observedGeneration"] == v["metadata"]["generation"]
            })
            .count();
        if reconciled >= windows {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "[{}] nmo reconciled {reconciled} of {windows} windows in 10 minutes",
            env.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Wait until nmo (started after `before` was counted) has listed and opened its watches of
/// Nodes, NodeMaintenances and MaintenanceWindows: its caches are complete, start-up is done
/// but for the reconciles they trigger.
async fn wait_for_watches(env: &Env, nmo: &mut Nmo, before: &BTreeMap<(String, String), u64>) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        nmo.check_alive();
        let now = env.nmo_requests();
        let started = |resource: &str| {
            let key = ("watch".to_string(), resource.to_string());
            now.get(&key).copied().unwrap_or(0) > before.get(&key).copied().unwrap_or(0)
        };
        if ["nodes", "nodemaintenances", "maintenancewindows"]
            .into_iter()
            .all(started)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "[{}] nmo opened not all its watches in 10 minutes",
            env.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until two seconds pass with no request from nmo (at most two minutes); how long that
/// took.
async fn wait_for_quiet(env: &Env) -> Duration {
    let started = Instant::now();
    let mut last = env.nmo_total();
    let mut last_change = Instant::now();
    while last_change.elapsed() < Duration::from_secs(2)
        && started.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = env.nmo_total();
        if now != last {
            last = now;
            last_change = Instant::now();
        }
    }
    started.elapsed()
}

#[derive(Debug, Default, Clone, Copy)]
struct Idle {
    span: f64,
    cpu: f64,
    requests: u64,
    rss_start: f64,
    rss_end: f64,
    hwm: f64,
    apiserver_cpu: Option<f64>,
}

/// nmo's (if any) and the API server's CPU over an idle span.
async fn idle_span(env: &Env, nmo: Option<&Nmo>, span: Duration) -> Idle {
    let requests_before = env.nmo_total();
    let cpu_before = nmo.map(Nmo::cpu).unwrap_or_default();
    let rss_start = nmo.map(Nmo::rss).unwrap_or_default();
    let api_before = env.apiserver_cpu().await;
    let t0 = Instant::now();
    tokio::time::sleep(span).await;
    let api_after = env.apiserver_cpu().await;
    let span = t0.elapsed().as_secs_f64();
    Idle {
        span,
        cpu: nmo.map(Nmo::cpu).unwrap_or_default() - cpu_before,
        requests: env.nmo_total() - requests_before,
        rss_start,
        rss_end: nmo.map(Nmo::rss).unwrap_or_default(),
        hwm: nmo.map(Nmo::hwm).unwrap_or_default(),
        apiserver_cpu: api_before.zip(api_after).map(|(b, a)| a - b),
    }
}

fn print_idle(env: &Env, what: &str, idle: &Idle) {
    println!(
        "[{}] {what}: idle over {:.0} s: nmo CPU {:.3} s ({:.2} % of one core), {} API requests; \
         RSS {:.1} MiB at the start, {:.1} MiB at the end, peak (VmHWM) {:.1} MiB{}",
        env.name,
        idle.span,
        idle.cpu,
        100.0 * idle.cpu / idle.span,
        idle.requests,
        idle.rss_start,
        idle.rss_end,
        idle.hwm,
        idle.apiserver_cpu
            .map(|c| format!(
                "; kube-apiserver CPU {c:.2} s ({:.1} % of one core)",
                100.0 * c / idle.span
            ))
            .unwrap_or_default()
    );
}

#[derive(Debug, Default)]
struct NmTimes {
    created: Option<Instant>,
    succeeded: Option<Instant>,
    deleted: Option<Instant>,
}

async fn run(backend: Backend, sizes: Sizes, audit_log: &Path) {
    println!("== {backend:?}: {sizes:?}");
    let env = Env::start(backend, &sizes, audit_log).await;
    if let Some(n) = env.simulated_nodes() {
        println!("[{}] the kubelet simulator plays {n} nodes", env.name);
    }

    // 1. nmo #1 with no pods.
    let before = env.nmo_requests();
    let started = Instant::now();
    let mut first = Nmo::start(&env, "no-pods");
    wait_for_watches(&env, &mut first, &before).await;
    wait_for_windows_reconciled(&env, &mut first, sizes.windows).await;
    let ready = started.elapsed();
    let quiet = wait_for_quiet(&env).await;
    let startup_requests = env.nmo_total();
    println!(
        "[{}] nmo run #1 (pid {}) reconciled every window {:.1} s after start, quiet {:.1} s later, \
         {startup_requests} requests",
        env.name,
        first.pid,
        ready.as_secs_f64(),
        quiet.as_secs_f64()
    );
    let no_pods = idle_span(&env, Some(&first), sizes.idle).await;
    print_idle(&env, &format!("{} nodes, 0 pods", sizes.nodes), &no_pods);

    // 2. The pods, while nmo #1 runs.
    let before_pods = env.nmo_total();
    env.seed_pods(&sizes).await;
    wait_for_quiet(&env).await;
    println!(
        "[{}] nmo run #1 while {} pods were added: {} API requests, RSS {:.1} MiB (was {:.1}), peak {:.1} MiB",
        env.name,
        sizes.nodes * sizes.pods_per_node,
        env.nmo_total() - before_pods,
        first.rss(),
        no_pods.rss_end,
        first.hwm()
    );
    first.stop();

    // 3. The API server with no nmo (the baseline).
    let baseline = idle_span(&env, None, sizes.idle).await;
    if let Some(c) = baseline.apiserver_cpu {
        println!(
            "[{}] baseline without nmo: kube-apiserver CPU {c:.2} s over {:.0} s ({:.1} % of one core)",
            env.name,
            baseline.span,
            100.0 * c / baseline.span
        );
    }
    let baseline_rate = baseline.apiserver_cpu.map(|c| c / baseline.span);

    // 4. nmo #2 against the full cluster.
    let before = env.nmo_requests();
    let requests_before: u64 = before.values().sum();
    let api_before = env.apiserver_cpu().await;
    let started = Instant::now();
    let mut nmo = Nmo::start(&env, "full");
    wait_for_watches(&env, &mut nmo, &before).await;
    wait_for_windows_reconciled(&env, &mut nmo, sizes.windows).await;
    let ready = started.elapsed();
    wait_for_quiet(&env).await;
    let startup = started.elapsed().as_secs_f64();
    let api_after = env.apiserver_cpu().await;
    println!(
        "[{}] nmo run #2 (pid {}) reconciled every window {:.1} s after start; start-up: {} requests, \
         nmo CPU {:.2} s, peak RSS {:.1} MiB{}",
        env.name,
        nmo.pid,
        ready.as_secs_f64(),
        env.nmo_total() - requests_before,
        nmo.cpu(),
        nmo.hwm(),
        api_before
            .zip(api_after)
            .zip(baseline_rate)
            .map(|((b, a), rate)| format!(
                "; kube-apiserver CPU {:.2} s over {startup:.1} s, {:.2} s above the baseline",
                a - b,
                a - b - rate * startup
            ))
            .unwrap_or_default()
    );
    let full = idle_span(&env, Some(&nmo), sizes.idle).await;
    print_idle(
        &env,
        &format!(
            "{} nodes, {} pods",
            sizes.nodes,
            sizes.nodes * sizes.pods_per_node
        ),
        &full,
    );

    // 5. A window rolls through `roll` nodes.
    roll(&env, &mut nmo, &sizes, baseline_rate).await;
    nmo.stop();
}

async fn roll(env: &Env, nmo: &mut Nmo, sizes: &Sizes, baseline_rate: Option<f64>) {
    let times: Arc<Mutex<BTreeMap<String, NmTimes>>> = Arc::default();
    let seen = times.clone();
    let nms: Api<NodeMaintenance> = Api::all(env.client.clone());
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(async move {
        let config =
            watcher::Config::default().labels(&format!("{}={ROLL_WINDOW}", nmo::api::WINDOW_LABEL));
        let mut events = watcher(nms, config).boxed();
        let mut synced = Some(synced_tx);
        while let Some(event) = events.next().await {
            let now = Instant::now();
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("NodeMaintenance watch: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let mut t = seen.lock().unwrap();
            match event {
                watcher::Event::InitDone => {
                    if let Some(tx) = synced.take() {
                        let _ = tx.send(());
                    }
                }
                watcher::Event::Apply(nm) | watcher::Event::InitApply(nm) => {
                    let e = t.entry(nm.name_any()).or_default();
                    e.created.get_or_insert(now);
                    let succeeded = nm
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.as_ref())
                        .is_some_and(|p| *p == MaintenancePhase::Succeeded);
                    if succeeded {
                        e.succeeded.get_or_insert(now);
                    }
                }
                watcher::Event::Delete(nm) => {
                    let e = t.entry(nm.name_any()).or_default();
                    e.created.get_or_insert(now);
                    e.deleted.get_or_insert(now);
                }
                watcher::Event::Init => {}
            }
        }
    });
    synced_rx.await.expect("NodeMaintenance watch synced");

    let requests_before = env.nmo_requests();
    let cpu_before = nmo.cpu();
    let api_before = env.apiserver_cpu().await;
    let window: MaintenanceWindow = serde_json::from_value(json!({
        "apiVersion": "nodemaintenance.medik8s.io/v1alpha1",
        "kind": "MaintenanceWindow",
        "metadata": {"name": ROLL_WINDOW, "annotations": {RUN_NOW_ANNOTATION: "scale-1"}},
        "spec": {
            "schedule": "0 3 29 2 *",
            "duration": "4h",
            "maxUnavailable": sizes.max_unavailable,
            "release": {"after": "0s"},
            "nodeSelector": {"matchLabels": {"scale-roll": "yes"}},
        },
    }))
    .expect("window");
    let started = Instant::now();
    Api::<MaintenanceWindow>::all(env.client.clone())
        .create(&PostParams::default(), &window)
        .await
        .expect("rolling window created");
    let deadline = started + Duration::from_secs(1800 + 30 * sizes.roll as u64);
    let mut rss_max = 0.0f64;
    loop {
        nmo.check_alive();
        rss_max = rss_max.max(nmo.rss());
        let (created, deleted) = {
            let t = times.lock().unwrap();
            (
                t.values().filter(|e| e.created.is_some()).count(),
                t.values().filter(|e| e.deleted.is_some()).count(),
            )
        };
        if deleted >= sizes.roll {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "[{}] the window released {deleted} of {} nodes ({created} started) in {:.0} s",
            env.name,
            sizes.roll,
            started.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = nmo.cpu() - cpu_before;
    let api_after = env.apiserver_cpu().await;
    watch.abort();
    // Requests settle: the window's last status writes come after the last release.
    wait_for_quiet(env).await;
    let requests_after = env.nmo_requests();
    let rss_after = nmo.rss();
    let hwm = nmo.hwm();

    let t = times.lock().unwrap();
    let mut created: Vec<Instant> = t.values().filter_map(|e| e.created).collect();
    let mut deleted: Vec<Instant> = t.values().filter_map(|e| e.deleted).collect();
    created.sort();
    deleted.sort();
    let to_succeeded: Vec<f64> = t
        .values()
        .filter_map(|e| Some(ms(e.succeeded?.saturating_duration_since(e.created?))))
        .collect();
    let m = sizes.max_unavailable;
    let gaps: Vec<f64> = (m..created.len())
        .filter_map(|k| {
            Some(ms(
                created[k].saturating_duration_since(*deleted.get(k - m)?)
            ))
        })
        .collect();
    let n = sizes.roll as f64;
    println!(
        "[{}] window rolled through {} nodes, {m} at a time, in {elapsed:.1} s ({:.2} s per node)",
        env.name,
        sizes.roll,
        elapsed / n
    );
    println!(
        "[{}] NodeMaintenance created -> Succeeded: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} of them)",
        env.name,
        percentile(&to_succeeded, 50.0),
        percentile(&to_succeeded, 99.0),
        percentile(&to_succeeded, 100.0),
        to_succeeded.len()
    );
    println!(
        "[{}] handover gap (release -> next NodeMaintenance): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
         ({} handovers; target p50 < 200 ms, p99 < 1 s)",
        env.name,
        percentile(&gaps, 50.0),
        percentile(&gaps, 99.0),
        percentile(&gaps, 100.0),
        gaps.len()
    );
    println!(
        "[{}] nmo CPU during the window: {cpu:.2} s ({:.1} % of one core, {:.0} ms per node); \
         RSS max {rss_max:.1} MiB during it, {rss_after:.1} MiB after, peak (VmHWM) {hwm:.1} MiB (target < 96 MiB)",
        env.name,
        100.0 * cpu / elapsed,
        1000.0 * cpu / n
    );
    let mut per_verb: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines = Vec::new();
    let mut total = 0;
    for (key, after) in &requests_after {
        let d = after - requests_before.get(key).copied().unwrap_or(0);
        if d == 0 {
            continue;
        }
        total += d;
        *per_verb.entry(key.0.clone()).or_default() += d;
        lines.push(format!("{} {} {:.2}", key.0, key.1, d as f64 / n));
    }
    println!(
        "[{}] nmo API requests per node maintained: {:.1} ({total} in all); by verb: {}",
        env.name,
        total as f64 / n,
        per_verb
            .iter()
            .map(|(v, c)| format!("{v} {:.2}", *c as f64 / n))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "[{}]   by verb and resource, per node: {}",
        env.name,
        lines.join("; ")
    );
    if let (Some(b), Some(a), Some(rate)) = (api_before, api_after, baseline_rate) {
        let above = a - b - rate * elapsed;
        println!(
            "[{}] kube-apiserver CPU during the window: {:.2} s, {above:.2} s above the baseline \
             ({:.0} ms per node maintained, this includes the simulated kubelets' pod deletions)",
            env.name,
            a - b,
            1000.0 * above / n
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile; NaN for no values.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// utime + stime of `pid`, in clock ticks (fields 14 and 15 of /proc/PID/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3, so fields 14 and 15 are at 11 and 12.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `Vm*` line of /proc/PID/status, in KiB.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
