//! Issue 13 end to end: exclusions, topologyKey, the Prometheus health gate (a real
//! Prometheus, Debian's `prometheus` package) and the KEP-5683 Node lifecycle conditions, with
//! the sandbox API server, both real controllers in-process on a virtual clock, kube-rs, and
//! kubectl and the `nmo` binary where a user would type them.
//!
//! The Prometheus tests FAIL (not skip) when `prometheus` is not on the PATH; `.ci/run`
//! installs it.

use chrono::{DateTime, Duration, TimeZone, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use nmo::api::{MaintenanceWindow, NodeMaintenance, WINDOW_LABEL};
use nmo::clock::{Clock, VirtualClock};
use nmo::controller::{ControllerConfig, ControllerHandle};
use nmo::gate::{GateBackend, PrometheusClient};
use nmo::sandbox::{Fault, FaultRule, NewPod, Sandbox};
use nmo::telemetry::Telemetry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

struct Env {
    sandbox: Sandbox,
    client: Client,
    clock: VirtualClock,
    telemetry: Telemetry,
    _controllers: ControllerHandle,
}

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, h, m, 0).unwrap()
}

impl Env {
    /// A sandbox at `speed` virtual seconds per real second, the clock at `start`, `nodes`
    /// (name, labels) each with one ReplicaSet pod, and both controllers running with `config`.
    async fn new(
        start: DateTime<Utc>,
        speed: f64,
        nodes: &[(String, Vec<(&str, &str)>)],
        config: ControllerConfig,
    ) -> Env {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let clock = VirtualClock::new(start, speed);
        let sandbox = Sandbox::builder()
            .speed(speed)
            .clock(Arc::new(clock.clone()))
            .start()
            .await
            .expect("sandbox starts");
        sandbox.install_crds().unwrap();
        for (name, labels) in nodes {
            sandbox.add_node(name, labels).unwrap();
            sandbox
                .create_pod(
                    NewPod::new(&format!("app-{name}"))
                        .on_node(name)
                        .replica_set("app")
                        .grace_period(5),
                )
                .unwrap();
        }
        let client = sandbox.client().unwrap();
        let telemetry = Telemetry::new();
        let controllers = nmo::controller::start_with_telemetry(
            client.clone(),
            Arc::new(clock.clone()),
            config,
            telemetry.clone(),
        );
        Env {
            sandbox,
            client,
            clock,
            telemetry,
            _controllers: controllers,
        }
    }

    fn windows(&self) -> Api<MaintenanceWindow> {
        Api::all(self.client.clone())
    }
    fn maintenances(&self) -> Api<NodeMaintenance> {
        Api::all(self.client.clone())
    }

    async fn apply_window(&self, yaml: &str) {
        let window: MaintenanceWindow = serde_yaml::from_str(yaml).unwrap();
        self.windows()
            .create(&PostParams::default(), &window)
            .await
            .unwrap();
    }

    /// Wait (real time, with a deadline) until `check` returns Some.
    async fn wait<T, F, Fut>(&self, what: &str, real_secs: u64, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + StdDuration::from_secs(real_secs);
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                let status: Vec<String> = self
                    .windows()
                    .list(&Default::default())
                    .await
                    .map(|l| {
                        l.items
                            .iter()
                            .map(|w| serde_json::to_string(&w.status).unwrap())
                            .collect()
                    })
                    .unwrap_or_default();
                panic!(
                    "timed out waiting for {what} (virtual now {}); windows: {status:?}",
                    self.clock.now()
                );
            }
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
    }

    /// A condition of window `name` once `accept` takes it.
    async fn window_condition(
        &self,
        name: &str,
        type_: &str,
        real_secs: u64,
        accept: impl Fn(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> bool,
    ) -> MaintenanceWindow {
        let windows = self.windows();
        self.wait(&format!("{type_} of {name}"), real_secs, || {
            let windows = windows.clone();
            let accept = &accept;
            async move {
                let w = windows.get(name).await.ok()?;
                let ok = w
                    .status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .any(|c| c.type_ == type_ && accept(c));
                ok.then_some(w)
            }
        })
        .await
    }
}

