//! A kubelet simulator for a real API server, where no kubelet can run: through kube-rs it
//! registers Nodes, heartbeats their Leases in `kube-node-lease`, schedules pending pods
//! (a trivial scheduler: `unschedulable`, taints and tolerations, `nodeSelector` and required
//! node affinity, fewest pods first), marks bound pods Running and Ready, and finishes the
//! deletion of terminating pods once their grace period (divided by `speed`) is over.
//! Nodes can be made NotReady, rebooted and removed.
//!
//! It plays the parts that a real cluster's kubelets, scheduler and node lifecycle controller
//! play around kube-controller-manager's ReplicaSet, DaemonSet and disruption controllers, so
//! nmo's drains behave on a real API server as they do on the sandbox. The decisions are the
//! pure functions of [`super::model`], shared with the sandbox's built-in kubelet, and
//! [`pod_action`].
//!
//! **Scale.** One watch of pods and one of Nodes feed a single loop that keeps per-node state
//! (the bound pods of each node, the Node as JSON, converted once per Node event) and
//! per-pod state (its node, phase, termination and what was last sent for it), so an event
//! costs a few map operations: a bound pod's kubelet looks only at its own node, and only an
//! unbound pod runs the scheduler over the nodes. The loop never waits for the API server:
//! each write (a binding, a Running status, the end of a termination) runs as its own task, at
//! most [`SimulatorConfig::max_in_flight`] of them at once (kube-rs has no client-side rate
//! limit, so this is the simulator's only one), retried with backoff on 429, 5xx and
//! connection errors, and reports back to the loop. The scheduler *assumes* a binding while
//! it is in flight (the pod counts as its node's at once), so concurrent bindings still
//! spread pods as fewest-pods-first does. Registering a node costs three requests (create,
//! the `not-ready` taint's removal, the Lease).

use super::model;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher::Event;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;

/// The namespace of the node heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The field manager of the simulator's writes.
const FIELD_MANAGER: &str = "nmo-kubelet-simulator";

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Grace periods are divided by this (1 = real time).
    pub speed: f64,
    /// How often node Leases are renewed (a kubelet renews every 10 s of its 40 s lease).
    pub lease_renew: Duration,
    /// Requests the pod loop and the heartbeats have in flight at most (bindings, pod status
    /// writes, deletions, Lease renewals). The default, 32, keeps a 2-core kube-apiserver
    /// busy without queueing far past what it can answer.
    pub max_in_flight: usize,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            speed: 1.0,
            lease_renew: Duration::from_secs(10),
            max_in_flight: 32,
        }
    }
}

/// A failed simulator operation, naming the object.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// Creating a Node (or its Lease) failed.
    #[error("registering node {node}: {source}")]
    RegisterNode {
        /// The node.
        node: String,
        /// What the API answered.
        source: kube::Error,
    },
    /// Changing a Node failed.
    #[error("updating node {node}: {source}")]
    UpdateNode {
        /// The node.
        node: String,
        /// What the API answered.
        source: kube::Error,
    },
    /// Removing a Node or its pods failed.
    #[error("removing node {node}: {source}")]
    RemoveNode {
        /// The node.
        node: String,
        /// What the API answered.
        source: kube::Error,
    },
    /// The node was not registered through this simulator.
    #[error("node {0} is not simulated here")]
    UnknownNode(String),
}

/// What the simulated kubelets and scheduler do about one pod now.
#[derive(Debug, Clone, PartialEq)]
pub enum PodAction {
    /// Bind the pending pod to this node.
    Bind(String),
    /// The kubelet of its node reports it Running and Ready.
    MarkRunning,
    /// The kubelet of its node finishes its termination after this long.
    FinishTermination(Duration),
    /// Nothing to do (not ours, no node fits yet, already running, or its node is down).
    Nothing,
}

/// Decide what happens to `pod`. `nodes` are the simulated nodes with their pod counts and
/// whether their kubelet is up.
pub fn pod_action(pod: &Value, nodes: &[(&Value, usize, bool)], speed: f64) -> PodAction {
    let bound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    let terminating = pod.pointer("/metadata/deletionTimestamp").is_some();
    let Some(bound) = bound else {
        if terminating {
            return PodAction::Nothing; // the API server deletes unbound pods at once
        }
        let up = nodes
            .iter()
            .filter(|(_, _, up)| *up)
            .map(|(n, c, _)| (*n, *c));
        return model::pick_node(pod, up, None).map_or(PodAction::Nothing, PodAction::Bind);
    };
    let Some((_, _, up)) = nodes
        .iter()
        .find(|(n, _, _)| n.pointer("/metadata/name").and_then(Value::as_str) == Some(bound))
    else {
        return PodAction::Nothing; // another kubelet's pod
    };
    let grace = terminating.then(|| {
        pod.pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    });
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    kubelet_action(grace, phase_started(phase), *up, speed)
}

