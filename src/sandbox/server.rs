//! The HTTP side: routing of Kubernetes REST paths to the store, request bodies and content
//! types, JSON and Table responses, and streamed watches.

use super::decode;
use super::discovery;
use super::error::ApiError;
use super::events;
use super::faults::{self, FaultRule, Faults, RequestInfo, Verdict};
use super::openapi;
use super::patch::{self, Scope, WriteContext};
use super::protobuf::{self, Wire};
use super::resources::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{
    Change, ChangeType, DeleteOpts, Object, Store, WriteOpts, name_of, namespace_of,
};
use super::table;
use super::webhook::{self, Pass, Verb, Write};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The response body type.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// State shared by every connection.
pub struct Shared {
    /// The cluster.
    pub store: Mutex<Store>,
    /// Requests served, by (verb, resource).
    pub counts: Mutex<BTreeMap<(String, String), u64>>,
    /// scale: requests served by (User-Agent up to its first `/`, verb, resource), to tell
    /// one client's requests from another's.
    pub agent_counts: Mutex<BTreeMap<(String, String, String), u64>>,
    /// Every request with the instant it arrived, while recording is on
    /// ([`super::Sandbox::record_requests`]).
    pub log: Mutex<Option<Vec<RecordedRequest>>>,
    /// `host:port` for `/api`.
    pub address: String,
    /// When set, requests must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// How often watches get a BOOKMARK when they asked for them.
    pub bookmark_interval: Duration,
    /// The fault injection rules in force.
    pub faults: Faults,
}

impl Shared {
    /// Lock the store (a poisoned lock is taken over: the store has no invariants a panic
    /// mid-request could break more than the request itself).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// scale: one request of `req`'s client ([`manager_from_user_agent`] of its User-Agent).
    fn count_agent<B>(&self, req: &Request<B>, verb: &str, resource: &str) {
        let agent = req
            .headers()
            .get(header::USER_AGENT)
            .map(|h| manager_from_user_agent(&String::from_utf8_lossy(h.as_bytes())))
            .unwrap_or_default();
        let mut c = self.agent_counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((agent, verb.to_string(), resource.to_string()))
            .or_default() += 1;
    }

    fn count(&self, verb: &str, resource: &str) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((verb.to_string(), resource.to_string()))
            .or_default() += 1;
        drop(c);
        if let Some(log) = self.log.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            log.push(RecordedRequest {
                at: std::time::Instant::now(),
                verb: verb.to_string(),
                resource: resource.to_string(),
            });
        }
    }
}

/// One request as the sandbox received it, for tests that check how requests spread in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// When it arrived (before any injected latency).
    pub at: std::time::Instant,
    /// As in [`super::Sandbox::request_count`]: `get`, `list`, `watch`, `create`, ... or
    /// `discovery`.
    pub verb: String,
    /// `pods`, `pods/eviction`, ... (empty for discovery).
    pub resource: String,
}

