//! Structural-schema validation of custom resources, as kube-apiserver does it: pruning of
//! unknown fields, types, required fields, enums, patterns, bounds; then the CEL rules
//! (`x-kubernetes-validations`, see `cel.rs`). Pure. Causes are worded like the apiserver's.

use super::error::Cause;
use serde_json::{Map, Value};

/// Validate (and prune) an object against a version's `openAPIV3Schema`. `old` is the stored
/// object on updates (for CEL transition rules). Returns the causes of failure, empty when
/// valid.
pub fn validate_object(schema: &Value, obj: &mut Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(m) = obj.as_object_mut() {
        // apiVersion, kind and metadata are the server's; prune and check only the rest.
        for (k, v) in m.iter_mut() {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(s) = schema.pointer(&format!("/properties/{k}")) {
                prune(s, v);
                check(s, v, k, &mut causes);
            }
        }
        if !preserves_unknown(schema) {
            let props = schema.get("properties").and_then(Value::as_object);
            m.retain(|k, _| {
                matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                    || props.is_some_and(|p| p.contains_key(k))
            });
        }
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !m.contains_key(r) {
                    causes.push(required(r));
                }
            }
        }
    }
    // kube-apiserver lists unsupported values first and required fields last.
    causes.sort_by_key(|c| match c.reason.as_str() {
        "FieldValueNotSupported" => 0,
        "FieldValueRequired" => 2,
        _ => 1,
    });
    if has_rules(schema) {
        // As kube-apiserver: errors that make the object unfit for CEL (wrong types, missing
        // required fields, enums, too long or too many) skip the rules, and say so.
        if causes.iter().any(|c| BLOCKING.contains(&c.reason.as_str())) {
            causes.push(Cause {
                reason: "FieldValueInvalid".into(),
                message: RULES_NOT_CHECKED.into(),
                field: "<nil>".into(),
            });
        } else {
            causes.extend(super::cel::check_rules(schema, obj, old));
        }
    }
    causes
}

/// The cause reasons after which kube-apiserver does not evaluate CEL rules.
const BLOCKING: [&str; 5] = [
    "FieldValueNotSupported",
    "FieldValueRequired",
    "FieldValueTooLong",
    "FieldValueTooMany",
    "FieldValueTypeInvalid",
];

/// The cause kube-apiserver adds when blocking errors kept the CEL rules from running.
pub const RULES_NOT_CHECKED: &str = "Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

/// Does any level of the schema carry `x-kubernetes-validations`?
fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(m) => {
            m.get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .is_some_and(|r| !r.is_empty())
                || m.values().any(has_rules)
        }
        Value::Array(a) => a.iter().any(has_rules),
        _ => false,
    }
}

/// The fields of an object its schema does not declare, as `.spec.x` paths (what
/// `fieldValidation=Strict` refuses).
pub fn unknown_fields(schema: &Value, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match schema.pointer(&format!("/properties/{k}")) {
                Some(s) => collect_unknown(s, v, &format!(".{k}"), &mut out),
                None if !preserves_unknown(schema) => out.push(format!(".{k}")),
                None => {}
            }
        }
    }
    out
}

