//! API errors, rendered as `meta/v1 Status` objects worded like kube-apiserver's.

use super::resources::ResourceType;
use serde_json::{Value, json};

/// A failed API request: an HTTP code and a `Status` body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `NotFound`, `Conflict`, `Invalid`...
    pub reason: String,
    /// Human message.
    pub message: String,
    /// `details` of the Status (may be null).
    pub details: Value,
}

/// One cause of a 422 (or 409 apply conflict) answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`...
    pub reason: String,
    /// Message, as shown after the field.
    pub message: String,
    /// The field (`spec.x`).
    pub field: String,
}

impl ApiError {
    /// A bare error.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason.into(),
            message: message.into(),
            details: Value::Null,
        }
    }

    /// 404 for an object.
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified_plural()),
        );
        e.details = details(rt, name, &rt.plural);
        e
    }

    /// 404 for a path the server does not serve.
    pub fn no_such_resource() -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        e.details = json!({});
        e
    }

    /// 409 for a create of an existing name.
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified_plural()),
        );
        e.details = details(rt, name, &rt.plural);
        e
    }

    /// 409 for a stale resourceVersion.
    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        Self::conflict_with(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 with a custom explanation.
    pub fn conflict_with(rt: &ResourceType, name: &str, why: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.qualified_plural()
            ),
        );
        e.details = details(rt, name, &rt.plural);
        e
    }

    /// 422 with causes: `Kind.group "name" is invalid: field: message`.
    pub fn invalid(rt: &ResourceType, name: &str, causes: Vec<Cause>) -> Self {
        let rendered: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let body = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {body}", rt.qualified_kind()),
        );
        let mut d = details(rt, name, &rt.kind);
        if name.is_empty()
            && let Some(m) = d.as_object_mut()
        {
            m.remove("name");
        }
        d["causes"] = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        e.details = d;
        e
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        let mut e = Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        );
        e.details = json!({});
        e
    }

    /// 415 for a patch type kube-apiserver does not take, worded as it does.
    pub fn unsupported_patch_type() -> Self {
        let mut e = Self::new(415, "UnsupportedMediaType", "415: Unsupported Media Type");
        e.details = json!({});
        e
    }

    /// 422 for invalid request options (`PatchOptions`, `DeleteOptions`): one cause.
    pub fn invalid_options(kind: &str, field: &str, reason: &str, message: &str) -> Self {
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{kind}.meta.k8s.io \"\" is invalid: {field}: {message}"),
        );
        e.details = json!({"group": "meta.k8s.io", "kind": kind,
            "causes": [{"reason": reason, "message": message, "field": field}]});
        e
    }

    /// 409 for a failed delete precondition, worded as kube-apiserver does.
    pub fn precondition_failed(rt: &ResourceType, name: &str, why: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.qualified_kind()
            ),
        );
        e.details = details(rt, name, &rt.kind);
        e
    }

    /// 415.
    pub fn unsupported_media_type(custom: bool) -> Self {
        // Custom resources have no protobuf encoding.
        let types = if custom {
            "application/json, application/yaml"
        } else {
            "application/json, application/yaml, application/vnd.kubernetes.protobuf"
        };
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {types}"
            ),
        )
    }

    /// 410 for a too-old resourceVersion.
    pub fn expired(rv: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {rv} ({oldest})"),
        )
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        // kube-apiserver leaves the reason out of errors it has no reason for (an internal
        // error while parsing a resourceVersion, for one).
        if !self.reason.is_empty() {
            s["reason"] = json!(self.reason);
        }
        if !self.details.is_null() {
            s["details"] = self.details.clone();
        }
        s
    }
}

fn details(rt: &ResourceType, name: &str, kind: &str) -> Value {
    let mut d = json!({"name": name, "kind": kind});
    if !rt.group.is_empty() {
        d["group"] = json!(rt.group);
    }
    d
}

/// A success `Status`.
pub fn success_status(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}
