//! One cluster for a test, on either backend: the in-process sandbox, or the real control
//! plane (`tests/control-plane/`) with the kubelet simulator playing the nodes. Tests written
//! against [`Backend`] run unchanged on both, so a sandbox bug cannot hide a controller bug.
//!
//! Included with `#[path = "support/backend.rs"]` next to `support/real_cluster.rs`.
#![allow(dead_code)]

use super::real_cluster::RealCluster;
use k8s_openapi::api::apps::v1::{DaemonSet, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use nmo::controller::{Clients, ControllerConfig, ControllerHandle};
use nmo::kubelet::{KubeletSimulator, SimulatorConfig, SimulatorHandle};
use nmo::sandbox::{NewPod, Sandbox};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// Grace periods run this many times faster than real time on both backends.
pub const SPEED: f64 = 10.0;

enum Kind {
    Sandbox(Sandbox),
    Real {
        // Dropped in this order: the simulator's loops, then the control plane.
        _loops: SimulatorHandle,
        simulator: KubeletSimulator,
        _cluster: RealCluster,
    },
}

/// A cluster and a kubectl home for it.
pub struct Backend {
    /// `sandbox` or `real`, for messages.
    pub name: &'static str,
    kind: Kind,
    client: Client,
    home: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Backend {
    /// The in-process sandbox (HTTPS), its pods terminating `SPEED` times faster.
    pub async fn sandbox() -> Backend {
        init_logs();
        let sandbox = Sandbox::builder()
            .speed(SPEED)
            .start()
            .await
            .expect("sandbox starts");
        let home = tempfile::tempdir().expect("temp dir");
        let kubeconfig = home.path().join("kubeconfig");
        sandbox.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        let client = sandbox.client().expect("client");
        Backend {
            name: "sandbox",
            kind: Kind::Sandbox(sandbox),
            client,
            home,
            kubeconfig,
        }
    }

    /// The real control plane, with the kubelet simulator running.
    pub async fn real() -> Backend {
        init_logs();
        let cluster = RealCluster::start().await;
        let home = tempfile::tempdir().expect("temp dir");
        let kubeconfig = home.path().join("kubeconfig");
        std::fs::copy(cluster.kubeconfig(), &kubeconfig).expect("copy kubeconfig");
        // A retrying client, as the operator has; the cluster's own is for first answers.
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
            &Default::default(),
        )
        .await
        .expect("config");
        let client = Client::try_from(config).expect("client");
        let simulator = KubeletSimulator::new(
            client.clone(),
            SimulatorConfig {
                speed: SPEED,
                ..Default::default()
            },
        );
        let loops = simulator.start();
        Backend {
            name: "real",
            kind: Kind::Real {
                _loops: loops,
                simulator,
                _cluster: cluster,
            },
            client,
            home,
            kubeconfig,
        }
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Both controllers in-process, through clients built from the kubeconfig as `nmo run`
    /// builds them, on the system clock.
    pub async fn start_controllers(&self, config: ControllerConfig) -> ControllerHandle {
        let yaml = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig");
        let clients = Clients::from_kubeconfig_yaml(&yaml)
            .await
            .expect("clients from the kubeconfig");
        nmo::controller::start(clients, Arc::new(nmo::clock::SystemClock), config)
    }

    /// A Ready node with labels.
    pub async fn add_node(&self, name: &str, labels: &[(&str, &str)]) {
        match &self.kind {
            Kind::Sandbox(s) => {
                s.add_node(name, labels).expect("node added");
            }
            Kind::Real { simulator, .. } => simulator
                .register_node(name, labels)
                .await
                .expect("node registered"),
        }
    }

    /// The node's kubelet stops (NotReady) or comes back.
    pub async fn set_node_ready(&self, name: &str, ready: bool) {
        match &self.kind {
            Kind::Sandbox(s) => s.set_node_ready(name, ready).expect("node readiness"),
            Kind::Real { simulator, .. } => simulator
                .set_ready(name, ready)
                .await
                .expect("node readiness"),
        }
    }

    /// The node reboots: a new bootID, Ready.
    pub async fn reboot_node(&self, name: &str) {
        match &self.kind {
            Kind::Sandbox(s) => s.reboot_node(name).expect("node rebooted"),
            Kind::Real { simulator, .. } => simulator.reboot(name).await.expect("node rebooted"),
        }
    }

    /// The node leaves the cluster with its pods.
    pub async fn remove_node(&self, name: &str) {
        match &self.kind {
            Kind::Sandbox(s) => s.remove_node(name).expect("node removed"),
            Kind::Real { simulator, .. } => {
                simulator.remove_node(name).await.expect("node removed")
            }
        }
    }

    /// A namespace, if it is not there yet.
    pub async fn namespace(&self, ns: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let obj: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("create namespace {ns}: {e}"),
        }
    }

    /// `replicas` pods of a ReplicaSet `app` (label `app=<app>`) on schedulable nodes, Running
    /// and Ready. On the real control plane the ReplicaSet controller makes them and the
    /// simulator schedules and starts them; the sandbox makes them through its own helper.
    pub async fn replica_set(&self, ns: &str, app: &str, replicas: usize, grace: i64) {
        self.namespace(ns).await;
        match &self.kind {
            Kind::Sandbox(s) => {
                for _ in 0..replicas {
                    s.create_pod(
                        NewPod::new("")
                            .namespace(ns)
                            .label("app", app)
                            .replica_set(app)
                            .grace_period(grace),
                    )
                    .expect("pod created");
                }
            }
            Kind::Real { .. } => {
                let rs: ReplicaSet = serde_json::from_value(json!({
                    "metadata": {"name": app, "namespace": ns},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                        "template": {"metadata": {"labels": {"app": app}},
                            "spec": {"terminationGracePeriodSeconds": grace,
                                "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}}}
                }))
                .expect("ReplicaSet");
                Api::<ReplicaSet>::namespaced(self.client.clone(), ns)
                    .create(&PostParams::default(), &rs)
                    .await
                    .expect("ReplicaSet created");
            }
        }
        self.wait_running(ns, app, replicas).await;
    }

    /// A DaemonSet `name` with one pod on each of `nodes`, Running.
    pub async fn daemon_set(&self, ns: &str, name: &str, nodes: &[&str]) {
        self.namespace(ns).await;
        match &self.kind {
            Kind::Sandbox(s) => {
                for node in nodes {
                    s.create_pod(
                        NewPod::new("")
                            .namespace(ns)
                            .label("app", name)
                            .on_node(node)
                            .daemon_set(name),
                    )
                    .expect("daemon pod created");
                }
            }
            Kind::Real { .. } => {
                // Selected by a label only these nodes carry, so other tests' nodes get none.
                for node in nodes {
                    Api::<Node>::all(self.client.clone())
                        .patch(
                            node,
                            &PatchParams::default(),
                            &Patch::Merge(
                                json!({"metadata": {"labels": {format!("ds-{ns}-{name}"): "yes"}}}),
                            ),
                        )
                        .await
                        .expect("node labelled");
                }
                let ds: DaemonSet = serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}},
                            "spec": {"nodeSelector": {format!("ds-{ns}-{name}"): "yes"},
                                "containers": [{"name": "agent", "image": "registry.k8s.io/pause:3.10"}]}}}
                }))
                .expect("DaemonSet");
                Api::<DaemonSet>::namespaced(self.client.clone(), ns)
                    .create(&PostParams::default(), &ds)
                    .await
                    .expect("DaemonSet created");
            }
        }
        self.wait_running(ns, name, nodes.len()).await;
    }

    /// A PodDisruptionBudget over `app=<app>`.
    pub async fn pdb(&self, ns: &str, app: &str, min_available: i32) {
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": app, "namespace": ns},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": app}}}
        }))
        .expect("PDB");
        Api::<PodDisruptionBudget>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &pdb)
            .await
            .expect("PDB created");
    }

    pub async fn set_pdb_min_available(&self, ns: &str, app: &str, min_available: i32) {
        Api::<PodDisruptionBudget>::namespaced(self.client.clone(), ns)
            .patch(
                app,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"minAvailable": min_available}})),
            )
            .await
            .expect("PDB patched");
    }

    /// The live (not terminating) pods labelled `app=<app>`.
    pub async fn pods(&self, ns: &str, app: &str) -> Vec<Pod> {
        Api::<Pod>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .expect("pods listed")
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Wait until `n` pods labelled `app=<app>` are Running and Ready, and none is terminating.
    pub async fn wait_running(&self, ns: &str, app: &str, n: usize) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let lp = ListParams::default().labels(&format!("app={app}"));
        let last = Arc::new(Mutex::new(Vec::new()));
        let seen = last.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(list) = api.list(&lp).await {
                let pods = list.items;
                let running = pods.iter().filter(|p| pod_ready(p)).count();
                if pods.len() == n && running == n {
                    return pods;
                }
                *seen.lock().unwrap() = pods
                    .iter()
                    .map(|p| {
                        format!(
                            "{} node={:?} phase={:?} deleting={}",
                            p.name_any(),
                            p.spec.as_ref().and_then(|s| s.node_name.clone()),
                            p.status.as_ref().and_then(|s| s.phase.clone()),
                            p.metadata.deletion_timestamp.is_some()
                        )
                    })
                    .collect::<Vec<_>>();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: timed out waiting for {n} running {app} pods in {ns}; last seen: {:#?}",
                self.name,
                last.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Which node each live `app` pod is on.
    pub async fn nodes_of(&self, ns: &str, app: &str) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .pods(ns, app)
            .await
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        nodes.sort();
        nodes
    }

    /// A kubectl command with this backend's own HOME and KUBECONFIG.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .kill_on_drop(true);
        c
    }

    pub async fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command(args)
            .output()
            .await
            .expect("kubectl must be installed and on the PATH for these tests")
    }

    /// Run kubectl and require success; returns stdout.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        assert!(
            out.status.success(),
            "{}: kubectl {} failed:\nstdout: {}\nstderr: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start kubectl and return once a line of its stderr contains `needle` (kubectl logs
    /// its requests with `-v=6`, so this can wait until it has opened a watch, or been refused).
    /// The rest of stderr keeps being collected in the returned buffer.
    pub async fn kubectl_until(&self, args: &[&str], needle: &str) -> (Child, Arc<Mutex<String>>) {
        let mut child = self
            .kubectl_command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl must be installed and on the PATH for these tests");
        let stderr = child.stderr.take().expect("piped stderr");
        let seen = Arc::new(Mutex::new(String::new()));
        let (found_tx, found_rx) = tokio::sync::oneshot::channel();
        let buffer = seen.clone();
        let wanted = needle.to_string();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            let mut found = Some(found_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                let hit = line.contains(&wanted);
                buffer.lock().unwrap().push_str(&(line + "\n"));
                if hit && let Some(tx) = found.take() {
                    let _ = tx.send(());
                }
            }
        });
        let found = tokio::time::timeout(Duration::from_secs(90), found_rx).await;
        assert!(
            matches!(found, Ok(Ok(()))),
            "{}: kubectl {} never printed {needle:?}; stderr:\n{}",
            self.name,
            args.join(" "),
            seen.lock().unwrap()
        );
        (child, seen)
    }
}

/// Is the pod Running with a Ready condition True?
pub fn pod_ready(p: &Pod) -> bool {
    let status = p.status.as_ref();
    p.metadata.deletion_timestamp.is_none()
        && status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Wait (with a deadline, polling) until `check` returns Some.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// The names of a list of objects.
pub fn names<K: kube::Resource>(items: &[K]) -> Vec<String> {
    let mut n: Vec<String> = items.iter().map(|o| o.name_any()).collect();
    n.sort();
    n
}