fn full(bytes: impl Into<Bytes>) -> Body {
    UnsyncBoxBody::new(Full::new(bytes.into()))
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    bytes_response(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

/// An object in the encoding the client negotiated (protobuf: see [`protobuf`]).
fn object_response(wire: Wire, code: u16, v: &Value) -> Response<Body> {
    if wire == Wire::Protobuf
        && let Some(body) = protobuf::encode(v)
    {
        return bytes_response(code, protobuf::MEDIA_TYPE, body);
    }
    json_response(code, v)
}

fn bytes_response(code: u16, content_type: &str, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, content_type)
        .body(full(body))
        .expect("a valid response")
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code, &e.status());
    // API Priority and Fairness (and an injected 429) tell the client when to come back.
    if let Some(secs) = e.details.get("retryAfterSeconds").and_then(Value::as_u64)
        && let Ok(v) = header::HeaderValue::from_str(&secs.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Decoded query parameters (repeated keys keep all values).
#[derive(Debug, Default)]
pub struct Query(HashMap<String, Vec<String>>);

impl Query {
    /// Parse a query string.
    pub fn parse(q: &str) -> Self {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.entry(percent_decode(k))
                .or_default()
                .push(percent_decode(v));
        }
        Query(m)
    }
    /// The first value of a key.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(|v| v.first()).map(String::as_str)
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
    fn all(&self, k: &str) -> Vec<String> {
        self.0.get(k).cloned().unwrap_or_default()
    }
}

/// Decode `%XX` and `+`.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A parsed resource path.
#[derive(Debug, Clone)]
struct Target {
    rt: Arc<ResourceType>,
    version: String,
    ns: String,
    name: Option<String>,
    sub: Option<String>,
}

/// Serve one request.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(webhook::with_warnings(async move {
        match route(shared, req).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        }
    })
    .await)
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    if let Some(token) = &shared.token {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| h == format!("Bearer {token}"));
        if !ok {
            shared.count("unauthorized", "");
            return Err(ApiError::new(401, "Unauthorized", "Unauthorized"));
        }
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method(), segs.as_slice()) {
        (&Method::GET, ["version"]) => return Ok(json_response(200, &discovery::version())),
        (&Method::GET, ["healthz" | "readyz" | "livez"]) => {
            return Ok(bytes_response(200, "text/plain", b"ok".to_vec()));
        }
        (&Method::GET, ["openapi", "v2"]) => {
            return Ok(bytes_response(
                200,
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                vec![],
            ));
        }
        // OpenAPI v3 (see `openapi`): the index and the group-version documents.
        (&Method::GET, ["openapi", "v3"]) => {
            shared.count("discovery", "");
            let types = shared.lock().types().to_vec();
            return Ok(json_response(200, &openapi::index(&types)));
        }
        (&Method::GET, ["openapi", "v3", gv @ ..]) => {
            shared.count("discovery", "");
            let types = shared.lock().types().to_vec();
            let doc = openapi::document(&types, &gv.join("/"));
            return doc
                .map(|d| json_response(200, &d))
                .ok_or_else(ApiError::no_such_resource);
        }
        (_, [faults::admin::PREFIX, ..]) => {
            let method = req.method().clone();
            let body = req
                .into_body()
                .collect()
                .await
                .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?
                .to_bytes();
            return admin(&shared, &method, &segs[1..], &body);
        }
        (&Method::GET, [root @ ("api" | "apis")]) => {
            // `/api` is the core group, `/apis` every other group.
            let core = *root == "api";
            shared.count("discovery", "");
            let store = shared.lock();
            return Ok(if discovery::wants_aggregated(&accept) {
                bytes_response(
                    200,
                    discovery::AGGREGATED_CONTENT_TYPE,
                    serde_json::to_vec(&discovery::aggregated(store.types(), core))
                        .unwrap_or_default(),
                )
            } else if core {
                json_response(200, &discovery::legacy_api(&shared.address))
            } else {
                json_response(200, &discovery::legacy_groups(store.types()))
            });
        }
        (&Method::GET, ["api", v]) => {
            shared.count("discovery", "");
            let store = shared.lock();
            return discovery::legacy_resources(store.types(), "", v)
                .map(|d| json_response(200, &d))
                .ok_or_else(ApiError::no_such_resource);
        }
        (&Method::GET, ["apis", g]) => {
            shared.count("discovery", "");
            let store = shared.lock();
            return discovery::legacy_group(store.types(), g)
                .map(|d| json_response(200, &d))
                .ok_or_else(ApiError::no_such_resource);
        }
        (&Method::GET, ["apis", g, v]) => {
            shared.count("discovery", "");
            let store = shared.lock();
            return discovery::legacy_resources(store.types(), g, v)
                .map(|d| json_response(200, &d))
                .ok_or_else(ApiError::no_such_resource);
        }
        _ => {}
    }
    let target = {
        let store = shared.lock();
        parse_target(&store, &segs)?
    };
    let method = req.method().clone();
    let verb = match (&method, &target.name) {
        (&Method::GET, Some(_)) => "get",
        (&Method::GET, None) if query.flag("watch") => "watch",
        (&Method::GET, None) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, Some(_)) => "update",
        (&Method::PATCH, Some(_)) => "patch",
        (&Method::DELETE, Some(_)) => "delete",
        (&Method::DELETE, None) => "deletecollection",
        _ => return Err(ApiError::method_not_allowed()),
    };
    let resource = match &target.sub {
        Some(s) => format!("{}/{s}", target.rt.plural),
        None => target.rt.plural.clone(),
    };
    // fidelity: a verb the resource does not serve (GET of a review, a write of a read-only
    // kind) is a 405, as kube-apiserver answers.
    if target.sub.is_none() && !target.rt.verbs().contains(&verb) {
        return Err(ApiError::method_not_allowed());
    }
    shared.count(verb, &resource);
    // scale: count by client too.
    shared.count_agent(&req, verb, &resource);
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .unwrap_or_default();
    let body = if matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        req.into_body()
            .collect()
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?
            .to_bytes()
    } else {
        Bytes::new()
    };
    let verdict = if shared.faults.is_empty() {
        Verdict::default()
    } else {
        let body_name = (verb == "create" && target.name.is_none())
            .then(|| decode_body(&content_type, &body).ok())
            .flatten()
            .and_then(|v| v["metadata"]["name"].as_str().map(str::to_string));
        shared.faults.decide(&RequestInfo {
            verb,
            resource: &resource,
            namespace: &target.ns,
            name: target.name.as_deref().or(body_name.as_deref()),
        })
    };
    if !verdict.delay.is_zero() {
        tokio::time::sleep(verdict.delay).await;
    }
    if let Some(e) = verdict.error {
        shared.count("injected", &resource);
        return Err(e);
    }
    let as_table = accept.contains("as=Table");
    // Protobuf responses for built-in kinds when the client prefers them; Tables stay JSON.
    let wire = if as_table {
        Wire::Json
    } else {
        let api_version = target.rt.api_version(&target.version);
        protobuf::negotiate(
            &accept,
            !target.rt.custom && protobuf::has_message(&api_version, &target.rt.kind),
        )?
    };
    let opts = WriteOpts {
        dry_run: query.all("dryRun").iter().any(|d| d == "All"),
        manager: query
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| manager_from_user_agent(&user_agent)),
        version: target.version.clone(),
        strict: query.get("fieldValidation") == Some("Strict"),
    };
    match verb {
        "get" => {
            let store = shared.lock();
            let name = target.name.as_deref().unwrap_or_default();
            let obj = store
                .get(&target.rt.store_key(), &target.ns, name)
                .ok_or_else(|| ApiError::not_found(&target.rt, name))?;
            let out = output(&target.rt, &target.version, &obj);
            if as_table {
                let t = table::table(
                    &target.rt,
                    &target.version,
                    &[out],
                    &store.current_rv().to_string(),
                    &*store.clock,
                );
                return Ok(json_response(200, &t));
            }
            Ok(object_response(wire, 200, &out))
        }
        "list" => list(&shared, &target, &query, as_table, wire),
        "watch" => watch(shared, target, &query, as_table, verdict.end_watch, wire),
        "create" => {
            // Evictions and bindings are admitted as CREATEs of the pod's subresource, with
            // the Eviction or Binding as the object.
            if let Some(sub @ ("eviction" | "binding")) = target.sub.as_deref() {
                let obj = decode_body(&content_type, &body)?;
                let name = target.name.clone().unwrap_or_default();
                let dry_run = opts.dry_run
                    || obj
                        .pointer("/deleteOptions/dryRun")
                        .and_then(Value::as_array)
                        .is_some_and(|a| !a.is_empty());
                let mut write = write_of(&target, Verb::Create, dry_run);
                write.kind = Some(if sub == "eviction" {
                    ("policy", "v1", "Eviction")
                } else {
                    ("", "v1", "Binding")
                });
                let status = webhook::admit(&shared, &write, |store, pass| match pass {
                    Pass::Preview => store
                        .get(&target.rt.store_key(), &target.ns, &name)
                        .map(|_| Arc::new(obj.clone()))
                        .ok_or_else(|| ApiError::not_found(&target.rt, &name)),
                    Pass::Commit { .. } if sub == "eviction" => {
                        store.evict(&target.ns, &name, &obj).map(Arc::new)
                    }
                    Pass::Commit { .. } => store.bind(&target.ns, &name, &obj).map(Arc::new),
                })
                .await?;
                return Ok(object_response(wire, 201, &status));
            }
            if target.sub.is_some() || target.name.is_some() {
                return Err(ApiError::method_not_allowed());
            }
            let obj = decode::object(&target.rt, &content_type, &body)?;
            // fidelity: reviews are answered at once and never stored.
            if target.rt.verbs == super::resources::Verbs::CreateOnly {
                let review = super::reviews::answer(
                    &target.rt,
                    &target.version,
                    &target.ns,
                    obj,
                    shared.token.as_deref(),
                )?;
                return Ok(json_response(201, &review));
            }
            let obj = input(&target.rt, obj);
            let write = write_of(&target, Verb::Create, opts.dry_run);
            let created = webhook::admit(&shared, &write, |store, pass| {
                let mut obj = obj.clone();
                webhook::keep_admitted_name(&mut obj, pass);
                store.create(&target.rt, &target.ns, obj, &opts.for_pass(pass))
            })
            .await?;
            Ok(object_response(
                wire,
                201,
                &output(&target.rt, &target.version, &created),
            ))
        }
        "update" => {
            let obj = decode::object(&target.rt, &content_type, &body)?;
            let obj = input(&target.rt, obj);
            let scope = scope_of(&target)?;
            let name = target.name.clone().unwrap_or_default();
            let missing = shared
                .lock()
                .get(&target.rt.store_key(), &target.ns, &name)
                .is_none();
            // Some resources (leases, events) are created by an update of a missing name.
            if missing && target.sub.is_none() && target.rt.allows_create_on_update() {
                let mut obj = obj;
                if name_of(&obj) != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        name_of(&obj)
                    )));
                }
                if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                let write = write_of(&target, Verb::Create, opts.dry_run);
                let created = webhook::admit(&shared, &write, |store, pass| {
                    let mut obj = obj.clone();
                    webhook::keep_admitted_name(&mut obj, pass);
                    store.create(&target.rt, &target.ns, obj, &opts.for_pass(pass))
                })
                .await?;
                return Ok(object_response(
                    wire,
                    201,
                    &output(&target.rt, &target.version, &created),
                ));
            }
            let write = write_of(&target, Verb::Update, opts.dry_run);
            let updated = webhook::admit(&shared, &write, |store, pass| {
                let opts = opts.for_pass(pass);
                store.update(
                    &target.rt,
                    &target.ns,
                    &name,
                    obj.clone(),
                    scope,
                    &opts,
                    false,
                )
            })
            .await?;
            Ok(object_response(
                wire,
                200,
                &output(&target.rt, &target.version, &updated),
            ))
        }
        "patch" => {
            let scope = scope_of(&target)?;
            let force = query.flag("force");
            let apply = content_type.starts_with("application/apply-patch");
            if apply && query.get("fieldManager").is_none_or(str::is_empty) {
                return Err(ApiError::invalid_options(
                    "PatchOptions",
                    "fieldManager",
                    "FieldValueRequired",
                    "Required value: is required for apply patch",
                ));
            }
            if !apply && query.get("force").is_some() {
                return Err(ApiError::invalid_options(
                    "PatchOptions",
                    "force",
                    "FieldValueForbidden",
                    "Forbidden: may not be specified for non-apply patch",
                ));
            }
            let existed = target.name.as_deref().is_some_and(|n| {
                shared
                    .lock()
                    .get(&target.rt.store_key(), &target.ns, n)
                    .is_some()
            });
            let write = write_of(&target, Verb::Update, opts.dry_run);
            let out = webhook::admit(&shared, &write, |store, pass| {
                let opts = opts.for_pass(pass);
                patch_object(store, &target, &content_type, &body, scope, &opts, force)
            })
            .await?;
            // An apply that creates the object answers 201, as a create does.
            Ok(object_response(
                wire,
                if existed { 200 } else { 201 },
                &output(&target.rt, &target.version, &out),
            ))
        }
        "delete" => {
            let body_v = decode_optional_body(&content_type, &body)?;
            let dopts = delete_opts(&query, &body_v, !body.is_empty(), opts.dry_run);
            let name = target.name.clone().unwrap_or_default();
            let write = write_of(&target, Verb::Delete, dopts.dry_run);
            let out = webhook::admit(&shared, &write, |store, pass| {
                let dopts = DeleteOpts {
                    dry_run: pass.dry_run(dopts.dry_run),
                    ..dopts.clone()
                };
                store.delete(&target.rt, &target.ns, &name, &dopts)
            })
            .await?;
            let kept = out.pointer("/metadata/deletionTimestamp").is_some()
                || (dopts.dry_run && !super::store::finalizers(&out).is_empty());
            // An object that is gone is answered with a Status; one that waits for its
            // finalizers or grace period, with the object.
            if !kept {
                return Ok(object_response(
                    wire,
                    200,
                    &deleted_status(&target.rt, &name, &out),
                ));
            }
            Ok(object_response(
                wire,
                200,
                &output(&target.rt, &target.version, &out),
            ))
        }
        "deletecollection" => {
            let body_v = decode_optional_body(&content_type, &body)?;
            let dopts = delete_opts(&query, &body_v, !body.is_empty(), opts.dry_run);
            let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
                .map_err(|e| ApiError::bad_request(e.0))?;
            let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))
                .map_err(|e| ApiError::bad_request(e.0))?;
            let items = shared
                .lock()
                .list(&target.rt.store_key(), &target.ns, &labels, &fields);
            let mut deleted = Vec::new();
            // Each item is admitted as a DELETE of its own, as kube-apiserver does; a refusal
            // ends the request, an item already gone is skipped.
            for o in items {
                let (ns, name) = (namespace_of(&o), name_of(&o));
                let mut write = write_of(&target, Verb::Delete, dopts.dry_run);
                write.namespace = ns;
                write.name = Some(name);
                let result = webhook::admit(&shared, &write, |store, pass| {
                    let dopts = DeleteOpts {
                        dry_run: pass.dry_run(dopts.dry_run),
                        ..dopts.clone()
                    };
                    store.delete(&target.rt, ns, name, &dopts)
                })
                .await;
                match result {
                    Ok(d) => {
                        let mut item = output(&target.rt, &target.version, &d);
                        if !target.rt.custom
                            && let Some(m) = item.as_object_mut()
                        {
                            m.remove("kind");
                            m.remove("apiVersion");
                        }
                        deleted.push(item);
                    }
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            let rv = shared.lock().current_rv().to_string();
            Ok(object_response(
                wire,
                200,
                &json!({"kind": format!("{}List", target.rt.kind),
                "apiVersion": target.rt.api_version(&target.version),
                "metadata": {"resourceVersion": rv}, "items": deleted}),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The fault injection admin endpoint (see [`faults::admin`]).
fn admin(
    shared: &Shared,
    method: &Method,
    segs: &[&str],
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    match (method, segs) {
        (&Method::GET, ["faults"]) => Ok(json_response(200, &shared.faults.describe())),
        (&Method::POST, ["faults"]) => {
            let rule: FaultRule = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid fault rule: {e}")))?;
            let id = shared
                .faults
                .add(rule)
                .map_err(|e| ApiError::bad_request(format!("invalid fault rule: {e}")))?;
            Ok(json_response(201, &json!({ "id": id })))
        }
        (&Method::DELETE, ["faults"]) => {
            shared.faults.clear();
            Ok(json_response(200, &shared.faults.describe()))
        }
        (&Method::DELETE, ["faults", id]) => {
            let removed = id.parse().is_ok_and(|id| shared.faults.remove(id));
            if removed {
                Ok(json_response(200, &shared.faults.describe()))
            } else {
                Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("no fault rule with id {id:?}"),
                ))
            }
        }
        (&Method::POST, ["watches", "close"]) => {
            shared.faults.close_watches();
            Ok(json_response(200, &json!({ "closed": true })))
        }
        (&Method::POST, ["watch-history", "expire"]) => {
            shared.lock().expire_history();
            Ok(json_response(200, &json!({ "expired": true })))
        }
        _ => Err(ApiError::no_such_resource()),
    }
}

fn scope_of(target: &Target) -> Result<Scope, ApiError> {
    match target.sub.as_deref() {
        None => Ok(Scope::Main {
            has_status: target.rt.status_subresource,
        }),
        Some("status") if target.rt.status_subresource => Ok(Scope::Status),
        _ => Err(ApiError::no_such_resource()),
    }
}

/// The `Status` kube-apiserver answers a delete that removed the object at once.
fn deleted_status(rt: &ResourceType, name: &str, obj: &Value) -> Value {
    let mut details = json!({"name": name, "kind": rt.plural});
    if !rt.group.is_empty() {
        details["group"] = json!(rt.group);
    }
    if let Some(uid) = uid_of_value(obj) {
        details["uid"] = json!(uid);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": details})
}

fn uid_of_value(v: &Value) -> Option<&str> {
    v.pointer("/metadata/uid").and_then(Value::as_str)
}

/// DeleteOptions come from the body when it has one, else from the query (kube-apiserver
/// reads only one of the two).
fn delete_opts(query: &Query, body: &Value, from_body: bool, dry_run: bool) -> DeleteOpts {
    let empty = Query::default();
    let query = if from_body { &empty } else { query };
    let dry_run = dry_run && !from_body;
    DeleteOpts {
        propagation: query
            .get("propagationPolicy")
            .map(str::to_string)
            .or_else(|| {
                body.get("propagationPolicy")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .or_else(
                || match body.get("orphanDependents").and_then(Value::as_bool) {
                    Some(true) => Some("Orphan".into()),
                    _ => None,
                },
            ),
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        resource_version: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        grace_period: query
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse().ok())
            .or_else(|| body.get("gracePeriodSeconds").and_then(Value::as_i64)),
        dry_run: dry_run
            || body
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|d| d == "All")),
    }
}

fn parse_target(store: &Store, segs: &[&str]) -> Result<Target, ApiError> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_such_resource()),
    };
    let find = |plural: &str| {
        store
            .type_of(group, plural)
            .filter(|t| t.version(version).is_some())
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, plural, more @ ..] if find(plural).is_some_and(|t| t.namespaced) => {
            (ns.to_string(), [&[*plural][..], more].concat())
        }
        other => (String::new(), other.to_vec()),
    };
    let Some(plural) = rest.first() else {
        return Err(ApiError::no_such_resource());
    };
    let rt = find(plural).ok_or_else(ApiError::no_such_resource)?;
    if rest.len() > 3 {
        return Err(ApiError::no_such_resource());
    }
    // Only subresources that exist: `namespaces/default/configmaps` for a resource this
    // sandbox does not serve is a 404, as kube-apiserver answers, not the Namespace.
    match rest.get(2) {
        None => {}
        Some(&"status") if rt.status_subresource => {}
        Some(&"eviction" | &"binding") if group.is_empty() && rt.plural == "pods" => {}
        Some(_) => return Err(ApiError::no_such_resource()),
    }
    Ok(Target {
        rt,
        version: version.to_string(),
        ns,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

/// The write a request makes, for admission.
fn write_of(target: &Target, verb: Verb, dry_run: bool) -> Write<'_> {
    Write {
        rt: &target.rt,
        version: &target.version,
        namespace: &target.ns,
        name: target.name.as_deref(),
        subresource: target.sub.as_deref(),
        kind: None,
        verb,
        dry_run,
    }
}

/// A body that may be absent (DeleteOptions): absent reads as `{}`.
fn decode_optional_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        Ok(json!({}))
    } else {
        decode_body(content_type, body)
    }
}

