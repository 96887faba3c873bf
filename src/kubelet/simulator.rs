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

use super::model;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
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
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            speed: 1.0,
            lease_renew: Duration::from_secs(10),
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
    if !up {
        return PodAction::Nothing; // a kubelet that is down does nothing until it is back
    }
    if terminating {
        let grace = pod
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .max(0) as f64;
        return PodAction::FinishTermination(Duration::from_secs_f64(grace / speed.max(1e-6)));
    }
    match pod.pointer("/status/phase").and_then(Value::as_str) {
        Some("Running" | "Succeeded" | "Failed") => PodAction::Nothing,
        _ => PodAction::MarkRunning,
    }
}

/// The simulated nodes and whether their kubelet is up.
#[derive(Default)]
struct Shared {
    nodes: Mutex<BTreeMap<String, bool>>,
    /// Pods whose termination is scheduled (by uid).
    terminating: Mutex<HashSet<String>>,
    /// Signalled (with a stored permit, so none is lost while the loop is busy) when a node
    /// comes back up or is added: pending work can proceed.
    changed: Notify,
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
        match nodes.create(&PostParams::default(), &node).await {
            Ok(created) => {
                // A real API server may drop the status of a create: report it as a kubelet does.
                if !model::node_ready(&to_value(&created)) {
                    nodes
                        .patch_status(
                            name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": obj["status"]})),
                        )
                        .await
                        .map_err(err)?;
                }
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(err(e)),
        }
        // kube-apiserver's TaintNodesByCondition admission taints a new node `not-ready`
        // until the node lifecycle controller sees it Ready; that controller does not run
        // here, so the simulator plays its part.
        self.update_node(name, |n, now| model::set_ready(n, true, now))
            .await?;
        let created = nodes.get(name).await.map_err(err)?;
        self.ensure_lease(&created).await.map_err(err)?;
        self.mark_kubelet(name, true);
        Ok(())
    }

