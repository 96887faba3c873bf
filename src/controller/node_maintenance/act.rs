//! Act and report: carry out a [`Plan`], write the status it calls for and publish Events.

use super::decide::{self, DrainStep, LeaseVerdict, Plan, backoff, lease_verdict, seed_of};
use super::drains::{start_drain, watch_pods};
use super::status::{
    MaintenanceEvent, Stage, desired_status, events_for, node_owner_references,
    stage_still_applies, status_merge_patch,
};
use super::{Context, ReconcileError, nm_api, real, real_until, reasons};
use crate::api::{NodeMaintenance, NodeMaintenanceStatus};
use crate::controller::lease::{self, LeaseDecision, LeaseHold, Released};
use crate::controller::node::{self, NodePatched};
use crate::controller::node_conditions;
use crate::drain::DrainSeed;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Write the status for `stage` if it differs, then publish the Events the transition calls
/// for. The patch carries the resourceVersion read, so of two writers (the reconciler and the
/// drain task) only one makes a transition and emits its Event; the other re-reads and retries
/// only if its stage still applies ([`stage_still_applies`]). Returns the status now in effect
/// (`None`: the object is gone, or moved on and is left to the next reconcile).
pub(super) async fn write_status(
    ctx: &Context,
    nm: &NodeMaintenance,
    stage: &Stage,
    renewed: bool,
) -> Result<Option<NodeMaintenanceStatus>, ReconcileError> {
    let name = nm.name_any();
    let mut current = nm.clone();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_write_status(ctx, &current, stage, renewed).await {
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
    renewed: bool,
) -> Result<NodeMaintenanceStatus, kube::Error> {
    let old = nm.status.clone().unwrap_or_default();
    let new = desired_status(
        &old,
        stage,
        renewed,
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
                if let Some(category) = stage.failure_category() {
                    ctx.telemetry.metrics.failed(category);
                }
                ctx.publish(&reference, reasons::FAILED_MAINTENANCE, message, true)
                    .await
            }
        }
    }
    Ok(new)
}

