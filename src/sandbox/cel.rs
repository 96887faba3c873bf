//! CEL rules of CRD schemas (`x-kubernetes-validations`), evaluated with kube's CEL
//! validator (kube-cel), including transition rules on `oldSelf`. Causes are worded like
//! kube-apiserver's: `spec.x: Invalid value: "string": <message>`.

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
        Err(errors) => errors.into_iter().map(|e| cause(schema, &e)).collect(),
    }
}

fn cause(schema: &Value, e: &ValidationError) -> Cause {
    let field = e.field_path.trim_start_matches('.').to_string();
    let type_name = schema_type_at(schema, &field);
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
        message: format!("Invalid value: \"{type_name}\": {message}"),
        field,
    }
}

/// The schema type at a dotted path, as kube-apiserver prints it in CEL errors.
fn schema_type_at(schema: &Value, path: &str) -> String {
    let mut node = schema;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let seg = seg.split('[').next().unwrap_or(seg);
        node = match node.pointer(&format!("/properties/{seg}")) {
            Some(n) => n,
            None => match node.get("additionalProperties").filter(|a| a.is_object()) {
                Some(a) => a,
                None => break,
            },
        };
        while node.get("type").and_then(Value::as_str) == Some("array") && path.contains('[') {
            match node.get("items") {
                Some(i) => node = i,
                None => break,
            }
        }
    }
    match node.get("type").and_then(Value::as_str) {
        Some(t) => t.to_string(),
        None if node.get("x-kubernetes-int-or-string").is_some() => "string".into(),
        None => "object".into(),
    }
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
            "Invalid value: \"string\": spec.maxUnavailable must be an integer >= 1 or a percentage from 1% to 100%"
        );
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
