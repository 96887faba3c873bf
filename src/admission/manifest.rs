//! Rules for a manifest as written in Git (a raw YAML/JSON document), for `nmo validate`.
//!
//! A typed object cannot hold a missing required field, a misspelt field or a wrong type, so
//! those are checked here on the raw document against the CRD schema that `nmo crds`
//! prints, the way `kubectl apply` (strict field validation) and the API server would refuse
//! them. Then the typed rules run ([`super::validate_maintenance_window`],
//! [`super::validate_node_maintenance`]).

use super::FieldError;
use crate::api::{GROUP, MaintenanceWindow, NodeMaintenance};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray,
};
use serde_json::{Value, json};

/// Check one document. Documents outside nmo's API group are not nmo's and pass; an unknown
/// kind or version inside the group is a problem.
pub fn validate_manifest(document: &Value) -> Vec<FieldError> {
    let api_version = document
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = document.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version.split('/').next() != Some(GROUP) {
        return Vec::new();
    }
    let Some((crd_kind, schema)) = crate::api::crds().into_iter().find_map(|crd| {
        let kind_matches = crd.spec.names.kind == kind;
        crd.spec.versions.into_iter().find_map(|v| {
            let schema = v.schema?.open_api_v3_schema?;
            (kind_matches && api_version == format!("{GROUP}/{}", v.name))
                .then(|| (kind.to_string(), schema))
        })
    }) else {
        return vec![FieldError::new(
            "kind",
            format!(
                "unknown kind {kind:?} in {api_version:?}: nmo serves NodeMaintenance ({GROUP}/v1beta1) and MaintenanceWindow ({GROUP}/v1alpha1)"
            ),
        )];
    };

    let mut errors = Vec::new();
    let mut document = document.clone();
    // Only spec is checked against the schema: metadata is free-form here, status is ignored.
    let spec_schema = schema
        .properties
        .as_ref()
        .and_then(|p| p.get("spec"))
        .cloned()
        .unwrap_or_default();
    match document.get("spec") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("spec", "required"));
            document["spec"] = json!({});
        }
        Some(_) => {}
    }
    check_schema(&document["spec"], &spec_schema, "spec", &mut errors);
    // Fill missing required fields with valid placeholders so the typed rules can still look
    // at everything else; the missing fields were reported above.
    let placeholders = [
        ("schedule", json!("0 0 * * *")),
        ("duration", json!("1h")),
        ("nodeSelector", json!({"matchLabels": {"placeholder": "x"}})),
        ("release", json!({"onReboot": true})),
        ("nodeName", json!("placeholder")),
    ];
    for (field, value) in placeholders {
        let required = spec_schema
            .required
            .as_ref()
            .is_some_and(|r| r.iter().any(|f| f == field));
        if required && document["spec"].get(field).is_none_or(Value::is_null) {
            document["spec"][field] = value;
        }
    }
    if !errors.is_empty() {
        // Structural problems first; typed rules would only repeat them in other words.
        return errors;
    }
    match crd_kind.as_str() {
        "MaintenanceWindow" => match serde_json::from_value::<MaintenanceWindow>(document) {
            Ok(window) => errors.extend(super::validate_maintenance_window(&window)),
            Err(e) => errors.push(FieldError::new("spec", format!("cannot be read: {e}"))),
        },
        "NodeMaintenance" => match serde_json::from_value::<NodeMaintenance>(document) {
            Ok(maintenance) => errors.extend(super::validate_node_maintenance(&maintenance)),
            Err(e) => errors.push(FieldError::new("spec", format!("cannot be read: {e}"))),
        },
        _ => {}
    }
    errors
}

