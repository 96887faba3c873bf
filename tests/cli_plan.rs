//! `nmo plan` run as a user would: the built binary on examples/ and a node snapshot.

use std::process::{Command, Output};

fn nmo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nmo"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run nmo")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const FROM: &str = "2025-03-27T00:00:00Z";

#[test]
fn plan_prints_openings_in_both_zones_and_the_node_order() {
    let out = nmo(&[
        "plan",
        "examples/",
        "--nodes",
        "tests/data/nodes.yaml",
        "--from",
        FROM,
        "--count",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // Saturday 02:00 Berlin: 01:00 UTC before the spring change, 00:00 UTC after it.
    assert!(text.contains("Sat 2025-03-29 02:00 CET   Sat 2025-03-29 06:00 CET   2025-03-29 01:00 UTC  2025-03-29 05:00 UTC"), "{text}");
    assert!(
        text.contains("Sat 2025-04-05 02:00 CEST  Sat 2025-04-05 06:00 CEST  2025-04-05 00:00 UTC"),
        "{text}"
    );
    assert!(text.contains("Thu 2025-03-27 01:30 EDT"), "{text}");
    // Workers in name order, two at a time, 30m + 2m each.
    let order: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && l.contains("worker-")
        })
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "worker-1",
            "worker-10",
            "worker-2",
            "worker-3",
            "worker-4",
            "worker-5"
        ]
    );
    assert!(
        text.contains("7 node(s), 2 at a time, round about 2h8m"),
        "{text}"
    );
    assert!(
        text.contains(
            "warning: node gpu-1 is selected by 2 windows: nightly-gpu-reboot, weekly-workers"
        ),
        "{text}"
    );
    // Unknown kinds (the NodeMaintenance example) are ignored, and gpu-4 (no GPU) is not selected.
    assert!(!text.contains("gpu-4"), "{text}");
}

#[test]
fn plan_json_parses_and_carries_the_same_plan() {
    let out = nmo(&[
        "plan",
        "examples/",
        "--nodes",
        "tests/data/nodes.yaml",
        "--from",
        FROM,
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let windows = plan["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2);
    let workers = windows
        .iter()
        .find(|w| w["name"] == "weekly-workers")
        .unwrap();
    assert_eq!(workers["openings"].as_array().unwrap().len(), 5);
    assert_eq!(workers["openings"][0]["start"], "2025-03-29T01:00:00Z");
    assert_eq!(workers["openings"][0]["end"], "2025-03-29T05:00:00Z");
    assert_eq!(workers["maxUnavailable"], 2);
    assert_eq!(workers["nodes"][0]["name"], "gpu-1");
    assert_eq!(workers["nodes"][0]["window"], 1);
    let gpu = windows
        .iter()
        .find(|w| w["name"] == "nightly-gpu-reboot")
        .unwrap();
    let names: Vec<&str> = gpu["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gpu-1", "gpu-2", "gpu-3"]);
    assert_eq!(plan["warnings"].as_array().unwrap().len(), 1);

    let yaml = nmo(&["plan", "examples/", "--from", FROM, "-o", "yaml"]);
    assert!(yaml.status.success());
    let parsed: serde_yaml::Value = serde_yaml::from_slice(&yaml.stdout).expect("valid YAML");
    assert_eq!(parsed["windows"][0]["name"], "nightly-gpu-reboot");
}

#[test]
fn plan_warns_when_a_round_cannot_finish_inside_one_window() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slow.yaml");
    std::fs::write(
        &file,
        "apiVersion: nodemaintenance.medik8s.io/v1alpha1
kind: MaintenanceWindow
metadata: {name: slow}
spec:
  schedule: \"0 22 * * *\"
  duration: 1h
  nodeSelector: {matchLabels: {node-role.kubernetes.io/worker: \"\"}}
  release: {after: 20m}
  minReadySeconds: 600
",
    )
    .unwrap();
    let out = nmo(&[
        "plan",
        file.to_str().unwrap(),
        "--nodes",
        "tests/data/nodes.yaml",
        "--from",
        FROM,
        "--count",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("warning: a round cannot finish inside one window: 7 nodes, 1 at a time, about 30m each, take about 3h30m but a window lasts 1h"),
        "{text}"
    );
    // Two nodes start in each 1h window (at :00 and :30), so two openings take 4 of the 7.
    assert!(
        text.contains("warning: 3 node(s) are not reached within the 2 opening(s) shown"),
        "{text}"
    );
}

#[test]
fn bad_input_gives_one_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: [\n").unwrap();
    let bad = bad.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["plan", "no/such/dir"],
            "error: no/such/dir: cannot read:",
        ),
        (vec!["plan", bad], "invalid YAML: "),
        (
            vec!["plan", "examples/", "--from", "tomorrow"],
            "error: --from \"tomorrow\": not an RFC 3339 time",
        ),
        (
            vec![
                "plan",
                "examples/",
                "--nodes",
                "examples/node-maintenance.yaml",
            ],
            "no Node objects found",
        ),
        (
            vec!["plan", "tests/data/nodes.yaml"],
            "error: no MaintenanceWindow",
        ),
    ];
    for (args, expected) in cases {
        let out = nmo(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn an_invalid_window_is_reported_like_validate_and_fails_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.yaml");
    std::fs::write(
        &file,
        "apiVersion: nodemaintenance.medik8s.io/v1alpha1
kind: MaintenanceWindow
metadata: {name: w}
spec:
  schedule: \"0 2 * * *\"
  timeZone: Mars/Olympus
  duration: 1h
  nodeSelector: {matchLabels: {a: b}}
  release: {onReboot: true}
",
    )
    .unwrap();
    let out = nmo(&["plan", file.to_str().unwrap(), "--from", FROM]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!(
            "{}:0: spec.timeZone: unknown time zone \"Mars/Olympus\"",
            file.display()
        )),
        "{}",
        stderr(&out)
    );
}
