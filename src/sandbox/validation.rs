//! Validation of built-in kinds that kube-apiserver refuses with 422, for the mistakes clients
//! make: a pod without containers, a PDB with both budgets, a workload whose selector does not
//! select its template, an event in another namespace than its object. Pure; causes are worded
//! as kube-apiserver words them. (Custom resources are validated by `schema` and `cel`.)

use super::error::Cause;
use serde_json::Value;

/// The causes of refusal of a new or updated built-in object of `group`/`plural` (`group` is
/// the API group the client used: `events.k8s.io` or `""` for events).
pub fn validate(group: &str, plural: &str, obj: &Value, create: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    match (group, plural) {
        ("", "pods") if create => {
            let empty = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
            if empty {
                causes.push(cause(
                    "FieldValueRequired",
                    "spec.containers",
                    "Required value".into(),
                ));
            }
        }
        ("policy", "poddisruptionbudgets") => {
            let spec = &obj["spec"];
            if !spec["minAvailable"].is_null() && !spec["maxUnavailable"].is_null() {
                causes.push(cause(
                    "FieldValueInvalid",
                    "spec",
                    format!(
                        "Invalid value: {}: minAvailable and maxUnavailable cannot be both set",
                        go_pdb_spec(spec)
                    ),
                ));
            }
        }
        ("apps", "replicasets" | "deployments" | "daemonsets" | "statefulsets") => {
            let selector =
                super::selectors::LabelSelector::from_object(obj.pointer("/spec/selector"));
            let labels = obj.pointer("/spec/template/metadata/labels");
            if let Ok(Some(selector)) = selector
                && !selector.is_empty()
                && !selector.matches(labels)
            {
                causes.push(cause(
                    "FieldValueInvalid",
                    "spec.template.metadata.labels",
                    format!(
                        "Invalid value: {}: `selector` does not match template `labels`",
                        labels.cloned().unwrap_or(Value::Null)
                    ),
                ));
            }
        }
        ("" | "events.k8s.io", "events") => {
            let ns = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let involved = obj
                .pointer("/involvedObject/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let timed = !obj["eventTime"].is_null();
            let mismatch = match (involved.is_empty(), timed) {
                (true, false) => !ns.is_empty() && ns != "default",
                (true, true) => ns != "default" && ns != "kube-system",
                (false, _) => ns != involved,
            };
            if mismatch {
                causes.push(cause(
                    "FieldValueInvalid",
                    "involvedObject.namespace",
                    format!("Invalid value: {involved:?}: does not match event.namespace"),
                ));
            }
            if group == "events.k8s.io" && create && !timed {
                causes.push(cause(
                    "FieldValueRequired",
                    "eventTime",
                    "Required value".into(),
                ));
            }
        }
        _ => {}
    }
    causes
}

fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause {
        reason: reason.into(),
        message,
        field: field.into(),
    }
}

/// A PDB spec as Go prints the internal struct in messages (fields in declaration order).
fn go_pdb_spec(spec: &Value) -> String {
    let field = |k: &str| {
        spec.get(k)
            .filter(|v| !v.is_null())
            .map(Value::to_string)
            .unwrap_or_else(|| "null".into())
    };
    format!(
        "{{\"MinAvailable\":{},\"Selector\":{},\"MaxUnavailable\":{},\"UnhealthyPodEvictionPolicy\":{}}}",
        field("minAvailable"),
        field("selector"),
        field("maxUnavailable"),
        field("unhealthyPodEvictionPolicy")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(group: &str, plural: &str, obj: Value) -> Vec<String> {
        validate(group, plural, &obj, true)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn a_pod_needs_a_container() {
        assert_eq!(
            messages("", "pods", json!({"spec": {"containers": []}})),
            ["spec.containers: Required value"]
        );
        assert!(messages("", "pods", json!({"spec": {"containers": [{"name": "a"}]}})).is_empty());
    }

    #[test]
    fn a_pdb_takes_one_budget() {
        let spec = json!({"spec": {"minAvailable": 1, "maxUnavailable": "10%",
            "selector": {"matchLabels": {"app": "web"}}}});
        assert_eq!(
            messages("policy", "poddisruptionbudgets", spec),
            [
                "spec: Invalid value: {\"MinAvailable\":1,\"Selector\":{\"matchLabels\":{\"app\":\"web\"}},\"MaxUnavailable\":\"10%\",\"UnhealthyPodEvictionPolicy\":null}: minAvailable and maxUnavailable cannot be both set"
            ]
        );
    }

    #[test]
    fn a_workload_selects_its_template() {
        let rs = |labels: Value| {
            json!({"spec": {"selector": {"matchLabels": {"app": "x"}},
                "template": {"metadata": {"labels": labels}}}})
        };
        assert!(messages("apps", "replicasets", rs(json!({"app": "x", "b": "c"}))).is_empty());
        assert_eq!(
            messages("apps", "replicasets", rs(json!({"app": "y"}))),
            [
                "spec.template.metadata.labels: Invalid value: {\"app\":\"y\"}: `selector` does not match template `labels`"
            ]
        );
    }

    #[test]
    fn an_event_lives_in_its_objects_namespace() {
        let event = |ns: &str, involved: Value| json!({"metadata": {"namespace": ns}, "involvedObject": involved});
        assert!(messages("", "events", event("a", json!({"namespace": "a"}))).is_empty());
        assert!(messages("", "events", event("default", json!({"kind": "Node"}))).is_empty());
        assert_eq!(
            messages("", "events", event("a", json!({"kind": "Node"}))),
            ["involvedObject.namespace: Invalid value: \"\": does not match event.namespace"]
        );
        assert_eq!(
            messages(
                "events.k8s.io",
                "events",
                event("a", json!({"namespace": "a"}))
            ),
            ["eventTime: Required value"]
        );
    }
}