/// Parse a JSON, YAML or protobuf body (Eviction, Binding, DeleteOptions); unknown types get
/// 415.
fn decode_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    if protobuf::is_protobuf(ct) {
        return protobuf::decode(body).map_err(|e| e.to_api_error(None));
    }
    match ct {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as JSON: {e}"
            ))
        }),
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "the body of the request could not be decoded as YAML: {e}"
                ))
            }),
        _ => Err(ApiError::unsupported_media_type(false)),
    }
}

fn patch_object(
    store: &mut Store,
    target: &Target,
    content_type: &str,
    body: &[u8],
    scope: Scope,
    opts: &WriteOpts,
    force: bool,
) -> Result<Arc<Value>, ApiError> {
    let rt = &target.rt;
    let name = target
        .name
        .clone()
        .ok_or_else(ApiError::method_not_allowed)?;
    let ct = content_type.split(';').next().unwrap_or("").trim();
    if !matches!(
        ct,
        "application/apply-patch+yaml"
            | "application/merge-patch+json"
            | "application/json-patch+json"
            | "application/strategic-merge-patch+json"
    ) {
        return Err(ApiError::unsupported_patch_type());
    }
    let lists = Store::list_oracle(rt, &target.version);
    let existing = store.get(&rt.store_key(), &target.ns, &name);
    let invalid_patch = |msg: String| {
        let mut e = ApiError::new(422, "Invalid", msg);
        e.details = json!({});
        e
    };
    if ct == "application/apply-patch+yaml" {
        let applied: Value = serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if !applied.is_object() {
            return Err(ApiError::bad_request(
                "the apply configuration is not an object",
            ));
        }
        if let Some(kind) = applied.get("kind").and_then(Value::as_str)
            && kind != rt.kind
        {
            let api_version = applied
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            return Err(ApiError::bad_request(format!(
                "invalid object type: {group}/{version}, Kind={kind}"
            )));
        }
        let applied = input(rt, applied);
        if name_of(&applied) != name && !name_of(&applied).is_empty() {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                name_of(&applied)
            )));
        }
        let now = store.now();
        let api_version = rt.api_version(&target.version);
        let ctx = WriteContext {
            manager: &opts.manager,
            scope,
            api_version: &api_version,
            time: &now,
        };
        let merged = patch::server_side_apply(existing.as_deref(), &applied, &ctx, force, &lists)
            .map_err(|conflicts| apply_conflict(rt, &name, conflicts))?;
        return match existing {
            Some(_) => store.update(rt, &target.ns, &name, merged, scope, opts, true),
            None => {
                if matches!(scope, Scope::Status) {
                    return Err(ApiError::not_found(rt, &name));
                }
                let mut m = merged;
                super::store::set_meta(&mut m, "name", json!(name));
                store.create(rt, &target.ns, m, opts)
            }
        };
    }
    let old = existing.ok_or_else(|| ApiError::not_found(rt, &name))?;
    let mut new = output(rt, &target.version, &old);
    match ct {
        "application/merge-patch+json" => patch::merge_patch(&mut new, &decode::merge_patch(body)?),
        "application/json-patch+json" => {
            // kube-apiserver does not say which operation failed.
            patch::json_patch(&mut new, &decode::json_patch(body)?).map_err(|_| {
                invalid_patch(
                    "the server rejected our request due to an error in our request".into(),
                )
            })?
        }
        "application/strategic-merge-patch+json" => {
            if rt.custom {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            new = patch::strategic_merge(&new, &decode::merge_patch(body)?, &lists)
                .map_err(invalid_patch)?;
        }
        _ => return Err(ApiError::unsupported_patch_type()),
    }
    let new = input(rt, new);
    store.update(rt, &target.ns, &name, new, scope, opts, false)
}

