//! Validating admission webhooks as kube-apiserver applies them (pure): which registered
//! webhooks a write must call, the AdmissionReview sent, and what the answer means.
//!
//! Follows `k8s.io/apiserver/pkg/admission/plugin/webhook` (v1.37): rules match on scope,
//! operation, group, version and `resource[/subresource]` with `*` wildcards; a
//! `namespaceSelector` looks at the labels of the object's namespace (cluster-scoped objects
//! other than Namespaces always match); an `objectSelector` at the labels of the new or the old
//! object; with `matchPolicy: Equivalent` a rule naming another version of the same resource
//! matches too, and the webhook gets the object in that version. The API defaults apply to
//! fields left out: `failurePolicy: Fail`, `matchPolicy: Equivalent`, `timeoutSeconds: 10`.
//! `matchConditions` (CEL) are not evaluated: a webhook that has them is called as if they
//! all held.

use super::error::{ApiError, Cause};
use super::selectors::LabelSelector;
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration,
};
use serde_json::{Value, json};
use std::time::Duration;

/// The apiserver's default `timeoutSeconds`.
pub const DEFAULT_TIMEOUT_SECONDS: i32 = 10;

/// The admission operation of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// POST, or server-side apply of an object that does not exist.
    Create,
    /// PUT and PATCH.
    Update,
    /// DELETE.
    Delete,
}

impl Operation {
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }

    fn options_kind(self) -> &'static str {
        match self {
            Operation::Create => "CreateOptions",
            Operation::Update => "UpdateOptions",
            Operation::Delete => "DeleteOptions",
        }
    }
}

/// Group, version and resource (plural) or kind.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Gvx {
    /// API group, empty for the core group.
    pub group: String,
    /// Version.
    pub version: String,
    /// Resource plural (for a resource) or kind (for a kind).
    pub name: String,
}

impl Gvx {
    /// A group/version/name triple.
    pub fn new(group: &str, version: &str, name: &str) -> Gvx {
        Gvx {
            group: group.into(),
            version: version.into(),
            name: name.into(),
        }
    }
}

/// Another version of the requested resource, for `matchPolicy: Equivalent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Equivalent {
    /// The resource in that version.
    pub resource: Gvx,
    /// Its kind in that version.
    pub kind: Gvx,
}

/// What admission knows of a write.
#[derive(Clone, Debug)]
pub struct Attributes {
    /// The resource as requested.
    pub resource: Gvx,
    /// The kind as requested (the subresource's kind, such as policy/v1 Eviction).
    pub kind: Gvx,
    /// `status`, `eviction`, or empty.
    pub subresource: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// The operation.
    pub operation: Operation,
    /// The new object (none for DELETE), in the requested version.
    pub object: Option<Value>,
    /// The object replaced or deleted (none for CREATE), in the requested version.
    pub old_object: Option<Value>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// One registered webhook.
#[derive(Clone, Debug)]
pub struct Hook {
    /// The ValidatingWebhookConfiguration it comes from.
    pub configuration: String,
    /// The webhook.
    pub webhook: ValidatingWebhook,
}

impl Hook {
    /// Its name, as refusals quote it.
    pub fn name(&self) -> &str {
        &self.webhook.name
    }

    /// `failurePolicy: Ignore`: a webhook that cannot be called lets the request through.
    pub fn fails_open(&self) -> bool {
        self.webhook.failure_policy.as_deref() == Some("Ignore")
    }

    /// `timeoutSeconds` (default 10; the API allows 1 to 30).
    pub fn timeout(&self) -> Duration {
        let secs = self
            .webhook
            .timeout_seconds
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
            .clamp(1, 30);
        Duration::from_secs(u64::try_from(secs).unwrap_or(10))
    }

