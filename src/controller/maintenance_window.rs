//! The MaintenanceWindow reconciler: kube-runtime glue around the pure rolling planner.
//!
//! Each reconcile is `observe -> decide -> report -> act`:
//! - observe: the window (read fresh), the Nodes it selects, the control-plane Nodes and its
//!   in-flight Nodes (a reflector cache trimmed to what the planner needs, looked up through
//!   the per-window [`window_index`]) and every NodeMaintenance (a reflector cache), and `now`
//!   from the [`Clock`];
//! - decide: [`WindowPolicy::from_spec_with_node_timeout`] (the configured default node
//!   timeout for windows that set none) then [`rollout::plan`], both pure;
//! - report: the status, written only when it changed (no churn) and guarded by the
//!   resourceVersion it was computed from, then the Events of the plan;
//! - act: create and delete NodeMaintenances (`NotFound` is success, and `AlreadyExists` when
//!   the object is this window's for that node). One failure does not stop the others; the
//!   reconcile then fails and is retried with [`backoff`] (exponential, jittered, capped, per
//!   window).
//!
//! The status is written *before* acting: if the write loses a race the reconcile starts
//! over without having acted on stale state, and if acting fails after the write, the
//! persisted round says the node is in flight but not observed, so the planner repeats the
//! create.
//!
//! No lock is held across API calls: reconciles of different windows run concurrently, so a
//! slow or throttled call for one window never stalls another. The operator-wide cap
//! (`--max-concurrent-maintenances`) and "one NodeMaintenance per node" hold across windows
//! through [`Placeholders`]: a synchronous reservation taken just before each create,
//! dropped when the create fails, and kept until the cache shows the object (or it is
//! deleted, or it expires after the window's `nodeTimeout`).
//!
//! It requeues exactly at the next instant something time-based happens (the planner's
//! `requeue_at`: a window opening or closing, `release.after`, `minReadySeconds`,
//! `nodeTimeout`) and otherwise waits for a change of a window, a Node or a NodeMaintenance
//! that can change its plan or status ([`window_index`] decides which). It never polls.

use crate::api::conditions::{self, ConditionStatus, ConditionType};
use crate::api::maintenance_window::{MaintenanceWindowStatus, WindowSpan};
use crate::api::{
    MaintenancePhase, MaintenanceWindow, NodeMaintenance, NodeMaintenanceSpec, RUN_NOW_ANNOTATION,
    WINDOW_LABEL, from_time,
};
use crate::clock::Clock;
use crate::controller::LiveConfig;
use crate::controller::backoff::{backoff, jitter};
use crate::controller::events::{EventPublisher, EventType};
use crate::controller::node::FIELD_MANAGER;
use crate::controller::quorum::is_control_plane;
use crate::controller::window_index::{self, WindowIndex};
use crate::gate::{GateBackend, GateDecision, GateMemory};
use crate::rollout::{
    self, EventReason, MaintenanceView, NodeView, PlanInput, RolloutEvent, RolloutPlan,
    RolloutPolicy,
};
use crate::schedule::{WindowPolicy, selector_matches};
use crate::telemetry::{self, Telemetry, metrics, registry};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;
use tracing::Instrument;

/// First error requeue delay; it doubles per consecutive failure of a window.
const BACKOFF_BASE: StdDuration = StdDuration::from_secs(1);
/// Longest error requeue delay.
const BACKOFF_CAP: StdDuration = StdDuration::from_secs(120);
/// How soon to try again when a create lost a reservation race to another window.
const RESERVATION_RETRY: StdDuration = StdDuration::from_secs(1);

/// Label `app.kubernetes.io/managed-by` on generated NodeMaintenances.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Errors of the MaintenanceWindow reconciler, one variant per operation.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// Reading the window failed.
    #[error("reading MaintenanceWindow {name}: {source}")]
    GetWindow {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Creating a NodeMaintenance failed.
    #[error("creating NodeMaintenance {name}: {source}")]
    CreateMaintenance {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Deleting a NodeMaintenance failed.
    #[error("deleting NodeMaintenance {name}: {source}")]
    DeleteMaintenance {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Writing the status failed.
    #[error("writing the status of MaintenanceWindow {name}: {source}")]
    PatchStatus {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// The generated name is taken by a NodeMaintenance that is not this window's.
    #[error(
        "NodeMaintenance {name} already exists and is not this window's NodeMaintenance for node {node}"
    )]
    NameTaken { name: String, node: String },
}

impl WindowError {
    /// Bounded category, for metrics, logs and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            WindowError::GetWindow { .. } => "GetWindow",
            WindowError::CreateMaintenance { .. } => "CreateMaintenance",
            WindowError::DeleteMaintenance { .. } => "DeleteMaintenance",
            WindowError::PatchStatus { .. } => "PatchStatus",
            WindowError::NameTaken { .. } => "NameTaken",
        }
    }

    /// A failure in passing (a 5xx, a 429, a conflict, the connection): worth another try
    /// soon. A name taken by someone else's NodeMaintenance, or a refusal (403, 422), lasts.
    pub fn is_transient(&self) -> bool {
        match self {
            WindowError::GetWindow { source, .. }
            | WindowError::CreateMaintenance { source, .. }
            | WindowError::DeleteMaintenance { source, .. }
            | WindowError::PatchStatus { source, .. } => {
                super::transient_error(source)
                    || matches!(source, kube::Error::Api(s) if s.code == 409)
            }
            WindowError::NameTaken { .. } => false,
        }
    }
}

/// Settings of the MaintenanceWindow controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowConfig {
    /// Run the controller (default). Off, nmo only serves NodeMaintenances, as medik8s does.
    pub enabled: bool,
    /// `--max-concurrent-maintenances`: how many window-generated NodeMaintenances may exist
    /// at once, all windows together. `None`: no operator-wide cap.
    pub max_concurrent_maintenances: Option<u32>,
    /// The `nodeTimeout` of windows that set none (`defaultNodeTimeout` in the config file).
    pub default_node_timeout: chrono::Duration,
    /// Where windows' health gates send their queries (`prometheus.url` in the config file;
    /// [`GateBackend::Scripted`] for `nmo simulate` and tests).
    pub gate: GateBackend,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            enabled: true,
            max_concurrent_maintenances: None,
            default_node_timeout: crate::schedule::default_node_timeout(),
            gate: GateBackend::Unconfigured,
        }
    }
}

/// Counters of the MaintenanceWindow controller, for tests and metrics.
#[derive(Debug, Default)]
pub struct WindowStats {
    /// Reconciles run.
    pub reconciles: AtomicU64,
    /// Status writes.
    pub status_writes: AtomicU64,
    /// NodeMaintenances created.
    pub created: AtomicU64,
    /// NodeMaintenances deleted.
    pub deleted: AtomicU64,
    /// Events published.
    pub events: AtomicU64,
    /// Reconciles started, per window. An entry goes when its window is deleted.
    per_window: Mutex<HashMap<String, u64>>,
    /// Consecutive failed reconciles per window, for the backoff; reset on success, pruned
    /// when the window is deleted.
    failures: Mutex<HashMap<String, u32>>,
}

impl WindowStats {
    /// Reconciles of the window `name` started so far (0 once it is deleted and forgotten).
    pub fn reconciles_of(&self, name: &str) -> u64 {
        lock(&self.per_window).get(name).copied().unwrap_or(0)
    }

    /// How many windows have a count of consecutive failures (for tests: a deleted window's
    /// is forgotten).
    pub fn failing(&self) -> usize {
        lock(&self.failures).len()
    }

    /// How many windows have any per-window entry (for tests: pruned when they are gone).
    pub fn tracked(&self) -> usize {
        let mut names: BTreeSet<String> = lock(&self.per_window).keys().cloned().collect();
        names.extend(lock(&self.failures).keys().cloned());
        names.len()
    }

