//! Putting a Node into maintenance and back: the exclusion label, the two taints,
//! `spec.unschedulable`, and the annotation that remembers whether the node was already
//! unschedulable.
//!
//! [`enter_maintenance`] and [`leave_maintenance`] are pure: they return the JSON merge patch to
//! send, or `None` when the node is already as wanted. [`patch_node`] sends such a patch with
//! the node's `metadata.resourceVersion` in it, so a concurrent writer makes it fail with 409
//! instead of being overwritten (taints are a list, which a merge patch replaces whole), and
//! retries from a fresh read.

use crate::api::EXCLUDE_FROM_REMEDIATION_LABEL;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Map, Value, json};

/// The taint kubectl cordon's node controller counterpart uses; medik8s adds it explicitly.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// medik8s's own drain taint.
pub const DRAIN_TAINT: &str = "medik8s.io/drain";

/// Annotation on the Node remembering `spec.unschedulable` from before maintenance (`"true"` or
/// `"false"`), so that leaving maintenance does not uncordon a node someone else cordoned.
pub const WAS_UNSCHEDULABLE_ANNOTATION: &str = "nodemaintenance.medik8s.io/was-unschedulable";

/// Annotation on the Node saying whether nmo added the exclusion label (`"true"`) or found it
/// there already (`"false"`), so that leaving maintenance removes the label only if nmo added
/// it.
pub const EXCLUSION_LABEL_ADDED_ANNOTATION: &str =
    "nodemaintenance.medik8s.io/exclusion-label-added";

/// The field manager name of every nmo write.
pub const FIELD_MANAGER: &str = "nmo";

fn maintenance_taint(key: &str) -> Taint {
    Taint {
        key: key.to_string(),
        effect: "NoSchedule".to_string(),
        time_added: None,
        value: None,
    }
}

fn has_taint(node: &Node, key: &str) -> bool {
    taints(node)
        .iter()
        .any(|t| t.key == key && t.effect == "NoSchedule")
}

fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

fn is_unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn label(node: &Node, key: &str) -> Option<String> {
    node.metadata.labels.as_ref()?.get(key).cloned()
}

fn annotation(node: &Node, key: &str) -> Option<String> {
    node.metadata.annotations.as_ref()?.get(key).cloned()
}

/// Whether the node shows every mark of maintenance: cordoned, both taints, the label.
pub fn is_in_maintenance(node: &Node) -> bool {
    is_unschedulable(node)
        && has_taint(node, UNSCHEDULABLE_TAINT)
        && has_taint(node, DRAIN_TAINT)
        && label(node, EXCLUDE_FROM_REMEDIATION_LABEL).as_deref() == Some("true")
}

/// The marks of maintenance the node lacks, in words (empty when [`is_in_maintenance`]).
pub fn missing_marks(node: &Node) -> Vec<String> {
    let mut out = Vec::new();
    if !is_unschedulable(node) {
        out.push("uncordoned".to_string());
    }
    for key in [UNSCHEDULABLE_TAINT, DRAIN_TAINT] {
        if !has_taint(node, key) {
            out.push(format!("taint {key} removed"));
        }
    }
    if label(node, EXCLUDE_FROM_REMEDIATION_LABEL).as_deref() != Some("true") {
        out.push(format!("label {EXCLUDE_FROM_REMEDIATION_LABEL} removed"));
    }
    out
}

/// Whether the node shows none of the marks nmo puts on it (label, drain taint, annotations).
pub fn is_free_of_maintenance(node: &Node) -> bool {
    !has_taint(node, DRAIN_TAINT)
        && label(node, EXCLUDE_FROM_REMEDIATION_LABEL).is_none()
        && annotation(node, WAS_UNSCHEDULABLE_ANNOTATION).is_none()
        && annotation(node, EXCLUSION_LABEL_ADDED_ANNOTATION).is_none()
}

/// Whether nmo has put its own marks on the node (its annotation): the node was taken into
/// maintenance by nmo and has not been released since.
pub fn is_held_by_nmo(node: &Node) -> bool {
    annotation(node, WAS_UNSCHEDULABLE_ANNOTATION).is_some()
}