fn collect_unknown(schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, child) in m {
                    match props.get(k) {
                        Some(s) => collect_unknown(s, child, &format!("{path}.{k}"), out),
                        None if !preserves_unknown(schema) => out.push(format!("{path}.{k}")),
                        None => {}
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, child) in m {
                    collect_unknown(ap, child, &format!("{path}.{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    collect_unknown(s, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn preserves_unknown(s: &Value) -> bool {
    s.get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

/// Drop the fields the schema does not know (unless it preserves unknown fields).
pub fn prune(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                if !preserves_unknown(schema) {
                    m.retain(|k, _| props.contains_key(k));
                }
                for (k, child) in m.iter_mut() {
                    if let Some(s) = props.get(k) {
                        prune(s, child);
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in m.values_mut() {
                    prune(ap, child);
                }
            } else if !preserves_unknown(schema)
                && schema.get("type").and_then(Value::as_str) == Some("object")
                && schema.get("additionalProperties").is_none()
            {
                m.clear();
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for i in items {
                    prune(s, i);
                }
            }
        }
        _ => {}
    }
}

fn required(field: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired".into(),
        message: "Required value".into(),
        field: field.into(),
    }
}

fn invalid(field: &str, v: &Value, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {}: {detail}", render(v)),
        field: field.into(),
    }
}

/// A value as kube-apiserver prints it in messages: strings quoted, objects as `"object"`.
pub fn render(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Check one value against its schema, collecting causes with dotted field paths.
pub fn check(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if v.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true)
            && schema.get("type").is_some()
        {
            causes.push(Cause {
                reason: "FieldValueTypeInvalid".into(),
                message: format!(
                    "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                    schema["type"].as_str().unwrap_or("object")
                ),
                field: path.into(),
            });
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if int_or_string {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            causes.push(Cause {
                reason: "FieldValueTypeInvalid".into(),
                message: format!(
                    "Invalid value: {:?}: {path} in body must be of type integer,string: {:?}",
                    type_name(v),
                    type_name(v)
                ),
                field: path.into(),
            });
            return;
        }
    } else if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(v);
        let ok = actual == t || (t == "number" && actual == "integer");
        if !ok {
            causes.push(Cause {
                reason: "FieldValueTypeInvalid".into(),
                message: format!(
                    "Invalid value: {actual:?}: {path} in body must be of type {t}: {actual:?}"
                ),
                field: path.into(),
            });
            return;
        }
    }
    if let Some(en) = schema.get("enum").and_then(Value::as_array)
        && !en.contains(v)
    {
        let allowed: Vec<String> = en.iter().map(|e| e.to_string()).collect();
        causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                v,
                allowed.join(", ")
            ),
            field: path.into(),
        });
    }
    match v {
        Value::String(s) => {
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(p) {
                    Ok(re) if !re.is_match(s) => causes.push(invalid(
                        path,
                        v,
                        &format!("{path} in body should match '{p}'"),
                    )),
                    _ => {}
                }
            }
            let len = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                causes.push(Cause {
                    reason: "FieldValueTooLong".into(),
                    message: format!("Too long: may not be more than {max} bytes"),
                    field: path.into(),
                });
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                causes.push(invalid(
                    path,
                    v,
                    &format!("{path} in body should be at least {min} chars long"),
                ));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                let excl = schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
                if x < min || (excl && x == min) {
                    let word = if excl {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    causes.push(invalid(
                        path,
                        v,
                        &format!("{path} in body should be {word} {}", trim_float(min)),
                    ));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                let excl = schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
                if x > max || (excl && x == max) {
                    let word = if excl {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    causes.push(invalid(
                        path,
                        v,
                        &format!("{path} in body should be {word} {}", trim_float(max)),
                    ));
                }
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                causes.push(Cause {
                    reason: "FieldValueTooMany".into(),
                    message: format!("Too many: {}: must have at most {max} items", items.len()),
                    field: path.into(),
                });
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                causes.push(invalid(
                    path,
                    v,
                    &format!("{path} in body should have at least {min} items"),
                ));
            }
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(s, item, &format!("{path}[{i}]"), causes);
                }
            }
        }
        Value::Object(m) => {
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !m.contains_key(r) {
                        causes.push(required(&format!("{path}.{r}")));
                    }
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in m {
                let sub = props.and_then(|p| p.get(k)).or(extra);
                if let Some(s) = sub {
                    check(s, child, &format!("{path}.{k}"), causes);
                }
            }
        }
        _ => {}
    }
}

fn trim_float(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

/// A structural copy of a map without unknown keys (used by tests and callers).
pub fn known_keys(schema: &Value, m: &Map<String, Value>) -> Vec<String> {
    let props = schema.get("properties").and_then(Value::as_object);
    m.keys()
        .filter(|k| props.is_some_and(|p| p.contains_key(*k)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["schedule"], "properties": {
                "schedule": {"type": "string", "pattern": "^[0-9@]"},
                "max": {"type": "integer", "minimum": 0, "maximum": 10},
                "mode": {"type": "string", "enum": ["A", "B"]},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "items": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "string"}}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            }},
            "status": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}})
    }

    fn messages(obj: Value) -> Vec<String> {
        let mut o = obj;
        validate_object(&schema(), &mut o, None)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn unknown_fields_are_pruned_at_every_level_unless_preserved() {
        let mut o = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"}, "junk": 1,
            "spec": {"schedule": "1", "extra": true, "items": [{"n": "a", "z": 1}], "labels": {"a": "b"},
                "free": {"anything": {"goes": 1}}}});
        assert!(validate_object(&schema(), &mut o, None).is_empty());
        assert!(o.get("junk").is_none());
        assert!(o["spec"].get("extra").is_none());
        assert_eq!(o["spec"]["items"], json!([{"n": "a"}]));
        assert_eq!(o["spec"]["free"], json!({"anything": {"goes": 1}}));
        assert_eq!(o["metadata"]["name"], json!("a"));
    }

    #[test]
    fn strict_field_validation_names_the_unknown_fields() {
        let o = json!({"metadata": {"name": "a"}, "junk": 1,
            "spec": {"schedule": "1", "extra": true, "items": [{"n": "a", "z": 1}], "free": {"x": 1}}});
        assert_eq!(
            unknown_fields(&schema(), &o),
            [".junk", ".spec.extra", ".spec.items[0].z"]
        );
    }

    #[test]
    fn causes_are_worded_like_the_apiserver() {
        assert_eq!(
            messages(json!({"spec": {}})),
            ["spec.schedule: Required value"]
        );
        assert_eq!(
            messages(json!({"spec": {"schedule": 5}})),
            [
                "spec.schedule: Invalid value: \"integer\": spec.schedule in body must be of type string: \"integer\""
            ]
        );
        assert_eq!(
            messages(json!({"spec": {"schedule": "x"}})),
            ["spec.schedule: Invalid value: \"x\": spec.schedule in body should match '^[0-9@]'"]
        );
        assert_eq!(
            messages(json!({"spec": {"schedule": "1", "max": 11}})),
            ["spec.max: Invalid value: 11: spec.max in body should be less than or equal to 10"]
        );
        assert_eq!(
            messages(json!({"spec": {"schedule": "1", "mode": "C"}})),
            ["spec.mode: Unsupported value: \"C\": supported values: \"A\", \"B\""]
        );
        assert_eq!(
            messages(json!({"spec": {"schedule": "1", "labels": {"a": 1}}})),
            [
                "spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\""
            ]
        );
    }
}
