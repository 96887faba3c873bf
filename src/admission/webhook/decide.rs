//! What the webhook answers (pure): the reviewed object, the object it replaces, the
//! operation and a snapshot of the cluster in; allowed or denied, a message and warnings out.
//! The HTTP layer ([`super::review`]) only fetches the snapshot and serialises the verdict.

use crate::admission::{FieldError, validate_maintenance_window, validate_node_maintenance};
use crate::api::{MaintenanceWindow, NodeMaintenance};
use crate::controller::quorum::check_quorum;
use crate::schedule::round::selector_matches;
use k8s_openapi::api::core::v1::Node;
use kube::core::admission::Operation;
use std::collections::{BTreeMap, BTreeSet};

/// What the webhook read from the cluster for one review.
///
/// For a NodeMaintenance CREATE it must hold the named node (when it exists) and, when that
/// node is a control-plane node, every control-plane node; and every NodeMaintenance. For a
/// MaintenanceWindow it must hold at least the nodes the window selects, and every window.
/// Extra nodes do no harm.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Nodes (see above for which).
    pub nodes: Vec<Node>,
    /// Every NodeMaintenance.
    pub node_maintenances: Vec<NodeMaintenance>,
    /// Every MaintenanceWindow.
    pub windows: Vec<MaintenanceWindow>,
}

/// Why a request is refused, as the `status` of the AdmissionResponse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// HTTP code the apiserver answers with: 422 for field errors, 403 for cluster rules.
    pub code: u16,
    /// `Invalid` or `Forbidden`.
    pub reason: &'static str,
    /// The message; the apiserver prefixes it with `admission webhook "NAME" denied the request: `.
    pub message: String,
    /// One per field for `Invalid` (kubectl prints them as `* field: message`).
    pub causes: Vec<FieldError>,
}

impl Denial {
    /// A refusal by a rule that needs the cluster (medik8s answers these with 403 Forbidden,
    /// as controller-runtime does for a plain error).
    pub fn forbidden(message: impl Into<String>) -> Denial {
        Denial {
            code: 403,
            reason: "Forbidden",
            message: message.into(),
            causes: Vec::new(),
        }
    }

    /// A refusal for field errors, shaped like the apiserver's own 422 so kubectl prints
    /// `The MaintenanceWindow "w" is invalid:` and one line per field.
    pub fn invalid(kind: &str, name: &str, causes: Vec<FieldError>) -> Denial {
        let list: Vec<String> = causes.iter().map(ToString::to_string).collect();
        Denial {
            code: 422,
            reason: "Invalid",
            message: format!("{kind} {name:?} is invalid: {}", list.join("; ")),
            causes,
        }
    }
}

/// The answer to one review.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// `None` allows the request.
    pub denial: Option<Denial>,
    /// Admission warnings, shown by kubectl as `Warning: ...` whether allowed or not.
    pub warnings: Vec<String>,
}

impl Verdict {
    /// Allowed, no warnings.
    pub fn allow() -> Verdict {
        Verdict::default()
    }

    /// Refused.
    pub fn deny(denial: Denial) -> Verdict {
        Verdict {
            denial: Some(denial),
            warnings: Vec::new(),
        }
    }

    /// Whether the request is allowed.
    pub fn allowed(&self) -> bool {
        self.denial.is_none()
    }
}

/// The message for a NodeMaintenance naming a node that does not exist (medik8s's wording).
pub fn node_not_found(node: &str) -> String {
    format!("invalid nodeName, no node with name {node} found")
}

/// The message for a second NodeMaintenance of one node (medik8s's wording).
pub fn already_in_maintenance(node: &str) -> String {
    format!("invalid nodeName, a NodeMaintenance for node {node} already exists")
}

/// The message for a changed `spec.nodeName` (medik8s's wording, also the CRD's CEL message).
pub const NODE_NAME_IMMUTABLE: &str = "updating spec.NodeName isn't allowed";

