//! What a kubelet and the scheduler decide, as pure functions of plain objects: the status a
//! node and a running pod report, Ready and NotReady, reboots, and which node takes a pod.
//!
//! The sandbox's built-in kubelet (`crate::sandbox`) and the kubelet simulator that drives a
//! real API server ([`super::simulator`]) both use these, so the two act alike.

use serde_json::{Map, Value, json};

/// The kubelet version the simulated nodes report.
pub const KUBELET_VERSION: &str = "v1.32.0";

/// Is a node's Ready condition True?
pub fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// `status.nodeInfo.bootID`, or "".
pub fn boot_id(node: &Value) -> &str {
    node.pointer("/status/nodeInfo/bootID")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The status a kubelet reports for a running, Ready pod.
pub fn running_status(now: &str) -> Value {
    let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    json!({"phase": "Running", "startTime": now, "podIP": "10.0.0.1",
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")]})
}

/// The status a kubelet reports for a healthy node, with a new boot ID.
pub fn node_status(now: &str) -> Value {
    let cond = |t: &str, status: &str, reason: &str, msg: &str| {
        json!({"type": t, "status": status, "reason": reason, "message": msg,
            "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "nodeInfo": {"bootID": uuid::Uuid::new_v4().to_string(), "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION, "operatingSystem": "linux", "architecture": "amd64",
            "osImage": "nmo sandbox", "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.7.0",
            "machineID": "", "systemUUID": ""},
        "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
        "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
        "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
    })
}

/// A Ready node as a kubelet registers it: the given labels plus the well-known
/// `kubernetes.io/hostname` and `kubernetes.io/os`.
pub fn node_object(name: &str, labels: &Map<String, Value>, now: &str) -> Value {
    let mut l = labels.clone();
    l.entry("kubernetes.io/hostname").or_insert(json!(name));
    l.entry("kubernetes.io/os").or_insert(json!("linux"));
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": l},
        "spec": {}, "status": node_status(now)})
}

/// Mark a node object Ready or NotReady the way the kubelet and the node lifecycle controller
/// do (the condition, and the `node.kubernetes.io/unreachable` taint).
pub fn set_ready(node: &mut Value, ready: bool, now: &str) {
    set_ready_condition(node, ready, now);
    set_unreachable_taint(node, !ready, now);
}

/// The kubelet's half of [`set_ready`]: the Ready condition in `status`.
pub fn set_ready_condition(node: &mut Value, ready: bool, now: &str) {
    if !node.get("status").is_some_and(Value::is_object) {
        node["status"] = json!({});
    }
    if !node["status"]
        .get("conditions")
        .is_some_and(Value::is_array)
    {
        node["status"]["conditions"] = json!([]);
    }
    let conds = node["status"]["conditions"]
        .as_array_mut()
        .expect("made an array");
    let (status, reason, msg) = if ready {
        ("True", "KubeletReady", "kubelet is posting ready status")
    } else {
        (
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.",
        )
    };
    match conds
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
    {
        Some(c) => {
            if c.get("status").and_then(Value::as_str) != Some(status) {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["message"] = json!(msg);
            c["lastHeartbeatTime"] = json!(now);
        }
        None => conds.push(
            json!({"type": "Ready", "status": status, "reason": reason, "message": msg,
            "lastHeartbeatTime": now, "lastTransitionTime": now}),
        ),
    }
}

/// The node lifecycle controller's half of [`set_ready`]: the `unreachable` taint in `spec`
/// (and no `not-ready` one, which it replaces).
pub fn set_unreachable_taint(node: &mut Value, unreachable: bool, now: &str) {
    if !node.get("spec").is_some_and(Value::is_object) {
        node["spec"] = json!({});
    }
    let mut taints: Vec<Value> = node["spec"]
        .get("taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    taints.retain(|t| {
        !matches!(
            t.get("key").and_then(Value::as_str),
            Some("node.kubernetes.io/unreachable" | "node.kubernetes.io/not-ready")
        )
    });
    if unreachable {
        taints.push(json!({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": now}));
    }
    if taints.is_empty() {
        if let Some(s) = node["spec"].as_object_mut() {
            s.remove("taints");
        }
    } else {
        node["spec"]["taints"] = json!(taints);
    }
}

/// A reboot as the node reports it: a new boot ID, and Ready again.
pub fn reboot(node: &mut Value, now: &str) {
    if !node
        .pointer("/status/nodeInfo")
        .is_some_and(Value::is_object)
    {
        set_ready_condition(node, true, now);
        node["status"]["nodeInfo"] = json!({});
    }
    node["status"]["nodeInfo"]["bootID"] = json!(uuid::Uuid::new_v4().to_string());
    set_ready(node, true, now);
}

/// A node takes a new pod: Ready, not cordoned, not being deleted, no NoSchedule/NoExecute
/// taint the pod does not tolerate, and the pod's `nodeSelector` and required node affinity
/// match it.
pub fn node_schedulable_for(node: &Value, pod: &Value) -> bool {
    let tolerations = pod.pointer("/spec/tolerations").and_then(Value::as_array);
    // A cordon is the `unschedulable` taint to the scheduler: DaemonSet pods tolerate it.
    let cordon = json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"});
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true)
        && !tolerations.is_some_and(|ts| ts.iter().any(|tol| tolerates(tol, &cordon)))
    {
        return false;
    }
    if !node_ready(node) || node.pointer("/metadata/deletionTimestamp").is_some() {
        return false;
    }
    let taints_ok = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .map(|taints| {
            taints.iter().all(|t| {
                let effect = t.get("effect").and_then(Value::as_str).unwrap_or_default();
                if effect == "PreferNoSchedule" {
                    return true;
                }
                tolerations.is_some_and(|ts| ts.iter().any(|tol| tolerates(tol, t)))
            })
        })
        .unwrap_or(true);
    taints_ok && node_selected_by(node, pod)
}

fn tolerates(tol: &Value, taint: &Value) -> bool {
    let s = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let effect_ok = s(tol, "effect").is_empty() || s(tol, "effect") == s(taint, "effect");
    let key_ok = s(tol, "key").is_empty() || s(tol, "key") == s(taint, "key");
    let value_ok = s(tol, "operator") == "Exists" || s(tol, "value") == s(taint, "value");
    effect_ok && key_ok && value_ok
}

/// The pod's `spec.nodeSelector` and `requiredDuringSchedulingIgnoredDuringExecution` node
/// affinity (terms OR-ed, expressions and fields within a term AND-ed) match the node. The
/// DaemonSet controller pins its pods with `matchFields` on `metadata.name`.
pub fn node_selected_by(node: &Value, pod: &Value) -> bool {
    let labels = node.pointer("/metadata/labels").and_then(Value::as_object);
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    if let Some(sel) = pod.pointer("/spec/nodeSelector").and_then(Value::as_object)
        && !sel.iter().all(|(k, v)| label(k) == v.as_str())
    {
        return false;
    }
    let Some(terms) = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
    else {
        return true;
    };
    let name = node.pointer("/metadata/name").and_then(Value::as_str);
    terms.iter().any(|term| {
        let exprs = term.get("matchExpressions").and_then(Value::as_array);
        let fields = term.get("matchFields").and_then(Value::as_array);
        if exprs.is_none_or(Vec::is_empty) && fields.is_none_or(Vec::is_empty) {
            return false; // an empty term matches nothing
        }
        exprs
            .into_iter()
            .flatten()
            .all(|e| requirement_holds(e, &label))
            && fields.into_iter().flatten().all(|e| {
                e.get("key").and_then(Value::as_str) == Some("metadata.name")
                    && requirement_holds(e, &|_: &str| name)
            })
    })
}

fn requirement_holds<'a>(req: &Value, value_of: &dyn Fn(&str) -> Option<&'a str>) -> bool {
    let key = req.get("key").and_then(Value::as_str).unwrap_or_default();
    let values: Vec<&str> = req
        .get("values")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let value = value_of(key);
    let number = |s: &str| s.parse::<i64>().ok();
    match req.get("operator").and_then(Value::as_str) {
        Some("In") => value.is_some_and(|v| values.contains(&v)),
        Some("NotIn") => value.is_none_or(|v| !values.contains(&v)),
        Some("Exists") => value.is_some(),
        Some("DoesNotExist") => value.is_none(),
        Some("Gt") => {
            matches!((value.and_then(number), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a > b)
        }
        Some("Lt") => {
            matches!((value.and_then(number), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// The scheduler's choice: among the nodes that take the pod (other than `avoid`), the one
/// with the fewest pods, ties broken by name. `nodes` gives each node with its pod count.
pub fn pick_node<'a>(
    pod: &Value,
    nodes: impl IntoIterator<Item = (&'a Value, usize)>,
    avoid: Option<&str>,
) -> Option<String> {
    nodes
        .into_iter()
        .filter(|(n, _)| {
            let name = n.pointer("/metadata/name").and_then(Value::as_str);
            name.is_some() && name != avoid && node_schedulable_for(n, pod)
        })
        .min_by_key(|(n, count)| {
            (
                *count,
                n.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .and_then(|(n, _)| {
            n.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_node(name: &str) -> Value {
        node_object(name, &Map::new(), "t0")
    }

    #[test]
    fn a_not_ready_node_is_tainted_unreachable_and_a_ready_one_is_not() {
        let mut n = json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        set_ready(&mut n, false, "t1");
        assert!(!node_ready(&n));
        assert_eq!(
            n["spec"]["taints"][0]["key"],
            json!("node.kubernetes.io/unreachable")
        );
        set_ready(&mut n, true, "t2");
        assert!(node_ready(&n));
        assert!(n["spec"].get("taints").is_none());
        assert_eq!(
            n["status"]["conditions"][0]["lastTransitionTime"],
            json!("t2")
        );
    }

    #[test]
    fn a_reboot_changes_the_boot_id_and_makes_the_node_ready() {
        let mut n = ready_node("a");
        let before = boot_id(&n).to_string();
        set_ready(&mut n, false, "t1");
        reboot(&mut n, "t2");
        assert!(node_ready(&n));
        assert_ne!(boot_id(&n), before);
        assert!(!boot_id(&n).is_empty());
    }

    #[test]
    fn untolerated_taints_and_cordons_keep_pods_off_a_node() {
        let mut n = json!({"metadata": {"name": "n"}, "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let pod = json!({"spec": {}});
        assert!(node_schedulable_for(&n, &pod));
        n["spec"]["taints"] = json!([{"key": "gpu", "effect": "NoSchedule"}]);
        assert!(!node_schedulable_for(&n, &pod));
        let tolerant = json!({"spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}});
        assert!(node_schedulable_for(&n, &tolerant));
        n["spec"]["unschedulable"] = json!(true);
        assert!(!node_schedulable_for(&n, &tolerant));
        let daemon = json!({"spec": {"tolerations": [{"key": "gpu", "operator": "Exists"},
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}});
        assert!(node_schedulable_for(&n, &daemon));
    }

    #[test]
    fn node_selectors_and_required_affinity_choose_the_nodes_a_pod_may_use() {
        let mut labels = Map::new();
        labels.insert("pool".into(), json!("gpu"));
        labels.insert("gen".into(), json!("5"));
        let n = node_object("g1", &labels, "t");
        let cases = [
            (json!({}), true),
            (json!({"nodeSelector": {"pool": "gpu"}}), true),
            (json!({"nodeSelector": {"pool": "cpu"}}), false),
            (
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["g1"]}]}]}}}}),
                true,
            ),
            (
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["g2"]}]}]}}}}),
                false,
            ),
            (
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["gpu"]}]},
                {"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["4"]}, {"key": "zone", "operator": "DoesNotExist"}]}]}}}}),
                true,
            ),
            (
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "gen", "operator": "Lt", "values": ["5"]}]}, {}]}}}}),
                false,
            ),
        ];
        for (spec, fits) in cases {
            let pod = json!({ "spec": spec });
            assert_eq!(node_schedulable_for(&n, &pod), fits, "{pod}");
        }
    }

    #[test]
    fn the_scheduler_picks_the_least_loaded_fitting_node_by_name() {
        let a = ready_node("a");
        let b = ready_node("b");
        let mut c = ready_node("c");
        c["spec"]["unschedulable"] = json!(true);
        let pod = json!({"spec": {}});
        let nodes = [(&a, 3), (&b, 1), (&c, 0)];
        assert_eq!(pick_node(&pod, nodes, None).as_deref(), Some("b"));
        assert_eq!(pick_node(&pod, nodes, Some("b")).as_deref(), Some("a"));
        assert_eq!(
            pick_node(&pod, [(&a, 2), (&b, 2)], None).as_deref(),
            Some("a")
        );
        assert_eq!(pick_node(&pod, [(&c, 0)], None), None);
    }
}
