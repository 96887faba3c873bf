//! The MaintenanceWindow reconciler: kube-runtime glue around the pure rolling planner.
//!
//! Each reconcile is `observe -> decide -> report -> act`:
//! - observe: the window (read fresh), every Node (a reflector cache trimmed to what the
//!   planner needs) and every NodeMaintenance (a reflector cache), and `now` from the [`Clock`];
//! - decide: [`WindowPolicy::from_spec`] then [`rollout::plan`], both pure;
//! - report: the status, written only when it changed (no churn) and guarded by the
//!   resourceVersion it was computed from, then the Events of the plan;
//! - act: create and delete NodeMaintenances (`AlreadyExists` / `NotFound` are success).
//!
//! The status is written *before* acting: if the write loses a race the reconcile starts
//! over without having acted on stale state, and if acting fails after the write, the
//! persisted round says the node is in flight but not observed, so the planner repeats the
//! create.
//!
//! It requeues exactly at the next instant something time-based happens (the planner's
//! `requeue_at`: a window opening or closing, `release.after`, `minReadySeconds`,
//! `nodeTimeout`) and otherwise waits for a change of a window, a Node or a NodeMaintenance.
//! It never polls.

use crate::api::conditions::{self, ConditionStatus, ConditionType};
use crate::api::maintenance_window::{MaintenanceWindowStatus, WindowSpan};
use crate::api::{
    MaintenancePhase, MaintenanceWindow, NodeMaintenance, NodeMaintenanceSpec, RUN_NOW_ANNOTATION,
    WINDOW_LABEL, from_time, to_time,
};
use crate::clock::Clock;
use crate::rollout::{
    self, MaintenanceView, NodeView, PlanInput, RolloutEvent, RolloutPlan, RolloutPolicy,
};
use crate::schedule::{WindowPolicy, selector_matches};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, EventSource, Node};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

/// The field manager and Event reporter of this controller.
pub const MANAGER: &str = "nmo-maintenance-window";

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
}

impl WindowError {
    /// Bounded category, for metrics, logs and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            WindowError::GetWindow { .. } => "get_window",
            WindowError::CreateMaintenance { .. } => "create_maintenance",
            WindowError::DeleteMaintenance { .. } => "delete_maintenance",
            WindowError::PatchStatus { .. } => "patch_status",
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
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            enabled: true,
            max_concurrent_maintenances: None,
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
}

/// What a created NodeMaintenance looks like until the cache has it.
#[derive(Clone, Debug)]
struct Created {
    node: String,
    window: String,
    created: DateTime<Utc>,
}

/// Shared state of the reconciler.
struct Context {
    client: Client,
    clock: Arc<dyn Clock>,
    config: WindowConfig,
    nodes: Store<Node>,
    maintenances: Store<NodeMaintenance>,
    stats: Arc<WindowStats>,
    /// NodeMaintenances created but perhaps not yet in the cache, so that the next plan (of
    /// this window or another) neither takes the node twice nor exceeds the cap.
    recently_created: Mutex<HashMap<String, Created>>,
    /// Serialises plans of different windows, so that the operator-wide cap and "one
    /// NodeMaintenance per node" hold across windows. Plans are fast (no drains here).
    planning: tokio::sync::Mutex<()>,
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

/// Run the MaintenanceWindow controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    clock: Arc<dyn Clock>,
    config: WindowConfig,
    stats: Arc<WindowStats>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    if !config.enabled {
        return;
    }
    let (node_store, node_writer) = reflector::store();
    let (nm_store, nm_writer) = reflector::store();
    let node_changes = reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(trim_node),
    )
    .touched_objects();
    let nm_changes = reflector(
        nm_writer,
        watcher(
            Api::<NodeMaintenance>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .touched_objects();

    let ctx = Arc::new(Context {
        client: client.clone(),
        clock,
        config,
        nodes: node_store,
        maintenances: nm_store,
        stats,
        recently_created: Mutex::new(HashMap::new()),
        planning: tokio::sync::Mutex::new(()),
    });

    let controller = Controller::new(
        Api::<MaintenanceWindow>::all(client),
        watcher::Config::default(),
    );
    let windows = controller.store();
    let for_nodes = windows.clone();
    let node_triggers = node_changes
        .filter_map(move |node| {
            let windows = for_nodes.clone();
            async move {
                node.ok()
                    .map(|n| futures::stream::iter(windows_for_node(&windows, &n)))
            }
        })
        .flatten();
    let for_nms = windows.clone();
    let nm_triggers = nm_changes
        .filter_map(move |nm| {
            let windows = for_nms.clone();
            async move {
                nm.ok()
                    .map(|m| futures::stream::iter(windows_for_maintenance(&windows, &m)))
            }
        })
        .flatten();

    controller
        .reconcile_on(futures::stream::select(node_triggers, nm_triggers))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "MaintenanceWindow reconcile ended in error");
            }
        })
        .await;
}