    fn started(&self, name: &str) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        *lock(&self.per_window).entry(name.to_string()).or_default() += 1;
    }

    /// Keep the per-window entries of the windows `live` says exist.
    fn retain_windows(&self, live: impl Fn(&str) -> bool) {
        lock(&self.per_window).retain(|n, _| live(n));
        lock(&self.failures).retain(|n, _| live(n));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A NodeMaintenance nmo is creating or has just created, until the cache has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placeholder {
    /// `spec.nodeName`.
    pub node: String,
    /// The window creating it.
    pub window: String,
    /// When it was reserved.
    pub created: DateTime<Utc>,
    /// When it is forgotten even if the cache never showed it: the window's `nodeTimeout`
    /// after `created`, when the planner gives up on the node anyway.
    pub expires: DateTime<Utc>,
}

/// Why a create was not attempted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Another NodeMaintenance (cached or being created) already holds the node.
    NodeTaken(String),
    /// `--max-concurrent-maintenances` is reached.
    Cap(u32),
}

/// NodeMaintenances reserved or created by this process that the cache may not show yet, by
/// object name. Only ever locked synchronously, never across an API call.
///
/// They make the next plan (of this window or another) count the object against the cap and
/// see its node as taken. Nothing here outlives reality: an entry goes when the cache shows
/// the object, when nmo deletes it (or a delete finds it gone), when its create fails, when
/// its window is deleted, and at the latest at [`Placeholder::expires`].
#[derive(Debug, Default)]
pub struct Placeholders {
    entries: Mutex<HashMap<String, Placeholder>>,
}

/// A NodeMaintenance in the cache, as [`Placeholders`] needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedMaintenance {
    /// Object name.
    pub name: String,
    /// `spec.nodeName`.
    pub node: String,
    /// Generated by some window (it has the window label).
    pub generated: bool,
}

impl Placeholders {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Placeholder>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drop the entries the cache now shows and those past their expiry; return the rest.
    pub fn current(
        &self,
        cached: &[CachedMaintenance],
        now: DateTime<Utc>,
    ) -> Vec<(String, Placeholder)> {
        let mut entries = self.lock();
        entries.retain(|name, p| p.expires > now && !cached.iter().any(|c| &c.name == name));
        let mut out: Vec<_> = entries
            .iter()
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Reserve `name` for `placeholder.node` before creating it, unless another
    /// NodeMaintenance holds the node or the operator-wide `cap` is reached. Checking and
    /// inserting happen under one lock, so two windows planning at once cannot both take the
    /// last slot or the same node. Reserving a name already reserved or cached succeeds (the
    /// create is then a repeat).
    pub fn reserve(
        &self,
        name: &str,
        placeholder: Placeholder,
        cached: &[CachedMaintenance],
        cap: Option<u32>,
    ) -> Result<(), Refusal> {
        let mut entries = self.lock();
        entries
            .retain(|n, p| p.expires > placeholder.created && !cached.iter().any(|c| &c.name == n));
        if entries.contains_key(name) || cached.iter().any(|c| c.name == name) {
            return Ok(());
        }
        if let Some(other) = cached
            .iter()
            .find(|c| c.node == placeholder.node)
            .map(|c| c.name.clone())
            .or_else(|| {
                entries
                    .iter()
                    .find(|(_, p)| p.node == placeholder.node)
                    .map(|(n, _)| n.clone())
            })
        {
            return Err(Refusal::NodeTaken(other));
        }
        if let Some(cap) = cap {
            let generated = cached.iter().filter(|c| c.generated).count() + entries.len();
            if generated >= cap as usize {
                return Err(Refusal::Cap(cap));
            }
        }
        entries.insert(name.to_string(), placeholder);
        Ok(())
    }

    /// Forget `name`: its create failed, it was deleted, or a delete found it gone.
    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Forget every entry of `window` (it was deleted).
    pub fn forget_window(&self, window: &str) {
        self.lock().retain(|_, p| p.window != window);
    }

    /// Keep only the entries of the windows `live` says exist.
    pub fn retain_windows(&self, live: impl Fn(&str) -> bool) {
        self.lock().retain(|_, p| live(&p.window));
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Shared state of the reconciler.
struct Context {
    client: Client,
    clock: Arc<dyn Clock>,
    /// Read per reconcile: a config reload changes the cap and the default node timeout live.
    config: LiveConfig,
    nodes: Store<Node>,
    maintenances: Store<NodeMaintenance>,
    stats: Arc<WindowStats>,
    telemetry: Telemetry,
    events: EventPublisher,
    placeholders: Placeholders,
    /// When a window whose reconcile failed after planning must be looked at again anyway
    /// (the plan's own wake-up: a window closing, a release due), so that an error backoff
    /// never postpones it.
    wakes: Mutex<HashMap<String, tokio::time::Instant>>,
    /// The last health-gate decision per window and when it was made: a blocking one is
    /// reused for [`crate::gate::RECHECK`] so Prometheus is asked at most that often.
    gate_checks: Mutex<HashMap<String, (DateTime<Utc>, GateDecision)>>,
    /// Per window, the resourceVersion of the newest copy this process has seen from the API
    /// server itself (its fresh GET, or the answer to its status write). A cached copy with
    /// that resourceVersion is that very object, so the reconcile plans from the cache without
    /// a GET; any other (the watch still behind our write, or someone else's change) is read
    /// fresh. Without this, every Node and NodeMaintenance change cost a GET of each window
    /// selecting the node, which spent most of the client's request budget in a large rollout.
    latest: Mutex<HashMap<String, String>>,
    /// The windows whose last plan had NodeMaintenances to create or delete: due now, so a
    /// failure in passing is retried soon (`retry_delay`).
    acting: Mutex<BTreeSet<String>>,
    /// Each window's selected nodes, kept up to date from Node events (see [`window_index`]).
    index: Arc<Mutex<WindowIndex>>,
}

impl Context {
    /// The configuration in force now.
    fn config(&self) -> WindowConfig {
        self.config.current().maintenance_window
    }

    /// The cached NodeMaintenances as [`Placeholders`] needs them.
    fn cached_maintenances(&self) -> Vec<CachedMaintenance> {
        self.maintenances
            .state()
            .iter()
            .map(|nm| CachedMaintenance {
                name: nm.name_any(),
                node: nm.spec.node_name.clone(),
                generated: nm.labels().contains_key(WINDOW_LABEL),
            })
            .collect()
    }

    fn wakes(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::time::Instant>> {
        self.wakes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        lock(&self.stats.failures)
    }
}

/// Keep in the Node cache only what the planner reads: labels, unschedulable, the Ready
/// condition and the bootID. Memory then does not grow with images, addresses and so on.
fn trim_node(node: &mut Node) {
    node.managed_fields_mut().clear();
    node.annotations_mut().clear();
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.volumes_attached = None;
        status.volumes_in_use = None;
        status.addresses = None;
        status.capacity = None;
        status.allocatable = None;
        status.daemon_endpoints = None;
        status.config = None;
        status.runtime_handlers = None;
        status.features = None;
        if let Some(conditions) = status.conditions.as_mut() {
            conditions.retain(|c| c.type_ == "Ready");
        }
    }
}

/// `nmo_windows_open{window}` from the cache: 1 for a window whose `WindowOpen` condition is
/// True. A deleted window leaves the cache, and its series goes with it.
fn windows_open_samples(windows: &Store<MaintenanceWindow>) -> registry::Samples<1> {
    windows
        .state()
        .iter()
        .map(|w| {
            let open = w
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_deref())
                .and_then(|c| conditions::find(c, ConditionType::WindowOpen))
                .is_some_and(|c| c.status == "True");
            ([w.name_any()], if open { 1.0 } else { 0.0 })
        })
        .collect()
}

/// Run the MaintenanceWindow controller until `shutdown` resolves. Whether it runs at all is
/// decided at start; every window is planned again when the configuration changes.
///
/// Its caches are registered with `telemetry.readiness` and its gauges with the metrics when
/// this is called, before the returned future first runs. Disabled, it registers nothing and
/// returns at once.
pub fn run(
    client: Client,
    clock: Arc<dyn Clock>,
    config: LiveConfig,
    stats: Arc<WindowStats>,
    telemetry: Telemetry,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> futures::future::BoxFuture<'static, ()> {
    if !config.current().maintenance_window.enabled {
        return Box::pin(async {});
    }
    let (node_store, node_writer) = reflector::store();
    let (nm_store, nm_writer) = reflector::store();
    let node_changes = reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(trim_node),
    );
    let index = Arc::new(Mutex::new(WindowIndex::default()));
    let nm_changes = reflector(
        nm_writer,
        watcher(
            Api::<NodeMaintenance>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );

    let config_changes = config.changes();
    let ctx = Arc::new(Context {
        client: client.clone(),
        events: EventPublisher::new(client.clone(), clock.clone())
            .with_instance(config.current().reporting_instance),
        clock,
        config,
        nodes: node_store,
        maintenances: nm_store,
        stats,
        telemetry: telemetry.clone(),
        placeholders: Placeholders::default(),
        wakes: Mutex::new(HashMap::new()),
        gate_checks: Mutex::new(HashMap::new()),
        latest: Mutex::new(HashMap::new()),
        acting: Mutex::new(BTreeSet::new()),
        index: index.clone(),
    });

    // kube-runtime never reconciles a window that is gone from its cache, so what is held in
    // memory for a deleted window is forgotten here: after a deletion, and after a relist
    // (which drops windows deleted while the watch was down without a Delete event).
    let (window_store, window_writer) = reflector::store();
    let sweep = (ctx.clone(), window_store.clone());
    let window_changes = reflector(
        window_writer,
        watcher(
            Api::<MaintenanceWindow>::all(client),
            watcher::Config::default(),
        ),
    )
    .inspect_ok(move |event| {
        if matches!(event, watcher::Event::Delete(_) | watcher::Event::InitDone) {
            forget_gone_windows(&sweep.0, &sweep.1);
        }
    })
    .applied_objects();
    let controller = Controller::for_stream(window_changes, window_store);
    let windows = controller.store();
    telemetry
        .readiness
        .track("MaintenanceWindow", windows.clone());
    telemetry.readiness.track("Node", ctx.nodes.clone());
    telemetry
        .readiness
        .track("NodeMaintenance (windows)", ctx.maintenances.clone());
    telemetry
        .metrics
        .controller_started(metrics::MAINTENANCE_WINDOW);
    let open = windows.clone();
    telemetry
        .metrics
        .windows_open
        .set_source(move || windows_open_samples(&open));
    let for_nodes = (windows.clone(), ctx.nodes.clone());
    let node_triggers = node_changes
        .filter_map(move |event| {
            let (windows, nodes) = &for_nodes;
            let triggered = event
                .ok()
                .map(|event| windows_for_node_event(&index, &windows.state(), nodes, &event));
            async move { triggered.map(futures::stream::iter) }
        })
        .flatten();
    let for_nms = windows.clone();
    let mut presence = MaintenancePresence::default();
    let nm_triggers = nm_changes
        .filter_map(move |event| {
            let triggered = event.ok().map(|event| {
                let windows = for_nms.state();
                let refs: Vec<ObjectRef<MaintenanceWindow>> = presence
                    .changes(event)
                    .into_iter()
                    .flat_map(|(nm, presence_changed)| {
                        window_index::windows_for_maintenance(&windows, &nm, presence_changed)
                    })
                    .collect();
                futures::stream::iter(refs)
            });
            async move { triggered }
        })
        .flatten();
    // A new cap or default node timeout may start or time out nodes in any window.
    let for_config = windows.clone();
    let config_triggers = config_changes
        .map(move |()| {
            futures::stream::iter(
                for_config
                    .state()
                    .iter()
                    .map(|w| ObjectRef::from_obj(w.as_ref()))
                    .collect::<Vec<_>>(),
            )
        })
        .flatten();

    let controller = controller
        .reconcile_on(futures::stream::select(
            futures::stream::select(node_triggers, nm_triggers),
            config_triggers,
        ))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "MaintenanceWindow reconcile ended in error");
            }
        });
    Box::pin(async move {
        controller.await;
        telemetry.metrics.windows_open.clear_source();
    })
}

