//! The API contract: generated CRDs, the committed `crds/`, the examples and medik8s shapes.

use kube::core::cel::Validator;
use nmo::api::{MaintenanceWindow, NodeMaintenance};
use serde_json::Value;
use std::path::Path;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn crd_json(name: &str) -> Value {
    let crd = nmo::api::crds()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no CRD {name}"));
    serde_json::to_value(crd).unwrap()
}

fn schema_of(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

#[test]
fn crds_directory_matches_nmo_crds_output() {
    let expected = nmo::api::crd_files().unwrap();
    let mut on_disk: Vec<String> = std::fs::read_dir(repo("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(
        on_disk, names,
        "crds/ holds other files than `nmo crds` produces"
    );
    for (file, yaml) in expected {
        let committed = std::fs::read_to_string(repo("crds").join(&file)).unwrap();
        assert!(
            committed == yaml,
            "crds/{file} drifted from the Rust types: run `cargo run -- crds --write crds/`"
        );
    }
    // `nmo crds` is the concatenation of those files.
    let all: String = nmo::api::crd_files()
        .unwrap()
        .into_iter()
        .map(|(_, y)| y)
        .collect();
    assert_eq!(all, nmo::api::crds_yaml().unwrap());
}

#[test]
fn node_maintenance_crd_is_medik8s_shaped() {
    let crd = crd_json("nodemaintenances.nodemaintenance.medik8s.io");
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "nodemaintenance.medik8s.io");
    assert_eq!(spec["scope"], "Cluster");
    assert_eq!(spec["names"]["kind"], "NodeMaintenance");
    assert_eq!(spec["names"]["shortNames"], serde_json::json!(["nm"]));
    assert_eq!(
        spec["names"]["categories"],
        serde_json::json!(["maintenance"])
    );
    let version = &spec["versions"][0];
    assert_eq!(version["name"], "v1beta1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Node", "Phase", "Progress", "Reason", "Age"]);
    let node_name = &schema_of(&crd)["properties"]["spec"]["properties"]["nodeName"];
    let rules: Vec<&str> = node_name["x-kubernetes-validations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["self != ''", "self == oldSelf"]);
    let phase = &schema_of(&crd)["properties"]["status"]["properties"]["phase"];
    assert_eq!(
        phase["enum"],
        serde_json::json!(["Running", "Succeeded", "Failed"])
    );
}

#[test]
fn maintenance_window_crd_has_columns_and_no_defaults() {
    let crd = crd_json("maintenancewindows.nodemaintenance.medik8s.io");
    let spec = &crd["spec"];
    assert_eq!(spec["scope"], "Cluster");
    assert_eq!(spec["names"]["shortNames"], serde_json::json!(["mw"]));
    assert_eq!(
        spec["names"]["categories"],
        serde_json::json!(["maintenance"])
    );
    let version = &spec["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Schedule", "TimeZone", "Window", "Next", "Progress", "Ready", "Age"
        ]
    );
    let text = serde_json::to_string(&schema_of(&crd)["properties"]["spec"]).unwrap();
    assert!(
        !text.contains("\"default\""),
        "spec fields must not have schema defaults"
    );
    let required = &schema_of(&crd)["properties"]["spec"]["required"];
    for field in ["schedule", "duration", "nodeSelector", "release"] {
        assert!(
            required.as_array().unwrap().iter().any(|r| r == field),
            "{field} must be required"
        );
    }
    let on_end = &schema_of(&crd)["properties"]["spec"]["properties"]["onWindowEnd"];
    assert_eq!(
        on_end["enum"],
        serde_json::json!(["FinishInFlight", "Abort"])
    );
}

/// Run the CRD's CEL rules on an object, the way the apiserver (and the sandbox) does.
fn cel_errors(crd: &Value, object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(schema_of(crd), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| e.to_string())
            .collect(),
    }
}

fn window(spec: Value) -> Value {
    serde_json::json!({
        "apiVersion": "nodemaintenance.medik8s.io/v1alpha1",
        "kind": "MaintenanceWindow",
        "metadata": {"name": "w"},
        "spec": spec,
    })
}

fn valid_spec() -> Value {
    serde_json::json!({
        "schedule": "0 2 * * 6",
        "duration": "4h",
        "nodeSelector": {"matchLabels": {"a": "b"}},
        "release": {"after": "10m"},
    })
}

