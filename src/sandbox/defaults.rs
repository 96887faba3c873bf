//! The defaults kube-apiserver gives built-in objects, so that clients read back what a real
//! cluster would show them. Pure.
//!
//! Two layers, as in kube-apiserver:
//! - [`scheme_defaults`]: the API scheme's defaulting (`SetDefaults_*`), run on every object the
//!   server decodes, on create and on update, so it also shows in `managedFields`;
//! - [`admit_pod`]: what the default admission plugins add to a new pod (ServiceAccount,
//!   DefaultTolerationSeconds, Priority).
//!
//! Left out on purpose: the ServiceAccount plugin's token volume (the sandbox serves no
//! ServiceAccounts) and TaintNodesByCondition's `node.kubernetes.io/not-ready` taint on new
//! nodes (the sandbox has no node lifecycle controller to lift it).

use serde_json::{Map, Value, json};

/// Fill the scheme defaults of an object of `group`/`plural`.
pub fn scheme_defaults(group: &str, plural: &str, obj: &mut Value) {
    match (group, plural) {
        ("", "pods") => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec(spec);
                set_absent(spec, "enableServiceLinks", json!(true));
            }
        }
        ("", "namespaces") => {
            // The NamespaceDefaultLabelName feature: every namespace is labelled with its name.
            if let Some(name) = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string)
            {
                let labels = entry(&mut obj["metadata"], "labels");
                labels["kubernetes.io/metadata.name"] = json!(name);
            }
        }
        ("apps", "deployments") => {
            let spec = entry(obj, "spec");
            set_absent(spec, "replicas", json!(1));
            set_absent(spec, "revisionHistoryLimit", json!(10));
            set_absent(spec, "progressDeadlineSeconds", json!(600));
            let strategy = entry(spec, "strategy");
            set_absent(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let rolling = entry(strategy, "rollingUpdate");
                set_absent(rolling, "maxUnavailable", json!("25%"));
                set_absent(rolling, "maxSurge", json!("25%"));
            }
            template(spec);
        }
        ("apps", "replicasets") => {
            let spec = entry(obj, "spec");
            set_absent(spec, "replicas", json!(1));
            template(spec);
        }
        ("apps", "statefulsets") => {
            let spec = entry(obj, "spec");
            set_absent(spec, "replicas", json!(1));
            set_absent(spec, "podManagementPolicy", json!("OrderedReady"));
            set_absent(spec, "revisionHistoryLimit", json!(10));
            let strategy = entry(spec, "updateStrategy");
            set_absent(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                set_absent(entry(strategy, "rollingUpdate"), "partition", json!(0));
            }
            template(spec);
        }
        ("apps", "daemonsets") => {
            let spec = entry(obj, "spec");
            set_absent(spec, "revisionHistoryLimit", json!(10));
            let strategy = entry(spec, "updateStrategy");
            set_absent(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let rolling = entry(strategy, "rollingUpdate");
                set_absent(rolling, "maxUnavailable", json!(1));
                set_absent(rolling, "maxSurge", json!(0));
            }
            template(spec);
        }
        ("", "services") => super::workloads::service_defaults(obj),
        _ => {}
    }
}

/// Fields Go serialises even when unset, and empty ones it leaves out, so that objects read
/// back as from kube-apiserver: a pod's unbound `nodeName` is omitted, its conditions'
/// timestamps are `null`; a new PDB's status counts are 0. Applied after every write.
pub fn wire_shape(group: &str, plural: &str, obj: &mut Value) {
    match (group, plural) {
        ("", "pods") => {
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
                && spec.get("nodeName").is_some_and(|n| n == "")
            {
                spec.remove("nodeName");
            }
            for c in obj
                .pointer_mut("/status/conditions")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(m) = c.as_object_mut() {
                    for k in ["lastProbeTime", "lastTransitionTime"] {
                        m.entry(k).or_insert(Value::Null);
                    }
                }
            }
        }
        ("policy", "poddisruptionbudgets") => {
            let status = entry(obj, "status");
            for k in [
                "disruptionsAllowed",
                "currentHealthy",
                "desiredHealthy",
                "expectedPods",
            ] {
                set_absent(status, k, json!(0));
            }
        }
        _ => {}
    }
}

/// What the default admission plugins add to a pod being created: its service account
/// (ServiceAccount), tolerations of not-ready and unreachable nodes for 300 s
/// (DefaultTolerationSeconds) and its priority (Priority).
pub fn admit_pod(pod: &mut Value) {
    let spec = entry(pod, "spec");
    set_absent(spec, "serviceAccountName", json!("default"));
    let account = spec["serviceAccountName"].clone();
    set_absent(spec, "serviceAccount", account);
    set_absent(spec, "priority", json!(0));
    set_absent(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    let tolerations = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut added = tolerations.clone();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = tolerations.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str).unwrap_or_default();
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or_default();
            (k.is_empty() || k == key) && (effect.is_empty() || effect == "NoExecute")
        });
        if !tolerated {
            added.push(
                json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": 300}),
            );
        }
    }
    spec["tolerations"] = Value::Array(added);
}