fn apply_conflict(rt: &ResourceType, name: &str, conflicts: Vec<patch::Conflict>) -> ApiError {
    let lines: Vec<String> = conflicts
        .iter()
        .map(|c| format!("conflict with {}: {}", c.manager, c.field))
        .collect();
    let msg = if lines.len() == 1 {
        format!("Apply failed with 1 conflict: {}", lines[0])
    } else {
        format!(
            "Apply failed with {} conflicts: {}",
            lines.len(),
            lines.join("\n")
        )
    };
    let mut e = ApiError::new(409, "Conflict", msg);
    // kube-apiserver names neither the object nor its kind here, only the causes.
    let _ = (rt, name);
    e.details = json!({"causes": conflicts
        .iter()
        .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager), "field": c.field}))
        .collect::<Vec<_>>()});
    e
}

/// An object as a client asked for it: events through their API, apiVersion of the request.
/// The field manager of a write that names none, as kube-apiserver derives it from the
/// User-Agent: the part before the first `/`, without unprintable characters, cut at 128 bytes
/// (`kubectl/v1.32.0 (linux/amd64)` gives `kubectl`), and `unknown` when that leaves nothing
/// (no User-Agent, or one starting with `/`), as measured on kube-apiserver v1.37
/// (tests/real_cluster_names.rs). Printable is approximated as Go's `unicode.IsPrint` for all
/// but format and private-use characters: not a control character, and no whitespace other
/// than the ASCII space.
pub fn manager_from_user_agent(user_agent: &str) -> String {
    const MAX: usize = 128;
    let prefix = user_agent.split('/').next().unwrap_or_default();
    let mut manager = String::new();
    for c in prefix
        .chars()
        .filter(|c| !c.is_control() && (*c == ' ' || !c.is_whitespace()))
    {
        if manager.len() + c.len_utf8() > MAX {
            break;
        }
        manager.push(c);
    }
    if manager.is_empty() {
        manager.push_str("unknown");
    }
    manager
}

