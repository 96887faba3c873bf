//! The sandbox: an in-process Kubernetes API server that kube-rs and kubectl use as a real
//! cluster (see SANDBOX-API.md). It backs the integration tests and `nmo simulate`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), nmo::sandbox::SandboxError> {
//! let sandbox = nmo::sandbox::Sandbox::builder().speed(60.0).start().await?;
//! sandbox.install_crds()?;
//! sandbox.add_node("worker-1", &[("node-role.kubernetes.io/worker", "")])?;
//! let client = sandbox.client()?; // a real kube::Client speaking HTTPS to the sandbox
//! # let _ = client; Ok(()) }
//! ```
//!
//! Layout: `store` (objects, resourceVersions, history, indexes), `kubelet` (what the rest of
//! a cluster does: GC, PDB status, eviction, pod termination, workload controllers), `server`
//! (HTTP routing and watches), `workloads` (the Deployment, ReplicaSet, Job and Service
//! controllers); pure parts in `selectors`, `patch`, `schema`, `cel`, `table`, `pdb`, `events`,
//! `discovery`, `resources` (every GA built-in kind, from k8s-openapi) and `reviews` (the
//! create-only review kinds). Validating admission webhooks are called from the
//! write path by `webhook` (`webhook_rules` decides, `webhook_client` calls).

pub mod cel;
pub mod decode;
pub mod defaults;
pub mod discovery;
pub mod error;
pub mod events;
pub mod faults;
pub mod kubelet;
pub mod openapi;
pub mod patch;
pub mod pdb;
pub mod protobuf;
pub mod resources;
pub mod reviews;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod store;
pub mod table;
pub mod tls;
pub mod validation;
pub mod webhook;
pub mod webhook_client;
pub mod webhook_rules;
pub mod workloads;

pub use error::ApiError;
pub use faults::{Fault, FaultId, FaultRule, Faults};