/// Whether a field manager other than nmo owns `spec.unschedulable`, per `managedFields`.
///
/// An update that changes a field takes it away from every other manager, so once nmo has
/// cordoned the node it owns the field alone; another owner at release means someone else set
/// it after us (`kubectl cordon` after an uncordon, an apply, a patch): their cordon is kept.
/// A write that changes nothing (`kubectl cordon` of a node already cordoned reports "already
/// cordoned" and sends nothing) leaves no trace and cannot be told apart.
pub fn cordoned_by_others(node: &Node) -> bool {
    is_unschedulable(node)
        && node
            .metadata
            .managed_fields
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .filter(|m| m.manager.as_deref() != Some(FIELD_MANAGER))
            .filter(|m| m.subresource.as_deref().unwrap_or("").is_empty())
            .any(|m| {
                m.fields_v1
                    .as_ref()
                    .and_then(|f| f.0.pointer("/f:spec/f:unschedulable"))
                    .is_some()
            })
}

/// The merge patch that puts `node` into maintenance, or `None` if it already is.
///
/// The previous `spec.unschedulable` is recorded only the first time. A node that carries the
/// drain taint but no annotation was put into maintenance by medik8s, which uncordons at the
/// end; it is recorded as schedulable to keep that behaviour.
pub fn enter_maintenance(node: &Node) -> Option<Value> {
    let mut metadata = Map::new();
    let mut spec = Map::new();
    let labelled = label(node, EXCLUDE_FROM_REMEDIATION_LABEL).as_deref() == Some("true");
    if !labelled {
        metadata.insert(
            "labels".into(),
            json!({ EXCLUDE_FROM_REMEDIATION_LABEL: "true" }),
        );
    }
    let mut annotations = Map::new();
    let medik8s = has_taint(node, DRAIN_TAINT) && !is_held_by_nmo(node);
    if annotation(node, WAS_UNSCHEDULABLE_ANNOTATION).is_none() {
        let was = is_unschedulable(node) && !has_taint(node, DRAIN_TAINT);
        annotations.insert(WAS_UNSCHEDULABLE_ANNOTATION.into(), json!(was.to_string()));
    }
    if annotation(node, EXCLUSION_LABEL_ADDED_ANNOTATION).is_none() {
        // A node in medik8s's maintenance got the label from medik8s, which removes it at the
        // end; nmo does the same.
        let added = !labelled || medik8s;
        annotations.insert(
            EXCLUSION_LABEL_ADDED_ANNOTATION.into(),
            json!(added.to_string()),
        );
    }
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    let missing: Vec<Taint> = [UNSCHEDULABLE_TAINT, DRAIN_TAINT]
        .into_iter()
        .filter(|k| !has_taint(node, k))
        .map(maintenance_taint)
        .collect();
    if !missing.is_empty() {
        let mut all = taints(node).to_vec();
        all.extend(missing);
        spec.insert("taints".into(), json!(all));
    }
    if !is_unschedulable(node) {
        spec.insert("unschedulable".into(), json!(true));
    }
    patch_of(metadata, spec)
}