    /// Whether it may be called for a dry run: `sideEffects: None` or `NoneOnDryRun`.
    pub fn allows_dry_run(&self) -> bool {
        matches!(self.webhook.side_effects.as_str(), "None" | "NoneOnDryRun")
    }
}

/// Every webhook of the stored configurations, in the apiserver's order: configurations by
/// name, webhooks in their order. A configuration that does not decode is skipped.
pub fn hooks(configurations: &[impl AsRef<Value>]) -> Vec<Hook> {
    let mut decoded: Vec<ValidatingWebhookConfiguration> = configurations
        .iter()
        .filter_map(|c| match serde_json::from_value(c.as_ref().clone()) {
            Ok(vwc) => Some(vwc),
            Err(e) => {
                tracing::warn!("sandbox: skipping a ValidatingWebhookConfiguration: {e}");
                None
            }
        })
        .collect();
    decoded.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    decoded
        .into_iter()
        .flat_map(|vwc| {
            let configuration = vwc.metadata.name.clone().unwrap_or_default();
            vwc.webhooks
                .unwrap_or_default()
                .into_iter()
                .map(move |webhook| Hook {
                    configuration: configuration.clone(),
                    webhook,
                })
        })
        .collect()
}

/// The checks kube-apiserver makes on a ValidatingWebhookConfiguration before storing it
/// (`ValidateValidatingWebhookConfiguration`), the ones that decide how the sandbox calls a
/// webhook: a fully qualified, unique name; `failurePolicy`, `matchPolicy` and `sideEffects`
/// from their enums (v1 takes only side-effect-free webhooks); `timeoutSeconds` from 1 to 30;
/// exactly one of `url` (https) and `service`; and `admissionReviewVersions`. Worded as
/// kube-apiserver words them.
pub fn validate_configuration(vwc: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    let cause = |reason: &str, field: String, message: String| Cause {
        reason: reason.into(),
        message,
        field,
    };
    let quoted = |v: &Value| match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    let not_supported = |v: &Value, allowed: &[&str]| {
        let allowed: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        format!(
            "Unsupported value: {}: supported values: {}",
            quoted(v),
            allowed.join(", ")
        )
    };
    for (i, w) in vwc["webhooks"].as_array().into_iter().flatten().enumerate() {
        let at = |f: &str| format!("webhooks[{i}].{f}");
        let name = w["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            causes.push(cause(
                "FieldValueRequired",
                at("name"),
                "Required value".into(),
            ));
        } else if name.split('.').count() < 3 {
            causes.push(cause(
                "FieldValueInvalid",
                at("name"),
                format!("Invalid value: {name:?}: should be a domain with at least three segments separated by dots"),
            ));
        }
        for (field, allowed) in [
            ("failurePolicy", &["Fail", "Ignore"][..]),
            ("matchPolicy", &["Equivalent", "Exact"][..]),
        ] {
            if let Some(v) = w.get(field).filter(|v| !v.is_null())
                && !v.as_str().is_some_and(|s| allowed.contains(&s))
            {
                causes.push(cause(
                    "FieldValueNotSupported",
                    at(field),
                    not_supported(v, allowed),
                ));
            }
        }
        match w.get("sideEffects").filter(|v| !v.is_null()) {
            None => causes.push(cause(
                "FieldValueRequired",
                at("sideEffects"),
                "Required value: must specify one of None, NoneOnDryRun".into(),
            )),
            Some(v) if !matches!(v.as_str(), Some("None" | "NoneOnDryRun")) => causes.push(cause(
                "FieldValueNotSupported",
                at("sideEffects"),
                not_supported(v, &["None", "NoneOnDryRun"]),
            )),
            Some(_) => {}
        }
        if let Some(t) = w["timeoutSeconds"].as_i64()
            && !(1..=30).contains(&t)
        {
            causes.push(cause(
                "FieldValueInvalid",
                at("timeoutSeconds"),
                format!("Invalid value: {t}: the timeout value must be between 1 and 30 seconds"),
            ));
        }
        let config = &w["clientConfig"];
        match (config["url"].as_str(), config["service"].is_object()) {
            (Some(_), true) | (None, false) => causes.push(cause(
                "FieldValueRequired",
                at("clientConfig"),
                "Required value: exactly one of url or service is required".into(),
            )),
            (Some(url), false) => {
                let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
                if scheme != "https" {
                    causes.push(cause(
                        "FieldValueInvalid",
                        at("clientConfig.url"),
                        format!("Invalid value: {scheme:?}: 'https' is the only allowed URL scheme; desired format: https://host[/path]"),
                    ));
                }
            }
            (None, true) => {}
        }
        if w["admissionReviewVersions"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            causes.push(cause(
                "FieldValueRequired",
                at("admissionReviewVersions"),
                "Required value: must specify one of v1, v1beta1".into(),
            ));
        }
        if !name.is_empty() && !names.insert(name.to_string()) {
            causes.push(cause(
                "FieldValueDuplicate",
                at("name"),
                format!("Duplicate value: {name:?}"),
            ));
        }
    }
    causes
}