/// Has a pod in this phase been started (or finished) by its kubelet?
fn phase_started(phase: Option<&str>) -> bool {
    matches!(phase, Some("Running" | "Succeeded" | "Failed"))
}

/// What the kubelet of a simulated node does about a pod bound to it: `grace` is the
/// deletion grace period of a terminating pod, `started` whether its phase is Running or
/// final, `up` whether the kubelet runs.
fn kubelet_action(grace: Option<i64>, started: bool, up: bool, speed: f64) -> PodAction {
    if !up {
        return PodAction::Nothing; // a kubelet that is down does nothing until it is back
    }
    if let Some(grace) = grace {
        let grace = grace.max(0) as f64;
        return PodAction::FinishTermination(Duration::from_secs_f64(grace / speed.max(1e-6)));
    }
    if started {
        PodAction::Nothing
    } else {
        PodAction::MarkRunning
    }
}

/// State shared by the simulator's handles and its loops.
#[derive(Default)]
struct Shared {
    /// The simulated nodes and whether their kubelet is up.
    nodes: Mutex<BTreeMap<String, bool>>,
    /// Nodes whose kubelet came up (registered, back from NotReady, rebooted) since the pod
    /// loop last looked: their pods start and finish their terminations, pending pods may fit.
    woken: Mutex<BTreeSet<String>>,
    /// Signalled (with a stored permit, so none is lost while the loop is busy) when `woken`
    /// gets a node.
    changed: Notify,
    /// `kube-node-lease` exists (created once, not per node).
    lease_namespace: AtomicBool,
}

/// The kubelet simulator. Clone it freely; [`KubeletSimulator::start`] runs its loops.
#[derive(Clone)]
pub struct KubeletSimulator {
    client: Client,
    config: SimulatorConfig,
    shared: Arc<Shared>,
}