fn workers(n: usize) -> Vec<(String, Vec<(&'static str, &'static str)>)> {
    (1..=n)
        .map(|i| (format!("worker-{i:02}"), vec![("role", "worker")]))
        .collect()
}

/// kubectl with its own HOME and kubeconfig; it must be on the PATH (the test fails without).
fn kubectl(home: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new("kubectl")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("KUBECONFIG", home.join("kubeconfig"))
        .output()
        .expect("kubectl must be installed and on the PATH for these tests");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn kubectl_async(home: &std::path::Path, args: &[&str]) -> String {
    let home = home.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl(&home, &args)
    })
    .await
    .unwrap();
    assert!(ok, "kubectl failed: {out}{err}");
    out
}

// --- KEP-5683 Node lifecycle conditions ---

const OURS: [&str; 3] = ["MaintenanceInProgress", "DrainInProgress", "Drained"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_lifecycle_conditions_appear_and_disappear_with_kubectl_and_the_kubelets_survive() {
    let env = Env::new(at(1, 0), 600.0, &workers(1), ControllerConfig::default()).await;
    let home = tempfile::tempdir().unwrap();
    env.sandbox
        .write_kubeconfig(home.path().join("kubeconfig"))
        .unwrap();
    // The first two patches of the node's status fail: the reconcile retries them.
    let fault = env
        .sandbox
        .faults()
        .add(
            FaultRule::new(Fault::Status(500))
                .verbs(&["patch"])
                .resources(&["nodes/status"])
                .names(&["worker-01"])
                .limit(2),
        )
        .unwrap();
    let nm: NodeMaintenance = serde_yaml::from_str(
        "apiVersion: nodemaintenance.medik8s.io/v1beta1\nkind: NodeMaintenance\nmetadata: {name: nm-1}\nspec: {nodeName: worker-01, reason: kernel}\n",
    )
    .unwrap();
    env.maintenances()
        .create(&PostParams::default(), &nm)
        .await
        .unwrap();

    let types_of = |home: std::path::PathBuf| async move {
        kubectl_async(
            &home,
            &[
                "get",
                "node",
                "worker-01",
                "-o",
                "jsonpath={.status.conditions[*].type}",
            ],
        )
        .await
    };
    let h = home.path().to_path_buf();
    let types = env
        .wait("MaintenanceInProgress on the node", 60, || {
            let h = h.clone();
            async move {
                let out = types_of(h).await;
                out.contains("MaintenanceInProgress").then_some(out)
            }
        })
        .await;
    assert!(types.contains("Ready"), "{types}");
    assert_eq!(
        env.sandbox.faults().hits(fault),
        2,
        "both injected failures were met"
    );

    // The kubelet writes a condition of its own while nmo maintains the node (a strategic
    // merge patch by type, as the kubelet does).
    let kubelet = serde_json::json!({"status": {"conditions": [
        {"type": "KubeletConfigOk", "status": "True", "reason": "KubeletConfigOk",
         "message": "written by the kubelet"}]}});
    Api::<Node>::all(env.client.clone())
        .patch_status(
            "worker-01",
            &PatchParams::default(),
            &Patch::Strategic(&kubelet),
        )
        .await
        .unwrap();

    // Drained becomes True (nmo patches again) and the kubelet's condition is still there.
    let drained = env
        .wait("Drained=True on the node", 60, || {
            let h = h.clone();
            async move {
                let out = kubectl_async(
                    &h,
                    &[
                        "get",
                        "node",
                        "worker-01",
                        "-o",
                        "jsonpath={range .status.conditions[*]}{.type}={.status}/{.reason} {end}",
                    ],
                )
                .await;
                out.contains("Drained=True").then_some(out)
            }
        })
        .await;
    assert!(
        drained.contains("DrainInProgress=False/NodeMaintenance"),
        "{drained}"
    );
    assert!(
        drained.contains("MaintenanceInProgress=True/NodeMaintenance"),
        "{drained}"
    );
    assert!(
        drained.contains("KubeletConfigOk=True/KubeletConfigOk"),
        "{drained}"
    );
    assert!(drained.contains("Ready=True"), "{drained}");

    // Releasing the node removes nmo's conditions and only those.
    kubectl_async(
        home.path(),
        &["delete", "nodemaintenance", "nm-1", "--wait=true"],
    )
    .await;
    let after = env
        .wait("nmo's conditions to go", 60, || {
            let h = h.clone();
            async move {
                let out = types_of(h).await;
                (!OURS.iter().any(|t| out.contains(t))).then_some(out)
            }
        })
        .await;
    let after: BTreeSet<&str> = after.split_whitespace().collect();
    assert!(after.contains("Ready"), "{after:?}");
    assert!(after.contains("KubeletConfigOk"), "{after:?}");
}

// --- topologyKey ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_zones_of_four_with_budget_two_never_span_two_zones_and_each_node_is_done_once() {
    let zones = ["zone-c", "zone-a", "zone-b"];
    let nodes: Vec<(String, Vec<(&str, &str)>)> = (1..=12)
        .map(|i| {
            (
                format!("n{i:02}"),
                vec![
                    ("role", "worker"),
                    ("topology.kubernetes.io/zone", zones[i % 3]),
                ],
            )
        })
        .collect();
    let zone_of: BTreeMap<String, String> = (1..=12)
        .map(|i| (format!("n{i:02}"), zones[i % 3].to_string()))
        .collect();
    let env = Env::new(at(1, 58), 600.0, &nodes, ControllerConfig::default()).await;

    // Record, from a watch, the zones of the cordoned nodes at every change.
    let cordoned: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let max_zones = Arc::new(AtomicU64::new(0));
    let violations: Arc<Mutex<Vec<BTreeSet<String>>>> = Arc::default();
    {
        let (cordoned, max_zones, violations, zone_of) = (
            cordoned.clone(),
            max_zones.clone(),
            violations.clone(),
            zone_of.clone(),
        );
        let nodes: Api<Node> = Api::all(env.client.clone());
        tokio::spawn(async move {
            let mut events = watcher(nodes, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(Ok(event)) = events.next().await {
                if let watcher::Event::Apply(n) | watcher::Event::InitApply(n) = event {
                    let unschedulable = n
                        .spec
                        .as_ref()
                        .and_then(|s| s.unschedulable)
                        .unwrap_or(false);
                    let mut set = cordoned.lock().unwrap();
                    if unschedulable {
                        set.insert(n.name_any());
                    } else {
                        set.remove(&n.name_any());
                    }
                    let zones: BTreeSet<String> = set.iter().map(|n| zone_of[n].clone()).collect();
                    max_zones.fetch_max(zones.len() as u64, Ordering::Relaxed);
                    if zones.len() > 1 {
                        violations.lock().unwrap().push(set.clone());
                    }
                }
            }
        });
    }
    let created: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let created = created.clone();
        let nms: Api<NodeMaintenance> = Api::all(env.client.clone());
        tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            let mut events = watcher(nms, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(Ok(event)) = events.next().await {
                if let watcher::Event::Apply(nm) | watcher::Event::InitApply(nm) = event
                    && nm.labels().contains_key(WINDOW_LABEL)
                    && seen.insert(nm.uid().unwrap_or_default())
                {
                    created.lock().unwrap().push(nm.spec.node_name.clone());
                }
            }
        });
    }
    env.apply_window(
        r#"
apiVersion: nodemaintenance.medik8s.io/v1alpha1
kind: MaintenanceWindow
metadata: {name: zones}
spec:
  schedule: "0 2 * * *"
  duration: 8h
  nodeSelector: {matchLabels: {role: worker}}
  maxUnavailable: 2
  release: {after: 5m}
  topologyKey: topology.kubernetes.io/zone
"#,
    )
    .await;
    // While zone-a runs, status names it.
    let windows = env.windows();
    env.wait("status.round.currentDomain zone-a", 60, || {
        let windows = windows.clone();
        async move {
            let w = windows.get("zones").await.ok()?;
            (w.status?.round?.current_domain.as_deref() == Some("zone-a")).then_some(())
        }
    })
    .await;
    let done = env
        .wait("round 1 to complete", 120, || {
            let windows = windows.clone();
            async move {
                let w = windows.get("zones").await.ok()?;
                let round = w.status.clone()?.round?;
                round.finished.is_some().then_some(round)
            }
        })
        .await;
    assert_eq!(done.completed, 12, "{done:?}");
    assert_eq!(done.failed, 0);
    assert!(
        violations.lock().unwrap().is_empty(),
        "cordoned nodes spanned zones: {:?}",
        violations.lock().unwrap()
    );
    assert_eq!(max_zones.load(Ordering::Relaxed), 1);
    let created = created.lock().unwrap().clone();
    let unique: BTreeSet<&String> = created.iter().collect();
    assert_eq!(created.len(), 12, "each node maintained once: {created:?}");
    assert_eq!(unique.len(), 12, "{created:?}");
    let zone_sequence: Vec<&str> = created.iter().map(|n| zone_of[n].as_str()).collect();
    let mut sorted = zone_sequence.clone();
    sorted.sort();
    assert_eq!(
        zone_sequence, sorted,
        "zones in name order, one after the other"
    );
}

