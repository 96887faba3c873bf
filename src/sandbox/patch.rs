//! Patches and field ownership, pure: JSON merge patch, JSON patch (RFC 6902), strategic merge
//! patch, and server-side apply with `metadata.managedFields` bookkeeping.

use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// How a list merges: atomically (replaced whole), as a set of scalars, or as a map keyed by
/// some fields of its items. This is `x-kubernetes-list-type` for CRDs and the
/// `patchStrategy`/`patchMergeKey` of the built-in types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListKind {
    /// Replaced as a whole.
    Atomic,
    /// A set of scalars, merged by value.
    Set,
    /// Items merged by these key fields.
    Map(Vec<String>),
}

/// Tells the list kind of a field, given the field names from the object root (list items
/// are not part of the path).
pub type ListOracle<'a> = &'a dyn Fn(&[&str]) -> ListKind;

/// The list kinds of the built-in types (and of `metadata` for every object).
pub fn builtin_list_kind(path: &[&str]) -> ListKind {
    let last = path.last().copied().unwrap_or_default();
    let parent = if path.len() >= 2 {
        path[path.len() - 2]
    } else {
        ""
    };
    match (parent, last) {
        ("metadata", "finalizers") => ListKind::Set,
        ("metadata", "ownerReferences") => ListKind::Map(vec!["uid".into()]),
        (_, "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env") => {
            ListKind::Map(vec!["name".into()])
        }
        (_, "imagePullSecrets") => ListKind::Map(vec!["name".into()]),
        (_, "volumeMounts") => ListKind::Map(vec!["mountPath".into()]),
        (_, "ports") if path.contains(&"containers") || path.contains(&"initContainers") => {
            ListKind::Map(vec!["containerPort".into()])
        }
        (_, "conditions") => ListKind::Map(vec!["type".into()]),
        ("status", "addresses") => ListKind::Map(vec!["type".into()]),
        (_, "containerStatuses" | "initContainerStatuses") => ListKind::Map(vec!["name".into()]),
        _ => ListKind::Atomic,
    }
}

/// The list kinds a CRD schema declares (`x-kubernetes-list-type`, `-list-map-keys`);
/// `metadata` lists follow the built-in rules.
pub fn schema_list_kind(schema: &Value, path: &[&str]) -> ListKind {
    if path.first() == Some(&"metadata") {
        return builtin_list_kind(path);
    }
    let mut node = schema;
    for seg in path {
        // Step through arrays' items transparently: the path holds field names only.
        while node.get("type").and_then(Value::as_str) == Some("array") {
            match node.get("items") {
                Some(i) => node = i,
                None => return ListKind::Atomic,
            }
        }
        match node.pointer(&format!(
            "/properties/{}",
            seg.replace('~', "~0").replace('/', "~1")
        )) {
            Some(n) => node = n,
            None => match node.get("additionalProperties").filter(|a| a.is_object()) {
                Some(a) => node = a,
                None => return ListKind::Atomic,
            },
        }
    }
    match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => ListKind::Set,
        Some("map") => ListKind::Map(
            node.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => ListKind::Atomic,
    }
}

/// Apply an RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Apply an RFC 6902 JSON patch (with `test`). The error is worded for a 422 answer.
///
/// As in kube-apiserver (evanphx/json-patch), a `test` of a missing path against `null`
/// passes: kube-runtime's finalizer helper relies on it when adding the first finalizer.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let p: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    let mut work = target.clone();
    for op in p.0 {
        if let json_patch::PatchOperation::Test(t) = &op
            && t.value.is_null()
            && work.pointer(t.path.as_str()).is_none_or(Value::is_null)
        {
            continue;
        }
        json_patch::patch(&mut work, &[op]).map_err(|e| e.to_string())?;
    }
    *target = work;
    Ok(())
}

