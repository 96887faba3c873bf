//! `/openapi/v3`: the index of group-versions and one OpenAPI 3.0 document per group-version,
//! as kube-apiserver serves them, so that `kubectl explain` and kubectl's field-validation
//! check (a PATCH operation of the kind with a `fieldValidation` parameter) work.
//!
//! Built-in kinds take their schemas from k8s-openapi (its `schemars` implementations, with
//! the OpenAPI 3.0 settings: `#/components/schemas/io.k8s...` references); custom resources
//! from their CRD's `openAPIV3Schema` as served, with `metadata` pointing at `ObjectMeta`, as
//! kube-apiserver builds them. A CRD applied to the sandbox appears at once. Pure.

use super::resources::ResourceType;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

const SCHEMAS: &str = "#/components/schemas/";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const API_VERSION_DOC: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DOC: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";

/// k8s-openapi's schemas of the built-in kinds (and of everything they refer to), by name
/// (`io.k8s.api.core.v1.ConfigMap`), and the name of each kind's schema by (group, version,
/// kind).
struct Catalog {
    schemas: Map<String, Value>,
    kinds: BTreeMap<(String, String, String), String>,
}

macro_rules! catalog_of {
    ($($t:ty),* $(,)?) => {{
        let mut generator = SchemaSettings::openapi3()
            .with(|s| s.meta_schema = None)
            .into_generator();
        let mut kinds = BTreeMap::new();
        $(
            let _ = generator.subschema_for::<$t>();
            kinds.insert(
                (
                    <$t as k8s_openapi::Resource>::GROUP.to_string(),
                    <$t as k8s_openapi::Resource>::VERSION.to_string(),
                    <$t as k8s_openapi::Resource>::KIND.to_string(),
                ),
                <$t as schemars::JsonSchema>::schema_name().into_owned(),
            );
        )*
        let _ = generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
        let _ = generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>();
        Catalog { schemas: generator.take_definitions(true), kinds }
    }};
}

/// The GA kinds of the pinned API (k8s-openapi `v1_33`).
static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    use k8s_openapi::api::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;
    let mut catalog = catalog_of![
        core::v1::Node,
        core::v1::Pod,
        core::v1::Namespace,
        core::v1::Event,
        core::v1::ConfigMap,
        core::v1::Secret,
        core::v1::ServiceAccount,
        core::v1::Service,
        core::v1::Endpoints,
        core::v1::LimitRange,
        core::v1::ResourceQuota,
        core::v1::PersistentVolume,
        core::v1::PersistentVolumeClaim,
        core::v1::PodTemplate,
        core::v1::ReplicationController,
        core::v1::ComponentStatus,
        events::v1::Event,
        coordination::v1::Lease,
        policy::v1::PodDisruptionBudget,
        apps::v1::DaemonSet,
        apps::v1::ReplicaSet,
        apps::v1::Deployment,
        apps::v1::StatefulSet,
        apps::v1::ControllerRevision,
        batch::v1::Job,
        batch::v1::CronJob,
        autoscaling::v2::HorizontalPodAutoscaler,
        rbac::v1::Role,
        rbac::v1::RoleBinding,
        rbac::v1::ClusterRole,
        rbac::v1::ClusterRoleBinding,
        networking::v1::Ingress,
        networking::v1::IngressClass,
        networking::v1::NetworkPolicy,
        networking::v1::IPAddress,
        networking::v1::ServiceCIDR,
        discovery::v1::EndpointSlice,
        scheduling::v1::PriorityClass,
        node::v1::RuntimeClass,
        storage::v1::StorageClass,
        storage::v1::CSIDriver,
        storage::v1::CSINode,
        storage::v1::CSIStorageCapacity,
        storage::v1::VolumeAttachment,
        certificates::v1::CertificateSigningRequest,
        flowcontrol::v1::FlowSchema,
        flowcontrol::v1::PriorityLevelConfiguration,
        admissionregistration::v1::ValidatingWebhookConfiguration,
        admissionregistration::v1::MutatingWebhookConfiguration,
        admissionregistration::v1::ValidatingAdmissionPolicy,
        admissionregistration::v1::ValidatingAdmissionPolicyBinding,
        apiextensions::CustomResourceDefinition,
        apiregistration::APIService,
    ];
    // Each kind's schema names its group-version-kind, as kube-apiserver's do: kubectl
    // explain finds a kind's schema by it.
    for ((group, version, kind), name) in &catalog.kinds {
        if let Some(s) = catalog.schemas.get_mut(name) {
            // k8s-openapi requires `metadata` (its Rust field is not optional);
            // kube-apiserver's schemas do not.
            if let Some(r) = s.get_mut("required").and_then(Value::as_array_mut) {
                r.retain(|f| f != "metadata");
                if r.is_empty() {
                    s.as_object_mut().map(|m| m.remove("required"));
                }
            }
            s["x-kubernetes-group-version-kind"] =
                json!([{"group": group, "version": version, "kind": kind}]);
        }
    }
    catalog
});

