//! `NodeMaintenance` (`nodemaintenance.medik8s.io/v1beta1`), wire-compatible with medik8s.
//!
//! The spec and every status field keep medik8s's JSON names, including the odd `totalpods`,
//! so objects written by a medik8s install keep working after switching to nmo.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Desired state: put `nodeName` into maintenance while this object exists.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "nodemaintenance.medik8s.io",
    version = "v1beta1",
    kind = "NodeMaintenance",
    plural = "nodemaintenances",
    shortname = "nm",
    category = "maintenance",
    status = "NodeMaintenanceStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"integer","jsonPath":".status.drainProgress"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".spec.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NodeMaintenanceSpec {
    /// The name of the node to put into maintenance. Required, non-empty and immutable.
    #[x_kube(validation = Rule::new("self != ''").message("spec.nodeName must not be empty: set it to the name of a node"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("updating spec.NodeName isn't allowed"))]
    pub node_name: String,
    /// Why the node is in maintenance; shown by `kubectl get nm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Phase of a NodeMaintenance, with medik8s's values.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum MaintenancePhase {
    /// Cordoning and draining are in progress.
    Running,
    /// The node is cordoned and drained.
    Succeeded,
    /// Maintenance cannot proceed (for example the node does not exist).
    Failed,
}

impl MaintenancePhase {
    /// Wire value of the phase.
    pub fn as_str(self) -> &'static str {
        match self {
            MaintenancePhase::Running => "Running",
            MaintenancePhase::Succeeded => "Succeeded",
            MaintenancePhase::Failed => "Failed",
        }
    }
}

/// A pod that still has to leave the node (medik8s `PodReference`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub struct PodReference {
    /// Namespace of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Observed state. Every medik8s field with its medik8s JSON name, plus `observedGeneration`
/// and `conditions`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
pub struct NodeMaintenanceStatus {
    /// `Running`, `Succeeded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MaintenancePhase>,
    /// Percentage of evictable pods gone, 0 to 100. Never negative.
    #[serde(
        rename = "drainProgress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 100))]
    pub drain_progress: Option<i32>,
    /// When the status was last changed.
    #[serde(
        rename = "lastUpdate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_update: Option<Time>,
    /// The last error; cleared on success.
    #[serde(rename = "lastError", default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Names of pods still to be evicted.
    #[serde(
        rename = "pendingPods",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pending_pods: Option<Vec<String>>,
    /// Namespace and name of pods still to be evicted.
    #[serde(
        rename = "pendingPodsRefs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pending_pods_refs: Option<Vec<PodReference>>,
    /// Number of pods on the node when maintenance started (medik8s spells it `totalpods`).
    #[serde(rename = "totalpods", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub total_pods: Option<i32>,
    /// Number of pods that have to be evicted.
    #[serde(
        rename = "evictionPods",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0))]
    pub eviction_pods: Option<i32>,
    /// Consecutive failures to extend the node lease.
    #[serde(
        rename = "errorOnLeaseCount",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0))]
    pub error_on_lease_count: Option<i32>,
    /// The generation this status was computed for.
    #[serde(
        rename = "observedGeneration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` (only while draining) and `Stalled` (only when Failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The medik8s `NodeMaintenanceStatus` JSON names, letter for letter, as DESIGN.md lists them.
    const MEDIK8S_STATUS_FIELDS: [&str; 9] = [
        "phase",
        "drainProgress",
        "lastUpdate",
        "lastError",
        "pendingPods",
        "pendingPodsRefs",
        "totalpods",
        "evictionPods",
        "errorOnLeaseCount",
    ];

    #[test]
    fn every_medik8s_status_field_keeps_its_json_name() {
        let status = NodeMaintenanceStatus {
            phase: Some(MaintenancePhase::Running),
            drain_progress: Some(50),
            last_update: Some(crate::api::to_time(chrono::Utc::now())),
            last_error: Some("e".into()),
            pending_pods: Some(vec!["p".into()]),
            pending_pods_refs: Some(vec![PodReference {
                namespace: Some("ns".into()),
                name: Some("p".into()),
            }]),
            total_pods: Some(2),
            eviction_pods: Some(1),
            error_on_lease_count: Some(0),
            observed_generation: Some(1),
            conditions: Some(vec![]),
        };
        let json = serde_json::to_value(&status).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        for field in MEDIK8S_STATUS_FIELDS {
            assert!(
                keys.contains(&field),
                "status lacks medik8s field {field}: {keys:?}"
            );
        }
        // The schema in the CRD must list the same names.
        let crd =
            serde_json::to_value(<NodeMaintenance as kube::CustomResourceExt>::crd()).unwrap();
        let props = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"];
        for field in MEDIK8S_STATUS_FIELDS {
            assert!(
                props.get(field).is_some(),
                "CRD status schema lacks {field}"
            );
        }
        let pod_ref = &props["pendingPodsRefs"]["items"]["properties"];
        assert!(pod_ref.get("namespace").is_some() && pod_ref.get("name").is_some());
    }
}