/// The merge patch that takes `node` out of maintenance, restoring `spec.unschedulable` to its
/// value from before, or `None` if nothing is left to undo.
///
/// Without the annotation nmo never cordoned the node itself: it is uncordoned only if it
/// carries the drain taint (medik8s's maintenance), otherwise `spec.unschedulable` is left
/// as it is. A node someone else cordoned during the maintenance ([`cordoned_by_others`])
/// stays cordoned. The `unschedulable` taint stays on a node that stays cordoned. The
/// exclusion label goes only if nmo (or medik8s, for a node it had in maintenance) added it.
pub fn leave_maintenance(node: &Node) -> Option<Value> {
    let mut metadata = Map::new();
    let mut spec = Map::new();
    let recorded = annotation(node, WAS_UNSCHEDULABLE_ANNOTATION);
    let label_added = annotation(node, EXCLUSION_LABEL_ADDED_ANNOTATION);
    let ours = match label_added.as_deref() {
        Some(value) => value == "true",
        // Written by an nmo from before the annotation existed, or by medik8s: both added it.
        None => recorded.is_some() || has_taint(node, DRAIN_TAINT),
    };
    if ours && label(node, EXCLUDE_FROM_REMEDIATION_LABEL).is_some() {
        metadata.insert(
            "labels".into(),
            json!({ EXCLUDE_FROM_REMEDIATION_LABEL: null }),
        );
    }
    let mut annotations = Map::new();
    if recorded.is_some() {
        annotations.insert(WAS_UNSCHEDULABLE_ANNOTATION.into(), Value::Null);
    }
    if label_added.is_some() {
        annotations.insert(EXCLUSION_LABEL_ADDED_ANNOTATION.into(), Value::Null);
    }
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    let stays_cordoned = cordoned_by_others(node)
        || match recorded.as_deref() {
            Some(value) => value == "true",
            None if has_taint(node, DRAIN_TAINT) => false,
            None => is_unschedulable(node),
        };
    let kept: Vec<Taint> = taints(node)
        .iter()
        .filter(|t| t.key != DRAIN_TAINT && (stays_cordoned || t.key != UNSCHEDULABLE_TAINT))
        .cloned()
        .collect();
    if kept.len() != taints(node).len() {
        spec.insert(
            "taints".into(),
            if kept.is_empty() {
                Value::Null
            } else {
                json!(kept)
            },
        );
    }
    if is_unschedulable(node) && !stays_cordoned {
        spec.insert("unschedulable".into(), Value::Null);
    }
    patch_of(metadata, spec)
}

fn patch_of(metadata: Map<String, Value>, spec: Map<String, Value>) -> Option<Value> {
    if metadata.is_empty() && spec.is_empty() {
        return None;
    }
    let mut patch = Map::new();
    if !metadata.is_empty() {
        patch.insert("metadata".into(), Value::Object(metadata));
    }
    if !spec.is_empty() {
        patch.insert("spec".into(), Value::Object(spec));
    }
    Some(Value::Object(patch))
}

/// Failures writing a Node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Reading the node failed.
    #[error("reading node {node}: {source}")]
    GetNode {
        /// Node name.
        node: String,
        /// The API error.
        source: kube::Error,
    },
    /// Patching the node failed (after retrying conflicts).
    #[error("patching node {node}: {source}")]
    PatchNode {
        /// Node name.
        node: String,
        /// The API error.
        source: kube::Error,
    },
}

impl NodeError {
    /// A bounded name for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            NodeError::GetNode { .. } => "GetNode",
            NodeError::PatchNode { .. } => "PatchNode",
        }
    }
}

/// What [`patch_node`] found and did.
#[derive(Clone, Debug)]
pub enum NodePatched {
    /// The node does not exist.
    Missing,
    /// The node was already as wanted.
    Unchanged(Box<Node>),
    /// The node was patched.
    Changed {
        /// The node as read before the patch.
        before: Box<Node>,
        /// The result.
        after: Box<Node>,
    },
}

