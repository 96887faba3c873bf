//! One AdmissionReview: decode it, read what the decision needs from the API (reads only),
//! ask [`super::decide`], and encode the answer.

use super::decide::{self, Snapshot, Verdict};
use crate::admission::{validate_maintenance_window, validate_node_maintenance};
use crate::api::{MaintenanceWindow, NodeMaintenance};
use crate::controller::quorum::CONTROL_PLANE_LABELS;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::response::{StatusCause, StatusDetails, StatusSummary};
use kube::core::{DynamicObject, Status};
use serde_json::json;

/// The kinds the webhook reviews, one path each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reviewed {
    /// `POST /validate-nodemaintenance`.
    NodeMaintenance,
    /// `POST /validate-maintenancewindow`.
    MaintenanceWindow,
}

impl Reviewed {
    /// The kind served at a request path, if any.
    pub fn from_path(path: &str) -> Option<Reviewed> {
        match path {
            super::NODE_MAINTENANCE_PATH => Some(Reviewed::NodeMaintenance),
            super::MAINTENANCE_WINDOW_PATH => Some(Reviewed::MaintenanceWindow),
            _ => None,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Reviewed::NodeMaintenance => "NodeMaintenance",
            Reviewed::MaintenanceWindow => "MaintenanceWindow",
        }
    }
}

/// Why a review could not be answered with a verdict.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not an `admission.k8s.io/v1` AdmissionReview with a request.
    #[error("cannot decode the AdmissionReview: {0}")]
    Decode(String),
    /// A read the decision needs failed: the webhook cannot decide, so it answers with an
    /// error and the apiserver applies the webhook's `failurePolicy` (`Fail` refuses).
    #[error("cannot check the {kind}: cannot {what}: {source}")]
    ReadCluster {
        /// The kind reviewed.
        kind: &'static str,
        /// The read, such as `list NodeMaintenances`.
        what: &'static str,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

impl ReviewError {
    /// The HTTP code of the error answer: 400 for a bad review, 503 when the API could not be
    /// read.
    pub fn code(&self) -> u16 {
        match self {
            ReviewError::Decode(_) => 400,
            ReviewError::ReadCluster { .. } => 503,
        }
    }

    /// The `meta/v1 Status` body of the error answer. The apiserver reports it as
    /// `failed calling webhook "NAME": ...` and applies the failure policy.
    pub fn status(&self) -> serde_json::Value {
        let reason = match self {
            ReviewError::Decode(_) => "BadRequest",
            ReviewError::ReadCluster { .. } => "ServiceUnavailable",
        };
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.to_string(), "reason": reason, "code": self.code()})
    }
}

/// Answer one AdmissionReview body: the review to send back, or an error when the webhook
/// cannot decide.
pub async fn answer(
    client: &kube::Client,
    reviewed: Reviewed,
    body: &[u8],
) -> Result<AdmissionReview<DynamicObject>, ReviewError> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| ReviewError::Decode(e.to_string()))?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| ReviewError::Decode("the review has no request".into()))?;
    let verdict = match reviewed {
        Reviewed::NodeMaintenance => {
            let object = parse::<NodeMaintenance>(&request.object, reviewed)?;
            let old = parse::<NodeMaintenance>(&request.old_object, reviewed)?;
            let snapshot = match (&request.operation, &object) {
                (Operation::Create, Some(nm)) if validate_node_maintenance(nm).is_empty() => {
                    read_for_node_maintenance(client, &nm.spec.node_name).await?
                }
                _ => Snapshot::default(),
            };
            decide::review_node_maintenance(
                &request.operation,
                object.as_ref(),
                old.as_ref(),
                &snapshot,
            )
        }
        Reviewed::MaintenanceWindow => {
            let object = parse::<MaintenanceWindow>(&request.object, reviewed)?;
            let old = parse::<MaintenanceWindow>(&request.old_object, reviewed)?;
            let snapshot = match (&request.operation, &object) {
                (Operation::Create | Operation::Update, Some(w))
                    if validate_maintenance_window(w).is_empty() =>
                {
                    read_for_window(client, &w.spec.node_selector).await?
                }
                _ => Snapshot::default(),
            };
            decide::review_maintenance_window(
                &request.operation,
                object.as_ref(),
                old.as_ref(),
                &snapshot,
            )
        }
    };
    if let Some(denial) = &verdict.denial {
        tracing::info!(
            kind = reviewed.kind(),
            name = request.name,
            operation = ?request.operation,
            dry_run = request.dry_run,
            "admission denied: {}",
            denial.message
        );
    }
    Ok(response(&request, reviewed, verdict).into_review())
}

