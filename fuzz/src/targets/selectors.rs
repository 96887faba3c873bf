//! Target for label and field selectors: the string syntax the sandbox reads from
//! `?labelSelector=` and `?fieldSelector=`, and `metav1.LabelSelector` objects
//! (matchLabels/matchExpressions) as the sandbox (PDBs, ReplicaSets) and the window
//! controller (`spec.nodeSelector`) read them.

use super::input::Input;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use nmo::sandbox::selectors::{FieldSelector, LabelSelector};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

const KEYS: &[&str] = &[
    "a",
    "b",
    "kubernetes.io/os",
    "node-role.kubernetes.io/worker",
    "",
];
const VALUES: &[&str] = &["x", "y", "linux", "", "true"];
const OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist", "in", "Gt", ""];

/// `selectors`: line 1 is parsed as a label selector string and as a field selector string
/// (errors must say something); the rest builds a `metav1.LabelSelector` and label sets, and
/// the sandbox's selector and `schedule::selector_matches` must agree on every label set
/// (two implementations of the same Kubernetes rules).
pub fn selectors(data: &[u8]) {
    let mut input = Input::new(data);
    let text = String::from_utf8_lossy(input.line()).into_owned();
    let label_sets: Vec<BTreeMap<String, String>> = (0..4).map(|_| labels(&mut input)).collect();

    match LabelSelector::parse(&text) {
        Ok(selector) => {
            for set in &label_sets {
                let as_json = json!(set);
                let by_map = selector.matches(Some(&as_json));
                let by_get = selector.matches_with(|k| set.get(k).map(String::as_str));
                assert_eq!(by_map, by_get, "{text:?} on {set:?}");
                let object = json!({"metadata": {"labels": set}});
                assert_eq!(
                    selector.matches_object(&object),
                    by_map,
                    "{text:?} on {set:?}"
                );
            }
            // Requirements are joined by commas: the selector twice is the same selector.
            if !text.trim().is_empty() {
                let twice = LabelSelector::parse(&format!("{text},{text}"))
                    .unwrap_or_else(|e| panic!("{text:?} parses but twice does not: {e}"));
                for set in &label_sets {
                    let as_json = json!(set);
                    assert_eq!(
                        twice.matches(Some(&as_json)),
                        selector.matches(Some(&as_json)),
                        "{text:?} twice on {set:?}"
                    );
                }
            }
        }
        Err(e) => assert!(!e.0.is_empty(), "{text:?}: an empty error"),
    }
    match FieldSelector::parse(&text) {
        Ok(selector) => {
            let object = json!({"metadata": {"name": "x", "namespace": "y"},
                "spec": {"nodeName": "x"}, "status": {"phase": "Running"}});
            let _ = selector.matches(&object);
            let _ = selector.exact_name();
            for rt in super::builtin_types() {
                let _ = selector.check_supported(rt);
            }
        }
        Err(e) => assert!(!e.0.is_empty(), "{text:?}: an empty error"),
    }

    // matchLabels / matchExpressions, from the rest of the input.
    let mut match_labels = Map::new();
    for _ in 0..input.below(3) {
        match_labels.insert(key(&mut input), json!(value(&mut input)));
    }
    let mut expressions = Vec::new();
    for _ in 0..input.below(4) {
        let key = key(&mut input);
        let operator = operator(&mut input);
        let values: Vec<String> = (0..input.below(3)).map(|_| value(&mut input)).collect();
        let mut e = json!({"key": key, "operator": operator});
        if !input.byte().is_multiple_of(4) {
            e["values"] = json!(values);
        }
        expressions.push(e);
    }
    let object = json!({"matchLabels": match_labels, "matchExpressions": expressions});
    let known = expressions.iter().all(|e| {
        matches!(
            e["operator"].as_str(),
            Some("In" | "NotIn" | "Exists" | "DoesNotExist")
        )
    });
    let sandbox = LabelSelector::from_object(Some(&object));
    match (&sandbox, known) {
        (Ok(_), true) | (Err(_), false) => {}
        _ => panic!("{object}: operators known {known}, sandbox {sandbox:?}"),
    }
    let k8s: metav1::LabelSelector =
        serde_json::from_value(object.clone()).expect("a LabelSelector");
    let _ = nmo::admission::validate_node_selector(&k8s, "spec.nodeSelector");
    if let Ok(Some(sandbox)) = sandbox {
        for set in &label_sets {
            assert_eq!(
                sandbox.matches(Some(&json!(set))),
                nmo::schedule::selector_matches(&k8s, set),
                "{object} on {set:?}"
            );
        }
    }
    // Nothing else but `{}` and null are objects the sandbox reads as selectors.
    assert_eq!(LabelSelector::from_object(Some(&Value::Null)), Ok(None));
}

fn key(input: &mut Input) -> String {
    match input.byte() {
        0..=239 => input.choose(KEYS).to_string(),
        _ => input.string(),
    }
}

fn value(input: &mut Input) -> String {
    match input.byte() {
        0..=239 => input.choose(VALUES).to_string(),
        _ => input.string(),
    }
}

fn operator(input: &mut Input) -> String {
    match input.byte() {
        0..=239 => input.choose(OPERATORS).to_string(),
        _ => input.string(),
    }
}

fn labels(input: &mut Input) -> BTreeMap<String, String> {
    (0..input.below(4))
        .map(|_| (key(input), value(input)))
        .collect()
}
