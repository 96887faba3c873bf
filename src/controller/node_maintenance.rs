//! The NodeMaintenance reconciler: DESIGN.md "While a NodeMaintenance exists", steps 1 to 8.
//!
//! Each reconcile reads the object fresh (the cache may lag our own last status write, and the
//! Events are derived from status), then:
//!
//! 1. the finalizer `foregroundDeleteNodeMaintenance` is added by kube-runtime's `finalizer()`;
//! 2. a missing node gives `Failed` + `Stalled`, retried slowly and on Node events;
//! 3. the node lease is taken or renewed (renewal is scheduled half-way through the lease);
//! 4. and 5. the node is labelled, tainted and cordoned in one optimistic patch;
//! 6. the drain runs as its own task per NodeMaintenance (keyed by uid, cancelled on deletion),
//!    which writes its progress to status itself (that write also wakes the reconciler through
//!    the watch), so a slow drain never holds up another NodeMaintenance;
//! 7. a finished drain gives `Succeeded`;
//! 8. deletion restores the node, releases the lease and lets the finalizer go.
//!
//! What the status becomes is decided by the pure [`desired_status`] from a [`Stage`], and which
//! Events to emit by the pure [`events_for`] from the old and new status.

use super::lease::{self, LeaseHold, Released};
use super::node::{self, NodePatched};
use crate::api::conditions::{self, ConditionStatus, ConditionType};
use crate::api::{
    FINALIZER, MaintenancePhase, NodeMaintenance, NodeMaintenanceStatus, PodReference,
};
use crate::clock::Clock;
use crate::drain::{DrainReport, DrainSeed, DrainSettings, drain_node};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Event reasons, the same strings as medik8s.
pub mod reasons {
    /// The NodeMaintenance was picked up.
    pub const BEGIN_MAINTENANCE: &str = "BeginMaintenance";
    /// Maintenance cannot proceed (missing node, lost lease).
    pub const FAILED_MAINTENANCE: &str = "FailedMaintenance";
    /// The node is cordoned and drained. Emitted once per NodeMaintenance.
    pub const SUCCEED_MAINTENANCE: &str = "SucceedMaintenance";
    /// On the Node: it was put back after maintenance.
    pub const UNCORDON_NODE: &str = "UncordonNode";
    /// The NodeMaintenance was deleted and cleaned up.
    pub const REMOVED_MAINTENANCE: &str = "RemovedMaintenance";
}

/// Settings of the NodeMaintenance controller.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeMaintenanceConfig {
    /// Duration of the node lease; renewed half-way through. medik8s: 3600 s.
    pub lease_duration: Duration,
    /// Holder identity written on the node lease.
    pub lease_holder: String,
    /// How often to retry while another holder has the lease, or after failing to write it
    /// (multiplied by the number of consecutive failures).
    pub lease_retry: Duration,
    /// Consecutive failures to extend our lease tolerated before the node is released and the
    /// maintenance fails. medik8s: 3.
    pub max_lease_errors: i32,
    /// How often to look again for a node that does not exist (Node events also wake it up).
    pub missing_node_retry: Duration,
    /// Requeue after an unexpected error.
    pub error_retry: Duration,
    /// Drain pacing.
    pub drain: DrainSettings,
    /// Name of the reporting controller on Events.
    pub reporter: String,
}

impl Default for NodeMaintenanceConfig {
    fn default() -> Self {
        NodeMaintenanceConfig {
            lease_duration: Duration::from_secs(3600),
            lease_holder: lease::LEASE_HOLDER.to_string(),
            lease_retry: Duration::from_secs(10),
            max_lease_errors: 3,
            missing_node_retry: Duration::from_secs(300),
            error_retry: Duration::from_secs(5),
            drain: DrainSettings::default(),
            reporter: "nmo".to_string(),
        }
    }
}

/// Counts of reconciles, for tests and metrics.
#[derive(Debug, Default)]
pub struct ReconcileStats {
    total: AtomicU64,
    errors: AtomicU64,
    per_object: Mutex<HashMap<String, (u64, u64)>>,
}

impl ReconcileStats {
    fn object(&self, name: &str, f: impl FnOnce(&mut (u64, u64))) {
        f(self
            .per_object
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default());
    }

    fn started(&self, name: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.object(name, |c| c.0 += 1);
    }

    fn finished(&self, name: &str) {
        self.object(name, |c| c.1 += 1);
    }

    /// Reconciles of every NodeMaintenance so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Reconciles that returned an error.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Reconciles of the NodeMaintenance `name` started so far.
    pub fn of(&self, name: &str) -> u64 {
        self.counts(name).0
    }

    /// Reconciles of the NodeMaintenance `name` that have returned (successfully or not).
    pub fn finished_of(&self, name: &str) -> u64 {
        self.counts(name).1
    }

    fn counts(&self, name: &str) -> (u64, u64) {
        self.per_object
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
            .unwrap_or_default()
    }
}

/// What the drain task of one NodeMaintenance has said last.
#[derive(Clone, Debug)]
enum DrainProgress {
    Running(DrainReport),
    Complete(DrainReport),
    Ended(String),
}

struct DrainTask {
    progress: watch::Receiver<DrainProgress>,
    handle: JoinHandle<()>,
}

/// The running drain tasks, keyed by NodeMaintenance uid. Dropping it stops them all.
#[derive(Default)]
pub struct Drains {
    tasks: Mutex<HashMap<String, DrainTask>>,
}

impl Drains {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DrainTask>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest progress of the drain for `uid`, starting it with `start` if none runs. An
    /// ended (failed) task is forgotten so that the next call starts a new one.
    fn progress_or_start(
        &self,
        uid: &str,
        start: impl FnOnce(watch::Sender<DrainProgress>) -> JoinHandle<()>,
    ) -> DrainProgress {
        let mut tasks = self.lock();
        if let Some(task) = tasks.get(uid) {
            let progress = task.progress.borrow().clone();
            if let DrainProgress::Ended(_) = progress {
                tasks.remove(uid);
            }
            return progress;
        }
        let (tx, rx) = watch::channel(DrainProgress::Running(DrainReport::default()));
        let handle = start(tx);
        tasks.insert(
            uid.to_string(),
            DrainTask {
                progress: rx,
                handle,
            },
        );
        DrainProgress::Running(DrainReport::default())
    }

