//! Both controllers against a sandbox that fails one write in ten (500, 409 and 429 mixed) and
//! adds latency: a full rolling round of 8 nodes with a budget of 2. The budget is never
//! exceeded, the round completes, and once the faults stop no node is left cordoned, tainted,
//! labelled or leased by nmo.

use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use nmo::api::{MaintenanceWindow, NodeMaintenance};
use nmo::clock::VirtualClock;
use nmo::controller::ControllerConfig;
use nmo::sandbox::{Fault, FaultRule, NewPod, Sandbox};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Virtual seconds per real second.
const SPEED: f64 = 600.0;
const WRITES: [&str; 4] = ["create", "update", "patch", "delete"];

/// What the observer saw: the selected nodes unavailable now, the most at once, and whether
/// its feed lagged (then states were missed and the budget check proves nothing).
#[derive(Debug, Default)]
struct Unavailable {
    now: BTreeSet<String>,
    most: usize,
    history: Vec<BTreeSet<String>>,
    lagged: bool,
}

fn is_unavailable(node: &Node) -> bool {
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    cordoned || !ready
}

fn record(seen: &Mutex<Unavailable>, node: &Node) {
    let mut seen = seen.lock().unwrap();
    let changed = if is_unavailable(node) {
        seen.now.insert(node.name_any())
    } else {
        seen.now.remove(&node.name_any())
    };
    if changed {
        let now = seen.now.clone();
        seen.most = seen.most.max(now.len());
        seen.history.push(now);
    }
}

/// Record every state of the nodes from the sandbox's own change feed. Not a watch: the faults
/// end watches and expire their history, and a watch that relists after a 410 skips the states
/// in between. The feed delivers every committed change in order, untouched by the faults.
fn follow_unavailable(sandbox: &Sandbox, seen: Arc<Mutex<Unavailable>>) {
    let mut observation = sandbox.observe("v1", "Node").expect("nodes observable");
    for node in &observation.objects {
        record(
            &seen,
            &serde_json::from_value(node.clone()).expect("a Node"),
        );
    }
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match observation.changes.recv().await {
                Ok(change) => {
                    let node: Node =
                        serde_json::from_value((*change.object).clone()).expect("a Node");
                    record(&seen, &node);
                }
                Err(RecvError::Lagged(_)) => seen.lock().unwrap().lagged = true,
                Err(RecvError::Closed) => return,
            }
        }
    });
}

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, h, m, 0).unwrap()
}