/// The running loops; dropping it stops them.
pub struct SimulatorHandle {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn to_value<T: serde::Serialize>(obj: &T) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

/// Worth trying again: the API server is overloaded or restarting, or the connection broke.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(e) => matches!(e.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Run `op` until it succeeds or fails for good, backing off on transient errors (100 ms
/// doubling to 5 s, 10 tries).
async fn with_retries<T, F, Fut>(mut op: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(100);
    let mut tries = 1;
    loop {
        match op().await {
            Err(e) if transient(&e) && tries < 10 => {
                tracing::debug!(error = %e, tries, "kubelet simulator: retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                tries += 1;
            }
            other => return other,
        }
    }
}

impl KubeletSimulator {
    /// A simulator acting through `client`.
    pub fn new(client: Client, config: SimulatorConfig) -> Self {
        KubeletSimulator {
            client,
            config,
            shared: Arc::default(),
        }
    }

    /// The names of the simulated nodes.
    pub fn nodes(&self) -> Vec<String> {
        self.shared
            .nodes
            .lock()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// Register a Ready node with these labels (and `kubernetes.io/hostname`/`os`), and its
    /// heartbeat Lease. A node that exists already is taken over as it is.
    pub async fn register_node(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<(), SimulatorError> {
        let err = |source| SimulatorError::RegisterNode {
            node: name.to_string(),
            source,
        };
        let labels: Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let obj = model::node_object(name, &labels, &now());
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node: Node = serde_json::from_value(obj.clone()).expect("a Node object");
        let post = PostParams::default();
        let created = match with_retries(|| nodes.create(&post, &node)).await {
            Ok(created) if !model::node_ready(&to_value(&created)) => {
                // A real API server may drop the status of a create: report it as a kubelet does.
                let status = Patch::Merge(json!({"status": obj["status"]}));
                let patch = PatchParams::default();
                Some(
                    with_retries(|| nodes.patch_status(name, &patch, &status))
                        .await
                        .map_err(err)?,
                )
            }
            Ok(created) => Some(created),
            Err(kube::Error::Api(e)) if e.code == 409 => None,
            Err(e) => return Err(err(e)),
        };
        // kube-apiserver's TaintNodesByCondition admission taints a new node `not-ready`
        // until the node lifecycle controller sees it Ready; that controller does not run
        // here, so the simulator plays its part (starting from the created object: no read).
        let node = self
            .update_node(name, created, |n, now| model::set_ready(n, true, now))
            .await?;
        self.ensure_lease(&node).await.map_err(err)?;
        self.mark_kubelet(name, true);
        Ok(())
    }

    async fn ensure_lease(&self, node: &Node) -> Result<(), kube::Error> {
        if !self.shared.lease_namespace.load(Ordering::Relaxed) {
            let namespaces: Api<Namespace> = Api::all(self.client.clone());
            let ns: Namespace = serde_json::from_value(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NODE_LEASE_NAMESPACE}}),
            )
            .expect("a Namespace");
            let post = PostParams::default();
            match with_retries(|| namespaces.create(&post, &ns)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
            self.shared.lease_namespace.store(true, Ordering::Relaxed);
        }
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), NODE_LEASE_NAMESPACE);
        let name = node.name_any();
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                "name": name, "uid": node.uid().unwrap_or_default()}]},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                "renewTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}});
        let lease: Lease = serde_json::from_value(lease).expect("a Lease");
        let post = PostParams::default();
        match with_retries(|| leases.create(&post, &lease)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Record whether the node's kubelet is up; one that came up wakes the pod loop for its
    /// pods: they start and finish their terminations.
    fn mark_kubelet(&self, name: &str, up: bool) {
        self.shared
            .nodes
            .lock()
            .expect("not poisoned")
            .insert(name.to_string(), up);
        if up {
            self.shared
                .woken
                .lock()
                .expect("not poisoned")
                .insert(name.to_string());
            self.shared.changed.notify_one();
        }
    }

    fn is_simulated(&self, name: &str) -> Result<(), SimulatorError> {
        if self
            .shared
            .nodes
            .lock()
            .expect("not poisoned")
            .contains_key(name)
        {
            Ok(())
        } else {
            Err(SimulatorError::UnknownNode(name.to_string()))
        }
    }

    /// Change a node through `f` with optimistic concurrency: its `spec`/`metadata` with a
    /// replace of the object, its `status` with a replace of `/status`, each retried on 409
    /// from a fresh read, so a concurrent cordon or taint by nmo is never overwritten. It
    /// starts from `current` when given (read otherwise) and goes on from each write's answer;
    /// it returns the node as last written or read.
    async fn update_node(
        &self,
        name: &str,
        mut current: Option<Node>,
        f: impl Fn(&mut Value, &str),
    ) -> Result<Node, SimulatorError> {
        let err = |source| SimulatorError::UpdateNode {
            node: name.to_string(),
            source,
        };
        let nodes: Api<Node> = Api::all(self.client.clone());
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        loop {
            let node = match current.take() {
                Some(node) => node,
                None => with_retries(|| nodes.get(name)).await.map_err(err)?,
            };
            let before = to_value(&node);
            let mut changed = before.clone();
            f(&mut changed, &now());
            let result = if changed.get("status") != before.get("status") {
                let node: Node = serde_json::from_value(changed).expect("a Node");
                with_retries(|| nodes.replace_status(name, &pp, &node)).await
            } else if changed != before {
                let node: Node = serde_json::from_value(changed).expect("a Node");
                with_retries(|| nodes.replace(name, &pp, &node)).await
            } else {
                return Ok(node);
            };
            match result {
                // Status and spec are written one at a time: go round again for the other.
                Ok(written) => current = Some(written),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(err(e)),
            }
        }
    }

    /// The node's kubelet stops (Ready Unknown, `unreachable` taint, its pods left as they
    /// are) or comes back (Ready, the taint removed, pending terminations finished).
    pub async fn set_ready(&self, name: &str, ready: bool) -> Result<(), SimulatorError> {
        self.is_simulated(name)?;
        self.update_node(name, None, |n, now| model::set_ready(n, ready, now))
            .await?;
        self.mark_kubelet(name, ready);
        Ok(())
    }

    /// Reboot the node: a new `bootID`, Ready again.
    pub async fn reboot(&self, name: &str) -> Result<(), SimulatorError> {
        self.is_simulated(name)?;
        // One new boot ID for the whole update, even if a conflict makes it go round again.
        let boot = uuid::Uuid::new_v4().to_string();
        self.update_node(name, None, |n, now| {
            if model::boot_id(n) != boot {
                model::reboot(n, now);
                n["status"]["nodeInfo"]["bootID"] = json!(boot);
            } else {
                model::set_ready(n, true, now);
            }
        })
        .await?;
        self.mark_kubelet(name, true);
        Ok(())
    }

    /// Remove the node: its pods are deleted at once (as the pod garbage collector does for a
    /// node that is gone), then the Node; its Lease goes by garbage collection (owner Node).
    pub async fn remove_node(&self, name: &str) -> Result<(), SimulatorError> {
        self.is_simulated(name)?;
        let err = |source| SimulatorError::RemoveNode {
            node: name.to_string(),
            source,
        };
        self.shared.nodes.lock().expect("not poisoned").remove(name);
        let nodes: Api<Node> = Api::all(self.client.clone());
        match nodes.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(err(e)),
        }
        let pods: Api<Pod> = Api::all(self.client.clone());
        let on_node = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
            .await
            .map_err(err)?;
        for p in on_node {
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), &p.namespace().unwrap_or_default());
            match api
                .delete(&p.name_any(), &DeleteParams::default().grace_period(0))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }

    /// Start the loops: the scheduler and kubelets (one watch of pods, one of nodes) and the
    /// Lease heartbeats. They run until the handle is dropped.
    pub fn start(&self) -> SimulatorHandle {
        let (pod_loop, outcomes) = PodLoop::new(self.clone());
        let pods = tokio::spawn(pod_loop.run(outcomes));
        let beats = tokio::spawn(self.clone().run_heartbeats());
        SimulatorHandle {
            tasks: vec![pods, beats],
        }
    }

    async fn run_heartbeats(self) {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), NODE_LEASE_NAMESPACE);
        loop {
            let up: Vec<String> = {
                let nodes = self.shared.nodes.lock().expect("not poisoned");
                nodes
                    .iter()
                    .filter(|(_, up)| **up)
                    .map(|(n, _)| n.clone())
                    .collect()
            };
            futures::stream::iter(up)
                .for_each_concurrent(self.config.max_in_flight.max(1), |name| {
                    let leases = leases.clone();
                    async move {
                        let renew = json!({"spec": {"renewTime":
                            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}});
                        if let Err(e) = leases
                            .patch(&name, &PatchParams::default(), &Patch::Merge(renew))
                            .await
                        {
                            tracing::debug!(node = %name, error = %e, "node lease renewal failed");
                        }
                    }
                })
                .await;
            tokio::time::sleep(self.config.lease_renew).await;
        }
    }
}

