//! Shared harness of the NodeMaintenance integration tests: a sandbox cluster, the real
//! controller in-process, builders for nodes and pods, and waits with deadlines.
//!
//! Included by the `node_maintenance*` test files with `#[path]`; compiled alone it has no tests.
#![allow(dead_code)]

use futures::TryStreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use nmo::api::{MaintenancePhase, NodeMaintenance, NodeMaintenanceSpec};
use nmo::clock::SystemClock;
use nmo::controller::{self, Clients, ControllerConfig, ControllerHandle};
use nmo::sandbox::{NewPod, Sandbox};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A sandbox cluster with nmo's CRDs installed.
pub struct Cluster {
    pub sandbox: Sandbox,
    pub client: Client,
    pub clients: Clients,
}

/// Start a sandbox whose pods terminate after their grace period times `speed`.
pub async fn cluster() -> Cluster {
    cluster_with_speed(1.0).await
}

pub async fn cluster_with_speed(speed: f64) -> Cluster {
    // Logs on failure: RUST_LOG=nmo=debug cargo test ...
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let sandbox = Sandbox::builder()
        .speed(speed)
        .start()
        .await
        .expect("sandbox starts");
    sandbox.install_crds().expect("CRDs install");
    let client = sandbox.client().expect("sandbox client");
    // Evictions need a client that does not retry 429s by itself: build both clients from the
    // sandbox's kubeconfig, as `nmo run` does from a kubeconfig file.
    let clients = Clients::from_kubeconfig_yaml(&sandbox.kubeconfig())
        .await
        .expect("clients from the sandbox kubeconfig");
    Cluster {
        sandbox,
        client,
        clients,
    }
}

/// The controller configuration of the tests: quick retries.
pub fn test_config() -> ControllerConfig {
    let mut config = ControllerConfig::default();
    let nm = &mut config.node_maintenance;
    nm.lease_retry = Duration::from_millis(300);
    nm.error_retry = Duration::from_millis(300);
    nm.drain.retry_initial = Duration::from_millis(100);
    nm.drain.retry_max = Duration::from_millis(400);
    config
}

impl Cluster {
    /// Run the real controller in-process against this cluster.
    pub fn start_controller(&self, config: ControllerConfig) -> ControllerHandle {
        controller::start(self.clients.clone(), Arc::new(SystemClock), config)
    }

    /// Run the real controller on `clock` (a `VirtualClock` the test advances by hand).
    pub fn start_controller_on(
        &self,
        config: ControllerConfig,
        clock: Arc<dyn nmo::clock::Clock>,
    ) -> ControllerHandle {
        controller::start(self.clients.clone(), clock, config)
    }

    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }
    pub fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }
    pub fn nms(&self) -> Api<NodeMaintenance> {
        Api::all(self.client.clone())
    }
    pub fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), "medik8s-leases")
    }

    /// Add a Ready node.
    pub async fn add_node(&self, name: &str) -> Node {
        self.sandbox.add_node(name, &[]).expect("node added");
        self.nodes().get(name).await.expect("node readable")
    }

    /// Create a Ready pod through the sandbox's kubelet-like helper (owners created on demand).
    pub fn create_pod(&self, pod: NewPod) {
        self.sandbox.create_pod(pod).expect("pod created");
    }

    /// Create `nm` for `node`.
    pub async fn create_nm(&self, name: &str, node: &str) -> NodeMaintenance {
        let nm = NodeMaintenance::new(
            name,
            NodeMaintenanceSpec {
                node_name: node.into(),
                reason: Some("test".into()),
            },
        );
        self.nms()
            .create(&PostParams::default(), &nm)
            .await
            .expect("NodeMaintenance created")
    }

    pub async fn delete_nm(&self, name: &str) {
        self.nms()
            .delete(name, &DeleteParams::default())
            .await
            .expect("NodeMaintenance deleted");
    }

    /// Create a pod bound to `node` and mark it Running and Ready, as a kubelet would.
    pub async fn run_pod(&self, pod: PodSpec) -> Pod {
        let api = self.pods(&pod.namespace);
        let created = api
            .create(&PostParams::default(), &pod.build())
            .await
            .expect("pod created");
        let status = json!({"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
        }});
        api.patch_status(
            &created.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("pod status set")
    }

    pub async fn pdb(&self, ns: &str, name: &str, app: &str, min_available: i32) {
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": app}}}
        }))
        .unwrap();
        Api::<PodDisruptionBudget>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &pdb)
            .await
            .expect("PDB created");
    }

    pub async fn set_pdb_min_available(&self, ns: &str, name: &str, min_available: i32) {
        Api::<PodDisruptionBudget>::namespaced(self.client.clone(), ns)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"minAvailable": min_available}})),
            )
            .await
            .expect("PDB patched");
    }

    /// Names of the pods on `node`.
    pub async fn pods_on(&self, node: &str) -> Vec<String> {
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let mut names: Vec<String> = Api::<Pod>::all(self.client.clone())
            .list(&lp)
            .await
            .expect("pods listed")
            .items
            .iter()
            .map(|p| p.name_any())
            .collect();
        names.sort();
        names
    }

    /// How many times an Event with `reason` was recorded about `name` (series counted).
    pub async fn events(&self, name: &str, reason: &str) -> i32 {
        let events: Api<Event> = Api::all(self.client.clone());
        events
            .list(&ListParams::default())
            .await
            .expect("events listed")
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.series.as_ref().map(|s| s.count).unwrap_or(1))
            .sum()
    }

    /// Wait until the NodeMaintenance satisfies `check`, watching it.
    pub async fn wait_nm(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&NodeMaintenance) -> bool,
    ) -> NodeMaintenance {
        let mut last = None;
        let wc = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let stream = watcher(self.nms(), wc).default_backoff().applied_objects();
        let mut stream = std::pin::pin!(stream);
        let found = tokio::time::timeout(timeout, async {
            while let Some(nm) = stream.try_next().await.expect("watch works") {
                if check(&nm) {
                    return Some(nm);
                }
                last = Some(nm);
            }
            None
        })
        .await;
        match found {
            Ok(Some(nm)) => nm,
            _ => panic!(
                "timed out after {timeout:?} waiting for NodeMaintenance {name} to be {what}; last seen: {:#?}",
                self.nms()
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .map(|n| n.status)
                    .or(last.map(|n| n.status))
            ),
        }
    }

    pub async fn wait_phase(
        &self,
        name: &str,
        phase: MaintenancePhase,
        timeout: Duration,
    ) -> NodeMaintenance {
        self.wait_nm(name, phase.as_str(), timeout, |nm| {
            nm.status.as_ref().and_then(|s| s.phase) == Some(phase)
        })
        .await
    }
}