/// Apply a strategic merge patch, honouring `$patch`, `$retainKeys`,
/// `$deleteFromPrimitiveList/...` and ignoring `$setElementOrder/...`.
pub fn strategic_merge(
    original: &Value,
    patch: &Value,
    lists: ListOracle,
) -> Result<Value, String> {
    let mut path = Vec::new();
    smp_value(Some(original), patch, lists, &mut path)
        .map(|v| v.unwrap_or(Value::Object(Map::new())))
}

fn smp_value(
    original: Option<&Value>,
    patch: &Value,
    lists: ListOracle,
    path: &mut Vec<String>,
) -> Result<Option<Value>, String> {
    match patch {
        Value::Object(pm) => {
            match pm.get("$patch").and_then(Value::as_str) {
                Some("delete") => return Ok(None),
                Some("replace") => {
                    let mut m = pm.clone();
                    m.remove("$patch");
                    return Ok(Some(strip_directives(Value::Object(m))));
                }
                Some(other) => return Err(format!("unknown patch type: {other}")),
                None => {}
            }
            let mut out = match original {
                Some(Value::Object(o)) => o.clone(),
                _ => Map::new(),
            };
            if let Some(retain) = pm.get("$retainKeys").and_then(Value::as_array) {
                let keep: BTreeSet<&str> = retain.iter().filter_map(Value::as_str).collect();
                out.retain(|k, _| keep.contains(k.as_str()));
            }
            for (k, v) in pm {
                if k == "$retainKeys" || k.starts_with("$setElementOrder/") {
                    continue;
                }
                if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
                    let drop: Vec<&Value> =
                        v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
                    if let Some(Value::Array(items)) = out.get_mut(field) {
                        items.retain(|i| !drop.contains(&i));
                    }
                    continue;
                }
                if v.is_null() {
                    out.remove(k);
                    continue;
                }
                path.push(k.clone());
                let merged = smp_value(out.get(k), v, lists, path)?;
                path.pop();
                match merged {
                    Some(m) => {
                        out.insert(k.clone(), m);
                    }
                    None => {
                        out.remove(k);
                    }
                }
            }
            Ok(Some(Value::Object(out)))
        }
        Value::Array(items) => {
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            let kind = lists(&refs);
            let orig = original.and_then(Value::as_array);
            if items
                .iter()
                .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                let rest = items
                    .iter()
                    .filter(|i| i.get("$patch").is_none())
                    .cloned()
                    .map(strip_directives)
                    .collect();
                return Ok(Some(Value::Array(rest)));
            }
            match kind {
                ListKind::Atomic => Ok(Some(strip_directives(patch.clone()))),
                ListKind::Set => {
                    let mut out: Vec<Value> = orig.cloned().unwrap_or_default();
                    for i in items {
                        if !out.contains(i) {
                            out.push(i.clone());
                        }
                    }
                    Ok(Some(Value::Array(out)))
                }
                ListKind::Map(keys) => {
                    let mut out: Vec<Value> = orig.cloned().unwrap_or_default();
                    for item in items {
                        let pos = out.iter().position(|o| same_key(o, item, &keys));
                        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (pos, delete) {
                            (Some(p), true) => {
                                out.remove(p);
                            }
                            (None, true) => {}
                            (Some(p), false) => {
                                if let Some(m) = smp_value(Some(&out[p]), item, lists, path)? {
                                    out[p] = m;
                                }
                            }
                            (None, false) => {
                                if let Some(m) = smp_value(None, item, lists, path)? {
                                    out.push(m);
                                }
                            }
                        }
                    }
                    Ok(Some(Value::Array(out)))
                }
            }
        }
        other => Ok(Some(other.clone())),
    }
}

fn strip_directives(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k, strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_directives).collect()),
        other => other,
    }
}

fn same_key(a: &Value, b: &Value, keys: &[String]) -> bool {
    !keys.is_empty()
        && keys
            .iter()
            .all(|k| a.get(k).is_some() && a.get(k) == b.get(k))
}

/// One step of a managed-fields path, in the `fieldsV1` encoding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathElement {
    /// `f:name`: a map field.
    Field(String),
    /// `k:{"type":"Ready"}`: an item of a map list, by its keys (JSON).
    Key(String),
    /// `v:"x"`: an item of a set list, by value (JSON).
    Value(String),
}

