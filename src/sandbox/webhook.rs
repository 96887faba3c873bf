//! Validating admission webhooks in the sandbox's write path, as kube-apiserver runs them.
//!
//! A write that registered ValidatingWebhookConfigurations may concern is done in two passes:
//!
//! 1. Under the store lock, a dry run of the write gives the object as it would be stored
//!    (after defaults, schema and CEL validation: webhooks never see an object the schema
//!    refuses, as in kube-apiserver), and the matching webhooks are picked
//!    ([`super::webhook_rules`]).
//! 2. Without the lock, every matching webhook is called at once ([`super::webhook_client`]).
//!    Their warnings go to the client as `Warning: 299 - "..."` headers (kubectl prints
//!    them), refusal or not; the first refusal, in webhook order, is the answer.
//! 3. Under the lock again, the write is done for real, provided the object has not changed
//!    since the first pass; if it has, both passes start over, as kube-apiserver's
//!    optimistic update loop does. A write no webhook matches is done in the first pass.
//!
//! Writes of ValidatingWebhookConfigurations are never sent to webhooks, and are checked as
//! kube-apiserver checks them ([`rules::validate_configuration`]).
//!
//! Differences from kube-apiserver: a create of a name that exists is refused (409) before
//! webhooks are called, not after; the uid and creationTimestamp a webhook sees on a create
//! are not the ones stored; `matchConditions` are not evaluated (see
//! [`super::webhook_rules`]); the user is always `system:admin`.

use super::error::ApiError;
use super::resources::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::server::{Body, Shared};
use super::store::{Store, gr, name_of};
use super::webhook_rules::{self as rules, Attributes, Equivalent, Gvx, Hook, Operation, Outcome};
use http::Response;
use serde_json::Value;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// How often the two passes start over because the object kept changing in between.
const MAX_ATTEMPTS: usize = 8;

tokio::task_local! {
    /// Admission warnings of the request being served.
    static WARNINGS: Arc<Mutex<Vec<String>>>;
}

/// Serve a request with a place for admission warnings, then add them to its response as
/// `Warning` headers (deduplicated, in order).
pub async fn with_warnings(serve: impl Future<Output = Response<Body>>) -> Response<Body> {
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let mut response = WARNINGS.scope(warnings.clone(), serve).await;
    let warnings = std::mem::take(&mut *warnings.lock().unwrap_or_else(|e| e.into_inner()));
    let mut seen = std::collections::BTreeSet::new();
    for w in warnings {
        if seen.insert(w.clone())
            && let Ok(v) = http::HeaderValue::from_bytes(rules::warning_header(&w).as_bytes())
        {
            response.headers_mut().append(http::header::WARNING, v);
        }
    }
    response
}

fn warn(warnings: Vec<String>) {
    if warnings.is_empty() {
        return;
    }
    // Outside a request (tests calling the store directly) there is nobody to tell.
    let _ = WARNINGS.try_with(|w| w.lock().unwrap_or_else(|e| e.into_inner()).extend(warnings));
}

/// What kind of write it is; an update of an object that does not exist is a create
/// (server-side apply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// POST (and evictions).
    Create,
    /// PUT and PATCH.
    Update,
    /// DELETE.
    Delete,
}

/// A write as the request names it.
#[derive(Clone, Copy, Debug)]
pub struct Write<'a> {
    /// The resource of the URL.
    pub rt: &'a ResourceType,
    /// The version of the URL.
    pub version: &'a str,
    /// The namespace of the URL (empty for cluster-scoped resources).
    pub namespace: &'a str,
    /// The name of the URL; a create takes it from the object.
    pub name: Option<&'a str>,
    /// `status` or `eviction`.
    pub subresource: Option<&'a str>,
    /// A subresource's own kind (policy/v1 Eviction), whose object is sent as the client
    /// sent it; `None` for the resource's kind.
    pub kind: Option<(&'a str, &'a str, &'a str)>,
    /// The verb.
    pub verb: Verb,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// Which pass a write function is called for.
#[derive(Clone, Copy, Debug)]
pub enum Pass<'a> {
    /// Check and compute only: a dry run, whatever the request asked.
    Preview,
    /// Do the write as requested. `admitted` is the object the webhooks saw, when they were
    /// called: a create whose name was generated must keep that name.
    Commit {
        /// The object admitted, if webhooks were called.
        admitted: Option<&'a Value>,
    },
}

impl Pass<'_> {
    /// The `dryRun` the write function must use, given the request's.
    pub fn dry_run(&self, requested: bool) -> bool {
        matches!(self, Pass::Preview) || requested
    }
}