/// Writes to webhook configurations are never sent to webhooks (kube-apiserver exempts
/// them, so that a broken webhook can always be removed).
pub fn is_exempt(resource: &Gvx) -> bool {
    resource.group == "admissionregistration.k8s.io"
}

/// How a matching webhook is called: the resource and kind it sees (another version with
/// `matchPolicy: Equivalent`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The resource in the version the webhook asked for.
    pub resource: Gvx,
    /// The kind in that version.
    pub kind: Gvx,
}

/// Whether `hook` is called for a write, and how. `namespace_labels` are the labels of the
/// object's namespace (`None` when it does not exist: an error if the webhook has a
/// namespaceSelector, as kube-apiserver answers).
pub fn invocation(
    hook: &Hook,
    attrs: &Attributes,
    namespace_labels: Option<&Value>,
    equivalents: &[Equivalent],
) -> Result<Option<Invocation>, ApiError> {
    let w = &hook.webhook;
    let selector = |s: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>| {
        let v = serde_json::to_value(s).unwrap_or(Value::Null);
        LabelSelector::from_object(Some(&v))
            .map(Option::unwrap_or_default)
            .map_err(|e| ApiError::internal(e.0))
    };
    let is_namespace = attrs.resource.group.is_empty() && attrs.resource.name == "namespaces";
    let namespace_selector = selector(&w.namespace_selector)?;
    if !namespace_selector.is_empty() && (!attrs.namespace.is_empty() || is_namespace) {
        let labels =
            if is_namespace && attrs.subresource.is_empty() && attrs.operation != Operation::Delete
            {
                attrs
                    .object
                    .as_ref()
                    .and_then(|o| o.pointer("/metadata/labels"))
            } else {
                match namespace_labels {
                    Some(l) => Some(l),
                    None => {
                        let mut e = ApiError::new(
                            404,
                            "NotFound",
                            format!("namespaces \"{}\" not found", attrs.namespace),
                        );
                        e.details = json!({"name": attrs.namespace, "kind": "namespaces"});
                        return Err(e);
                    }
                }
            };
        if !namespace_selector.matches(labels.filter(|l| !l.is_null())) {
            return Ok(None);
        }
    }
    let object_selector = selector(&w.object_selector)?;
    if !object_selector.is_empty() {
        let matches = |o: &Option<Value>| {
            o.as_ref()
                .is_some_and(|o| object_selector.matches(o.pointer("/metadata/labels")))
        };
        if !matches(&attrs.object) && !matches(&attrs.old_object) {
            return Ok(None);
        }
    }
    let rules = w.rules.as_deref().unwrap_or_default();
    if rules
        .iter()
        .any(|r| rule_matches(r, attrs, &attrs.resource))
    {
        return Ok(Some(Invocation {
            resource: attrs.resource.clone(),
            kind: attrs.kind.clone(),
        }));
    }
    if w.match_policy.as_deref().unwrap_or("Equivalent") == "Equivalent" {
        for rule in rules {
            for equivalent in equivalents {
                if equivalent.resource != attrs.resource
                    && rule_matches(rule, attrs, &equivalent.resource)
                {
                    return Ok(Some(Invocation {
                        resource: equivalent.resource.clone(),
                        kind: equivalent.kind.clone(),
                    }));
                }
            }
        }
    }
    Ok(None)
}

/// One rule against a write, as `rules.Matcher` does, with `resource` standing for the
/// requested one (or an equivalent).
pub fn rule_matches(rule: &RuleWithOperations, attrs: &Attributes, resource: &Gvx) -> bool {
    let any = |items: &Option<Vec<String>>, value: &str| {
        items
            .iter()
            .flatten()
            .any(|item| item == "*" || item == value)
    };
    let is_namespace = resource.group.is_empty() && resource.name == "namespaces";
    let scope = match rule.scope.as_deref().unwrap_or("*") {
        "*" => true,
        "Namespaced" => !is_namespace && !attrs.namespace.is_empty(),
        "Cluster" => is_namespace || attrs.namespace.is_empty(),
        _ => false,
    };
    let resource_matches = rule.resources.iter().flatten().any(|r| {
        let (res, sub) = r.split_once('/').unwrap_or((r, ""));
        (res == "*" || res == resource.name) && (sub == "*" || sub == attrs.subresource)
    });
    scope
        && any(&rule.operations, attrs.operation.as_str())
        && any(&rule.api_groups, &resource.group)
        && any(&rule.api_versions, &resource.version)
        && resource_matches
}