/// A pod by namespace and name.
type PodKey = (String, String);

/// A write the pod loop made for a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Bind,
    Start,
    Delete,
}

/// A write's result, reported back to the pod loop.
struct Outcome {
    key: PodKey,
    uid: String,
    write: Write,
    ok: bool,
}

/// What the pod loop knows of one pod.
struct PodState {
    uid: String,
    /// Its node: `spec.nodeName` as watched, or the one a binding in flight assumes.
    node: Option<String>,
    /// `node` is assumed: a binding is in flight, or done and not yet seen by the watch.
    assumed: bool,
    /// Its phase is Running or final.
    started: bool,
    /// The deletion grace period of a terminating pod.
    grace: Option<i64>,
    /// The pod as JSON while it is unbound, for the scheduler.
    value: Option<Value>,
    /// A write for it is in flight (or a termination waits out its grace period).
    busy: bool,
    /// The last write that succeeded, which the watch may not show yet: not sent twice.
    done: Option<Write>,
}

/// An event of one of the pod loop's watches.
enum Input {
    Pod(Box<Event<Pod>>),
    Node(Box<Event<Node>>),
}

/// The scheduler and the kubelets: one loop over the pod and Node watches with per-node and
/// per-pod state (see the module's doc, "Scale").
struct PodLoop {
    sim: KubeletSimulator,
    pods: HashMap<PodKey, PodState>,
    /// The pods on (or assumed on) each node.
    by_node: HashMap<String, HashSet<PodKey>>,
    /// The unbound pods.
    pending: BTreeSet<PodKey>,
    /// Every Node as the watch shows it, as JSON.
    nodes: BTreeMap<String, Value>,
    /// The pods and Nodes listed so far by a watch's (re)list, to drop the ones that went.
    pods_listed: Option<HashSet<PodKey>>,
    nodes_listed: Option<HashSet<String>>,
    /// A Node changed: the pending pods get another try.
    pending_dirty: bool,
    limit: Arc<Semaphore>,
    outcomes: mpsc::UnboundedSender<Outcome>,
    /// The writes; dropped (aborted) with the loop.
    tasks: tokio::task::JoinSet<()>,
}