/// Does [`output`] convert the stored form (more than setting `apiVersion`)?
fn converts(rt: &ResourceType) -> bool {
    rt.stored_as.is_some() && rt.group == "events.k8s.io"
}

/// A watch event's line spliced from the stored bytes, with `api_version` in place of the
/// stored one when given.
fn stored_line(kind: &str, obj: &Object, api_version: Option<&str>) -> Bytes {
    let mut line = Vec::with_capacity(obj.body().len() + 96);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    obj.write_json(&mut line, api_version);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

pub(crate) fn output(rt: &ResourceType, version: &str, obj: &Value) -> Value {
    if rt.stored_as.is_some() && rt.group == "events.k8s.io" {
        return events::to_new(obj);
    }
    let mut o = obj.clone();
    o["apiVersion"] = json!(rt.api_version(version));
    o
}

/// An object as the store keeps it.
fn input(rt: &ResourceType, obj: Value) -> Value {
    if rt.stored_as.is_some() && rt.group == "events.k8s.io" {
        return events::to_core(&obj);
    }
    obj
}

fn list(
    shared: &Shared,
    target: &Target,
    query: &Query,
    as_table: bool,
    wire: Wire,
) -> Result<Response<Body>, ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.0))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.0))?;
    let limit = decode::limit(query.get("limit"))?;
    fields.check_supported(&target.rt)?;
    let after = query
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(decode_continue)
        .transpose()?;
    // Under the lock only the selection: the body is spliced from the stored bytes after.
    let (mut items, rv, clock) = {
        let store = shared.lock();
        let items = store.list_objects(
            &target.rt.store_key(),
            &target.ns,
            &labels,
            &fields,
            after.as_ref(),
        );
        (items, store.current_rv(), store.clock.clone())
    };
    let mut next = None;
    let mut remaining = 0;
    if limit > 0 && items.len() > limit {
        remaining = items.len() - limit;
        items.truncate(limit);
        let last = items.last().expect("limit > 0").value();
        next = Some(encode_continue(namespace_of(&last), name_of(&last)));
    }
    let rv = rv.to_string();
    if as_table {
        let outs: Vec<Value> = items
            .iter()
            .map(|o| output(&target.rt, &target.version, &o.value()))
            .collect();
        let mut t = table::table(&target.rt, &target.version, &outs, &rv, &*clock);
        if let Some(n) = &next {
            t["metadata"]["continue"] = json!(n);
        }
        return Ok(json_response(200, &t));
    }
    // Serialise item by item: no copy of the whole list.
    let api_version = target.rt.api_version(&target.version);
    let typed = !target.rt.custom;
    let converted = converts(&target.rt);
    let head = |meta: &Value| -> Result<Vec<u8>, ApiError> {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(b"{\"kind\":");
        serde_json::to_writer(&mut buf, &format!("{}List", target.rt.kind))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        buf.extend_from_slice(b",\"apiVersion\":");
        serde_json::to_writer(&mut buf, &api_version)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        buf.extend_from_slice(b",\"metadata\":");
        serde_json::to_writer(&mut buf, meta).map_err(|e| ApiError::internal(e.to_string()))?;
        buf.extend_from_slice(b",\"items\":[");
        Ok(buf)
    };
    let mut meta = json!({"resourceVersion": rv});
    if let Some(n) = &next {
        meta["continue"] = json!(n);
        // With a selector, etcd cannot count what remains.
        if labels.is_empty() && fields.is_empty() {
            meta["remainingItemCount"] = json!(remaining);
        }
    }
    // The items of a built-in list carry no kind and apiVersion, as kube-apiserver's typed
    // lists; custom resources' (unstructured) items do. Both are the stored bytes, spliced.
    if typed && !converted && wire != Wire::Protobuf {
        // Streamed: the stored bytes of each item go out as they are, shared, not copied.
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(UnsyncBoxBody::new(SplicedList::new(
                Bytes::from(head(&meta)?),
                items,
            )))
            .expect("a valid response"));
    }
    let mut buf = head(&meta)?;
    buf.reserve(items.iter().map(|o| o.body().len() + 1).sum::<usize>() + 2);
    let direct = !typed
        && target.rt.stored_as.is_none()
        && target.rt.versions.first().map(|v| v.name.as_str()) == Some(target.version.as_str());
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        if converted {
            let mut item = output(&target.rt, &target.version, &o.value());
            if typed && let Some(m) = item.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            serde_json::to_writer(&mut buf, &item)
                .map_err(|e| ApiError::internal(e.to_string()))?;
        } else if typed {
            buf.extend_from_slice(o.body());
        } else if direct {
            o.write_json(&mut buf, None);
        } else {
            o.write_json(&mut buf, Some(&api_version));
        }
    }
    buf.extend_from_slice(b"]}");
    if wire == Wire::Protobuf {
        let list: Value =
            serde_json::from_slice(&buf).map_err(|e| ApiError::internal(e.to_string()))?;
        return Ok(object_response(wire, 200, &list));
    }
    Ok(bytes_response(200, "application/json", buf))
}

