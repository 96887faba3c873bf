//! The object store: every object of every resource, a single resourceVersion counter, a
//! bounded watch history per resource, uid and owner indexes for garbage collection. All
//! writes go through [`Store::commit`]; the reactions a write sets off (garbage collection,
//! PDB status, pod termination, workload controllers) live in `kubelet.rs`.
//!
//! Each object is kept once, as its serialised JSON ([`Object`]), with the few fields that
//! selectors read; the store, the watch history and watch events share those bytes, and LIST
//! splices them into the list body. Objects are parsed back to a `Value` only where a write or
//! an internal controller needs the whole object (and kept parsed for the few kinds those
//! controllers read in full all the time: nodes, PDBs, namespaces, webhook configurations).

use super::error::{ApiError, Cause};
use super::patch::{self, ListKind, Scope, WriteContext};
use super::resources::{self, ResourceType};
use super::selectors::{FieldSelector, LabelSelector};
use crate::clock::Clock;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};

/// (group, plural): the key of a resource's table.
pub type GroupResource = (String, String);

/// Where one object lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    /// Its resource.
    pub gr: GroupResource,
    /// Namespace ("" when cluster-scoped).
    pub ns: String,
    /// Name.
    pub name: String,
}

impl ObjKey {
    /// The key of `name` of resource `rt`; the namespace is dropped for cluster-scoped ones.
    pub fn of(rt: &ResourceType, ns: &str, name: &str) -> ObjKey {
        ObjKey {
            gr: rt.store_key(),
            ns: if rt.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }
}

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Removed.
    Deleted,
}

impl ChangeType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One stored object: its JSON without `apiVersion` and `kind` (which a typed list's items
/// leave out), those two apart, and the fields selectors read. Immutable: a write stores a
/// new one.
#[derive(Debug)]
pub struct Object {
    api_version: Option<Arc<str>>,
    kind: Option<Arc<str>>,
    /// The JSON object without apiVersion and kind (`{"metadata":…}`).
    body: bytes::Bytes,
    /// `metadata.labels`, sorted by key.
    labels: Box<[(Arc<str>, Arc<str>)]>,
    /// The values of the kind's [`indexed_fields`], in that order.
    fields: Box<[Arc<str>]>,
    indexed: &'static [&'static str],
    /// Its controller's owner reference, shared by the objects of one controller.
    controller: Option<Arc<Controller>>,
    /// Has a `deletionTimestamp`.
    terminating: bool,
    /// Ready and not terminating ([`super::pdb::pod_healthy`]).
    healthy: bool,
    /// The parsed object, for the kinds kept parsed.
    parsed: Option<Arc<Value>>,
}

/// An object's controller (the owner reference with `controller: true`).
#[derive(Debug, PartialEq, Eq)]
pub struct Controller {
    /// `kind`.
    pub kind: Box<str>,
    /// `name`.
    pub name: Box<str>,
    /// `uid`.
    pub uid: Box<str>,
}

impl Controller {
    fn of(v: &Value) -> Option<Controller> {
        let r = v
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)?
            .iter()
            .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))?;
        let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default().into();
        Some(Controller {
            kind: text("kind"),
            name: text("name"),
            uid: text("uid"),
        })
    }
}

/// The field-selector fields kept beside an object's bytes; other fields are read from the
/// parsed object.
fn indexed_fields(gr: &GroupResource) -> &'static [&'static str] {
    match (gr.0.as_str(), gr.1.as_str()) {
        ("", "pods") => &["spec.nodeName", "status.phase"],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "namespaces") => &["status.phase"],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
        ],
        ("apps", "replicasets") => &["status.replicas"],
        _ => &[],
    }
}

/// The kinds the sandbox's own controllers read in full on hot paths (the scheduler reads
/// every node, each eviction the namespace's PDBs, each write the webhook configurations):
/// they are kept parsed beside their bytes. They are few next to pods and events.
fn keep_parsed(gr: &GroupResource) -> bool {
    matches!(
        (gr.0.as_str(), gr.1.as_str()),
        ("", "nodes")
            | ("", "namespaces")
            | ("policy", "poddisruptionbudgets")
            | ("admissionregistration.k8s.io", _)
            | ("apiextensions.k8s.io", "customresourcedefinitions")
    )
}

/// Strings every object of a table repeats (apiVersion, kind), and the controller references
/// its objects share (all pods of a ReplicaSet), shared.
#[derive(Debug, Default)]
struct Interned {
    names: Vec<Arc<str>>,
    /// By uid; dead entries are swept when the map has doubled since the last sweep.
    controllers: HashMap<Box<str>, std::sync::Weak<Controller>>,
    sweep_at: usize,
    /// Label keys and values and indexed field values (`app: web` on every pod of a
    /// ReplicaSet, the node names, `Running`); the ones no object holds any more are swept
    /// when the set has doubled since the last sweep.
    strings: std::collections::HashSet<Arc<str>>,
    strings_sweep_at: usize,
}

impl Interned {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.names.iter().find(|a| &***a == s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        // A handful per table; a table fed odd apiVersions does not grow without bound.
        if self.names.len() < 16 {
            self.names.push(a.clone());
        }
        a
    }

    fn string(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        if self.strings.len() >= self.strings_sweep_at {
            self.strings.retain(|a| Arc::strong_count(a) > 1);
            self.strings_sweep_at = (self.strings.len() * 2).max(256);
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }

    fn controller(&mut self, c: Controller) -> Arc<Controller> {
        if let Some(known) = self.controllers.get(&c.uid).and_then(|w| w.upgrade())
            && *known == c
        {
            return known;
        }
        let c = Arc::new(c);
        if self.controllers.len() >= self.sweep_at {
            self.controllers.retain(|_, w| w.strong_count() > 0);
            self.sweep_at = (self.controllers.len() * 2).max(64);
        }
        self.controllers.insert(c.uid.clone(), Arc::downgrade(&c));
        c
    }
}

impl Object {
    fn new(
        gr: &GroupResource,
        v: &Value,
        parsed: Option<Arc<Value>>,
        names: &mut Interned,
    ) -> Self {
        let map = v.as_object();
        let text = |k: &str| map.and_then(|m| m.get(k)).and_then(Value::as_str);
        let api_version = text("apiVersion").map(|s| names.get(s));
        let kind = text("kind").map(|s| names.get(s));
        let mut body = Vec::with_capacity(1024);
        match map {
            Some(m) => {
                use serde::Serializer;
                let entries = m.iter().filter(|(k, _)| {
                    !(k.as_str() == "apiVersion" && api_version.is_some()
                        || k.as_str() == "kind" && kind.is_some())
                });
                serde_json::Serializer::new(&mut body)
                    .collect_map(entries)
                    .expect("a JSON value serialises");
            }
            None => serde_json::to_writer(&mut body, v).expect("a JSON value serialises"),
        }
        let mut labels: Vec<(Arc<str>, Arc<str>)> = v
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((names.string(k), names.string(v.as_str()?))))
            .collect();
        labels.sort();
        let indexed = indexed_fields(gr);
        let fields = indexed
            .iter()
            .map(|f| names.string(&super::selectors::field_value(v, f)))
            .collect();
        Object {
            api_version,
            kind,
            // Boxed first: the buffer shrinks to the JSON, and `Bytes` needs no header of its
            // own (from a `Vec` with spare room it keeps the room and adds one).
            body: bytes::Bytes::from(body.into_boxed_slice()),
            labels: labels.into_boxed_slice(),
            fields,
            indexed,
            controller: Controller::of(v).map(|c| names.controller(c)),
            terminating: v.pointer("/metadata/deletionTimestamp").is_some(),
            healthy: super::pdb::pod_healthy(v),
            parsed: parsed.filter(|_| keep_parsed(gr)),
        }
    }

