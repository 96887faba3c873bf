//! `nmo run --kubeconfig PATH` as a user runs it: the binary against a sandbox cluster, stopped
//! with SIGTERM.

#[path = "node_maintenance_support.rs"]
mod support;

use nmo::api::MaintenancePhase;
use nmo::sandbox::NewPod;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmo_run_drains_a_node_of_the_cluster_in_its_kubeconfig_and_stops_on_sigterm() {
    let c = cluster().await;
    c.add_node("worker-1").await;
    c.add_node("spare").await;
    c.create_pod(
        NewPod::new("web-0")
            .on_node("worker-1")
            .replica_set("web")
            .grace_period(0),
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    c.sandbox.write_kubeconfig(&kubeconfig).unwrap();

    let nmo = Command::new(env!("CARGO_BIN_EXE_nmo"))
        .args(["run", "--kubeconfig"])
        .arg(&kubeconfig)
        .env("HOME", dir.path())
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nmo starts");

    c.create_nm("nm-1", "worker-1").await;
    c.wait_phase("nm-1", MaintenancePhase::Succeeded, Duration::from_secs(30))
        .await;
    assert!(c.pods_on("worker-1").await.is_empty());
    let node = c.nodes().get("worker-1").await.unwrap();
    assert!(in_maintenance(&node));

    let term = Command::new("kill")
        .args(["-TERM", &nmo.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(term.success());
    let out = tokio::task::spawn_blocking(move || nmo.wait_with_output())
        .await
        .unwrap()
        .expect("nmo exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nmo run failed: {stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

#[test]
fn nmo_run_names_a_missing_kubeconfig_in_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_nmo"))
        .args(["run", "--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .expect("nmo runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("/nonexistent/kubeconfig"), "{stderr}");
}