/// The windows a Node watch event concerns (see [`window_index`]), the index updated. A relist
/// concerns every window once it is done; the nodes it lists one by one wake nothing (the
/// cache shows them only at its end).
fn windows_for_node_event(
    index: &Mutex<WindowIndex>,
    windows: &[Arc<MaintenanceWindow>],
    nodes: &Store<Node>,
    event: &watcher::Event<Node>,
) -> Vec<ObjectRef<MaintenanceWindow>> {
    let mut index = lock(index);
    match event {
        watcher::Event::Apply(node) => {
            index.node_changed(windows, nodes, &node.name_any(), Some(node.labels()))
        }
        watcher::Event::Delete(node) => index.node_changed(windows, nodes, &node.name_any(), None),
        watcher::Event::InitDone => index.relisted(windows),
        watcher::Event::Init | watcher::Event::InitApply(_) => Vec::new(),
    }
}

/// Which NodeMaintenance changes are changes of its *presence*: it appeared, started
/// terminating, or went. Only those concern windows other than its own (a skipped node, the
/// operator-wide cap); a change of its status alone concerns only the window tracking it.
/// Waking every window on every status write of every NodeMaintenance re-planned all of them
/// (each over every Node) some ten times per node maintained: with 100 windows and 5,000
/// nodes that was most of the operator's CPU in a rollout.
#[derive(Default)]
struct MaintenancePresence {
    /// Per NodeMaintenance uid (its name when it has none), whether it is terminating.
    seen: HashMap<String, bool>,
}

impl MaintenancePresence {
    /// The NodeMaintenances an event touches, each with whether its presence changed.
    fn changes(&mut self, event: watcher::Event<NodeMaintenance>) -> Vec<(NodeMaintenance, bool)> {
        let key = |nm: &NodeMaintenance| nm.uid().unwrap_or_else(|| nm.name_any());
        match event {
            // A relist: whatever changed while the watch was down, every window hears of it.
            watcher::Event::Init => {
                self.seen.clear();
                Vec::new()
            }
            watcher::Event::InitApply(nm) => {
                self.seen
                    .insert(key(&nm), nm.metadata.deletion_timestamp.is_some());
                vec![(nm, true)]
            }
            watcher::Event::InitDone => Vec::new(),
            watcher::Event::Apply(nm) => {
                let terminating = nm.metadata.deletion_timestamp.is_some();
                let before = self.seen.insert(key(&nm), terminating);
                vec![(nm, before != Some(terminating))]
            }
            watcher::Event::Delete(nm) => {
                self.seen.remove(&key(&nm));
                vec![(nm, true)]
            }
        }
    }
}

/// Requeue a failed window after [`backoff`] for its consecutive failures.
fn error_policy(window: Arc<MaintenanceWindow>, err: &WindowError, ctx: Arc<Context>) -> Action {
    let name = window.name_any();
    let now = tokio::time::Instant::now();
    let due = ctx.wakes().get(&name).copied();
    let transient = err.is_transient();
    let acting = lock(&ctx.acting).contains(&name);
    let (attempts, delay) = {
        let mut failures = ctx.failures();
        let n = failures.entry(name.clone()).or_insert(0);
        let (attempts, delay) = retry_delay(
            *n,
            due.map(|d| d.saturating_duration_since(now)),
            acting,
            transient,
            jitter(),
        );
        *n = attempts;
        (attempts, delay)
    };
    if !transient && due.is_some_and(|d| d <= now) {
        ctx.wakes().remove(&name);
    }
    tracing::warn!(window = %name, category = err.category(), attempts, ?delay, %err, "MaintenanceWindow reconcile failed; retrying");
    Action::requeue(delay)
}

/// How many times in a row a transient failure of a window whose plan is due is retried after
/// the first backoff step before the backoff grows again.
const QUICK_RETRIES: u32 = 10;