impl PodLoop {
    fn new(sim: KubeletSimulator) -> (PodLoop, mpsc::UnboundedReceiver<Outcome>) {
        let (outcomes, rx) = mpsc::unbounded_channel();
        let limit = Arc::new(Semaphore::new(sim.config.max_in_flight.max(1)));
        let pod_loop = PodLoop {
            sim,
            pods: HashMap::new(),
            by_node: HashMap::new(),
            pending: BTreeSet::new(),
            nodes: BTreeMap::new(),
            pods_listed: None,
            nodes_listed: None,
            pending_dirty: false,
            limit,
            outcomes,
            tasks: tokio::task::JoinSet::new(),
        };
        (pod_loop, rx)
    }

    async fn run(mut self, mut outcomes: mpsc::UnboundedReceiver<Outcome>) {
        let client = self.sim.client.clone();
        let pod_events = watcher(Api::<Pod>::all(client.clone()), Default::default())
            .default_backoff()
            .map(|r| r.map(|e| Input::Pod(Box::new(e))))
            .boxed();
        let node_events = watcher(Api::<Node>::all(client), Default::default())
            .default_backoff()
            .map(|r| r.map(|e| Input::Node(Box::new(e))))
            .boxed();
        let mut events = futures::stream::select(pod_events, node_events).ready_chunks(1024);
        let shared = self.sim.shared.clone();
        loop {
            tokio::select! {
                batch = events.next() => {
                    let Some(batch) = batch else { return };
                    for event in batch {
                        match event {
                            Ok(Input::Pod(e)) => self.on_pod_event(*e),
                            Ok(Input::Node(e)) => self.on_node_event(*e),
                            Err(e) => tracing::debug!(error = %e, "kubelet simulator watch"),
                        }
                    }
                }
                Some(outcome) = outcomes.recv() => self.on_outcome(outcome),
                // Kubelets came up: their pods start, and pending pods may fit.
                _ = shared.changed.notified() => {
                    let woken = std::mem::take(&mut *shared.woken.lock().expect("not poisoned"));
                    for node in woken {
                        let keys: Vec<PodKey> = self
                            .by_node
                            .get(&node)
                            .map(|ks| ks.iter().cloned().collect())
                            .unwrap_or_default();
                        for key in keys {
                            self.evaluate(&key);
                        }
                    }
                    self.pending_dirty = true;
                }
            }
            if std::mem::take(&mut self.pending_dirty) {
                let keys: Vec<PodKey> = self.pending.iter().cloned().collect();
                for key in keys {
                    self.evaluate(&key);
                }
            }
            while self.tasks.try_join_next().is_some() {}
        }
    }

    fn on_pod_event(&mut self, event: Event<Pod>) {
        match event {
            Event::Init => self.pods_listed = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let Some(listed) = &mut self.pods_listed {
                    listed.insert((pod.namespace().unwrap_or_default(), pod.name_any()));
                }
                self.upsert(&pod);
            }
            Event::InitDone => {
                if let Some(listed) = self.pods_listed.take() {
                    let gone: Vec<PodKey> = self
                        .pods
                        .keys()
                        .filter(|k| !listed.contains(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        self.forget(&key);
                    }
                }
            }
            Event::Apply(pod) => self.upsert(&pod),
            Event::Delete(pod) => {
                let key = (pod.namespace().unwrap_or_default(), pod.name_any());
                if self.pods.get(&key).map(|s| s.uid.as_str()) == pod.uid().as_deref() {
                    self.forget(&key);
                }
            }
        }
    }

    fn on_node_event(&mut self, event: Event<Node>) {
        match event {
            Event::Init => self.nodes_listed = Some(HashSet::new()),
            Event::InitApply(node) | Event::Apply(node) => {
                let name = node.name_any();
                if let Some(listed) = &mut self.nodes_listed {
                    listed.insert(name.clone());
                }
                self.nodes.insert(name, to_value(&node));
                self.pending_dirty |= !self.pending.is_empty();
            }
            Event::InitDone => {
                if let Some(listed) = self.nodes_listed.take() {
                    self.nodes.retain(|n, _| listed.contains(n));
                }
            }
            Event::Delete(node) => {
                self.nodes.remove(&node.name_any());
            }
        }
    }