    /// Its controller's owner reference.
    pub fn controller(&self) -> Option<&Controller> {
        self.controller.as_deref()
    }

    /// Has a `deletionTimestamp`.
    pub fn terminating(&self) -> bool {
        self.terminating
    }

    /// Ready (its `Ready` condition True) and not terminating: a healthy pod for a PDB.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// The value of one of the kind's indexed fields (`status.phase` of a pod).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.indexed
            .iter()
            .position(|i| *i == name)
            .map(|i| &*self.fields[i])
    }

    /// The object as a JSON value (parsed from the bytes, unless kept parsed).
    pub fn value(&self) -> Arc<Value> {
        if let Some(v) = &self.parsed {
            return v.clone();
        }
        let mut v: Value = serde_json::from_slice(&self.body).expect("the store holds valid JSON");
        if let Some(m) = v.as_object_mut() {
            if let Some(a) = &self.api_version {
                m.insert("apiVersion".into(), Value::String(a.to_string()));
            }
            if let Some(k) = &self.kind {
                m.insert("kind".into(), Value::String(k.to_string()));
            }
        }
        Arc::new(v)
    }

    /// `apiVersion`, when a string.
    pub fn api_version(&self) -> Option<&str> {
        self.api_version.as_deref()
    }

    /// The JSON without `apiVersion` and `kind`: an item of a built-in (typed) list.
    pub fn body(&self) -> &bytes::Bytes {
        &self.body
    }

    /// Append the whole object's JSON to `buf`, with `api_version` in place of the stored one
    /// when given.
    pub fn write_json(&self, buf: &mut Vec<u8>, api_version: Option<&str>) {
        let av = api_version.or(self.api_version.as_deref());
        let mut head = Vec::new();
        if let Some(av) = av {
            head.push(("apiVersion", av));
        }
        if let Some(k) = self.kind.as_deref() {
            head.push(("kind", k));
        }
        if head.is_empty() || !self.body.starts_with(b"{") {
            buf.extend_from_slice(&self.body);
            return;
        }
        buf.push(b'{');
        for (i, (k, v)) in head.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            buf.push(b'"');
            buf.extend_from_slice(k.as_bytes());
            buf.extend_from_slice(b"\":");
            serde_json::to_writer(&mut *buf, v).expect("a string serialises");
        }
        let rest = &self.body[1..];
        if rest != b"}" {
            buf.push(b',');
        }
        buf.extend_from_slice(rest);
    }

    /// The value of a label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.labels[i].1)
    }

    /// Does it match the selectors? `ns` and `name` are its key.
    pub fn matches(
        &self,
        ns: &str,
        name: &str,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> bool {
        if !labels.matches_with(|k| self.label(k)) {
            return false;
        }
        if fields.is_empty() {
            return true;
        }
        let known = fields.matches_with(|f| match f {
            "metadata.name" => Some(name),
            "metadata.namespace" => Some(ns),
            _ => self
                .indexed
                .iter()
                .position(|i| *i == f)
                .map(|i| &*self.fields[i]),
        });
        known.unwrap_or_else(|| fields.matches(&self.value()))
    }
}

/// One committed change.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resource it belongs to.
    pub gr: GroupResource,
    /// Its resourceVersion.
    pub rv: u64,
    /// What happened.
    pub kind: ChangeType,
    /// The object after (for DELETED: its last state, with the deletion's resourceVersion).
    pub object: Arc<Value>,
    /// The object before, for MODIFIED and DELETED.
    pub old: Option<Arc<Value>>,
    /// The serialised watch line, made once by the first watcher that needs it.
    pub line: std::sync::OnceLock<bytes::Bytes>,
    /// The object as stored (its bytes shared with the store and the history).
    pub stored: Arc<Object>,
}

/// A change as the history keeps it: the stored objects' bytes, parsed again only for a watch
/// that resumes from before it.
#[derive(Debug)]
struct Recorded {
    rv: u64,
    kind: ChangeType,
    object: Arc<Object>,
    old: Option<Arc<Object>>,
}

impl Recorded {
    fn change(&self, gr: &GroupResource) -> Change {
        Change {
            gr: gr.clone(),
            rv: self.rv,
            kind: self.kind,
            object: self.object.value(),
            old: self.old.as_ref().map(|o| o.value()),
            line: std::sync::OnceLock::new(),
            stored: self.object.clone(),
        }
    }
}

/// One resource's objects and history. An empty table costs a few words: its watch channel
/// is made by the first subscriber.
pub struct Table {
    /// Objects by (namespace, name).
    pub objects: BTreeMap<(String, String), Arc<Object>>,
    history: VecDeque<Recorded>,
    /// Watches from a resourceVersion below this are answered 410 Expired.
    compacted_rv: u64,
    tx: std::sync::OnceLock<broadcast::Sender<Arc<Change>>>,
    names: Interned,
}

impl Table {
    fn new() -> Self {
        Table {
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted_rv: 0,
            tx: std::sync::OnceLock::new(),
            names: Interned::default(),
        }
    }

    /// Objects of one namespace ("" for all).
    pub fn in_namespace<'a>(&'a self, ns: &'a str) -> Entries<'a> {
        if ns.is_empty() {
            Box::new(self.objects.iter())
        } else {
            Box::new(
                self.objects
                    .range((ns.to_string(), String::new())..)
                    .take_while(move |((n, _), _)| n == ns),
            )
        }
    }
}

/// Objects of a table, by (namespace, name).
pub type Entries<'a> = Box<dyn Iterator<Item = (&'a (String, String), &'a Arc<Object>)> + 'a>;

/// Tells list kinds for a type's objects.
pub type Oracle = Box<dyn Fn(&[&str]) -> ListKind>;

/// What a watch starts from: the history after its resourceVersion, and the live feed.
pub type Subscription = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

/// How many events a slow watcher may fall behind before its watch is closed.
const WATCH_BUFFER: usize = 8192;