/// The error retry of a window that had failed `failures` times in a row, given how long until
/// its last plan is due to act next (`due`: its opening, its close, a node timeout; zero once
/// that instant has passed), whether that plan had NodeMaintenances to create or delete now
/// (`acting`), and whether the failure is `transient` (see [`WindowError::is_transient`]): the
/// new failure count and the delay.
///
/// The backoff never runs past the due instant, and a lasting failure starts it over from its
/// first step once that instant has passed. A transient failure of a plan that is due (acting,
/// or past its instant) is retried after the first step ([`BACKOFF_BASE`], jittered) up to
/// [`QUICK_RETRIES`] times in a row before the backoff grows again. Otherwise failures before a
/// close (one write in ten failing is enough) would put an `onWindowEnd: Abort` off by as long
/// as the backoff had grown, up to [`BACKOFF_CAP`]; and a replica that just took the lead,
/// whose first writes failed, would wait seconds to delete what a window that closed meanwhile
/// left in flight. Found by the chaos harness, where a second of backoff is a minute of
/// virtual time.
fn retry_delay(
    failures: u32,
    due: Option<StdDuration>,
    acting: bool,
    transient: bool,
    jitter: f64,
) -> (u32, StdDuration) {
    let passed = due.is_some_and(|d| d.is_zero());
    let attempts = if passed && !transient {
        1
    } else {
        failures.saturating_add(1)
    };
    let step = if (passed || acting) && transient {
        attempts.saturating_sub(QUICK_RETRIES - 1).max(1)
    } else {
        attempts
    };
    let delay = backoff(step, BACKOFF_BASE, BACKOFF_CAP, jitter);
    match due {
        Some(due) if !passed => (attempts, delay.min(due)),
        _ => (attempts, delay),
    }
}

/// One reconcile of one MaintenanceWindow, in a span naming it, counted and timed in the
/// metrics; a success resets its failure count.
async fn reconcile(
    cached: Arc<MaintenanceWindow>,
    ctx: Arc<Context>,
) -> Result<Action, WindowError> {
    let name = cached.name_any();
    let span = telemetry::reconcile_span(metrics::MAINTENANCE_WINDOW, &name);
    let started = std::time::Instant::now();
    let result = reconcile_window(cached, ctx.clone()).instrument(span).await;
    ctx.telemetry.metrics.reconciled(
        metrics::MAINTENANCE_WINDOW,
        started.elapsed(),
        result.as_ref().err().map(WindowError::category),
    );
    if result.is_ok() {
        ctx.failures().remove(&name);
    }
    result
}

/// Forget everything held in memory for a window that is gone.
fn forget_window(ctx: &Context, name: &str) {
    ctx.stats.retain_windows(|n| n != name);
    ctx.wakes().remove(name);
    lock(&ctx.gate_checks).remove(name);
    lock(&ctx.latest).remove(name);
    lock(&ctx.acting).remove(name);
    ctx.placeholders.forget_window(name);
}

/// Forget everything held in memory for the windows no longer in `windows` (the cache).
fn forget_gone_windows(ctx: &Context, windows: &Store<MaintenanceWindow>) {
    let live: BTreeSet<String> = windows.state().iter().map(|w| w.name_any()).collect();
    ctx.stats.retain_windows(|n| live.contains(n));
    ctx.wakes().retain(|n, _| live.contains(n));
    lock(&ctx.gate_checks).retain(|n, _| live.contains(n));
    lock(&ctx.latest).retain(|n, _| live.contains(n));
    lock(&ctx.acting).retain(|n| live.contains(n));
    ctx.placeholders.retain_windows(|n| live.contains(n));
    let keys: BTreeSet<String> = windows
        .state()
        .iter()
        .map(|w| WindowIndex::key(w))
        .collect();
    lock(&ctx.index).retain_windows(|k| keys.contains(k));
}