/// Review a NodeMaintenance.
///
/// - CREATE: the pure rules of [`validate_node_maintenance`] (422), then, in medik8s's order,
///   the node exists, no other NodeMaintenance names it, and the control-plane quorum holds
///   (403). Nodes under any other NodeMaintenance count as unavailable for the quorum.
/// - UPDATE: `spec.nodeName` may not change (403). Nothing else is checked, so the
///   controller's finalizer and status writes are never refused.
/// - DELETE and CONNECT: allowed; deleting a NodeMaintenance ends a maintenance and must
///   always be possible.
pub fn review_node_maintenance(
    operation: &Operation,
    object: Option<&NodeMaintenance>,
    old: Option<&NodeMaintenance>,
    snapshot: &Snapshot,
) -> Verdict {
    match (operation, object) {
        (Operation::Create, Some(nm)) => review_new_node_maintenance(nm, snapshot),
        (Operation::Update, Some(nm)) => match old {
            Some(old) if old.spec.node_name != nm.spec.node_name => {
                Verdict::deny(Denial::forbidden(NODE_NAME_IMMUTABLE))
            }
            _ => Verdict::allow(),
        },
        _ => Verdict::allow(),
    }
}

fn review_new_node_maintenance(nm: &NodeMaintenance, snapshot: &Snapshot) -> Verdict {
    let name = nm.metadata.name.as_deref().unwrap_or_default();
    let errors = validate_node_maintenance(nm);
    if !errors.is_empty() {
        return Verdict::deny(Denial::invalid("NodeMaintenance", name, errors));
    }
    let node = nm.spec.node_name.as_str();
    if !snapshot
        .nodes
        .iter()
        .any(|n| n.metadata.name.as_deref() == Some(node))
    {
        return Verdict::deny(Denial::forbidden(node_not_found(node)));
    }
    let others = || {
        snapshot
            .node_maintenances
            .iter()
            .filter(|other| other.metadata.name.as_deref() != Some(name))
    };
    if others().any(|other| other.spec.node_name == node) {
        return Verdict::deny(Denial::forbidden(already_in_maintenance(node)));
    }
    let in_maintenance: BTreeSet<String> = others().map(|o| o.spec.node_name.clone()).collect();
    match check_quorum(node, &snapshot.nodes, &in_maintenance) {
        Ok(()) => Verdict::allow(),
        Err(violation) => Verdict::deny(Denial::forbidden(violation.to_string())),
    }
}

/// Review a MaintenanceWindow.
///
/// - CREATE, and UPDATE when the spec or the name changed: every pure rule of
///   [`validate_maintenance_window`] (422, one cause per field); when those pass, a warning for
///   each other window whose selector selects some of the same existing nodes. Overlap is
///   allowed (a node already in maintenance is skipped by the other window), so it is only a
///   warning.
/// - UPDATE that leaves the spec alone (labels, annotations, finalizers, run-now), and
///   any update of a window being deleted: allowed, so that a window created before the
///   webhook was installed can still be annotated, cleaned up and deleted.
/// - DELETE and CONNECT: allowed.
pub fn review_maintenance_window(
    operation: &Operation,
    object: Option<&MaintenanceWindow>,
    old: Option<&MaintenanceWindow>,
    snapshot: &Snapshot,
) -> Verdict {
    let Some(window) = object else {
        return Verdict::allow();
    };
    match operation {
        Operation::Create => {}
        Operation::Update => {
            let unchanged = old.is_some_and(|old| {
                old.spec == window.spec && old.metadata.name == window.metadata.name
            });
            if unchanged || window.metadata.deletion_timestamp.is_some() {
                return Verdict::allow();
            }
        }
        Operation::Delete | Operation::Connect => return Verdict::allow(),
    }
    let name = window.metadata.name.as_deref().unwrap_or_default();
    let errors = validate_maintenance_window(window);
    if !errors.is_empty() {
        return Verdict::deny(Denial::invalid("MaintenanceWindow", name, errors));
    }
    Verdict {
        denial: None,
        warnings: overlap_warnings(window, snapshot),
    }
}

/// How many shared node names a warning lists before it says "and N more".
const NAMES_IN_WARNING: usize = 3;

