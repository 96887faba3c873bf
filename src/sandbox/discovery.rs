//! Discovery documents: `/version`, legacy discovery (`/api`, `/apis`, `/api/v1`,
//! `/apis/G/V`) and aggregated discovery v2, as kubectl and kube-rs read them. Pure.

use super::resources::ResourceType;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The content type aggregated discovery must be sent with.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// `/version`: Kubernetes 1.32 (the kubectl dispatcher picks its client from the minor).
pub fn version() -> Value {
    json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "nmo-sandbox",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23.4",
        "compiler": "gc", "platform": "linux/amd64"})
}

/// Does an Accept header ask for aggregated discovery?
pub fn wants_aggregated(accept: &str) -> bool {
    accept.contains("as=APIGroupDiscoveryList") && accept.contains("v=v2")
}

/// `/api`.
pub fn legacy_api(server: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}]})
}

fn groups(types: &[Arc<ResourceType>]) -> BTreeMap<String, Vec<String>> {
    let mut g: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        let versions = g.entry(t.group.clone()).or_default();
        for v in &t.versions {
            if !versions.contains(&v.name) {
                versions.push(v.name.clone());
            }
        }
    }
    g
}

/// `/apis`.
pub fn legacy_groups(types: &[Arc<ResourceType>]) -> Value {
    let items: Vec<Value> = groups(types)
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": items})
}

/// `/apis/G`.
pub fn legacy_group(types: &[Arc<ResourceType>], group: &str) -> Option<Value> {
    let vs = groups(types).remove(group)?;
    let versions: Vec<Value> = vs
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    Some(
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
        "preferredVersion": versions[0]}),
    )
}

/// `/api/v1` or `/apis/G/V`.
pub fn legacy_resources(types: &[Arc<ResourceType>], group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for t in types
        .iter()
        .filter(|t| t.group == group && t.version(version).is_some())
    {
        let mut r = json!({"name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
            "kind": t.kind, "verbs": t.verbs()});
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.status_subresource {
            resources.push(
                json!({"name": format!("{}/status", t.plural), "singularName": "",
                "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
        if group.is_empty() && t.plural == "pods" {
            resources.push(
                json!({"name": "pods/eviction", "singularName": "", "namespaced": true,
                "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}),
            );
            resources.push(
                json!({"name": "pods/binding", "singularName": "", "namespaced": true,
                "kind": "Binding", "verbs": ["create"]}),
            );
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// Aggregated discovery for `/api` (core only) or `/apis` (every group).
pub fn aggregated(types: &[Arc<ResourceType>], core: bool) -> Value {
    let mut by_group: BTreeMap<String, BTreeMap<String, Vec<Value>>> = BTreeMap::new();
    for t in types.iter().filter(|t| t.group.is_empty() == core) {
        for v in &t.versions {
            let mut subs = Vec::new();
            if t.status_subresource {
                subs.push(json!({"subresource": "status",
                    "responseKind": {"group": t.group, "version": v.name, "kind": t.kind},
                    "verbs": ["get", "patch", "update"]}));
            }
            if t.group.is_empty() && t.plural == "pods" {
                subs.push(json!({"subresource": "eviction",
                    "responseKind": {"group": "policy", "version": "v1", "kind": "Eviction"},
                    "verbs": ["create"]}));
                subs.push(json!({"subresource": "binding",
                    "responseKind": {"group": "", "version": "v1", "kind": "Binding"},
                    "verbs": ["create"]}));
            }
            let mut r = json!({"resource": t.plural,
                "responseKind": {"group": t.group, "version": v.name, "kind": t.kind},
                "scope": if t.namespaced {"Namespaced"} else {"Cluster"},
                "singularResource": t.singular, "verbs": t.verbs()});
            if !t.short_names.is_empty() {
                r["shortNames"] = json!(t.short_names);
            }
            if !t.categories.is_empty() {
                r["categories"] = json!(t.categories);
            }
            if !subs.is_empty() {
                r["subresources"] = json!(subs);
            }
            by_group
                .entry(t.group.clone())
                .or_default()
                .entry(v.name.clone())
                .or_default()
                .push(r);
        }
    }
    let items: Vec<Value> = by_group
        .into_iter()
        .map(|(g, versions)| {
            // Preferred version first: the first version any type lists.
            let order: Vec<String> = types
                .iter()
                .filter(|t| t.group == g)
                .flat_map(|t| t.versions.iter().map(|v| v.name.clone()))
                .fold(Vec::new(), |mut acc, v| {
                    if !acc.contains(&v) {
                        acc.push(v);
                    }
                    acc
                });
            let vs: Vec<Value> = order
                .iter()
                .filter_map(|v| {
                    versions
                        .get(v)
                        .map(|rs| json!({"version": v, "resources": rs, "freshness": "Current"}))
                })
                .collect();
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": vs})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::resources::builtins;

    fn types() -> Vec<Arc<ResourceType>> {
        builtins().into_iter().map(Arc::new).collect()
    }

    #[test]
    fn core_v1_lists_pods_eviction_as_a_policy_eviction() {
        let v = legacy_resources(&types(), "", "v1").unwrap();
        let ev = v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods/eviction")
            .unwrap();
        assert_eq!(ev["group"], "policy");
        assert_eq!(ev["kind"], "Eviction");
    }

    #[test]
    fn aggregated_discovery_separates_core_from_groups() {
        let core = aggregated(&types(), true);
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let groups = aggregated(&types(), false);
        let names: Vec<_> = groups["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].clone())
            .collect();
        assert!(names.contains(&json!("apps")) && names.contains(&json!("events.k8s.io")));
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json"));
        assert_eq!(version()["minor"], "32");
    }
}
