//! Stray marks: a node that carries nmo's marks (its annotation, taints, cordon, label) or a node
//! lease held by node maintenance while no NodeMaintenance names it.
//!
//! A NodeMaintenance's cleanup restores its node before the object goes, so marks outlive their
//! NodeMaintenance only when a write lands after that cleanup: an operator killed (or one that
//! lost the lead) while its `enter_maintenance` patch or lease write was already on the wire.
//! The patch is guarded by the resourceVersion it read, but when the cleanup found the node
//! clean and wrote nothing, that resourceVersion is still current and the late patch applies.
//! Nothing would ever look at the node again, and it would stay cordoned for good: the failure
//! system-upgrade-controller users met after a deleted plan.
//!
//! So the controller watches for it. Every Node change that shows nmo's annotation on a node
//! that no cached NodeMaintenance names queues the node here, and [`sweep`] checks it against
//! the API server, in an order that cannot undo a maintenance starting at the same moment:
//!
//! 1. read the node (resourceVersion `r`) and its lease (resourceVersion `l`);
//! 2. list the NodeMaintenances fresh: if any names the node (being deleted included: its own
//!    cleanup restores the node), leave it;
//! 3. restore the node with the same patch a cleanup sends ([`node::leave_maintenance`]: a
//!    cordon someone else made is kept), guarded by `r`, and delete the lease only if node
//!    maintenance holds it, guarded by `l`.
//!
//! A NodeMaintenance created after step 2 changes the node or the lease before it relies on
//! them, so its writes move `r` or `l` and step 3 fails with 409 instead of undoing them; the
//! sweep then starts over from step 1 and finds it. The same happens on every start of the
//! controller, because its first list of the nodes goes through the same path.

use super::Context;
use crate::api::NodeMaintenance;
use crate::controller::{lease, node, node_conditions};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Resource;
use kube::api::Preconditions;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

/// How many times a sweep starts over after a conflict or a failed request before it waits for
/// the node's next change.
const ATTEMPTS: u32 = 5;

/// What [`sweep`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swept {
    /// The node is gone, or shows no mark and its lease is not held by node maintenance.
    Clean,
    /// A NodeMaintenance names the node: the marks are its own.
    Owned,
    /// The marks (and the lease) were removed.
    Restored,
}

/// Whether `node` shows nmo's marks and `nms` has no NodeMaintenance for it: the node watch
/// queues such a node for [`sweep`]. Cheap, from the caches; the sweep itself reads fresh.
pub fn looks_stray<'a>(node: &Node, mut nms: impl Iterator<Item = &'a NodeMaintenance>) -> bool {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    node::is_held_by_nmo(node) && !nms.any(|nm| nm.spec.node_name == name)
}

/// Check `node_name` against the API server and remove nmo's marks and lease if no
/// NodeMaintenance names it (see the module documentation for the order of the reads).
pub async fn sweep(ctx: &Context, node_name: &str) -> Result<Swept, kube::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match sweep_once(ctx, node_name).await {
            Ok(Some(swept)) => return Ok(swept),
            // A conflict: something changed the node or the lease in between. Look again.
            Ok(None) if attempt < ATTEMPTS => continue,
            Ok(None) => return Ok(Swept::Owned),
            Err(err) if attempt < ATTEMPTS && crate::controller::transient_error(&err) => {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// One pass; `Ok(None)` when a guarded write met a conflict.
async fn sweep_once(ctx: &Context, node_name: &str) -> Result<Option<Swept>, kube::Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), lease::LEASE_NAMESPACE);
    let lease_name = lease::lease_name(node_name);
    let holder = ctx.config().lease_holder;

    // 1. The node and its lease, before the NodeMaintenances.
    let node = nodes.get_opt(node_name).await?;
    let patch = node.as_ref().and_then(node::leave_maintenance);
    let lease = leases.get_opt(&lease_name).await?.filter(|l| {
        l.spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            .is_some_and(|h| h == holder)
    });
    if patch.is_none() && lease.is_none() {
        return Ok(Some(Swept::Clean));
    }

    // 2. Any NodeMaintenance for the node, read fresh.
    let nms: Api<NodeMaintenance> = Api::all(ctx.client.clone());
    let all = nms.list(&ListParams::default()).await?;
    if all.items.iter().any(|nm| nm.spec.node_name == node_name) {
        return Ok(Some(Swept::Owned));
    }

    // 3. Guarded writes.
    if let (Some(node), Some(mut patch)) = (node, patch) {
        patch["metadata"]["resourceVersion"] = json!(node.metadata.resource_version);
        let params = PatchParams {
            field_manager: Some(node::FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        match nodes.patch(node_name, &params, &Patch::Merge(&patch)).await {
            Ok(after) => {
                tracing::warn!(node = %node_name, "removed nmo's marks from a node no NodeMaintenance names");
                if let Err(err) =
                    node_conditions::clear_lifecycle_conditions(&ctx.client, node_name).await
                {
                    tracing::warn!(node = %node_name, error = %err, "could not clear the maintenance conditions of a swept node");
                }
                ctx.publish(
                    &after.object_ref(&()),
                    super::reasons::UNCORDON_NODE,
                    format!(
                        "Node {node_name} carried node maintenance marks with no NodeMaintenance naming it (a write that landed after its cleanup); they were removed"
                    ),
                    true,
                )
                .await;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(None),
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(err) => return Err(err),
        }
    }
    if let Some(lease) = lease {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: lease.metadata.resource_version.clone(),
                uid: lease.metadata.uid.clone(),
            }),
            ..Default::default()
        };
        match leases.delete(&lease_name, &params).await {
            Ok(_) => {
                tracing::warn!(node = %node_name, "released a node lease no NodeMaintenance holds")
            }
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(None),
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(err) => return Err(err),
        }
    }
    Ok(Some(Swept::Restored))
}

/// Run the sweeps queued by the node watch, one node at a time, until the queue closes.
pub async fn run(
    ctx: std::sync::Arc<Context>,
    mut queued: futures::channel::mpsc::UnboundedReceiver<String>,
) {
    use futures::StreamExt;
    while let Some(node_name) = queued.next().await {
        match sweep(&ctx, &node_name).await {
            Ok(swept) => tracing::debug!(node = %node_name, ?swept, "stray marks checked"),
            Err(err) => {
                tracing::warn!(node = %node_name, error = %err, "could not check a node for stray maintenance marks; the next change of the node checks again")
            }
        }
    }
}
