//! Admission rules, as pure functions shared by the validating webhook and `nmo validate`.
//!
//! Only rules that need no cluster live here: the schedule, zone, durations, budget,
//! selector and release of a MaintenanceWindow, and the node name of a NodeMaintenance.
//! Rules that need the cluster (the node exists, one NodeMaintenance per node, control-plane
//! quorum) belong to the webhook ([`webhook`]). Every message names the field, the value and what is
//! allowed: `spec.timeZone: unknown time zone "Europe/Berln", did you mean "Europe/Berlin"?`.

pub mod manifest;
pub mod webhook;

pub use manifest::validate_manifest;

use crate::api::{MaintenanceWindow, NodeMaintenance};
use crate::schedule::WindowPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use regex::Regex;
use std::sync::LazyLock;

/// One problem with one field. Renders as `field: message`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// Path of the field, such as `spec.nodeSelector.matchExpressions[0].operator`.
    pub field: String,
    /// What is wrong, with the value and what is allowed.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

static DNS1123_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("valid regex"));
static DNS1123_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        .expect("valid regex")
});
/// The pattern the CRD's CEL rules put on duration fields.
static CRD_DURATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$").expect("valid regex"));
static LABEL_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").expect("valid regex")
});

/// Offline rules for a MaintenanceWindow: its name, every spec field (see
/// [`WindowPolicy::from_spec`]) and its node selector (see [`validate_node_selector`]).
///
/// The name must be a DNS-1123 label (at most 63 characters) because it is used as the value
/// of the `nodemaintenance.medik8s.io/window` label on generated NodeMaintenances.
pub fn validate_maintenance_window(window: &MaintenanceWindow) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match window.metadata.name.as_deref() {
        None if window.metadata.generate_name.is_some() => {}
        None | Some("") => errors.push(FieldError::new("metadata.name", "must be set")),
        Some(name) if name.len() > 63 || !DNS1123_LABEL.is_match(name) => {
            errors.push(FieldError::new(
                "metadata.name",
                format!(
                    "{name:?} is not allowed: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit (it becomes the value of the {} label)",
                    crate::api::WINDOW_LABEL
                ),
            ));
        }
        Some(_) => {}
    }
    if let Err(spec_errors) = WindowPolicy::from_spec(&window.spec) {
        errors.extend(spec_errors);
    }
    // Go accepts "0", signs and ".5h"; the CRD's pattern does not, so neither does validate.
    let durations = [
        ("spec.duration", Some(&window.spec.duration)),
        ("spec.nodeTimeout", window.spec.node_timeout.as_ref()),
        ("spec.release.after", window.spec.release.after.as_ref()),
    ];
    for (field, value) in durations {
        if let Some(value) = value
            && !CRD_DURATION.is_match(value)
            && !errors.iter().any(|e| e.field == field)
        {
            errors.push(FieldError::new(
                field,
                format!(
                    "{value:?} is not accepted by the CRD: write numbers with units and no sign, such as \"90m\", \"1h30m\" or \"0s\""
                ),
            ));
        }
    }
    errors.extend(validate_node_selector(
        &window.spec.node_selector,
        "spec.nodeSelector",
    ));
    errors
}

/// Offline rules for a NodeMaintenance: `spec.nodeName` is set and is a valid node name (a
/// DNS-1123 subdomain). Whether the node exists is checked by the webhook.
pub fn validate_node_maintenance(maintenance: &NodeMaintenance) -> Vec<FieldError> {
    let name = &maintenance.spec.node_name;
    if name.is_empty() {
        return vec![FieldError::new(
            "spec.nodeName",
            "must not be empty: set it to the name of a node",
        )];
    }
    if name.len() > 253 || !DNS1123_SUBDOMAIN.is_match(name) {
        return vec![FieldError::new(
            "spec.nodeName",
            format!(
                "{name:?} is not a valid node name: use lowercase letters, digits, '-' and '.', at most 253 characters"
            ),
        )];
    }
    Vec::new()
}