pub(super) async fn set_node_owner(
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

/// Carry out `plan` for the live NodeMaintenance `observed.nm`.
pub(super) async fn act(
    ctx: &Arc<Context>,
    observed: decide::Observed,
    plan: Plan,
) -> Result<Action, ReconcileError> {
    let config = &ctx.config();
    let nm = observed.nm;
    let uid = nm.uid().unwrap_or_default();
    let node_name = nm.spec.node_name.clone();
    let (lease_decision, step) = match plan {
        Plan::Finished => {
            ctx.drains.cancel(&uid);
            return Ok(Action::await_change());
        }
        Plan::Wait { stage, retry_at } => {
            ctx.drains.cancel(&uid);
            write_status(ctx, &nm, &stage, false).await?;
            return Ok(Action::requeue(real_until(ctx, retry_at)));
        }
        Plan::Pause { retry_at } => return Ok(Action::requeue(real_until(ctx, retry_at))),
        Plan::Release { stage } => {
            release_node(ctx, &nm).await?;
            write_status(ctx, &nm, &stage, false).await?;
            return Ok(Action::await_change());
        }
        Plan::Maintain { lease, drain } => (lease, drain),
    };
    let Some(node) = observed.node else {
        return Ok(Action::await_change());
    };
    let nm = set_node_owner(ctx, nm, &node).await?;

    // Hold the lease.
    let duration = chrono::Duration::from_std(config.lease_duration)
        .unwrap_or_else(|_| chrono::Duration::hours(1));
    let now = ctx.clock.now();
    let (renewed, renew_at) = match lease_decision {
        LeaseDecision::Keep { renew_at } => (false, renew_at),
        _ => {
            let current = lease::read_lease(&ctx.client, &lease::lease_name(&node_name)).await?;
            match lease::write_lease(
                &ctx.client,
                &node,
                &config.lease_holder,
                duration,
                now,
                current,
            )
            .await
            {
                Ok(LeaseHold::Ours { renew_at }) => (true, renew_at),
                Ok(LeaseHold::Theirs { holder, expires }) => {
                    // Taken between our read and our write: decided again on the next round.
                    let stage = Stage::LeaseHeldByOther { holder, expires };
                    write_status(ctx, &nm, &stage, false).await?;
                    return Ok(Action::requeue(
                        real(ctx, config.lease_retry).min(real_until(ctx, expires)),
                    ));
                }
                Err(err) => return lease_failed(ctx, &nm, &observed.lease, err).await,
            }
        }
    };

    // Mark the node.
    let mut step = step;
    match node::patch_node(&ctx.client, &node_name, node::enter_maintenance).await? {
        NodePatched::Missing => {
            ctx.drains.cancel(&uid);
            write_status(ctx, &nm, &Stage::NodeMissing, renewed).await?;
            return Ok(Action::requeue(real(ctx, config.missing_node_retry)));
        }
        // The node drifted after we observed it: the same as drift observed. (A patch that
        // only adds a record, as after an upgrade, is not drift.)
        NodePatched::Changed { before, .. }
            if step == DrainStep::Done && !node::missing_marks(&before).is_empty() =>
        {
            step = DrainStep::Drift(node::missing_marks(&before).join(", "));
        }
        _ => {}
    }

    // Drain.
    let status = nm.status.clone().unwrap_or_default();
    let stage = match step {
        DrainStep::Start => {
            let seed = DrainSeed {
                total_pods: status.total_pods.and_then(|n| usize::try_from(n).ok()),
                to_leave: status.eviction_pods.and_then(|n| usize::try_from(n).ok()),
            };
            ctx.drains.unwatch(&uid);
            ctx.drains.start(&uid, start_drain(ctx, &nm, seed));
            Stage::Draining { drain: None }
        }
        DrainStep::Progress(drain) => Stage::Draining { drain },
        DrainStep::Completed(report) => {
            ctx.drains.forget_drain(&uid);
            Stage::Drained {
                drain: Some(report),
            }
        }
        DrainStep::Restart(error) => {
            ctx.drains.forget_drain(&uid);
            Stage::DrainRestarting { error }
        }
        DrainStep::Drift(what) => {
            tracing::info!(node = %node_name, nm = %nm.name_any(), %what, "drifted out of maintenance");
            ctx.drains.cancel(&uid);
            let written = write_status(ctx, &nm, &Stage::Drifted { what }, renewed).await?;
            if written.is_some() {
                // A new drain from scratch: the counts of the last one are over.
                ctx.drains
                    .start(&uid, start_drain(ctx, &nm, DrainSeed::default()));
            }
            return Ok(Action::requeue(
                real_until(ctx, renew_at).min(Duration::from_secs(60)),
            ));
        }
        DrainStep::Done => {
            ctx.drains.forget_drain(&uid);
            ctx.drains.watch(&uid, watch_pods(ctx, &nm));
            Stage::Drained { drain: None }
        }
    };
    write_status(ctx, &nm, &stage, renewed).await?;
    // KEP-5683 lifecycle conditions on the Node, after the status so a failed patch is retried
    // without holding up what the NodeMaintenance shows.
    let progress = match stage {
        Stage::Drained { .. } => node_conditions::Progress::Drained,
        _ => node_conditions::Progress::Draining,
    };
    node_conditions::set_lifecycle_conditions(
        &ctx.client,
        &node,
        progress,
        lifecycle_reason(&nm),
        &nm.name_any(),
        ctx.clock.now(),
    )
    .await?;
    let renew = real_until(ctx, renew_at);
    Ok(Action::requeue(match stage {
        Stage::DrainRestarting { .. } => real(ctx, config.error_retry),
        // The drain task's status writes wake us; this is only a safety net.
        Stage::Draining { .. } => renew.min(Duration::from_secs(60)),
        _ => renew,
    }))
}

/// A lease write failed: [`lease_verdict`] says whether that is counted, and whether the lease
/// is lost.
async fn lease_failed(
    ctx: &Arc<Context>,
    nm: &NodeMaintenance,
    before: &Option<k8s_openapi::api::coordination::v1::LeaseSpec>,
    err: lease::LeaseError,
) -> Result<Action, ReconcileError> {
    let config = &ctx.config();
    let name = nm.name_any();
    let duration = chrono::Duration::from_std(config.lease_duration)
        .unwrap_or_else(|_| chrono::Duration::hours(1));
    let failures = nm
        .status
        .as_ref()
        .and_then(|s| s.error_on_lease_count)
        .unwrap_or(0);
    let last = lease::last_renewal(before.as_ref(), &config.lease_holder);
    let verdict = lease_verdict(
        last,
        duration,
        failures,
        config.max_lease_errors,
        ctx.clock.now(),
        Err(()),
    );
    tracing::warn!(%name, error = %err, ?verdict, "failed to take or renew the node lease");
    match verdict {
        LeaseVerdict::Held => Ok(Action::await_change()),
        LeaseVerdict::NotYetHeld => {
            let stage = Stage::LeaseNotAcquired {
                error: err.to_string(),
            };
            write_status(ctx, nm, &stage, false).await?;
            // Not an error of ours to count: the per-object error backoff paces it.
            Err(ReconcileError::Lease(err))
        }
        LeaseVerdict::Failing { count } => {
            let stage = Stage::LeaseFailing {
                error: err.to_string(),
                count,
            };
            write_status(ctx, nm, &stage, false).await?;
            let attempt = u32::try_from(count).unwrap_or(1);
            let mut wait = backoff(
                attempt,
                config.lease_retry,
                config.error_retry_max,
                seed_of(&name),
            );
            if let Some(last) = last {
                // Never sleep past the expiry of the lease we still hold.
                let left = (last + duration - ctx.clock.now())
                    .to_std()
                    .unwrap_or_default();
                wait = wait.min(left);
            }
            Ok(Action::requeue(real(ctx, wait)))
        }
        LeaseVerdict::Lost { count } => {
            release_node(ctx, nm).await?;
            let stage = Stage::LeaseLost {
                why: format!(
                    "our last renewal expired and {count} renewals in a row failed: {err}"
                ),
                count,
            };
            write_status(ctx, nm, &stage, false).await?;
            Ok(Action::await_change())
        }
    }
}

/// The KEP-5683 condition reason: `MaintenanceWindow` for a generated NodeMaintenance,
/// `NodeMaintenance` for an ad-hoc one.
fn lifecycle_reason(nm: &NodeMaintenance) -> &'static str {
    if nm.labels().contains_key(crate::api::WINDOW_LABEL) {
        node_conditions::REASON_WINDOW
    } else {
        node_conditions::REASON_AD_HOC
    }
}