// --- sim: LIST bodies streamed from the stored bytes ---

/// A LIST body spliced from the stored objects: the list's head, each item's stored bytes
/// with a comma between, then `]}`, sent in frames of about [`LIST_FRAME`] bytes. Its length
/// is known up front, so hyper sends it with a Content-Length and writes the frames as they
/// come: no copy of the whole list is ever made, and the first bytes leave before the last
/// item is read. (A frame per item made 300,000 frames for 150,000 pods, each a write and,
/// over TLS, a record of its own.)
struct SplicedList {
    head: Option<Bytes>,
    items: std::vec::IntoIter<Arc<Object>>,
    started: bool,
    tail: Option<Bytes>,
    remaining: u64,
}

/// The size a LIST body's frames are filled to.
const LIST_FRAME: usize = 64 * 1024;

impl SplicedList {
    fn new(head: Bytes, items: Vec<Arc<Object>>) -> Self {
        let items_len: usize = items.iter().map(|o| o.body().len()).sum();
        let commas = items.len().saturating_sub(1);
        SplicedList {
            remaining: (head.len() + items_len + commas + 2) as u64,
            head: Some(head),
            items: items.into_iter(),
            started: false,
            tail: Some(Bytes::from_static(b"]}")),
        }
    }

    /// The next frame: the head and items (with their commas) until it holds
    /// [`LIST_FRAME`] bytes, and the tail after the last item.
    fn next_frame(&mut self) -> Option<Bytes> {
        let mut buf = Vec::with_capacity(LIST_FRAME + 4096);
        if let Some(h) = self.head.take() {
            buf.extend_from_slice(&h);
        }
        while buf.len() < LIST_FRAME {
            match self.items.next() {
                Some(o) => {
                    if self.started {
                        buf.push(b',');
                    }
                    self.started = true;
                    buf.extend_from_slice(o.body());
                }
                None => {
                    if let Some(t) = self.tail.take() {
                        buf.extend_from_slice(&t);
                    }
                    break;
                }
            }
        }
        (!buf.is_empty()).then(|| Bytes::from(buf))
    }
}

