//! The control-plane quorum rule of admission (pure): maintenance of a control-plane node is
//! refused when it would leave fewer than a majority of the control-plane nodes Ready and
//! schedulable. It works from labels and conditions only, so on any Kubernetes, not only on
//! OpenShift. The webhook supplies the nodes and the NodeMaintenances that exist.

use k8s_openapi::api::core::v1::Node;
use std::collections::BTreeSet;

/// Labels that mark a control-plane node (current and legacy).
pub const CONTROL_PLANE_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// Whether `node` is a control-plane node.
pub fn is_control_plane(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .is_some_and(|l| CONTROL_PLANE_LABELS.iter().any(|k| l.contains_key(*k)))
}

/// Whether `node` is Ready and schedulable.
pub fn is_available(node: &Node) -> bool {
    let schedulable = !node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    schedulable && ready
}

/// Why maintenance of a control-plane node is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "can't put control-plane node {node} into maintenance: it would leave {left} of {total} control-plane nodes Ready and schedulable, fewer than the quorum of {quorum}"
)]
pub struct QuorumViolation {
    /// The node asked for.
    pub node: String,
    /// Control-plane nodes available after the maintenance.
    pub left: usize,
    /// Control-plane nodes in the cluster.
    pub total: usize,
    /// A majority of `total`.
    pub quorum: usize,
}

/// Check that taking `target` into maintenance keeps a majority of control-plane nodes Ready
/// and schedulable. `in_maintenance` names the nodes already under a NodeMaintenance; they
/// count as unavailable whatever their state. Nodes that are not control-plane nodes always
/// pass.
pub fn check_quorum(
    target: &str,
    nodes: &[Node],
    in_maintenance: &BTreeSet<String>,
) -> Result<(), QuorumViolation> {
    let control_plane: Vec<&Node> = nodes.iter().filter(|n| is_control_plane(n)).collect();
    let name = |n: &Node| n.metadata.name.clone().unwrap_or_default();
    if !control_plane.iter().any(|n| name(n) == target) {
        return Ok(());
    }
    let total = control_plane.len();
    let quorum = total / 2 + 1;
    let left = control_plane
        .iter()
        .filter(|n| {
            let n_name = name(n);
            n_name != target && !in_maintenance.contains(&n_name) && is_available(n)
        })
        .count();
    if left >= quorum {
        Ok(())
    } else {
        Err(QuorumViolation {
            node: target.to_string(),
            left,
            total,
            quorum,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cp(name: &str, ready: bool) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    [(CONTROL_PLANE_LABELS[0].to_string(), String::new())]
                        .into_iter()
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn worker(name: &str) -> Node {
        let mut n = cp(name, true);
        n.metadata.labels = None;
        n
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    #[test]
    fn one_of_three_healthy_control_plane_nodes_may_go() {
        let nodes = [cp("a", true), cp("b", true), cp("c", true)];
        assert_eq!(check_quorum("a", &nodes, &none()), Ok(()));
    }

    #[test]
    fn a_second_of_three_is_refused_while_the_first_is_in_maintenance() {
        let nodes = [cp("a", true), cp("b", true), cp("c", true)];
        let busy = ["a".to_string()].into_iter().collect();
        let err = check_quorum("b", &nodes, &busy).unwrap_err();
        assert_eq!((err.left, err.total, err.quorum), (1, 3, 2));
        assert!(err.to_string().contains("control-plane node b"));
    }

    #[test]
    fn a_not_ready_peer_counts_against_the_quorum() {
        let nodes = [cp("a", true), cp("b", false), cp("c", true)];
        assert!(check_quorum("a", &nodes, &none()).is_err());
    }

    #[test]
    fn a_single_control_plane_node_can_never_go() {
        assert!(check_quorum("a", &[cp("a", true)], &none()).is_err());
    }

    #[test]
    fn workers_and_unknown_nodes_always_pass() {
        let nodes = [cp("a", true), worker("w")];
        assert_eq!(check_quorum("w", &nodes, &none()), Ok(()));
        assert_eq!(check_quorum("ghost", &nodes, &none()), Ok(()));
    }

    #[test]
    fn the_legacy_master_label_counts_too() {
        let mut m = worker("m");
        m.metadata.labels = Some(
            [(CONTROL_PLANE_LABELS[1].to_string(), String::new())]
                .into_iter()
                .collect(),
        );
        assert!(is_control_plane(&m));
    }
}
