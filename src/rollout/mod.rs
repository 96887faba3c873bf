//! The rolling planner for MaintenanceWindow (pure).
//!
//! [`plan`] takes everything the reconciler observed (the policy from the spec, the window
//! situation, the nodes, the NodeMaintenances, the persisted [`RolloutState`] and `now`) and
//! returns a [`RolloutPlan`]: the NodeMaintenances to create and delete, the new state to
//! persist in status, the events to emit and when to wake up next. It does no I/O, parses no
//! cron or duration, and reads no clock.
//!
//! Re-planning is idempotent: planning again from the returned state with the same cluster
//! gives the same state and no events, and the creates and deletes are desired state that the
//! reconciler may safely repeat (`AlreadyExists` and `NotFound` are success).
//!
//! # "Unavailable because of this window"
//!
//! A node is in maintenance *because of this window* while a NodeMaintenance owned by the
//! window exists for it (even while that object is being deleted), and after that until it has
//! been Ready and schedulable, as far as this window is concerned, for `minReadySeconds`
//! without interruption. The budget counts the union of those nodes and the selected nodes
//! that are unavailable for other reasons: NotReady, cordoned, or under any other
//! NodeMaintenance. The planner only starts a node while that union stays within the budget.
//!
//! # Rules chosen where DESIGN.md is silent
//!
//! - Pending nodes that are NotReady, cordoned by someone else or under any other
//!   NodeMaintenance are skipped and retried on later plans; later nodes in name order go
//!   ahead meanwhile. So are control-plane nodes that would break the control-plane quorum
//!   ([`crate::controller::quorum::check_quorum`], counting every node under a
//!   NodeMaintenance, in flight or started by this plan as unavailable), and nodes whose
//!   generated name ([`nm_name`]) is taken by a NodeMaintenance that is not this window's for
//!   that node (`NodeBlocked` Warning once). Skips are persisted in `Round::skipped` while the
//!   round runs (`status.round.skippedNodes`).
//! - A node whose create was never seen in the cluster is still bound by `nodeTimeout`.
//! - A round starts at the first plan inside an open window, after the previous round
//!   finished (strictly before the window opened), when not suspended, not in dry run and not
//!   stalled. With no selected node no round starts (`Stalled`, `NoNodesSelected`).
//! - A failed node (nodeTimeout) is not retried within its round. The stall lifts at the next
//!   window opening (a run-now window counts); failures before it are then forgiven for the
//!   `maxFailures` threshold, later ones count again.
//! - With `onWindowEnd: Abort`, unreleased in-flight nodes are released whenever no window is
//!   open; they go back to pending once their slot frees.
//! - Every ended node (released, timed out, aborted) holds its slot until its NodeMaintenance is
//!   gone and it has been Ready for `minReadySeconds`.
//! - A run-now window and a scheduled window can overlap: the open window is the one ending
//!   last; ties keep the one already open.
//!
//! # Persisted state
//!
//! [`RolloutState`] must survive restarts, in status. Mapping onto `api::maintenance_window`:
//! `round` -> `status.round` ([`round_status`] writes the existing fields), `window` ->
//! `status.currentWindow`, `last_handled_run_now` -> `status.lastHandledRunNow`. Fields the
//! status types do not have yet and that must be added to read the state back:
//! `NodeInProgress.observed: bool`, `NodeInProgress.ending: Option<String>`
//! ([`Ending::as_str`]/[`Ending::parse`]), `NodeInProgress.readySince: Option<Time>`,
//! `RoundStatus.stalledAt: Option<Time>`, `RoundStatus.forgivenFailures: i32` and
//! `WindowSpan.runNow: bool`.

mod name;
mod plan;
mod status;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};

pub use crate::api::maintenance_window::OnWindowEnd;
pub use crate::api::node_maintenance::MaintenancePhase;
pub use crate::schedule::{Budget, BudgetError, WindowOccurrence};
pub use name::{MAX_NAME_LEN, nm_name};
pub use plan::{domain_order, plan};
pub use status::{open_window_span, round_status, state_from_status};

