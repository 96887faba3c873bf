//! `nmo validate` run as a user would: the built binary on files.

use std::path::Path;
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

/// A valid window, as YAML, with `line` replaced by `replacement` (or removed when empty).
fn window_with(line: &str, replacement: &str) -> String {
    let valid = "apiVersion: nodemaintenance.medik8s.io/v1alpha1
kind: MaintenanceWindow
metadata:
  name: weekly
spec:
  schedule: \"0 2 * * SAT\"
  timeZone: Europe/Berlin
  duration: 4h
  nodeSelector:
    matchLabels:
      node-role.kubernetes.io/worker: \"\"
  maxUnavailable: 2
  release:
    after: 30m
";
    assert!(valid.contains(line), "{line}");
    valid.replace(line, replacement)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn the_examples_pass() {
    let out = nmo(&["validate", "examples/", "tests/data/medik8s-samples.yaml"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("no problems"), "{}", stderr(&out));
}

#[test]
fn each_bad_manifest_gets_its_own_message_and_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "  schedule: \"0 2 * * SAT\"\n",
            "  schedule: \"0 2 * * SATURDAY\"\n",
            "spec.schedule: invalid cron expression \"0 2 * * SATURDAY\": day of week field \"SATURDAY\"",
        ),
        (
            "  timeZone: Europe/Berlin\n",
            "  timeZone: Europe/Berln\n",
            "spec.timeZone: unknown time zone \"Europe/Berln\", did you mean \"Europe/Berlin\"?",
        ),
        (
            "  duration: 4h\n",
            "  duration: 4hours\n",
            "spec.duration: invalid duration \"4hours\": unknown unit \"hours\"",
        ),
        (
            "  maxUnavailable: 2\n",
            "  maxUnavailable: 0\n",
            "spec.maxUnavailable: 0 is not allowed: use an integer >= 1 or a percentage from 1% to 100%",
        ),
        (
            "  maxUnavailable: 2\n",
            "  maxUnavailable: \"150%\"\n",
            "spec.maxUnavailable: \"150%\" is not allowed: a percentage must be from 1% to 100%",
        ),
        (
            "    matchLabels:\n      node-role.kubernetes.io/worker: \"\"\n",
            "    matchLabels: {}\n",
            "spec.nodeSelector: must not be empty: set matchLabels or matchExpressions",
        ),
        ("  release:\n    after: 30m\n", "", "spec.release: required"),
        (
            "  release:\n    after: 30m\n",
            "  release: {}\n",
            "spec.release: must set after (a duration such as \"30m\") and/or onReboot: true",
        ),
    ];
    let mut seen = Vec::new();
    for (i, (line, replacement, expected)) in cases.iter().enumerate() {
        let file = write(
            dir.path(),
            &format!("case{i}.yaml"),
            &window_with(line, replacement),
        );
        let out = nmo(&["validate", &file]);
        assert_eq!(out.status.code(), Some(1), "{expected}: {}", stderr(&out));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{expected}: {text}");
        let prefix = format!("{file}:0: {expected}");
        assert!(
            lines[0].starts_with(&prefix),
            "case {i}: {} lacks {prefix}",
            lines[0]
        );
        seen.push(lines[0].split_once(": ").unwrap().1.to_string());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), cases.len(), "every case has its own message");
}

#[test]
fn problems_name_the_document_index_and_a_node_maintenance_needs_a_node_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ignored}}\n---\napiVersion: nodemaintenance.medik8s.io/v1beta1\nkind: NodeMaintenance\nmetadata: {{name: nm}}\nspec:\n  nodeName: \"\"\n",
        window_with("  duration: 4h\n", "  duration: 30s\n")
    );
    let file = write(dir.path(), "multi.yaml", &text);
    let out = nmo(&["validate", &file]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        format!(
            "{file}:0: spec.duration: \"30s\" is not allowed: a window must last at least 1m\n{file}:2: spec.nodeName: must not be empty: set it to the name of a node\n"
        )
    );
}

#[test]
fn a_missing_file_gives_one_line_and_a_non_zero_exit() {
    let out = nmo(&["validate", "no/such/file.yaml"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: no/such/file.yaml: cannot read:"),
        "{err}"
    );
}

#[test]
fn invalid_yaml_gives_one_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bad.yaml", "apiVersion: v1\nkind: [unclosed\n");
    let out = nmo(&["validate", &file]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: {file}:0: invalid YAML: ")),
        "{err}"
    );
}