/// Read `name`, compute a merge patch with `change`, and send it guarded by the
/// resourceVersion that was read. A 409 (someone wrote in between) reads again and retries,
/// up to five times.
pub async fn patch_node(
    client: &kube::Client,
    name: &str,
    change: fn(&Node) -> Option<Value>,
) -> Result<NodePatched, NodeError> {
    let api: Api<Node> = Api::all(client.clone());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(node) = api
            .get_opt(name)
            .await
            .map_err(|source| NodeError::GetNode {
                node: name.to_string(),
                source,
            })?
        else {
            return Ok(NodePatched::Missing);
        };
        let Some(mut patch) = change(&node) else {
            return Ok(NodePatched::Unchanged(Box::new(node)));
        };
        patch["metadata"]["resourceVersion"] = json!(node.metadata.resource_version);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(after) => {
                return Ok(NodePatched::Changed {
                    before: Box::new(node),
                    after: Box::new(after),
                });
            }
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => continue,
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(NodePatched::Missing),
            Err(source) => {
                return Err(NodeError::PatchNode {
                    node: name.to_string(),
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// A builder for test nodes: `node("a").cordoned().tainted("gpu")`.
    #[derive(Clone)]
    pub(crate) struct NodeBuilder(Node);

    impl From<Node> for NodeBuilder {
        fn from(node: Node) -> Self {
            NodeBuilder(node)
        }
    }

    pub(crate) fn node(name: &str) -> NodeBuilder {
        NodeBuilder(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some("1".into()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: None,
        })
    }

    impl NodeBuilder {
        pub(crate) fn cordoned(mut self) -> Self {
            self.0.spec.as_mut().unwrap().unschedulable = Some(true);
            self
        }
        pub(crate) fn tainted(mut self, key: &str) -> Self {
            self.0
                .spec
                .as_mut()
                .unwrap()
                .taints
                .get_or_insert_with(Vec::new)
                .push(maintenance_taint(key));
            self
        }
        pub(crate) fn labelled(mut self, key: &str, value: &str) -> Self {
            self.0
                .metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(key.into(), value.into());
            self
        }
        /// `manager` owns `spec.unschedulable` in managedFields.
        pub(crate) fn unschedulable_owned_by(mut self, manager: &str) -> Self {
            use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
            self.0
                .metadata
                .managed_fields
                .get_or_insert_with(Vec::new)
                .push(ManagedFieldsEntry {
                    manager: Some(manager.into()),
                    operation: Some("Update".into()),
                    fields_type: Some("FieldsV1".into()),
                    fields_v1: Some(FieldsV1(json!({"f:spec": {"f:unschedulable": {}}}))),
                    ..Default::default()
                });
            self
        }
        pub(crate) fn build(self) -> Node {
            self.0
        }
    }

    /// Apply a JSON merge patch (RFC 7386) the way the API server does.
    fn apply(node: &Node, patch: &Value) -> Node {
        let mut doc = serde_json::to_value(node).unwrap();
        json_patch::merge(&mut doc, patch);
        // Go's omitempty drops maps left empty, as the API server does.
        for key in ["labels", "annotations"] {
            if doc["metadata"][key]
                .as_object()
                .is_some_and(|m| m.is_empty())
            {
                doc["metadata"].as_object_mut().unwrap().remove(key);
            }
        }
        serde_json::from_value(doc).unwrap()
    }

    fn roundtrip(before: Node) -> Node {
        let inside = match enter_maintenance(&before) {
            Some(p) => apply(&before, &p),
            None => before,
        };
        assert!(is_in_maintenance(&inside));
        assert_eq!(enter_maintenance(&inside), None, "entering is idempotent");
        let after = match leave_maintenance(&inside) {
            Some(p) => apply(&inside, &p),
            None => inside,
        };
        assert_eq!(leave_maintenance(&after), None, "leaving is idempotent");
        after
    }

    #[test]
    fn entering_cordons_taints_labels_and_remembers_the_node_was_schedulable() {
        let n = node("a").tainted("gpu").build();
        let inside = apply(&n, &enter_maintenance(&n).unwrap());
        assert!(is_in_maintenance(&inside));
        let keys: Vec<&str> = taints(&inside).iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["gpu", UNSCHEDULABLE_TAINT, DRAIN_TAINT]);
        assert_eq!(
            annotation(&inside, WAS_UNSCHEDULABLE_ANNOTATION).as_deref(),
            Some("false")
        );
    }

    #[test]
    fn leaving_restores_a_schedulable_node_exactly_and_keeps_unrelated_taints() {
        let before = node("a").tainted("gpu").build();
        let after = roundtrip(before.clone());
        assert_eq!(after, before);
    }

    #[test]
    fn a_node_cordoned_before_maintenance_stays_cordoned_after_it() {
        let before = node("a").cordoned().tainted(UNSCHEDULABLE_TAINT).build();
        let after = roundtrip(before.clone());
        assert!(is_unschedulable(&after));
        assert_eq!(after, before);
        assert!(is_free_of_maintenance(&after));
    }

    #[test]
    fn a_node_cordoned_without_the_taint_stays_cordoned() {
        let before = node("a").cordoned().build();
        let after = roundtrip(before);
        assert!(is_unschedulable(&after));
        assert!(!has_taint(&after, DRAIN_TAINT));
    }

    #[test]
    fn a_node_put_into_maintenance_by_medik8s_is_uncordoned_at_the_end() {
        let medik8s = node("a")
            .cordoned()
            .tainted(UNSCHEDULABLE_TAINT)
            .tainted(DRAIN_TAINT)
            .build();
        let inside = apply(&medik8s, &enter_maintenance(&medik8s).unwrap());
        assert_eq!(
            annotation(&inside, WAS_UNSCHEDULABLE_ANNOTATION).as_deref(),
            Some("false")
        );
        let after = apply(&inside, &leave_maintenance(&inside).unwrap());
        assert!(!is_unschedulable(&after));
        assert!(taints(&after).is_empty());
        // Even without our annotation, the drain taint says it was maintenance.
        let after = apply(&medik8s, &leave_maintenance(&medik8s).unwrap());
        assert!(!is_unschedulable(&after));
    }

    #[test]
    fn leaving_a_node_never_put_into_maintenance_changes_nothing() {
        assert_eq!(leave_maintenance(&node("a").build()), None);
        assert_eq!(leave_maintenance(&node("a").cordoned().build()), None);
    }

    #[test]
    fn an_exclusion_label_that_was_there_before_stays_after_the_maintenance() {
        let before = node("a")
            .labelled(EXCLUDE_FROM_REMEDIATION_LABEL, "true")
            .build();
        let after = roundtrip(before.clone());
        assert_eq!(after, before);
        assert!(is_free_of_maintenance(&node("a").build()));
    }

    #[test]
    fn an_exclusion_label_nmo_added_is_removed_and_so_is_the_record_of_it() {
        let before = node("a").build();
        let inside = apply(&before, &enter_maintenance(&before).unwrap());
        assert_eq!(
            annotation(&inside, EXCLUSION_LABEL_ADDED_ANNOTATION).as_deref(),
            Some("true")
        );
        let after = apply(&inside, &leave_maintenance(&inside).unwrap());
        assert!(is_free_of_maintenance(&after));
    }

    #[test]
    fn a_node_in_maintenance_of_an_older_nmo_loses_the_label_it_was_given() {
        let mut old = node("a")
            .labelled(EXCLUDE_FROM_REMEDIATION_LABEL, "true")
            .cordoned()
            .build();
        old.metadata.annotations = Some(
            [(
                WAS_UNSCHEDULABLE_ANNOTATION.to_string(),
                "false".to_string(),
            )]
            .into_iter()
            .collect(),
        );
        let after = apply(&old, &leave_maintenance(&old).unwrap());
        assert_eq!(label(&after, EXCLUDE_FROM_REMEDIATION_LABEL), None);
        assert!(!is_unschedulable(&after));
    }

    #[test]
    fn a_cordon_someone_else_made_during_the_maintenance_is_kept() {
        let before = node("a").build();
        let inside = apply(&before, &enter_maintenance(&before).unwrap());
        let recordoned = NodeBuilder(inside.clone())
            .unschedulable_owned_by("kubectl-cordon")
            .build();
        assert!(cordoned_by_others(&recordoned));
        let after = apply(&recordoned, &leave_maintenance(&recordoned).unwrap());
        assert!(is_unschedulable(&after), "their cordon is kept");
        assert_eq!(
            taints(&after)
                .iter()
                .map(|t| t.key.as_str())
                .collect::<Vec<_>>(),
            [UNSCHEDULABLE_TAINT]
        );
        assert!(is_free_of_maintenance(&after));
        let ours = NodeBuilder(inside)
            .unschedulable_owned_by(FIELD_MANAGER)
            .build();
        assert!(!cordoned_by_others(&ours));
    }
}
