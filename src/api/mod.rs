//! The nmo API: `NodeMaintenance` (medik8s-compatible) and `MaintenanceWindow`.
//!
//! Both kinds live in the group [`GROUP`]. The Rust types here generate the CRDs that
//! `nmo crds` prints and `crds/` holds.

pub mod conditions;
pub mod maintenance_window;
pub mod node_maintenance;

pub use conditions::{ConditionStatus, ConditionType};
pub use maintenance_window::{
    Exclusion, HealthGate, HealthGateStatus, MaintenanceWindow, MaintenanceWindowSpec,
    MaintenanceWindowStatus, OnWindowEnd, Release,
};
pub use node_maintenance::{
    MaintenancePhase, NodeMaintenance, NodeMaintenanceSpec, NodeMaintenanceStatus, PodReference,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group shared with medik8s.
pub const GROUP: &str = "nodemaintenance.medik8s.io";

/// Finalizer put on every NodeMaintenance; the same string medik8s uses.
pub const FINALIZER: &str = "foregroundDeleteNodeMaintenance";

/// Label that tells medik8s remediators (NHC, SNR) to leave the node alone.
pub const EXCLUDE_FROM_REMEDIATION_LABEL: &str = "remediation.medik8s.io/exclude-from-remediation";

/// Label on generated NodeMaintenances naming their MaintenanceWindow.
pub const WINDOW_LABEL: &str = "nodemaintenance.medik8s.io/window";

/// Annotation that opens one extra window immediately when its value changes.
pub const RUN_NOW_ANNOTATION: &str = "nodemaintenance.medik8s.io/run-now";

/// Every CRD nmo serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![NodeMaintenance::crd(), MaintenanceWindow::crd()]
}

/// All CRDs as one multi-document YAML stream, exactly what `nmo crds` prints.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

/// One `(file name, YAML)` pair per CRD, as `crds/` holds them: `<plural>.<group>.yaml`.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default());
            Ok((name, format!("---\n{}", serde_yaml::to_string(&crd)?)))
        })
        .collect()
}

/// Convert a chrono instant into the `metav1.Time` that k8s-openapi uses on the wire.
pub fn to_time(
    instant: chrono::DateTime<chrono::Utc>,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    let micros = instant.timestamp_micros();
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::from_microsecond(micros).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    )
}

/// Convert a wire `metav1.Time` into a chrono instant.
pub fn from_time(
    time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(time.0.as_microsecond()).unwrap_or_default()
}
