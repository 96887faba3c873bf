//! MaintenanceWindow handover benchmark against the sandbox, printing its figures.
//!
//! The handover gap is the time from a node's slot freeing up (its NodeMaintenance is gone and
//! the node is schedulable again; `minReadySeconds: 0`) to the next node's NodeMaintenance
//! being created. Target: p50 under 200 ms. Both real controllers run in-process on the
//! system clock; times are taken from watch events seen by this process.
//!
//! Run with `cargo bench --bench maintenance_window`.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use nmo::api::{MaintenanceWindow, NodeMaintenance, WINDOW_LABEL};
use nmo::clock::SystemClock;
use nmo::controller::ControllerConfig;
use nmo::sandbox::{NewPod, Sandbox};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: usize = 21;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(handover());
}

#[derive(Debug, Default)]
struct NodeTimes {
    nm_created: Option<Instant>,
    nm_deleted: Option<Instant>,
    schedulable_again: Option<Instant>,
}

async fn handover() {
    let sandbox = Sandbox::builder()
        .speed(1000.0)
        .start()
        .await
        .expect("sandbox starts");
    sandbox.install_crds().expect("CRDs install");
    for i in 0..NODES {
        let node = format!("node-{i:02}");
        sandbox.add_node(&node, &[("pool", "bench")]).unwrap();
        sandbox
            .create_pod(
                NewPod::new(&format!("app-{i:02}"))
                    .on_node(&node)
                    .replica_set("app")
                    .grace_period(0),
            )
            .unwrap();
    }
    let client: Client = sandbox.client().unwrap();
    let controllers = nmo::controller::start(
        client.clone(),
        Arc::new(SystemClock),
        ControllerConfig::default(),
    );

    let times: Arc<std::sync::Mutex<BTreeMap<String, NodeTimes>>> = Default::default();
    // Watch NodeMaintenances and Nodes, stamping what happens with this process's clock.
    let nm_times = times.clone();
    let nms: Api<NodeMaintenance> = Api::all(client.clone());
    tokio::spawn(async move {
        let mut events = watcher(nms, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(Ok(event)) = events.next().await {
            let now = Instant::now();
            let mut t = nm_times.lock().unwrap();
            match event {
                watcher::Event::Apply(nm) if nm.labels().contains_key(WINDOW_LABEL) => {
                    let e = t.entry(nm.spec.node_name.clone()).or_default();
                    e.nm_created.get_or_insert(now);
                }
                watcher::Event::Delete(nm) if nm.labels().contains_key(WINDOW_LABEL) => {
                    t.entry(nm.spec.node_name.clone()).or_default().nm_deleted = Some(now);
                }
                _ => {}
            }
        }
    });
    let node_times = times.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    tokio::spawn(async move {
        let mut events = watcher(nodes, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(node)) = events.next().await {
            let now = Instant::now();
            let unschedulable = node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            let mut t = node_times.lock().unwrap();
            let e = t.entry(node.name_any()).or_default();
            if !unschedulable && e.nm_created.is_some() && e.schedulable_again.is_none() {
                e.schedulable_again = Some(now);
            }
        }
    });

    // Always open (a window every minute, 24 hours long), one node at a time, released as
    // soon as it is drained.
    let window: MaintenanceWindow = serde_yaml::from_str(
        r#"
apiVersion: nodemaintenance.medik8s.io/v1alpha1
kind: MaintenanceWindow
metadata: {name: bench}
spec:
  schedule: "* * * * *"
  duration: 24h
  nodeSelector: {matchLabels: {pool: bench}}
  maxUnavailable: 1
  release: {after: 0s}
"#,
    )
    .unwrap();
    let started = Instant::now();
    Api::<MaintenanceWindow>::all(client.clone())
        .create(&PostParams::default(), &window)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = times
            .lock()
            .unwrap()
            .values()
            .filter(|t| t.schedulable_again.is_some() && t.nm_deleted.is_some())
            .count();
        if done == NODES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the round did not finish in 120 s: {done}/{NODES}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let round = started.elapsed();
    controllers.stop().await;

    let t = times.lock().unwrap();
    let order: Vec<&String> = t.keys().collect();
    let mut gaps = Vec::new();
    for pair in order.windows(2) {
        let (prev, next) = (&t[pair[0]], &t[pair[1]]);
        let freed = prev
            .nm_deleted
            .unwrap()
            .max(prev.schedulable_again.unwrap());
        let created = next.nm_created.unwrap();
        gaps.push(created.saturating_duration_since(freed));
    }
    gaps.sort();
    let pct = |p: f64| gaps[(((gaps.len() - 1) as f64) * p).round() as usize];
    println!(
        "MaintenanceWindow handover gap (slot free -> next NodeMaintenance created), {} handovers:",
        gaps.len()
    );
    println!(
        "  p50 {:?}  p90 {:?}  max {:?}  (target: p50 under 200 ms)",
        pct(0.5),
        pct(0.9),
        gaps[gaps.len() - 1]
    );
    println!("  whole round of {NODES} nodes, one at a time: {round:?}");
}
