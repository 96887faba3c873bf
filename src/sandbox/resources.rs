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
    /// The verbs served.
    pub verbs: Verbs,
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
        match self.verbs {
            Verbs::All => {}
            Verbs::CreateOnly => return vec!["create"],
            Verbs::ReadOnly => return vec!["get", "list"],
        }
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
                "apps" | "policy" | "apiextensions.k8s.io" | "batch" | "autoscaling"
            )
            || (self.group == "networking.k8s.io"
                && matches!(
                    self.plural.as_str(),
                    "ingresses" | "ingressclasses" | "networkpolicies"
                ))
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

/// What a client may do with a resource, for discovery and routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbs {
    /// The eight verbs of a stored resource.
    All,
    /// Only `create`: the review kinds (TokenReview, SubjectAccessReview...), answered at once
    /// and never stored.
    CreateOnly,
    /// Only `get` and `list` (ComponentStatus).
    ReadOnly,
}

/// The scope of a k8s-openapi resource type, as a constant.
trait ScopeKind {
    const NAMESPACED: bool;
}
impl ScopeKind for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl ScopeKind for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// One built-in kind, read from its k8s-openapi type: group, version, kind, plural, scope,
/// and whether its schema has a `status` (then kube-apiserver serves a status subresource).
fn from_openapi<T>(verbs: Verbs) -> ResourceType
where
    T: k8s_openapi::Resource + schemars::JsonSchema,
    T::Scope: ScopeKind,
{
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
    let has_status = schema.as_value().pointer("/properties/status").is_some();
    let (short_names, categories) = names_of(T::GROUP, T::URL_PATH_SEGMENT);
    ResourceType {
        group: T::GROUP.into(),
        versions: vec![Version {
            name: T::VERSION.into(),
            schema: None,
            printer_columns: vec![],
        }],
        plural: T::URL_PATH_SEGMENT.into(),
        singular: T::KIND.to_lowercase(),
        kind: T::KIND.into(),
        namespaced: <T::Scope as ScopeKind>::NAMESPACED,
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        categories: categories.iter().map(|s| s.to_string()).collect(),
        status_subresource: has_status && verbs == Verbs::All,
        custom: false,
        stored_as: None,
        verbs,
    }
}

/// Short names and categories, as kube-apiserver 1.32 declares them (k8s-openapi does not
/// carry them).
fn names_of(group: &str, plural: &str) -> (&'static [&'static str], &'static [&'static str]) {
    const ALL: &[&str] = &["all"];
    const EXT: &[&str] = &["api-extensions"];
    match (group, plural) {
        ("", "configmaps") => (&["cm"], &[]),
        ("", "endpoints") => (&["ep"], &[]),
        ("", "events") => (&["ev"], &[]),
        ("", "limitranges") => (&["limits"], &[]),
        ("", "namespaces") => (&["ns"], &[]),
        ("", "nodes") => (&["no"], &[]),
        ("", "persistentvolumeclaims") => (&["pvc"], &[]),
        ("", "persistentvolumes") => (&["pv"], &[]),
        ("", "pods") => (&["po"], ALL),
        ("", "replicationcontrollers") => (&["rc"], ALL),
        ("", "resourcequotas") => (&["quota"], &[]),
        ("", "serviceaccounts") => (&["sa"], &[]),
        ("", "services") => (&["svc"], ALL),
        ("", "componentstatuses") => (&["cs"], &[]),
        ("apps", "daemonsets") => (&["ds"], ALL),
        ("apps", "deployments") => (&["deploy"], ALL),
        ("apps", "replicasets") => (&["rs"], ALL),
        ("apps", "statefulsets") => (&["sts"], ALL),
        ("autoscaling", "horizontalpodautoscalers") => (&["hpa"], ALL),
        ("batch", "cronjobs") => (&["cj"], ALL),
        ("batch", "jobs") => (&[], ALL),
        ("certificates.k8s.io", "certificatesigningrequests") => (&["csr"], &[]),
        ("networking.k8s.io", "ingresses") => (&["ing"], &[]),
        ("networking.k8s.io", "networkpolicies") => (&["netpol"], &[]),
        ("policy", "poddisruptionbudgets") => (&["pdb"], &[]),
        ("scheduling.k8s.io", "priorityclasses") => (&["pc"], &[]),
        ("storage.k8s.io", "storageclasses") => (&["sc"], &[]),
        ("apiextensions.k8s.io", "customresourcedefinitions") => (&["crd", "crds"], EXT),
        ("admissionregistration.k8s.io", _) => (&[], EXT),
        ("apiregistration.k8s.io", "apiservices") => (&[], EXT),
        _ => (&[], &[]),
    }
}