/// A create body without a name takes the name the webhooks saw.
pub fn keep_admitted_name(body: &mut Value, pass: Pass<'_>) {
    if let Pass::Commit {
        admitted: Some(admitted),
    } = pass
        && name_of(body).is_empty()
        && let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.insert("name".into(), Value::String(name_of(admitted).to_string()));
    }
}

/// Do `write` with validating admission: `run` does it on the store, as a dry run for
/// [`Pass::Preview`] and for real for [`Pass::Commit`], and returns the object written
/// (for a delete, what the delete returns; for an eviction, the Eviction on preview).
pub async fn admit(
    shared: &Shared,
    write: &Write<'_>,
    mut run: impl FnMut(&mut Store, Pass<'_>) -> Result<Arc<Value>, ApiError>,
) -> Result<Arc<Value>, ApiError> {
    for _ in 0..MAX_ATTEMPTS {
        let plan = {
            let mut store = shared.lock();
            match plan(&mut store, write, &mut run)? {
                Some(plan) => plan,
                None => return run(&mut store, Pass::Commit { admitted: None }),
            }
        };
        let outcomes =
            futures::future::join_all(plan.calls.iter().map(|call| call.outcome())).await;
        let mut refusal = None;
        let mut warnings = Vec::new();
        for (call, outcome) in plan.calls.iter().zip(outcomes) {
            let error = match outcome {
                Outcome::Allowed { warnings: w } => {
                    warnings.extend(w);
                    None
                }
                Outcome::Denied { error, warnings: w } => {
                    warnings.extend(w);
                    Some(error)
                }
                Outcome::Failed { reason } if call.hook.fails_open() => {
                    tracing::warn!(
                        webhook = call.hook.name(),
                        "sandbox: failed calling webhook, failing open: {reason}"
                    );
                    None
                }
                Outcome::Failed { reason } => Some(rules::call_failure(call.hook.name(), &reason)),
            };
            if refusal.is_none() {
                refusal = error;
            }
        }
        warn(warnings);
        if let Some(e) = refusal {
            return Err(e);
        }
        let mut store = shared.lock();
        if plan.guards_object && current_version(&store, write, &plan.name) != plan.old_version {
            continue;
        }
        return run(
            &mut store,
            Pass::Commit {
                admitted: plan.object.as_deref(),
            },
        );
    }
    Err(ApiError::conflict(write.rt, write.name.unwrap_or_default()))
}

/// The webhooks to call for a write, after its dry run; `None` when no webhook applies.
struct Plan {
    calls: Vec<Call>,
    name: String,
    object: Option<Arc<Value>>,
    /// Whether the write's object must be unchanged at commit (not for evictions, whose
    /// object is the request).
    guards_object: bool,
    old_version: Option<String>,
}

/// One webhook to call.
struct Call {
    hook: Hook,
    /// The review to send, or why the call is refused before it is made.
    review: Result<(String, Vec<u8>), ApiError>,
}

impl Call {
    async fn outcome(&self) -> Outcome {
        match &self.review {
            Err(error) => Outcome::Denied {
                error: error.clone(),
                warnings: Vec::new(),
            },
            Ok((uid, body)) => match super::webhook_client::call(&self.hook, body.clone()).await {
                Ok((code, answer)) => rules::outcome(&self.hook, uid, code, &answer),
                Err(reason) => Outcome::Failed { reason },
            },
        }
    }
}

fn plan(
    store: &mut Store,
    write: &Write<'_>,
    run: &mut impl FnMut(&mut Store, Pass<'_>) -> Result<Arc<Value>, ApiError>,
) -> Result<Option<Plan>, ApiError> {
    let rt = write.rt;
    let resource = Gvx::new(&rt.group, write.version, &rt.plural);
    if rules::is_exempt(&resource) {
        if rt.plural == "validatingwebhookconfigurations" && write.verb != Verb::Delete {
            let configuration = run(store, Pass::Preview)?;
            let causes = rules::validate_configuration(&configuration);
            if !causes.is_empty() {
                return Err(ApiError::invalid(rt, name_of(&configuration), causes));
            }
        }
        return Ok(None);
    }
    let configurations = store.list(
        &gr(
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
        ),
        "",
        &LabelSelector::default(),
        &FieldSelector::default(),
    );
    if configurations.is_empty() {
        return Ok(None);
    }
    let hooks = rules::hooks(&configurations);
    let old = match (write.verb, write.name) {
        (Verb::Update | Verb::Delete, Some(name)) => {
            store.get(&rt.store_key(), write.namespace, name)
        }
        _ => None,
    };
    let operation = match (write.verb, &old) {
        (Verb::Delete, None) => return Ok(None), // the write answers 404
        (Verb::Delete, Some(_)) => Operation::Delete,
        (Verb::Update, Some(_)) => Operation::Update,
        (Verb::Update, None) | (Verb::Create, _) => Operation::Create,
    };
    let previewed = run(store, Pass::Preview)?;
    let object = (operation != Operation::Delete).then_some(previewed);
    let name = write
        .name
        .map(str::to_string)
        .or_else(|| object.as_deref().map(|o| name_of(o).to_string()))
        .unwrap_or_default();
    let in_version = |t: &ResourceType, version: &str, o: &Value| match write.kind {
        Some(_) => o.clone(),
        None => super::server::output(t, version, o),
    };
    let kind = match write.kind {
        Some((group, version, kind)) => Gvx::new(group, version, kind),
        None => Gvx::new(&rt.group, write.version, &rt.kind),
    };
    let attrs = Attributes {
        resource: resource.clone(),
        kind,
        subresource: write.subresource.unwrap_or_default().to_string(),
        namespace: write.namespace.to_string(),
        name: name.clone(),
        operation,
        object: object.as_deref().map(|o| in_version(rt, write.version, o)),
        old_object: old.as_deref().map(|o| in_version(rt, write.version, o)),
        dry_run: write.dry_run,
    };
    let namespace_labels = if rt.namespaced {
        store
            .get(&gr("", "namespaces"), "", write.namespace)
            .map(|ns| ns.pointer("/metadata/labels").cloned().unwrap_or_default())
    } else {
        Some(Value::Null)
    };
    // Other versions of the resource, and other APIs of its store (events.k8s.io Events).
    let equivalents: Vec<(Arc<ResourceType>, Equivalent)> = if write.kind.is_some() {
        Vec::new()
    } else {
        store
            .types()
            .iter()
            .filter(|t| t.store_key() == rt.store_key())
            .flat_map(|t| {
                t.versions.iter().map(move |v| {
                    (
                        t.clone(),
                        Equivalent {
                            resource: Gvx::new(&t.group, &v.name, &t.plural),
                            kind: Gvx::new(&t.group, &v.name, &t.kind),
                        },
                    )
                })
            })
            .collect()
    };
    let equivalent_list: Vec<Equivalent> = equivalents.iter().map(|(_, e)| e.clone()).collect();
    let mut calls = Vec::new();
    for hook in hooks {
        let Some(invocation) =
            rules::invocation(&hook, &attrs, namespace_labels.as_ref(), &equivalent_list)?
        else {
            continue;
        };
        let review = if write.dry_run && !hook.allows_dry_run() {
            Err(rules::dry_run_unsupported(hook.name()))
        } else if !hook
            .webhook
            .admission_review_versions
            .iter()
            .any(|v| v == "v1")
        {
            Err(rules::call_failure(
                hook.name(),
                "could not create admission objects: the sandbox sends only admission.k8s.io/v1 AdmissionReviews",
            ))
        } else {
            let (obj, old_obj) = if invocation.resource == attrs.resource {
                (attrs.object.clone(), attrs.old_object.clone())
            } else {
                let t = equivalents
                    .iter()
                    .find(|(_, e)| e.resource == invocation.resource)
                    .map(|(t, _)| t.clone())
                    .unwrap_or_else(|| Arc::new(rt.clone()));
                let v = invocation.resource.version.as_str();
                (
                    object.as_deref().map(|o| in_version(&t, v, o)),
                    old.as_deref().map(|o| in_version(&t, v, o)),
                )
            };
            let uid = uuid::Uuid::new_v4().to_string();
            let body =
                rules::review_request(&uid, &attrs, &invocation, obj.as_ref(), old_obj.as_ref());
            Ok((uid, serde_json::to_vec(&body).unwrap_or_default()))
        };
        calls.push(Call { hook, review });
    }
    if calls.is_empty() {
        return Ok(None);
    }
    Ok(Some(Plan {
        calls,
        old_version: old.as_deref().and_then(resource_version),
        name,
        object,
        guards_object: write.kind.is_none(),
    }))
}

fn resource_version(o: &Value) -> Option<String> {
    o.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The resourceVersion of the write's object now (`None` when it does not exist).
fn current_version(store: &Store, write: &Write<'_>, name: &str) -> Option<String> {
    store
        .get(&write.rt.store_key(), write.namespace, name)
        .as_deref()
        .and_then(resource_version)
}