/// Stop the drain, take the node out of maintenance and release the lease (if still ours).
async fn release_node(ctx: &Context, nm: &NodeMaintenance) -> Result<(), ReconcileError> {
    let uid = nm.uid().unwrap_or_default();
    let node_name = &nm.spec.node_name;
    ctx.drains.cancel(&uid);
    node::patch_node(&ctx.client, node_name, node::leave_maintenance).await?;
    node_conditions::clear_lifecycle_conditions(&ctx.client, node_name).await?;
    if let Err(e) = lease::release_lease(&ctx.client, node_name, &ctx.config().lease_holder).await {
        tracing::warn!(nm = %nm.name_any(), error = %e, "could not release the node lease");
    }
    Ok(())
}

/// Cleanup of a NodeMaintenance being deleted. The node is restored and the lease released only
/// when no other live NodeMaintenance names the node; otherwise they are left to it, and it is
/// woken to check the node.
pub(super) async fn cleanup(
    nm: Arc<NodeMaintenance>,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let uid = nm.uid().unwrap_or_default();
    ctx.drains.cancel(&uid);
    let node_name = &nm.spec.node_name;
    let siblings = super::observe::live_siblings(ctx, &nm).await?;
    if !siblings.is_empty() {
        tracing::info!(node = %node_name, nm = %nm.name_any(), ?siblings, "node left in maintenance for the other NodeMaintenances");
        for name in &siblings {
            let _ = ctx.wake.unbounded_send(ObjectRef::new(name));
        }
        ctx.publish(
            &nm.object_ref(&()),
            reasons::REMOVED_MAINTENANCE,
            format!(
                "Removed the node maintenance of node {node_name}; the node stays in maintenance for {}",
                siblings.join(", ")
            ),
            false,
        )
        .await;
        return Ok(Action::await_change());
    }
    let restored = node::patch_node(&ctx.client, node_name, node::leave_maintenance).await?;
    if !matches!(restored, NodePatched::Missing) {
        node_conditions::clear_lifecycle_conditions(&ctx.client, node_name).await?;
    }
    if let NodePatched::Changed { after: node, .. } = restored {
        ctx.publish(
            &node.object_ref(&()),
            reasons::UNCORDON_NODE,
            format!("Node {node_name} was put back after maintenance"),
            false,
        )
        .await;
    }
    match lease::release_lease(&ctx.client, node_name, &ctx.config().lease_holder).await? {
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
    // NodeMaintenances refused for the control-plane quorum may go ahead now.
    ctx.wake_quorum_waiters();
    Ok(Action::await_change())
}