/// A delayed action, run by the sandbox's timer task.
#[derive(Debug, Clone)]
pub enum Timer {
    /// The kubelet finishes terminating a pod (its grace period is over).
    FinishPodTermination {
        /// Namespace.
        ns: String,
        /// Name.
        name: String,
        /// Which incarnation.
        uid: String,
        /// Real time to wait.
        after: std::time::Duration,
    },
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// `dryRun=All`: everything but the commit.
    pub dry_run: bool,
    /// Field manager for managedFields.
    pub manager: String,
    /// Version the client used (its objects come back with this apiVersion).
    pub version: String,
    /// `fieldValidation=Strict`: unknown fields of custom resources are an error, not pruned.
    pub strict: bool,
}

impl WriteOpts {
    /// These options for a pass of an admitted write (a preview is always a dry run).
    pub fn for_pass(&self, pass: super::webhook::Pass<'_>) -> WriteOpts {
        WriteOpts {
            dry_run: pass.dry_run(self.dry_run),
            ..self.clone()
        }
    }
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    /// `Orphan`, `Background` or `Foreground`.
    pub propagation: Option<String>,
    /// Precondition on the uid.
    pub uid: Option<String>,
    /// Precondition on the resourceVersion.
    pub resource_version: Option<String>,
    /// Grace period (pods).
    pub grace_period: Option<i64>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// The whole cluster state.
pub struct Store {
    types: Vec<Arc<ResourceType>>,
    /// Tables by (group, plural).
    pub tables: HashMap<GroupResource, Table>,
    rv: u64,
    uids: HashMap<String, ObjKey>,
    owners: HashMap<String, BTreeSet<ObjKey>>,
    /// Non-terminated pods per node, for the sandbox scheduler.
    pub pods_per_node: HashMap<String, usize>,
    /// Every pod bound to a node, by node: (namespace, name).
    pub pods_by_node: HashMap<String, BTreeSet<(String, String)>>,
    /// Pods waiting for a node: (namespace, name).
    pub pending_pods: BTreeSet<(String, String)>,
    /// Pod counts by owner uid, so a workload controller's reaction to one pod costs the same
    /// whatever its owner's size.
    owned_pods: HashMap<String, OwnedPods>,
    history_limit: usize,
    /// Source of timestamps.
    pub clock: Arc<dyn Clock>,
    /// Grace periods are divided by this.
    pub speed: f64,
    /// ReplicaSet/DaemonSet pod re-creation and scheduling.
    pub workload_controllers: bool,
    timers: mpsc::UnboundedSender<Timer>,
    queue: VecDeque<Arc<Change>>,
}

/// The pods of one owner, counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OwnedPods {
    /// Pods naming it as an owner, not terminating.
    pub live: usize,
    /// Of those, the Ready ones.
    pub ready: usize,
    /// Pods it is the controller of, not terminating and neither Succeeded nor Failed.
    pub active: usize,
}

impl OwnedPods {
    /// What one pod adds to each of its owners' counts.
    fn of_pod(v: &Value) -> Vec<(String, OwnedPods)> {
        let terminating = v.pointer("/metadata/deletionTimestamp").is_some();
        let healthy = super::pdb::pod_healthy(v);
        let done = matches!(
            v.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
        let controller = Controller::of(v).map(|c| c.uid);
        let mut uids = owner_uids(v);
        uids.sort();
        uids.dedup();
        uids.into_iter()
            .map(|uid| {
                let counts = OwnedPods {
                    live: usize::from(!terminating),
                    ready: usize::from(healthy),
                    active: usize::from(
                        !terminating && !done && controller.as_deref() == Some(uid.as_str()),
                    ),
                };
                (uid, counts)
            })
            .collect()
    }
}

/// Group and plural of pods, nodes and friends.
pub fn gr(group: &str, plural: &str) -> GroupResource {
    (group.to_string(), plural.to_string())
}

impl Store {
    /// An empty cluster with the default namespaces.
    pub fn new(
        clock: Arc<dyn Clock>,
        speed: f64,
        workload_controllers: bool,
        history_limit: usize,
        timers: mpsc::UnboundedSender<Timer>,
    ) -> Self {
        let mut s = Store {
            types: resources::builtins().into_iter().map(Arc::new).collect(),
            tables: HashMap::new(),
            rv: 1,
            uids: HashMap::new(),
            owners: HashMap::new(),
            pods_per_node: HashMap::new(),
            pods_by_node: HashMap::new(),
            pending_pods: BTreeSet::new(),
            owned_pods: HashMap::new(),
            history_limit,
            clock,
            speed,
            workload_controllers,
            timers,
            queue: VecDeque::new(),
        };
        // Tables are made on first write or watch (`ensure_table`): the ~60 built-in kinds
        // nobody uses cost nothing.
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
            let rt = s
                .type_of("", "namespaces")
                .expect("namespaces are built in");
            let _ = s.create_raw(&rt, "", obj);
        }
        s
    }

    /// The current resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// Every served type.
    pub fn types(&self) -> &[Arc<ResourceType>] {
        &self.types
    }

