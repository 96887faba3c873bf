//! The binary reports bad input as one line and a non-zero exit, never a panic.

use std::process::Command;

fn nmo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nmo"))
        .args(args)
        .output()
        .unwrap()
}

fn one_line_error(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    assert_ne!(out.status.code(), Some(101), "the binary panicked");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "expected one line, got {stderr:?}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn validate_reports_a_missing_file_in_one_line() {
    let err = one_line_error(&nmo(&["validate", "/definitely/missing.yaml"]));
    assert!(
        err.contains("/definitely/missing.yaml: cannot read"),
        "{err}"
    );
}

#[test]
fn validate_reports_invalid_yaml_with_file_document_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Node\n---\nmetadata: {name: [\n",
    )
    .unwrap();
    let err = one_line_error(&nmo(&["validate", path.to_str().unwrap()]));
    assert!(err.contains("bad.yaml:1: invalid YAML"), "{err}");
    assert!(err.contains("line"), "{err}");
}

#[test]
fn crds_prints_both_crds() {
    let out = nmo(&["crds"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, nmo::api::crds_yaml().unwrap());
    assert!(text.contains("name: nodemaintenances.nodemaintenance.medik8s.io"));
    assert!(text.contains("name: maintenancewindows.nodemaintenance.medik8s.io"));
}

#[test]
fn every_command_has_real_help() {
    for cmd in ["run", "crds", "plan", "validate", "simulate"] {
        let out = nmo(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help failed");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.lines().next().is_some_and(|l| l.len() > 20),
            "{cmd}: {text}"
        );
    }
}