    async fn ensure_lease(&self, node: &Node) -> Result<(), kube::Error> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NODE_LEASE_NAMESPACE}});
        match namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(ns).expect("a Namespace"),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), NODE_LEASE_NAMESPACE);
        let name = node.name_any();
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                "name": name, "uid": node.uid().unwrap_or_default()}]},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                "renewTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}});
        match leases
            .create(
                &PostParams::default(),
                &serde_json::from_value(lease).expect("a Lease"),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Record whether the node's kubelet is up, and wake the pod loop: a kubelet that came
    /// back starts its pods and finishes their terminations.
    fn mark_kubelet(&self, name: &str, up: bool) {
        self.shared
            .nodes
            .lock()
            .expect("not poisoned")
            .insert(name.to_string(), up);
        self.shared.changed.notify_one();
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
    /// from a fresh read, so a concurrent cordon or taint by nmo is never overwritten.
    async fn update_node(
        &self,
        name: &str,
        f: impl Fn(&mut Value, &str),
    ) -> Result<(), SimulatorError> {
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
            let current = to_value(&nodes.get(name).await.map_err(err)?);
            let mut changed = current.clone();
            f(&mut changed, &now());
            let result = if changed.get("status") != current.get("status") {
                let node: Node = serde_json::from_value(changed).expect("a Node");
                nodes.replace_status(name, &pp, &node).await.map(|_| ())
            } else if changed != current {
                let node: Node = serde_json::from_value(changed).expect("a Node");
                nodes.replace(name, &pp, &node).await.map(|_| ())
            } else {
                return Ok(());
            };
            match result {
                // Status and spec are written one at a time: go round again for the other.
                Ok(()) => continue,
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(err(e)),
            }
        }
    }

    /// The node's kubelet stops (Ready Unknown, `unreachable` taint, its pods left as they
    /// are) or comes back (Ready, the taint removed, pending terminations finished).
    pub async fn set_ready(&self, name: &str, ready: bool) -> Result<(), SimulatorError> {
        self.is_simulated(name)?;
        self.update_node(name, |n, now| model::set_ready(n, ready, now))
            .await?;
        self.mark_kubelet(name, ready);
        Ok(())
    }

    /// Reboot the node: a new `bootID`, Ready again.
    pub async fn reboot(&self, name: &str) -> Result<(), SimulatorError> {
        self.is_simulated(name)?;
        // One new boot ID for the whole update, even if a conflict makes it go round again.
        let boot = uuid::Uuid::new_v4().to_string();
        self.update_node(name, |n, now| {
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
        let pods = tokio::spawn(self.clone().run_pods());
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
            for name in up {
                let renew = json!({"spec": {"renewTime":
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}});
                if let Err(e) = leases
                    .patch(&name, &PatchParams::default(), &Patch::Merge(renew))
                    .await
                {
                    tracing::debug!(node = %name, error = %e, "node lease renewal failed");
                }
            }
            tokio::time::sleep(self.config.lease_renew).await;
        }
    }

    async fn run_pods(self) {
        let (pod_store, pod_writer) = reflector::store::<Pod>();
        let (node_store, node_writer) = reflector::store::<Node>();
        let pod_events = watcher(Api::<Pod>::all(self.client.clone()), Default::default())
            .default_backoff()
            .reflect(pod_writer)
            .applied_objects()
            .map(|r| r.map(Some))
            .boxed();
        let node_events = watcher(Api::<Node>::all(self.client.clone()), Default::default())
            .default_backoff()
            .reflect(node_writer)
            .applied_objects()
            .map(|r| r.map(|_| None))
            .boxed();
        let mut events = futures::stream::select(pod_events, node_events);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(Some(pod))) => self.handle_pod(&pod, &pod_store, &node_store).await,
                    // A node changed: pending pods may fit now.
                    Some(Ok(None)) => self.retry_pending(&pod_store, &node_store).await,
                    Some(Err(e)) => tracing::debug!(error = %e, "kubelet simulator watch"),
                    None => return,
                },
                // A kubelet came back up: pending pods may fit, and its pods start.
                _ = self.shared.changed.notified() => {
                    self.retry_all(&pod_store, &node_store).await;
                }
            }
        }
    }

    async fn retry_pending(&self, pods: &reflector::Store<Pod>, nodes: &reflector::Store<Node>) {
        for pod in pods.state() {
            let unbound = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_none_or(str::is_empty);
            if unbound {
                self.handle_pod(&pod, pods, nodes).await;
            }
        }
    }

    async fn retry_all(&self, pods: &reflector::Store<Pod>, nodes: &reflector::Store<Node>) {
        for pod in pods.state() {
            self.handle_pod(&pod, pods, nodes).await;
        }
    }

    /// The simulated nodes as the watch sees them, with their pod counts and kubelet state.
    fn node_view(
        &self,
        pods: &reflector::Store<Pod>,
        nodes: &reflector::Store<Node>,
    ) -> Vec<(Value, usize, bool)> {
        let simulated = self.shared.nodes.lock().expect("not poisoned").clone();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for p in pods.state() {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                *counts.entry(n).or_default() += 1;
            }
        }
        nodes
            .state()
            .iter()
            .filter_map(|n| {
                let name = n.name_any();
                let up = *simulated.get(&name)?;
                Some((to_value(&**n), counts.get(&name).copied().unwrap_or(0), up))
            })
            .collect()
    }

    async fn handle_pod(
        &self,
        pod: &Pod,
        pods: &reflector::Store<Pod>,
        nodes: &reflector::Store<Node>,
    ) {
        let view = self.node_view(pods, nodes);
        let refs: Vec<(&Value, usize, bool)> = view.iter().map(|(n, c, u)| (n, *c, *u)).collect();
        let value = to_value(pod);
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        match pod_action(&value, &refs, self.config.speed) {
            PodAction::Nothing => {}
            PodAction::Bind(node) => {
                let binding = json!({"apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name, "namespace": ns},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                let req =
                    http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{name}/binding"))
                        .header("Content-Type", "application/json")
                        .body(serde_json::to_vec(&binding).expect("JSON"));
                match req {
                    Ok(req) => {
                        if let Err(e) = self.client.request_text(req).await {
                            // 409: bound already (a lagging watch); the next event says so.
                            tracing::debug!(pod = %name, %node, error = %e, "binding failed");
                        }
                    }
                    Err(e) => tracing::warn!(pod = %name, error = %e, "building a binding"),
                }
            }
            PodAction::MarkRunning => {
                let status = json!({"status": model::running_status(&now())});
                if let Err(e) = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await
                {
                    tracing::debug!(pod = %name, error = %e, "marking the pod running failed");
                }
            }
            PodAction::FinishTermination(after) => {
                let uid = pod.uid().unwrap_or_default();
                if !self
                    .shared
                    .terminating
                    .lock()
                    .expect("not poisoned")
                    .insert(uid.clone())
                {
                    return;
                }
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: Some(uid.clone()),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    match api.delete(&name, &dp).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                        Err(e) => {
                            tracing::debug!(pod = %name, error = %e, "finishing termination failed")
                        }
                    }
                    shared
                        .terminating
                        .lock()
                        .expect("not poisoned")
                        .remove(&uid);
                });
            }
        }
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
}
