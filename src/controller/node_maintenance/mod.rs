//! The NodeMaintenance reconciler: DESIGN.md "While a NodeMaintenance exists", steps 1 to 10.
//!
//! Each reconcile reads the object fresh (the cache may lag our own last status write, and the
//! Events are derived from status), lets kube-runtime's `finalizer()` add
//! `foregroundDeleteNodeMaintenance`, then runs `observe -> decide -> act -> report`:
//!
//! - [`observe`]: the node, the node lease, the control-plane nodes (only for a control-plane
//!   node not yet in maintenance), the node's pods (listed by `spec.nodeName`, only while
//!   `Succeeded`) and what the drain task said last;
//! - [`decide`]: the pure [`decide::decide`] turns that and `now` into a [`decide::Plan`]: wait
//!   (node missing, lease held elsewhere, quorum), release (lease taken over), or maintain (the
//!   lease write, then the drain step: start, progress, done, restart, or drift);
//! - [`act`]: the lease write (a failure judged by the pure [`decide::lease_verdict`]), the
//!   optimistic node patch, the drain task (one per NodeMaintenance, keyed by uid, writing its
//!   own progress) or, once `Succeeded`, a watch of the node's pods that wakes the reconciler
//!   when a pod lands;
//! - [`status`]: the pure [`status::desired_status`] and [`status::events_for`]: what the status
//!   becomes and which Events a transition calls for.
//!
//! Deletion ([`act::cleanup`]) restores the node and releases the lease only when no other live
//! NodeMaintenance names the node. Errors requeue with per-object exponential backoff and
//! jitter ([`decide::backoff`]).

pub mod act;
pub mod decide;
pub mod drains;
pub mod observe;
pub mod status;
pub mod stray;
#[cfg(test)]
mod tests;

pub use drains::Drains;
pub use status::{
    MaintenanceEvent, Stage, desired_status, events_for, node_owner_references,
    stage_still_applies, status_merge_patch,
};

use super::{LiveConfig, lease, node, quorum};
use crate::api::FINALIZER;
use crate::api::conditions::{self, ConditionType};
use crate::api::{MaintenancePhase, NodeMaintenance};
use crate::clock::Clock;
use crate::controller::events::{EventPublisher, EventType};
use crate::drain::DrainSettings;
use crate::telemetry::{self, Telemetry, metrics, registry};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

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
    /// How often to retry while another holder has the lease; the first wait after failing to
    /// renew it (then doubled, with jitter, up to `error_retry_max`).
    pub lease_retry: Duration,
    /// Consecutive failures to renew our lease tolerated: the node is released (and the
    /// maintenance fails) once more renewals than this failed in a row *and* our last renewal
    /// has expired. medik8s: 3.
    pub max_lease_errors: i32,
    /// How often to look again for a node that does not exist (Node events also wake it up).
    pub missing_node_retry: Duration,
    /// First requeue after an unexpected error; doubled per consecutive error of the object,
    /// with jitter, up to `error_retry_max`.
    pub error_retry: Duration,
    /// Longest requeue after errors.
    pub error_retry_max: Duration,
    /// How often to look again at a control-plane node refused for the quorum (Node events of
    /// control-plane nodes and deleted NodeMaintenances also wake it).
    pub quorum_retry: Duration,
    /// Drain pacing.
    pub drain: DrainSettings,
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
            error_retry_max: Duration::from_secs(300),
            quorum_retry: Duration::from_secs(300),
            drain: DrainSettings::default(),
        }
    }
}

/// Counts of reconciles, for tests and metrics.
#[derive(Debug, Default)]
pub struct ReconcileStats {
    total: AtomicU64,
    errors: AtomicU64,
    per_object: Mutex<HashMap<String, (u64, u64)>>,
    /// Consecutive failed reconciles per object, for the error backoff.
    failing: Mutex<HashMap<String, u32>>,
}