/// The spec of a MaintenanceWindow, parsed and with defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutPolicy {
    /// `maxUnavailable`.
    pub budget: Budget,
    /// `duration`: the length of the extra window that the run-now annotation opens.
    pub window_duration: Duration,
    /// `release.after`: delete the NodeMaintenance this long after its drain succeeded.
    pub release_after: Option<Duration>,
    /// `release.onReboot`: release once the bootID changed and the node is Ready.
    pub release_on_reboot: bool,
    /// `nodeTimeout`: longest time from creation to release; past it the node fails.
    pub node_timeout: Duration,
    /// `minReadySeconds`: how long a released node must stay Ready and schedulable before its
    /// slot frees up.
    pub min_ready: Duration,
    /// `maxFailures`: failures tolerated per round before the rollout stalls.
    pub max_failures: u32,
    /// `onWindowEnd`.
    pub on_window_end: OnWindowEnd,
    /// `suspend`: start no new node.
    pub suspend: bool,
    /// `dryRun`: create nothing, only show the plan.
    pub dry_run: bool,
    /// `reason`, copied into each generated NodeMaintenance.
    pub reason: Option<String>,
    /// `topologyKey`: when set, the round takes one domain ([`NodeView::domain`]) at a time.
    pub topology_key: Option<String>,
}

impl Default for RolloutPolicy {
    /// The spec defaults of DESIGN.md, with `release.after: 0s` so the policy is usable.
    fn default() -> Self {
        RolloutPolicy {
            budget: Budget::default(),
            window_duration: Duration::hours(1),
            release_after: Some(Duration::zero()),
            release_on_reboot: false,
            node_timeout: Duration::hours(2),
            min_ready: Duration::zero(),
            max_failures: 0,
            on_window_end: OnWindowEnd::FinishInFlight,
            suspend: false,
            dry_run: false,
            reason: None,
            topology_key: None,
        }
    }
}

/// The open window as persisted in status (`status.currentWindow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenWindow {
    /// The occurrence.
    pub occurrence: WindowOccurrence,
    /// Whether the run-now annotation opened it (so it outlives the schedule's view of time).
    pub run_now: bool,
}

/// A node as the planner needs it. Pass every selected node, every node of
/// `state.round.in_flight` that still exists (with `selected: false` if it left the selector),
/// and every control-plane node (the quorum rule counts them all). A node absent from the
/// input is taken as deleted from the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Whether the window's nodeSelector matches it.
    pub selected: bool,
    /// The `Ready` condition is True.
    pub ready: bool,
    /// `spec.unschedulable` is false.
    pub schedulable: bool,
    /// Unschedulable for a reason other than a NodeMaintenance of this window (someone ran
    /// `kubectl cordon`, or another NodeMaintenance holds it).
    pub cordoned_by_others: bool,
    /// `status.nodeInfo.bootID`.
    pub boot_id: Option<String>,
    /// Labelled `node-role.kubernetes.io/control-plane` or `node-role.kubernetes.io/master`.
    pub control_plane: bool,
    /// With a `topologyKey`, the node's value of that label; `None` (or empty) for a node
    /// without it, which belongs to the last domain.
    pub domain: Option<String>,
}

/// A NodeMaintenance in the cluster (pass all of them: the planner needs the foreign ones to
/// skip their nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenanceView {
    /// Object name.
    pub name: String,
    /// `spec.nodeName`.
    pub node: String,
    /// Created by this window (its controller ownerReference or window label says so).
    pub owned: bool,
    /// `status.phase`, if set.
    pub phase: Option<MaintenancePhase>,
    /// `metadata.creationTimestamp`.
    pub created: DateTime<Utc>,
    /// When the drain succeeded, if known (the `Ready` condition's lastTransitionTime).
    pub drain_succeeded: Option<DateTime<Utc>>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The object is in the cache. False for one nmo created moments ago that the cache has
    /// not shown yet: it holds its node and counts, but does not prove the object was seen.
    pub seen: bool,
}

/// Why an in-flight node's maintenance ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// `release.after` elapsed after the drain succeeded.
    ReleaseAfter,
    /// The node rebooted (bootID changed) and is Ready again.
    Rebooted,
    /// Someone else deleted the NodeMaintenance.
    DeletedByOthers,
    /// `nodeTimeout` elapsed: the node failed.
    TimedOut,
    /// The window closed with `onWindowEnd: Abort`: the node goes back to pending.
    Aborted,
    /// The Node object disappeared.
    NodeGone,
}