/// The windows a Node change concerns: those whose selector matches it and those that have it
/// in flight (it may have just left the selector).
fn windows_for_node(
    windows: &Store<MaintenanceWindow>,
    node: &Node,
) -> Vec<ObjectRef<MaintenanceWindow>> {
    let name = node.name_any();
    windows
        .state()
        .iter()
        .filter(|w| {
            selector_matches(&w.spec.node_selector, node.labels()) || has_in_flight(w, &name)
        })
        .map(|w| ObjectRef::from_obj(w.as_ref()))
        .collect()
}

/// The windows a NodeMaintenance change concerns: all of them. Its own window tracks it; any
/// other window may have skipped its node (one NodeMaintenance per node) or been held back by
/// the operator-wide cap, and must retry the moment it goes. Windows are few and a plan with
/// nothing to do writes nothing.
fn windows_for_maintenance(
    windows: &Store<MaintenanceWindow>,
    _nm: &NodeMaintenance,
) -> Vec<ObjectRef<MaintenanceWindow>> {
    windows
        .state()
        .iter()
        .map(|w| ObjectRef::from_obj(w.as_ref()))
        .collect()
}

fn has_in_flight(window: &MaintenanceWindow, node: &str) -> bool {
    window
        .status
        .as_ref()
        .and_then(|s| s.round.as_ref())
        .is_some_and(|r| r.in_progress_nodes.iter().any(|n| n.name == node))
}

fn error_policy(window: Arc<MaintenanceWindow>, err: &WindowError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(window = %window.name_any(), category = err.category(), %err, "MaintenanceWindow reconcile failed; retrying");
    Action::requeue(StdDuration::from_secs(2))
}