use crate::clock::{Clock, SystemClock};
use serde_json::{Map, Value, json};
use server::Shared;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use store::{Store, Timer, gr};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Why the sandbox failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address tried.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The server URL is not a valid URI.
    #[error("invalid sandbox URL {url}: {message}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The kube client could not be built.
    #[error("cannot build a kube client for the sandbox: {0}")]
    Client(#[source] kube::Error),
    /// Manifests could not be read.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    /// An object was refused.
    #[error("{what}: {source}")]
    Api {
        /// The object or operation.
        what: String,
        /// The API error.
        #[source]
        source: ApiError,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl SandboxError {
    fn api(what: impl Into<String>, source: ApiError) -> Self {
        SandboxError::Api {
            what: what.into(),
            source,
        }
    }
}

/// Configures and starts a [`Sandbox`].
#[derive(Clone)]
pub struct SandboxBuilder {
    speed: f64,
    clock: Arc<dyn Clock>,
    https: bool,
    port: u16,
    workload_controllers: bool,
    token: Option<String>,
    history_limit: usize,
    bookmark_interval: Duration,
    fault_seed: u64,
}

impl Default for SandboxBuilder {
    fn default() -> Self {
        SandboxBuilder {
            speed: 1.0,
            clock: Arc::new(SystemClock),
            https: true,
            port: 0,
            workload_controllers: true,
            token: None,
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(5),
            fault_seed: 0x6e6d_6f66_6175_6c74,
        }
    }
}

impl SandboxBuilder {
    /// Grace periods run this many times faster (default 1).
    pub fn speed(mut self, speed: f64) -> Self {
        self.speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        self
    }
    /// The clock timestamps come from (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// Serve HTTPS (default) or plain HTTP.
    pub fn https(mut self, https: bool) -> Self {
        self.https = https;
        self
    }
    /// Port on 127.0.0.1 (default 0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    /// Re-create ReplicaSet/DaemonSet pods and schedule pending pods (default true).
    pub fn workload_controllers(mut self, on: bool) -> Self {
        self.workload_controllers = on;
        self
    }
    /// Require this bearer token (default: anonymous access allowed).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
    /// Watch events kept per resource before older resourceVersions get 410 (default 10,000).
    pub fn history_limit(mut self, n: usize) -> Self {
        self.history_limit = n.max(1);
        self
    }
    /// Seed of the generator that picks which requests a fault rule with a share below 1
    /// hits: the same seed and the same request order fail the same requests.
    pub fn fault_seed(mut self, seed: u64) -> Self {
        self.fault_seed = seed;
        self
    }
    /// How often watches that allow bookmarks get one (default 5 s).
    pub fn bookmark_interval(mut self, every: Duration) -> Self {
        self.bookmark_interval = every.max(Duration::from_millis(10));
        self
    }

    /// Start serving.
    pub async fn start(self) -> Result<Sandbox, SandboxError> {
        let addr = format!("127.0.0.1:{}", self.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| SandboxError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| SandboxError::Bind {
            addr: addr.clone(),
            source,
        })?;
        let tls = if self.https {
            Some(tls::generate()?)
        } else {
            None
        };
        let (timer_tx, timer_rx) = mpsc::unbounded_channel();
        let store = Store::new(
            self.clock.clone(),
            self.speed,
            self.workload_controllers,
            self.history_limit,
            timer_tx,
        );
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            counts: Mutex::new(BTreeMap::new()),
            agent_counts: Mutex::new(BTreeMap::new()),
            log: Mutex::new(None),
            address: local.to_string(),
            token: self.token.clone(),
            bookmark_interval: self.bookmark_interval,
            faults: Faults::with_seed(self.fault_seed),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let timers = tokio::spawn(run_timers(
            Arc::downgrade(&shared),
            timer_rx,
            stop_rx.clone(),
        ));
        let acceptor = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.server_config.clone()));
        let server = tokio::spawn(serve(listener, shared.clone(), acceptor, stop_rx));
        let scheme = if self.https { "https" } else { "http" };
        Ok(Sandbox {
            shared,
            url: format!("{scheme}://{local}"),
            ca_pem: tls.as_ref().map(|t| t.ca_pem.clone()),
            ca_der: tls.as_ref().map(|t| t.ca_der.clone()),
            token: self.token,
            stop: stop_tx,
            tasks: Mutex::new(vec![server, timers]),
        })
    }
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| server::handle(shared.clone(), req));
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            match acceptor {
                Some(a) => {
                    if let Ok(tls) = a.accept(stream).await {
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                            .await;
                    }
                }
                None => {
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                }
            }
        });
        // Reap finished connections so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
    }
    conns.abort_all();
}

async fn run_timers(
    shared: Weak<Shared>,
    mut rx: mpsc::UnboundedReceiver<Timer>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let t = tokio::select! {
            t = rx.recv() => t,
            _ = stop.changed() => return,
        };
        let Some(t) = t else { return };
        let shared = shared.clone();
        match t {
            Timer::FinishPodTermination {
                ns,
                name,
                uid,
                after,
            } => {
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    if let Some(s) = shared.upgrade() {
                        s.lock().finish_pod_termination(&ns, &name, &uid);
                    }
                });
            }
        }
    }
}