fn parse<K: kube::Resource + serde::de::DeserializeOwned>(
    object: &Option<DynamicObject>,
    reviewed: Reviewed,
) -> Result<Option<K>, ReviewError> {
    object
        .clone()
        .map(|o| o.try_parse::<K>())
        .transpose()
        .map_err(|e| ReviewError::Decode(format!("the object is not a {}: {e}", reviewed.kind())))
}

/// The AdmissionResponse for a verdict.
fn response(
    request: &AdmissionRequest<DynamicObject>,
    reviewed: Reviewed,
    verdict: Verdict,
) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(request);
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings);
    }
    let Some(denial) = verdict.denial else {
        return response;
    };
    let mut response = response.deny(&denial.message);
    let mut status = Status::failure(&denial.message, denial.reason);
    status.status = Some(StatusSummary::Failure);
    status.code = denial.code;
    if !denial.causes.is_empty() {
        status.details = Some(StatusDetails {
            name: request.name.clone(),
            group: crate::api::GROUP.to_string(),
            kind: reviewed.kind().to_string(),
            uid: String::new(),
            causes: denial
                .causes
                .iter()
                .map(|c| StatusCause {
                    reason: "FieldValueInvalid".into(),
                    message: c.message.clone(),
                    field: c.field.clone(),
                })
                .collect(),
            retry_after_seconds: 0,
        });
    }
    response.result = status;
    response
}

/// What a NodeMaintenance CREATE needs: the node, every control-plane node when it is one,
/// and every NodeMaintenance. Control-plane nodes are listed by label, so a large cluster's
/// workers are never read.
async fn read_for_node_maintenance(
    client: &kube::Client,
    node_name: &str,
) -> Result<Snapshot, ReviewError> {
    let read = |what: &'static str| {
        move |source| ReviewError::ReadCluster {
            kind: "NodeMaintenance",
            what,
            source,
        }
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let mut snapshot = Snapshot::default();
    let Some(node) = nodes
        .get_opt(node_name)
        .await
        .map_err(read("get the node"))?
    else {
        return Ok(snapshot);
    };
    let is_control_plane = crate::controller::quorum::is_control_plane(&node);
    snapshot.nodes.push(node);
    if is_control_plane {
        for label in CONTROL_PLANE_LABELS {
            let listed = nodes
                .list(&ListParams::default().labels(label))
                .await
                .map_err(read("list control-plane nodes"))?;
            for n in listed.items {
                if !snapshot
                    .nodes
                    .iter()
                    .any(|s| s.metadata.name == n.metadata.name)
                {
                    snapshot.nodes.push(n);
                }
            }
        }
    }
    snapshot.node_maintenances = Api::<NodeMaintenance>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(read("list NodeMaintenances"))?
        .items;
    Ok(snapshot)
}

/// What a MaintenanceWindow needs: the nodes it selects (by label selector, on the server) and
/// every window.
async fn read_for_window(
    client: &kube::Client,
    selector: &LabelSelector,
) -> Result<Snapshot, ReviewError> {
    let read = |what: &'static str| {
        move |source| ReviewError::ReadCluster {
            kind: "MaintenanceWindow",
            what,
            source,
        }
    };
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels(&selector_query(selector)))
        .await
        .map_err(read("list the selected nodes"))?
        .items;
    let windows = Api::<MaintenanceWindow>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(read("list MaintenanceWindows"))?
        .items;
    Ok(Snapshot {
        nodes,
        node_maintenances: Vec::new(),
        windows,
    })
}

/// The `labelSelector` query form of a valid LabelSelector (`a=b,c in (d,e),!f`).
pub fn selector_query(selector: &LabelSelector) -> String {
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for req in selector.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or_default().join(",");
        terms.push(match req.operator.as_str() {
            "In" => format!("{} in ({values})", req.key),
            "NotIn" => format!("{} notin ({values})", req.key),
            "Exists" => req.key.clone(),
            _ => format!("!{}", req.key),
        });
    }
    terms.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn selectors_become_label_queries() {
        let req = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        };
        let selector = LabelSelector {
            match_labels: Some([("role".to_string(), "worker".to_string())].into()),
            match_expressions: Some(vec![
                req("zone", "In", &["a", "b"]),
                req("tier", "NotIn", &["db"]),
                req("gpu", "Exists", &[]),
                req("spot", "DoesNotExist", &[]),
            ]),
        };
        assert_eq!(
            selector_query(&selector),
            "role=worker,zone in (a,b),tier notin (db),gpu,!spot"
        );
    }

    #[test]
    fn read_errors_become_service_unavailable_statuses() {
        let e = ReviewError::Decode("no".into());
        assert_eq!(e.code(), 400);
        assert_eq!(e.status()["reason"], "BadRequest");
        assert_eq!(
            e.status()["message"],
            "cannot decode the AdmissionReview: no"
        );
    }
}