async fn reconcile_window(
    cached: Arc<MaintenanceWindow>,
    ctx: Arc<Context>,
) -> Result<Action, WindowError> {
    let name = cached.name_any();
    ctx.stats.started(&name);
    // Plans need complete caches: a partial node list would look like deleted nodes.
    let caches_ready = async {
        let _ = ctx.nodes.wait_until_ready().await;
        let _ = ctx.maintenances.wait_until_ready().await;
    };
    if tokio::time::timeout(StdDuration::from_secs(10), caches_ready)
        .await
        .is_err()
    {
        return Ok(Action::requeue(StdDuration::from_secs(1)));
    }
    let api: Api<MaintenanceWindow> = Api::all(ctx.client.clone());
    // Read fresh: the status holds the round, and planning from a stale copy would redo work.
    // The cached copy is used when it is the newest this process has seen from the server
    // (see `Context::latest`).
    let known = lock(&ctx.latest).get(&name).cloned();
    let current = known.is_some() && known == cached.resource_version();
    let window = match if current {
        Ok(Some((*cached).clone()))
    } else {
        api.get_opt(&name).await
    } {
        Ok(Some(window)) => {
            if let Some(rv) = window.resource_version() {
                lock(&ctx.latest).insert(name.clone(), rv);
            }
            window
        }
        Ok(None) => {
            forget_window(&ctx, &name);
            return Ok(Action::await_change());
        }
        Err(source) => return Err(WindowError::GetWindow { name, source }),
    };
    if window.meta().deletion_timestamp.is_some() {
        // Garbage collection removes its NodeMaintenances; nothing to plan.
        forget_window(&ctx, &name);
        return Ok(Action::await_change());
    }
    let now = ctx.clock.now();
    let old_status = window.status.clone().unwrap_or_default();

    let config = ctx.config();
    let policy = match WindowPolicy::from_spec_with_node_timeout(
        &window.spec,
        config.default_node_timeout,
    ) {
        Ok(policy) => policy,
        Err(errors) => {
            let message = errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            let status = invalid_spec_status(&window, &old_status, &message, now);
            if write_status(&ctx, &window, &old_status, status).await? {
                publish(&ctx, &window, "InvalidSpec", &message, true).await;
            }
            return Ok(Action::await_change());
        }
    };

    let mut input = observe(&ctx, &config, &window, &policy, &old_status, now);
    let mut plan = rollout::plan(&input);
    let gate = match &policy.health_gate {
        Some(health_gate) => {
            let decision = check_health_gate(
                &ctx,
                &config,
                &name,
                health_gate,
                &old_status,
                &input,
                &plan,
                now,
            )
            .await;
            if let Some(decision) = &decision
                && decision.gate != rollout::Gate::Open
            {
                input.gate = decision.gate.clone();
                plan = rollout::plan(&input);
                if !plan.summary.held_by_gate.is_empty() {
                    ctx.telemetry.metrics.health_gate_blocked(decision.reason);
                }
            }
            decision
        }
        None => None,
    };
    // The error backoff must not postpone what the plan is due to do next (`error_policy`),
    // whichever later request fails: recorded before the first write, with whether the plan
    // has creates or deletes to make now.
    let wake = plan
        .requeue_at
        // A few milliseconds late rather than early, so the plan at wake-up sees the instant.
        .map(|at| ctx.clock.real_duration(at - now) + StdDuration::from_millis(2));
    if !plan.create.is_empty() || !plan.delete.is_empty() {
        lock(&ctx.acting).insert(name.clone());
    } else {
        lock(&ctx.acting).remove(&name);
    }
    match wake {
        Some(wake) => {
            ctx.wakes()
                .insert(name.clone(), tokio::time::Instant::now() + wake);
        }
        None => {
            ctx.wakes().remove(&name);
        }
    }
    let mut status = status_from_plan(&window, &policy, &old_status, &plan, now);
    apply_gate_status(
        &mut status,
        &policy,
        gate.as_ref(),
        window.meta().generation,
        now,
    );
    write_status(&ctx, &window, &old_status, status).await?;
    for event in &plan.events {
        publish_event(&ctx, &window, event).await;
    }
    let acted = act(&ctx, &config, &window, &policy, &plan).await?;
    let retry = acted.refused.then_some(RESERVATION_RETRY);
    // A blocking gate is asked again while nodes wait.
    let recheck = gate
        .as_ref()
        .and_then(|g| g.recheck_at)
        .filter(|_| plan.summary.window_open && plan.summary.counts.pending > 0)
        .map(|at| ctx.clock.real_duration(at - now) + StdDuration::from_millis(2));
    Ok(match wake.into_iter().chain(retry).chain(recheck).min() {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// The planner's input, from the caches.
fn observe(
    ctx: &Context,
    config: &WindowConfig,
    window: &MaintenanceWindow,
    policy: &WindowPolicy,
    status: &MaintenanceWindowStatus,
    now: DateTime<Utc>,
) -> PlanInput {
    let name = window.name_any();
    let uid = window.uid().unwrap_or_default();
    let state = rollout::state_from_status(status);

    let mut maintenances: Vec<MaintenanceView> = Vec::new();
    let mut generated = 0u32;
    for nm in ctx.maintenances.state() {
        // A NodeMaintenance being deleted still holds its node until its cleanup is done,
        // so it still counts against the cap.
        if nm.labels().contains_key(WINDOW_LABEL) {
            generated += 1;
        }
        maintenances.push(maintenance_view(&nm, &name, &uid));
    }
    for (nm_name, placeholder) in ctx.placeholders.current(&ctx.cached_maintenances(), now) {
        generated += 1;
        maintenances.push(MaintenanceView {
            name: nm_name,
            node: placeholder.node,
            owned: placeholder.window == name,
            phase: None,
            created: placeholder.created,
            drain_succeeded: None,
            deleting: false,
            seen: false,
        });
    }

    let owned_nodes: BTreeSet<&str> = maintenances
        .iter()
        .filter(|m| m.owned)
        .map(|m| m.node.as_str())
        .collect();
    // Only the window's own nodes, the control-plane nodes and its in-flight nodes, looked up
    // by name: a plan costs what the window selects, not what the cluster holds.
    let names = lock(&ctx.index).plan_nodes(window, &ctx.nodes, state.round.in_flight.keys());
    let nodes: Vec<NodeView> = names
        .into_iter()
        .filter_map(|name| ctx.nodes.get(&ObjectRef::new(&name)))
        .filter_map(|node| {
            let node_name = node.name_any();
            let selected = selector_matches(&window.spec.node_selector, node.labels());
            let control_plane = is_control_plane(&node);
            if !selected && !control_plane && !state.round.in_flight.contains_key(&node_name) {
                return None;
            }
            let schedulable = !node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            Some(NodeView {
                selected,
                ready: node_ready(&node),
                schedulable,
                cordoned_by_others: !schedulable && !owned_nodes.contains(node_name.as_str()),
                boot_id: node
                    .status
                    .as_ref()
                    .and_then(|s| s.node_info.as_ref())
                    .map(|i| i.boot_id.clone()),
                control_plane,
                domain: policy
                    .topology_key
                    .as_ref()
                    .and_then(|key| node.labels().get(key).cloned()),
                name: node_name,
            })
        })
        .collect();

    PlanInput {
        window: name,
        policy: rollout_policy(policy, window),
        schedule_window: policy.current_window(now),
        next_window: policy.next_window(now),
        run_now: window.annotations().get(RUN_NOW_ANNOTATION).cloned(),
        nodes,
        maintenances,
        state,
        cap_headroom: config
            .max_concurrent_maintenances
            .map(|cap| cap.saturating_sub(generated)),
        freeze: policy.exclusion_at(now).map(|e| rollout::Freeze {
            description: e.describe(),
            end: e.end,
        }),
        next_freeze: crate::schedule::exclusion::next_exclusion_start(&policy.exclusions, now),
        gate: rollout::Gate::Open,
        now,
    }
}

/// The spec as the planner wants it.
fn rollout_policy(policy: &WindowPolicy, window: &MaintenanceWindow) -> RolloutPolicy {
    RolloutPolicy {
        budget: policy.max_unavailable,
        window_duration: policy.duration,
        release_after: policy.release.after,
        release_on_reboot: policy.release.on_reboot,
        node_timeout: policy.node_timeout,
        min_ready: policy.min_ready,
        max_failures: policy.max_failures,
        on_window_end: policy.on_window_end,
        suspend: policy.suspend,
        dry_run: policy.dry_run,
        reason: window.spec.reason.clone(),
        topology_key: policy.topology_key.clone(),
    }
}

/// Ask the health gate when the plan wants to start a node, or while it blocks and nodes
/// wait; `None` when it was not asked (the status keeps what it had). A blocking decision is
/// reused for [`crate::gate::RECHECK`]; a passing one is never reused, so every new start
/// is preceded by a fresh query.
#[allow(clippy::too_many_arguments)]
async fn check_health_gate(
    ctx: &Context,
    config: &WindowConfig,
    name: &str,
    health_gate: &crate::schedule::HealthGatePolicy,
    old_status: &MaintenanceWindowStatus,
    input: &PlanInput,
    plan: &RolloutPlan,
    now: DateTime<Utc>,
) -> Option<GateDecision> {
    let memory = GateMemory::from_status(old_status.health_gate.as_ref());
    let starts = plan
        .state
        .round
        .in_flight
        .keys()
        .any(|n| !input.state.round.in_flight.contains_key(n));
    let waiting = plan.summary.window_open && plan.summary.counts.pending > 0;
    if !(starts || memory.blocking && waiting) {
        return None;
    }
    if let Some((at, decision)) = lock(&ctx.gate_checks).get(name)
        && decision.gate != rollout::Gate::Open
        && now < *at + crate::gate::RECHECK
        && now >= *at
    {
        return Some(decision.clone());
    }
    let answer = config.gate.query(&health_gate.query, now).await;
    if let Err(err) = &answer {
        tracing::warn!(window = %name, category = err.category(), %err, "health gate query failed; no new node starts");
    }
    let decision = crate::gate::evaluate(memory, &answer, health_gate.clear_for, now);
    lock(&ctx.gate_checks).insert(name.to_string(), (now, decision.clone()));
    Some(decision)
}

/// The `HealthGate` condition and `status.healthGate` from the gate's last decision; both go
/// when the spec has no gate.
fn apply_gate_status(
    status: &mut MaintenanceWindowStatus,
    policy: &WindowPolicy,
    decision: Option<&GateDecision>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let conds = status.conditions.take().unwrap_or_default();
    status.conditions = Some(match (&policy.health_gate, decision) {
        (None, _) => {
            status.health_gate = None;
            conditions::remove(&conds, ConditionType::HealthGate)
        }
        (Some(_), Some(d)) => {
            status.health_gate = Some(d.memory.to_status());
            conditions::set(
                &conds,
                ConditionType::HealthGate,
                d.passing.into(),
                d.reason,
                &d.message,
                generation,
                now,
            )
        }
        (Some(_), None) if conditions::find(&conds, ConditionType::HealthGate).is_none() => {
            conditions::set(
                &conds,
                ConditionType::HealthGate,
                ConditionStatus::Unknown,
                "NotQueried",
                "the health gate is queried before the next node starts",
                generation,
                now,
            )
        }
        (Some(_), None) => conds,
    });
}

/// A NodeMaintenance as the planner sees it.
fn maintenance_view(nm: &NodeMaintenance, window: &str, uid: &str) -> MaintenanceView {
    let owned = match nm.meta().owner_references.as_ref() {
        Some(owners) if owners.iter().any(|o| o.controller == Some(true)) => owners
            .iter()
            .any(|o| o.controller == Some(true) && o.uid == uid),
        // No controller owner: ours only if our label says so (e.g. an owner reference lost).
        _ => nm.labels().get(WINDOW_LABEL).map(String::as_str) == Some(window),
    };
    let status = nm.status.as_ref();
    let phase = status.and_then(|s| s.phase);
    let drain_succeeded = status.and_then(|s| {
        let ready = s
            .conditions
            .as_deref()
            .and_then(|c| conditions::find(c, ConditionType::Ready))
            .filter(|c| c.status == "True")
            .map(|c| from_time(&c.last_transition_time));
        // medik8s-written objects have no conditions: fall back to lastUpdate.
        ready.or_else(|| {
            (s.phase == Some(MaintenancePhase::Succeeded))
                .then(|| s.last_update.as_ref().map(from_time))
                .flatten()
        })
    });
    MaintenanceView {
        name: nm.name_any(),
        node: nm.spec.node_name.clone(),
        owned,
        phase,
        created: nm
            .meta()
            .creation_timestamp
            .as_ref()
            .map(from_time)
            .unwrap_or_default(),
        drain_succeeded,
        deleting: nm.meta().deletion_timestamp.is_some(),
        seen: true,
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What [`act`] could not do and wants retried soon.
#[derive(Debug, Default)]
struct Acted {
    /// A create was not attempted: another window holds the node or the cap's last slot.
    refused: bool,
}

/// Whether `nm` is `window`'s NodeMaintenance for `node`: its controller ownerReference
/// names the window's uid and `spec.nodeName` matches.
fn is_ours(nm: &NodeMaintenance, window: &MaintenanceWindow, node: &str) -> bool {
    let uid = window.uid().unwrap_or_default();
    nm.spec.node_name == node
        && nm
            .meta()
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// Create and delete NodeMaintenances as planned. Both are idempotent, and every planned
/// write is attempted: a failure is logged and the first one returned after the rest ran,
/// so one bad create cannot hold back the others.
async fn act(
    ctx: &Context,
    config: &WindowConfig,
    window: &MaintenanceWindow,
    policy: &WindowPolicy,
    plan: &RolloutPlan,
) -> Result<Acted, WindowError> {
    let api: Api<NodeMaintenance> = Api::all(ctx.client.clone());
    let window_name = window.name_any();
    let mut errors: Vec<WindowError> = Vec::new();
    let mut acted = Acted::default();
    for doomed in &plan.delete {
        match api.delete(&doomed.name, &DeleteParams::default()).await {
            Ok(_) => {
                ctx.placeholders.forget(&doomed.name);
                ctx.stats.deleted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(window = %window_name, nm = %doomed.name, reason = doomed.reason.as_str(), "deleted NodeMaintenance");
            }
            Err(kube::Error::Api(e)) if e.code == 404 => ctx.placeholders.forget(&doomed.name),
            Err(source) => errors.push(WindowError::DeleteMaintenance {
                name: doomed.name.clone(),
                source,
            }),
        }
    }
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    for wanted in &plan.create {
        let now = ctx.clock.now();
        let placeholder = Placeholder {
            node: wanted.node.clone(),
            window: window_name.clone(),
            created: now,
            expires: now + policy.node_timeout,
        };
        if let Err(refusal) = ctx.placeholders.reserve(
            &wanted.name,
            placeholder,
            &ctx.cached_maintenances(),
            config.max_concurrent_maintenances,
        ) {
            tracing::debug!(window = %window_name, nm = %wanted.name, ?refusal, "not creating NodeMaintenance now");
            acted.refused = true;
            continue;
        }
        let nm = generated_maintenance(window, &wanted.name, &wanted.node, wanted.reason.clone());
        let closes = plan.current_window.as_ref().map(|w| w.end);
        let Some(created) = before_close(&*ctx.clock, closes, api.create(&params, &nm)).await
        else {
            ctx.placeholders.forget(&wanted.name);
            tracing::warn!(window = %window_name, nm = %wanted.name, node = %wanted.node, "the window closed before the NodeMaintenance was created; not creating it");
            continue;
        };
        match created {
            Ok(_) => {
                ctx.stats.created.fetch_add(1, Ordering::Relaxed);
                tracing::info!(window = %window_name, nm = %wanted.name, node = %wanted.node, "created NodeMaintenance");
            }
            Err(kube::Error::Api(e)) if e.code == 409 => match api.get_opt(&wanted.name).await {
                // A repeat of our own create: success.
                Ok(Some(existing)) if is_ours(&existing, window, &wanted.node) => {}
                Ok(Some(_)) => {
                    // Someone else's object has the name. The planner sees it in the cache
                    // and reports the node as skipped (NameTaken) with a NodeBlocked Event.
                    ctx.placeholders.forget(&wanted.name);
                    errors.push(WindowError::NameTaken {
                        name: wanted.name.clone(),
                        node: wanted.node.clone(),
                    });
                }
                Ok(None) => {
                    ctx.placeholders.forget(&wanted.name);
                    errors.push(WindowError::CreateMaintenance {
                        name: wanted.name.clone(),
                        source: kube::Error::Api(e),
                    });
                }
                Err(source) => {
                    ctx.placeholders.forget(&wanted.name);
                    errors.push(WindowError::CreateMaintenance {
                        name: wanted.name.clone(),
                        source,
                    });
                }
            },
            Err(source) => {
                ctx.placeholders.forget(&wanted.name);
                errors.push(WindowError::CreateMaintenance {
                    name: wanted.name.clone(),
                    source,
                });
            }
        }
    }
    let mut errors = errors.into_iter();
    match errors.next() {
        None => Ok(acted),
        Some(first) => {
            for err in errors {
                tracing::warn!(window = %window_name, category = err.category(), %err, "MaintenanceWindow write failed");
            }
            Err(first)
        }
    }
}

/// `request`'s outcome if it completes before the window closes at `closes` (virtual time),
/// `None` if the window closed first (the request is then dropped, and with it a retry the
/// API client had scheduled, such as after a 429). A create decided inside a window but still
/// retrying after its close would start a node outside the window. The deadline follows the
/// clock, so a virtual clock that slows down does not cut a request short.
async fn before_close<F: std::future::Future>(
    clock: &dyn Clock,
    closes: Option<DateTime<Utc>>,
    request: F,
) -> Option<F::Output> {
    let Some(closes) = closes else {
        return Some(request.await);
    };
    let mut request = std::pin::pin!(request);
    loop {
        let left = closes - clock.now();
        if left <= chrono::Duration::zero() {
            return None;
        }
        let wait = clock.real_duration(left) + StdDuration::from_millis(1);
        if let Ok(out) = tokio::time::timeout(wait, &mut request).await {
            return Some(out);
        }
    }
}

/// A NodeMaintenance generated by `window`: its labels and a controller ownerReference, and
/// nothing copied from the window's metadata (so no Argo CD or Flux tracking labels or
/// annotations: those tools would otherwise prune or adopt it). No ownerReference to the
/// Node: Kubernetes collects an object only once all its owners are gone.
pub fn generated_maintenance(
    window: &MaintenanceWindow,
    name: &str,
    node: &str,
    reason: Option<String>,
) -> NodeMaintenance {
    NodeMaintenance {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([
                (WINDOW_LABEL.to_string(), window.name_any()),
                (MANAGED_BY_LABEL.to_string(), "nmo".to_string()),
            ])),
            owner_references: window.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: NodeMaintenanceSpec {
            node_name: node.to_string(),
            reason: Some(
                reason.unwrap_or_else(|| format!("MaintenanceWindow {}", window.name_any())),
            ),
        },
        status: None,
    }
}

/// Status of a window whose spec cannot be parsed: Ready=False, Stalled=True with the
/// parser's message. The round and window fields are kept as they were.
fn invalid_spec_status(
    window: &MaintenanceWindow,
    old: &MaintenanceWindowStatus,
    message: &str,
    now: DateTime<Utc>,
) -> MaintenanceWindowStatus {
    let generation = window.meta().generation;
    let mut conds = old.conditions.clone().unwrap_or_default();
    conds = conditions::set(
        &conds,
        ConditionType::Ready,
        ConditionStatus::False,
        "InvalidSpec",
        message,
        generation,
        now,
    );
    conds = conditions::set(
        &conds,
        ConditionType::Stalled,
        ConditionStatus::True,
        "InvalidSpec",
        message,
        generation,
        now,
    );
    conds = conditions::remove(&conds, ConditionType::Reconciling);
    MaintenanceWindowStatus {
        observed_generation: generation,
        conditions: Some(conds),
        next_window: None,
        next_window_local: None,
        ..old.clone()
    }
}

/// The status after a plan.
fn status_from_plan(
    window: &MaintenanceWindow,
    policy: &WindowPolicy,
    old: &MaintenanceWindowStatus,
    plan: &RolloutPlan,
    now: DateTime<Utc>,
) -> MaintenanceWindowStatus {
    let generation = window.meta().generation;
    let summary = &plan.summary;
    let next = policy.next_window(now);
    let next_local = next.map(|w| policy.local_string(w.start));

    let mut conds = old.conditions.clone().unwrap_or_default();
    let ready_message = match (&plan.current_window, &next_local) {
        (Some(open), _) => format!("window open until {}", policy.local_string(open.end)),
        (None, Some(next)) => format!("next window opens {next}"),
        (None, None) => "the schedule has no further openings".to_string(),
    };
    conds = conditions::set(
        &conds,
        ConditionType::Ready,
        ConditionStatus::True,
        "ScheduleFollowed",
        &ready_message,
        generation,
        now,
    );
    let (open_reason, open_message) = match (&summary.frozen, summary.window_open) {
        (Some(frozen), _) => ("Excluded", frozen.clone()),
        (None, true) => ("WindowOpen", ready_message.clone()),
        (None, false) => ("WindowClosed", ready_message.clone()),
    };
    conds = conditions::set(
        &conds,
        ConditionType::WindowOpen,
        summary.window_open.into(),
        open_reason,
        &open_message,
        generation,
        now,
    );
    conds = match &summary.reconciling {
        Some(message) => conditions::set(
            &conds,
            ConditionType::Reconciling,
            ConditionStatus::True,
            "MaintainingNodes",
            message,
            generation,
            now,
        ),
        None => conditions::remove(&conds, ConditionType::Reconciling),
    };
    conds = match &summary.stalled {
        Some(stall) => conditions::set(
            &conds,
            ConditionType::Stalled,
            ConditionStatus::True,
            stall.reason,
            &stall.message,
            generation,
            now,
        ),
        None => conditions::remove(&conds, ConditionType::Stalled),
    };

    let round = &plan.state.round;
    let counts = summary.counts;
    MaintenanceWindowStatus {
        observed_generation: generation,
        conditions: Some(conds),
        window: Some(
            if summary.window_open {
                "open"
            } else {
                "closed"
            }
            .to_string(),
        ),
        next_window: next.map(|w| WindowSpan {
            run_now: None,
            ..w.to_span()
        }),
        next_window_local: next_local,
        current_window: plan.state.window.as_ref().map(rollout::open_window_span),
        round: (round.number > 0).then(|| rollout::round_status(round, counts)),
        progress: Some(format!("{}/{}", counts.completed, counts.total)),
        last_handled_run_now: plan.state.last_handled_run_now.clone(),
        planned_nodes: policy.dry_run.then(|| plan.planned_order.clone()),
        active_exclusion: policy.exclusion_at(now).map(|e| e.describe()),
        health_gate: old.health_gate.clone(),
    }
}

/// Write the status if it changed, guarded by the resourceVersion it was computed from.
/// Returns whether it wrote. A lost race is an error: the reconcile starts over.
async fn write_status(
    ctx: &Context,
    window: &MaintenanceWindow,
    old: &MaintenanceWindowStatus,
    new: MaintenanceWindowStatus,
) -> Result<bool, WindowError> {
    if window.status.is_some() && *old == new {
        return Ok(false);
    }
    let name = window.name_any();
    let api: Api<MaintenanceWindow> = Api::all(ctx.client.clone());
    // A JSON patch replacing the whole status (a merge patch could not remove fields), after
    // a test of the resourceVersion the status was computed from.
    let ops = serde_json::json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": window.resource_version()},
        {"op": "add", "path": "/status", "value": new},
    ]);
    let patch: json_patch::Patch =
        serde_json::from_value(ops).map_err(|e| WindowError::PatchStatus {
            name: name.clone(),
            source: kube::Error::SerdeError(e),
        })?;
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    let written = api
        .patch_status(&name, &params, &Patch::<()>::Json(patch))
        .await
        .map_err(|source| WindowError::PatchStatus {
            name: name.clone(),
            source,
        })?;
    if let Some(rv) = written.resource_version() {
        lock(&ctx.latest).insert(name, rv);
    }
    ctx.stats.status_writes.fetch_add(1, Ordering::Relaxed);
    Ok(true)
}

async fn publish_event(ctx: &Context, window: &MaintenanceWindow, event: &RolloutEvent) {
    match event.reason {
        EventReason::NodeFailed => ctx.telemetry.metrics.failed("NodeTimeout"),
        EventReason::RolloutStalled => ctx.telemetry.metrics.failed("RolloutStalled"),
        _ => {}
    }
    publish(
        ctx,
        window,
        event.reason.as_str(),
        &event.message,
        event.warning,
    )
    .await;
}

/// Publish an Event on the window through the shared [`EventPublisher`] (one Event object
/// per transition). Events are best effort: a failure is logged.
async fn publish(
    ctx: &Context,
    window: &MaintenanceWindow,
    reason: &str,
    message: &str,
    warning: bool,
) {
    ctx.stats.events.fetch_add(1, Ordering::Relaxed);
    let type_ = if warning {
        EventType::Warning
    } else {
        EventType::Normal
    };
    if let Err(err) = ctx
        .events
        .publish(&window.object_ref(&()), type_, reason, message)
        .await
    {
        tracing::warn!(window = %window.name_any(), %err, reason, "could not publish Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn t(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 2, 0, 0).unwrap() + Duration::minutes(minutes)
    }

    fn placeholder(window: &str, node: &str, at: i64) -> Placeholder {
        Placeholder {
            node: node.to_string(),
            window: window.to_string(),
            created: t(at),
            expires: t(at + 120),
        }
    }

    fn cached(name: &str, node: &str) -> CachedMaintenance {
        CachedMaintenance {
            name: name.to_string(),
            node: node.to_string(),
            generated: true,
        }
    }

    #[test]
    fn the_error_backoff_stops_at_the_due_instant_and_starts_over_after_it() {
        let s = StdDuration::from_secs;
        for transient in [false, true] {
            // Failures pile up: 1, 2, 4, 8 s (no jitter: the lower half of each delay).
            let mut failures = 0;
            let mut delays = Vec::new();
            for _ in 0..4 {
                let (n, d) = retry_delay(failures, None, false, transient, 1.0);
                failures = n;
                delays.push(d);
            }
            assert_eq!(delays, [s(1), s(2), s(4), s(8)]);
            // The close is 3 s away: the next retry is at the close, not 16 s later.
            assert_eq!(
                retry_delay(failures, Some(s(3)), false, transient, 1.0),
                (5, s(3))
            );
            // The cap still holds far from any due instant.
            assert_eq!(
                retry_delay(30, Some(s(86_400)), false, transient, 1.0).1,
                BACKOFF_CAP
            );
        }
        // At the close a lasting failure starts over at the first delay.
        assert_eq!(
            retry_delay(5, Some(StdDuration::ZERO), false, false, 1.0),
            (1, s(1))
        );
    }

    #[test]
    fn a_due_plan_failing_in_passing_is_retried_at_the_first_step_then_backs_off() {
        let s = StdDuration::from_secs;
        let due = Some(StdDuration::ZERO);
        let mut failures = 0;
        let mut delays = Vec::new();
        for _ in 0..QUICK_RETRIES + 3 {
            let (n, d) = retry_delay(failures, due, false, true, 1.0);
            assert_eq!(n, failures + 1, "the failures are counted");
            failures = n;
            delays.push(d);
        }
        let quick = QUICK_RETRIES as usize;
        assert!(delays[..quick].iter().all(|d| *d == s(1)), "{delays:?}");
        assert_eq!(delays[quick..], [s(2), s(4), s(8)]);
        // A window that failed long before its action fell due still retries at once.
        assert_eq!(retry_delay(40, due, false, true, 1.0).1, BACKOFF_CAP);
        assert_eq!(
            retry_delay(3, due, false, true, 0.0),
            (4, StdDuration::from_millis(500))
        );
    }

    #[tokio::test]
    async fn a_create_still_pending_at_the_close_is_dropped_and_none_is_sent_after_it() {
        use crate::clock::VirtualClock;
        let clock = VirtualClock::new(t(0), 600.0);
        // Done before the close (1 virtual minute = 0.1 s away): its outcome.
        assert_eq!(before_close(&clock, Some(t(1)), async { 7 }).await, Some(7));
        // No window end (never the case for a create; kept total): waits as long as it takes.
        assert_eq!(before_close(&clock, None, async { 8 }).await, Some(8));
        // Still pending at the close: dropped.
        let slow = tokio::time::sleep(StdDuration::from_secs(30));
        let close = clock.now() + Duration::minutes(1);
        assert_eq!(before_close(&clock, Some(close), slow).await, None);
        assert!(
            clock.now() >= close,
            "not before the close: {}",
            clock.now()
        );
        // The close has passed: the request is not even started.
        let never = async { panic!("a request after the close was sent") };
        let _: Option<()> = before_close(&clock, Some(clock.now()), never).await;
        // A clock that slows down does not cut the request short: paused, the close never
        // comes, and the request's outcome arrives.
        clock.set_pace(0.0);
        let close = clock.now() + Duration::seconds(1);
        let later = async {
            tokio::time::sleep(StdDuration::from_millis(300)).await;
            9
        };
        assert_eq!(before_close(&clock, Some(close), later).await, Some(9));
    }

    #[test]
    fn a_plan_acting_now_retries_soon_but_never_past_its_next_instant() {
        let s = StdDuration::from_secs;
        // Creates to make, the next instant (a nodeTimeout) 30 s away: quick retries...
        let (n, d) = retry_delay(0, Some(s(30)), true, true, 1.0);
        assert_eq!((n, d), (1, s(1)));
        // ...then growth, but never past the timeout, however many creates failed: the plan
        // at that instant times the node out (a create failing for good cannot hold the round).
        assert_eq!(retry_delay(20, Some(s(30)), true, true, 1.0), (21, s(30)));
        // A refusal while acting grows as any lasting failure.
        assert_eq!(retry_delay(3, Some(s(30)), true, false, 1.0), (4, s(8)));
        assert_eq!(retry_delay(3, None, true, true, 1.0), (4, s(1)));
    }

    #[test]
    fn failures_in_passing_are_transient_and_refusals_are_not() {
        let api = |code: u16| WindowError::PatchStatus {
            name: "w".into(),
            source: kube::Error::Api(
                kube::core::Status::failure("x", "y")
                    .with_code(code)
                    .boxed(),
            ),
        };
        for code in [409, 429, 500, 503, 504] {
            assert!(api(code).is_transient(), "{code}");
        }
        for code in [400, 403, 404, 422] {
            assert!(!api(code).is_transient(), "{code}");
        }
        let taken = WindowError::NameTaken {
            name: "n".into(),
            node: "a".into(),
        };
        assert!(!taken.is_transient());
    }

    fn maintenance(uid: &str, terminating: bool) -> NodeMaintenance {
        let mut nm = NodeMaintenance::new(
            "w-node-1",
            NodeMaintenanceSpec {
                node_name: "node-1".into(),
                reason: None,
            },
        );
        nm.metadata.uid = Some(uid.into());
        if terminating {
            nm.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
        }
        nm
    }

    fn presence_changes(
        p: &mut MaintenancePresence,
        event: watcher::Event<NodeMaintenance>,
    ) -> Vec<bool> {
        p.changes(event).into_iter().map(|(_, c)| c).collect()
    }

    #[test]
    fn only_appearing_terminating_or_going_wakes_other_windows() {
        let mut p = MaintenancePresence::default();
        let apply = |uid: &str, terminating| watcher::Event::Apply(maintenance(uid, terminating));
        assert_eq!(
            presence_changes(&mut p, apply("a", false)),
            [true],
            "appears"
        );
        assert_eq!(
            presence_changes(&mut p, apply("a", false)),
            [false],
            "status only"
        );
        assert_eq!(
            presence_changes(&mut p, apply("a", true)),
            [true],
            "terminating"
        );
        assert_eq!(presence_changes(&mut p, apply("a", true)), [false]);
        assert_eq!(
            presence_changes(&mut p, watcher::Event::Delete(maintenance("a", true))),
            [true],
            "gone"
        );
        assert_eq!(
            presence_changes(&mut p, apply("a", false)),
            [true],
            "a new one"
        );
        // A relist tells every window about every object.
        assert!(presence_changes(&mut p, watcher::Event::Init).is_empty());
        assert_eq!(
            presence_changes(&mut p, watcher::Event::InitApply(maintenance("a", false))),
            [true]
        );
        assert!(presence_changes(&mut p, watcher::Event::InitDone).is_empty());
        assert_eq!(presence_changes(&mut p, apply("a", false)), [false]);
    }

    fn names(p: &Placeholders, cached: &[CachedMaintenance], at: i64) -> Vec<String> {
        p.current(cached, t(at))
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn a_placeholder_lasts_until_the_cache_shows_the_object() {
        let p = Placeholders::default();
        p.reserve("w-a", placeholder("w", "a", 0), &[], None)
            .unwrap();
        assert_eq!(names(&p, &[], 1), ["w-a"]);
        assert!(names(&p, &[cached("w-a", "a")], 2).is_empty());
        assert!(p.is_empty());
    }

    #[test]
    fn a_placeholder_the_cache_never_shows_expires_after_the_node_timeout() {
        let p = Placeholders::default();
        p.reserve("w-a", placeholder("w", "a", 0), &[], None)
            .unwrap();
        assert_eq!(names(&p, &[], 119), ["w-a"]);
        assert!(names(&p, &[], 120).is_empty());
    }

    #[test]
    fn a_placeholder_is_forgotten_on_delete_and_with_its_window() {
        let p = Placeholders::default();
        p.reserve("w-a", placeholder("w", "a", 0), &[], None)
            .unwrap();
        p.reserve("w-b", placeholder("w", "b", 0), &[], None)
            .unwrap();
        p.reserve("v-c", placeholder("v", "c", 0), &[], None)
            .unwrap();
        p.forget("w-a");
        assert_eq!(names(&p, &[], 1), ["v-c", "w-b"]);
        p.forget_window("w");
        assert_eq!(names(&p, &[], 1), ["v-c"]);
    }

    #[test]
    fn the_cap_counts_cached_and_reserved_maintenances_of_all_windows() {
        let p = Placeholders::default();
        let cache = [cached("x-z", "z")];
        p.reserve("w-a", placeholder("w", "a", 0), &cache, Some(2))
            .unwrap();
        assert_eq!(
            p.reserve("v-b", placeholder("v", "b", 0), &cache, Some(2)),
            Err(Refusal::Cap(2))
        );
        // The create of w-a failed: its reservation is released and v-b may go.
        p.forget("w-a");
        p.reserve("v-b", placeholder("v", "b", 0), &cache, Some(2))
            .unwrap();
        // An ad-hoc NodeMaintenance does not count against the cap.
        let ad_hoc = CachedMaintenance {
            generated: false,
            ..cached("fix", "q")
        };
        p.forget("v-b");
        p.reserve(
            "v-b",
            placeholder("v", "b", 0),
            &[ad_hoc, cache[0].clone()],
            Some(2),
        )
        .unwrap();
    }

    #[test]
    fn two_windows_cannot_reserve_the_same_node() {
        let p = Placeholders::default();
        p.reserve("w-a", placeholder("w", "a", 0), &[], None)
            .unwrap();
        assert_eq!(
            p.reserve("v-a", placeholder("v", "a", 0), &[], None),
            Err(Refusal::NodeTaken("w-a".into()))
        );
        assert_eq!(
            p.reserve(
                "v-b",
                placeholder("v", "b", 0),
                &[cached("fix-b", "b")],
                None
            ),
            Err(Refusal::NodeTaken("fix-b".into()))
        );
        // Reserving again (a repeated create) is fine.
        p.reserve("w-a", placeholder("w", "a", 1), &[], None)
            .unwrap();
        p.reserve(
            "w-c",
            placeholder("w", "c", 0),
            &[cached("w-c", "c")],
            Some(1),
        )
        .unwrap();
    }
}
