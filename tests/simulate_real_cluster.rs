//! `nmo simulate --cluster-kubeconfig`: the main job's scenario played on a real kube-apiserver
//! and kube-controller-manager (`tests/control-plane/`), the kubelet simulator standing in
//! for the nodes. The same expectations as on the sandbox (`tests/simulate.rs`).

#[path = "support/real_cluster.rs"]
mod real_cluster;

use real_cluster::RealCluster;

async fn nmo(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_nmo"))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("the nmo binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_plays_the_embedded_examples_on_a_real_control_plane() {
    let cluster = RealCluster::start().await;
    let kubeconfig = cluster.kubeconfig().display().to_string();
    let started = std::time::Instant::now();
    // From Friday evening for 30 hours: the weekly Saturday window (02:00 Berlin = 01:00 UTC)
    // and one nightly GPU window (01:30 New York = 06:30 UTC).
    let out = nmo(&[
        "simulate",
        "--cluster-kubeconfig",
        &kubeconfig,
        "--start",
        "2026-11-27T20:00:00Z",
        "--for",
        "30h",
        // The virtual clock does not wait for a loaded machine: at the default 600x, a drain
        // slowed by other work on these 2 cores can run into the nightly 45m nodeTimeout.
        "--speed",
        "200",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    println!(
        "nmo simulate on the real control plane: {:.1}s\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    for line in [
        "with 9 simulated nodes",
        "weekly-workers       RoundCompleted           round 1 completed: 6 node(s) maintained, 0 failed",
        "nightly-gpu-reboot   RoundCompleted           round 1 completed: 3 node(s) maintained, 0 failed",
        "rebooting (NotReady)",
        "rebooted: new bootID, Ready",
        "skipping ahead",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name) && l.contains("(of"))
            .unwrap_or_else(|| panic!("no summary row for {name}:\n{stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // WINDOW OPENED ROUNDS STARTED RELEASED FAILED MAX-UNAVAILABLE
    assert_eq!(row("weekly-workers")[1..6], ["1", "1", "6", "6", "0"]);
    assert_eq!(row("weekly-workers")[6], "2/2");
    assert_eq!(row("nightly-gpu-reboot")[1..6], ["1", "1", "3", "3", "0"]);
    assert_eq!(row("nightly-gpu-reboot")[6], "1/1");

    // What kubectl shows of it afterwards: the nodes are back in service.
    let home = tempfile::tempdir().unwrap();
    let nodes = tokio::process::Command::new("kubectl")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("KUBECONFIG", cluster.kubeconfig())
        .args(["get", "nodes", "--no-headers"])
        .output()
        .await
        .expect("kubectl must be on the PATH");
    let nodes = String::from_utf8_lossy(&nodes.stdout);
    assert_eq!(nodes.lines().count(), 9, "{nodes}");
    assert!(
        nodes
            .lines()
            .all(|l| l.split_whitespace().nth(1) == Some("Ready")),
        "every node Ready and schedulable after the run:\n{nodes}"
    );
}

#[tokio::test]
async fn simulate_on_a_cluster_refuses_what_it_cannot_do_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml").display().to_string();
    for (args, expected) in [
        (
            vec!["simulate", "--cluster-kubeconfig", "kc.yaml", "--serve"],
            "cannot be used with",
        ),
        (
            vec![
                "simulate",
                "--cluster-kubeconfig",
                "kc.yaml",
                "--snapshot",
                "s.yaml",
            ],
            "cannot be used with",
        ),
        (
            vec!["simulate", "--cluster-kubeconfig", &missing],
            "missing.yaml",
        ),
    ] {
        let out = nmo(&args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
