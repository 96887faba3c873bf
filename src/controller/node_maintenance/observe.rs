//! Observe: the API reads a reconcile decides from.

use super::decide::{Observed, holding_nodes};
use super::{Context, ReconcileError};
use crate::api::{MaintenancePhase, NodeMaintenance};
use crate::controller::quorum::{CONTROL_PLANE_LABELS, is_control_plane};
use crate::controller::{lease, node};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;

/// Read what [`super::decide::decide`] needs about the live `nm` (already read fresh).
pub(super) async fn observe(
    ctx: &Context,
    nm: NodeMaintenance,
) -> Result<Observed, ReconcileError> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let node_name = nm.spec.node_name.clone();
    let node = nodes
        .get_opt(&node_name)
        .await
        .map_err(|source| node::NodeError::GetNode {
            node: node_name.clone(),
            source,
        })?;
    let mut observed = Observed::of(nm.clone());
    observed.drain = ctx.drains.peek(&nm.uid().unwrap_or_default());
    let Some(node) = node else {
        return Ok(observed);
    };
    observed.lease = lease::read_lease(&ctx.client, &lease::lease_name(&node_name))
        .await?
        .and_then(|l| l.spec);
    let succeeded = nm.status.as_ref().and_then(|s| s.phase) == Some(MaintenancePhase::Succeeded);
    if is_control_plane(&node) && !node::is_held_by_nmo(&node) && !succeeded {
        observed.control_plane = control_plane_nodes(&nodes).await?;
        let all: Vec<NodeMaintenance> = ctx.nms.state().iter().map(|n| (**n).clone()).collect();
        observed.in_maintenance = holding_nodes(&nm, &all);
    }
    if succeeded {
        let pods: Api<Pod> = Api::all(ctx.client.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={node_name}"));
        let list = pods
            .list(&lp)
            .await
            .map_err(|source| ReconcileError::ListPods {
                node: node_name.clone(),
                source,
            })?;
        observed.pods = Some(list.items);
    }
    observed.node = Some(node);
    Ok(observed)
}

/// Every control-plane node (either label), read fresh.
async fn control_plane_nodes(nodes: &Api<Node>) -> Result<Vec<Node>, ReconcileError> {
    let mut found = BTreeMap::new();
    for label in CONTROL_PLANE_LABELS {
        let list = nodes
            .list(&ListParams::default().labels(label))
            .await
            .map_err(|source| ReconcileError::ListNodes { source })?;
        for n in list.items {
            found.insert(n.name_any(), n);
        }
    }
    Ok(found.into_values().collect())
}

/// The other live NodeMaintenances (not being deleted) that name the node of `nm`, read fresh:
/// cleanup restores the node only when there is none.
pub(super) async fn live_siblings(
    ctx: &Context,
    nm: &NodeMaintenance,
) -> Result<Vec<String>, ReconcileError> {
    let all = super::nm_api(ctx)
        .list(&ListParams::default())
        .await
        .map_err(|source| ReconcileError::ListNodeMaintenances { source })?;
    Ok(super::decide::live_siblings(nm, &all.items))
}