    /// Stop and forget the drain of `uid`, if any.
    fn cancel(&self, uid: &str) {
        if let Some(task) = self.lock().remove(uid) {
            task.handle.abort();
        }
    }

    /// Stop every drain.
    pub fn cancel_all(&self) {
        for (_, task) in self.lock().drain() {
            task.handle.abort();
        }
    }

    /// How many drains are running or waiting to be collected.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no drain is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Drains {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

/// Everything a reconcile needs.
pub struct Context {
    /// The API client for everything but evictions.
    pub client: kube::Client,
    /// The client that sends evictions (no automatic 429 retry).
    pub evictions: kube::Client,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Settings.
    pub config: NodeMaintenanceConfig,
    /// Reconcile counts.
    pub stats: Arc<ReconcileStats>,
    drains: Arc<Drains>,
}

/// Errors of one reconcile. Expected states (missing node, lease held elsewhere, PDB refusals)
/// are not errors: they are written to status.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Reading the NodeMaintenance failed.
    #[error("reading NodeMaintenance {name}: {source}")]
    GetNodeMaintenance {
        /// Object name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Writing status failed.
    #[error("writing status of NodeMaintenance {name}: {source}")]
    PatchStatus {
        /// Object name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Adding the Node ownerReference failed.
    #[error("setting the Node owner of NodeMaintenance {name}: {source}")]
    SetNodeOwner {
        /// Object name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Reading or writing the Node failed.
    #[error(transparent)]
    Node(#[from] node::NodeError),
    /// Reading or writing the lease failed (outside the counted renewal failures).
    #[error(transparent)]
    Lease(#[from] lease::LeaseError),
    /// The finalizer helper failed, or our reconcile inside it did.
    #[error("{0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<ReconcileError>>),
}

impl ReconcileError {
    /// A bounded name for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        use kube::runtime::finalizer::Error as F;
        match self {
            ReconcileError::GetNodeMaintenance { .. } => "GetNodeMaintenance",
            ReconcileError::PatchStatus { .. } => "PatchStatus",
            ReconcileError::SetNodeOwner { .. } => "SetNodeOwner",
            ReconcileError::Node(node::NodeError::GetNode { .. }) => "GetNode",
            ReconcileError::Node(node::NodeError::PatchNode { .. }) => "PatchNode",
            ReconcileError::Lease(e) => e.category(),
            ReconcileError::Finalizer(f) => match f.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.category(),
                F::AddFinalizer(_) | F::RemoveFinalizer(_) => "Finalizer",
                F::UnnamedObject | F::InvalidFinalizer => "Finalizer",
            },
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Decide (pure)
// ----------------------------------------------------------------------------------------------

/// Where a NodeMaintenance stands after one reconcile's observations and actions.
#[derive(Clone, Debug, PartialEq)]
pub enum Stage {
    /// The node does not exist.
    NodeMissing,
    /// Another holder has the node lease.
    LeaseHeldByOther {
        /// Their holder identity.
        holder: String,
        /// When their lease lapses unless renewed.
        expires: DateTime<Utc>,
    },
    /// Writing our lease failed; `count` consecutive failures so far, not yet too many.
    LeaseFailing {
        /// The error.
        error: String,
        /// Consecutive failures including this one.
        count: i32,
    },
    /// Extending our lease failed too often: the node was released.
    LeaseLost {
        /// The last error.
        error: String,
        /// Consecutive failures including this one.
        count: i32,
    },
    /// The node is cordoned and being drained; `drain` is the drain's last report once it has
    /// listed the node's pods.
    Draining {
        /// The last drain report.
        drain: Option<DrainReport>,
    },
    /// The drain task ended with an error; it is restarted.
    DrainRestarting {
        /// What ended it.
        error: String,
    },
    /// The node is cordoned and drained.
    Drained {
        /// The final drain report, when this reconcile saw the drain finish.
        drain: Option<DrainReport>,
    },
}

fn pod_refs(pods: &[crate::drain::PodKey]) -> (Vec<String>, Vec<PodReference>) {
    let names = pods.iter().map(|p| p.name.clone()).collect();
    let refs = pods
        .iter()
        .map(|p| PodReference {
            namespace: Some(p.namespace.clone()),
            name: Some(p.name.clone()),
        })
        .collect();
    (names, refs)
}

fn count(n: usize) -> Option<i32> {
    Some(i32::try_from(n).unwrap_or(i32::MAX))
}

/// The status a NodeMaintenance of node `node` should have at `now`, given its `current` status
/// and the `stage` reached. `lastUpdate` moves only when something else changed, and condition
/// transition times only when their status changes, so an unchanged stage gives an identical
/// status and no write.
pub fn desired_status(
    current: &NodeMaintenanceStatus,
    stage: &Stage,
    node: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> NodeMaintenanceStatus {
    use ConditionStatus::{False, True};
    use ConditionType::{Ready, Reconciling, Stalled};
    let mut s = current.clone();
    s.observed_generation = generation;
    let mut conds = current.conditions.clone().unwrap_or_default();
    let set = |conds: &[_], kind, status, reason: &str, message: &str| {
        conditions::set(conds, kind, status, reason, message, generation, now)
    };
    match stage {
        Stage::NodeMissing => {
            let message = format!("nodes \"{node}\" not found");
            s.phase = Some(MaintenancePhase::Failed);
            s.last_error = Some(message.clone());
            conds = set(&conds, Ready, False, "NodeNotFound", &message);
            conds = set(&conds, Stalled, True, "NodeNotFound", &message);
            conds = conditions::remove(&conds, Reconciling);
        }
        Stage::LeaseHeldByOther { holder, expires } => {
            let message = format!(
                "lease {}/{} is held by {holder} until {}: waiting for it to be released or to expire",
                lease::LEASE_NAMESPACE,
                lease::lease_name(node),
                expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            s.phase = Some(MaintenancePhase::Running);
            s.last_error = Some(message.clone());
            conds = set(&conds, Ready, False, "LeaseHeldByOther", &message);
            conds = set(&conds, Reconciling, True, "LeaseHeldByOther", &message);
            conds = conditions::remove(&conds, Stalled);
        }
        Stage::LeaseFailing { error, count } => {
            let message = format!("failed to extend the node lease: {error}");
            s.phase = Some(s.phase.unwrap_or(MaintenancePhase::Running));
            s.error_on_lease_count = Some(*count);
            s.last_error = Some(message.clone());
            // The rest is unchanged: the next good renewal carries on from where things were.
            if conditions::find(&conds, Ready).is_none() {
                conds = set(&conds, Ready, False, "LeaseError", &message);
            }
        }
        Stage::LeaseLost { error, count } => {
            let message = format!(
                "failed to extend the node lease {count} times in a row, released the node: {error}"
            );
            s.phase = Some(MaintenancePhase::Failed);
            s.error_on_lease_count = Some(*count);
            s.last_error = Some(message.clone());
            conds = set(&conds, Ready, False, "LeaseLost", &message);
            conds = set(&conds, Stalled, True, "LeaseLost", &message);
            conds = conditions::remove(&conds, Reconciling);
        }
        Stage::Draining { .. } | Stage::DrainRestarting { .. } => {
            s.phase = Some(MaintenancePhase::Running);
            s.error_on_lease_count = Some(0);
            let report = match stage {
                Stage::Draining { drain } => drain.as_ref().filter(|r| r.listed),
                _ => None,
            };
            let message = match report {
                Some(r) => {
                    let (names, refs) = pod_refs(&r.pending);
                    s.drain_progress = Some(r.progress());
                    s.pending_pods = Some(names);
                    s.pending_pods_refs = Some(refs);
                    s.total_pods = count(r.total_pods);
                    s.eviction_pods = count(r.to_leave);
                    s.last_error = r.last_error();
                    format!(
                        "draining node {node}: {} of {} pods still to leave",
                        r.pending.len(),
                        r.to_leave
                    )
                }
                None => {
                    s.drain_progress = Some(s.drain_progress.unwrap_or(0).clamp(0, 100));
                    // A drain that has not reported yet (just started, or resumed after a
                    // restart) keeps the drain's last error; any other error is over.
                    let was_draining = conditions::find(&conds, Reconciling)
                        .is_some_and(|c| c.reason == "Draining");
                    s.last_error = match stage {
                        Stage::DrainRestarting { error } => Some(error.clone()),
                        _ if was_draining => s.last_error.clone(),
                        _ => None,
                    };
                    format!("draining node {node}")
                }
            };
            conds = set(&conds, Ready, False, "Draining", &message);
            conds = set(&conds, Reconciling, True, "Draining", &message);
            conds = conditions::remove(&conds, Stalled);
        }
        Stage::Drained { drain } => {
            s.phase = Some(MaintenancePhase::Succeeded);
            s.error_on_lease_count = Some(0);
            s.drain_progress = Some(100);
            s.pending_pods = Some(Vec::new());
            s.pending_pods_refs = Some(Vec::new());
            if let Some(r) = drain.as_ref().filter(|r| r.listed) {
                s.total_pods = count(r.total_pods);
                s.eviction_pods = count(r.to_leave);
            }
            s.last_error = None;
            let message = format!("node {node} is cordoned, tainted and drained");
            conds = set(&conds, Ready, True, "NodeDrained", &message);
            conds = conditions::remove(&conds, Reconciling);
            conds = conditions::remove(&conds, Stalled);
        }
    }
    s.conditions = Some(conds);
    let mut before = current.clone();
    before.last_update = None;
    let mut after = s.clone();
    after.last_update = None;
    if before != after || s.last_update.is_none() {
        s.last_update = Some(crate::api::to_time(now));
    }
    s
}

/// An Event to publish, decided from a status transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaintenanceEvent {
    /// First status write: maintenance begins.
    Begin,
    /// The drain finished: once, on the transition to `Succeeded`.
    Succeeded,
    /// Entered `Failed`, or failed again for another reason.
    Failed(String),
}

/// The Events that the status change `old` -> `new` calls for. Deriving them from status (not
/// from memory) is what makes `SucceedMaintenance` appear once, across restarts too.
pub fn events_for(
    old: &NodeMaintenanceStatus,
    new: &NodeMaintenanceStatus,
) -> Vec<MaintenanceEvent> {
    let mut out = Vec::new();
    if old.phase.is_none() && new.phase.is_some() {
        out.push(MaintenanceEvent::Begin);
    }
    if new.phase == Some(MaintenancePhase::Succeeded)
        && old.phase != Some(MaintenancePhase::Succeeded)
    {
        out.push(MaintenanceEvent::Succeeded);
    }
    if new.phase == Some(MaintenancePhase::Failed)
        && (old.phase != Some(MaintenancePhase::Failed) || old.last_error != new.last_error)
    {
        out.push(MaintenanceEvent::Failed(
            new.last_error.clone().unwrap_or_default(),
        ));
    }
    out
}

/// The ownerReferences a NodeMaintenance should have: ad-hoc ones (no controller owner) also
/// point at their Node, so deleting the Node garbage-collects them. Ones with a controller owner
/// (a MaintenanceWindow) must not, or the Node would keep them alive after the window is gone.
/// `None` when nothing needs to change.
pub fn node_owner_references(nm: &NodeMaintenance, node: &Node) -> Option<Vec<OwnerReference>> {
    let refs = nm.metadata.owner_references.clone().unwrap_or_default();
    if refs.iter().any(|r| r.controller == Some(true)) {
        return None;
    }
    let uid = node.metadata.uid.clone()?;
    if refs
        .iter()
        .any(|r| r.api_version == "v1" && r.kind == "Node" && r.uid == uid)
    {
        return None;
    }
    let mut refs = refs;
    refs.push(OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.metadata.name.clone().unwrap_or_default(),
        uid,
        controller: Some(false),
        block_owner_deletion: Some(false),
    });
    Some(refs)
}

/// Whether a stage decided on `decided` may still be written to `fresh`, which a write conflict
/// made us re-read. A stage is decided from the phase it saw (a `Succeeded` object gets
/// `Drained`, a `Running` one the drain's progress): once another writer moved the phase on, or
/// the object is being deleted or was replaced, re-applying the stage would undo their work. A
/// stale `Draining` would put a `Succeeded` object back to `Running`, and it would then succeed,
/// and emit `SucceedMaintenance`, a second time. The other writer's change woke the reconciler,
/// which decides afresh.
pub fn stage_still_applies(decided: &NodeMaintenance, fresh: &NodeMaintenance) -> bool {
    let phase = |nm: &NodeMaintenance| nm.status.as_ref().and_then(|s| s.phase);
    fresh.metadata.uid == decided.metadata.uid
        && fresh.metadata.deletion_timestamp.is_none()
        && phase(fresh) == phase(decided)
}

/// A JSON merge patch turning `old` status into `new`: every field of `new`, and `null` for the
/// fields `new` no longer has (such as a cleared `lastError`).
pub fn status_merge_patch(old: &NodeMaintenanceStatus, new: &NodeMaintenanceStatus) -> Value {
    let mut patch = serde_json::to_value(new).unwrap_or_else(|_| json!({}));
    if let (Some(p), Ok(Value::Object(o))) = (patch.as_object_mut(), serde_json::to_value(old)) {
        for key in o.keys() {
            if !p.contains_key(key) {
                p.insert(key.clone(), Value::Null);
            }
        }
    }
    patch
}

// ----------------------------------------------------------------------------------------------
// Act (I/O)
// ----------------------------------------------------------------------------------------------

fn real(ctx: &Context, d: Duration) -> Duration {
    chrono::Duration::from_std(d)
        .map(|v| ctx.clock.real_duration(v))
        .unwrap_or(d)
        .max(Duration::from_millis(10))
}

fn real_until(ctx: &Context, at: DateTime<Utc>) -> Duration {
    let wait = (at - ctx.clock.now()).max(chrono::Duration::zero());
    ctx.clock
        .real_duration(wait)
        .max(Duration::from_millis(100))
}

fn nm_api(ctx: &Context) -> Api<NodeMaintenance> {
    Api::all(ctx.client.clone())
}

impl Context {
    async fn publish(
        &self,
        reference: &ObjectReference,
        reason: &str,
        note: String,
        warning: bool,
    ) {
        let event = KubeEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, reference).await {
            tracing::warn!(%reason, error = %err, "could not publish event");
        }
    }
}

/// Write the status for `stage` if it differs, then publish the Events the transition calls
/// for. The patch carries the resourceVersion read, so of two writers (the reconciler and the
/// drain task) only one makes a transition and emits its Event; the other re-reads and retries
/// only if its stage still applies ([`stage_still_applies`]). Returns the status now in effect
/// (`None`: the object is gone, or moved on and is left to the next reconcile).
async fn write_status(
    ctx: &Context,
    nm: &NodeMaintenance,
    stage: &Stage,
) -> Result<Option<NodeMaintenanceStatus>, ReconcileError> {
    let name = nm.name_any();
    let mut current = nm.clone();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_write_status(ctx, &current, stage).await {
            Ok(status) => return Ok(Some(status)),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 4 => {
                match nm_api(ctx).get_opt(&name).await {
                    Ok(Some(fresh)) if stage_still_applies(nm, &fresh) => current = fresh,
                    Ok(_) => return Ok(None),
                    Err(source) => return Err(ReconcileError::GetNodeMaintenance { name, source }),
                }
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(None),
            Err(source) => return Err(ReconcileError::PatchStatus { name, source }),
        }
    }
}

async fn try_write_status(
    ctx: &Context,
    nm: &NodeMaintenance,
    stage: &Stage,
) -> Result<NodeMaintenanceStatus, kube::Error> {
    let old = nm.status.clone().unwrap_or_default();
    let new = desired_status(
        &old,
        stage,
        &nm.spec.node_name,
        nm.metadata.generation,
        ctx.clock.now(),
    );
    if new == old {
        return Ok(new);
    }
    let patch = json!({
        "metadata": {"resourceVersion": nm.metadata.resource_version},
        "status": status_merge_patch(&old, &new),
    });
    let params = PatchParams {
        field_manager: Some(node::FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    nm_api(ctx)
        .patch_status(&nm.name_any(), &params, &Patch::Merge(&patch))
        .await?;
    let reference = nm.object_ref(&());
    for event in events_for(&old, &new) {
        match event {
            MaintenanceEvent::Begin => {
                ctx.publish(
                    &reference,
                    reasons::BEGIN_MAINTENANCE,
                    format!("Begin a node maintenance of node {}", nm.spec.node_name),
                    false,
                )
                .await
            }
            MaintenanceEvent::Succeeded => {
                ctx.publish(
                    &reference,
                    reasons::SUCCEED_MAINTENANCE,
                    format!("Node maintenance of node {} succeeded", nm.spec.node_name),
                    false,
                )
                .await
            }
            MaintenanceEvent::Failed(message) => {
                ctx.publish(&reference, reasons::FAILED_MAINTENANCE, message, true)
                    .await
            }
        }
    }
    Ok(new)
}

/// Called by a drain task: write its progress, unless the object moved on meanwhile (deleted,
/// failed, or already succeeded), in which case the reconciler is in charge.
async fn report_drain(ctx: &Context, name: &str, uid: &str, stage: Stage) {
    let nm = match nm_api(ctx).get_opt(name).await {
        Ok(Some(nm)) => nm,
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(%name, error = %err, "drain could not read its NodeMaintenance");
            return;
        }
    };
    let phase = nm.status.as_ref().and_then(|s| s.phase);
    if nm.uid().as_deref() != Some(uid)
        || nm.metadata.deletion_timestamp.is_some()
        || !matches!(phase, None | Some(MaintenancePhase::Running))
    {
        return;
    }
    if let Err(err) = write_status(ctx, &nm, &stage).await {
        tracing::warn!(%name, error = %err, "drain could not write its progress");
    }
}

/// [`report_drain`] as a task of its own, awaited: aborting the drain (it completed, failed, or
/// its NodeMaintenance went away) must not cut a status write off from the Events it calls for,
/// or a `SucceedMaintenance` already written to status would never be published.
async fn report_drain_detached(ctx: &Arc<Context>, name: &str, uid: &str, stage: Stage) {
    let (ctx, name, uid) = (ctx.clone(), name.to_string(), uid.to_string());
    let report = tokio::spawn(async move { report_drain(&ctx, &name, &uid, stage).await });
    if let Err(err) = report.await {
        tracing::warn!(error = %err, "drain progress report failed");
    }
}

async fn set_node_owner(
    ctx: &Context,
    nm: NodeMaintenance,
    node: &Node,
) -> Result<NodeMaintenance, ReconcileError> {
    let Some(refs) = node_owner_references(&nm, node) else {
        return Ok(nm);
    };
    let name = nm.name_any();
    let patch = json!({"metadata": {
        "resourceVersion": nm.metadata.resource_version,
        "ownerReferences": refs,
    }});
    let params = PatchParams {
        field_manager: Some(node::FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    nm_api(ctx)
        .patch(&name, &params, &Patch::Merge(&patch))
        .await
        .map_err(|source| ReconcileError::SetNodeOwner { name, source })
}

fn start_drain(
    ctx: &Arc<Context>,
    nm: &NodeMaintenance,
    status: &NodeMaintenanceStatus,
) -> impl FnOnce(watch::Sender<DrainProgress>) -> JoinHandle<()> + use<> {
    let ctx = ctx.clone();
    let name = nm.name_any();
    let uid = nm.uid().unwrap_or_default();
    let node = nm.spec.node_name.clone();
    let seed = DrainSeed {
        total_pods: status.total_pods.and_then(|n| usize::try_from(n).ok()),
        to_leave: status.eviction_pods.and_then(|n| usize::try_from(n).ok()),
    };
    move |progress| {
        tokio::spawn(async move {
            tracing::info!(%node, nm = %name, "drain started");
            let (latest_tx, mut latest) = watch::channel(None::<DrainReport>);
            let progress_ref = &progress;
            let ctx_ref = &ctx;
            let drain = async move {
                let result = drain_node(
                    ctx_ref.client.clone(),
                    ctx_ref.evictions.clone(),
                    ctx_ref.clock.clone(),
                    &node,
                    ctx_ref.config.drain.clone(),
                    seed,
                    |report: &DrainReport| {
                        progress_ref.send_replace(DrainProgress::Running(report.clone()));
                        latest_tx.send_replace(Some(report.clone()));
                    },
                )
                .await;
                drop(latest_tx);
                (result, node)
            };
            // Progress is written while the drain goes on; reports that arrive during a write
            // are folded into the next one.
            let (name_ref, uid_ref) = (&name, &uid);
            let writer = async move {
                while latest.changed().await.is_ok() {
                    let report = latest.borrow_and_update().clone();
                    if let Some(report) = report.filter(|r| r.listed && !r.complete) {
                        let stage = Stage::Draining {
                            drain: Some(report),
                        };
                        report_drain_detached(ctx_ref, name_ref, uid_ref, stage).await;
                    }
                }
            };
            let ((result, node), ()) = tokio::join!(drain, writer);
            let stage = match result {
                Ok(report) => {
                    tracing::info!(%node, nm = %name, "drain complete");
                    progress.send_replace(DrainProgress::Complete(report.clone()));
                    Stage::Drained {
                        drain: Some(report),
                    }
                }
                Err(err) => {
                    tracing::warn!(%node, nm = %name, error = %err, "drain ended");
                    progress.send_replace(DrainProgress::Ended(err.to_string()));
                    Stage::DrainRestarting {
                        error: err.to_string(),
                    }
                }
            };
            report_drain_detached(&ctx, &name, &uid, stage).await;
        })
    }
}

async fn apply(nm: Arc<NodeMaintenance>, ctx: &Arc<Context>) -> Result<Action, ReconcileError> {
    let nm = NodeMaintenance::clone(&nm);
    let name = nm.name_any();
    let uid = nm.uid().unwrap_or_default();
    let status = nm.status.clone().unwrap_or_default();
    let config = &ctx.config;
    let lease_errors = status.error_on_lease_count.unwrap_or(0);
    if status.phase == Some(MaintenancePhase::Failed) && lease_errors > config.max_lease_errors {
        // The lease was lost and the node released: final until the object is deleted.
        ctx.drains.cancel(&uid);
        return Ok(Action::await_change());
    }

    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let node_name = nm.spec.node_name.clone();
    let Some(node) =
        nodes
            .get_opt(&node_name)
            .await
            .map_err(|source| node::NodeError::GetNode {
                node: node_name.clone(),
                source,
            })?
    else {
        ctx.drains.cancel(&uid);
        write_status(ctx, &nm, &Stage::NodeMissing).await?;
        return Ok(Action::requeue(real(ctx, config.missing_node_retry)));
    };
    let nm = set_node_owner(ctx, nm, &node).await?;

    let duration = chrono::Duration::from_std(config.lease_duration)
        .unwrap_or_else(|_| chrono::Duration::hours(1));
    let now = ctx.clock.now();
    let renew_at = match lease::ensure_lease(
        &ctx.client,
        &node,
        &config.lease_holder,
        duration,
        now,
    )
    .await
    {
        Ok(LeaseHold::Ours { renew_at }) => renew_at,
        Ok(LeaseHold::Theirs { holder, expires }) => {
            let stage = Stage::LeaseHeldByOther { holder, expires };
            write_status(ctx, &nm, &stage).await?;
            let retry = real(ctx, config.lease_retry).min(real_until(ctx, expires));
            return Ok(Action::requeue(retry));
        }
        Err(err) => {
            let count = lease_errors + 1;
            tracing::warn!(%name, error = %err, count, "failed to take or renew the node lease");
            if count > config.max_lease_errors {
                ctx.drains.cancel(&uid);
                node::patch_node(&ctx.client, &node_name, node::leave_maintenance).await?;
                if let Err(e) =
                    lease::release_lease(&ctx.client, &node_name, &config.lease_holder).await
                {
                    tracing::warn!(%name, error = %e, "could not release the node lease");
                }
                let stage = Stage::LeaseLost {
                    error: err.to_string(),
                    count,
                };
                write_status(ctx, &nm, &stage).await?;
                return Ok(Action::await_change());
            }
            let stage = Stage::LeaseFailing {
                error: err.to_string(),
                count,
            };
            write_status(ctx, &nm, &stage).await?;
            return Ok(Action::requeue(
                real(ctx, config.lease_retry) * u32::try_from(count).unwrap_or(1),
            ));
        }
    };

    if let NodePatched::Missing =
        node::patch_node(&ctx.client, &node_name, node::enter_maintenance).await?
    {
        ctx.drains.cancel(&uid);
        write_status(ctx, &nm, &Stage::NodeMissing).await?;
        return Ok(Action::requeue(real(ctx, config.missing_node_retry)));
    }

    let mut drained = false;
    let stage = if status.phase == Some(MaintenancePhase::Succeeded) {
        Stage::Drained { drain: None }
    } else {
        match ctx
            .drains
            .progress_or_start(&uid, start_drain(ctx, &nm, &status))
        {
            DrainProgress::Running(report) => Stage::Draining {
                drain: Some(report).filter(|r| r.listed),
            },
            DrainProgress::Complete(report) => {
                drained = true;
                Stage::Drained {
                    drain: Some(report),
                }
            }
            DrainProgress::Ended(error) => Stage::DrainRestarting { error },
        }
    };
    write_status(ctx, &nm, &stage).await?;
    if drained {
        ctx.drains.cancel(&uid);
    }
    let renew = real_until(ctx, renew_at);
    Ok(Action::requeue(match stage {
        Stage::DrainRestarting { .. } => real(ctx, config.error_retry),
        // The drain task's status writes wake us; this is only a safety net.
        Stage::Draining { .. } => renew.min(Duration::from_secs(60)),
        _ => renew,
    }))
}

async fn cleanup(nm: Arc<NodeMaintenance>, ctx: &Context) -> Result<Action, ReconcileError> {
    let uid = nm.uid().unwrap_or_default();
    ctx.drains.cancel(&uid);
    let node_name = &nm.spec.node_name;
    if let NodePatched::Changed(node) =
        node::patch_node(&ctx.client, node_name, node::leave_maintenance).await?
    {
        ctx.publish(
            &node.object_ref(&()),
            reasons::UNCORDON_NODE,
            format!("Node {node_name} was put back after maintenance"),
            false,
        )
        .await;
    }
    match lease::release_lease(&ctx.client, node_name, &ctx.config.lease_holder).await? {
        Released::HeldByOther(holder) => {
            tracing::info!(node = %node_name, %holder, "node lease left to its holder")
        }
        Released::Deleted | Released::Absent => {}
    }
    ctx.publish(
        &nm.object_ref(&()),
        reasons::REMOVED_MAINTENANCE,
        format!("Removed the node maintenance of node {node_name}"),
        false,
    )
    .await;
    Ok(Action::await_change())
}

async fn reconcile(nm: Arc<NodeMaintenance>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let name = nm.name_any();
    ctx.stats.started(&name);
    let result = reconcile_fresh(&name, &nm, &ctx).await;
    ctx.stats.finished(&name);
    result
}

async fn reconcile_fresh(
    name: &str,
    nm: &NodeMaintenance,
    ctx: &Arc<Context>,
) -> Result<Action, ReconcileError> {
    let api = nm_api(ctx);
    // Read fresh rather than trust the cache: it may lag our own last status write (Events are
    // derived from status) or still hold an object whose finalizer we just removed.
    let Some(fresh) =
        api.get_opt(name)
            .await
            .map_err(|source| ReconcileError::GetNodeMaintenance {
                name: name.to_string(),
                source,
            })?
    else {
        return Ok(Action::await_change());
    };
    if fresh.uid() != nm.uid() {
        // A new object with the same name: its own events will bring it here.
        return Ok(Action::await_change());
    }
    finalizer(&api, FINALIZER, Arc::new(fresh), |event| async {
        match event {
            FinalizerEvent::Apply(nm) => apply(nm, ctx).await,
            FinalizerEvent::Cleanup(nm) => cleanup(nm, ctx).await,
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(Box::new(e)))
}

fn error_policy(nm: Arc<NodeMaintenance>, err: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.stats.errors.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(name = %nm.name_any(), category = err.category(), error = %err, "reconcile failed");
    Action::requeue(real(&ctx, ctx.config.error_retry))
}

/// The parts of a NodeMaintenance controller that outlive its run: counters and drain tasks.
#[derive(Clone)]
pub struct Shared {
    /// Reconcile counts.
    pub stats: Arc<ReconcileStats>,
    /// The running drains.
    pub drains: Arc<Drains>,
}

/// Run the NodeMaintenance controller until `shutdown` resolves. Every drain task is stopped
/// when it returns.
pub async fn run(
    client: kube::Client,
    evictions: kube::Client,
    clock: Arc<dyn Clock>,
    config: NodeMaintenanceConfig,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let reporter = Reporter {
        controller: config.reporter.clone(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        evictions,
        clock,
        config,
        stats: shared.stats.clone(),
        drains: shared.drains.clone(),
    });
    let controller = Controller::new(
        Api::<NodeMaintenance>::all(client.clone()),
        watcher::Config::default(),
    );
    let store = controller.store();
    controller
        // A node appearing (or changing) wakes the NodeMaintenances naming it.
        .watches(
            Api::<Node>::all(client),
            watcher::Config::default(),
            move |node: Node| {
                let name = node.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|nm| nm.spec.node_name == name)
                    .map(|nm| ObjectRef::from_obj(nm.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "NodeMaintenance controller");
            }
        })
        .await;
    shared.drains.cancel_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodeMaintenanceSpec;
    use crate::controller::node::tests::node;
    use crate::drain::PodKey;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
    }

    fn step(current: &NodeMaintenanceStatus, stage: Stage, at: i64) -> NodeMaintenanceStatus {
        desired_status(current, &stage, "n1", Some(1), t(at))
    }

    /// A drain whose one pending pod `ns/a` is held by the PDB `pdb`.
    fn blocked_by_pdb() -> DrainReport {
        let mut blocked = report(&["a"], 1);
        blocked.blocked.push(crate::drain::BlockedEviction {
            pod: PodKey::new("ns", "a"),
            budget: Some("pdb".into()),
            message: "no".into(),
        });
        blocked
    }

    fn report(pending: &[&str], to_leave: usize) -> DrainReport {
        DrainReport {
            listed: true,
            total_pods: to_leave + 2,
            to_leave,
            pending: pending.iter().map(|p| PodKey::new("ns", p)).collect(),
            complete: pending.is_empty(),
            ..Default::default()
        }
    }

    fn cond(s: &NodeMaintenanceStatus, kind: ConditionType) -> Option<&str> {
        conditions::find(s.conditions.as_deref().unwrap_or(&[]), kind).map(|c| c.status.as_str())
    }

    #[test]
    fn a_missing_node_fails_with_the_kubernetes_not_found_message_and_stalls() {
        let s = step(&Default::default(), Stage::NodeMissing, 0);
        assert_eq!(s.phase, Some(MaintenancePhase::Failed));
        assert_eq!(s.last_error.as_deref(), Some("nodes \"n1\" not found"));
        assert_eq!(cond(&s, ConditionType::Stalled), Some("True"));
        assert_eq!(cond(&s, ConditionType::Ready), Some("False"));
        assert_eq!(cond(&s, ConditionType::Reconciling), None);
        assert_eq!(s.observed_generation, Some(1));
    }

    #[test]
    fn the_same_stage_twice_gives_the_same_status_so_nothing_is_written() {
        let s1 = step(&Default::default(), Stage::NodeMissing, 0);
        let s2 = step(&s1, Stage::NodeMissing, 60);
        assert_eq!(s1, s2);
        let d = Stage::Draining {
            drain: Some(report(&["a"], 2)),
        };
        let s3 = step(&s2, d.clone(), 70);
        assert_eq!(step(&s3, d, 80), s3);
    }

    #[test]
    fn draining_shows_pending_pods_progress_and_reconciling() {
        let s = step(
            &Default::default(),
            Stage::Draining {
                drain: Some(report(&["a", "b"], 4)),
            },
            0,
        );
        assert_eq!(s.phase, Some(MaintenancePhase::Running));
        assert_eq!(s.drain_progress, Some(50));
        assert_eq!(s.pending_pods, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(
            s.pending_pods_refs.as_ref().unwrap()[0],
            PodReference {
                namespace: Some("ns".into()),
                name: Some("a".into())
            }
        );
        assert_eq!(s.total_pods, Some(6));
        assert_eq!(s.eviction_pods, Some(4));
        assert_eq!(cond(&s, ConditionType::Reconciling), Some("True"));
        assert_eq!(cond(&s, ConditionType::Ready), Some("False"));
        assert_eq!(cond(&s, ConditionType::Stalled), None);
    }

    #[test]
    fn success_clears_last_error_and_reconciling_and_sets_ready() {
        let blocked = blocked_by_pdb();
        let s = step(
            &Default::default(),
            Stage::Draining {
                drain: Some(blocked),
            },
            0,
        );
        assert!(s.last_error.as_deref().unwrap().contains("pdb"));
        let s = step(
            &s,
            Stage::Drained {
                drain: Some(report(&[], 1)),
            },
            5,
        );
        assert_eq!(s.phase, Some(MaintenancePhase::Succeeded));
        assert_eq!(s.last_error, None);
        assert_eq!(s.drain_progress, Some(100));
        assert_eq!(s.pending_pods, Some(vec![]));
        assert_eq!(cond(&s, ConditionType::Ready), Some("True"));
        assert_eq!(cond(&s, ConditionType::Reconciling), None);
        let patch = status_merge_patch(&step(&s, Stage::NodeMissing, 6), &s);
        assert_eq!(patch["lastError"], Value::Null);
        assert!(patch.as_object().unwrap().contains_key("lastError"));
    }

    #[test]
    fn a_node_that_appears_later_lets_a_failed_maintenance_carry_on() {
        let s = step(&Default::default(), Stage::NodeMissing, 0);
        let s = step(&s, Stage::Draining { drain: None }, 10);
        assert_eq!(s.phase, Some(MaintenancePhase::Running));
        assert_eq!(s.last_error, None);
        assert_eq!(cond(&s, ConditionType::Stalled), None);
        assert_eq!(s.drain_progress, Some(0));
    }

    #[test]
    fn a_resumed_drain_keeps_its_last_error_until_it_reports_again() {
        let blocked = blocked_by_pdb();
        let s = step(
            &Default::default(),
            Stage::Draining {
                drain: Some(blocked),
            },
            0,
        );
        let resumed = step(&s, Stage::Draining { drain: None }, 1);
        assert_eq!(resumed.last_error, s.last_error);
        assert_eq!(resumed.pending_pods, s.pending_pods);
    }

    #[test]
    fn a_lease_held_by_another_holder_keeps_running_and_names_the_holder() {
        let s = step(
            &Default::default(),
            Stage::LeaseHeldByOther {
                holder: "self-node-remediation".into(),
                expires: t(600),
            },
            0,
        );
        assert_eq!(s.phase, Some(MaintenancePhase::Running));
        let err = s.last_error.unwrap();
        assert!(err.contains("self-node-remediation"), "{err}");
        assert!(err.contains("medik8s-leases/node-n1"), "{err}");
    }

    #[test]
    fn lease_failures_are_counted_and_too_many_fail_the_maintenance() {
        let s = step(&Default::default(), Stage::Draining { drain: None }, 0);
        let s = step(
            &s,
            Stage::LeaseFailing {
                error: "boom".into(),
                count: 1,
            },
            1,
        );
        assert_eq!(s.phase, Some(MaintenancePhase::Running));
        assert_eq!(s.error_on_lease_count, Some(1));
        let s = step(
            &s,
            Stage::LeaseLost {
                error: "boom".into(),
                count: 4,
            },
            2,
        );
        assert_eq!(s.phase, Some(MaintenancePhase::Failed));
        assert_eq!(s.error_on_lease_count, Some(4));
        assert_eq!(cond(&s, ConditionType::Stalled), Some("True"));
        let s = step(&s, Stage::Draining { drain: None }, 3);
        assert_eq!(s.error_on_lease_count, Some(0), "reset by a good renewal");
    }

    #[test]
    fn succeed_maintenance_is_due_once_and_begin_maintenance_on_the_first_status() {
        let empty = NodeMaintenanceStatus::default();
        let running = step(&empty, Stage::Draining { drain: None }, 0);
        assert_eq!(events_for(&empty, &running), vec![MaintenanceEvent::Begin]);
        let done = step(&running, Stage::Drained { drain: None }, 1);
        assert_eq!(
            events_for(&running, &done),
            vec![MaintenanceEvent::Succeeded]
        );
        let again = step(&done, Stage::Drained { drain: None }, 2);
        assert_eq!(events_for(&done, &again), vec![]);
    }

    #[test]
    fn failed_maintenance_is_due_on_entering_failed_only() {
        let empty = NodeMaintenanceStatus::default();
        let failed = step(&empty, Stage::NodeMissing, 0);
        assert_eq!(
            events_for(&empty, &failed),
            vec![
                MaintenanceEvent::Begin,
                MaintenanceEvent::Failed("nodes \"n1\" not found".into())
            ]
        );
        let still = step(&failed, Stage::NodeMissing, 300);
        assert_eq!(events_for(&failed, &still), vec![]);
    }

    #[test]
    fn progress_in_status_is_never_negative() {
        let current = NodeMaintenanceStatus {
            drain_progress: Some(-40),
            ..Default::default()
        };
        let s = step(&current, Stage::Draining { drain: None }, 0);
        assert_eq!(s.drain_progress, Some(0));
    }

    fn nm(owners: Vec<OwnerReference>) -> NodeMaintenance {
        let mut nm = NodeMaintenance::new(
            "nm",
            NodeMaintenanceSpec {
                node_name: "a".into(),
                reason: None,
            },
        );
        nm.metadata.owner_references = Some(owners);
        nm
    }

    #[test]
    fn an_ad_hoc_maintenance_gets_a_non_controller_node_owner() {
        let n = node("a").build();
        let refs = node_owner_references(&nm(vec![]), &n).unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].kind, "Node");
        assert_eq!(refs[0].api_version, "v1");
        assert_eq!(refs[0].uid, "uid-a");
        assert_eq!(refs[0].controller, Some(false));
        assert_eq!(refs[0].block_owner_deletion, Some(false));
        assert_eq!(node_owner_references(&nm(refs), &n), None, "idempotent");
    }

    #[test]
    fn a_maintenance_owned_by_a_window_gets_no_node_owner() {
        let window = OwnerReference {
            api_version: "nodemaintenance.medik8s.io/v1alpha1".into(),
            kind: "MaintenanceWindow".into(),
            name: "w".into(),
            uid: "w-uid".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        assert_eq!(
            node_owner_references(&nm(vec![window]), &node("a").build()),
            None
        );
    }

    fn with(uid: &str, phase: Option<MaintenancePhase>, deleting: bool) -> NodeMaintenance {
        let mut n = nm(vec![]);
        n.metadata.uid = Some(uid.into());
        n.status = Some(NodeMaintenanceStatus {
            phase,
            ..Default::default()
        });
        if deleting {
            n.metadata.deletion_timestamp = Some(crate::api::to_time(t(0)));
        }
        n
    }

    #[test]
    fn a_stage_is_retried_after_a_conflict_only_while_the_phase_it_was_decided_from_holds() {
        use MaintenancePhase::{Failed, Running, Succeeded};
        let running = with("u1", Some(Running), false);
        let cases = [
            (
                with("u1", Some(Running), false),
                true,
                "another progress write",
            ),
            (
                with("u1", Some(Succeeded), false),
                false,
                "succeeded meanwhile",
            ),
            (with("u1", Some(Failed), false), false, "failed meanwhile"),
            (with("u1", None, false), false, "status cleared"),
            (with("u1", Some(Running), true), false, "being deleted"),
            (with("u2", Some(Running), false), false, "replaced"),
        ];
        for (fresh, expected, what) in cases {
            assert_eq!(stage_still_applies(&running, &fresh), expected, "{what}");
        }
        let new = with("u1", None, false);
        assert!(stage_still_applies(&new, &with("u1", None, false)));
        assert!(!stage_still_applies(
            &new,
            &with("u1", Some(Running), false)
        ));
    }

    #[test]
    fn a_stale_draining_stage_would_undo_succeeded_and_succeed_again() {
        // Why a conflict retry must not blindly re-apply its stage (see `stage_still_applies`).
        let running = step(
            &Default::default(),
            Stage::Draining {
                drain: Some(report(&["a"], 1)),
            },
            0,
        );
        let done = step(
            &running,
            Stage::Drained {
                drain: Some(report(&[], 1)),
            },
            1,
        );
        let undone = step(
            &done,
            Stage::Draining {
                drain: Some(report(&["a"], 1)),
            },
            2,
        );
        assert_eq!(undone.phase, Some(MaintenancePhase::Running));
        let again = step(&undone, Stage::Drained { drain: None }, 3);
        assert_eq!(
            events_for(&undone, &again),
            vec![MaintenanceEvent::Succeeded]
        );
    }

    /// The race behind a second `SucceedMaintenance`: a writer (the drain task's progress, or a
    /// reconcile that saw the drain still running) read the object while `Running`, and the
    /// drain's completion was written first. Its conflict retry must leave `Succeeded` alone.
    #[tokio::test]
    async fn a_status_write_that_lost_the_race_to_succeeded_neither_undoes_it_nor_emits_again() {
        use crate::sandbox::Sandbox;
        use k8s_openapi::api::events::v1::Event;
        use kube::api::{ListParams, PostParams};

        let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
        sandbox.install_crds().expect("CRDs install");
        let client = sandbox.client().expect("sandbox client");
        let ctx = Context {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "nmo-test".into(),
                    instance: None,
                },
            ),
            client: client.clone(),
            evictions: client.clone(),
            clock: Arc::new(crate::clock::SystemClock),
            config: NodeMaintenanceConfig::default(),
            stats: Arc::default(),
            drains: Arc::default(),
        };
        let api = nm_api(&ctx);
        let created = api
            .create(&PostParams::default(), &nm(vec![]))
            .await
            .expect("NodeMaintenance created");
        let draining = Stage::Draining {
            drain: Some(report(&["p"], 1)),
        };
        write_status(&ctx, &created, &draining).await.unwrap();
        let stale = api.get("nm").await.unwrap();
        let drained = Stage::Drained {
            drain: Some(report(&[], 1)),
        };
        write_status(&ctx, &stale, &drained).await.unwrap();

        // The loser of the race holds the `Running` object it read, and news of the drain.
        let progress = Stage::Draining {
            drain: Some(report(&["q"], 1)),
        };
        let outcome = write_status(&ctx, &stale, &progress).await.unwrap();
        assert_eq!(outcome, None, "left to the next reconcile");
        let now = api.get("nm").await.unwrap();
        assert_eq!(
            now.status.and_then(|s| s.phase),
            Some(MaintenancePhase::Succeeded)
        );
        // The next reconcile of the `Succeeded` object finds nothing to announce.
        write_status(
            &ctx,
            &api.get("nm").await.unwrap(),
            &Stage::Drained { drain: None },
        )
        .await
        .unwrap();
        let succeeded: i32 = Api::<Event>::all(client)
            .list(&ListParams::default())
            .await
            .expect("events listed")
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reasons::SUCCEED_MAINTENANCE))
            .map(|e| e.series.as_ref().map_or(1, |s| s.count))
            .sum();
        assert_eq!(succeeded, 1);
    }
}