/// Every GA resource of the pinned Kubernetes API (k8s-openapi `v1_33`), newest version per
/// group and kind. Subresource kinds (Binding, Eviction, Scale, TokenRequest) are served as
/// subresources, not listed here; alpha and beta versions are not served.
macro_rules! openapi_kinds {
    ($verbs:expr => $($t:ty),* $(,)?) => {
        vec![$(from_openapi::<$t>($verbs)),*]
    };
}

fn openapi_builtins() -> Vec<ResourceType> {
    use k8s_openapi::api::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;
    let mut all = openapi_kinds![Verbs::All =>
        core::v1::Node, core::v1::Pod, core::v1::Namespace, core::v1::Event,
        core::v1::ConfigMap, core::v1::Secret, core::v1::ServiceAccount, core::v1::Service,
        core::v1::Endpoints, core::v1::LimitRange, core::v1::ResourceQuota,
        core::v1::PersistentVolume, core::v1::PersistentVolumeClaim, core::v1::PodTemplate,
        core::v1::ReplicationController,
        events::v1::Event,
        coordination::v1::Lease,
        policy::v1::PodDisruptionBudget,
        apps::v1::DaemonSet, apps::v1::ReplicaSet, apps::v1::Deployment, apps::v1::StatefulSet,
        apps::v1::ControllerRevision,
        batch::v1::Job, batch::v1::CronJob,
        autoscaling::v2::HorizontalPodAutoscaler,
        rbac::v1::Role, rbac::v1::RoleBinding, rbac::v1::ClusterRole, rbac::v1::ClusterRoleBinding,
        networking::v1::Ingress, networking::v1::IngressClass, networking::v1::NetworkPolicy,
        networking::v1::IPAddress, networking::v1::ServiceCIDR,
        discovery::v1::EndpointSlice,
        scheduling::v1::PriorityClass,
        node::v1::RuntimeClass,
        storage::v1::StorageClass, storage::v1::CSIDriver, storage::v1::CSINode,
        storage::v1::CSIStorageCapacity, storage::v1::VolumeAttachment,
        certificates::v1::CertificateSigningRequest,
        flowcontrol::v1::FlowSchema, flowcontrol::v1::PriorityLevelConfiguration,
        admissionregistration::v1::ValidatingWebhookConfiguration,
        admissionregistration::v1::MutatingWebhookConfiguration,
        admissionregistration::v1::ValidatingAdmissionPolicy,
        admissionregistration::v1::ValidatingAdmissionPolicyBinding,
        apiextensions::CustomResourceDefinition,
        apiregistration::APIService,
    ];
    all.extend(openapi_kinds![Verbs::CreateOnly =>
        authentication::v1::TokenReview, authentication::v1::SelfSubjectReview,
        authorization::v1::SubjectAccessReview, authorization::v1::SelfSubjectAccessReview,
        authorization::v1::LocalSubjectAccessReview, authorization::v1::SelfSubjectRulesReview,
    ]);
    all.extend(openapi_kinds![Verbs::ReadOnly => core::v1::ComponentStatus]);
    for t in &mut all {
        // The two Event APIs are two views of one store (the core one).
        if t.group == "events.k8s.io" {
            t.stored_as = Some(String::new());
        }
    }
    all
}

static BUILTINS: std::sync::LazyLock<Vec<ResourceType>> =
    std::sync::LazyLock::new(openapi_builtins);

/// The built-in kinds (see [`openapi_builtins`]), computed once.
pub fn builtins() -> Vec<ResourceType> {
    BUILTINS.clone()
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
        verbs: Verbs::All,
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