    /// Take in a pod as the watch shows it, then act on it.
    fn upsert(&mut self, pod: &Pod) {
        let key = (pod.namespace().unwrap_or_default(), pod.name_any());
        let uid = pod.uid().unwrap_or_default();
        if self.pods.get(&key).is_some_and(|s| s.uid != uid) {
            self.forget(&key); // the same name, a new pod
        }
        let watched = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let state = self.pods.entry(key.clone()).or_insert_with(|| PodState {
            uid,
            node: None,
            assumed: false,
            started: false,
            grace: None,
            value: None,
            busy: false,
            done: None,
        });
        state.started = phase_started(pod.status.as_ref().and_then(|s| s.phase.as_deref()));
        state.grace = pod
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|_| pod.metadata.deletion_grace_period_seconds.unwrap_or(0));
        state.value = watched.is_none().then(|| to_value(pod));
        let node = match watched {
            Some(node) => {
                state.assumed = false;
                Some(node)
            }
            // A binding in flight, or done and the watch behind it: keep the assumed node.
            None if state.assumed => state.node.clone(),
            None => None,
        };
        self.place(&key, node);
        self.evaluate(&key);
    }

    /// Put the pod on `node` (None: pending) in the indexes.
    fn place(&mut self, key: &PodKey, node: Option<String>) {
        let Some(state) = self.pods.get_mut(key) else {
            return;
        };
        if state.node == node && (node.is_some() || self.pending.contains(key)) {
            return;
        }
        match state.node.take() {
            Some(old) => {
                if let Some(set) = self.by_node.get_mut(&old) {
                    set.remove(key);
                    if set.is_empty() {
                        self.by_node.remove(&old);
                    }
                }
            }
            None => {
                self.pending.remove(key);
            }
        }
        match &node {
            Some(n) => {
                self.by_node
                    .entry(n.clone())
                    .or_default()
                    .insert(key.clone());
            }
            None => {
                self.pending.insert(key.clone());
            }
        }
        state.node = node;
    }

    /// Drop a pod that is gone.
    fn forget(&mut self, key: &PodKey) {
        let Some(state) = self.pods.remove(key) else {
            return;
        };
        match state.node {
            Some(node) => {
                if let Some(set) = self.by_node.get_mut(&node) {
                    set.remove(key);
                    if set.is_empty() {
                        self.by_node.remove(&node);
                    }
                }
            }
            None => {
                self.pending.remove(key);
            }
        }
    }

    /// The pod's action now ([`pod_action`]'s decision on the loop's state), started as a
    /// write unless one is in flight or the same one has succeeded already.
    fn evaluate(&mut self, key: &PodKey) {
        let Some(state) = self.pods.get(key) else {
            return;
        };
        if state.busy {
            return;
        }
        let simulated = self.sim.shared.nodes.lock().expect("not poisoned");
        let action = match (&state.node, &state.value) {
            // The API server deletes unbound pods at once.
            (None, _) if state.grace.is_some() => PodAction::Nothing,
            (None, Some(pod)) => {
                let up = self.nodes.iter().filter_map(|(name, node)| {
                    let count = self.by_node.get(name).map_or(0, HashSet::len);
                    simulated
                        .get(name)
                        .copied()
                        .unwrap_or(false)
                        .then_some((node, count))
                });
                model::pick_node(pod, up, None).map_or(PodAction::Nothing, PodAction::Bind)
            }
            (None, None) => PodAction::Nothing,
            (Some(_), _) if state.assumed => PodAction::Nothing,
            (Some(node), _) => match simulated.get(node) {
                Some(up) => kubelet_action(state.grace, state.started, *up, self.sim.config.speed),
                None => PodAction::Nothing, // another kubelet's pod
            },
        };
        drop(simulated);
        let done = state.done;
        match action {
            PodAction::Nothing => {}
            PodAction::Bind(node) => {
                self.place(key, Some(node.clone()));
                let state = self.pods.get_mut(key).expect("present");
                state.assumed = true;
                self.spawn_write(key, Write::Bind, Duration::ZERO, Some(node));
            }
            PodAction::MarkRunning if done != Some(Write::Start) => {
                self.spawn_write(key, Write::Start, Duration::ZERO, None);
            }
            PodAction::FinishTermination(after) if done != Some(Write::Delete) => {
                self.spawn_write(key, Write::Delete, after, None);
            }
            PodAction::MarkRunning | PodAction::FinishTermination(_) => {}
        }
    }

    /// Start `write` for the pod after `delay`, within the simulator's limit of requests in
    /// flight; its outcome comes back to the loop (a failure after a second, for a retry).
    fn spawn_write(&mut self, key: &PodKey, write: Write, delay: Duration, node: Option<String>) {
        let state = self.pods.get_mut(key).expect("present");
        state.busy = true;
        let uid = state.uid.clone();
        let client = self.sim.client.clone();
        let limit = self.limit.clone();
        let outcomes = self.outcomes.clone();
        let key = key.clone();
        self.tasks.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let (ns, name) = (&key.0, &key.1);
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            let result = {
                let _permit = limit.acquire().await.expect("never closed");
                match write {
                    Write::Bind => {
                        let node = node.as_deref().unwrap_or_default();
                        let binding = serde_json::to_vec(&json!({"apiVersion": "v1",
                            "kind": "Binding", "metadata": {"name": name, "namespace": ns},
                            "target": {"apiVersion": "v1", "kind": "Node", "name": node}}))
                        .expect("JSON");
                        let (client, binding) = (&client, &binding);
                        with_retries(move || async move {
                            let req = http::Request::post(format!(
                                "/api/v1/namespaces/{ns}/pods/{name}/binding"
                            ))
                            .header("Content-Type", "application/json")
                            .body(binding.clone())
                            .map_err(kube::Error::HttpError)?;
                            client.request_text(req).await.map(|_| ())
                        })
                        .await
                    }
                    Write::Start => {
                        let status = Patch::Merge(json!({"status": model::running_status(&now())}));
                        let pp = PatchParams::default();
                        with_retries(|| api.patch_status(name, &pp, &status))
                            .await
                            .map(|_| ())
                    }
                    Write::Delete => {
                        let dp = DeleteParams {
                            grace_period_seconds: Some(0),
                            preconditions: Some(Preconditions {
                                uid: Some(uid.clone()),
                                resource_version: None,
                            }),
                            ..Default::default()
                        };
                        match with_retries(|| api.delete(name, &dp)).await {
                            // Gone already, or another pod of that name now.
                            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
                            other => other.map(|_| ()),
                        }
                    }
                }
            };
            let ok = match result {
                Ok(()) => true,
                // The pod is gone: its deletion event follows.
                Err(kube::Error::Api(e)) if e.code == 404 && write != Write::Bind => true,
                Err(e) => {
                    // 409 on a binding: bound already, and the watch is behind.
                    tracing::debug!(pod = %name, ?write, error = %e, "kubelet simulator write failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    false
                }
            };
            let _ = outcomes.send(Outcome {
                key,
                uid,
                write,
                ok,
            });
        });
    }

    fn on_outcome(&mut self, o: Outcome) {
        let Some(state) = self.pods.get_mut(&o.key) else {
            return;
        };
        if state.uid != o.uid {
            return;
        }
        state.busy = false;
        match (o.write, o.ok) {
            // Stays assumed until the watch shows the binding.
            (Write::Bind, true) => {}
            (Write::Bind, false) => {
                if state.assumed {
                    state.assumed = false;
                    self.place(&o.key, None);
                }
            }
            (write, true) => state.done = Some(write),
            (_, false) => {}
        }
        // The watch may have shown the pod's next state while the write was in flight (a
        // binding's pod to start): act on it now. A write that succeeded is not sent again.
        self.evaluate(&o.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Value {
        model::node_object(name, &Map::new(), "t")
    }

    #[test]
    fn a_pending_pod_is_bound_to_the_least_loaded_node_that_is_up() {
        let (a, b, c) = (node("a"), node("b"), node("c"));
        let pod = json!({"metadata": {"name": "p"}, "spec": {}});
        let nodes = [(&a, 2, true), (&b, 0, false), (&c, 1, true)];
        assert_eq!(pod_action(&pod, &nodes, 1.0), PodAction::Bind("c".into()));
        let nowhere = [(&b, 0, false)];
        assert_eq!(pod_action(&pod, &nowhere, 1.0), PodAction::Nothing);
    }

    #[test]
    fn a_bound_pod_is_started_once_by_its_own_kubelet_only_while_it_is_up() {
        let a = node("a");
        let pending = json!({"spec": {"nodeName": "a"}, "status": {"phase": "Pending"}});
        let running = json!({"spec": {"nodeName": "a"}, "status": {"phase": "Running"}});
        let elsewhere = json!({"spec": {"nodeName": "z"}, "status": {"phase": "Pending"}});
        assert_eq!(
            pod_action(&pending, &[(&a, 1, true)], 1.0),
            PodAction::MarkRunning
        );
        assert_eq!(
            pod_action(&pending, &[(&a, 1, false)], 1.0),
            PodAction::Nothing
        );
        assert_eq!(
            pod_action(&running, &[(&a, 1, true)], 1.0),
            PodAction::Nothing
        );
        assert_eq!(
            pod_action(&elsewhere, &[(&a, 1, true)], 1.0),
            PodAction::Nothing
        );
    }

    #[test]
    fn a_terminating_pod_goes_after_its_grace_period_divided_by_the_speed() {
        let a = node("a");
        let pod = json!({"metadata": {"deletionTimestamp": "t", "deletionGracePeriodSeconds": 30},
            "spec": {"nodeName": "a"}, "status": {"phase": "Running"}});
        assert_eq!(
            pod_action(&pod, &[(&a, 1, true)], 10.0),
            PodAction::FinishTermination(Duration::from_secs(3))
        );
        assert_eq!(
            pod_action(&pod, &[(&a, 1, false)], 10.0),
            PodAction::Nothing
        );
        let unbound = json!({"metadata": {"deletionTimestamp": "t"}, "spec": {}});
        assert_eq!(
            pod_action(&unbound, &[(&a, 0, true)], 1.0),
            PodAction::Nothing
        );
    }

    /// A simulator whose API server answers every request with 201 `{}`, and its pod loop.
    fn offline_loop() -> (KubeletSimulator, PodLoop, mpsc::UnboundedReceiver<Outcome>) {
        let service = tower::service_fn(|_req: http::Request<kube::client::Body>| async {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(201)
                    .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
                    .expect("a response"),
            )
        });
        let sim =
            KubeletSimulator::new(Client::new(service, "default"), SimulatorConfig::default());
        let (pod_loop, outcomes) = PodLoop::new(sim.clone());
        (sim, pod_loop, outcomes)
    }

    fn pod(name: &str, node: Option<&str>) -> Pod {
        let mut spec = json!({"containers": [{"name": "c", "image": "i"}]});
        if let Some(node) = node {
            spec["nodeName"] = json!(node);
        }
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns",
            "uid": format!("uid-{name}")}, "spec": spec, "status": {"phase": "Pending"}}))
        .expect("a Pod")
    }

    /// A Ready Node as the watch delivers it.
    fn watched_node(name: &str, unschedulable: bool) -> Node {
        let mut n = model::node_object(name, &Map::new(), &now());
        n["spec"]["unschedulable"] = json!(unschedulable);
        serde_json::from_value(n).expect("a Node")
    }

    fn key(name: &str) -> PodKey {
        ("ns".to_string(), name.to_string())
    }

    #[tokio::test]
    async fn bindings_in_flight_count_for_their_node_so_pods_spread_fewest_first() {
        let (sim, mut pod_loop, _outcomes) = offline_loop();
        for name in ["a", "b", "c"] {
            sim.mark_kubelet(name, true);
            pod_loop.on_node_event(Event::Apply(watched_node(name, name == "c")));
        }
        for i in 0..4 {
            pod_loop.on_pod_event(Event::Apply(pod(&format!("p{i}"), None)));
        }
        // Every binding is still in flight (nothing reported back): each one was assumed.
        let count = |n: &str| pod_loop.by_node.get(n).map_or(0, HashSet::len);
        assert_eq!((count("a"), count("b"), count("c")), (2, 2, 0));
        assert!(pod_loop.pending.is_empty());
        assert!((0..4).all(|i| pod_loop.pods[&key(&format!("p{i}"))].assumed));
    }

    #[tokio::test]
    async fn a_pod_whose_binding_the_watch_shows_before_the_answer_is_started_after_it() {
        let (sim, mut pod_loop, _outcomes) = offline_loop();
        sim.mark_kubelet("a", true);
        pod_loop.on_node_event(Event::Apply(watched_node("a", false)));
        pod_loop.on_pod_event(Event::Apply(pod("p", None)));
        assert!(pod_loop.pods[&key("p")].busy, "binding in flight");
        // The watch shows the binding while its request has not answered yet: nothing more.
        pod_loop.on_pod_event(Event::Apply(pod("p", Some("a"))));
        let state = &pod_loop.pods[&key("p")];
        assert!(state.busy && !state.assumed && state.done.is_none());
        // The binding's answer: the kubelet starts the pod now, not at some later event.
        pod_loop.on_outcome(Outcome {
            key: key("p"),
            uid: "uid-p".into(),
            write: Write::Bind,
            ok: true,
        });
        assert!(
            pod_loop.pods[&key("p")].busy,
            "the Running status write is in flight"
        );
        pod_loop.on_outcome(Outcome {
            key: key("p"),
            uid: "uid-p".into(),
            write: Write::Start,
            ok: true,
        });
        let state = &pod_loop.pods[&key("p")];
        assert_eq!(state.done, Some(Write::Start));
        // A stale event (still Pending) does not send the status again.
        pod_loop.on_pod_event(Event::Apply(pod("p", Some("a"))));
        assert!(!pod_loop.pods[&key("p")].busy);
        // Its deletion forgets it.
        pod_loop.on_pod_event(Event::Delete(pod("p", Some("a"))));
        assert!(pod_loop.pods.is_empty() && pod_loop.by_node.is_empty());
    }
}
