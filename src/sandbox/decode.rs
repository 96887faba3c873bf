//! Request bodies and parameters, decoded and refused the way kube-apiserver does, with its
//! wording (which comes from Go's `encoding/json` and `strconv`). Pure.

use super::error::ApiError;
use super::resources::ResourceType;
use serde_json::Value;

/// Decode the body of a create or an update: JSON or YAML, an object of the resource's kind
/// and version; or protobuf for a built-in kind ([`super::protobuf`]). Protobuf for a custom
/// resource, and unknown content types, get 415.
pub fn object(rt: &ResourceType, content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let v: Value = match ct {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            unrecognized(rt, &json_syntax_error(&e), &String::from_utf8_lossy(body))
        })?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "the body of the request could not be decoded as YAML: {e}"
                ))
            })?,
        ct if !rt.custom && super::protobuf::is_protobuf(ct) => {
            super::protobuf::decode(body).map_err(|e| e.to_api_error(Some(&rt.kind)))?
        }
        _ => return Err(ApiError::unsupported_media_type(rt.custom)),
    };
    if !v.is_object() {
        let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
        return Err(unrecognized(
            rt,
            &format!(
                "json: cannot unmarshal {} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}",
                go_type(&v)
            ),
            &hex,
        ));
    }
    check_kind(rt, &v)?;
    Ok(v)
}

/// The object's `kind` and `apiVersion`, when set, must be the resource's.
pub fn check_kind(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let version = api_version.rsplit('/').next().unwrap_or_default();
    if !kind.is_empty() && kind != rt.kind {
        let mut e = ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {}: converting ({version}.{kind}) to ({}.{}): unknown conversion",
            rt.kind,
            internal_group(rt),
            rt.kind
        ));
        e.details = Value::Null;
        return Err(e);
    }
    if !api_version.is_empty() && !rt.custom {
        let (group, _) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        if group == rt.group && rt.version(version).is_none() {
            return Err(ApiError::bad_request(format!(
                "{} in version \"{version}\" cannot be handled as a {}: no kind \"{}\" is registered for version \"{api_version}\" in scheme \"pkg/runtime/scheme.go:111\"",
                rt.kind, rt.kind, rt.kind
            )));
        }
    }
    Ok(())
}

/// A JSON merge patch: an object.
pub fn merge_patch(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| ApiError::bad_request("invalid JSON patch"))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "error decoding patch: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            go_type(&v)
        )));
    }
    Ok(v)
}

/// A JSON patch: a list of operations.
pub fn json_patch(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("error decoding patch: {}", json_syntax_error(&e)))
    })?;
    if !v.is_array() {
        return Err(ApiError::bad_request(format!(
            "error decoding patch: json: cannot unmarshal {} into Go value of type []handlers.jsonPatchOp",
            go_type(&v)
        )));
    }
    Ok(v)
}

/// `limit`: absent or a number.
pub fn limit(value: Option<&str>) -> Result<usize, ApiError> {
    match value {
        None | Some("") => Ok(0),
        Some(l) => l.parse::<i64>().map(|n| n.max(0) as usize).map_err(|_| {
            ApiError::bad_request(format!("strconv.ParseInt: parsing {l:?}: invalid syntax"))
        }),
    }
}

/// A watch's `resourceVersion` that is not a number: kube-apiserver answers 500, with no
/// reason.
pub fn invalid_watch_resource_version(rv: &str) -> ApiError {
    ApiError::new(
        500,
        "",
        format!(
            "resourceVersion: Invalid value: {rv:?}: strconv.ParseUint: parsing {rv:?}: invalid syntax"
        ),
    )
}

/// An update whose `metadata.resourceVersion` is not a number: 500, with no reason.
pub fn invalid_resource_version(rv: &str) -> ApiError {
    ApiError::new(
        500,
        "",
        format!("strconv.ParseUint: parsing {rv:?}: invalid syntax"),
    )
}

fn unrecognized(rt: &ResourceType, why: &str, body: &str) -> ApiError {
    ApiError::bad_request(format!(
        "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: {why} ({body})",
        rt.kind
    ))
}

/// Go's name for a JSON value's type in `cannot unmarshal` errors.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go's wording of a JSON syntax error, as far as serde's tells it.
fn json_syntax_error(e: &serde_json::Error) -> String {
    if e.is_eof() {
        "unexpected end of JSON input".into()
    } else {
        format!("invalid JSON: {e}")
    }
}

/// The internal API group kube-apiserver names in conversion errors (`core`, `apps`,
/// `coordination`).
fn internal_group(rt: &ResourceType) -> &str {
    if rt.group.is_empty() {
        "core"
    } else {
        rt.group.split('.').next().unwrap_or(&rt.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> ResourceType {
        super::super::resources::builtins()
            .into_iter()
            .find(|t| t.plural == "leases")
            .unwrap()
    }

    #[test]
    fn bodies_are_refused_with_the_apiservers_words() {
        let rt = lease();
        let e = object(&rt, "application/json", b"{\"a\": ").unwrap_err();
        assert_eq!(
            e.message,
            "the object provided is unrecognized (must be of type Lease): couldn't get version/kind; json parse error: unexpected end of JSON input ({\"a\": )"
        );
        let e = object(&rt, "application/json", b"[1, 2]").unwrap_err();
        assert!(e.message.ends_with("(5b312c20325d)"), "{}", e.message);
        let e = object(
            &rt,
            "application/json",
            br#"{"kind": "Pod", "apiVersion": "v1"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "Pod in version \"v1\" cannot be handled as a Lease: converting (v1.Pod) to (coordination.Lease): unknown conversion"
        );
        let e = object(
            &rt,
            "application/json",
            br#"{"kind": "Lease", "apiVersion": "coordination.k8s.io/v9"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(object(&rt, "text/plain", b"x").unwrap_err().code, 415);
        assert!(object(&rt, "application/yaml", b"spec: {}").is_ok());
    }

    #[test]
    fn patches_and_parameters_are_checked() {
        assert_eq!(
            merge_patch(b"{\"a\":").unwrap_err().message,
            "invalid JSON patch"
        );
        assert!(
            merge_patch(b"\"x\"")
                .unwrap_err()
                .message
                .contains("unmarshal string")
        );
        assert!(
            json_patch(b"{}")
                .unwrap_err()
                .message
                .contains("unmarshal object")
        );
        assert!(json_patch(b"[]").is_ok());
        assert_eq!(limit(Some("5")).unwrap(), 5);
        assert_eq!(
            limit(Some("abc")).unwrap_err().message,
            "strconv.ParseInt: parsing \"abc\": invalid syntax"
        );
        assert_eq!(invalid_watch_resource_version("x").code, 500);
    }
}