/// The fields of a built-in object that its kind's schema does not declare (`.spec.x`,
/// `.spec.containers[0].y`), for `fieldValidation=Strict`; `None` for a kind k8s-openapi does
/// not describe.
pub fn unknown_builtin_fields(
    group: &str,
    version: &str,
    kind: &str,
    obj: &Value,
) -> Option<Vec<String>> {
    let key = (group.to_string(), version.to_string(), kind.to_string());
    let schema = CATALOG.schemas.get(CATALOG.kinds.get(&key)?)?;
    let mut out = Vec::new();
    if let Some(m) = obj.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, v) in m {
            match props.and_then(|p| p.get(k)) {
                Some(s) => unknown_in(s, v, &format!(".{k}"), &mut out, 0),
                None => out.push(format!(".{k}")),
            }
        }
    }
    Some(out)
}

/// A schema with its `$ref` (or `allOf: [{$ref}]`) followed.
fn resolved(schema: &Value) -> &Value {
    let r = schema
        .get("$ref")
        .or_else(|| schema.pointer("/allOf/0/$ref"));
    r.and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(SCHEMAS))
        .and_then(|name| CATALOG.schemas.get(name))
        .unwrap_or(schema)
}

fn unknown_in(schema: &Value, v: &Value, path: &str, out: &mut Vec<String>, depth: usize) {
    // Deep enough for any object; recursive schemas (JSONSchemaProps) end here.
    if depth > 64 {
        return;
    }
    let schema = resolved(schema);
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return;
    }
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, child) in m {
                    match props.get(k) {
                        Some(s) => unknown_in(s, child, &format!("{path}.{k}"), out, depth + 1),
                        None => out.push(format!("{path}.{k}")),
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, child) in m {
                    unknown_in(ap, child, &format!("{path}.{k}"), out, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    unknown_in(s, item, &format!("{path}[{i}]"), out, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// The document path of a group-version: `api/v1`, `apis/apps/v1`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Every served group-version and its resource types.
fn group_versions(types: &[Arc<ResourceType>]) -> BTreeMap<String, Vec<(&ResourceType, &str)>> {
    let mut gvs: BTreeMap<String, Vec<(&ResourceType, &str)>> = BTreeMap::new();
    for rt in types {
        for v in &rt.versions {
            gvs.entry(gv_path(&rt.group, &v.name))
                .or_default()
                .push((rt, v.name.as_str()));
        }
    }
    gvs
}

/// `GET /openapi/v3`: each group-version with the URL of its document, whose `hash` changes
/// when the document does.
pub fn index(types: &[Arc<ResourceType>]) -> Value {
    let paths: Map<String, Value> = group_versions(types)
        .into_iter()
        .map(|(path, rts)| {
            // What the document is made of (not the document: the index is cheap).
            let mut hasher = Sha512::new();
            for (rt, version) in &rts {
                let schema = rt
                    .versions
                    .iter()
                    .find(|v| v.name == *version)
                    .map(|v| &v.schema);
                hasher.update(
                    serde_json::to_vec(&json!([
                        rt.kind,
                        rt.plural,
                        rt.namespaced,
                        rt.status_subresource,
                        schema
                    ]))
                    .unwrap_or_default(),
                );
            }
            let hash = hasher.finalize();
            let hex: String = hash.iter().map(|b| format!("{b:02X}")).collect();
            (
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hex}")}),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// `GET /openapi/v3/<path>` (`api/v1`, `apis/apps/v1`): the group-version's document, or
/// `None` when it is not served.
pub fn document(types: &[Arc<ResourceType>], path: &str) -> Option<Value> {
    let gvs = group_versions(types);
    gvs.get(path.trim_matches('/')).map(|rts| document_of(rts))
}

fn document_of(rts: &[(&ResourceType, &str)]) -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    let mut custom = false;
    for (rt, version) in rts {
        let Some((kind_schema, list_schema)) = schemas_of(rt, version, &mut schemas) else {
            continue;
        };
        custom |= rt.custom;
        add_paths(&mut paths, rt, version, &kind_schema, &list_schema);
    }
    // Everything the kinds refer to.
    let mut todo: Vec<String> = schemas.values().flat_map(refs).collect();
    todo.extend(
        [
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
            "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        ]
        .map(str::to_string),
    );
    let mut seen: BTreeSet<String> = schemas.keys().cloned().collect();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(s) = CATALOG.schemas.get(&name) {
            todo.extend(refs(s));
            schemas.insert(name, s.clone());
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {
            "title": if custom { "Kubernetes CRD Swagger" } else { "Kubernetes" },
            "version": if custom { "v0.1.0" } else { "v1.33.0" },
        },
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The names of the schemas a schema refers to.
fn refs(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![schema];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str)
                    && let Some(name) = r.strip_prefix(SCHEMAS)
                {
                    out.push(name.to_string());
                }
                stack.extend(m.values());
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    out
}

/// Add a kind's schema and its list's to `schemas`; their names.
fn schemas_of(
    rt: &ResourceType,
    version: &str,
    schemas: &mut Map<String, Value>,
) -> Option<(String, String)> {
    if !rt.custom {
        let key = (rt.group.clone(), version.to_string(), rt.kind.clone());
        let name = CATALOG.kinds.get(&key)?.clone();
        let list = format!("{name}List");
        schemas.insert(name.clone(), CATALOG.schemas.get(&name)?.clone());
        schemas.insert(list.clone(), list_schema(rt, version, &name));
        return Some((name, list));
    }
    let schema = rt
        .versions
        .iter()
        .find(|v| v.name == version)
        .and_then(|v| v.schema.clone())
        .unwrap_or_else(|| json!({"type": "object"}));
    let name = format!("{}.{version}.{}", reversed(&rt.group), rt.kind);
    let list = format!("{name}List");
    schemas.insert(name.clone(), custom_schema(rt, version, schema));
    schemas.insert(list.clone(), list_schema(rt, version, &name));
    Some((name, list))
}

/// The schema of a kind's list, as kube-apiserver publishes it.
fn list_schema(rt: &ResourceType, version: &str, item: &str) -> Value {
    json!({
        "description": format!("{}List is a list of {}", rt.kind, rt.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"description": API_VERSION_DOC, "type": "string"},
            "items": {
                "description": format!("List of {}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md", rt.plural),
                "type": "array",
                "items": {"$ref": format!("{SCHEMAS}{item}")},
            },
            "kind": {"description": KIND_DOC, "type": "string"},
            "metadata": {
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "allOf": [{"$ref": format!("{SCHEMAS}{LIST_META}")}],
            },
        },
        "x-kubernetes-group-version-kind": [{"group": rt.group, "kind": format!("{}List", rt.kind), "version": version}],
    })
}

/// `nodemaintenance.medik8s.io` → `io.medik8s.nodemaintenance`, as kube-apiserver names CRD
/// schemas.
fn reversed(group: &str) -> String {
    group.split('.').rev().collect::<Vec<_>>().join(".")
}

/// A CRD version's schema as kube-apiserver publishes it: `apiVersion`, `kind` and
/// `metadata` (a reference to `ObjectMeta`) filled in, and the group-version-kind.
fn custom_schema(rt: &ResourceType, version: &str, mut schema: Value) -> Value {
    if !schema.is_object() {
        schema = json!({"type": "object"});
    }
    let props = schema
        .as_object_mut()
        .expect("an object")
        .entry("properties")
        .or_insert_with(|| json!({}));
    if let Some(p) = props.as_object_mut() {
        p.insert(
            "apiVersion".into(),
            json!({"description": API_VERSION_DOC, "type": "string"}),
        );
        p.insert(
            "kind".into(),
            json!({"description": KIND_DOC, "type": "string"}),
        );
        p.insert(
            "metadata".into(),
            json!({
                "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
                "allOf": [{"$ref": format!("{SCHEMAS}{OBJECT_META}")}],
            }),
        );
    }
    schema["x-kubernetes-group-version-kind"] =
        json!([{"group": rt.group, "kind": rt.kind, "version": version}]);
    schema
}

fn query_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description,
        "schema": {"type": "string", "uniqueItems": true}})
}

/// The query parameters of writes: `dryRun`, `fieldManager`, `fieldValidation` (kubectl
/// looks for this one to decide that the server validates fields).
fn write_params() -> Vec<Value> {
    vec![
        query_param(
            "dryRun",
            "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
        ),
        query_param(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
        ),
        query_param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict.",
        ),
    ]
}

fn add_paths(
    paths: &mut Map<String, Value>,
    rt: &ResourceType,
    version: &str,
    kind_schema: &str,
    list_schema: &str,
) {
    let prefix = format!("/{}", gv_path(&rt.group, version));
    let gvk = json!({"group": rt.group, "version": version, "kind": rt.kind});
    let id = format!(
        "{}{}{}",
        rt.group
            .split('.')
            .next()
            .map(|g| {
                let mut c = g.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect::<String>())
                    .unwrap_or_default()
            })
            .unwrap_or_default(),
        version[..1].to_uppercase() + &version[1..],
        rt.kind
    );
    let body = |schema: &str| json!({"content": {"*/*": {"schema": {"$ref": format!("{SCHEMAS}{schema}")}}}, "required": true});
    let ok = |schema: &str| {
        json!({"200": {"description": "OK", "content": {
            "application/json": {"schema": {"$ref": format!("{SCHEMAS}{schema}")}},
            "application/yaml": {"schema": {"$ref": format!("{SCHEMAS}{schema}")}}}},
            "401": {"description": "Unauthorized"}})
    };
    let op = |verb: &str, action: &str, description: String, params: Vec<Value>, schema: &str| {
        let mut o = json!({
            "tags": [format!("{}_{version}", rt.group)],
            "description": description,
            "operationId": format!("{verb}{id}"),
            "parameters": params,
            "responses": ok(schema),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        });
        if matches!(action, "post" | "put" | "patch") {
            o["requestBody"] = if action == "patch" {
                body("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")
            } else {
                body(kind_schema)
            };
        }
        o
    };
    let base = if rt.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural)
    } else {
        format!("{prefix}/{}", rt.plural)
    };
    let mut scope_params = vec![];
    if rt.namespaced {
        scope_params.push(json!({"name": "namespace", "in": "path", "required": true,
            "description": "object name and auth scope, such as for teams and projects",
            "schema": {"type": "string", "uniqueItems": true}}));
    }
    let list_params = vec![
        query_param(
            "labelSelector",
            "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
        ),
        query_param(
            "fieldSelector",
            "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
        ),
        query_param(
            "limit",
            "limit is a maximum number of responses to return for a list call.",
        ),
        query_param(
            "continue",
            "The continue option should be set when retrieving more results from the server.",
        ),
        query_param(
            "resourceVersion",
            "resourceVersion sets a constraint on what resource versions a request may be served from.",
        ),
        query_param(
            "watch",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
        ),
    ];
    paths.insert(
        base.clone(),
        json!({
            "get": op("list", "list", format!("list or watch objects of kind {}", rt.kind), list_params.clone(), list_schema),
            "post": op("create", "post", format!("create a {}", rt.kind), write_params(), kind_schema),
            "delete": op("deletecollection", "deletecollection", format!("delete collection of {}", rt.kind), vec![], "io.k8s.apimachinery.pkg.apis.meta.v1.Status"),
            "parameters": scope_params,
        }),
    );
    let mut item_params = scope_params.clone();
    item_params.insert(
        0,
        json!({"name": "name", "in": "path", "required": true,
            "description": format!("name of the {}", rt.kind),
            "schema": {"type": "string", "uniqueItems": true}}),
    );
    let mut patch_params = write_params();
    patch_params.push(query_param(
        "force",
        "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people.",
    ));
    paths.insert(
        format!("{base}/{{name}}"),
        json!({
            "get": op("read", "get", format!("read the specified {}", rt.kind), vec![], kind_schema),
            "put": op("replace", "put", format!("replace the specified {}", rt.kind), write_params(), kind_schema),
            "patch": op("patch", "patch", format!("partially update the specified {}", rt.kind), patch_params.clone(), kind_schema),
            "delete": op("delete", "delete", format!("delete a {}", rt.kind), vec![query_param("dryRun", "When present, indicates that modifications should not be persisted.")], "io.k8s.apimachinery.pkg.apis.meta.v1.Status"),
            "parameters": item_params.clone(),
        }),
    );
    if rt.status_subresource {
        paths.insert(
            format!("{base}/{{name}}/status"),
            json!({
                "get": op("read", "get", format!("read status of the specified {}", rt.kind), vec![], kind_schema),
                "put": op("replace", "put", format!("replace status of the specified {}", rt.kind), write_params(), kind_schema),
                "patch": op("patch", "patch", format!("partially update status of the specified {}", rt.kind), patch_params, kind_schema),
                "parameters": item_params,
            }),
        );
    }
    if rt.namespaced {
        paths.insert(
            format!("{prefix}/{}", rt.plural),
            json!({"get": op("list", "list", format!("list or watch objects of kind {}", rt.kind), list_params, list_schema)}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> Vec<Arc<ResourceType>> {
        let mut t: Vec<Arc<ResourceType>> = super::super::resources::builtins()
            .into_iter()
            .map(Arc::new)
            .collect();
        let crd: Value = serde_yaml::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/crds/nodemaintenances.nodemaintenance.medik8s.io.yaml"
            ))
            .unwrap(),
        )
        .unwrap();
        t.push(Arc::new(super::super::resources::from_crd(&crd).unwrap()));
        t
    }

    #[test]
    fn strict_validation_of_built_ins_names_unknown_fields_at_any_depth() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b"}, "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "i", "imagen": "x",
                "resources": {"limits": {"cpu": "1"}}}]}});
        assert_eq!(
            unknown_builtin_fields("", "v1", "Pod", &pod).unwrap(),
            vec![".metadata.bogus", ".spec.containers[0].imagen"]
        );
        let ok = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"k": "v"}});
        assert!(
            unknown_builtin_fields("", "v1", "ConfigMap", &ok)
                .unwrap()
                .is_empty()
        );
        assert!(unknown_builtin_fields("x.io", "v1", "Thing", &ok).is_none());
    }

    #[test]
    fn the_index_lists_built_in_and_custom_group_versions_with_a_hash() {
        let idx = index(&types());
        let url = idx["paths"]["apis/nodemaintenance.medik8s.io/v1beta1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/nodemaintenance.medik8s.io/v1beta1?hash="));
        assert!(idx["paths"]["api/v1"].is_object());
        assert!(idx["paths"]["apis/coordination.k8s.io/v1"].is_object());
    }

    #[test]
    fn a_crd_document_has_its_schema_with_object_meta_and_a_validating_patch() {
        let doc = document(&types(), "apis/nodemaintenance.medik8s.io/v1beta1").unwrap();
        let s = &doc["components"]["schemas"];
        let nm = &s["io.medik8s.nodemaintenance.v1beta1.NodeMaintenance"];
        assert!(nm["properties"]["spec"]["properties"]["nodeName"].is_object());
        assert_eq!(
            nm["x-kubernetes-group-version-kind"][0]["kind"],
            "NodeMaintenance"
        );
        assert!(s[OBJECT_META]["properties"]["labels"].is_object());
        // Everything referred to is in the document.
        for name in refs(s) {
            assert!(s.get(&name).is_some(), "{name} is referred to and missing");
        }
        let patch = &doc["paths"]["/apis/nodemaintenance.medik8s.io/v1beta1/nodemaintenances/{name}"]
            ["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "NodeMaintenance"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
    }

    #[test]
    fn a_built_in_document_has_k8s_openapi_schemas_with_their_kinds() {
        let doc = document(&types(), "api/v1").unwrap();
        let s = &doc["components"]["schemas"];
        assert_eq!(
            s["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"][0]["kind"],
            "Pod"
        );
        assert!(s["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"].is_object());
        for name in refs(s) {
            assert!(s.get(&name).is_some(), "{name} is referred to and missing");
        }
        assert!(doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"].is_object());
        assert!(document(&types(), "apis/nothing/v1").is_none());
    }
}