/// A field path.
pub type FieldPath = Vec<PathElement>;

/// A set of field paths, as owned by one manager.
pub type FieldSet = BTreeSet<FieldPath>;

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource; `status` is ignored when the resource has a status subresource.
    Main {
        /// The resource has a status subresource.
        has_status: bool,
    },
    /// The `status` subresource: only `status`.
    Status,
}

impl Scope {
    fn includes(&self, top: &str) -> bool {
        match self {
            Scope::Status => top == "status",
            Scope::Main { has_status } => {
                !(matches!(top, "apiVersion" | "kind") || (*has_status && top == "status"))
            }
        }
    }
    /// The `subresource` field of managedFields entries.
    pub fn subresource(&self) -> Option<&'static str> {
        match self {
            Scope::Status => Some("status"),
            Scope::Main { .. } => None,
        }
    }
}

const TRACKED_METADATA: [&str; 5] = [
    "generateName",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
];

/// The leaf paths of an object within a scope.
pub fn field_set(obj: &Value, scope: Scope, lists: ListOracle) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else {
        return out;
    };
    for (k, v) in m {
        if !scope.includes(k) {
            continue;
        }
        if k == "metadata" {
            for mk in TRACKED_METADATA {
                if let Some(mv) = v.get(mk) {
                    let mut names = vec!["metadata", mk];
                    let mut path = vec![
                        PathElement::Field("metadata".into()),
                        PathElement::Field(mk.into()),
                    ];
                    collect(mv, &mut names, &mut path, lists, &mut out);
                }
            }
            continue;
        }
        let mut names = vec![k.as_str()];
        let mut path = vec![PathElement::Field(k.clone())];
        collect(v, &mut names, &mut path, lists, &mut out);
    }
    out
}