// --- exclusions ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusion_over_today_refuses_a_run_now_request_and_says_so() {
    let env = Env::new(at(12, 0), 600.0, &workers(2), ControllerConfig::default()).await;
    env.apply_window(
        r#"
apiVersion: nodemaintenance.medik8s.io/v1alpha1
kind: MaintenanceWindow
metadata: {name: frozen}
spec:
  schedule: "0 2 * * 6"
  timeZone: Europe/Berlin
  duration: 4h
  nodeSelector: {matchLabels: {role: worker}}
  release: {after: 5m}
  exclusions:
  - {start: "2026-06-01", end: "2026-06-01", reason: release freeze}
"#,
    )
    .await;
    env.window_condition("frozen", "Ready", 30, |c| c.status == "True")
        .await;
    let patch = serde_json::json!({"metadata": {"annotations": {
        "nodemaintenance.medik8s.io/run-now": "please"}}});
    env.windows()
        .patch("frozen", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let windows = env.windows();
    let w = env
        .wait("the run-now request to be handled", 30, || {
            let windows = windows.clone();
            async move {
                let w = windows.get("frozen").await.ok()?;
                (w.status.as_ref()?.last_handled_run_now.as_deref() == Some("please")).then_some(w)
            }
        })
        .await;
    let status = w.status.unwrap();
    assert_eq!(status.last_handled_run_now.as_deref(), Some("please"));
    assert_eq!(status.window.as_deref(), Some("closed"));
    let exclusion = status.active_exclusion.unwrap();
    assert!(exclusion.contains("\"release freeze\""), "{exclusion}");
    let open = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "WindowOpen")
        .unwrap();
    assert_eq!(open.status, "False");
    assert!(
        open.message.contains("run-now included"),
        "{}",
        open.message
    );
    // The refusal is an Event, and no NodeMaintenance was created.
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let refused = env
        .wait("the RunNowRefused Event", 30, || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await.ok()?;
                list.items
                    .into_iter()
                    .find(|e| e.reason.as_deref() == Some("RunNowRefused"))
            }
        })
        .await;
    assert!(
        refused
            .message
            .unwrap_or_default()
            .contains("run-now \"please\" refused"),
    );
    assert!(
        env.maintenances()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // The next window is after the freeze: Saturday 2026-06-06 02:00 CEST.
    let next = status.next_window.unwrap();
    assert_eq!(
        nmo::api::from_time(&next.start),
        Utc.with_ymd_and_hms(2026, 6, 6, 0, 0, 0).unwrap()
    );
}

