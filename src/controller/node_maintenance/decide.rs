//! Decide (pure): what one reconcile of a NodeMaintenance does, from what it observed and
//! `now`. Also the pure rules it is made of: [`lease_verdict`] (when a failed lease write means
//! the lease is lost), [`holding_nodes`] (which other nodes count as in maintenance for the
//! control-plane quorum), [`drift`] (whether a `Succeeded` node has left maintenance) and
//! [`backoff`] (error requeues).

use super::NodeMaintenanceConfig;
use super::drains::DrainProgress;
use super::status::Stage;
use crate::api::conditions::{self, ConditionType};
use crate::api::{MaintenancePhase, NodeMaintenance};
use crate::controller::lease::{self, LeaseDecision};
use crate::controller::node;
use crate::controller::quorum;
use crate::drain::{DrainReport, PodKey, classify, tolerates_unschedulable};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::api::core::v1::{Node, Pod};
use std::collections::BTreeSet;
use std::time::Duration;

impl Observed {
    /// `nm` and nothing else observed yet.
    pub fn of(nm: NodeMaintenance) -> Self {
        Observed {
            nm,
            node: None,
            lease: None,
            control_plane: Vec::new(),
            in_maintenance: BTreeSet::new(),
            pods: None,
            drain: None,
        }
    }
}

/// What a reconcile of a live NodeMaintenance read before deciding.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The NodeMaintenance, read fresh.
    pub nm: NodeMaintenance,
    /// Its node (None: it does not exist).
    pub node: Option<Node>,
    /// The node lease as read (None: it does not exist).
    pub lease: Option<LeaseSpec>,
    /// Every control-plane node, read only when the node is a control-plane node that is not
    /// yet in maintenance (otherwise empty).
    pub control_plane: Vec<Node>,
    /// Other nodes that count as in maintenance for the quorum ([`holding_nodes`]).
    pub in_maintenance: BTreeSet<String>,
    /// The pods bound to the node, listed (by `spec.nodeName`) only while `Succeeded`.
    pub pods: Option<Vec<Pod>>,
    /// What the drain task of this NodeMaintenance said last, if one exists.
    pub drain: Option<DrainProgress>,
}

/// What to do with the drain once the node is held and marked.
#[derive(Clone, Debug, PartialEq)]
pub enum DrainStep {
    /// No drain runs: start one (resuming from the counts in status).
    Start,
    /// A drain runs and said this last.
    Progress(Option<DrainReport>),
    /// The drain finished: `Succeeded`; the finished task is forgotten.
    Completed(DrainReport),
    /// The drain ended with an error: forget it, report, start again later.
    Restart(String),
    /// `Succeeded`, but the node drifted: back to `Running` and a new drain from scratch.
    Drift(String),
    /// `Succeeded` and still so: watch the node's pods for drift.
    Done,
}

/// What a reconcile does, in order: hold the lease, mark the node, then the drain step.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// The lease was lost and the node released: final until the object is deleted.
    Finished,
    /// Stop any drain, write `stage`, come back at `retry_at` (or on a change).
    Wait {
        /// What to report.
        stage: Stage,
        /// When to look again (clock time).
        retry_at: DateTime<Utc>,
    },
    /// A lease renewal failed a moment ago: wait out its backoff (our own status write woke
    /// us), touching nothing.
    Pause {
        /// When to try again (clock time).
        retry_at: DateTime<Utc>,
    },
    /// Another holder took our lease: release the node and fail.
    Release {
        /// What to report.
        stage: Stage,
    },
    /// Maintain the node.
    Maintain {
        /// The lease write (`Keep`: none).
        lease: LeaseDecision,
        /// The drain step.
        drain: DrainStep,
    },
}

fn phase(nm: &NodeMaintenance) -> Option<MaintenancePhase> {
    nm.status.as_ref().and_then(|s| s.phase)
}

fn reconciling_reason(nm: &NodeMaintenance) -> Option<String> {
    let conds = nm.status.as_ref()?.conditions.as_deref()?;
    conditions::find(conds, ConditionType::Reconciling).map(|c| c.reason.clone())
}

/// Whether the lease was lost for good earlier (the node was released): `Failed` with a
/// `Stalled` condition of reason `LeaseLost`.
pub fn lease_was_lost(nm: &NodeMaintenance) -> bool {
    let Some(conds) = nm.status.as_ref().and_then(|s| s.conditions.as_deref()) else {
        return false;
    };
    phase(nm) == Some(MaintenancePhase::Failed)
        && conditions::find(conds, ConditionType::Stalled).is_some_and(|c| c.reason == "LeaseLost")
}

fn std_to_chrono(d: Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or_else(|_| ChronoDuration::hours(1))
}