fn collect<'a>(
    v: &'a Value,
    names: &mut Vec<&'a str>,
    path: &mut FieldPath,
    lists: ListOracle,
    out: &mut FieldSet,
) {
    // A label selector is an atomic struct: owned and replaced as a whole.
    let atomic = names.len() >= 2
        && names[names.len() - 2] == "spec"
        && names[names.len() - 1] == "selector";
    match v {
        Value::Object(m) if !m.is_empty() && !atomic => {
            for (k, c) in m {
                names.push(k);
                path.push(PathElement::Field(k.clone()));
                collect(c, names, path, lists, out);
                path.pop();
                names.pop();
            }
        }
        Value::Array(items) => match lists(names) {
            ListKind::Atomic => {
                out.insert(path.clone());
            }
            ListKind::Set => {
                for i in items {
                    let mut p = path.clone();
                    p.push(PathElement::Value(i.to_string()));
                    out.insert(p);
                }
            }
            ListKind::Map(keys) => {
                for i in items {
                    path.push(PathElement::Key(key_json(i, &keys)));
                    out.insert(path.clone());
                    if let Some(m) = i.as_object() {
                        for (k, c) in m {
                            names.push(k);
                            path.push(PathElement::Field(k.clone()));
                            collect(c, names, path, lists, out);
                            path.pop();
                            names.pop();
                        }
                    }
                    path.pop();
                }
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

fn key_json(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    Value::Object(m).to_string()
}

fn find_item(items: &[Value], key: &str) -> Option<usize> {
    let want: Value = serde_json::from_str(key).ok()?;
    let wm = want.as_object()?;
    let _ = items;
    items
        .iter()
        .position(|i| wm.iter().all(|(k, v)| i.get(k) == Some(v)))
}

/// The value at a field path, if present.
pub fn value_at<'a>(obj: &'a Value, path: &[PathElement]) -> Option<&'a Value> {
    let mut cur = obj;
    for pe in path {
        cur = match pe {
            PathElement::Field(f) => cur.get(f)?,
            PathElement::Key(k) => {
                let items = cur.as_array()?;
                &items[find_item(items, k)?]
            }
            PathElement::Value(v) => {
                let want: Value = serde_json::from_str(v).ok()?;
                cur.as_array()?.iter().find(|i| **i == want)?
            }
        };
    }
    Some(cur)
}

/// Remove the field, list item or set value at a path (no-op when absent).
pub fn remove_at(obj: &mut Value, path: &[PathElement]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for pe in parents {
        let next = match pe {
            PathElement::Field(f) => cur.get_mut(f),
            PathElement::Key(k) => match cur.as_array_mut() {
                Some(items) => match find_item(items, k) {
                    Some(i) => items.get_mut(i),
                    None => None,
                },
                None => None,
            },
            PathElement::Value(_) => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        PathElement::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        PathElement::Key(k) => {
            if let Some(items) = cur.as_array_mut()
                && let Some(i) = find_item(items, k)
            {
                items.remove(i);
            }
        }
        PathElement::Value(v) => {
            if let (Some(items), Ok(want)) = (cur.as_array_mut(), serde_json::from_str::<Value>(v))
            {
                items.retain(|i| *i != want);
            }
        }
    }
}

/// Merge an applied configuration into a live object the way server-side apply does: maps
/// field by field, map lists item by item, sets by value, atomic lists replaced.
pub fn merge_applied(live: &Value, applied: &Value, lists: ListOracle) -> Value {
    let mut names = Vec::new();
    merge_rec(live, applied, lists, &mut names)
}

fn merge_rec<'a>(
    live: &Value,
    applied: &'a Value,
    lists: ListOracle,
    names: &mut Vec<&'a str>,
) -> Value {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            let mut out = l.clone();
            for (k, v) in a {
                names.push(k);
                let merged = match out.get(k) {
                    Some(old) => merge_rec(old, v, lists, names),
                    None => v.clone(),
                };
                names.pop();
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(a)) => match lists(names) {
            ListKind::Atomic => applied.clone(),
            ListKind::Set => {
                let mut out = l.clone();
                for i in a {
                    if !out.contains(i) {
                        out.push(i.clone());
                    }
                }
                Value::Array(out)
            }
            ListKind::Map(keys) => {
                let mut out = l.clone();
                for i in a {
                    match out.iter().position(|o| same_key(o, i, &keys)) {
                        Some(p) => out[p] = merge_rec(&out[p], i, lists, names),
                        None => out.push(i.clone()),
                    }
                }
                Value::Array(out)
            }
        },
        _ => applied.clone(),
    }
}

/// Encode a field set as `fieldsV1`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for (i, pe) in path.iter().enumerate() {
            // A map (as opposed to a struct) with entries is itself a member, shown as ".".
            let map_with_entries = i + 1 < path.len()
                && matches!(pe, PathElement::Field(f) if MAP_FIELDS.contains(&f.as_str()));
            let key = match pe {
                PathElement::Field(f) => format!("f:{f}"),
                PathElement::Key(k) => format!("k:{k}"),
                PathElement::Value(v) => format!("v:{v}"),
            };
            let entry = cur.entry(key).or_insert_with(|| Value::Object(Map::new()));
            cur = match entry.as_object_mut() {
                Some(m) => m,
                None => break,
            };
            if matches!(pe, PathElement::Key(_)) || map_with_entries {
                cur.entry(".").or_insert_with(|| Value::Object(Map::new()));
            }
        }
    }
    Value::Object(root)
}

/// Fields that are maps of the built-in types (and of objects' metadata), whose entries are
/// owned one by one: `fieldsV1` marks the map itself with ".". Others are structs.
const MAP_FIELDS: [&str; 8] = [
    "labels",
    "annotations",
    "nodeSelector",
    "matchLabels",
    "capacity",
    "allocatable",
    "requests",
    "limits",
];

/// Decode `fieldsV1` into a field set (leaves, and map-list items by their `.` marker).
pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let mut path = Vec::new();
    decode(v, &mut path, &mut out);
    out
}