    /// The type serving (group, plural).
    pub fn type_of(&self, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == group && t.plural == plural)
            .cloned()
    }

    /// The type of a kind in an apiVersion (for seeding and owner references).
    pub fn type_of_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.types
            .iter()
            .find(|t| t.group == group && t.kind == kind && t.version(version).is_some())
            .cloned()
    }

    /// Register (or replace) a type.
    pub fn register_type(&mut self, rt: ResourceType) {
        let key = rt.store_key();
        self.types
            .retain(|t| !(t.group == rt.group && t.plural == rt.plural));
        self.types.push(Arc::new(rt));
        self.tables.entry(key).or_insert_with(Table::new);
    }

    /// Stop serving a type (its CRD is gone) and drop its objects.
    pub fn unregister_type(&mut self, group: &str, plural: &str) {
        self.types
            .retain(|t| !(t.group == group && t.plural == plural));
        if let Some(t) = self.tables.remove(&gr(group, plural)) {
            for obj in t.objects.values() {
                if let Some(uid) = uid_of(&obj.value()) {
                    self.uids.remove(uid);
                }
            }
        }
    }

    /// The list kinds for a type's objects.
    pub fn list_oracle(rt: &ResourceType, version: &str) -> Oracle {
        match rt.version(version).and_then(|v| v.schema.clone()) {
            Some(schema) if rt.custom => Box::new(move |p| patch::schema_list_kind(&schema, p)),
            _ => Box::new(patch::builtin_list_kind),
        }
    }

    /// Read one object.
    pub fn get(&self, key: &GroupResource, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.get_object(key, ns, name).map(|o| o.value())
    }

    /// Read one object as stored.
    pub fn get_object(&self, key: &GroupResource, ns: &str, name: &str) -> Option<Arc<Object>> {
        self.tables
            .get(key)?
            .objects
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// The objects of a resource in a namespace ("" for all) matching selectors.
    pub fn list(
        &self,
        key: &GroupResource,
        ns: &str,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Arc<Value>> {
        self.list_objects(key, ns, labels, fields, None)
            .into_iter()
            .map(|o| o.value())
            .collect()
    }

    /// The stored objects of a resource in a namespace ("" for all) matching selectors, in
    /// (namespace, name) order, after the key `after` when given (a LIST's continue token).
    pub fn list_objects(
        &self,
        key: &GroupResource,
        ns: &str,
        labels: &LabelSelector,
        fields: &FieldSelector,
        after: Option<&(String, String)>,
    ) -> Vec<Arc<Object>> {
        let Some(t) = self.tables.get(key) else {
            return vec![];
        };
        let later = |k: &(String, String)| after.is_none_or(|a| k > a);
        if let Some(name) = fields.exact_name()
            && !ns.is_empty()
        {
            let k = (ns.to_string(), name.to_string());
            return t
                .objects
                .get(&k)
                .filter(|o| later(&k) && o.matches(ns, name, labels, fields))
                .cloned()
                .into_iter()
                .collect();
        }
        // The drain's question (pods on a node) is answered from the node index.
        if key.0.is_empty()
            && key.1 == "pods"
            && let Some(node) = fields.exact("spec.nodeName").filter(|n| !n.is_empty())
        {
            return self
                .pods_by_node
                .get(node)
                .into_iter()
                .flatten()
                .filter(|(n, _)| ns.is_empty() || n == ns)
                .filter(|k| later(k))
                .filter_map(|k| Some((k, t.objects.get(k)?)))
                .filter(|((n, name), o)| o.matches(n, name, labels, fields))
                .map(|(_, o)| o.clone())
                .collect();
        }
        let entries: Entries<'_> = match after {
            Some(a) if ns.is_empty() || a.0 == ns => Box::new(
                t.objects
                    .range::<(String, String), _>((
                        std::ops::Bound::Excluded(a),
                        std::ops::Bound::Unbounded,
                    ))
                    .take_while(move |((n, _), _)| ns.is_empty() || n == ns),
            ),
            Some(a) if a.0.as_str() > ns => Box::new(std::iter::empty()),
            _ => t.in_namespace(ns),
        };
        entries
            .filter(|((n, name), o)| o.matches(n, name, labels, fields))
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Subscribe to a resource's changes after `rv` (`None`: from now). Returns the changes
    /// already in the history and a receiver for the following ones.
    pub fn subscribe(
        &self,
        key: &GroupResource,
        rv: Option<u64>,
    ) -> Result<Subscription, ApiError> {
        let t = self
            .tables
            .get(key)
            .ok_or_else(ApiError::no_such_resource)?;
        let backlog = match rv {
            None => vec![],
            Some(rv) => {
                if rv < t.compacted_rv {
                    return Err(ApiError::expired(rv, t.compacted_rv));
                }
                let first = t.history.partition_point(|c| c.rv <= rv);
                t.history
                    .range(first..)
                    .map(|c| Arc::new(c.change(key)))
                    .collect()
            }
        };
        let tx = t.tx.get_or_init(|| broadcast::channel(WATCH_BUFFER).0);
        Ok((backlog, tx.subscribe()))
    }

    /// Forget all watch history: every watch resuming from an older resourceVersion gets 410.
    pub fn expire_history(&mut self) {
        let rv = self.rv;
        for t in self.tables.values_mut() {
            t.history.clear();
            t.compacted_rv = rv;
        }
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Now, RFC 3339 with seconds (Kubernetes `Time`).
    pub fn now(&self) -> String {
        self.clock
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    /// Now, RFC 3339 with microseconds (Kubernetes `MicroTime`).
    pub fn now_micro(&self) -> String {
        self.clock
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    /// A random-looking 5-character suffix for generateName.
    pub fn name_suffix(&self) -> String {
        let u = uuid::Uuid::new_v4();
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        u.as_bytes()
            .iter()
            .take(5)
            .copied()
            .map(|b| ALPHABET[b as usize % ALPHABET.len()] as char)
            .collect()
    }

    /// Queue a timer.
    pub fn schedule(&self, t: Timer) {
        let _ = self.timers.send(t);
    }

    /// Write (or remove, with `None`) one object, assign its resourceVersion, index it, record
    /// and broadcast the change, and queue it for reactions.
    pub fn commit(&mut self, key: &ObjKey, new: Option<Value>) -> Option<Arc<Value>> {
        let tk = (key.ns.clone(), key.name.clone());
        let rv = self.next_rv();
        let table = self.tables.entry(key.gr.clone()).or_insert_with(Table::new);
        let old_stored = table.objects.get(&tk).cloned();
        let old = old_stored.as_ref().map(|o| o.value());
        let (kind, object, stored) = match new {
            Some(mut v) => {
                set_meta(&mut v, "resourceVersion", json!(rv.to_string()));
                let v = Arc::new(v);
                let stored = Arc::new(Object::new(&key.gr, &v, Some(v.clone()), &mut table.names));
                table.objects.insert(tk, stored.clone());
                (
                    if old.is_some() {
                        ChangeType::Modified
                    } else {
                        ChangeType::Added
                    },
                    v,
                    stored,
                )
            }
            None => {
                table.objects.remove(&tk);
                let mut last = (*old.clone()?).clone();
                set_meta(&mut last, "resourceVersion", json!(rv.to_string()));
                let stored = Arc::new(Object::new(&key.gr, &last, None, &mut table.names));
                (ChangeType::Deleted, Arc::new(last), stored)
            }
        };
        let change = Arc::new(Change {
            gr: key.gr.clone(),
            rv,
            kind,
            object: object.clone(),
            old: old.clone(),
            line: std::sync::OnceLock::new(),
            stored: stored.clone(),
        });
        table.history.push_back(Recorded {
            rv,
            kind,
            object: stored,
            old: old_stored,
        });
        while table.history.len() > self.history_limit {
            if let Some(c) = table.history.pop_front() {
                table.compacted_rv = c.rv;
            }
        }
        if let Some(tx) = table.tx.get() {
            let _ = tx.send(change.clone());
        }
        self.index(
            key,
            old.as_deref(),
            (kind != ChangeType::Deleted).then_some(&*object),
        );
        self.queue.push_back(change);
        Some(object)
    }

    fn index(&mut self, key: &ObjKey, old: Option<&Value>, new: Option<&Value>) {
        if let Some(o) = old {
            if let Some(uid) = uid_of(o) {
                self.uids.remove(uid);
            }
            for owner in owner_uids(o) {
                if let Some(set) = self.owners.get_mut(&owner) {
                    set.remove(key);
                    if set.is_empty() {
                        self.owners.remove(&owner);
                    }
                }
            }
        }
        if let Some(n) = new {
            if let Some(uid) = uid_of(n) {
                self.uids.insert(uid.to_string(), key.clone());
            }
            for owner in owner_uids(n) {
                self.owners.entry(owner).or_default().insert(key.clone());
            }
        }
        if key.gr.0.is_empty() && key.gr.1 == "pods" {
            for (uid, c) in old.map(OwnedPods::of_pod).unwrap_or_default() {
                if let Some(n) = self.owned_pods.get_mut(&uid) {
                    n.live = n.live.saturating_sub(c.live);
                    n.ready = n.ready.saturating_sub(c.ready);
                    n.active = n.active.saturating_sub(c.active);
                    if *n == OwnedPods::default() {
                        self.owned_pods.remove(&uid);
                    }
                }
            }
            for (uid, c) in new.map(OwnedPods::of_pod).unwrap_or_default() {
                let n = self.owned_pods.entry(uid).or_default();
                n.live += c.live;
                n.ready += c.ready;
                n.active += c.active;
            }
            let counted = |v: &Value| {
                let node = v.pointer("/spec/nodeName").and_then(Value::as_str)?;
                (v.pointer("/metadata/deletionTimestamp").is_none()).then(|| node.to_string())
            };
            if let Some(n) = old.and_then(counted)
                && let Some(c) = self.pods_per_node.get_mut(&n)
            {
                *c = c.saturating_sub(1);
            }
            if let Some(n) = new.and_then(counted) {
                *self.pods_per_node.entry(n).or_default() += 1;
            }
            let bound = |v: &Value| {
                v.pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let pk = (key.ns.clone(), key.name.clone());
            if let Some(n) = old.and_then(bound)
                && let Some(set) = self.pods_by_node.get_mut(&n)
            {
                set.remove(&pk);
                if set.is_empty() {
                    self.pods_by_node.remove(&n);
                }
            }
            let pending = new.is_some_and(|v| {
                bound(v).is_none_or(|n| n.is_empty())
                    && v.pointer("/metadata/deletionTimestamp").is_none()
            });
            if pending {
                self.pending_pods.insert(pk.clone());
            } else {
                self.pending_pods.remove(&pk);
            }
            if let Some(n) = new.and_then(bound) {
                self.pods_by_node.entry(n).or_default().insert(pk);
            }
        }
    }

    /// Does an object with this uid exist?
    pub fn uid_exists(&self, uid: &str) -> bool {
        self.uids.contains_key(uid)
    }

    /// Where the object with this uid lives.
    pub fn key_of_uid(&self, uid: &str) -> Option<ObjKey> {
        self.uids.get(uid).cloned()
    }

    /// Does any object name this uid as an owner?
    pub fn has_dependents(&self, uid: &str) -> bool {
        self.owners.get(uid).is_some_and(|s| !s.is_empty())
    }

    /// The objects that name this uid as an owner.
    pub fn dependents(&self, uid: &str) -> Vec<ObjKey> {
        self.owners
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The counts of the pods an owner (by uid) has.
    pub fn owned_pods(&self, uid: &str) -> OwnedPods {
        self.owned_pods.get(uid).copied().unwrap_or_default()
    }

    /// Take the next change waiting for reactions.
    pub fn next_change(&mut self) -> Option<Arc<Change>> {
        self.queue.pop_front()
    }

    /// Create without admission or validation (seeding, internal controllers). Fills the
    /// system metadata.
    pub fn create_raw(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
    ) -> Result<Arc<Value>, ApiError> {
        self.prepare_create(rt, ns, &mut obj)?;
        let key = self.key_of(rt, ns, &obj);
        if self.get_object(&key.gr, ns, &key.name).is_some() {
            return Err(ApiError::already_exists(rt, &key.name));
        }
        let out = self.commit(&key, Some(obj)).expect("a write commits");
        self.react();
        Ok(out)
    }

    /// The key an object of a type would be stored under.
    pub fn key_of(&self, rt: &ResourceType, ns: &str, obj: &Value) -> ObjKey {
        ObjKey {
            gr: rt.store_key(),
            ns: if rt.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            name: name_of(obj).to_string(),
        }
    }

    /// Fill name (from generateName), namespace, uid, creationTimestamp and generation.
    pub fn prepare_create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body is not a JSON object",
            ));
        }
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        if name_of(obj).is_empty() {
            let gen_name = obj
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if gen_name.is_empty() {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    vec![Cause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value: name or generateName is required".into(),
                        field: "metadata.name".into(),
                    }],
                ));
            }
            // Unlike kube-apiserver, try another suffix on a clash rather than answer 409.
            let table = self.tables.get(&rt.store_key());
            let ns_key = if rt.namespaced {
                ns.to_string()
            } else {
                String::new()
            };
            let mut name = format!("{gen_name}{}", self.name_suffix());
            for _ in 0..8 {
                let taken =
                    table.is_some_and(|t| t.objects.contains_key(&(ns_key.clone(), name.clone())));
                if !taken {
                    break;
                }
                name = format!("{gen_name}{}", self.name_suffix());
            }
            set_meta(obj, "name", json!(name));
        }
        let name = name_of(obj).to_string();
        let problem = if rt.group.is_empty() && rt.plural == "namespaces" {
            invalid_label_name(&name)
        } else {
            invalid_name(&name)
        };
        if let Some(problem) = problem {
            return Err(ApiError::invalid(
                rt,
                &name,
                vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!("Invalid value: \"{name}\": {problem}"),
                    field: "metadata.name".into(),
                }],
            ));
        }
        if rt.namespaced {
            if ns.is_empty() {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            set_meta(obj, "namespace", json!(ns));
        } else if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("namespace");
        }
        set_meta(obj, "uid", json!(uuid::Uuid::new_v4().to_string()));
        set_meta(obj, "creationTimestamp", json!(self.now()));
        if rt.has_generation() {
            set_meta(obj, "generation", json!(1));
        }
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            if !rt.has_generation() {
                m.remove("generation");
            }
            drop_empty_metadata(m);
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("resourceVersion");
            m.remove("selfLink");
        }
        // A second view (events.k8s.io) stores objects in the form of the resource it views,
        // which its conversion already produced.
        if rt.stored_as.is_none() {
            obj["apiVersion"] = json!(rt.api_version(rt.preferred_version()));
            obj["kind"] = json!(rt.kind);
        }
        Ok(())
    }

    /// Create an object the way the API does (admission and validation included).
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
        opts: &WriteOpts,
    ) -> Result<Arc<Value>, ApiError> {
        if rt.namespaced
            && let Some(body_ns) = obj.pointer("/metadata/namespace").and_then(Value::as_str)
            && !body_ns.is_empty()
            && body_ns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if rt.namespaced && self.get(&gr("", "namespaces"), "", ns).is_none() {
            let ns_rt = self.type_of("", "namespaces").expect("built in");
            return Err(ApiError::not_found(&ns_rt, ns));
        }
        self.prepare_create(rt, ns, &mut obj)?;
        let key = self.key_of(rt, ns, &obj);
        if self.get_object(&key.gr, &key.ns, &key.name).is_some() {
            return Err(ApiError::already_exists(rt, &key.name));
        }
        if !rt.custom {
            super::defaults::scheme_defaults(&rt.group, &rt.plural, &mut obj);
            self.validate_builtin(rt, &obj, true)?;
        }
        // Managed fields are recorded from the decoded and defaulted object, before admission
        // plugins add theirs (as kube-apiserver's field manager does).
        let record_before_admission =
            rt.group.is_empty() && matches!(rt.plural.as_str(), "pods" | "namespaces");
        let lists = Self::list_oracle(rt, &opts.version);
        if record_before_admission && obj.pointer("/metadata/managedFields").is_none() {
            let now = self.now();
            let ctx = WriteContext {
                manager: &opts.manager,
                scope: Scope::Main {
                    has_status: rt.status_subresource,
                },
                api_version: &rt.api_version(&opts.version),
                time: &now,
            };
            patch::record_update(None, &mut obj, &ctx, &lists);
        }
        self.admit_create(rt, &mut obj)?;
        self.check_strict(rt, opts, &obj)?;
        self.validate(rt, &opts.version, &mut obj, None)?;
        let now = self.now();
        let ctx = WriteContext {
            manager: &opts.manager,
            scope: Scope::Main {
                has_status: rt.status_subresource,
            },
            api_version: &rt.api_version(&opts.version),
            time: &now,
        };
        if obj.pointer("/metadata/managedFields").is_none() {
            patch::record_update(None, &mut obj, &ctx, &lists);
        }
        if !rt.custom {
            super::defaults::wire_shape(&rt.group, &rt.plural, &mut obj);
        }
        if opts.dry_run {
            return Ok(Arc::new(obj));
        }
        let out = self.commit(&key, Some(obj)).expect("a write commits");
        self.react();
        Ok(out)
    }

    /// Replace an object (PUT, or the result of a patch). `scope` says whether this is the main
    /// resource or its status. `managed` tells whether managedFields were already computed
    /// (server-side apply).
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut new: Value,
        scope: Scope,
        opts: &WriteOpts,
        managed: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let key = ObjKey::of(rt, ns, name);
        let old = self
            .get(&key.gr, &key.ns, name)
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the request body is not a JSON object",
            ));
        }
        let body_name = name_of(&new);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let rv = new
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| !rv.is_empty());
        match rv {
            Some(rv) if rv.parse::<u64>().is_err() => {
                return Err(super::decode::invalid_resource_version(rv));
            }
            Some(rv)
                if Some(rv)
                    != old
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str) =>
            {
                return Err(ApiError::conflict(rt, name));
            }
            None if rt.requires_resource_version() => {
                return Err(resource_version_required(rt, name));
            }
            _ => {}
        }
        // Apply the scope: the main resource ignores status, /status ignores everything else.
        match scope {
            Scope::Status => {
                let status = new.get("status").cloned();
                let mut merged = (*old).clone();
                match status {
                    Some(s) => merged["status"] = s,
                    None => {
                        if let Some(m) = merged.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                if managed {
                    let mf = new.pointer("/metadata/managedFields").cloned();
                    if let Some(mf) = mf {
                        set_meta(&mut merged, "managedFields", mf);
                    }
                }
                new = merged;
            }
            Scope::Main { has_status } => {
                if has_status {
                    match old.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            if let Some(m) = new.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
            }
        }
        // System metadata is the server's.
        if !new.get("metadata").is_some_and(Value::is_object) {
            new["metadata"] = json!({});
        }
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ] {
            match old.pointer(&format!("/metadata/{f}")) {
                Some(v) => set_meta(&mut new, f, v.clone()),
                None => {
                    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove(f);
                    }
                }
            }
        }
        new["apiVersion"] = old.get("apiVersion").cloned().unwrap_or(Value::Null);
        new["kind"] = old.get("kind").cloned().unwrap_or(Value::Null);
        if !managed && let Some(mf) = old.pointer("/metadata/managedFields") {
            set_meta(&mut new, "managedFields", mf.clone());
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            let before = finalizers(&old);
            let added: Vec<String> = finalizers(&new)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                let list: Vec<String> = added.iter().map(|f| format!("{f:?}")).collect();
                return Err(ApiError::invalid(
                    rt,
                    name,
                    vec![Cause {
                        reason: "FieldValueForbidden".into(),
                        message: format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                            list.join(", ")
                        ),
                        field: "metadata.finalizers".into(),
                    }],
                ));
            }
        }
        if matches!(scope, Scope::Main { .. }) {
            if !rt.custom {
                super::defaults::scheme_defaults(&rt.group, &rt.plural, &mut new);
                if rt.group.is_empty() && rt.plural == "pods" {
                    // DefaultTolerationSeconds admits updates too.
                    super::defaults::admit_pod(&mut new);
                }
                self.validate_builtin(rt, &new, false)?;
            }
            self.check_strict(rt, opts, &new)?;
            self.validate(rt, &opts.version, &mut new, Some(&old))?;
        } else {
            self.validate_status(rt, &opts.version, &mut new, &old)?;
        }
        if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            drop_empty_metadata(m);
        }
        if !rt.custom {
            super::defaults::wire_shape(&rt.group, &rt.plural, &mut new);
        }
        if rt.has_generation() && spec_changed(&old, &new, rt.status_subresource) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            set_meta(&mut new, "generation", json!(g + 1));
        }
        if without_managed(&new) == without_managed(&old) {
            return Ok(old);
        }
        if !managed {
            let lists = Self::list_oracle(rt, &opts.version);
            let now = self.now();
            let ctx = WriteContext {
                manager: &opts.manager,
                scope,
                api_version: &rt.api_version(&opts.version),
                time: &now,
            };
            patch::record_update(Some(&old), &mut new, &ctx, &lists);
        }
        if opts.dry_run {
            return Ok(Arc::new(new));
        }
        let finished = new.pointer("/metadata/deletionTimestamp").is_some()
            && finalizers(&new).is_empty()
            && !is_terminating_pod(rt, &new);
        // The update that removes the last finalizer answers with the object as updated.
        let out = if finished {
            self.commit(&key, None).map(|gone| {
                let mut last = new;
                if let Some(rv) = gone.pointer("/metadata/resourceVersion") {
                    set_meta(&mut last, "resourceVersion", rv.clone());
                }
                Arc::new(last)
            })
        } else {
            self.commit(&key, Some(new))
        }
        .expect("a write commits");
        self.react();
        Ok(out)
    }

    /// Delete an object, honouring finalizers, grace periods, propagation and preconditions.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Arc<Value>, ApiError> {
        let key = ObjKey::of(rt, ns, name);
        let old = self
            .get(&key.gr, &key.ns, name)
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if let Some(uid) = &opts.uid {
            let actual = uid_of(&old).unwrap_or_default();
            if uid != actual {
                return Err(ApiError::precondition_failed(
                    rt,
                    name,
                    &format!(
                        "the UID in the precondition ({uid}) does not match the UID in record ({actual}). The object might have been deleted and then recreated"
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.resource_version {
            let actual = old
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if rv != actual {
                return Err(ApiError::precondition_failed(
                    rt,
                    name,
                    &format!(
                        "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({actual}). The object might have been modified"
                    ),
                ));
            }
        }
        if opts.dry_run {
            return Ok(old);
        }
        let out = self.delete_key(rt, &key, &old, opts);
        self.react();
        Ok(out)
    }

    /// The deletion itself (no preconditions); used by the API and by garbage collection.
    pub fn delete_key(
        &mut self,
        rt: &ResourceType,
        key: &ObjKey,
        old: &Arc<Value>,
        opts: &DeleteOpts,
    ) -> Arc<Value> {
        let mut obj = (**old).clone();
        let now = self.now();
        let propagation = opts.propagation.as_deref().unwrap_or("Background");
        if propagation == "Orphan"
            && let Some(uid) = uid_of(old).map(str::to_string)
        {
            self.orphan_dependents(&uid);
        }
        // Pods on a node terminate gracefully: the kubelet removes them later.
        if rt.group.is_empty() && rt.plural == "pods" {
            let grace = opts.grace_period.unwrap_or_else(|| {
                old.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(30)
            });
            let on_node = old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            let terminal = matches!(
                old.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            );
            if on_node && !terminal && grace > 0 {
                let already = old
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64);
                if already.is_some_and(|a| a <= grace) {
                    return old.clone();
                }
                let at = self.clock.now() + chrono::Duration::seconds(grace);
                set_meta(
                    &mut obj,
                    "deletionTimestamp",
                    json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                );
                set_meta(&mut obj, "deletionGracePeriodSeconds", json!(grace));
                let out = self.commit(key, Some(obj)).expect("a write commits");
                self.schedule(Timer::FinishPodTermination {
                    ns: key.ns.clone(),
                    name: key.name.clone(),
                    uid: uid_of(old).unwrap_or_default().to_string(),
                    after: std::time::Duration::from_secs_f64(grace as f64 / self.speed),
                });
                return out;
            }
        }
        // A namespace goes through Terminating: the namespace controller empties it, then it
        // goes (here at once, in the same write).
        if rt.group.is_empty() && rt.plural == "namespaces" && finalizers(&obj).is_empty() {
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                set_meta(&mut obj, "deletionTimestamp", json!(now));
            }
            obj["status"]["phase"] = json!("Terminating");
            let terminating = self.commit(key, Some(obj)).expect("a write commits");
            self.commit(key, None);
            return terminating;
        }
        let mut fins = finalizers(&obj);
        if propagation == "Foreground"
            && self.has_dependents(uid_of(old).unwrap_or_default())
            && !fins.iter().any(|f| f == "foregroundDeletion")
        {
            fins.push("foregroundDeletion".into());
            set_meta(&mut obj, "finalizers", json!(fins));
        }
        if !fins.is_empty() {
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                set_meta(&mut obj, "deletionTimestamp", json!(now));
                set_meta(&mut obj, "deletionGracePeriodSeconds", json!(0));
            } else if **old == obj {
                return old.clone();
            }
            return self.commit(key, Some(obj)).expect("a write commits");
        }
        self.commit(key, None).unwrap_or_else(|| old.clone())
    }

    fn orphan_dependents(&mut self, uid: &str) {
        for dep in self.dependents(uid) {
            if let Some(d) = self.get(&dep.gr, &dep.ns, &dep.name) {
                let mut d = (*d).clone();
                if let Some(refs) = d
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                }
                self.commit(&dep, Some(d));
            }
        }
    }

    /// Admission for creates: pod and node defaults a kubelet would fill.
    fn admit_create(&mut self, rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
        if rt.custom {
            // The status subresource: a create ignores status.
            if rt.status_subresource
                && let Some(m) = obj.as_object_mut()
            {
                m.remove("status");
            }
            return Ok(());
        }
        if rt.group.is_empty() && rt.plural == "pods" {
            super::defaults::admit_pod(obj);
        }
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "pods") if obj.pointer("/status/phase").is_none() => {
                let node = obj
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if node.is_empty()
                    && self.workload_controllers
                    && let Some(n) = self.pick_node(obj, None)
                {
                    obj["spec"]["nodeName"] = json!(n);
                }
                let node = obj
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                obj["status"] = if node.is_empty() {
                    json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]})
                } else {
                    running_status(&self.now())
                };
                obj["status"]["qosClass"] = json!(super::defaults::qos_class(obj));
            }
            ("", "nodes")
                if obj
                    .get("status")
                    .is_none_or(|s| s.get("conditions").is_none()) =>
            {
                let status = node_status(&self.now());
                obj["status"] = status;
            }
            ("", "namespaces") => {
                // The namespace registry's own finalizer, set after the field manager ran.
                let spec = &mut obj["spec"];
                if spec.get("finalizers").is_none_or(Value::is_null) {
                    spec["finalizers"] = json!(["kubernetes"]);
                }
                obj["status"] = json!({"phase": "Active"});
            }
            _ => {}
        }
        Ok(())
    }

    /// Validation of built-in kinds (see `validation.rs`).
    fn validate_builtin(
        &self,
        rt: &ResourceType,
        obj: &Value,
        create: bool,
    ) -> Result<(), ApiError> {
        let causes = super::validation::validate(&rt.group, &rt.plural, obj, create);
        if causes.is_empty() {
            return Ok(());
        }
        // Events are validated as core Events, whichever API wrote them.
        let named = match &rt.stored_as {
            Some(group) => self
                .type_of(group, &rt.plural)
                .unwrap_or_else(|| Arc::new(rt.clone())),
            None => Arc::new(rt.clone()),
        };
        Err(ApiError::invalid(&named, name_of(obj), causes))
    }

    /// Validation of custom resources against their CRD (schema and CEL).
    fn validate(
        &self,
        rt: &ResourceType,
        version: &str,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        if !rt.custom {
            return Ok(());
        }
        let Some(schema) = rt
            .version(version)
            .or_else(|| rt.versions.first())
            .and_then(|v| v.schema.as_ref())
        else {
            return Ok(());
        };
        let causes = super::schema::validate_object(schema, obj, old);
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(rt, name_of(obj), causes))
        }
    }

    /// `fieldValidation=Strict` refuses fields a CRD schema (or a built-in kind's) does not
    /// declare, with
    /// kube-apiserver's wording.
    fn check_strict(
        &self,
        rt: &ResourceType,
        opts: &WriteOpts,
        obj: &Value,
    ) -> Result<(), ApiError> {
        if !opts.strict {
            return Ok(());
        }
        // Built-in kinds: their k8s-openapi schema (see `openapi`).
        let unknown = if !rt.custom {
            if rt.stored_as.is_some() {
                return Ok(());
            }
            match super::openapi::unknown_builtin_fields(&rt.group, &opts.version, &rt.kind, obj) {
                Some(u) => u,
                None => return Ok(()),
            }
        } else {
            let Some(schema) = rt
                .version(&opts.version)
                .or_else(|| rt.versions.first())
                .and_then(|v| v.schema.as_ref())
            else {
                return Ok(());
            };
            super::schema::unknown_fields(schema, obj)
        };
        if unknown.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{}\"", f.trim_start_matches('.')))
            .collect();
        let version = &opts.version;
        Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
            list.join(", "),
            kind = rt.kind,
        )))
    }

    fn validate_status(
        &self,
        rt: &ResourceType,
        version: &str,
        obj: &mut Value,
        old: &Value,
    ) -> Result<(), ApiError> {
        self.validate(rt, version, obj, Some(old))
    }

    /// The schedulable node with the fewest pods, other than `avoid` (the first by name among
    /// equals), as [`crate::kubelet::model::pick_node`] picks it. The nodes are walked in name
    /// order, so a later node wins only with fewer pods: only those are checked.
    pub fn pick_node(&self, pod: &Value, avoid: Option<&str>) -> Option<String> {
        let nodes = self.tables.get(&gr("", "nodes"))?;
        let mut best: Option<(usize, &str)> = None;
        for ((_, name), n) in &nodes.objects {
            if Some(name.as_str()) == avoid {
                continue;
            }
            let count = self.pods_per_node.get(name).copied().unwrap_or(0);
            if best.is_some_and(|(c, _)| count >= c) {
                continue;
            }
            let node = n.value();
            if crate::kubelet::model::pick_node(pod, [(&*node, count)], avoid).is_some() {
                best = Some((count, name));
                if count == 0 {
                    break;
                }
            }
        }
        best.map(|(_, name)| name.to_string())
    }
}