impl Ending {
    /// Stable CamelCase name, for status.
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::ReleaseAfter => "ReleaseAfter",
            Ending::Rebooted => "Rebooted",
            Ending::DeletedByOthers => "DeletedByOthers",
            Ending::TimedOut => "TimedOut",
            Ending::Aborted => "Aborted",
            Ending::NodeGone => "NodeGone",
        }
    }

    /// Read back [`Ending::as_str`].
    pub fn parse(s: &str) -> Option<Ending> {
        [
            Ending::ReleaseAfter,
            Ending::Rebooted,
            Ending::DeletedByOthers,
            Ending::TimedOut,
            Ending::Aborted,
            Ending::NodeGone,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }

    /// Whether the node counts as maintained once its slot frees.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            Ending::ReleaseAfter | Ending::Rebooted | Ending::DeletedByOthers
        )
    }
}

/// A node being maintained by this window, from creation until its slot frees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// When the planner asked for its NodeMaintenance (or when an adopted one was created).
    pub started: DateTime<Utc>,
    /// The NodeMaintenance has been seen in the cluster at least once. Until then a missing
    /// object means "not in the cache yet", not "deleted by someone else".
    pub observed: bool,
    /// The node's bootID when maintenance started, for `release.onReboot`.
    pub boot_id: Option<String>,
    /// When its drain succeeded.
    pub drained: Option<DateTime<Utc>>,
    /// When its maintenance ended (release, timeout, abort).
    pub released: Option<DateTime<Utc>>,
    /// Why its maintenance ended; set together with `released`.
    pub ending: Option<Ending>,
    /// Since when, after release, the NodeMaintenance is gone and the node has been Ready
    /// and schedulable without interruption.
    pub ready_since: Option<DateTime<Utc>>,
}

/// The round: every selected node maintained once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Round number; 0 before the first round.
    pub number: u64,
    /// When it started.
    pub started: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished: Option<DateTime<Utc>>,
    /// Nodes maintained this round.
    pub completed: BTreeSet<String>,
    /// Nodes that failed this round, with the reason.
    pub failed: BTreeMap<String, String>,
    /// Nodes being maintained or soaking (a timed-out node is both here and in `failed`
    /// until its slot frees).
    pub in_flight: BTreeMap<String, InFlight>,
    /// Set when failures went past `maxFailures`; cleared at the next window opening.
    pub stalled_at: Option<DateTime<Utc>>,
    /// Failures forgiven when the last stall was lifted: the stall threshold counts only
    /// failures after them.
    pub forgiven_failures: u32,
    /// Pending nodes that could not start at the last plan, with the reason
    /// ([`SkipReason::message`]); they are retried on every plan.
    pub skipped: BTreeMap<String, String>,
    /// With a `topologyKey`, the domain being maintained ("" for nodes without the label).
    pub domain: Option<String>,
}

impl Round {
    /// Started and not finished.
    pub fn is_active(&self) -> bool {
        self.number > 0 && self.finished.is_none()
    }
}

/// Everything the planner persists between reconciles (in the MaintenanceWindow's status).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutState {
    /// The current (or last) round.
    pub round: Round,
    /// The window that was open at the last plan (`status.currentWindow`).
    pub window: Option<OpenWindow>,
    /// The run-now annotation value already acted on (`status.lastHandledRunNow`).
    pub last_handled_run_now: Option<String>,
}