/// Poll `check` every 20 ms until it gives `Some`, or fail after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until the NodeMaintenance `name` is gone (finalizer removed).
pub async fn wait_gone(api: &Api<NodeMaintenance>, name: &str, timeout: Duration) {
    eventually(
        &format!("NodeMaintenance {name} to be gone"),
        timeout,
        || async {
            api.get_opt(name)
                .await
                .ok()
                .and_then(|o| o.is_none().then_some(()))
        },
    )
    .await
}

/// A builder for pods the sandbox helper cannot make (emptyDir): `pod("ns", "a", "n1").empty_dir()`.
#[derive(Clone)]
pub struct PodSpec {
    pub namespace: String,
    value: serde_json::Value,
}

pub fn pod(ns: &str, name: &str, node: &str) -> PodSpec {
    PodSpec {
        namespace: ns.into(),
        value: json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {}},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": "busybox"}]
            }
        }),
    }
}

impl PodSpec {
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.value["metadata"]["labels"][key] = json!(value);
        self
    }
    pub fn empty_dir(mut self) -> Self {
        self.value["spec"]["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]);
        self
    }
    pub fn grace(mut self, seconds: i64) -> Self {
        self.value["spec"]["terminationGracePeriodSeconds"] = json!(seconds);
        self
    }
    pub fn build(&self) -> Pod {
        serde_json::from_value(self.value.clone()).expect("valid pod")
    }
}

/// Whether the node carries the marks of maintenance.
pub fn in_maintenance(node: &Node) -> bool {
    nmo::controller::node::is_in_maintenance(node)
}

/// Keys of the node's taints.
pub fn taint_keys(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| t.iter().map(|t| t.key.clone()).collect())
        .unwrap_or_default()
}

pub fn unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

impl Cluster {
    /// Poke the NodeMaintenance `name` (set the annotation `nmo.test/poke` to `poke`) and wait
    /// until a reconcile of it that started after the poke has finished. Reconciles of one
    /// object never overlap, so when as many have finished as had started after the poke,
    /// whatever the controller does about the state at the poke is done: an assertion that
    /// something did *not* happen can follow without an observation window.
    pub async fn settle_nm(&self, ctl: &ControllerHandle, name: &str, poke: &str) {
        let stats = ctl.stats();
        let before = stats.of(name);
        self.nms()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"nmo.test/poke": poke}}})),
            )
            .await
            .expect("NodeMaintenance poked");
        eventually(
            &format!("a reconcile of {name} after poke {poke} to finish"),
            Duration::from_secs(20),
            || async {
                let started = stats.of(name);
                let finished = stats.finished_of(name);
                (started > before && finished >= started).then_some(())
            },
        )
        .await
    }
}

/// Which nodes are cordoned, seen change by change in the sandbox's own feed (no watch that
/// could resume or relist): the most at once among `among`, and whether the feed lagged.
#[derive(Debug, Default)]
pub struct CordonLog {
    pub now: std::collections::BTreeSet<String>,
    pub most: usize,
    pub lagged: bool,
}

/// Follow the cordons of the nodes in `among` from now on.
pub fn follow_cordons(sandbox: &Sandbox, among: &[&str]) -> Arc<std::sync::Mutex<CordonLog>> {
    let log = Arc::new(std::sync::Mutex::new(CordonLog::default()));
    let among: Vec<String> = among.iter().map(|s| s.to_string()).collect();
    let mut observation = sandbox.observe("v1", "Node").expect("nodes observable");
    let cordoned = |node: &serde_json::Value| node["spec"]["unschedulable"] == json!(true);
    let record = {
        let (log, among) = (log.clone(), among.clone());
        move |node: &serde_json::Value, gone: bool| {
            let name = node["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !among.contains(&name) {
                return;
            }
            let mut log = log.lock().unwrap();
            if cordoned(node) && !gone {
                log.now.insert(name);
            } else {
                log.now.remove(&name);
            }
            log.most = log.most.max(log.now.len());
        }
    };
    for node in &observation.objects {
        record(node, false);
    }
    let lag = log.clone();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match observation.changes.recv().await {
                Ok(change) => record(
                    &change.object,
                    change.kind == nmo::sandbox::store::ChangeType::Deleted,
                ),
                Err(RecvError::Lagged(_)) => lag.lock().unwrap().lagged = true,
                Err(RecvError::Closed) => return,
            }
        }
    });
    log
}