/// Decide what one reconcile of `observed.nm` does at `now`.
pub fn decide(observed: &Observed, now: DateTime<Utc>, config: &NodeMaintenanceConfig) -> Plan {
    let nm = &observed.nm;
    if lease_was_lost(nm) {
        return Plan::Finished;
    }
    let Some(node) = &observed.node else {
        return Plan::Wait {
            stage: Stage::NodeMissing,
            retry_at: now + std_to_chrono(config.missing_node_retry),
        };
    };
    let held = node::is_held_by_nmo(node);
    let succeeded = phase(nm) == Some(MaintenancePhase::Succeeded);

    // Quorum first: a refused control-plane node is not even leased. A node already in
    // maintenance keeps it, whatever happened to the quorum since.
    if !held
        && !succeeded
        && let Err(violation) = quorum::check_quorum(
            &nm.spec.node_name,
            &observed.control_plane,
            &observed.in_maintenance,
        )
    {
        return Plan::Wait {
            stage: Stage::QuorumWouldBeLost {
                message: violation.to_string(),
            },
            retry_at: now + std_to_chrono(config.quorum_retry),
        };
    }

    let duration = std_to_chrono(config.lease_duration);
    let lease = lease::decide_lease(observed.lease.as_ref(), &config.lease_holder, duration, now);
    if let LeaseDecision::HeldByOther { holder, expires } = lease {
        // We had the node (our marks are on it, and it got past the quorum): the lease was
        // taken over, which only happens once ours lapsed.
        if held && (succeeded || phase(nm) == Some(MaintenancePhase::Running)) {
            return Plan::Release {
                stage: Stage::LeaseLost {
                    why: format!("the lease was taken over by {holder}"),
                    count: nm
                        .status
                        .as_ref()
                        .and_then(|s| s.error_on_lease_count)
                        .unwrap_or(0),
                },
            };
        }
        let retry_at = (now + std_to_chrono(config.lease_retry)).min(expires);
        return Plan::Wait {
            stage: Stage::LeaseHeldByOther { holder, expires },
            retry_at,
        };
    }

    let failures = nm
        .status
        .as_ref()
        .and_then(|s| s.error_on_lease_count)
        .unwrap_or(0);
    let last_try = nm
        .status
        .as_ref()
        .and_then(|s| s.last_update.as_ref())
        .map(crate::api::from_time);
    if let (Ok(attempt @ 1..), Some(last_try), LeaseDecision::Take { .. } | LeaseDecision::Create) =
        (u32::try_from(failures), last_try, &lease)
    {
        let wait = backoff(
            attempt,
            config.lease_retry,
            config.error_retry_max,
            seed_of(&nm.metadata.name.clone().unwrap_or_default()),
        );
        let mut retry_at = last_try + std_to_chrono(wait);
        if let Some(renewed) = lease::last_renewal(observed.lease.as_ref(), &config.lease_holder) {
            retry_at = retry_at.min(renewed + duration);
        }
        if retry_at > now {
            return Plan::Pause { retry_at };
        }
    }

    let drain = if succeeded {
        match drift(node, observed.pods.as_deref().unwrap_or(&[])) {
            Some(what) => DrainStep::Drift(what),
            None => DrainStep::Done,
        }
    } else {
        match &observed.drain {
            None => DrainStep::Start,
            Some(DrainProgress::Running(r)) => {
                DrainStep::Progress(Some(r.clone()).filter(|r| r.listed))
            }
            Some(DrainProgress::Complete(r)) => DrainStep::Completed(r.clone()),
            Some(DrainProgress::Ended(e)) => DrainStep::Restart(e.clone()),
        }
    };
    Plan::Maintain { lease, drain }
}

/// Whether a node whose maintenance `Succeeded` has drifted out of it, and how: a mark of
/// maintenance gone (cordon, a taint, the label), or a pod bound to it that a drain would
/// evict. Pods that tolerate the unschedulable taint chose to run on cordoned nodes and are
/// not drift (a drain evicts such a pod once, see `DrainState`).
pub fn drift(node: &Node, pods: &[Pod]) -> Option<String> {
    if !node::is_in_maintenance(node) {
        return Some(node::missing_marks(node).join(", "));
    }
    let mut landed: Vec<PodKey> = pods
        .iter()
        .filter(|p| classify(p).blocks_completion() && !tolerates_unschedulable(p))
        .map(PodKey::of)
        .collect();
    landed.sort();
    match landed.as_slice() {
        [] => None,
        [one] => Some(format!("pod {one} is bound to it")),
        [first, rest @ ..] => Some(format!(
            "pod {first} and {} more are bound to it",
            rest.len()
        )),
    }
}