/// What the planner is given.
#[derive(Clone, Debug)]
pub struct PlanInput {
    /// The MaintenanceWindow's name.
    pub window: String,
    /// The parsed spec.
    pub policy: RolloutPolicy,
    /// The occurrence of the schedule that contains `now`, if any.
    pub schedule_window: Option<WindowOccurrence>,
    /// The next occurrence of the schedule starting after `now`, if any.
    pub next_window: Option<WindowOccurrence>,
    /// The value of the `nodemaintenance.medik8s.io/run-now` annotation, if present.
    pub run_now: Option<String>,
    /// Nodes (see [`NodeView`] for which).
    pub nodes: Vec<NodeView>,
    /// Every NodeMaintenance in the cluster.
    pub maintenances: Vec<MaintenanceView>,
    /// The state persisted by the previous plan (default for a new window).
    pub state: RolloutState,
    /// How many more NodeMaintenances all windows together may create
    /// (`--max-concurrent-maintenances` minus those that exist); `None` for no cap.
    pub cap_headroom: Option<u32>,
    /// The exclusion in force at `now`, if any: no window is open, no node starts and a
    /// run-now request is refused.
    pub freeze: Option<Freeze>,
    /// The start of the next exclusion after `now`, if any (a wake-up time).
    pub next_freeze: Option<DateTime<Utc>>,
    /// The health gate's verdict: whether new nodes may start.
    pub gate: Gate,
    /// The current instant, from the `Clock`.
    pub now: DateTime<Utc>,
}

/// An exclusion in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Freeze {
    /// Which exclusion, for people (`spec.exclusions[0] "Black Friday" (...)`).
    pub description: String,
    /// When it ends.
    pub end: DateTime<Utc>,
}

/// The health gate's verdict for this plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Gate {
    /// New nodes may start (no gate, or it passes).
    #[default]
    Open,
    /// No new node starts; in-flight nodes continue. The message says why.
    Blocked(String),
}

/// A NodeMaintenance to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMaintenanceToCreate {
    /// Object name ([`nm_name`]).
    pub name: String,
    /// `spec.nodeName`.
    pub node: String,
    /// `spec.reason`.
    pub reason: Option<String>,
}

/// Why a NodeMaintenance is to be deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// `release.after` elapsed.
    ReleaseAfter,
    /// The node rebooted and is Ready (`release.onReboot`).
    Rebooted,
    /// `nodeTimeout` elapsed.
    Timeout,
    /// The window closed with `onWindowEnd: Abort`.
    Abort,
    /// The node no longer exists.
    NodeGone,
    /// An owned NodeMaintenance the round does not track, on a node that left the selector.
    NodeLeftSelector,
    /// An owned NodeMaintenance the round does not need (node already done this round, or no
    /// round running).
    Stale,
}

impl DeleteReason {
    /// Stable CamelCase name, for logs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteReason::ReleaseAfter => "ReleaseAfter",
            DeleteReason::Rebooted => "Rebooted",
            DeleteReason::Timeout => "Timeout",
            DeleteReason::Abort => "Abort",
            DeleteReason::NodeGone => "NodeGone",
            DeleteReason::NodeLeftSelector => "NodeLeftSelector",
            DeleteReason::Stale => "Stale",
        }
    }
}

/// A NodeMaintenance to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMaintenanceToDelete {
    /// Object name.
    pub name: String,
    /// `spec.nodeName`.
    pub node: String,
    /// Why.
    pub reason: DeleteReason,
}

/// Event reasons on the MaintenanceWindow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventReason {
    /// A window opened.
    WindowOpened,
    /// A window closed.
    WindowClosed,
    /// A NodeMaintenance was created (or adopted) for a node.
    NodeMaintenanceStarted,
    /// A node's maintenance ended (released, deleted by someone else, or aborted).
    NodeReleased,
    /// A node failed (timeout).
    NodeFailed,
    /// Every selected node was handled this round.
    RoundCompleted,
    /// Failures went past `maxFailures`.
    RolloutStalled,
    /// A node cannot be started because a NodeMaintenance that is not this window's has
    /// the generated name.
    NodeBlocked,
    /// A run-now request arrived during an exclusion: the freeze wins.
    RunNowRefused,
}

impl EventReason {
    /// The Event's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::WindowOpened => "WindowOpened",
            EventReason::WindowClosed => "WindowClosed",
            EventReason::NodeMaintenanceStarted => "NodeMaintenanceStarted",
            EventReason::NodeReleased => "NodeReleased",
            EventReason::NodeFailed => "NodeFailed",
            EventReason::RoundCompleted => "RoundCompleted",
            EventReason::RolloutStalled => "RolloutStalled",
            EventReason::NodeBlocked => "NodeBlocked",
            EventReason::RunNowRefused => "RunNowRefused",
        }
    }
}