/// A running sandbox API server on 127.0.0.1.
pub struct Sandbox {
    shared: Arc<Shared>,
    url: String,
    ca_pem: Option<String>,
    ca_der: Option<Vec<u8>>,
    token: Option<String>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What [`Sandbox::observe`] gives: the objects of a kind as they were, and every change after.
#[derive(Debug)]
pub struct Observation {
    /// The objects when observation started.
    pub objects: Vec<Value>,
    /// Every later change, in resourceVersion order.
    pub changes: tokio::sync::broadcast::Receiver<Arc<store::Change>>,
}

/// A pod for [`Sandbox::create_pod`].
#[derive(Debug, Clone)]
pub struct NewPod {
    name: String,
    namespace: String,
    node: Option<String>,
    labels: Map<String, Value>,
    owner: Option<(String, String)>,
    mirror: bool,
    grace: Option<i64>,
    ready: bool,
    tolerate_all: bool,
}

impl NewPod {
    /// A Ready pod in `default`, on no node yet. An empty name is generated from the owner's
    /// name, as controllers do (`web-x7k2q`).
    pub fn new(name: &str) -> Self {
        NewPod {
            name: name.into(),
            namespace: "default".into(),
            node: None,
            labels: Map::new(),
            owner: None,
            mirror: false,
            grace: None,
            ready: true,
            tolerate_all: false,
        }
    }
    /// Its namespace (created when missing).
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = ns.into();
        self
    }
    /// The node it runs on (default: the scheduler picks one, or none and it stays Pending).
    pub fn on_node(mut self, node: &str) -> Self {
        self.node = Some(node.into());
        self
    }
    /// A label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), json!(v));
        self
    }
    /// Owned by this ReplicaSet (created when missing; its replicas count the pods).
    pub fn replica_set(mut self, name: &str) -> Self {
        self.owner = Some(("ReplicaSet".into(), name.into()));
        self
    }
    /// Owned by this DaemonSet (created when missing).
    pub fn daemon_set(mut self, name: &str) -> Self {
        self.owner = Some(("DaemonSet".into(), name.into()));
        self
    }
    /// A static pod's mirror (`kubernetes.io/config.mirror` annotation).
    pub fn mirror(mut self) -> Self {
        self.mirror = true;
        self
    }
    /// `terminationGracePeriodSeconds`.
    pub fn grace_period(mut self, seconds: i64) -> Self {
        self.grace = Some(seconds);
        self
    }
    /// Not Ready (it does not count as healthy for PDBs).
    pub fn not_ready(mut self) -> Self {
        self.ready = false;
        self
    }
    /// Tolerates every taint (`tolerations: [{operator: Exists}]`), as node agents do; its
    /// replacements inherit that. DaemonSet pods always do.
    pub fn tolerating_everything(mut self) -> Self {
        self.tolerate_all = true;
        self
    }
}

impl Sandbox {
    /// A builder with the defaults (HTTPS, any port, speed 1, system clock, workload
    /// controllers on).
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// The server URL (`https://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA certificate (PEM) clients must trust, with HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// A kube client configured for the sandbox (the real HTTP path). Call inside a tokio
    /// runtime.
    pub fn client(&self) -> Result<kube::Client, SandboxError> {
        kube::Client::try_from(self.client_config()?).map_err(SandboxError::Client)
    }

    /// The kube configuration [`Sandbox::client`] uses, to adjust before building a client.
    /// Note that kube's default retry policy retries 429 answers (such as a PDB-blocked
    /// eviction) up to 15 times with exponential backoff, as it would against a real cluster;
    /// set `default_retry = false` to see the 429 at once.
    pub fn client_config(&self) -> Result<kube::Config, SandboxError> {
        let uri: http::Uri =
            self.url
                .parse()
                .map_err(|e: http::uri::InvalidUri| SandboxError::Url {
                    url: self.url.clone(),
                    message: e.to_string(),
                })?;
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".into();
        if let Some(der) = &self.ca_der {
            config.root_cert = Some(vec![der.clone()]);
        }
        if let Some(t) = &self.token
            && let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {t}"))
        {
            config.headers.push((http::header::AUTHORIZATION, v));
        }
        Ok(config)
    }

