//! The create-only review kinds (TokenReview, SelfSubjectReview, SubjectAccessReview,
//! SelfSubjectAccessReview, LocalSubjectAccessReview, SelfSubjectRulesReview): answered at
//! once, never stored. Pure.
//!
//! The sandbox has one identity and no authorization: a request is either refused by the
//! token check (401) before it gets here, or made by `sandbox-admin` with every permission.
//! So every access review is allowed, the rules review grants everything, and a TokenReview
//! authenticates exactly the sandbox's token (any token when the sandbox takes anonymous
//! requests).

use super::error::ApiError;
use super::resources::ResourceType;
use serde_json::{Value, json};

/// The user every request acts as.
pub const USER: &str = "sandbox-admin";
/// Its groups.
pub const GROUPS: [&str; 2] = ["system:masters", "system:authenticated"];

/// The answer to a review: the request with its `status` filled in (201 Created, as
/// kube-apiserver answers).
pub fn answer(
    rt: &ResourceType,
    version: &str,
    namespace: &str,
    mut review: Value,
    token: Option<&str>,
) -> Result<Value, ApiError> {
    if !review.is_object() {
        return Err(ApiError::bad_request(
            "the request body is not a JSON object",
        ));
    }
    let user = json!({"username": USER, "groups": GROUPS});
    let status = match rt.kind.as_str() {
        "TokenReview" => {
            let presented = review
                .pointer("/spec/token")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if presented.is_empty() {
                return Err(invalid(rt, "spec.token", "Required value"));
            }
            if token.is_none_or(|t| t == presented) {
                json!({"authenticated": true, "user": user, "audiences": review.pointer("/spec/audiences").cloned().unwrap_or(json!([]))})
            } else {
                json!({"authenticated": false, "error": "invalid bearer token"})
            }
        }
        "SelfSubjectReview" => json!({"userInfo": user}),
        "SubjectAccessReview" | "SelfSubjectAccessReview" | "LocalSubjectAccessReview" => {
            let has_attrs = review.pointer("/spec/resourceAttributes").is_some()
                || review.pointer("/spec/nonResourceAttributes").is_some();
            if !has_attrs {
                return Err(invalid(
                    rt,
                    "spec.resourceAttributes",
                    "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                ));
            }
            if rt.kind == "LocalSubjectAccessReview" {
                let ns = review
                    .pointer("/spec/resourceAttributes/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if ns != namespace {
                    return Err(invalid(
                        rt,
                        "spec.resourceAttributes.namespace",
                        &format!("Invalid value: \"{ns}\": must match metadata.namespace"),
                    ));
                }
            }
            json!({"allowed": true, "reason": "the sandbox authorizes every request"})
        }
        "SelfSubjectRulesReview" => json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        }),
        _ => return Err(ApiError::method_not_allowed()),
    };
    review["apiVersion"] = json!(rt.api_version(version));
    review["kind"] = json!(rt.kind);
    if !review.get("metadata").is_some_and(Value::is_object) {
        review["metadata"] = json!({});
    }
    if rt.namespaced {
        review["metadata"]["namespace"] = json!(namespace);
    }
    review["status"] = status;
    Ok(review)
}

fn invalid(rt: &ResourceType, field: &str, message: &str) -> ApiError {
    ApiError::invalid(
        rt,
        "",
        vec![super::error::Cause {
            reason: if message.starts_with("Required") {
                "FieldValueRequired".into()
            } else {
                "FieldValueInvalid".into()
            },
            message: message.into(),
            field: field.into(),
        }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::resources::builtins;

    fn rt(kind: &str) -> ResourceType {
        builtins().into_iter().find(|t| t.kind == kind).unwrap()
    }

    #[test]
    fn access_reviews_are_allowed_and_need_attributes() {
        let r = answer(
            &rt("SelfSubjectAccessReview"),
            "v1",
            "",
            json!({"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}}),
            None,
        )
        .unwrap();
        assert_eq!(r["status"]["allowed"], true);
        assert_eq!(r["kind"], "SelfSubjectAccessReview");
        let e = answer(
            &rt("SubjectAccessReview"),
            "v1",
            "",
            json!({"spec": {}}),
            None,
        )
        .unwrap_err();
        assert_eq!(e.code, 422);
    }

    #[test]
    fn a_token_review_authenticates_only_the_sandbox_token() {
        let tr = rt("TokenReview");
        let ok = answer(&tr, "v1", "", json!({"spec": {"token": "s3"}}), Some("s3")).unwrap();
        assert_eq!(ok["status"]["authenticated"], true);
        assert_eq!(ok["status"]["user"]["username"], USER);
        let bad = answer(&tr, "v1", "", json!({"spec": {"token": "x"}}), Some("s3")).unwrap();
        assert_eq!(bad["status"]["authenticated"], false);
        assert_eq!(
            answer(&tr, "v1", "", json!({"spec": {}}), None)
                .unwrap_err()
                .code,
            422
        );
    }
}