/// One reconcile of one MaintenanceWindow.
async fn reconcile(
    cached: Arc<MaintenanceWindow>,
    ctx: Arc<Context>,
) -> Result<Action, WindowError> {
    ctx.stats.reconciles.fetch_add(1, Ordering::Relaxed);
    let name = cached.name_any();
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
    let _serialised = ctx.planning.lock().await;
    let api: Api<MaintenanceWindow> = Api::all(ctx.client.clone());
    // Read fresh: the status holds the round, and planning from a stale copy would redo work.
    let window = match api.get_opt(&name).await {
        Ok(Some(window)) => window,
        Ok(None) => return Ok(Action::await_change()),
        Err(source) => return Err(WindowError::GetWindow { name, source }),
    };
    if window.meta().deletion_timestamp.is_some() {
        // Garbage collection removes its NodeMaintenances; nothing to plan.
        return Ok(Action::await_change());
    }
    let now = ctx.clock.now();
    let old_status = window.status.clone().unwrap_or_default();

    let policy = match WindowPolicy::from_spec(&window.spec) {
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

    let input = observe(&ctx, &window, &policy, &old_status, now);
    let plan = rollout::plan(&input);
    let status = status_from_plan(&window, &policy, &old_status, &plan, now);
    write_status(&ctx, &window, &old_status, status).await?;
    for event in &plan.events {
        publish_event(&ctx, &window, event).await;
    }
    act(&ctx, &window, &plan).await?;

    Ok(match plan.requeue_at {
        // A few milliseconds late rather than early, so the plan at wake-up sees the instant.
        Some(at) => {
            Action::requeue(ctx.clock.real_duration(at - now) + StdDuration::from_millis(2))
        }
        None => Action::await_change(),
    })
}

/// The planner's input, from the caches.
fn observe(
    ctx: &Context,
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
    let mut cached = BTreeSet::new();
    for nm in ctx.maintenances.state() {
        cached.insert(nm.name_any());
        // A NodeMaintenance being deleted still holds its node until its cleanup is done,
        // so it still counts against the cap.
        if nm.labels().contains_key(WINDOW_LABEL) {
            generated += 1;
        }
        maintenances.push(maintenance_view(&nm, &name, &uid));
    }
    {
        let mut recent = ctx
            .recently_created
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        recent.retain(|nm_name, _| !cached.contains(nm_name));
        for (nm_name, created) in recent.iter() {
            generated += 1;
            maintenances.push(MaintenanceView {
                name: nm_name.clone(),
                node: created.node.clone(),
                owned: created.window == name,
                phase: None,
                created: created.created,
                drain_succeeded: None,
                deleting: false,
            });
        }
    }

    let owned_nodes: BTreeSet<&str> = maintenances
        .iter()
        .filter(|m| m.owned)
        .map(|m| m.node.as_str())
        .collect();
    let nodes: Vec<NodeView> = ctx
        .nodes
        .state()
        .iter()
        .filter_map(|node| {
            let node_name = node.name_any();
            let selected = selector_matches(&window.spec.node_selector, node.labels());
            if !selected && !state.round.in_flight.contains_key(&node_name) {
                return None;
            }
            let schedulable = !node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            Some(NodeView {
                selected,
                ready: node_ready(node),
                schedulable,
                cordoned_by_others: !schedulable && !owned_nodes.contains(node_name.as_str()),
                boot_id: node
                    .status
                    .as_ref()
                    .and_then(|s| s.node_info.as_ref())
                    .map(|i| i.boot_id.clone()),
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
        cap_headroom: ctx
            .config
            .max_concurrent_maintenances
            .map(|cap| cap.saturating_sub(generated)),
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
    }
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
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Create and delete NodeMaintenances as planned. Both are idempotent.
async fn act(
    ctx: &Context,
    window: &MaintenanceWindow,
    plan: &RolloutPlan,
) -> Result<(), WindowError> {
    let api: Api<NodeMaintenance> = Api::all(ctx.client.clone());
    for doomed in &plan.delete {
        match api.delete(&doomed.name, &DeleteParams::default()).await {
            Ok(_) => {
                ctx.stats.deleted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(window = %window.name_any(), nm = %doomed.name, reason = doomed.reason.as_str(), "deleted NodeMaintenance");
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(WindowError::DeleteMaintenance {
                    name: doomed.name.clone(),
                    source,
                });
            }
        }
    }
    for wanted in &plan.create {
        let nm = generated_maintenance(window, &wanted.name, &wanted.node, wanted.reason.clone());
        match api.create(&PostParams::default(), &nm).await {
            Ok(_) => {
                ctx.stats.created.fetch_add(1, Ordering::Relaxed);
                tracing::info!(window = %window.name_any(), nm = %wanted.name, node = %wanted.node, "created NodeMaintenance");
                ctx.recently_created
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        wanted.name.clone(),
                        Created {
                            node: wanted.node.clone(),
                            window: window.name_any(),
                            created: ctx.clock.now(),
                        },
                    );
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(source) => {
                return Err(WindowError::CreateMaintenance {
                    name: wanted.name.clone(),
                    source,
                });
            }
        }
    }
    Ok(())
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
    let (open_reason, open_message) = if summary.window_open {
        ("WindowOpen", ready_message.clone())
    } else {
        ("WindowClosed", ready_message.clone())
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
    api.patch_status(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(|source| WindowError::PatchStatus { name, source })?;
    ctx.stats.status_writes.fetch_add(1, Ordering::Relaxed);
    Ok(true)
}

async fn publish_event(ctx: &Context, window: &MaintenanceWindow, event: &RolloutEvent) {
    publish(
        ctx,
        window,
        event.reason.as_str(),
        &event.message,
        event.warning,
    )
    .await;
}

/// Publish an Event on the window: one Event object per transition. (kube's `Recorder`
/// folds Events with the same reason into a series that keeps the first message, so "started
/// worker-2" would read "started worker-1".) Events are best effort: a failure is logged.
async fn publish(
    ctx: &Context,
    window: &MaintenanceWindow,
    reason: &str,
    message: &str,
    warning: bool,
) {
    let now = ctx.clock.now();
    let seq = ctx.stats.events.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        "{}.{:x}{:04x}",
        window.name_any(),
        now.timestamp_nanos_opt().unwrap_or_default(),
        seq & 0xffff
    );
    let event = Event {
        metadata: ObjectMeta {
            name: Some(name),
            // Events about cluster-scoped objects live in `default`, as kube-apiserver's own do.
            namespace: Some("default".to_string()),
            ..ObjectMeta::default()
        },
        involved_object: window.object_ref(&()),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
        source: Some(EventSource {
            component: Some(MANAGER.to_string()),
            host: None,
        }),
        reporting_component: Some(MANAGER.to_string()),
        reporting_instance: Some(MANAGER.to_string()),
        action: Some(reason.to_string()),
        first_timestamp: Some(to_time(now)),
        last_timestamp: Some(to_time(now)),
        count: Some(1),
        ..Event::default()
    };
    let events: Api<Event> = Api::namespaced(ctx.client.clone(), "default");
    if let Err(err) = events.create(&PostParams::default(), &event).await {
        tracing::warn!(window = %window.name_any(), %err, reason, "could not publish Event");
    }
}