/// An Event to emit on the MaintenanceWindow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutEvent {
    /// Reason.
    pub reason: EventReason,
    /// Human message.
    pub message: String,
    /// `Warning` rather than `Normal`.
    pub warning: bool,
}

/// Why a pending node was not started now; it is retried on a later plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Another NodeMaintenance (ad hoc or another window's) holds the node.
    HeldBy(String),
    /// The node is NotReady.
    NotReady,
    /// Someone else cordoned the node.
    Cordoned,
    /// A NodeMaintenance that is not this window's (another owner, or another node) already
    /// has the generated name.
    NameTaken(String),
    /// A control-plane node whose maintenance would leave fewer than a majority of the
    /// control-plane nodes Ready and schedulable; the message says how many.
    ControlPlaneQuorum(String),
}

impl SkipReason {
    /// The reason as written in `status.round.skippedNodes`: a CamelCase word, a colon, and
    /// what it means.
    pub fn message(&self) -> String {
        match self {
            SkipReason::HeldBy(nm) => format!("HeldBy: NodeMaintenance {nm} holds the node"),
            SkipReason::NotReady => "NotReady: the node is not Ready".to_string(),
            SkipReason::Cordoned => "Cordoned: the node was cordoned by someone else".to_string(),
            SkipReason::NameTaken(nm) => format!(
                "NameTaken: NodeMaintenance {nm} exists and is not this window's (another owner or another node); rename or delete it"
            ),
            SkipReason::ControlPlaneQuorum(why) => format!("ControlPlaneQuorum: {why}"),
        }
    }
}

/// Why the rollout is stalled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    /// CamelCase condition reason: `MaxFailuresExceeded` or `NoNodesSelected`.
    pub reason: &'static str,
    /// Human message.
    pub message: String,
}

/// Counts for `status.round`. They partition the nodes that are selected or in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundCounts {
    /// Selected or in-flight nodes.
    pub total: u32,
    /// Maintained this round.
    pub completed: u32,
    /// Not started yet.
    pub pending: u32,
    /// In flight and not failed.
    pub in_progress: u32,
    /// Failed this round.
    pub failed: u32,
}

/// Condition-level summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// `WindowOpen`.
    pub window_open: bool,
    /// `Reconciling`: present (with this message) only while nodes are in flight.
    pub reconciling: Option<String>,
    /// `Stalled`: present only when stuck.
    pub stalled: Option<Stall>,
    /// Round counts.
    pub counts: RoundCounts,
    /// The budget resolved against the selected nodes.
    pub budget: u32,
    /// Nodes counted against the budget now (after this plan's creates).
    pub unavailable: u32,
    /// The exclusion in force, if any, and what it stopped.
    pub frozen: Option<String>,
    /// Nodes that would have started now but for the health gate.
    pub held_by_gate: Vec<String>,
}

/// What the planner decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutPlan {
    /// NodeMaintenances to create (`AlreadyExists` is success).
    pub create: Vec<NodeMaintenanceToCreate>,
    /// NodeMaintenances to delete (`NotFound` is success).
    pub delete: Vec<NodeMaintenanceToDelete>,
    /// The state to persist in status.
    pub state: RolloutState,
    /// Conditions and counts.
    pub summary: Summary,
    /// Events to emit, once per transition.
    pub events: Vec<RolloutEvent>,
    /// Pending nodes that could not start now, and why.
    pub skipped: Vec<(String, SkipReason)>,
    /// The order in which the nodes still to do would be maintained: the pending nodes of
    /// the running round, or every selected node for the next round (`status.plannedNodes`
    /// with `dryRun`).
    pub planned_order: Vec<String>,
    /// The open window after this plan (`status.currentWindow`), if any.
    pub current_window: Option<WindowOccurrence>,
    /// The next time-based event strictly after `now`: window opening or closing,
    /// `release.after` expiry, `minReadySeconds` soak end, `nodeTimeout`.
    pub requeue_at: Option<DateTime<Utc>>,
}
