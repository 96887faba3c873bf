//! Report (pure): the status a NodeMaintenance should show for the [`Stage`] a reconcile
//! reached, the Events a status transition calls for, and the patches that write them.

use super::super::lease;
use crate::api::conditions::{self, ConditionStatus, ConditionType};
use crate::api::{MaintenancePhase, NodeMaintenance, NodeMaintenanceStatus, PodReference};
use crate::drain::DrainReport;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};

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
    /// Maintenance of this control-plane node would leave too few control-plane nodes Ready and
    /// schedulable: the QuorumViolation message.
    QuorumWouldBeLost {
        /// Why.
        message: String,
    },
    /// Taking the node lease failed before it was ever ours: not counted, retried.
    LeaseNotAcquired {
        /// The error.
        error: String,
    },
    /// Renewing our (still valid) lease failed; `count` consecutive failures so far.
    LeaseFailing {
        /// The error.
        error: String,
        /// Consecutive failures including this one.
        count: i32,
    },
    /// Our lease expired after failed renewals, or another holder took it: the node was
    /// released.
    LeaseLost {
        /// What happened, for `lastError`.
        why: String,
        /// Consecutive failed renewals.
        count: i32,
    },
    /// The node drifted out of maintenance while `Succeeded` (uncordoned, a taint or the
    /// label removed, a pod bound to it): it is put back and drained again.
    Drifted {
        /// What drifted.
        what: String,
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

impl Stage {
    /// The `category` of `nmo_failures_total` when this stage fails the NodeMaintenance.
    pub fn failure_category(&self) -> Option<&'static str> {
        match self {
            Stage::NodeMissing => Some("NodeNotFound"),
            Stage::LeaseLost { .. } => Some("LeaseLost"),
            _ => None,
        }
    }
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
///
/// `errorOnLeaseCount` counts consecutive failed renewals of our lease: only `renewed` (this
/// reconcile renewed or took the lease) resets it, so a progress write of the drain task, which
/// knows nothing of the lease, leaves it alone.
pub fn desired_status(
    current: &NodeMaintenanceStatus,
    stage: &Stage,
    renewed: bool,
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
    if renewed || s.error_on_lease_count.is_none() {
        // No failed renewal counted yet is 0, as medik8s shows it.
        s.error_on_lease_count = Some(0);
    }
    match stage {
        Stage::QuorumWouldBeLost { message } => {
            s.phase = Some(MaintenancePhase::Running);
            s.last_error = Some(message.clone());
            conds = set(&conds, Ready, False, "QuorumWouldBeLost", message);
            conds = set(&conds, Reconciling, True, "QuorumWouldBeLost", message);
            conds = conditions::remove(&conds, Stalled);
        }
        Stage::LeaseNotAcquired { error } => {
            let message = format!("failed to take the node lease: {error}");
            s.last_error = Some(message.clone());
            // A `Succeeded` node is still cordoned and drained; only the lease (deleted by
            // someone, say) is being taken again. It stays `Succeeded`, so no second
            // `SucceedMaintenance` follows without a new completion. Otherwise (first
            // acquisition, or a `Failed` one whose node appeared) it is `Running`: keeping
            // `Failed` would announce a new failure for what is a retry.
            if s.phase != Some(MaintenancePhase::Succeeded) {
                s.phase = Some(MaintenancePhase::Running);
                conds = set(&conds, Ready, False, "LeaseError", &message);
                conds = set(&conds, Reconciling, True, "LeaseError", &message);
                conds = conditions::remove(&conds, Stalled);
            }
        }
        Stage::Drifted { what } => {
            let message = format!(
                "node {node} drifted out of maintenance ({what}): putting it back and draining again"
            );
            s.phase = Some(MaintenancePhase::Running);
            s.drain_progress = Some(0);
            s.last_error = None;
            conds = set(&conds, Ready, False, "Drifted", &message);
            conds = set(&conds, Reconciling, True, "Drifted", &message);
            conds = conditions::remove(&conds, Stalled);
        }
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
        Stage::LeaseLost { why, count } => {
            let message = format!("lost the node lease, released the node: {why}");
            s.phase = Some(MaintenancePhase::Failed);
            s.error_on_lease_count = Some(*count);
            s.last_error = Some(message.clone());
            conds = set(&conds, Ready, False, "LeaseLost", &message);
            conds = set(&conds, Stalled, True, "LeaseLost", &message);
            conds = conditions::remove(&conds, Reconciling);
        }
        Stage::Draining { .. } | Stage::DrainRestarting { .. } => {
            s.phase = Some(MaintenancePhase::Running);
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
                        .is_some_and(|c| c.reason == "Draining" || c.reason == "Drifted");
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
            s.drain_progress = Some(100);
            s.pending_pods = Some(Vec::new());
            s.pending_pods_refs = Some(Vec::new());
            if let Some(r) = drain.as_ref().filter(|r| r.listed) {
                s.total_pods = count(r.total_pods);
                s.eviction_pods = count(r.to_leave);
            }
            s.last_error = None;
            let mut message = format!("node {node} is cordoned, tainted and drained");
            if let Some(r) = drain.as_ref().filter(|r| !r.left.is_empty()) {
                let names: Vec<String> = r.left.iter().map(|p| p.to_string()).collect();
                message.push_str(&format!(
                    "; left on it, evicted once and back (they tolerate the unschedulable taint): {}",
                    names.join(", ")
                ));
            }
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
