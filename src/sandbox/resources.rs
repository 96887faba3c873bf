//! The resource types the sandbox serves: the built-in kinds and those of the CRDs applied to
//! it. Pure data.

use serde_json::Value;

/// A printer column of a CRD version (`additionalPrinterColumns`).
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// `format`, if any.
    pub format: String,
    /// Description.
    pub description: String,
    /// Priority (0 shows by default).
    pub priority: i64,
    /// JSONPath (`.spec.x`, with filters).
    pub json_path: String,
}

/// One served version of a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// `v1`, `v1beta1`...
    pub name: String,
    /// The version's `openAPIV3Schema` (CRDs only).
    pub schema: Option<Value>,
    /// Printer columns (CRDs only).
    pub printer_columns: Vec<PrinterColumn>,
}

/// A resource type.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    /// API group ("" for core).
    pub group: String,
    /// Served versions, the preferred (storage) one first.
    pub versions: Vec<Version>,
    /// Plural resource name.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`po`, `nm`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Has a `status` subresource.
    pub status_subresource: bool,
    /// Defined by a CRD (validated against its schema, merge-patch only).
    pub custom: bool,
    /// For a second view of another resource's store (events.k8s.io events): that resource's
    /// group.
    pub stored_as: Option<String>,
}

impl ResourceType {
    /// The preferred version.
    pub fn preferred_version(&self) -> &str {
        self.versions
            .first()
            .map(|v| v.name.as_str())
            .unwrap_or("v1")
    }

    /// `apiVersion` for a version (`v1` or `apps/v1`).
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// `pods` or `deployments.apps`, as used in messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Pod` or `MaintenanceWindow.nodemaintenance.medik8s.io`, as used in 422 messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// A version, if served.
    pub fn version(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.name == name)
    }

    /// The verbs, for discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// Does kube-apiserver keep `metadata.generation` for this resource? Custom resources,
    /// workloads, PDBs, pods and CRDs have one; namespaces, nodes, leases and events do not.
    pub fn has_generation(&self) -> bool {
        self.custom
            || matches!(
                self.group.as_str(),
                "apps" | "policy" | "apiextensions.k8s.io"
            )
            || (self.group.is_empty() && self.plural == "pods")
    }

    /// Does an update (PUT) of a missing name create the object? True for leases and events.
    pub fn allows_create_on_update(&self) -> bool {
        matches!(
            (self.store_key().0.as_str(), self.plural.as_str()),
            ("coordination.k8s.io", "leases") | ("", "events")
        )
    }

    /// Must an update carry `metadata.resourceVersion`? True for leases and custom resources.
    pub fn requires_resource_version(&self) -> bool {
        self.custom || (self.group == "coordination.k8s.io" && self.plural == "leases")
    }

    /// The store key of this type: (group, plural) of the resource that holds its objects.
    pub fn store_key(&self) -> (String, String) {
        (
            self.stored_as.clone().unwrap_or_else(|| self.group.clone()),
            self.plural.clone(),
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    all: bool,
    status: bool,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        versions: vec![Version {
            name: version.into(),
            schema: None,
            printer_columns: vec![],
        }],
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: if all { vec!["all".into()] } else { vec![] },
        status_subresource: status,
        custom: false,
        stored_as: None,
    }
}

/// The built-in kinds.
pub fn builtins() -> Vec<ResourceType> {
    let mut events_new = builtin(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        true,
        &[],
        false,
        false,
    );
    events_new.stored_as = Some(String::new());
    vec![
        builtin("", "v1", "nodes", "Node", false, &["no"], false, true),
        builtin("", "v1", "pods", "Pod", true, &["po"], true, true),
        builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            false,
            true,
        ),
        builtin("", "v1", "events", "Event", true, &["ev"], false, false),
        events_new,
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
            false,
        ),
        builtin(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            &["pdb"],
            false,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "daemonsets",
            "DaemonSet",
            true,
            &["ds"],
            true,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            &["rs"],
            true,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "statefulsets",
            "StatefulSet",
            true,
            &["sts"],
            true,
            true,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            false,
            true,
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            false,
            &[],
            false,
            false,
        ),
    ]
}

/// Why a CRD cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CrdError {
    /// The offending field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// The resource type a CRD defines.
pub fn from_crd(crd: &Value) -> Result<ResourceType, CrdError> {
    let err = |field: &str, message: &str| CrdError {
        field: field.into(),
        message: message.into(),
    };
    let spec = crd
        .get("spec")
        .ok_or_else(|| err("spec", "Required value"))?;
    let s = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let strs = |v: &Value, p: &str| -> Vec<String> {
        v.pointer(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let group = s(spec, "/group");
    let plural = s(spec, "/names/plural");
    let kind = s(spec, "/names/kind");
    if group.is_empty() {
        return Err(err("spec.group", "Required value"));
    }
    if plural.is_empty() {
        return Err(err("spec.names.plural", "Required value"));
    }
    if kind.is_empty() {
        return Err(err("spec.names.kind", "Required value"));
    }
    let name = s(crd, "/metadata/name");
    if name != format!("{plural}.{group}") {
        return Err(err(
            "metadata.name",
            &format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let mut versions = Vec::new();
    let mut status = false;
    let mut storage_first = None;
    for (i, v) in spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        if v.pointer("/subresources/status").is_some() {
            status = true;
        }
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            storage_first = Some(i);
        }
        let cols = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|c| PrinterColumn {
                        name: s(c, "/name"),
                        type_: s(c, "/type"),
                        format: s(c, "/format"),
                        description: s(c, "/description"),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        json_path: s(c, "/jsonPath"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        versions.push((
            i,
            Version {
                name: s(v, "/name"),
                schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                printer_columns: cols,
            },
        ));
    }
    if versions.is_empty() {
        return Err(err(
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        ));
    }
    // Preferred first: the storage version.
    versions.sort_by_key(|(i, _)| Some(*i) != storage_first);
    let scope = s(spec, "/scope");
    Ok(ResourceType {
        group,
        versions: versions.into_iter().map(|(_, v)| v).collect(),
        singular: {
            let s = s(spec, "/names/singular");
            if s.is_empty() { kind.to_lowercase() } else { s }
        },
        plural,
        kind,
        namespaced: scope != "Cluster",
        short_names: strs(spec, "/names/shortNames"),
        categories: strs(spec, "/names/categories"),
        status_subresource: status,
        custom: true,
        stored_as: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmo_crds_become_resource_types_with_names_scope_and_columns() {
        for crd in crate::api::crds() {
            let v = serde_json::to_value(&crd).unwrap();
            let rt = from_crd(&v).unwrap();
            assert_eq!(rt.group, "nodemaintenance.medik8s.io");
            assert!(rt.status_subresource);
            assert!(!rt.versions[0].printer_columns.is_empty());
            assert!(rt.versions[0].schema.is_some());
        }
    }

    #[test]
    fn a_crd_whose_name_does_not_match_is_refused() {
        let v = serde_json::json!({"metadata": {"name": "x"}, "spec": {"group": "g.io",
            "names": {"plural": "ws", "kind": "W"}, "scope": "Namespaced", "versions": [{"name": "v1", "served": true, "storage": true}]}});
        assert_eq!(from_crd(&v).unwrap_err().field, "metadata.name");
    }
}