fn decode(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    let Some(m) = v.as_object() else {
        return;
    };
    let children: Vec<_> = m.iter().filter(|(k, _)| k.as_str() != ".").collect();
    // Sets hold leaves and list items; a map's "." marker is implied by its entries.
    let item = matches!(path.last(), Some(PathElement::Key(_)));
    if (children.is_empty() || (item && m.contains_key("."))) && !path.is_empty() {
        out.insert(path.clone());
    }
    for (k, c) in children {
        let pe = if let Some(f) = k.strip_prefix("f:") {
            PathElement::Field(f.to_string())
        } else if let Some(x) = k.strip_prefix("k:") {
            PathElement::Key(x.to_string())
        } else if let Some(x) = k.strip_prefix("v:") {
            PathElement::Value(x.to_string())
        } else {
            continue;
        };
        path.push(pe);
        decode(c, path, out);
        path.pop();
    }
}

/// A `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    /// The field manager.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The API version used.
    pub api_version: String,
    /// When it last changed (RFC 3339).
    pub time: String,
    /// `status` for the status subresource.
    pub subresource: Option<String>,
    /// The fields it owns.
    pub fields: FieldSet,
}

/// Read `metadata.managedFields`.
pub fn read_managed(obj: &Value) -> Vec<ManagedEntry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| ManagedEntry {
                    manager: str_of(e, "manager"),
                    operation: str_of(e, "operation"),
                    api_version: str_of(e, "apiVersion"),
                    time: str_of(e, "time"),
                    subresource: e
                        .get("subresource")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Write `metadata.managedFields` (entries with no fields are dropped).
pub fn write_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut m = Map::new();
            m.insert("manager".into(), e.manager.clone().into());
            m.insert("operation".into(), e.operation.clone().into());
            m.insert("apiVersion".into(), e.api_version.clone().into());
            m.insert("time".into(), e.time.clone().into());
            m.insert("fieldsType".into(), "FieldsV1".into());
            m.insert("fieldsV1".into(), to_fields_v1(&e.fields));
            if let Some(s) = &e.subresource {
                m.insert("subresource".into(), s.clone().into());
            }
            Value::Object(m)
        })
        .collect();
    if list.is_empty() && obj.get("metadata").is_none() {
        return;
    }
    if let Some(m) = obj.as_object_mut()
        && !m.get("metadata").is_some_and(Value::is_object)
    {
        m.insert("metadata".into(), Value::Object(Map::new()));
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// A server-side apply conflict: another manager owns a field with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager, as kube-apiserver names it in conflicts: `"kubectl"` for an applier,
    /// `"kubectl" with subresource "status" using v1` for an updater.
    pub manager: String,
    /// The field, dotted (`.spec.replicas`).
    pub field: String,
}

/// How a conflict names a managedFields entry.
fn describe_manager(e: &ManagedEntry) -> String {
    let mut out = format!("{:?}", e.manager);
    if e.operation == "Apply" {
        return out;
    }
    if let Some(sub) = &e.subresource {
        out.push_str(&format!(" with subresource {sub:?}"));
    }
    out.push_str(&format!(" using {}", e.api_version));
    out
}

/// Render a path the way conflict causes show it (`.spec.taints`, `.status.conditions[type="Ready"]`).
pub fn path_string(path: &[PathElement]) -> String {
    let mut s = String::new();
    for pe in path {
        match pe {
            PathElement::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            PathElement::Key(k) => {
                let v: Value = serde_json::from_str(k).unwrap_or(Value::Null);
                let parts: Vec<String> = v
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                    .unwrap_or_default();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            PathElement::Value(v) => s.push_str(&format!("[{v}]")),
        }
    }
    s
}

/// What a write is: who makes it, in which scope, when.
#[derive(Debug, Clone)]
pub struct WriteContext<'a> {
    /// Field manager name.
    pub manager: &'a str,
    /// Which part of the object the write touches.
    pub scope: Scope,
    /// API version the client used.
    pub api_version: &'a str,
    /// Now, RFC 3339.
    pub time: &'a str,
}