    /// A kubeconfig for this sandbox (CA data embedded, token if any).
    pub fn kubeconfig(&self) -> String {
        use base64::Engine;
        let mut cluster = json!({"server": self.url});
        if let Some(pem) = &self.ca_pem {
            cluster["certificate-authority-data"] =
                json!(base64::engine::general_purpose::STANDARD.encode(pem));
        }
        // kubectl prompts for a username when a user has no credentials at all: without a
        // configured token the sandbox accepts any, so write a placeholder.
        let user = json!({"token": self.token.as_deref().unwrap_or("nmo-sandbox-anonymous")});
        let cfg = json!({"apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "nmo-sandbox", "cluster": cluster}],
            "users": [{"name": "nmo-sandbox", "user": user}],
            "contexts": [{"name": "nmo-sandbox", "context": {"cluster": "nmo-sandbox", "user": "nmo-sandbox", "namespace": "default"}}],
            "current-context": "nmo-sandbox"});
        serde_yaml::to_string(&cfg).unwrap_or_default()
    }

    /// Write [`Sandbox::kubeconfig`] to a file.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), SandboxError> {
        let path = path.as_ref();
        std::fs::write(path, self.kubeconfig()).map_err(|source| SandboxError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Install nmo's CRDs (they serve at once).
    pub fn install_crds(&self) -> Result<(), SandboxError> {
        for crd in crate::api::crds() {
            let v = serde_json::to_value(&crd)
                .map_err(|e| SandboxError::api("CRD", ApiError::internal(e.to_string())))?;
            self.seed(v)?;
        }
        Ok(())
    }

    /// Create or replace objects from multi-document YAML (or a `List`, such as the output of
    /// `kubectl get nodes,pods,pdb -A -o yaml`). uids and statuses in the documents are kept,
    /// so owner references of a snapshot still hold.
    pub fn apply_yaml(&self, yaml: &str) -> Result<Vec<Value>, SandboxError> {
        let docs = crate::manifest::parse_documents(Path::new("<yaml>"), yaml)?;
        docs.into_iter().map(|d| self.seed(d.value)).collect()
    }

    /// [`Sandbox::apply_yaml`] for files and directories.
    pub fn apply_files<P: AsRef<Path>>(&self, paths: &[P]) -> Result<Vec<Value>, SandboxError> {
        let docs = crate::manifest::load_paths(paths)?;
        docs.into_iter()
            .map(|d| {
                let loc = d.location();
                self.seed(d.value).map_err(|e| match e {
                    SandboxError::Api { what, source } => {
                        SandboxError::api(format!("{loc}: {what}"), source)
                    }
                    other => other,
                })
            })
            .collect()
    }

    /// Observe every change of a kind from now on, in process: `observe("v1", "Node")`.
    ///
    /// Unlike a watch, this view is not subject to fault rules, watch timeouts or the expiry
    /// of the watch history, so it never resumes and never relists: an observer that must see
    /// every state (a test checking a budget under faults) uses it. The snapshot and the start
    /// of the feed are taken under one lock, so no change falls between them. A receiver that
    /// falls more than 8192 changes behind gets `RecvError::Lagged` and has missed states.
    pub fn observe(&self, api_version: &str, kind: &str) -> Result<Observation, SandboxError> {
        let mut store = self.shared.lock();
        let rt = store.type_of_kind(api_version, kind).ok_or_else(|| {
            SandboxError::api(format!("observe {kind}"), ApiError::no_such_resource())
        })?;
        let key = rt.store_key();
        store.ensure_table(&key);
        let objects = store
            .list(&key, "", &Default::default(), &Default::default())
            .into_iter()
            .map(|o| (*o).clone())
            .collect();
        let (_, changes) = store
            .subscribe(&key, None)
            .map_err(|e| SandboxError::api(format!("observe {kind}"), e))?;
        Ok(Observation { objects, changes })
    }

    /// Create or replace one object, bypassing admission but not CR validation.
    pub fn seed(&self, obj: Value) -> Result<Value, SandboxError> {
        let mut store = self.shared.lock();
        store.seed(obj).map(|v| (*v).clone())
    }

    /// Read an object: `get("v1", "Pod", "default", "web-1")` (namespace "" for cluster scope).
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let store = self.shared.lock();
        let rt = store.type_of_kind(api_version, kind)?;
        let ns = if rt.namespaced { namespace } else { "" };
        store.get(&rt.store_key(), ns, name).map(|v| (*v).clone())
    }