/// A MaintenanceWindow's selector must select something specific: at least one
/// `matchLabels` pair or `matchExpressions` requirement (an empty selector would select every
/// node in the cluster), valid label keys and values, operators `In`, `NotIn`, `Exists` or
/// `DoesNotExist`, values for `In`/`NotIn` and none for `Exists`/`DoesNotExist`.
pub fn validate_node_selector(selector: &LabelSelector, field: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let labels = selector.match_labels.as_ref().filter(|m| !m.is_empty());
    let expressions = selector
        .match_expressions
        .as_ref()
        .filter(|e| !e.is_empty());
    if labels.is_none() && expressions.is_none() {
        errors.push(FieldError::new(
            field,
            "must not be empty: set matchLabels or matchExpressions (an empty selector would select every node)",
        ));
    }
    for (key, value) in labels.into_iter().flatten() {
        let at = format!("{field}.matchLabels[{key:?}]");
        if let Some(message) = label_key_problem(key) {
            errors.push(FieldError::new(&at, message));
        }
        if let Some(message) = label_value_problem(value) {
            errors.push(FieldError::new(&at, message));
        }
    }
    for (i, req) in expressions.into_iter().flatten().enumerate() {
        let at = format!("{field}.matchExpressions[{i}]");
        if let Some(message) = label_key_problem(&req.key) {
            errors.push(FieldError::new(format!("{at}.key"), message));
        }
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errors.push(FieldError::new(
                        format!("{at}.values"),
                        format!("must not be empty for operator {}", req.operator),
                    ));
                }
                for (j, value) in values.iter().enumerate() {
                    if let Some(message) = label_value_problem(value) {
                        errors.push(FieldError::new(format!("{at}.values[{j}]"), message));
                    }
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errors.push(FieldError::new(
                        format!("{at}.values"),
                        format!("must be empty for operator {}", req.operator),
                    ));
                }
            }
            other => errors.push(FieldError::new(
                format!("{at}.operator"),
                format!("{other:?} is not allowed: use In, NotIn, Exists or DoesNotExist"),
            )),
        }
    }
    errors
}

