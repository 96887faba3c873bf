//! `nmo simulate --serve`: a seeded sandbox that kubectl can point at, until SIGTERM.

use std::time::Duration;
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_serves_a_seeded_sandbox_until_sigterm() {
    let served = Served::start(&["--nodes", "4", "--gpu-nodes", "0", "--no-controllers"]).await;
    let kubectl = |args: &[&str]| served.kubectl(args);
    let out = kubectl(&["get", "nodes", "-o", "name"])
        .output()
        .await
        .expect("kubectl must be on the PATH");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4);
    let out = kubectl(&["get", "pods", "-A", "-o", "name"])
        .output()
        .await
        .unwrap();
    // Per node: two web pods and two DaemonSet pods; an api pod on nodes 1 and 3, a batch
    // pod on nodes 1 and 4 (see nmo::simulate::seed::pods_for_node).
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        4 * 4 + 2 + 2
    );
    let out = kubectl(&["get", "crd", "-o", "name"])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    let (child, _dir) = (served.child, served.dir);
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("sandbox serving at https://127.0.0.1:"),
        "{log}"
    );
    assert!(log.contains("controllers: off (--no-controllers)"), "{log}");
}

/// `nmo simulate --serve` runs the controllers: a NodeMaintenance applied with kubectl puts its
/// node into maintenance, and kubectl sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_serve_runs_the_controllers_for_kubectl() {
    let served = Served::start(&["--nodes", "3", "--speed", "30"]).await;
    let kubectl = |args: &[&str]| served.kubectl(args);
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/node-maintenance.yaml"
    );
    let out = kubectl(&["apply", "-f", example])
        .output()
        .await
        .expect("kubectl must be on the PATH");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(&[
        "wait",
        "--for=condition=Ready",
        "nm/worker-3-disk-swap",
        "--timeout=60s",
    ])
    .output()
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(&["get", "nodes"]).output().await.unwrap();
    let nodes = String::from_utf8_lossy(&out.stdout);
    let row = nodes.lines().find(|l| l.starts_with("worker-3")).unwrap();
    assert!(row.contains("Ready,SchedulingDisabled"), "{nodes}");
    let out = kubectl(&["get", "nm"]).output().await.unwrap();
    let nms = String::from_utf8_lossy(&out.stdout);
    assert!(
        nms.contains("worker-3") && nms.contains("Succeeded") && nms.contains("100"),
        "{nms}"
    );

    let (child, _dir) = (served.child, served.dir);
    let pid = child.id().unwrap().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("controllers: NodeMaintenance and MaintenanceWindow, clock at 30x"),
        "{log}"
    );
}

/// `nmo simulate --serve` running as a child process, with its own HOME and kubeconfig.
struct Served {
    child: tokio::process::Child,
    dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

impl Served {
    async fn start(args: &[&str]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let child = Command::new(env!("CARGO_BIN_EXE_nmo"))
            .args(["simulate", "--serve"])
            .args(args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !kubeconfig.exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no kubeconfig written"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Served {
            child,
            dir,
            kubeconfig,
        }
    }

    /// kubectl against the served sandbox (it must be on the PATH).
    fn kubectl(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("KUBECONFIG", &self.kubeconfig);
        c
    }
}