/// One warning per other window (by name) that selects some node this window selects.
fn overlap_warnings(window: &MaintenanceWindow, snapshot: &Snapshot) -> Vec<String> {
    let name = window.metadata.name.as_deref().unwrap_or_default();
    let labels_of =
        |n: &Node| -> BTreeMap<String, String> { n.metadata.labels.clone().unwrap_or_default() };
    let selected: Vec<(String, BTreeMap<String, String>)> = snapshot
        .nodes
        .iter()
        .map(|n| (n.metadata.name.clone().unwrap_or_default(), labels_of(n)))
        .filter(|(_, labels)| selector_matches(&window.spec.node_selector, labels))
        .collect();
    let mut others: Vec<&MaintenanceWindow> = snapshot
        .windows
        .iter()
        .filter(|w| w.metadata.name.as_deref() != Some(name))
        .filter(|w| w.metadata.deletion_timestamp.is_none())
        .collect();
    others.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    others
        .into_iter()
        .filter_map(|other| {
            let mut shared: Vec<&str> = selected
                .iter()
                .filter(|(_, labels)| selector_matches(&other.spec.node_selector, labels))
                .map(|(n, _)| n.as_str())
                .collect();
            if shared.is_empty() {
                return None;
            }
            shared.sort_unstable();
            let count = shared.len();
            let mut names = shared
                .iter()
                .take(NAMES_IN_WARNING)
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            if count > NAMES_IN_WARNING {
                names.push_str(&format!(" and {} more", count - NAMES_IN_WARNING));
            }
            let nodes = if count == 1 { "node" } else { "nodes" };
            Some(format!(
                "spec.nodeSelector overlaps MaintenanceWindow {:?}: both select {count} {nodes} ({names})",
                other.metadata.name.as_deref().unwrap_or_default()
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MaintenanceWindowSpec, NodeMaintenanceSpec, Release};
    use crate::controller::quorum::CONTROL_PLANE_LABELS;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

    /// A Ready, schedulable node; builders change one thing each.
    fn node(name: &str) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::new()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    trait NodeBuilder {
        fn label(self, k: &str, v: &str) -> Self;
        fn control_plane(self) -> Self;
        fn not_ready(self) -> Self;
        fn cordoned(self) -> Self;
    }

    impl NodeBuilder for Node {
        fn label(mut self, k: &str, v: &str) -> Self {
            self.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(k.into(), v.into());
            self
        }
        fn control_plane(self) -> Self {
            self.label(CONTROL_PLANE_LABELS[0], "")
        }
        fn not_ready(mut self) -> Self {
            if let Some(c) = self.status.as_mut().and_then(|s| s.conditions.as_mut()) {
                c[0].status = "False".into();
            }
            self
        }
        fn cordoned(mut self) -> Self {
            self.spec.get_or_insert_with(Default::default).unschedulable = Some(true);
            self
        }
    }

    fn nm(name: &str, node: &str) -> NodeMaintenance {
        NodeMaintenance::new(
            name,
            NodeMaintenanceSpec {
                node_name: node.into(),
                reason: None,
            },
        )
    }

    fn window(name: &str, role: &str) -> MaintenanceWindow {
        MaintenanceWindow::new(
            name,
            MaintenanceWindowSpec {
                schedule: "0 2 * * SAT".into(),
                time_zone: Some("Europe/Berlin".into()),
                duration: "4h".into(),
                node_selector: LabelSelector {
                    match_labels: Some([("role".to_string(), role.to_string())].into()),
                    ..Default::default()
                },
                max_unavailable: None,
                reason: None,
                release: Release {
                    after: Some("30m".into()),
                    on_reboot: None,
                },
                node_timeout: None,
                min_ready_seconds: None,
                max_failures: None,
                on_window_end: None,
                suspend: None,
                dry_run: None,
                exclusions: None,
                topology_key: None,
                health_gate: None,
            },
        )
    }

    fn snapshot(nodes: Vec<Node>, nms: Vec<NodeMaintenance>) -> Snapshot {
        Snapshot {
            nodes,
            node_maintenances: nms,
            windows: vec![],
        }
    }

    fn message(v: &Verdict) -> Option<&str> {
        v.denial.as_ref().map(|d| d.message.as_str())
    }

    #[test]
    fn node_maintenance_creates_follow_medik8s_rules_in_order() {
        let three_cp = || {
            vec![
                node("cp-1").control_plane(),
                node("cp-2").control_plane(),
                node("cp-3").control_plane(),
                node("worker-1"),
            ]
        };
        type Case = (
            &'static str,
            NodeMaintenance,
            Snapshot,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "a worker that exists is allowed",
                nm("m", "worker-1"),
                snapshot(three_cp(), vec![]),
                None,
            ),
            (
                "a missing node is refused",
                nm("m", "ghost"),
                snapshot(three_cp(), vec![]),
                Some("invalid nodeName, no node with name ghost found"),
            ),
            (
                "a second NodeMaintenance of one node is refused",
                nm("m2", "worker-1"),
                snapshot(three_cp(), vec![nm("m1", "worker-1")]),
                Some("invalid nodeName, a NodeMaintenance for node worker-1 already exists"),
            ),
            (
                "the object itself does not count as a duplicate",
                nm("m", "worker-1"),
                snapshot(three_cp(), vec![nm("m", "worker-1")]),
                None,
            ),
            (
                "the first of three control-plane nodes may go",
                nm("m", "cp-1"),
                snapshot(three_cp(), vec![]),
                None,
            ),
            (
                "the second of three is refused while the first is in maintenance",
                nm("m2", "cp-2"),
                snapshot(three_cp(), vec![nm("m1", "cp-1")]),
                Some(
                    "can't put control-plane node cp-2 into maintenance: it would leave 1 of 3 control-plane nodes Ready and schedulable, fewer than the quorum of 2",
                ),
            ),
            (
                "a NotReady control-plane peer counts against the quorum",
                nm("m", "cp-1"),
                snapshot(
                    vec![
                        node("cp-1").control_plane(),
                        node("cp-2").control_plane().not_ready(),
                        node("cp-3").control_plane(),
                    ],
                    vec![],
                ),
                Some("it would leave 1 of 3 control-plane nodes"),
            ),
            (
                "a cordoned control-plane peer counts against the quorum",
                nm("m", "cp-1"),
                snapshot(
                    vec![
                        node("cp-1").control_plane(),
                        node("cp-2").control_plane().cordoned(),
                        node("cp-3").control_plane(),
                    ],
                    vec![],
                ),
                Some("it would leave 1 of 3 control-plane nodes"),
            ),
            (
                "a worker in maintenance does not count against the quorum",
                nm("m2", "cp-1"),
                snapshot(three_cp(), vec![nm("m1", "worker-1")]),
                None,
            ),
            (
                "a missing node is reported before a duplicate",
                nm("m2", "ghost"),
                snapshot(three_cp(), vec![nm("m1", "ghost")]),
                Some("invalid nodeName, no node with name ghost found"),
            ),
        ];
        for (what, object, snap, expected) in cases {
            let v = review_node_maintenance(&Operation::Create, Some(&object), None, &snap);
            match expected {
                None => assert!(v.allowed(), "{what}: {v:?}"),
                Some(text) => {
                    let got = message(&v).unwrap_or_else(|| panic!("{what}: allowed"));
                    assert!(got.contains(text), "{what}: {got:?} lacks {text:?}");
                    assert_eq!(v.denial.as_ref().map(|d| d.code), Some(403), "{what}");
                }
            }
        }
    }

    #[test]
    fn an_invalid_node_name_is_a_field_error() {
        let v = review_node_maintenance(
            &Operation::Create,
            Some(&nm("m", "Worker_1")),
            None,
            &Snapshot::default(),
        );
        let d = v.denial.expect("refused");
        assert_eq!((d.code, d.reason), (422, "Invalid"));
        assert_eq!(d.causes.len(), 1);
        assert_eq!(d.causes[0].field, "spec.nodeName");
        assert!(
            d.message
                .starts_with("NodeMaintenance \"m\" is invalid: spec.nodeName: ")
        );
    }

    #[test]
    fn node_name_is_immutable_and_other_updates_pass() {
        let old = nm("m", "worker-1");
        let moved = nm("m", "worker-2");
        let v = review_node_maintenance(
            &Operation::Update,
            Some(&moved),
            Some(&old),
            &Snapshot::default(),
        );
        assert_eq!(message(&v), Some(NODE_NAME_IMMUTABLE));
        let mut relabelled = old.clone();
        relabelled.spec.reason = Some("disk".into());
        relabelled.metadata.finalizers = None;
        let v = review_node_maintenance(
            &Operation::Update,
            Some(&relabelled),
            Some(&old),
            &Snapshot::default(),
        );
        assert!(v.allowed(), "{v:?}");
    }

    #[test]
    fn deletes_are_always_allowed() {
        let old = nm("m", "ghost");
        let v = review_node_maintenance(&Operation::Delete, None, Some(&old), &Snapshot::default());
        assert!(v.allowed());
        let w = window("w", "worker");
        let v = review_maintenance_window(&Operation::Delete, None, Some(&w), &Snapshot::default());
        assert!(v.allowed());
    }

    #[test]
    fn an_invalid_window_gets_one_cause_per_field() {
        let mut w = window("weekly", "worker");
        w.spec.schedule = "0 2 * * FUNDAY".into();
        w.spec.time_zone = Some("Europe/Berln".into());
        let v = review_maintenance_window(&Operation::Create, Some(&w), None, &Snapshot::default());
        let d = v.denial.expect("refused");
        assert_eq!((d.code, d.reason), (422, "Invalid"));
        let fields: Vec<&str> = d.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.schedule", "spec.timeZone"]);
        assert!(
            d.message
                .starts_with("MaintenanceWindow \"weekly\" is invalid: spec.schedule: "),
            "{}",
            d.message
        );
        assert!(
            d.message
                .contains("; spec.timeZone: unknown time zone \"Europe/Berln\"")
        );
    }

    #[test]
    fn bad_exclusions_health_gate_and_topology_key_are_refused_per_field() {
        let mut w = window("weekly", "worker");
        w.spec.exclusions = Some(vec![crate::api::Exclusion {
            start: "2026-12-24T10:00:00Z".into(),
            end: "2026-12-23".into(),
            reason: None,
        }]);
        w.spec.health_gate = Some(crate::api::HealthGate {
            query: "".into(),
            for_: "10 minutes".into(),
        });
        w.spec.topology_key = Some("/zone".into());
        let v = review_maintenance_window(&Operation::Create, Some(&w), None, &Snapshot::default());
        let d = v.denial.expect("refused");
        let fields: Vec<&str> = d.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.exclusions[0].end",
                "spec.topologyKey",
                "spec.healthGate.query",
                "spec.healthGate.for"
            ]
        );
        // A date end is the end of that whole day: after a timestamp on the same day.
        w.spec.exclusions.as_mut().unwrap()[0].end = "2026-12-24".into();
        w.spec.exclusions.as_mut().unwrap()[0].start = "2026-12-24T23:00:00+01:00".into();
        w.spec.health_gate = None;
        w.spec.topology_key = Some("topology.kubernetes.io/zone".into());
        let v = review_maintenance_window(&Operation::Create, Some(&w), None, &Snapshot::default());
        assert!(v.denial.is_none(), "{:?}", v.denial);
    }

    #[test]
    fn overlapping_windows_warn_with_the_other_window_and_the_shared_nodes() {
        let nodes = vec![
            node("a").label("role", "worker").label("zone", "1"),
            node("b").label("role", "worker").label("zone", "1"),
            node("c").label("role", "worker").label("zone", "1"),
            node("d").label("role", "worker").label("zone", "1"),
            node("e").label("role", "worker").label("zone", "2"),
            node("g").label("role", "gpu"),
        ];
        let mut zone1 = window("zone-1", "worker");
        zone1.spec.node_selector.match_labels =
            Some([("zone".to_string(), "1".to_string())].into());
        let mut gone = window("gone", "worker");
        gone.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let snap = Snapshot {
            nodes,
            node_maintenances: vec![],
            windows: vec![
                window("gpu", "gpu"),
                zone1,
                window("workers", "worker"),
                gone,
                window("new-one", "worker"),
            ],
        };
        let new = window("new-one", "worker");
        let v = review_maintenance_window(&Operation::Create, Some(&new), None, &snap);
        assert!(v.allowed());
        assert_eq!(
            v.warnings,
            [
                "spec.nodeSelector overlaps MaintenanceWindow \"workers\": both select 5 nodes (a, b, c and 2 more)",
                "spec.nodeSelector overlaps MaintenanceWindow \"zone-1\": both select 4 nodes (a, b, c and 1 more)",
            ]
        );
        let gpu2 = window("gpu-2", "gpu");
        let v = review_maintenance_window(&Operation::Create, Some(&gpu2), None, &snap);
        assert_eq!(
            v.warnings,
            ["spec.nodeSelector overlaps MaintenanceWindow \"gpu\": both select 1 node (g)"]
        );
    }

    #[test]
    fn updates_that_leave_the_spec_alone_are_not_checked() {
        let mut broken = window("w", "worker");
        broken.spec.time_zone = Some("Mars/Olympus".into());
        let mut annotated = broken.clone();
        annotated.metadata.annotations = Some([("a".to_string(), "b".to_string())].into());
        let v = review_maintenance_window(
            &Operation::Update,
            Some(&annotated),
            Some(&broken),
            &Snapshot::default(),
        );
        assert!(v.allowed(), "{v:?}");
        let mut changed = broken.clone();
        changed.spec.duration = "5h".into();
        let v = review_maintenance_window(
            &Operation::Update,
            Some(&changed),
            Some(&broken),
            &Snapshot::default(),
        );
        assert!(!v.allowed(), "a spec change is checked");
        changed.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let v = review_maintenance_window(
            &Operation::Update,
            Some(&changed),
            Some(&broken),
            &Snapshot::default(),
        );
        assert!(v.allowed(), "a window being deleted is never refused");
    }
}