/// Why `key` is not a valid label key (`[prefix/]name`), if it is not.
fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && DNS1123_SUBDOMAIN.is_match(p));
    let name_ok = name.len() <= 63 && LABEL_NAME.is_match(name);
    (!prefix_ok || !name_ok).then(|| {
        format!(
            "label key {key:?} is not valid: use an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    })
}

/// Why `value` is not a valid label value, if it is not.
fn label_value_problem(value: &str) -> Option<String> {
    let ok = value.is_empty() || (value.len() <= 63 && LABEL_NAME.is_match(value));
    (!ok).then(|| {
        format!(
            "label value {value:?} is not valid: use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, or the empty string"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MaintenanceWindowSpec, NodeMaintenanceSpec, Release};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    /// A valid window; tests break one thing each.
    fn window() -> MaintenanceWindow {
        MaintenanceWindow::new(
            "weekly",
            MaintenanceWindowSpec {
                schedule: "0 2 * * SAT".into(),
                time_zone: Some("Europe/Berlin".into()),
                duration: "4h".into(),
                node_selector: LabelSelector {
                    match_labels: Some([("role".to_string(), "worker".to_string())].into()),
                    ..Default::default()
                },
                max_unavailable: Some(IntOrString::Int(2)),
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

    fn messages(w: &MaintenanceWindow) -> Vec<String> {
        validate_maintenance_window(w)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_valid_window_has_no_problems() {
        assert_eq!(messages(&window()), Vec::<String>::new());
    }

    #[test]
    fn each_broken_field_gets_its_own_message() {
        type Breaker = fn(&mut MaintenanceWindow);
        let cases: Vec<(Breaker, &str)> = vec![
            (
                |w| w.spec.schedule = "0 2 * * FUNDAY".into(),
                "spec.schedule: invalid cron expression \"0 2 * * FUNDAY\": day of week field \"FUNDAY\"",
            ),
            (
                |w| w.spec.time_zone = Some("Europe/Berln".into()),
                "spec.timeZone: unknown time zone \"Europe/Berln\"",
            ),
            (
                |w| w.spec.duration = "4 hours".into(),
                "spec.duration: invalid duration \"4 hours\"",
            ),
            (
                |w| w.spec.duration = "0s".into(),
                "spec.duration: \"0s\" is not allowed: a window must last at least 1m",
            ),
            (
                |w| w.spec.duration = "800h".into(),
                "spec.duration: \"800h\" is too long",
            ),
            (
                |w| w.spec.max_unavailable = Some(IntOrString::Int(0)),
                "spec.maxUnavailable: 0 is not allowed",
            ),
            (
                |w| w.spec.max_unavailable = Some(IntOrString::String("150%".into())),
                "spec.maxUnavailable: \"150%\" is not allowed: a percentage must be from 1% to 100%",
            ),
            (
                |w| w.spec.max_unavailable = Some(IntOrString::String("5".into())),
                "spec.maxUnavailable: \"5\" is not allowed: a string must be a percentage",
            ),
            (
                |w| w.spec.node_selector = LabelSelector::default(),
                "spec.nodeSelector: must not be empty",
            ),
            (
                |w| w.spec.release = Release::default(),
                "spec.release: must set after",
            ),
            (
                |w| w.spec.release.after = Some("-5m".into()),
                "spec.release.after: \"-5m\" is not allowed: it must not be negative",
            ),
            (
                |w| w.spec.node_timeout = Some("0s".into()),
                "spec.nodeTimeout: \"0s\" is not allowed: it must be longer than 0",
            ),
            (
                |w| w.spec.min_ready_seconds = Some(-1),
                "spec.minReadySeconds: -1 is not allowed",
            ),
            (
                |w| w.spec.max_failures = Some(-1),
                "spec.maxFailures: -1 is not allowed",
            ),
            (
                |w| w.metadata.name = Some("Weekly_Workers".into()),
                "metadata.name: \"Weekly_Workers\" is not allowed",
            ),
            (
                |w| w.spec.schedule = "0 0 31 2 *".into(),
                "spec.schedule: \"0 0 31 2 *\" never fires",
            ),
            (
                |w| {
                    w.spec.node_selector.match_expressions = Some(vec![LabelSelectorRequirement {
                        key: "role".into(),
                        operator: "Equals".into(),
                        values: None,
                    }])
                },
                "spec.nodeSelector.matchExpressions[0].operator: \"Equals\" is not allowed: use In, NotIn, Exists or DoesNotExist",
            ),
            (
                |w| {
                    w.spec.node_selector.match_expressions = Some(vec![LabelSelectorRequirement {
                        key: "role".into(),
                        operator: "In".into(),
                        values: Some(vec![]),
                    }])
                },
                "spec.nodeSelector.matchExpressions[0].values: must not be empty for operator In",
            ),
            (
                |w| {
                    w.spec.node_selector.match_expressions = Some(vec![LabelSelectorRequirement {
                        key: "role".into(),
                        operator: "Exists".into(),
                        values: Some(vec!["x".into()]),
                    }])
                },
                "spec.nodeSelector.matchExpressions[0].values: must be empty for operator Exists",
            ),
            (
                |w| {
                    w.spec.node_selector.match_labels =
                        Some([("bad key!".to_string(), "x".to_string())].into())
                },
                "spec.nodeSelector.matchLabels[\"bad key!\"]: label key \"bad key!\" is not valid",
            ),
        ];
        for (breaker, expected) in cases {
            let mut w = window();
            breaker(&mut w);
            let got = messages(&w);
            assert_eq!(got.len(), 1, "{expected}: {got:?}");
            assert!(
                got[0].starts_with(expected),
                "{got:?} does not start with {expected:?}"
            );
        }
    }

    #[test]
    fn node_maintenance_needs_a_valid_node_name() {
        let nm = |name: &str| {
            NodeMaintenance::new(
                "nm",
                NodeMaintenanceSpec {
                    node_name: name.into(),
                    reason: None,
                },
            )
        };
        assert!(validate_node_maintenance(&nm("worker-1.example.com")).is_empty());
        assert_eq!(
            validate_node_maintenance(&nm(""))[0].to_string(),
            "spec.nodeName: must not be empty: set it to the name of a node"
        );
        assert!(
            validate_node_maintenance(&nm("Worker_1"))[0]
                .to_string()
                .contains("\"Worker_1\" is not a valid node name")
        );
    }
}