pub use crate::kubelet::model::{node_ready, node_schedulable_for, node_status, running_status};

/// `metadata.name`, or "".
pub fn name_of(v: &Value) -> &str {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata.namespace`, or "".
pub fn namespace_of(v: &Value) -> &str {
    v.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata.uid`.
pub fn uid_of(v: &Value) -> Option<&str> {
    v.pointer("/metadata/uid").and_then(Value::as_str)
}

/// The uids of an object's owners.
pub fn owner_uids(v: &Value) -> Vec<String> {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.finalizers`.
pub fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Set one metadata field.
pub fn set_meta(v: &mut Value, field: &str, value: Value) {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = Value::Object(Map::new());
    }
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert(field.to_string(), value);
    }
}

/// 422 for an update without `metadata.resourceVersion` of a resource that needs one.
fn resource_version_required(rt: &ResourceType, name: &str) -> ApiError {
    let message = "Invalid value: 0: must be specified for an update";
    let mut e = ApiError::new(
        422,
        "Invalid",
        format!(
            "{} \"{name}\" is invalid: metadata.resourceVersion: {message}",
            rt.qualified_plural()
        ),
    );
    let mut d = json!({"name": name, "kind": rt.plural,
        "causes": [{"reason": "FieldValueInvalid", "message": message, "field": "metadata.resourceVersion"}]});
    if !rt.group.is_empty() {
        d["group"] = json!(rt.group);
    }
    e.details = d;
    e
}

fn is_terminating_pod(rt: &ResourceType, v: &Value) -> bool {
    // A pod with a grace period is removed by the kubelet, not by the last finalizer going.
    rt.group.is_empty()
        && rt.plural == "pods"
        && v.pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            > 0
}

fn spec_changed(old: &Value, new: &Value, status_subresource: bool) -> bool {
    let skip = |k: &str| {
        matches!(k, "metadata" | "apiVersion" | "kind") || (status_subresource && k == "status")
    };
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return old != new;
    };
    o.iter()
        .filter(|(k, _)| !skip(k))
        .any(|(k, v)| n.get(k) != Some(v))
        || n.iter()
            .filter(|(k, _)| !skip(k))
            .any(|(k, _)| !o.contains_key(k))
}

fn without_managed(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    v
}

/// kube-apiserver omits empty labels, annotations, finalizers and owner references.
fn drop_empty_metadata(m: &mut Map<String, Value>) {
    for k in ["labels", "annotations", "finalizers", "ownerReferences"] {
        let empty = match m.get(k) {
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Null) => true,
            _ => false,
        };
        if empty {
            m.remove(k);
        }
    }
}

/// Why a name is not a valid DNS label (namespaces), if it is not.
pub fn invalid_label_name(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    (!ok).then(|| "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string())
}

/// Why a name is not a valid DNS subdomain, if it is not.
pub fn invalid_name(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    (!ok).then(|| "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string())
}

// fidelity: lazily made tables (one per resource, on first write or watch).
impl Store {
    /// Make sure a resource has its table, so that a watch can subscribe to it before its
    /// first write.
    pub fn ensure_table(&mut self, key: &GroupResource) {
        self.tables.entry(key.clone()).or_insert_with(Table::new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    fn store() -> Store {
        let (tx, _rx) = mpsc::unbounded_channel();
        Store::new(Arc::new(SystemClock), 1.0, false, 100, tx)
    }

    #[test]
    fn generation_moves_only_when_spec_changes() {
        let mut s = store();
        let rt = s.type_of("apps", "deployments").unwrap();
        let opts = WriteOpts {
            manager: "t".into(),
            version: "v1".into(),
            ..Default::default()
        };
        let d = s
            .create(
                &rt,
                "default",
                json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}}),
                &opts,
            )
            .unwrap();
        assert_eq!(d["metadata"]["generation"], json!(1));
        let mut l = (*d).clone();
        l["metadata"]["labels"] = json!({"a": "b"});
        let d = s
            .update(
                &rt,
                "default",
                "d",
                l,
                Scope::Main { has_status: true },
                &opts,
                false,
            )
            .unwrap();
        assert_eq!(d["metadata"]["generation"], json!(1));
        let mut sp = (*d).clone();
        sp["spec"]["replicas"] = json!(2);
        let d2 = s
            .update(
                &rt,
                "default",
                "d",
                sp,
                Scope::Main { has_status: true },
                &opts,
                false,
            )
            .unwrap();
        assert_eq!(d2["metadata"]["generation"], json!(2));
        // A stale resourceVersion conflicts.
        let mut stale = (*d).clone();
        stale["spec"]["replicas"] = json!(3);
        assert_eq!(
            s.update(
                &rt,
                "default",
                "d",
                stale,
                Scope::Main { has_status: true },
                &opts,
                false
            )
            .unwrap_err()
            .code,
            409
        );
    }

    #[test]
    fn the_history_is_bounded_and_old_watches_expire() {
        let mut s = store();
        let rt = s.type_of("coordination.k8s.io", "leases").unwrap();
        let opts = WriteOpts {
            manager: "t".into(),
            version: "v1".into(),
            ..Default::default()
        };
        let first = s.current_rv();
        for i in 0..150 {
            s.create(
                &rt,
                "default",
                json!({"metadata": {"name": format!("l{i}")}}),
                &opts,
            )
            .unwrap();
        }
        let key = rt.store_key();
        assert_eq!(s.subscribe(&key, Some(first)).unwrap_err().code, 410);
        let (backlog, _) = s.subscribe(&key, Some(s.current_rv() - 10)).unwrap();
        assert_eq!(backlog.len(), 10);
        s.expire_history();
        assert_eq!(
            s.subscribe(&key, Some(s.current_rv() - 1))
                .unwrap_err()
                .code,
            410
        );
    }

    #[test]
    fn names_must_be_dns_subdomains() {
        assert!(invalid_name("worker-1.example").is_none());
        assert!(invalid_name("Worker").is_some());
        assert!(invalid_name("-a").is_some());
        assert!(invalid_name("").is_some());
    }
}