/// The `admission.k8s.io/v1` AdmissionReview for one call. `object` and `old_object` are in
/// the invocation's version.
pub fn review_request(
    uid: &str,
    attrs: &Attributes,
    invocation: &Invocation,
    object: Option<&Value>,
    old_object: Option<&Value>,
) -> Value {
    let gvr = |g: &Gvx| json!({"group": g.group, "version": g.version, "resource": g.name});
    let gvk = |g: &Gvx| json!({"group": g.group, "version": g.version, "kind": g.name});
    let mut options =
        json!({"kind": attrs.operation.options_kind(), "apiVersion": "meta.k8s.io/v1"});
    if attrs.dry_run {
        options["dryRun"] = json!(["All"]);
    }
    let mut request = json!({
        "uid": uid,
        "kind": gvk(&invocation.kind),
        "resource": gvr(&invocation.resource),
        "requestKind": gvk(&attrs.kind),
        "requestResource": gvr(&attrs.resource),
        "name": attrs.name,
        "operation": attrs.operation.as_str(),
        "userInfo": {"username": "system:admin", "groups": ["system:masters", "system:authenticated"]},
        "object": object,
        "oldObject": old_object,
        "dryRun": attrs.dry_run,
        "options": options,
    });
    if !attrs.subresource.is_empty() {
        request["subResource"] = json!(attrs.subresource);
        request["requestSubResource"] = json!(attrs.subresource);
    }
    if !attrs.namespace.is_empty() {
        request["namespace"] = json!(attrs.namespace);
    }
    json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request})
}

/// What one call came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Allowed.
    Allowed {
        /// Admission warnings, for the client.
        warnings: Vec<String>,
    },
    /// Refused by the webhook: the error the client gets.
    Denied {
        /// The refusal.
        error: ApiError,
        /// Admission warnings, for the client (sent with the refusal).
        warnings: Vec<String>,
    },
    /// The webhook could not be called or gave no usable answer: `failurePolicy` decides.
    Failed {
        /// Why, worded as kube-apiserver words it after `failed calling webhook "NAME": `.
        reason: String,
    },
}

/// What an HTTP answer of a webhook means (`VerifyAdmissionResponse` and `ToStatusErr`).
pub fn outcome(hook: &Hook, uid: &str, code: u16, body: &[u8]) -> Outcome {
    let failed = |reason: String| Outcome::Failed { reason };
    if !(200..300).contains(&code) {
        // client-go turns a Status body into its message, anything else into a generic one.
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .filter(|v| v["kind"] == "Status")
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| {
                format!(
                    "an error on the server ({:?}) has prevented the request from succeeding",
                    String::from_utf8_lossy(body).trim()
                )
            });
        return failed(format!("failed to call webhook: {message}"));
    }
    let review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return failed(format!("failed to call webhook: {e}")),
    };
    let invalid = |why: String| failed(format!("received invalid webhook response: {why}"));
    let Some(response) = review.get("response").filter(|r| r.is_object()) else {
        return invalid("webhook response was absent".into());
    };
    let got_uid = response["uid"].as_str().unwrap_or_default();
    if got_uid != uid {
        return invalid(format!("expected response.uid={uid:?}, got {got_uid:?}"));
    }
    let (api_version, kind) = (
        review["apiVersion"].as_str().unwrap_or_default(),
        review["kind"].as_str().unwrap_or_default(),
    );
    if (api_version, kind) != ("admission.k8s.io/v1", "AdmissionReview") {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        return invalid(format!(
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {group}/{version}, Kind={kind}"
        ));
    }
    if response.get("patch").is_some_and(|p| !p.is_null()) {
        return invalid("validating webhook may not return response.patch".into());
    }
    if response.get("patchType").is_some_and(|p| !p.is_null()) {
        return invalid("validating webhook may not return response.patchType".into());
    }
    let warnings: Vec<String> = response["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str().map(str::to_string))
        .collect();
    if response["allowed"].as_bool() == Some(true) {
        return Outcome::Allowed { warnings };
    }
    Outcome::Denied {
        error: denial(hook.name(), response.get("status")),
        warnings,
    }
}