/// Poll `check` until it answers, failing with `what` after a generous real-time deadline.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether nmo left any mark on `node`: cordon, taints, its label or annotations.
fn marks_of(node: &Node) -> Vec<String> {
    let mut marks = Vec::new();
    let spec = node.spec.clone().unwrap_or_default();
    if spec.unschedulable == Some(true) {
        marks.push("unschedulable".to_string());
    }
    for t in spec.taints.unwrap_or_default() {
        marks.push(format!("taint {}", t.key));
    }
    for k in node.labels().keys().chain(node.annotations().keys()) {
        if k.starts_with("remediation.medik8s.io/") || k.starts_with("nodemaintenance.medik8s.io/")
        {
            marks.push(k.clone());
        }
    }
    marks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_round_under_failing_writes_and_latency_keeps_the_budget_and_leaves_nodes_clean()
{
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let clock = VirtualClock::new(at(1, 59), SPEED);
    let sandbox = Sandbox::builder()
        .speed(SPEED)
        .clock(Arc::new(clock.clone()))
        // NMO_FAULT_SEED picks another set of failing requests for a run by hand.
        .fault_seed(
            std::env::var("NMO_FAULT_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(9),
        )
        .start()
        .await
        .expect("sandbox starts");
    sandbox.install_crds().unwrap();
    let workers: Vec<String> = (1..=8).map(|i| format!("worker-{i}")).collect();
    for (i, node) in workers.iter().enumerate() {
        sandbox
            .add_node(node, &[("node-role.kubernetes.io/worker", "")])
            .unwrap();
        for p in 0..2 {
            sandbox
                .create_pod(
                    NewPod::new(&format!("app-{i}-{p}"))
                        .on_node(node)
                        .replica_set("app")
                        .grace_period(5),
                )
                .unwrap();
        }
        sandbox
            .create_pod(
                NewPod::new(&format!("agent-{i}"))
                    .namespace("kube-system")
                    .on_node(node)
                    .daemon_set("agent"),
            )
            .unwrap();
    }
    // The budget is checked on the sandbox's own change feed, which the faults do not touch;
    // the API client below is for the test's own reads and writes.
    let observer = sandbox.client().unwrap();
    let seen = Arc::new(Mutex::new(Unavailable::default()));
    follow_unavailable(&sandbox, seen.clone());

    // One write in ten fails: a third each of 500, 409 and 429 (1 - (1 - 0.035)^3 ≈ 0.10),
    // and a fifth of all requests wait 20 ms.
    let faults = sandbox.faults();
    let mut rules = Vec::new();
    for fault in [
        Fault::Status(500),
        Fault::Status(409),
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
    ] {
        rules.push(
            faults
                .add(FaultRule::new(fault).verbs(&WRITES).share(0.035))
                .unwrap(),
        );
    }
    faults
        .add(FaultRule::new(Fault::latency(Duration::from_millis(20))).share(0.2))
        .unwrap();
    // Watches end after a second and a half, and the watch history is forgotten every few
    // seconds (below), so resuming watches get 410 Gone: the controllers' caches relist all
    // along.
    faults
        .add(FaultRule::new(Fault::end_watch(Duration::from_millis(1500))).verbs(&["watch"]))
        .unwrap();

    let controllers = nmo::controller::start(
        sandbox.client().unwrap(),
        Arc::new(clock.clone()),
        ControllerConfig::default(),
    );
    let window: MaintenanceWindow = serde_yaml::from_str(
        r#"
apiVersion: nodemaintenance.medik8s.io/v1alpha1
kind: MaintenanceWindow
metadata: {name: rolling}
spec:
  schedule: "0 2 * * *"
  duration: 12h
  nodeSelector: {matchLabels: {node-role.kubernetes.io/worker: ""}}
  maxUnavailable: 2
  release: {after: 10m}
"#,
    )
    .unwrap();
    let windows: Api<MaintenanceWindow> = Api::all(observer.clone());
    // The user's own create is retried through the faults, as kubectl apply would be re-run.
    eventually("the window to be created", || {
        let (windows, window) = (windows.clone(), window.clone());
        async move {
            match windows.create(&PostParams::default(), &window).await {
                Ok(_) => Some(()),
                Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
                    Some(())
                }
                Err(_) => None,
            }
        }
    })
    .await;

    let mut expiries = 0u32;
    let round = eventually("round 1 to complete under faults", || {
        let windows = windows.clone();
        expiries += 1;
        if expiries.is_multiple_of(60) {
            sandbox.expire_watch_history();
        }
        async move {
            let w = windows.get("rolling").await.ok()?;
            let round = w.status?.round?;
            (round.number == 1 && round.finished.is_some()).then_some(round)
        }
    })
    .await;
    let injected: u64 = rules.iter().map(|id| faults.hits(*id)).sum();
    assert!(
        injected >= 10,
        "the faults were really in the way ({injected} writes failed)"
    );
    eprintln!("{injected} writes failed on purpose during the round");
    assert_eq!(round.total, 8);
    assert_eq!(
        round.completed, 8,
        "every node done, none failed: {round:?}"
    );
    assert_eq!(round.failed, 0, "{round:?}");
    faults.clear();

    // Every node was taken, never more than two at a time, and no state was missed.
    assert!(!seen.lock().unwrap().lagged, "the node feed lagged");
    let seen_now = seen.lock().unwrap().history.clone();
    let taken: BTreeSet<String> = seen_now.iter().flatten().cloned().collect();
    assert_eq!(
        taken,
        workers.iter().cloned().collect(),
        "every node was in maintenance"
    );
    assert!(
        seen.lock().unwrap().most <= 2,
        "the budget of 2 was exceeded: {:?}",
        seen.lock().unwrap().history
    );

    // Once the faults stop, everything converges to clean nodes and no leases.
    let nms: Api<NodeMaintenance> = Api::all(observer.clone());
    eventually("every NodeMaintenance to be gone", || {
        let nms = nms.clone();
        async move {
            let list = nms.list(&Default::default()).await.ok()?;
            list.items.is_empty().then_some(())
        }
    })
    .await;
    let nodes: Api<Node> = Api::all(observer.clone());
    let leases: Api<Lease> = Api::namespaced(observer.clone(), "medik8s-leases");
    eventually("every node to be clean and every lease released", || {
        let (nodes, leases) = (nodes.clone(), leases.clone());
        async move {
            let marked: Vec<(String, Vec<String>)> = nodes
                .list(&Default::default())
                .await
                .ok()?
                .items
                .iter()
                .map(|n| (n.name_any(), marks_of(n)))
                .filter(|(_, m)| !m.is_empty())
                .collect();
            let held = leases.list(&Default::default()).await.ok()?.items.len();
            (marked.is_empty() && held == 0).then_some(())
        }
    })
    .await;
    assert!(seen.lock().unwrap().most <= 2);
    assert!(!seen.lock().unwrap().lagged, "the node feed lagged");
    controllers.stop().await;
}