/// The quality of service class of a pod, from its containers' requests and limits.
pub fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array))
        .flatten()
        .collect();
    let set = |c: &Value, what: &str, resource: &str| {
        c.pointer(&format!("/resources/{what}/{resource}"))
            .is_some()
    };
    let any = containers.iter().any(|c| {
        ["requests", "limits"].iter().any(|w| {
            c.pointer(&format!("/resources/{w}"))
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
        })
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            set(c, "limits", r)
                && (!set(c, "requests", r)
                    || c.pointer(&format!("/resources/requests/{r}"))
                        == c.pointer(&format!("/resources/limits/{r}")))
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn template(spec: &mut Value) {
    if let Some(pod_spec_value) = spec.pointer_mut("/template/spec") {
        pod_spec(pod_spec_value);
    }
}

/// `SetDefaults_PodSpec` and `SetDefaults_Container`.
fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_absent(spec, "dnsPolicy", json!("ClusterFirst"));
    set_absent(spec, "restartPolicy", json!("Always"));
    set_absent(spec, "terminationGracePeriodSeconds", json!(30));
    set_absent(spec, "securityContext", json!({}));
    set_absent(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            container(c);
        }
    }
}

fn container(c: &mut Value) {
    if !c.is_object() {
        return;
    }
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    let policy = if image_is_latest(image) {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_absent(c, "imagePullPolicy", json!(policy));
    set_absent(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_absent(c, "terminationMessagePolicy", json!("File"));
    set_absent(c, "resources", json!({}));
}

/// An image without a tag or with `:latest` is pulled always (a digest pins it).
fn image_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

/// The object under `key`, created empty when absent (or not an object).
fn entry<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    &mut v[key]
}

fn set_absent(v: &mut Value, key: &str, value: Value) {
    if let Some(m) = v.as_object_mut()
        && m.get(key).is_none_or(Value::is_null)
    {
        m.insert(key.to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn a_pod_gets_the_scheme_defaults_of_its_spec_and_containers() {
        let mut p = pod(json!({"containers": [{"name": "a", "image": "pause:3.10"},
            {"name": "b", "image": "busybox", "imagePullPolicy": "Never"}]}));
        scheme_defaults("", "pods", &mut p);
        assert_eq!(p["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(p["spec"]["schedulerName"], "default-scheduler");
        assert_eq!(p["spec"]["securityContext"], json!({}));
        assert_eq!(p["spec"]["enableServiceLinks"], true);
        let a = &p["spec"]["containers"][0];
        assert_eq!(a["imagePullPolicy"], "IfNotPresent");
        assert_eq!(a["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(a["terminationMessagePolicy"], "File");
        assert_eq!(a["resources"], json!({}));
        assert_eq!(p["spec"]["containers"][1]["imagePullPolicy"], "Never");
    }

    #[test]
    fn images_without_a_tag_or_tagged_latest_are_pulled_always() {
        for (image, latest) in [
            ("busybox", true),
            ("busybox:latest", true),
            ("registry:5000/busybox", true),
            ("registry:5000/busybox:1.0", false),
            ("busybox@sha256:abc", false),
        ] {
            assert_eq!(image_is_latest(image), latest, "{image}");
        }
    }

    #[test]
    fn a_set_value_is_never_replaced() {
        let mut p = pod(
            json!({"dnsPolicy": "None", "terminationGracePeriodSeconds": 0,
            "containers": []}),
        );
        scheme_defaults("", "pods", &mut p);
        assert_eq!(p["spec"]["dnsPolicy"], "None");
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 0);
    }

    #[test]
    fn workloads_get_their_strategies_and_template_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        scheme_defaults("apps", "deployments", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
        let mut ds = json!({"spec": {"updateStrategy": {"type": "OnDelete"}}});
        scheme_defaults("apps", "daemonsets", &mut ds);
        assert_eq!(ds["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
    }

    #[test]
    fn namespaces_are_labelled_with_their_name() {
        let mut n = json!({"metadata": {"name": "team-a"}});
        scheme_defaults("", "namespaces", &mut n);
        assert_eq!(
            n["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team-a"
        );
    }

    #[test]
    fn admission_adds_the_service_account_priority_and_missing_tolerations() {
        let mut p = pod(json!({"containers": []}));
        admit_pod(&mut p);
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["priority"], 0);
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 2);
        // A toleration of every taint covers both.
        let mut everything = pod(json!({"tolerations": [{"operator": "Exists"}]}));
        admit_pod(&mut everything);
        assert_eq!(
            everything["spec"]["tolerations"],
            json!([{"operator": "Exists"}])
        );
    }

    #[test]
    fn the_qos_class_follows_requests_and_limits() {
        let with = |resources: Value| json!({"spec": {"containers": [{"name": "a", "resources": resources}]}});
        assert_eq!(qos_class(&with(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&with(json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&with(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
    }
}