impl hyper::body::Body for SplicedList {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        std::task::Poll::Ready(this.next_frame().map(|b| {
            this.remaining = this.remaining.saturating_sub(b.len() as u64);
            Ok(Frame::data(b))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

// --- end sim ---

fn encode_continue(ns: &str, name: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{ns}\u{0}{name}"))
}

fn decode_continue(token: &str) -> Result<(String, String), ApiError> {
    use base64::Engine;
    let bad = || {
        let mut e = ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        );
        e.details = json!({});
        e
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    let (ns, name) = s.split_once('\u{0}').ok_or_else(bad)?;
    Ok((ns.to_string(), name.to_string()))
}

/// A watcher's view of the changes: namespace, selectors, and the version it reads.
struct WatchFilter {
    rt: Arc<ResourceType>,
    version: String,
    ns: String,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, o: &Value) -> bool {
        (self.ns.is_empty() || namespace_of(o) == self.ns)
            && self.labels.matches_object(o)
            && self.fields.matches(o)
    }

    /// The event a change makes for this watcher, if any: an object that starts matching is
    /// ADDED, one that stops is DELETED.
    fn event_kind(&self, c: &Change) -> Option<&'static str> {
        let now = self.matches(&c.object);
        match c.kind {
            ChangeType::Added => now.then_some("ADDED"),
            ChangeType::Deleted => now.then_some("DELETED"),
            ChangeType::Modified => {
                let before = c.old.as_deref().is_some_and(|o| self.matches(o));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }

    /// The wire line for a change, if this watcher gets one. The common case (same event
    /// type, stored version, no Table) is serialised once per change and shared by every
    /// watcher.
    fn line(
        &self,
        c: &Change,
        table_of: Option<(&ResourceType, &str, &dyn crate::clock::Clock)>,
    ) -> Option<Bytes> {
        let kind = self.event_kind(c)?;
        if table_of.is_none() && !converts(&self.rt) {
            let api_version = self.rt.api_version(&self.version);
            if kind == c.kind.as_str() && c.stored.api_version() == Some(api_version.as_str()) {
                return Some(
                    c.line
                        .get_or_init(|| stored_line(kind, &c.stored, None))
                        .clone(),
                );
            }
            return Some(stored_line(kind, &c.stored, Some(&api_version)));
        }
        Some(event_line(
            kind,
            &output(&self.rt, &self.version, &c.object),
            table_of,
        ))
    }
}

/// One newline-terminated watch event.
pub fn event_line(
    kind: &str,
    obj: &Value,
    table_of: Option<(&ResourceType, &str, &dyn crate::clock::Clock)>,
) -> Bytes {
    let object = match table_of {
        Some((rt, version, clock)) if kind != "BOOKMARK" && kind != "ERROR" => {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut t = table::table(rt, version, std::slice::from_ref(obj), &rv, clock);
            t["metadata"] = json!({"resourceVersion": rv});
            t
        }
        _ => obj.clone(),
    };
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn watch(
    shared: Arc<Shared>,
    target: Target,
    query: &Query,
    as_table: bool,
    end_early: Option<Duration>,
    wire: Wire,
) -> Result<Response<Body>, ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.0))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.0))?;
    fields.check_supported(&target.rt)?;
    let rv = query.get("resourceVersion").unwrap_or("");
    let send_initial = query.flag("sendInitialEvents");
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let timeout = end_early.map_or(timeout, |e| e.min(timeout));
    let mut closer = shared.faults.watch_closer();
    closer.mark_unchanged();
    let filter = WatchFilter {
        rt: target.rt.clone(),
        version: target.version.clone(),
        ns: target.ns.clone(),
        labels,
        fields,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let clock = shared.lock().clock.clone();
    let table_of = as_table;
    // Under the lock: the initial state and the subscription, so that nothing falls between.
    let start = {
        let mut store = shared.lock();
        store.ensure_table(&target.rt.store_key());
        let current = store.current_rv();
        let synthetic = rv.is_empty() || rv == "0" || send_initial;
        let parsed = if synthetic {
            None
        } else {
            rv.parse::<u64>().ok()
        };
        if !synthetic && parsed.is_none() {
            return Err(decode::invalid_watch_resource_version(rv));
        }
        match store.subscribe(&target.rt.store_key(), parsed) {
            Ok((backlog, receiver)) => {
                let initial: Vec<Arc<Object>> = if synthetic {
                    store.list_objects(
                        &target.rt.store_key(),
                        &target.ns,
                        &filter.labels,
                        &filter.fields,
                        None,
                    )
                } else {
                    vec![]
                };
                Ok((initial, backlog, receiver, current))
            }
            Err(e) => Err(e),
        }
    };
    let bookmark_interval = shared.bookmark_interval;
    tokio::spawn(async move {
        let rt = filter.rt.clone();
        let version = filter.version.clone();
        let t = table_of.then_some((&*rt, version.as_str(), &*clock as &dyn crate::clock::Clock));
        let bookmark = |rv: u64| {
            let mut o = json!({"kind": rt.kind, "apiVersion": rt.api_version(&version), "metadata": {"resourceVersion": rv.to_string()}});
            if send_initial {
                o["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            event_line("BOOKMARK", &o, None)
        };
        let (initial, backlog, mut receiver, start_rv) = match start {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(event_line("ERROR", &e.status(), None)).await;
                return;
            }
        };
        let mut last_rv = start_rv;
        let api_version = rt.api_version(&version);
        for o in initial {
            let line = if t.is_none() && !converts(&rt) {
                stored_line("ADDED", &o, Some(&api_version))
            } else {
                event_line("ADDED", &output(&rt, &version, &o.value()), t)
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if send_initial && bookmarks && tx.send(bookmark(start_rv)).await.is_err() {
            return;
        }
        for c in backlog {
            last_rv = last_rv.max(c.rv);
            if let Some(line) = filter.line(&c, t)
                && tx.send(line).await.is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = closer.changed() => return,
                _ = ticker.tick(), if bookmarks => {
                    let mut b = bookmark(last_rv);
                    if send_initial {
                        b = event_line("BOOKMARK", &json!({"kind": rt.kind, "apiVersion": rt.api_version(&version), "metadata": {"resourceVersion": last_rv.to_string()}}), None);
                    }
                    if tx.send(b).await.is_err() { return; }
                }
                _ = tx.closed() => return,
                msg = receiver.recv() => match msg {
                    Ok(c) => {
                        if c.rv <= last_rv && c.rv <= start_rv { continue; }
                        last_rv = last_rv.max(c.rv);
                        if let Some(line) = filter.line(&c, t)
                            && tx.send(line).await.is_err() {
                            return;
                        }
                    }
                    // A watcher too slow to keep up is closed; it resumes from its last version.
                    Err(_) => return,
                },
            }
        }
    });
    let stream = futures::stream::unfold(rx, move |mut rx| async move {
        rx.recv().await.map(|b| {
            // A protobuf watcher gets each JSON line as a length-prefixed WatchEvent.
            let b = match wire {
                Wire::Json => b,
                Wire::Protobuf => serde_json::from_slice::<Value>(&b)
                    .ok()
                    .and_then(|ev| protobuf::encode_watch_event(&ev))
                    .map(Bytes::from)
                    .unwrap_or(b),
            };
            (Ok::<_, Infallible>(Frame::data(b)), rx)
        })
    });
    let body = UnsyncBoxBody::new(StreamBody::new(stream));
    Ok(Response::builder()
        .status(200)
        .header(
            header::CONTENT_TYPE,
            match wire {
                Wire::Json => "application/json",
                Wire::Protobuf => protobuf::WATCH_MEDIA_TYPE,
            },
        )
        .header("Transfer-Encoding", "chunked")
        .body(body)
        .expect("a valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manager_is_named_after_the_user_agent_as_kube_apiserver_does() {
        let long = format!("{}/1", "é".repeat(100));
        let cases = [
            (
                "kubectl/v1.32.0 (linux/amd64) kubernetes/abc",
                "kubectl".to_string(),
            ),
            ("nmo/0.1.0", "nmo".into()),
            ("plain agent", "plain agent".into()),
            ("a\tb/1", "ab".into()),
            ("", "unknown".into()),
            ("/x", "unknown".into()),
            (long.as_str(), "é".repeat(64)),
        ];
        for (agent, manager) in cases {
            assert_eq!(manager_from_user_agent(agent), manager, "{agent:?}");
        }
    }

    #[test]
    fn query_strings_are_decoded() {
        let q =
            Query::parse("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=true&dryRun=All&dryRun=x");
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert_eq!(q.all("dryRun"), ["All", "x"]);
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn continue_tokens_round_trip_and_garbage_is_refused() {
        let t = encode_continue("ns", "name");
        assert_eq!(
            decode_continue(&t).unwrap(),
            ("ns".to_string(), "name".to_string())
        );
        assert_eq!(decode_continue("!!").unwrap_err().code, 400);
    }

    #[test]
    fn unknown_bodies_get_415_and_bad_json_or_protobuf_400() {
        assert_eq!(decode_body("text/plain", b"x").unwrap_err().code, 415);
        assert_eq!(
            decode_body("application/vnd.kubernetes.protobuf", b"\x00k8s")
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            decode_body("application/json", b"{nope").unwrap_err().code,
            400
        );
        assert!(decode_body("application/yaml", b"a: 1").is_ok());
    }
}