/// Server-side apply `applied` onto `live` (None when creating). Returns the new object with
/// managedFields updated, or the conflicts when `force` is false.
pub fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    ctx: &WriteContext,
    force: bool,
    lists: ListOracle,
) -> Result<Value, Vec<Conflict>> {
    let empty = Value::Object(Map::new());
    let base = live.unwrap_or(&empty);
    let mut entries = read_managed(base);
    let applied_set = field_set(applied, ctx.scope, lists);
    let sub = ctx.scope.subresource().map(str::to_string);
    let mine = |e: &ManagedEntry| {
        e.manager == ctx.manager && e.operation == "Apply" && e.subresource == sub
    };
    // Conflicts: another manager owns a field that this apply sets to a different value.
    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| !mine(e)) {
        for p in applied_set.intersection(&e.fields) {
            if value_at(base, p) != value_at(applied, p) {
                conflicts.push(Conflict {
                    manager: describe_manager(e),
                    field: path_string(p),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    // Only the scoped part of the applied object is merged.
    let mut scoped = Map::new();
    if let Some(m) = applied.as_object() {
        for (k, v) in m {
            if k == "metadata" {
                let mut meta = Map::new();
                for mk in TRACKED_METADATA {
                    if let Some(x) = v.get(mk) {
                        meta.insert(mk.into(), x.clone());
                    }
                }
                if matches!(ctx.scope, Scope::Main { .. }) {
                    scoped.insert("metadata".into(), Value::Object(meta));
                }
            } else if ctx.scope.includes(k) {
                scoped.insert(k.clone(), v.clone());
            }
        }
    }
    let mut merged = merge_applied(base, &Value::Object(scoped), lists);
    let prev: FieldSet = entries
        .iter()
        .filter(|e| mine(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !mine(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    for p in prev.difference(&applied_set) {
        if !others.contains(p) {
            remove_at(&mut merged, p);
        }
    }
    if force {
        let lost: BTreeSet<&FieldPath> = applied_set.iter().collect();
        for e in entries.iter_mut().filter(|e| !mine(e)) {
            let conflicting: Vec<FieldPath> = e
                .fields
                .iter()
                .filter(|p| lost.contains(p) && value_at(base, p) != value_at(applied, p))
                .cloned()
                .collect();
            for p in conflicting {
                e.fields.remove(&p);
            }
        }
    }
    entries.retain(|e| !mine(e));
    entries.push(ManagedEntry {
        manager: ctx.manager.to_string(),
        operation: "Apply".into(),
        api_version: ctx.api_version.to_string(),
        time: ctx.time.to_string(),
        subresource: sub,
        fields: applied_set,
    });
    write_managed(&mut merged, &entries);
    Ok(merged)
}

/// Record an ordinary write (create, update, non-apply patch) in `new`'s managedFields: the
/// fields it changed become the manager's (operation `Update`) and leave other managers;
/// fields it removed leave every manager.
pub fn record_update(old: Option<&Value>, new: &mut Value, ctx: &WriteContext, lists: ListOracle) {
    let mut entries = match old {
        Some(o) => read_managed(o),
        None => read_managed(new),
    };
    let old_set = old
        .map(|o| field_set(o, ctx.scope, lists))
        .unwrap_or_default();
    let new_set = field_set(new, ctx.scope, lists);
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| old.is_none_or(|o| value_at(o, p) != value_at(new, p)))
        .cloned()
        .collect();
    let removed: FieldSet = old_set.difference(&new_set).cloned().collect();
    let sub = ctx.scope.subresource().map(str::to_string);
    for e in entries.iter_mut() {
        if e.subresource == sub {
            e.fields.retain(|p| !removed.contains(p));
            if !(e.manager == ctx.manager && e.operation == "Update") {
                e.fields.retain(|p| !changed.contains(p));
            }
        }
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.manager == ctx.manager && e.operation == "Update" && e.subresource == sub)
        {
            Some(e) => {
                e.fields.extend(changed);
                e.time = ctx.time.to_string();
                e.api_version = ctx.api_version.to_string();
            }
            None => entries.push(ManagedEntry {
                manager: ctx.manager.to_string(),
                operation: "Update".into(),
                api_version: ctx.api_version.to_string(),
                time: ctx.time.to_string(),
                subresource: sub,
                fields: changed,
            }),
        }
    }
    write_managed(new, &entries);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx<'a>(manager: &'a str) -> WriteContext<'a> {
        WriteContext {
            manager,
            scope: Scope::Main { has_status: true },
            api_version: "v1",
            time: "2026-01-01T00:00:00Z",
        }
    }

    #[test]
    fn strategic_merge_merges_labels_and_conditions_by_key_and_replaces_taints() {
        let node = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
            "spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Disk", "status": "False"}]}});
        let patch = json!({"metadata": {"labels": {"b": null, "c": "3"}},
            "spec": {"unschedulable": true, "taints": [{"key": "y", "effect": "NoExecute"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        let out = strategic_merge(&node, &patch, &builtin_list_kind).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "c": "3"}));
        assert_eq!(
            out["spec"]["taints"],
            json!([{"key": "y", "effect": "NoExecute"}])
        );
        assert_eq!(out["spec"]["unschedulable"], json!(true));
        assert_eq!(
            out["status"]["conditions"][0],
            json!({"type": "Ready", "status": "False"})
        );
        assert_eq!(out["status"]["conditions"][1]["type"], json!("Disk"));
    }

    #[test]
    fn strategic_merge_honours_delete_replace_and_primitive_list_directives() {
        let pod = json!({"metadata": {"finalizers": ["a", "b"]},
            "spec": {"containers": [{"name": "c1", "image": "x"}, {"name": "c2", "image": "y"}]}});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["z"]},
            "$setElementOrder/spec": [],
            "spec": {"containers": [{"name": "c1", "$patch": "delete"}, {"name": "c3", "image": "w"}]}});
        let out = strategic_merge(&pod, &patch, &builtin_list_kind).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "z"]));
        let names: Vec<_> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(names, [json!("c2"), json!("c3")]);
        let replace = json!({"spec": {"$patch": "replace", "containers": []}});
        assert_eq!(
            strategic_merge(&pod, &replace, &builtin_list_kind).unwrap()["spec"],
            json!({"containers": []})
        );
    }

    #[test]
    fn json_patch_test_failure_is_an_error() {
        let mut v = json!({"metadata": {"finalizers": ["a"]}});
        let ok = json!([{"op": "test", "path": "/metadata/finalizers", "value": ["a"]},
            {"op": "remove", "path": "/metadata/finalizers/0"}]);
        json_patch(&mut v, &ok).unwrap();
        assert_eq!(v, json!({"metadata": {"finalizers": []}}));
        let bad = json!([{"op": "test", "path": "/metadata/finalizers", "value": ["a"]}]);
        assert!(json_patch(&mut v, &bad).is_err());
        // kube-runtime's first finalizer: test that the list is absent, then add it.
        let mut fresh = json!({"metadata": {}});
        let add = json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]);
        json_patch(&mut fresh, &add).unwrap();
        assert_eq!(fresh, json!({"metadata": {"finalizers": ["f"]}}));
        // A failing op leaves the target untouched.
        let half = json!([{"op": "add", "path": "/x", "value": 1}, {"op": "test", "path": "/x", "value": 2}]);
        assert!(json_patch(&mut fresh, &half).is_err());
        assert!(fresh.get("x").is_none());
    }

    #[test]
    fn fields_v1_round_trips() {
        let obj = json!({"metadata": {"labels": {"a": "b"}, "finalizers": ["f"]},
            "spec": {"x": 1, "list": [1, 2]}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let set = field_set(&obj, Scope::Main { has_status: false }, &builtin_list_kind);
        let round = from_fields_v1(&to_fields_v1(&set));
        assert_eq!(round, set);
        assert!(set.contains(&vec![
            PathElement::Field("metadata".into()),
            PathElement::Field("finalizers".into()),
            PathElement::Value("\"f\"".into())
        ]));
    }

    #[test]
    fn apply_conflicts_with_another_manager_unless_forced_and_drops_fields_no_longer_applied() {
        let first = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"p": 1, "q": 2}});
        let live =
            server_side_apply(None, &first, &ctx("alice"), false, &builtin_list_kind).unwrap();
        assert_eq!(live["spec"], json!({"p": 1, "q": 2}));
        // Same value: shared ownership, no conflict.
        let bob = json!({"metadata": {"name": "x"}, "spec": {"p": 1}});
        let live =
            server_side_apply(Some(&live), &bob, &ctx("bob"), false, &builtin_list_kind).unwrap();
        // Different value: conflict.
        let bob2 = json!({"metadata": {"name": "x"}, "spec": {"q": 3}});
        let err = server_side_apply(Some(&live), &bob2, &ctx("bob"), false, &builtin_list_kind)
            .unwrap_err();
        assert_eq!(
            err,
            vec![Conflict {
                manager: "\"alice\"".into(),
                field: ".spec.q".into()
            }]
        );
        let live =
            server_side_apply(Some(&live), &bob2, &ctx("bob"), true, &builtin_list_kind).unwrap();
        assert_eq!(live["spec"], json!({"p": 1, "q": 3}));
        // Alice stops applying q and the label; p is shared with bob so it stays... bob dropped p.
        let alice2 = json!({"metadata": {"name": "x"}, "spec": {}});
        let live = server_side_apply(
            Some(&live),
            &alice2,
            &ctx("alice"),
            false,
            &builtin_list_kind,
        )
        .unwrap();
        assert_eq!(live["spec"], json!({"q": 3}));
        assert!(live["metadata"]["labels"].as_object().unwrap().is_empty());
    }

    #[test]
    fn updates_take_over_the_fields_they_change() {
        let old = server_side_apply(
            None,
            &json!({"spec": {"p": 1}}),
            &ctx("alice"),
            false,
            &builtin_list_kind,
        )
        .unwrap();
        let mut new = old.clone();
        new["spec"]["p"] = json!(2);
        record_update(
            Some(&old),
            &mut new,
            &ctx("kubectl-edit"),
            &builtin_list_kind,
        );
        let entries = read_managed(&new);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].manager, "kubectl-edit");
        assert_eq!(entries[0].operation, "Update");
    }

    #[test]
    fn crd_schemas_declare_their_list_kinds() {
        let schema = json!({"type": "object", "properties": {"status": {"type": "object", "properties": {
            "conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                "items": {"type": "object"}}, "tags": {"type": "array", "x-kubernetes-list-type": "set"}}}}});
        assert_eq!(
            schema_list_kind(&schema, &["status", "conditions"]),
            ListKind::Map(vec!["type".into()])
        );
        assert_eq!(
            schema_list_kind(&schema, &["status", "tags"]),
            ListKind::Set
        );
        assert_eq!(schema_list_kind(&schema, &["spec", "x"]), ListKind::Atomic);
        assert_eq!(
            schema_list_kind(&schema, &["metadata", "finalizers"]),
            ListKind::Set
        );
    }

    fn small_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (0i64..5).prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::from)
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                proptest::collection::btree_map("[a-d]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn a_field_set_survives_its_fields_v1_encoding(
            spec in proptest::collection::btree_map("[a-d]", small_json(), 0..4),
        ) {
            let obj = json!({"metadata": {"labels": {"a": "b"}}, "spec": Value::Object(spec.into_iter().collect())});
            let set = field_set(&obj, Scope::Main { has_status: true }, &builtin_list_kind);
            proptest::prop_assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
        }

        #[test]
        fn applying_the_same_configuration_twice_changes_nothing(
            spec in proptest::collection::btree_map("[a-d]", small_json(), 0..4),
        ) {
            let applied = json!({"metadata": {"name": "x"}, "spec": Value::Object(spec.into_iter().collect())});
            let once = server_side_apply(None, &applied, &ctx("m"), false, &builtin_list_kind).unwrap();
            let twice = server_side_apply(Some(&once), &applied, &ctx("m"), false, &builtin_list_kind).unwrap();
            proptest::prop_assert_eq!(once, twice);
        }
    }
}