#[test]
fn cel_rules_accept_valid_windows_and_name_the_field_when_broken() {
    let crd = crd_json("maintenancewindows.nodemaintenance.medik8s.io");
    assert!(cel_errors(&crd, &window(valid_spec()), None).is_empty());
    for budget in [
        serde_json::json!(1),
        serde_json::json!(5),
        serde_json::json!("1%"),
        serde_json::json!("100%"),
    ] {
        let mut spec = valid_spec();
        spec["maxUnavailable"] = budget.clone();
        assert_eq!(
            cel_errors(&crd, &window(spec), None),
            Vec::<String>::new(),
            "{budget}"
        );
    }
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "maxUnavailable",
            serde_json::json!(0),
            "spec.maxUnavailable must be an integer >= 1",
        ),
        (
            "maxUnavailable",
            serde_json::json!("150%"),
            "percentage from 1% to 100%",
        ),
        (
            "maxUnavailable",
            serde_json::json!("0%"),
            "percentage from 1% to 100%",
        ),
        (
            "duration",
            serde_json::json!("4 hours"),
            "spec.duration must be a Go duration",
        ),
        (
            "nodeTimeout",
            serde_json::json!("soon"),
            "spec.nodeTimeout must be a Go duration",
        ),
        (
            "nodeSelector",
            serde_json::json!({}),
            "spec.nodeSelector must not be empty",
        ),
        (
            "release",
            serde_json::json!({}),
            "spec.release must set after",
        ),
        (
            "release",
            serde_json::json!({"onReboot": false}),
            "spec.release must set after",
        ),
    ];
    for (field, value, expected) in cases {
        let mut spec = valid_spec();
        spec[field] = value.clone();
        let errors = cel_errors(&crd, &window(spec), None);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{field}={value}: expected {expected:?}, got {errors:?}"
        );
    }
}

#[test]
fn node_name_is_non_empty_and_immutable() {
    let crd = crd_json("nodemaintenances.nodemaintenance.medik8s.io");
    let nm = |node: &str| {
        serde_json::json!({"apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
            "metadata": {"name": "x"}, "spec": {"nodeName": node}})
    };
    assert!(cel_errors(&crd, &nm("a"), None).is_empty());
    assert!(cel_errors(&crd, &nm("a"), Some(&nm("a"))).is_empty());
    let empty = cel_errors(&crd, &nm(""), None);
    assert!(
        empty
            .iter()
            .any(|e| e.contains("spec.nodeName must not be empty")),
        "{empty:?}"
    );
    let changed = cel_errors(&crd, &nm("b"), Some(&nm("a")));
    assert!(
        changed
            .iter()
            .any(|e| e.contains("updating spec.NodeName isn't allowed")),
        "{changed:?}"
    );
}

#[test]
fn examples_round_trip_through_the_rust_types() {
    let docs = nmo::manifest::load_paths(&[repo("examples")]).unwrap();
    assert!(docs.len() >= 3);
    for doc in docs {
        let back = match doc.kind() {
            "NodeMaintenance" => serde_json::to_value(
                serde_json::from_value::<NodeMaintenance>(doc.value.clone()).unwrap(),
            ),
            "MaintenanceWindow" => serde_json::to_value(
                serde_json::from_value::<MaintenanceWindow>(doc.value.clone()).unwrap(),
            ),
            other => panic!("unexpected kind {other} in examples/"),
        }
        .unwrap();
        assert_eq!(back, doc.value, "{} does not round-trip", doc.location());
        let crd = crd_json(match doc.kind() {
            "NodeMaintenance" => "nodemaintenances.nodemaintenance.medik8s.io",
            _ => "maintenancewindows.nodemaintenance.medik8s.io",
        });
        assert_eq!(
            cel_errors(&crd, &doc.value, None),
            Vec::<String>::new(),
            "{}",
            doc.location()
        );
    }
}

#[test]
fn medik8s_manifest_shapes_are_accepted() {
    let crd = crd_json("nodemaintenances.nodemaintenance.medik8s.io");
    let props = &schema_of(&crd)["properties"];
    let docs = nmo::manifest::load_paths(&[repo("tests/data/medik8s-samples.yaml")]).unwrap();
    assert_eq!(docs.len(), 3);
    for doc in docs {
        let nm: NodeMaintenance = serde_json::from_value(doc.value.clone()).unwrap();
        assert!(!nm.spec.node_name.is_empty());
        // Every field the manifest uses is in the schema, so nothing is pruned.
        for section in ["spec", "status"] {
            if let Some(fields) = doc.value.get(section).and_then(Value::as_object) {
                for key in fields.keys() {
                    assert!(
                        props[section]["properties"].get(key).is_some(),
                        "{}: {section}.{key} is not in the CRD schema",
                        doc.location()
                    );
                }
            }
        }
        assert_eq!(cel_errors(&crd, &doc.value, None), Vec::<String>::new());
        assert_eq!(serde_json::to_value(&nm).unwrap(), doc.value);
    }
}