    /// All objects of a kind (all namespaces).
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let store = self.shared.lock();
        let Some(rt) = store.type_of_kind(api_version, kind) else {
            return vec![];
        };
        store
            .list(
                &rt.store_key(),
                "",
                &Default::default(),
                &Default::default(),
            )
            .into_iter()
            .map(|v| (*v).clone())
            .collect()
    }

    /// Add a Ready node with labels.
    pub fn add_node(&self, name: &str, labels: &[(&str, &str)]) -> Result<Value, SandboxError> {
        let l: Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let mut store = self.shared.lock();
        store
            .add_node(name, &l)
            .map(|v| (*v).clone())
            .map_err(|e| SandboxError::api(format!("add node {name}"), e))
    }

    /// Remove a node; its pods go with it.
    pub fn remove_node(&self, name: &str) -> Result<(), SandboxError> {
        self.shared
            .lock()
            .remove_node(name)
            .map_err(|e| SandboxError::api(format!("remove node {name}"), e))
    }

    /// Make a node Ready or NotReady (kubelet stopped: condition Unknown, unreachable taint).
    pub fn set_node_ready(&self, name: &str, ready: bool) -> Result<(), SandboxError> {
        self.shared
            .lock()
            .modify_node(name, |n, now| kubelet::set_ready(n, ready, now))
            .map(|_| ())
            .map_err(|e| SandboxError::api(format!("set node {name} ready={ready}"), e))
    }

    /// Reboot a node: a new `status.nodeInfo.bootID`, Ready again.
    pub fn reboot_node(&self, name: &str) -> Result<(), SandboxError> {
        self.shared
            .lock()
            .modify_node(name, crate::kubelet::model::reboot)
            .map(|_| ())
            .map_err(|e| SandboxError::api(format!("reboot node {name}"), e))
    }

    /// Create a pod (and its namespace and owning ReplicaSet/DaemonSet when missing).
    pub fn create_pod(&self, pod: NewPod) -> Result<Value, SandboxError> {
        let mut store = self.shared.lock();
        store
            .create_pod(&pod)
            .map(|v| (*v).clone())
            .map_err(|e| SandboxError::api(format!("create pod {}", pod.name), e))
    }

    /// The fault injection rules: add one to make matching requests fail, slow down, or end
    /// their watches early (see [`faults`]).
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// End every open watch now (clients resume from their last resourceVersion).
    pub fn close_watches(&self) {
        self.shared.faults.close_watches();
    }

    /// Forget the watch history: watches resuming from older resourceVersions get 410.
    pub fn expire_watch_history(&self) {
        self.shared.lock().expire_history();
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().current_rv()
    }

    /// Requests served for a verb (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `deletecollection`) and resource (`pods`, `nodes/status`, `pods/eviction`).
    pub fn request_count(&self, verb: &str, resource: &str) -> u64 {
        let c = self.shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Every request count, by (verb, resource).
    pub fn request_counts(&self) -> BTreeMap<(String, String), u64> {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Start recording every request with the instant it arrives (forgetting any earlier
    /// recording), for [`Sandbox::recorded_requests`]. Off by default: the log grows with every
    /// request.
    pub fn record_requests(&self) {
        *self.shared.log.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
    }

    /// The requests recorded since [`Sandbox::record_requests`], in arrival order.
    pub fn recorded_requests(&self) -> Vec<server::RecordedRequest> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }

    /// The requests of one client, by (verb, resource): those whose User-Agent up to its
    /// first `/` is `agent` (`nmo` for `nmo/0.1.0`; empty for a client that sends none, as
    /// kube-rs does by default).
    pub fn request_counts_of(&self, agent: &str) -> BTreeMap<(String, String), u64> {
        let c = self
            .shared
            .agent_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        c.iter()
            .filter(|((a, _, _), _)| a == agent)
            .map(|((_, verb, resource), n)| ((verb.clone(), resource.clone()), *n))
            .collect()
    }

    /// Reset the request counts.
    pub fn reset_request_counts(&self) {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.shared
            .agent_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Stop serving (open watches end).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Store {
    /// Create or replace an object from a manifest, keeping its uid, creationTimestamp and
    /// status when given.
    pub fn seed(&mut self, mut obj: Value) -> Result<Arc<Value>, SandboxError> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = store::name_of(&obj).to_string();
        let what = format!("{kind} {name:?}");
        let mut rt = self.type_of_kind(&api_version, &kind).ok_or_else(|| {
            SandboxError::api(
                &what,
                ApiError::bad_request(format!(
                    "no kind {kind:?} is registered for version {api_version:?}"
                )),
            )
        })?;
        let mut api_version = api_version;
        if rt.stored_as.is_some() {
            // events.k8s.io Events are stored as core Events.
            obj = events::to_core(&obj);
            api_version = "v1".into();
            rt = self.type_of("", "events").expect("built in");
        }
        let ns = if rt.namespaced {
            let ns = store::namespace_of(&obj);
            if ns.is_empty() {
                "default".to_string()
            } else {
                ns.to_string()
            }
        } else {
            String::new()
        };
        if rt.namespaced {
            self.ensure_namespace(&ns);
        }
        let keep_uid = store::uid_of(&obj).map(str::to_string);
        let had_identity = keep_uid.is_some();
        let keep_created = obj
            .pointer("/metadata/creationTimestamp")
            .cloned()
            .filter(|v| !v.is_null());
        let version = api_version
            .split('/')
            .next_back()
            .unwrap_or("v1")
            .to_string();
        if rt.custom
            && let Some(schema) = rt.version(&version).and_then(|v| v.schema.as_ref())
        {
            let causes = schema::validate_object(schema, &mut obj, None);
            if !causes.is_empty() {
                return Err(SandboxError::api(
                    &what,
                    ApiError::invalid(&rt, &name, causes),
                ));
            }
        }
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        self.prepare_create(&rt, &ns, &mut obj)
            .map_err(|e| SandboxError::api(&what, e))?;
        if let Some(uid) = keep_uid {
            store::set_meta(&mut obj, "uid", json!(uid));
        }
        if let Some(t) = keep_created {
            store::set_meta(&mut obj, "creationTimestamp", t);
        }
        obj["apiVersion"] = json!(api_version);
        if !rt.custom && obj.get("status").is_none() {
            match rt.plural.as_str() {
                "nodes" => obj["status"] = store::node_status(&self.now()),
                "pods" if obj.pointer("/spec/nodeName").is_some() => {
                    obj["status"] = store::running_status(&self.now())
                }
                _ => {}
            }
        }
        let key = self.key_of(&rt, &ns, &obj);
        if let Some(old) = self.get(&key.gr, &key.ns, &key.name) {
            // A replaced object keeps its identity unless the manifest names one.
            for f in ["uid", "creationTimestamp"] {
                if !had_identity && let Some(v) = old.pointer(&format!("/metadata/{f}")) {
                    store::set_meta(&mut obj, f, v.clone());
                }
            }
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let bump = if old.get("spec") != obj.get("spec") {
                1
            } else {
                0
            };
            if rt.has_generation() {
                store::set_meta(&mut obj, "generation", json!(g + bump));
            }
        }
        let out = self.commit(&key, Some(obj)).expect("a write commits");
        self.react();
        Ok(out)
    }

    fn ensure_namespace(&mut self, ns: &str) {
        if self.get(&gr("", "namespaces"), "", ns).is_none() {
            let rt = self.type_of("", "namespaces").expect("built in");
            let _ = self.create_raw(
                &rt,
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
            );
        }
    }

    fn create_pod(&mut self, p: &NewPod) -> Result<Arc<Value>, ApiError> {
        self.ensure_namespace(&p.namespace);
        let mut meta = json!({"name": p.name, "namespace": p.namespace, "labels": p.labels});
        if p.mirror {
            meta["annotations"] = json!({"kubernetes.io/config.mirror": "mirror", "kubernetes.io/config.source": "file"});
            if let Some(node) = &p.node {
                meta["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node", "name": node,
                    "uid": self.get(&gr("", "nodes"), "", node).and_then(|n| store::uid_of(&n).map(str::to_string)).unwrap_or_default(),
                    "controller": true}]);
            }
        }
        if let Some((kind, owner)) = &p.owner {
            let plural = if kind == "ReplicaSet" {
                "replicasets"
            } else {
                "daemonsets"
            };
            let rt = self.type_of("apps", plural).expect("built in");
            let key = store::ObjKey {
                gr: gr("apps", plural),
                ns: p.namespace.clone(),
                name: owner.clone(),
            };
            // A new ReplicaSet starts at 0 replicas and is counted up with its pods, so its
            // controller (workloads.rs) makes none of its own.
            let existing = match self.get(&key.gr, &key.ns, owner) {
                Some(o) => Some(o),
                None => {
                    let mut spec = json!({"selector": {"matchLabels": p.labels}, "template": {"metadata": {"labels": p.labels}, "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}}});
                    if kind == "ReplicaSet" {
                        spec["replicas"] = json!(0);
                    }
                    self.create_raw(&rt, &p.namespace, json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": owner, "labels": p.labels}, "spec": spec}))?;
                    self.get(&key.gr, &key.ns, owner)
                }
            };
            let owner_obj = match existing {
                Some(o) => {
                    if kind == "ReplicaSet" {
                        let mut o2 = (*o).clone();
                        let r = o
                            .pointer("/spec/replicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(0);
                        o2["spec"]["replicas"] = json!(r + 1);
                        self.commit(&key, Some(o2)).expect("a write commits")
                    } else {
                        o
                    }
                }
                None => return Err(ApiError::not_found(&rt, owner)),
            };
            meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": owner,
                "uid": store::uid_of(&owner_obj).unwrap_or_default(), "controller": true, "blockOwnerDeletion": true}]);
            meta["generateName"] = json!(format!("{owner}-"));
        }
        if p.name.is_empty() {
            if let Some(m) = meta.as_object_mut() {
                m.remove("name");
            }
            if meta.get("generateName").is_none() {
                meta["generateName"] = json!("pod-");
            }
        }
        let mut spec =
            json!({"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]});
        if let Some(g) = p.grace {
            spec["terminationGracePeriodSeconds"] = json!(g);
        }
        if p.tolerate_all || matches!(&p.owner, Some((k, _)) if k == "DaemonSet") {
            spec["tolerations"] = json!([{"operator": "Exists"}]);
        }
        // A pod given no node is scheduled as the scheduler would (with the workload
        // controllers on), and stays Pending when no node takes it.
        let node = p.node.clone().or_else(|| {
            self.workload_controllers
                .then(|| self.pick_node(&json!({ "spec": spec }), None))
                .flatten()
        });
        if let Some(n) = &node {
            spec["nodeName"] = json!(n);
        }
        let now = self.now();
        let status = if node.is_some() {
            let mut s = store::running_status(&now);
            if !p.ready {
                for c in s["conditions"].as_array_mut().into_iter().flatten() {
                    if matches!(c["type"].as_str(), Some("Ready" | "ContainersReady")) {
                        c["status"] = json!("False");
                    }
                }
            }
            s
        } else {
            json!({"phase": "Pending"})
        };
        let rt = self.type_of("", "pods").expect("built in");
        self.create_raw(&rt, &p.namespace, json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}))
    }
}