impl ReconcileStats {
    /// Forget the counters of `name`: it is gone.
    fn prune(&self, name: &str) {
        self.per_object
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Count a failed reconcile of `name`; returns how many in a row.
    fn failed(&self, name: &str) -> u32 {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let n = failing.entry(name.to_string()).or_default();
        *n = n.saturating_add(1);
        *n
    }

    fn succeeded(&self, name: &str) {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// How many NodeMaintenances have counters (for tests: pruned when they are gone).
    pub fn tracked(&self) -> usize {
        self.per_object
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
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

/// Everything a reconcile needs.
pub struct Context {
    /// The API client for everything but evictions.
    pub client: kube::Client,
    /// The client that sends evictions (no automatic 429 retry).
    pub evictions: kube::Client,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Publishes Events (one object per transition, shared with the MaintenanceWindow
    /// controller).
    pub events: EventPublisher,
    /// Settings, read when used: a config reload changes them live (a drain keeps the
    /// settings it started with).
    pub config: LiveConfig,
    /// Reconcile counts.
    pub stats: Arc<ReconcileStats>,
    /// Metrics and readiness.
    pub telemetry: Telemetry,
    drains: Arc<Drains>,
    /// The controller's cache of NodeMaintenances.
    nms: Store<NodeMaintenance>,
    /// Wakes the reconciler of a NodeMaintenance (pod watches, siblings, quorum waiters).
    wake: UnboundedSender<ObjectRef<NodeMaintenance>>,
    /// Held from the quorum check of a control-plane node not yet in maintenance until it is
    /// cordoned (or the check refused it), with the reads the check uses made under it. Two
    /// such NodeMaintenances deciding at once would otherwise each read the other's node
    /// before either cordons, and both pass. Only these reconciles take it; one process acts
    /// at a time (leader election), so an in-process lock is enough.
    quorum_guard: tokio::sync::Mutex<()>,
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
    /// Listing the pods of the node failed.
    #[error("listing the pods of node {node}: {source}")]
    ListPods {
        /// Node name.
        node: String,
        /// The API error.
        source: kube::Error,
    },
    /// Listing the control-plane nodes failed.
    #[error("listing the control-plane nodes: {source}")]
    ListNodes {
        /// The API error.
        source: kube::Error,
    },
    /// Listing the NodeMaintenances failed.
    #[error("listing NodeMaintenances: {source}")]
    ListNodeMaintenances {
        /// The API error.
        source: kube::Error,
    },
    /// Reading or writing the Node failed.
    #[error(transparent)]
    Node(#[from] node::NodeError),
    /// Reading or writing the lease failed (outside the counted renewal failures).
    #[error(transparent)]
    Lease(#[from] lease::LeaseError),
    /// Writing the KEP-5683 lifecycle conditions on the Node's status failed.
    #[error(transparent)]
    NodeConditions(#[from] crate::controller::node_conditions::NodeConditionsError),
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
            ReconcileError::ListPods { .. } => "ListPods",
            ReconcileError::ListNodes { .. } => "ListNodes",
            ReconcileError::ListNodeMaintenances { .. } => "ListNodeMaintenances",
            ReconcileError::Node(e) => e.category(),
            ReconcileError::Lease(e) => e.category(),
            ReconcileError::NodeConditions(e) => e.category(),
            ReconcileError::Finalizer(f) => match f.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.category(),
                F::AddFinalizer(_) | F::RemoveFinalizer(_) => "Finalizer",
                F::UnnamedObject | F::InvalidFinalizer => "Finalizer",
            },
        }
    }
}

pub(super) fn real(ctx: &Context, d: Duration) -> Duration {
    chrono::Duration::from_std(d)
        .map(|v| ctx.clock.real_duration(v))
        .unwrap_or(d)
        .max(Duration::from_millis(10))
}

pub(super) fn real_until(ctx: &Context, at: DateTime<Utc>) -> Duration {
    let wait = (at - ctx.clock.now()).max(chrono::Duration::zero());
    ctx.clock
        .real_duration(wait)
        .max(Duration::from_millis(100))
}

pub(super) fn nm_api(ctx: &Context) -> Api<NodeMaintenance> {
    Api::all(ctx.client.clone())
}

impl Context {
    /// The settings in force now.
    pub fn config(&self) -> NodeMaintenanceConfig {
        self.config.current().node_maintenance
    }

    pub(super) async fn publish(
        &self,
        reference: &ObjectReference,
        reason: &str,
        note: String,
        warning: bool,
    ) {
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        if let Err(err) = self.events.publish(reference, type_, reason, &note).await {
            tracing::warn!(%reason, error = %err, "could not publish event");
        }
    }
}

impl Context {
    /// Wake every NodeMaintenance waiting for the control-plane quorum.
    fn wake_quorum_waiters(&self) {
        for nm in self.nms.state() {
            if waits_for_quorum(&nm) {
                let _ = self.wake.unbounded_send(ObjectRef::from_obj(nm.as_ref()));
            }
        }
    }
}

/// Whether `nm` was refused for the control-plane quorum.
fn waits_for_quorum(nm: &NodeMaintenance) -> bool {
    nm.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .and_then(|c| conditions::find(c, ConditionType::Reconciling))
        .is_some_and(|c| c.reason == "QuorumWouldBeLost")
}

/// One reconcile, in a span naming the object, counted and timed in the metrics.
async fn reconcile(nm: Arc<NodeMaintenance>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let span = telemetry::reconcile_span(metrics::NODE_MAINTENANCE, &nm.name_any());
    let started = std::time::Instant::now();
    let result = reconcile_counted(nm, &ctx).instrument(span).await;
    ctx.telemetry.metrics.reconciled(
        metrics::NODE_MAINTENANCE,
        started.elapsed(),
        result.as_ref().err().map(ReconcileError::category),
    );
    result
}

async fn reconcile_counted(
    nm: Arc<NodeMaintenance>,
    ctx: &Arc<Context>,
) -> Result<Action, ReconcileError> {
    let name = nm.name_any();
    ctx.stats.started(&name);
    let result = reconcile_fresh(&name, &nm, ctx).await;
    ctx.stats.finished(&name);
    match result {
        Ok(Outcome::Gone) => {
            // Nothing of it may outlive it: its drain, pod watch and counters.
            ctx.drains.cancel(&nm.uid().unwrap_or_default());
            ctx.stats.prune(&name);
            Ok(Action::await_change())
        }
        Ok(Outcome::Done(action)) => {
            ctx.stats.succeeded(&name);
            Ok(action)
        }
        Err(e) => Err(e),
    }
}

enum Outcome {
    /// The object is gone (or replaced by a new one of the same name).
    Gone,
    Done(Action),
}

async fn apply(nm: Arc<NodeMaintenance>, ctx: &Arc<Context>) -> Result<Action, ReconcileError> {
    let mut observed = observe::observe(ctx, NodeMaintenance::clone(&nm)).await?;
    // The quorum is checked (control-plane nodes were read): check and cordon under the guard,
    // on reads made under it, so a node another reconcile just cordoned shows cordoned.
    let _guard = if observed.control_plane.is_empty() {
        None
    } else {
        let guard = ctx.quorum_guard.lock().await;
        observed = observe::observe(ctx, NodeMaintenance::clone(&nm)).await?;
        Some(guard)
    };
    let plan = decide::decide(&observed, ctx.clock.now(), &ctx.config());
    tracing::debug!(?plan, "decided");
    act::act(ctx, observed, plan).await
}

async fn reconcile_fresh(
    name: &str,
    nm: &NodeMaintenance,
    ctx: &Arc<Context>,
) -> Result<Outcome, ReconcileError> {
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
        return Ok(Outcome::Gone);
    };
    if fresh.uid() != nm.uid() {
        // A new object with the same name: its own events will bring it here. The old one's
        // tasks go.
        ctx.drains.cancel(&nm.uid().unwrap_or_default());
        return Ok(Outcome::Done(Action::await_change()));
    }
    // Once cleanup has let the finalizer go, the object is gone: kube-runtime does not
    // reconcile a deleted object again, so this is where its bookkeeping is pruned.
    let deleting = fresh.metadata.deletion_timestamp.is_some();
    finalizer(&api, FINALIZER, Arc::new(fresh), |event| async {
        match event {
            FinalizerEvent::Apply(nm) => apply(nm, ctx).await,
            FinalizerEvent::Cleanup(nm) => act::cleanup(nm, ctx).await,
        }
    })
    .await
    .map(|action| {
        if deleting {
            Outcome::Gone
        } else {
            Outcome::Done(action)
        }
    })
    .map_err(|e| ReconcileError::Finalizer(Box::new(e)))
}

/// Requeue after an error with per-object exponential backoff and jitter, capped.
fn error_policy(nm: Arc<NodeMaintenance>, err: &ReconcileError, ctx: Arc<Context>) -> Action {
    let name = nm.name_any();
    let attempt = ctx.stats.failed(&name);
    let config = ctx.config();
    let wait = decide::backoff(
        attempt,
        config.error_retry,
        config.error_retry_max,
        decide::seed_of(&name),
    );
    tracing::warn!(controller = metrics::NODE_MAINTENANCE, %name, category = err.category(), error = %err, attempt, ?wait, "reconcile failed");
    Action::requeue(real(&ctx, wait))
}

/// The parts of a NodeMaintenance controller that outlive its run: counters, drain tasks,
/// metrics and readiness.
#[derive(Clone)]
pub struct Shared {
    /// Reconcile counts.
    pub stats: Arc<ReconcileStats>,
    /// The running drains.
    pub drains: Arc<Drains>,
    /// Metrics and readiness.
    pub telemetry: Telemetry,
}

/// The NodeMaintenance phases of the cache, as `nmo_node_maintenances{phase}` and
/// `nmo_nodes_in_maintenance` show them.
fn maintenance_samples(
    store: &Store<NodeMaintenance>,
) -> (registry::Samples<1>, registry::Samples<0>) {
    let mut by_phase: HashMap<&'static str, f64> = HashMap::new();
    let mut nodes = std::collections::HashSet::new();
    for nm in store.state() {
        let phase = nm.status.as_ref().and_then(|s| s.phase);
        let label = match phase {
            None => "Pending",
            Some(MaintenancePhase::Running) => "Running",
            Some(MaintenancePhase::Succeeded) => "Succeeded",
            Some(MaintenancePhase::Failed) => "Failed",
        };
        *by_phase.entry(label).or_default() += 1.0;
        if phase != Some(MaintenancePhase::Failed) {
            nodes.insert(nm.spec.node_name.clone());
        }
    }
    let phases = metrics::PHASES
        .iter()
        .map(|p| ([p.to_string()], by_phase.get(p).copied().unwrap_or(0.0)))
        .collect();
    (phases, vec![([], nodes.len() as f64)])
}

/// Run the NodeMaintenance controller until `shutdown` resolves, then wait for the reconciles
/// in flight. Every drain task is stopped when it returns ([`Drains::stop_all`]).
///
/// Its cache is registered with `shared.telemetry.readiness` and its gauges with the metrics
/// when this is called, before the returned future first runs.
pub fn run(
    client: kube::Client,
    evictions: kube::Client,
    clock: Arc<dyn Clock>,
    config: LiveConfig,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send {
    let controller = Controller::new(
        Api::<NodeMaintenance>::all(client.clone()),
        watcher::Config::default(),
    );
    let store = controller.store();
    let telemetry = shared.telemetry.clone();
    telemetry.readiness.track("NodeMaintenance", store.clone());
    telemetry
        .metrics
        .controller_started(metrics::NODE_MAINTENANCE);
    let (phases, nodes) = (store.clone(), store.clone());
    telemetry
        .metrics
        .node_maintenances
        .set_source(move || maintenance_samples(&phases).0);
    telemetry
        .metrics
        .nodes_in_maintenance
        .set_source(move || maintenance_samples(&nodes).1);
    let (wake, woken) = futures::channel::mpsc::unbounded();
    let ctx = Arc::new(Context {
        events: EventPublisher::new(client.clone(), clock.clone())
            .with_instance(config.current().reporting_instance),
        client: client.clone(),
        evictions,
        clock,
        config,
        stats: shared.stats.clone(),
        telemetry: telemetry.clone(),
        drains: shared.drains.clone(),
        nms: store.clone(),
        wake,
        quorum_guard: tokio::sync::Mutex::new(()),
    });
    let (stray_nodes, strays) = futures::channel::mpsc::unbounded();
    let sweeper = stray::run(ctx.clone(), strays);
    let controller = controller
        // A node appearing (or changing) wakes the NodeMaintenances naming it; a change of a
        // control-plane node also wakes those waiting for the control-plane quorum. A node
        // with nmo's marks that no NodeMaintenance names is checked for stray marks.
        .watches(
            Api::<Node>::all(client),
            watcher::Config::default(),
            move |node: Node| {
                let name = node.name_any();
                let nms = store.state();
                if stray::looks_stray(&node, nms.iter().map(|nm| nm.as_ref())) {
                    let _ = stray_nodes.unbounded_send(name.clone());
                }
                let control_plane = quorum::is_control_plane(&node);
                nms.into_iter()
                    .filter(|nm| {
                        nm.spec.node_name == name || (control_plane && waits_for_quorum(nm))
                    })
                    .map(|nm| ObjectRef::from_obj(nm.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_on(woken)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "NodeMaintenance controller");
            }
        });
    async move {
        // The sweeper's queue is fed by the controller's node watch: it ends once the
        // controller has ended and dropped it.
        futures::future::join(controller, sweeper).await;
        shared.drains.stop_all().await;
        telemetry.metrics.node_maintenances.clear_source();
        telemetry.metrics.nodes_in_maintenance.clear_source();
    }
}
