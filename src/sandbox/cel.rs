//! CEL rules of CRD schemas (`x-kubernetes-validations`), evaluated with kube's CEL
//! validator (kube-cel), including transition rules on `oldSelf`. Causes are worded like
//! kube-apiserver's since v1.35: `spec.x: Invalid value: "4 hours": <message>` for a scalar, and
//! `spec.x: Invalid value: <message>` for an object or a list, whose value is not shown.

use super::error::Cause;
use kube::core::cel::{ErrorKind, ValidationError, Validator};
use serde_json::Value;

thread_local! {
    // Building a validator registers every Kubernetes CEL function: do it once per thread.
    static VALIDATOR: Validator = Validator::new();
}

/// Evaluate every rule of the schema tree on the object (and the old object, for transition
/// rules). Returns a cause per failed rule.
pub fn check_rules(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let result = VALIDATOR.with(|v| v.validate(schema, obj, old));
    match result {
        Ok(()) => vec![],
        Err(errors) => errors.into_iter().map(|e| cause(obj, &e)).collect(),
    }
}

fn cause(obj: &Value, e: &ValidationError) -> Cause {
    let path = e.field_path.trim_start_matches('.').to_string();
    // A rule on the root has no field path: kube-apiserver prints it as Go's nil path.
    let field = if path.is_empty() {
        "<nil>".to_string()
    } else {
        path.clone()
    };
    let message = match e.kind {
        ErrorKind::ValidationFailure => e.message.clone(),
        _ => format!("{} (rule: {})", e.message, e.rule),
    };
    Cause {
        reason: e
            .reason
            .as_deref()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "FieldValueInvalid".into()),
        message: match value_at(obj, &path).and_then(scalar) {
            Some(value) => format!("Invalid value: {value}: {message}"),
            None => format!("Invalid value: {message}"),
        },
        field,
    }
}

/// A scalar as Go's `field.Invalid` prints it (strings quoted); `None` for objects, lists and
/// null, whose value kube-apiserver leaves out of CEL errors since v1.35.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(format!("{s:?}")),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// The value at a CEL error's field path (`spec.items[0].name`, `spec.labels.key`); the root
/// for an empty path.
fn value_at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = obj;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let mut parts = seg.split('[');
        let key = parts.next().unwrap_or_default();
        if !key.is_empty() {
            node = node.get(key)?;
        }
        for index in parts {
            let i: usize = index.trim_end_matches(']').parse().ok()?;
            node = node.get(i)?;
        }
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(kind: &str) -> Value {
        crate::api::crds()
            .into_iter()
            .map(|c| serde_json::to_value(c).unwrap())
            .find(|c| c["spec"]["names"]["kind"] == kind)
            .unwrap()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            .clone()
    }

    fn window(max_unavailable: Value) -> Value {
        json!({"metadata": {"name": "w"}, "spec": {"schedule": "0 2 * * *", "duration": "4h", "nodeSelector": {"matchLabels": {"a": "b"}},
            "release": {"after": "10m"}, "maxUnavailable": max_unavailable}})
    }

    #[test]
    fn a_broken_rule_is_reported_with_its_message_and_field() {
        let s = schema("MaintenanceWindow");
        assert!(check_rules(&s, &window(json!(2)), None).is_empty());
        assert!(check_rules(&s, &window(json!("20%")), None).is_empty());
        let causes = check_rules(&s, &window(json!("0%")), None);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.maxUnavailable");
        assert_eq!(
            causes[0].message,
            "Invalid value: \"0%\": spec.maxUnavailable must be an integer >= 1 or a percentage from 1% to 100%"
        );
    }

    #[test]
    fn a_scalar_is_shown_and_an_object_is_not() {
        let s = schema("MaintenanceWindow");
        let mut w = window(json!(1));
        w["spec"]["duration"] = json!("4 hours");
        w["spec"]["nodeSelector"] = json!({});
        let mut messages: Vec<String> = check_rules(&s, &w, None)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        messages.sort();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0]
                .starts_with("spec.duration: Invalid value: \"4 hours\": spec.duration must be"),
            "{messages:?}"
        );
        assert!(
            messages[1].starts_with(
                "spec.nodeSelector: Invalid value: spec.nodeSelector must not be empty"
            ),
            "{messages:?}"
        );
    }

    #[test]
    fn values_are_found_by_field_path() {
        let o = json!({"spec": {"items": [{"n": 3}], "labels": {"a": true}}});
        assert_eq!(value_at(&o, "spec.items[0].n"), Some(&json!(3)));
        assert_eq!(value_at(&o, "spec.labels.a"), Some(&json!(true)));
        assert_eq!(value_at(&o, ""), Some(&o));
        assert_eq!(value_at(&o, "spec.items[1]"), None);
        assert_eq!(scalar(&json!("x")), Some("\"x\"".to_string()));
        assert_eq!(scalar(&json!({"a": 1})), None);
    }

    #[test]
    fn root_rules_see_the_object_name() {
        let s = schema("MaintenanceWindow");
        let mut long = window(json!(1));
        long["metadata"]["name"] = json!("w".repeat(64));
        let causes = check_rules(&s, &long, None);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert!(
            causes[0]
                .message
                .ends_with(crate::api::maintenance_window::WINDOW_NAME_TOO_LONG),
            "{}",
            causes[0].message
        );
    }

    #[test]
    fn transition_rules_compare_with_the_old_object() {
        let s = schema("NodeMaintenance");
        let old = json!({"spec": {"nodeName": "a"}});
        assert!(check_rules(&s, &old, Some(&old)).is_empty());
        let causes = check_rules(&s, &json!({"spec": {"nodeName": "b"}}), Some(&old));
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.nodeName");
        assert!(
            causes[0]
                .message
                .ends_with("updating spec.NodeName isn't allowed"),
            "{}",
            causes[0].message
        );
        assert!(check_rules(&s, &json!({"spec": {"nodeName": "b"}}), None).is_empty());
    }
}