/// The other nodes that count as in maintenance when the quorum is checked for `this`: the
/// nodes of the other live NodeMaintenances that have got past the quorum (`Succeeded`, or
/// draining), and of those created before `this` (ties broken by name), which go first. So two
/// NodeMaintenances of control-plane nodes created together never both cordon, and never
/// both wait for each other. `Failed` ones hold nothing, and neither do those refused by the
/// quorum themselves (Reconciling reason `QuorumWouldBeLost`): they never cordoned, and
/// counting them would let a refused one block one that is allowed. `this`'s own node is never
/// counted.
///
/// This reads the cache, which may lag: a refused one may have just passed and cordoned. The
/// quorum is therefore checked on control-plane nodes read fresh, where such a node shows
/// cordoned, and the reconciler serialises "check + cordon" of control-plane nodes
/// (`Context::quorum_guard`), so two checks never both pass on the same reads.
pub fn holding_nodes(this: &NodeMaintenance, all: &[NodeMaintenance]) -> BTreeSet<String> {
    let key = |nm: &NodeMaintenance| {
        (
            nm.metadata.creation_timestamp.as_ref().map(|t| t.0),
            nm.metadata.name.clone(),
        )
    };
    all.iter()
        .filter(|o| o.metadata.uid != this.metadata.uid)
        .filter(|o| o.spec.node_name != this.spec.node_name)
        .filter(|o| phase(o) != Some(MaintenancePhase::Failed))
        .filter(|o| reconciling_reason(o).as_deref() != Some("QuorumWouldBeLost"))
        .filter(|o| {
            phase(o) == Some(MaintenancePhase::Succeeded)
                || matches!(
                    reconciling_reason(o).as_deref(),
                    Some("Draining" | "Drifted")
                )
                || key(o) < key(this)
        })
        .map(|o| o.spec.node_name.clone())
        .collect()
}

/// What a failed or successful write of our lease means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseVerdict {
    /// Written (or still fresh): we hold it; the failure count starts again.
    Held,
    /// The write failed, but the lease was never ours (first acquisition, or after another
    /// holder): nothing is counted; retry.
    NotYetHeld,
    /// Renewing our lease failed, but it is still valid: the node stays in maintenance.
    Failing {
        /// Consecutive failed renewals including this one.
        count: i32,
    },
    /// Our last successful renewal has expired and renewing kept failing: the lease is lost.
    Lost {
        /// Consecutive failed renewals including this one.
        count: i32,
    },
}

/// Decide what a lease write `result` means. `last_renewed` is our last successful renewal as
/// the lease object shows it (its `renewTime` while we are the holder, None otherwise);
/// `consecutive_failures` is `errorOnLeaseCount` from status.
///
/// The lease is lost only when our last renewal has really expired (`last_renewed + duration
/// <= now`) *and* more than `max` renewals in a row have failed (medik8s's
/// `errorOnLeaseCount > 3`). Failures while the lease is still valid are counted but release
/// nothing; failures before it was ever ours are not counted.
pub fn lease_verdict(
    last_renewed: Option<DateTime<Utc>>,
    duration: ChronoDuration,
    consecutive_failures: i32,
    max: i32,
    now: DateTime<Utc>,
    result: Result<(), ()>,
) -> LeaseVerdict {
    if result.is_ok() {
        return LeaseVerdict::Held;
    }
    let Some(renewed) = last_renewed else {
        return LeaseVerdict::NotYetHeld;
    };
    let count = consecutive_failures.saturating_add(1);
    if renewed + duration <= now && count > max {
        LeaseVerdict::Lost { count }
    } else {
        LeaseVerdict::Failing { count }
    }
}

/// The error requeue delay of retry `attempt` of one object: the shared
/// [`crate::controller::backoff::backoff`] with a jitter drawn from `jitter_seed` and the
/// attempt, so one object's retries are reproducible and different objects retry apart.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, jitter_seed: u64) -> Duration {
    crate::controller::backoff::backoff(
        attempt,
        base,
        cap,
        crate::controller::backoff::seeded_jitter(jitter_seed, attempt),
    )
}

/// A stable seed for [`backoff`] from an object's name.
pub fn seed_of(name: &str) -> u64 {
    crate::controller::backoff::seed_of(name)
}

/// The names of the other live NodeMaintenances (not being deleted, not `this`, and holding
/// nmo's finalizer) that name the node of `this`. Cleanup of `this` leaves the node, its marks
/// and the lease to them while there is any: only the last one restores the node.
///
/// One without the finalizer yet (created moments ago, not reconciled) is no heir: deleted
/// before nmo reconciles it, it goes at once with no cleanup of its own, and the node kept for
/// it would stay marked. So the node is restored, and such a NodeMaintenance puts it into
/// maintenance again at its first reconcile. Found by the chaos harness (seed 11769).
pub fn live_siblings(this: &NodeMaintenance, all: &[NodeMaintenance]) -> Vec<String> {
    let mut names: Vec<String> = all
        .iter()
        .filter(|o| o.metadata.uid != this.metadata.uid)
        .filter(|o| o.spec.node_name == this.spec.node_name)
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .filter(|o| {
            o.metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == crate::api::FINALIZER)
        })
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    names.sort();
    names
}