#[test]
fn nmo_plan_shows_each_skipped_opening_and_the_exclusion_that_removed_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("window.yaml");
    std::fs::write(
        &file,
        r#"
apiVersion: nodemaintenance.medik8s.io/v1alpha1
kind: MaintenanceWindow
metadata: {name: nightly}
spec:
  schedule: "30 2 * * *"
  timeZone: America/New_York
  duration: 2h
  nodeSelector: {matchLabels: {role: worker}}
  release: {after: 10m}
  exclusions:
  - {start: "2026-03-07", end: "2026-03-08", reason: DST weekend}
"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nmo"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let file = file.to_str().unwrap();
    let text = run(&[
        "plan",
        file,
        "--from",
        "2026-03-06T12:00:00Z",
        "--count",
        "2",
    ]);
    assert!(text.contains("skipped openings:"), "{text}");
    // 2026-03-08 02:30 does not exist in New York: that opening would fire at 03:00 EDT.
    for line in [
        "Sat 2026-03-07 02:30 EST (2026-03-07 07:30 UTC): removed by spec.exclusions[0] \"DST weekend\"",
        "Sun 2026-03-08 03:00 EDT (2026-03-08 07:00 UTC): removed by spec.exclusions[0] \"DST weekend\"",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(text.contains("1  Mon 2026-03-09 02:30 EDT"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&run(&[
        "plan",
        file,
        "--from",
        "2026-03-06T12:00:00Z",
        "-o",
        "json",
    ]))
    .unwrap();
    let skipped = json["windows"][0]["skippedOpenings"].as_array().unwrap();
    assert_eq!(skipped.len(), 2);
    assert_eq!(skipped[0]["start"], "2026-03-07T07:30:00Z");
}

#[test]
fn nmo_validate_names_each_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        r#"
apiVersion: nodemaintenance.medik8s.io/v1alpha1
kind: MaintenanceWindow
metadata: {name: bad}
spec:
  schedule: "0 2 * * *"
  duration: 4h
  nodeSelector: {matchLabels: {role: worker}}
  release: {after: 30m}
  topologyKey: "not a key"
  healthGate: {query: "", for: soon}
  exclusions:
  - {start: "2026-12-26", end: "2026-12-24"}
  - {start: "2026-02-30", end: "2026-03-01"}
"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nmo"))
        .args(["validate", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    for needle in [
        "spec.exclusions[0].end: \"2026-12-24\"",
        "is not after start \"2026-12-26\"",
        "spec.exclusions[1].start: \"2026-02-30\" is not a valid date",
        "spec.healthGate.query: must not be empty",
        "spec.healthGate.for: invalid duration \"soon\"",
        "spec.topologyKey: \"not a key\" is not a valid label key",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

// --- the Prometheus health gate ---

/// A metrics endpoint on loopback serving `nmo_test_alert <value>`; the value can be changed.
async fn metric_endpoint(value: Arc<AtomicU64>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let value = value.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let body = format!(
                    "# TYPE nmo_test_alert gauge\nnmo_test_alert {}\n",
                    value.load(Ordering::SeqCst)
                );
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real Prometheus on loopback scraping `target_port` every second, with an alerting rule
/// `NmoTestAlert` firing while `nmo_test_alert > 0`. Killed on drop.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_prometheus(target_port: u16) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n- name: nmo-test\n  interval: 1s\n  rules:\n  - alert: NmoTestAlert\n    expr: nmo_test_alert > 0\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{rules}]\nscrape_configs:\n- job_name: test\n  static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n",
            rules = dir.path().join("rules.yml").display()
        ),
    )
    .unwrap();
    let port = free_port();
    let child = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the prometheus binary (Debian package `prometheus`) must be on the PATH; .ci/run installs it");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

const FIRING: &str = r#"ALERTS{alertname="NmoTestAlert",alertstate="firing"}"#;

/// Wait (real time) until the query's result is non-empty (`firing`) or empty.
async fn wait_for_alert(client: &PrometheusClient, firing: bool) {
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(90);
    loop {
        if let Ok(result) = client.query(FIRING).await
            && result.is_empty() != firing
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus did not report the alert {} in time",
            if firing { "firing" } else { "cleared" }
        );
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_alert_in_a_real_prometheus_blocks_the_window_until_it_cleared_for_for() {
    let value = Arc::new(AtomicU64::new(1));
    let target = metric_endpoint(value.clone()).await;
    let prometheus = start_prometheus(target).await;
    let client = PrometheusClient::new(&prometheus.url).unwrap();
    wait_for_alert(&client, true).await;

    let mut config = ControllerConfig::default();
    config.maintenance_window.gate = GateBackend::Prometheus(client.clone());
    // 1 virtual minute per real second: the 15 s recheck is a quarter of a real second.
    let env = Env::new(at(1, 59), 60.0, &workers(2), config).await;
    env.apply_window(&format!(
        r#"
apiVersion: nodemaintenance.medik8s.io/v1alpha1
kind: MaintenanceWindow
metadata: {{name: gated}}
spec:
  schedule: "0 2 * * *"
  duration: 8h
  nodeSelector: {{matchLabels: {{role: worker}}}}
  release: {{after: 2m}}
  healthGate: {{query: '{FIRING}', for: 3m}}
"#
    ))
    .await;
    let w = env
        .window_condition("gated", "HealthGate", 60, |c| c.reason == "QueryFiring")
        .await;
    let gate = w
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "HealthGate")
        .unwrap()
        .clone();
    assert_eq!(gate.status, "False");
    assert!(gate.message.contains("NmoTestAlert"), "{}", gate.message);
    assert!(w.status.unwrap().health_gate.unwrap().blocking);
    // Blocked with the window open: nothing starts, while the gate is asked again.
    let blocks_before = blocks(&env);
    assert!(blocks_before >= 1, "the gate block was counted");
    env.wait("more gate checks while blocked", 30, || async {
        (blocks(&env) > blocks_before + 2).then_some(())
    })
    .await;
    assert!(
        env.maintenances()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no node starts while the alert fires"
    );

    // Clear the alert: the gate waits `for` (3 virtual minutes) and then starts resume.
    value.store(0, Ordering::SeqCst);
    wait_for_alert(&client, false).await;
    let w = env
        .window_condition("gated", "HealthGate", 60, |c| c.reason == "Clearing")
        .await;
    let clear_since = nmo::api::from_time(
        w.status
            .unwrap()
            .health_gate
            .unwrap()
            .clear_since
            .as_ref()
            .unwrap(),
    );
    let maintenances = env.maintenances();
    let first = env
        .wait("a NodeMaintenance after the gate cleared", 60, || {
            let maintenances = maintenances.clone();
            async move {
                let list = maintenances.list(&ListParams::default()).await.ok()?;
                list.items.into_iter().next()
            }
        })
        .await;
    let created = nmo::api::from_time(first.metadata.creation_timestamp.as_ref().unwrap());
    assert!(
        created >= clear_since + Duration::minutes(3),
        "started at {created}, before clearSince {clear_since} + for 3m"
    );
    env.window_condition("gated", "HealthGate", 30, |c| c.status == "True")
        .await;
    // The round finishes.
    let windows = env.windows();
    env.wait("round 1 to complete", 90, || {
        let windows = windows.clone();
        async move {
            let w = windows.get("gated").await.ok()?;
            w.status?.round?.finished.map(|_| ())
        }
    })
    .await;
    drop(prometheus);
}

fn blocks(env: &Env) -> u64 {
    env.telemetry
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("nmo_health_gate_blocks_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_prometheus_blocks_new_starts_and_says_so() {
    // A real Prometheus that is stopped: the gate's address refuses connections.
    let target = metric_endpoint(Arc::new(AtomicU64::new(0))).await;
    let prometheus = start_prometheus(target).await;
    let client = PrometheusClient::new(&prometheus.url).unwrap();
    wait_for_alert(&client, false).await;
    drop(prometheus);
    let mut config = ControllerConfig::default();
    config.maintenance_window.gate = GateBackend::Prometheus(client);
    let env = Env::new(at(1, 59), 60.0, &workers(1), config).await;
    env.apply_window(
        r#"
apiVersion: nodemaintenance.medik8s.io/v1alpha1
kind: MaintenanceWindow
metadata: {name: gated}
spec:
  schedule: "0 2 * * *"
  duration: 8h
  nodeSelector: {matchLabels: {role: worker}}
  release: {after: 2m}
  healthGate: {query: 'up == 0', for: 1m}
"#,
    )
    .await;
    let w = env
        .window_condition("gated", "HealthGate", 60, |c| {
            c.reason == "PrometheusUnreachable"
        })
        .await;
    let message = w
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "HealthGate")
        .unwrap()
        .message;
    assert!(message.contains("is unreachable"), "{message}");
    assert!(message.contains("no new node starts"), "{message}");
    assert!(
        env.maintenances()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(blocks(&env) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_an_exclusion_ending_before_it_starts_with_the_cel_message() {
    let env = Env::new(at(1, 0), 600.0, &workers(1), ControllerConfig::default()).await;
    for (start, end, message) in [
        (
            "2026-12-26",
            "2026-12-24",
            "spec.exclusions[].end must not be before start",
        ),
        (
            "2026-12-24T10:00:00Z",
            "2026-12-24T11:00:00+02:00",
            "spec.exclusions[].end must be after start",
        ),
    ] {
        let window: MaintenanceWindow = serde_yaml::from_str(&format!(
            r#"
apiVersion: nodemaintenance.medik8s.io/v1alpha1
kind: MaintenanceWindow
metadata: {{name: bad}}
spec:
  schedule: "0 2 * * *"
  duration: 4h
  nodeSelector: {{matchLabels: {{role: worker}}}}
  release: {{after: 5m}}
  exclusions: [{{start: "{start}", end: "{end}"}}]
"#
        ))
        .unwrap();
        let err = env
            .windows()
            .create(&PostParams::default(), &window)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(message), "{start} - {end}: {err}");
    }
}

/// The hook `nmo simulate --fake-alert START/END` uses: a scripted gate over the virtual clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_fake_alert_holds_the_window_for_its_virtual_span_plus_for() {
    let gate = nmo::gate::ScriptedGate::new();
    gate.firing_between(at(2, 0), at(2, 40));
    let mut config = ControllerConfig::default();
    config.maintenance_window.gate = GateBackend::Scripted(gate.clone());
    let env = Env::new(at(1, 58), 600.0, &workers(2), config).await;
    env.apply_window(
        r#"
apiVersion: nodemaintenance.medik8s.io/v1alpha1
kind: MaintenanceWindow
metadata: {name: scripted}
spec:
  schedule: "0 2 * * *"
  duration: 4h
  nodeSelector: {matchLabels: {role: worker}}
  release: {after: 5m}
  healthGate: {query: 'ALERTS{alertstate="firing"}', for: 10m}
"#,
    )
    .await;
    let maintenances = env.maintenances();
    let first = env
        .wait("the first NodeMaintenance", 60, || {
            let maintenances = maintenances.clone();
            async move {
                let list = maintenances.list(&ListParams::default()).await.ok()?;
                list.items.into_iter().next()
            }
        })
        .await;
    let created = nmo::api::from_time(first.metadata.creation_timestamp.as_ref().unwrap());
    assert!(
        created >= at(2, 50),
        "started at {created}: the fake alert fired until 02:40 and for is 10m"
    );
    assert!(gate.queries() >= 2, "the gate was asked while blocked");
    assert!(blocks(&env) >= 1);
}