/// Required fields, unknown fields and JSON types, recursively, as the API server checks a
/// structural schema.
fn check_schema(value: &Value, schema: &JSONSchemaProps, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        return;
    }
    if let Some(problem) = type_problem(value, schema) {
        errors.push(FieldError::new(path, problem));
        return;
    }
    if let (Value::Object(map), Some(properties)) = (value, schema.properties.as_ref()) {
        for required in schema.required.iter().flatten() {
            if map.get(required).is_none_or(Value::is_null) {
                errors.push(FieldError::new(format!("{path}.{required}"), "required"));
            }
        }
        for (key, child) in map {
            match properties.get(key) {
                Some(child_schema) => {
                    check_schema(child, child_schema, &format!("{path}.{key}"), errors)
                }
                None if schema.x_kubernetes_preserve_unknown_fields != Some(true) => {
                    let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                    errors.push(FieldError::new(
                        format!("{path}.{key}"),
                        format!("unknown field; the known fields are {}", known.join(", ")),
                    ));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(JSONSchemaPropsOrArray::Schema(item_schema))) =
        (value, schema.items.as_ref())
    {
        for (i, item) in items.iter().enumerate() {
            check_schema(item, item_schema, &format!("{path}[{i}]"), errors);
        }
    }
}

fn type_problem(value: &Value, schema: &JSONSchemaProps) -> Option<String> {
    let shown = || {
        let text = value.to_string();
        if text.len() > 40 {
            format!("{}...", &text[..40])
        } else {
            text
        }
    };
    if schema.x_kubernetes_int_or_string == Some(true) {
        return (!(value.is_i64() || value.is_string()))
            .then(|| format!("must be an integer or a string, got {}", shown()));
    }
    let ok = match schema.type_.as_deref() {
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        _ => true,
    };
    (!ok).then(|| {
        format!(
            "must be {} {}, got {}",
            if schema.type_.as_deref() == Some("integer")
                || schema.type_.as_deref() == Some("array")
            {
                "an"
            } else {
                "a"
            },
            schema.type_.as_deref().unwrap_or_default(),
            shown()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(spec: Value) -> Value {
        json!({
            "apiVersion": "nodemaintenance.medik8s.io/v1alpha1",
            "kind": "MaintenanceWindow",
            "metadata": {"name": "w"},
            "spec": spec,
        })
    }

    fn messages(doc: &Value) -> Vec<String> {
        validate_manifest(doc)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn missing_required_fields_are_named() {
        let got = messages(&window(json!({
            "schedule": "0 2 * * *",
            "duration": "4h",
            "nodeSelector": {"matchLabels": {"role": "worker"}},
        })));
        assert_eq!(got, ["spec.release: required"]);
    }

    #[test]
    fn misspelt_fields_and_wrong_types_are_named() {
        let got = messages(&window(json!({
            "schedule": "0 2 * * *",
            "duration": 4,
            "nodeSelector": {"matchLabels": {"role": "worker"}},
            "release": {"onReboot": true},
            "maxUnavailble": 2,
        })));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], "spec.duration: must be a string, got 4");
        assert!(got[1].starts_with("spec.maxUnavailble: unknown field; the known fields are dryRun, duration, exclusions, healthGate, maxFailures, maxUnavailable"), "{}", got[1]);
    }

    #[test]
    fn other_groups_pass_and_unknown_kinds_in_the_group_do_not() {
        assert!(messages(&json!({"apiVersion": "v1", "kind": "Node"})).is_empty());
        let got = messages(
            &json!({"apiVersion": "nodemaintenance.medik8s.io/v1", "kind": "NodeMaintenance"}),
        );
        assert!(
            got[0].starts_with(
                "kind: unknown kind \"NodeMaintenance\" in \"nodemaintenance.medik8s.io/v1\""
            ),
            "{got:?}"
        );
    }

    #[test]
    fn typed_rules_run_after_the_schema() {
        let got = messages(&json!({
            "apiVersion": "nodemaintenance.medik8s.io/v1beta1",
            "kind": "NodeMaintenance",
            "metadata": {"name": "nm"},
            "spec": {"nodeName": ""},
        }));
        assert_eq!(
            got,
            ["spec.nodeName: must not be empty: set it to the name of a node"]
        );
    }
}
