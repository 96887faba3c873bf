//! `nmo simulate --serve` as a user drives it from another shell: kubectl sees the seeded
//! nodes, `kubectl apply -f` of a new MaintenanceWindow is picked up by the controllers,
//! `kubectl get nodes` shows the cordoned node during the window and `kubectl get mw` the
//! round's progress.

use std::time::Duration;
use tokio::process::Command;

/// A window that opens now (run-now) and maintains the workers one at a time.
const WINDOW: &str = r#"apiVersion: nodemaintenance.medik8s.io/v1alpha1
kind: MaintenanceWindow
metadata:
  name: patch-now
  annotations:
    nodemaintenance.medik8s.io/run-now: "1"
spec:
  schedule: "0 3 1 1 *"
  duration: 4h
  nodeSelector:
    matchLabels:
      node-role.kubernetes.io/worker: ""
  maxUnavailable: 1
  release:
    after: 10m
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_a_window_to_a_served_simulation_and_watches_it_roll() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nmo"))
        .args(["simulate", "--serve", "--nodes", "3", "--speed", "60"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !kubeconfig.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no kubeconfig written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kubectl = |args: &[&str]| {
        let mut c = Command::new("kubectl");
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("KUBECONFIG", &kubeconfig);
        c
    };
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let nodes = ok(kubectl(&["get", "nodes", "--no-headers"])
        .output()
        .await
        .expect("kubectl must be on the PATH"));
    assert_eq!(
        nodes.lines().count(),
        3,
        "--nodes 3 means 3 nodes:\n{nodes}"
    );
    assert!(
        nodes.lines().all(|l| l.starts_with("worker-")),
        "no window yet: every node a worker:\n{nodes}"
    );

    let file = dir.path().join("window.yaml");
    std::fs::write(&file, WINDOW).unwrap();
    let applied = ok(kubectl(&["apply", "-f", file.to_str().unwrap()])
        .output()
        .await
        .unwrap());
    assert!(
        applied.contains("maintenancewindow.nodemaintenance.medik8s.io/patch-now created"),
        "{applied}"
    );

    // The controllers pick it up: one worker in maintenance, drained.
    ok(kubectl(&[
        "wait",
        "--for=jsonpath={.status.round.inProgress}=1",
        "mw/patch-now",
        "--timeout=60s",
    ])
    .output()
    .await
    .unwrap());
    ok(kubectl(&[
        "wait",
        "--for=condition=Ready",
        "nm",
        "-l",
        "nodemaintenance.medik8s.io/window=patch-now",
        "--timeout=60s",
    ])
    .output()
    .await
    .unwrap());
    let nodes = ok(kubectl(&["get", "nodes", "--no-headers"])
        .output()
        .await
        .unwrap());
    let cordoned: Vec<&str> = nodes
        .lines()
        .filter(|l| l.contains("SchedulingDisabled"))
        .collect();
    assert_eq!(cordoned.len(), 1, "one node at a time:\n{nodes}");
    assert!(cordoned[0].starts_with("worker-1 "), "{nodes}");

    let mws = ok(kubectl(&["get", "mw"]).output().await.unwrap());
    let header = mws.lines().next().unwrap_or_default();
    assert!(
        header.contains("WINDOW") && header.contains("PROGRESS"),
        "{mws}"
    );
    let row = mws
        .lines()
        .find(|l| l.starts_with("patch-now"))
        .unwrap_or_else(|| panic!("{mws}"));
    assert!(row.contains("open"), "{mws}");
    assert!(row.contains("0/3"), "nothing completed yet:\n{mws}");

    // The round goes on: after release.after (10 virtual minutes, 10 s at 60x) the first
    // node is done and the progress column moves.
    ok(kubectl(&[
        "wait",
        "--for=jsonpath={.status.round.completed}=1",
        "mw/patch-now",
        "--timeout=120s",
    ])
    .output()
    .await
    .unwrap());
    let mws = ok(kubectl(&["get", "mw", "patch-now", "--no-headers"])
        .output()
        .await
        .unwrap());
    assert!(mws.contains("1/3"), "{mws}");

    let pid = child.id().unwrap().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(status.success());
}