/// A refusal as the client sees it (`webhookerrors.ToStatusErr`): the webhook's status, with
/// a code of at least 400 and the message prefixed with the webhook's name.
pub fn denial(webhook: &str, status: Option<&Value>) -> ApiError {
    let status = status.cloned().unwrap_or(Value::Null);
    let code = status["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .unwrap_or(400);
    let reason = status["reason"].as_str().unwrap_or_default();
    let message = status["message"].as_str().unwrap_or_default();
    let denied = format!("admission webhook {webhook:?} denied the request");
    let message = if !message.is_empty() {
        format!("{denied}: {message}")
    } else if !reason.is_empty() {
        format!("{denied}: {reason}")
    } else {
        format!("{denied} without explanation")
    };
    let mut e = ApiError::new(code, reason, message);
    e.details = status.get("details").cloned().unwrap_or(Value::Null);
    e
}

/// The client's error when a webhook with `failurePolicy: Fail` could not be called
/// (`apierrors.NewInternalError`).
pub fn call_failure(webhook: &str, reason: &str) -> ApiError {
    let err = format!("failed calling webhook {webhook:?}: {reason}");
    let mut e = ApiError::new(
        500,
        "InternalError",
        format!("Internal error occurred: {err}"),
    );
    e.details = json!({"causes": [{"message": err}]});
    e
}

/// The client's error for a dry run sent to a webhook with side effects.
pub fn dry_run_unsupported(webhook: &str) -> ApiError {
    ApiError::bad_request(format!(
        "admission webhook {webhook:?} does not support dry run"
    ))
}

/// The `Warning` header value for one admission warning: `299 - "text"`, quoted as Go's
/// `strconv.Quote` does.
pub fn warning_header(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c if c.is_control() => quoted.push_str(&format!("\\x{:02x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    format!("299 - {quoted}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(extra: Value) -> Hook {
        let mut w = json!({
            "name": "check.example.com",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "clientConfig": {"url": "https://127.0.0.1:1/check"},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["example.com"],
                "apiVersions": ["v1"], "resources": ["widgets"]}],
        });
        for (k, v) in extra.as_object().unwrap() {
            w[k] = v.clone();
        }
        let vwc = json!({"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "c"}, "webhooks": [w]});
        hooks(&[std::sync::Arc::new(vwc)]).remove(0)
    }

    fn attrs(op: Operation) -> Attributes {
        Attributes {
            resource: Gvx::new("example.com", "v1", "widgets"),
            kind: Gvx::new("example.com", "v1", "Widget"),
            subresource: String::new(),
            namespace: "team-a".into(),
            name: "w1".into(),
            operation: op,
            object: Some(json!({"metadata": {"name": "w1", "labels": {"tier": "gold"}}})),
            old_object: None,
            dry_run: false,
        }
    }

    fn called(hook: &Hook, attrs: &Attributes) -> bool {
        invocation(hook, attrs, Some(&json!({"env": "prod"})), &[])
            .unwrap()
            .is_some()
    }

    #[test]
    fn rules_match_operations_groups_versions_resources_and_scope() {
        let create = attrs(Operation::Create);
        let mut delete = attrs(Operation::Delete);
        delete.object = None;
        let mut status = attrs(Operation::Update);
        status.subresource = "status".into();
        let mut cluster = attrs(Operation::Create);
        cluster.namespace = String::new();
        let cases: Vec<(&str, Value, &Attributes, bool)> = vec![
            ("the rule as written", json!({}), &create, true),
            ("DELETE is not listed", json!({}), &delete, false),
            (
                "`*` operations",
                json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}]}),
                &delete,
                true,
            ),
            (
                "another group",
                json!({"rules": [{"operations": ["*"], "apiGroups": ["apps"], "apiVersions": ["*"], "resources": ["*"]}]}),
                &create,
                false,
            ),
            (
                "another version",
                json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["v2"], "resources": ["*"]}]}),
                &create,
                false,
            ),
            (
                "a subresource is not the resource",
                json!({}),
                &status,
                false,
            ),
            (
                "`*` resources leave subresources out",
                json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}]}),
                &status,
                false,
            ),
            (
                "`widgets/*` takes the subresources",
                json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["widgets/*"]}]}),
                &status,
                true,
            ),
            (
                "`widgets/*` takes the resource too",
                json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["widgets/*"]}]}),
                &create,
                true,
            ),
            (
                "`*/status`",
                json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/status"]}]}),
                &status,
                true,
            ),
            (
                "Cluster scope leaves namespaced objects out",
                json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "scope": "Cluster"}]}),
                &create,
                false,
            ),
            (
                "Cluster scope takes cluster-scoped objects",
                json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "scope": "Cluster"}]}),
                &cluster,
                true,
            ),
            (
                "Namespaced scope",
                json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "scope": "Namespaced"}]}),
                &cluster,
                false,
            ),
            (
                "a namespaceSelector on the namespace's labels",
                json!({"namespaceSelector": {"matchLabels": {"env": "dev"}}}),
                &create,
                false,
            ),
            (
                "a matching namespaceSelector",
                json!({"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}}),
                &create,
                true,
            ),
            (
                "a namespaceSelector does not apply to cluster-scoped objects",
                json!({"namespaceSelector": {"matchLabels": {"env": "dev"}}}),
                &cluster,
                true,
            ),
            (
                "an objectSelector",
                json!({"objectSelector": {"matchLabels": {"tier": "silver"}}}),
                &create,
                false,
            ),
            (
                "a matching objectSelector",
                json!({"objectSelector": {"matchLabels": {"tier": "gold"}}}),
                &create,
                true,
            ),
        ];
        for (what, extra, attrs, expected) in cases {
            assert_eq!(called(&hook(extra), attrs), expected, "{what}");
        }
    }

    #[test]
    fn an_object_selector_also_looks_at_the_old_object() {
        let mut delete = attrs(Operation::Delete);
        delete.old_object = delete.object.take();
        let h = hook(json!({"objectSelector": {"matchLabels": {"tier": "gold"}},
            "rules": [{"operations": ["DELETE"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}]}));
        assert!(called(&h, &delete));
    }

    #[test]
    fn a_namespace_selector_needs_the_namespace() {
        let h = hook(json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}}));
        let err = invocation(&h, &attrs(Operation::Create), None, &[]).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (404, "namespaces \"team-a\" not found")
        );
    }

    #[test]
    fn equivalent_versions_match_unless_the_policy_is_exact() {
        let mut a = attrs(Operation::Create);
        a.resource.version = "v2".into();
        a.kind.version = "v2".into();
        let v1 = Equivalent {
            resource: Gvx::new("example.com", "v1", "widgets"),
            kind: Gvx::new("example.com", "v1", "Widget"),
        };
        let found = invocation(&hook(json!({})), &a, None, std::slice::from_ref(&v1)).unwrap();
        assert_eq!(
            found,
            Some(Invocation {
                resource: v1.resource.clone(),
                kind: v1.kind.clone()
            })
        );
        let exact = hook(json!({"matchPolicy": "Exact"}));
        assert_eq!(invocation(&exact, &a, None, &[v1]).unwrap(), None);
    }

    #[test]
    fn the_review_carries_the_request() {
        let mut a = attrs(Operation::Update);
        a.subresource = "status".into();
        a.dry_run = true;
        let inv = Invocation {
            resource: a.resource.clone(),
            kind: a.kind.clone(),
        };
        let r = review_request(
            "u-1",
            &a,
            &inv,
            Some(&json!({"x": 1})),
            Some(&json!({"x": 0})),
        );
        assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
        let req = &r["request"];
        assert_eq!(req["uid"], "u-1");
        assert_eq!(req["operation"], "UPDATE");
        assert_eq!(req["subResource"], "status");
        assert_eq!(req["namespace"], "team-a");
        assert_eq!(req["dryRun"], true);
        assert_eq!(req["options"]["kind"], "UpdateOptions");
        assert_eq!(req["options"]["dryRun"], json!(["All"]));
        assert_eq!(
            req["resource"],
            json!({"group": "example.com", "version": "v1", "resource": "widgets"})
        );
        assert_eq!(req["oldObject"], json!({"x": 0}));
    }

    #[test]
    fn answers_become_outcomes_as_kube_apiserver_reads_them() {
        let h = hook(json!({}));
        let review = |response: Value| {
            serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})).unwrap()
        };
        assert_eq!(
            outcome(
                &h,
                "u",
                200,
                &review(json!({"uid": "u", "allowed": true, "warnings": ["careful"]}))
            ),
            Outcome::Allowed {
                warnings: vec!["careful".into()]
            }
        );
        let Outcome::Denied { error, warnings } = outcome(
            &h,
            "u",
            200,
            &review(json!({"uid": "u", "allowed": false, "warnings": ["w"],
                "status": {"code": 403, "reason": "Forbidden", "message": "no way"}})),
        ) else {
            panic!("denied")
        };
        assert_eq!(
            (error.code, error.reason.as_str(), error.message.as_str()),
            (
                403,
                "Forbidden",
                "admission webhook \"check.example.com\" denied the request: no way"
            )
        );
        assert_eq!(warnings, ["w"]);
        let Outcome::Denied { error, .. } =
            outcome(&h, "u", 200, &review(json!({"uid": "u", "allowed": false})))
        else {
            panic!("denied")
        };
        assert_eq!(error.code, 400);
        assert_eq!(
            error.message,
            "admission webhook \"check.example.com\" denied the request without explanation"
        );
        assert_eq!(
            outcome(
                &h,
                "u",
                200,
                &review(json!({"uid": "other", "allowed": true}))
            ),
            Outcome::Failed {
                reason:
                    "received invalid webhook response: expected response.uid=\"u\", got \"other\""
                        .into()
            }
        );
        assert_eq!(
            outcome(
                &h,
                "u",
                503,
                br#"{"kind":"Status","apiVersion":"v1","message":"cannot list nodes","code":503}"#
            ),
            Outcome::Failed {
                reason: "failed to call webhook: cannot list nodes".into()
            }
        );
    }

    #[test]
    fn failures_and_warnings_are_worded_like_kube_apiserver() {
        let e = call_failure("x.example.com", "failed to call webhook: boom");
        assert_eq!(e.code, 500);
        assert_eq!(
            e.message,
            "Internal error occurred: failed calling webhook \"x.example.com\": failed to call webhook: boom"
        );
        assert_eq!(
            dry_run_unsupported("x.example.com").message,
            "admission webhook \"x.example.com\" does not support dry run"
        );
        assert_eq!(warning_header("a \"b\" \\ c"), r#"299 - "a \"b\" \\ c""#);
    }

    #[test]
    fn configurations_are_checked_as_kube_apiserver_checks_them() {
        let vwc = |w: Value| json!({"metadata": {"name": "c"}, "webhooks": [w]});
        let good = json!({"name": "a.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": "https://127.0.0.1/x"}});
        assert_eq!(validate_configuration(&vwc(good.clone())), vec![]);
        let messages = |w: Value| -> Vec<String> {
            validate_configuration(&vwc(w))
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect()
        };
        let mut bad = good.clone();
        bad["sideEffects"] = json!("Some");
        bad["timeoutSeconds"] = json!(31);
        bad["failurePolicy"] = json!("Never");
        bad["name"] = json!("short.name");
        assert_eq!(
            messages(bad),
            [
                "webhooks[0].name: Invalid value: \"short.name\": should be a domain with at least three segments separated by dots",
                "webhooks[0].failurePolicy: Unsupported value: \"Never\": supported values: \"Fail\", \"Ignore\"",
                "webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\"",
                "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
            ]
        );
        let mut bad = good;
        bad["clientConfig"] = json!({"url": "http://127.0.0.1/x"});
        bad.as_object_mut().unwrap().remove("sideEffects");
        assert_eq!(
            messages(bad),
            [
                "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun",
                "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme; desired format: https://host[/path]",
            ]
        );
    }

    #[test]
    fn defaults_follow_the_api() {
        let h = hook(json!({}));
        assert!(!h.fails_open());
        assert_eq!(h.timeout(), Duration::from_secs(10));
        assert!(h.allows_dry_run());
        let h =
            hook(json!({"failurePolicy": "Ignore", "timeoutSeconds": 3, "sideEffects": "Some"}));
        assert!(h.fails_open());
        assert_eq!(h.timeout(), Duration::from_secs(3));
        assert!(!h.allows_dry_run());
        assert!(is_exempt(&Gvx::new(
            "admissionregistration.k8s.io",
            "v1",
            "validatingwebhookconfigurations"
        )));
    }
}
