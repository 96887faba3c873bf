//! `nmo simulate`, the main job, run as a user runs it: the binary on the embedded examples.

use std::process::Command;

fn nmo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nmo"))
        .args(args)
        .output()
        .expect("the nmo binary runs")
}

#[test]
fn simulate_plays_the_embedded_examples_and_summarises() {
    // From Friday evening until every window finished a round: the weekly Saturday window
    // (02:00 Berlin = 01:00 UTC) and one nightly GPU window (01:30 New York = 06:30 UTC).
    // At 200x rather than the default 600x: the virtual clock does not wait for a loaded
    // machine, and a drain slowed by other builds must not run into its nodeTimeout.
    let out = nmo(&[
        "simulate",
        "--start",
        "2026-11-27T20:00:00Z",
        "--speed",
        "200",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "weekly-workers       WindowOpened",
        "weekly-workers       RoundCompleted           round 1 completed: 6 node(s) maintained, 0 failed",
        "nightly-gpu-reboot   RoundCompleted           round 1 completed: 3 node(s) maintained, 0 failed",
        "gpu-2                rebooting (NotReady)",
        "gpu-2                rebooted: new bootID, Ready",
        "skipping ahead",
        "every window finished a round; stopping",
        "Summary:",
        "  round 1: 6/6 nodes in ",
        "  round 1: 3/3 nodes in ",
        "No PodDisruptionBudget blocked an eviction.",
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
    assert_eq!(
        row("weekly-workers")[6],
        "2/2",
        "the budget of 2 is used, never exceeded"
    );
    assert_eq!(row("nightly-gpu-reboot")[1..6], ["1", "1", "3", "3", "0"]);
    assert_eq!(
        row("nightly-gpu-reboot")[6],
        "1/1",
        "20% of 3 nodes rounds up to 1"
    );
    // --nodes 9 (the default) means 9 nodes: 6 workers and 3 GPU nodes, every one reached.
    assert!(!stdout.contains("never reached"), "{stdout}");
    // The weekly window opens at 01:00 UTC on Saturday, and nothing starts before.
    let first_start = stdout
        .lines()
        .find(|l| l.contains("weekly-workers") && l.contains("NodeMaintenanceStarted"))
        .unwrap();
    assert!(
        first_start.starts_with("Sat 2026-11-28 01:0"),
        "{first_start}"
    );
}

#[test]
fn simulate_rejects_bad_input_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml").to_string_lossy().into_owned();
    std::fs::write(
        &bad,
        "apiVersion: nodemaintenance.medik8s.io/v1alpha1\nkind: MaintenanceWindow\nmetadata: {name: w}\nspec:\n  schedule: \"0 2 * * 6\"\n  timeZone: Europe/Berln\n  duration: 4h\n  nodeSelector: {matchLabels: {a: b}}\n  release: {after: 10m}\n",
    )
    .unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let not_yaml = write("not-yaml.yaml", "nodes: [worker-1\n");
    let not_k8s = write(
        "not-k8s.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\nnodes: 3\nzone: a\n",
    );
    let no_nodes = write(
        "no-nodes.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec: {containers: [{name: c, image: i}]}\n",
    );
    for (args, expected) in [
        (
            vec!["simulate", "/no/such/window.yaml"],
            "/no/such/window.yaml: cannot read",
        ),
        (
            vec!["simulate", "--speed", "0"],
            "--speed 0: must be a number greater than 0",
        ),
        (
            vec!["simulate", "--start", "friday"],
            "--start \"friday\": not an RFC 3339 time",
        ),
        (vec!["simulate", "--for", "a week"], "--for \"a week\""),
        (
            vec!["simulate", "--serve"],
            "--serve needs --kubeconfig PATH",
        ),
        (vec!["simulate", &bad], "bad.yaml:0: "),
        (vec!["simulate", &bad], "Europe/Berln"),
        (
            vec!["simulate", "--snapshot", "/no/such/snapshot.yaml"],
            "/no/such/snapshot.yaml: cannot read",
        ),
        (
            vec!["simulate", "--snapshot", &not_yaml],
            "not-yaml.yaml:0: invalid YAML",
        ),
        (
            vec!["simulate", "--snapshot", &not_k8s],
            "not-k8s.yaml:1: not a Kubernetes object (no apiVersion and kind)",
        ),
        (
            vec!["simulate", "--snapshot", &no_nodes],
            "no-nodes.yaml: no Node in the snapshot",
        ),
        (
            vec!["simulate", "--reboot-time", "soon"],
            "--reboot-time \"soon\"",
        ),
        (
            vec!["simulate", "--gpu-share", "2"],
            "--gpu-share 2: must be between 0 and 1",
        ),
        (vec!["simulate", "-o", "xml"], "invalid value 'xml'"),
    ] {
        let out = nmo(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// A snapshot whose PDB allows no disruption: the node holding its pod is reported blocked,
/// with the PDB's namespace and name, in the JSON report.
#[test]
fn simulate_reports_a_node_blocked_by_a_snapshot_pdb_as_json() {
    let snapshot = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/snapshot-blocking-pdb.yaml"
    );
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let out = nmo(&[
        "simulate",
        examples,
        "--snapshot",
        snapshot,
        "--start",
        "2026-11-27T20:00:00Z",
        "-o",
        "json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON report ({e}):\n{stdout}"));
    assert_eq!(
        report["blockingPdbs"],
        serde_json::json!([{"pdb": "shop/db", "nodes": ["worker-a"]}]),
        "{report:#}"
    );
    let weekly = report["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "weekly-workers")
        .expect("a weekly-workers report");
    assert_eq!(weekly["selected"], 3, "{weekly:#}");
    let worker_a = weekly["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "worker-a")
        .expect("worker-a was started");
    assert_eq!(
        worker_a["blockedBy"],
        serde_json::json!(["shop/db"]),
        "{worker_a:#}"
    );
    assert_eq!(
        worker_a["drained"],
        serde_json::Value::Null,
        "never drained: {worker_a:#}"
    );
    assert_eq!(
        worker_a["failed"], true,
        "failed at nodeTimeout: {worker_a:#}"
    );
    // The GPU node has no blocking PDB: its round completes.
    let nightly = report["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "nightly-gpu-reboot")
        .unwrap();
    assert_eq!(nightly["rounds"][0]["completed"], 1, "{nightly:#}");
    assert!(nightly["rounds"][0]["finished"].is_string(), "{nightly:#}");
    assert_eq!(report["budgetViolations"], serde_json::json!([]));
}

#[test]
fn a_fake_alert_holds_a_gated_window_until_it_has_been_clear_for_its_for() {
    // The window opens at 01:00 UTC (02:00 Berlin); the fake alert fires from 01:00 to 02:30,
    // and the gate's `for` is 10m: no node may start before 02:40, and the round completes.
    let out = nmo(&[
        "simulate",
        "tests/data/gated-window.yaml",
        "--nodes",
        "4",
        "--start",
        "2026-12-03T00:00:00Z",
        "--fake-alert",
        "1h/2026-12-03T02:30:00Z",
        "--speed",
        "200",
        "-o",
        "json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON report");
    let window = &report["windows"][0];
    assert_eq!(window["name"], "gated");
    assert_eq!(window["roundsCompleted"], 1, "{window:#}");
    let nodes = window["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 4, "{window:#}");
    for node in nodes {
        let started: chrono::DateTime<chrono::Utc> =
            node["started"].as_str().unwrap().parse().unwrap();
        assert!(
            started
                >= "2026-12-03T02:40:00Z"
                    .parse::<chrono::DateTime<chrono::Utc>>()
                    .unwrap(),
            "{} started while the gate held: {node:#}",
            node["node"]
        );
    }
}

#[test]
fn a_fake_alert_that_is_not_a_span_is_refused() {
    for (span, says) in [
        ("1h", "expected START/END"),
        ("2h/1h", "END must be after START"),
        (
            "soon/2h",
            "\"soon\" is neither an RFC 3339 time nor a Go duration",
        ),
    ] {
        let out = nmo(&["simulate", "--fake-alert", span]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{span}: {stderr}");
        assert!(stderr.contains(says), "{span}: {stderr}");
    }
}

/// A heavy round at an absurd `--speed`: 100 nodes, 25 at a time, at a million virtual seconds
/// per real second. No machine drains 25 nodes in the microseconds that would give them, so
/// the clock's governor must hold virtual time back while the controllers lag
/// (nmo::simulate::pace); otherwise every node would blow its 2h nodeTimeout and, with
/// maxFailures 0, the round would stall.
#[test]
fn a_heavy_round_at_an_absurd_speed_completes_with_no_failed_node() {
    let window = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/heavy-absurd-speed.yaml"
    );
    let out = nmo(&[
        "simulate",
        window,
        "--nodes",
        "100",
        "--speed",
        "1000000",
        "--start",
        "2026-11-28T00:59:00Z",
        "-o",
        "json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON report ({e}):\n{stdout}"));
    let heavy = &report["windows"][0];
    assert_eq!(heavy["name"], "heavy", "{report:#}");
    let round = &heavy["rounds"][0];
    assert_eq!(round["total"], 100, "{heavy:#}");
    assert_eq!(round["completed"], 100, "every node maintained: {round:#}");
    assert_eq!(round["failed"], 0, "no node failed: {round:#}");
    assert!(
        round["finished"].is_string(),
        "the round finished: {round:#}"
    );
    assert_eq!(heavy["failed"], 0, "no NodeFailed Event: {heavy:#}");
    assert_eq!(heavy["budget"], 25, "25% of 100: {heavy:#}");
    let peak = heavy["peakUnavailable"].as_u64().expect("a number");
    assert!(peak > 0 && peak <= 25, "within the budget: {heavy:#}");
    // The clock was held back: far below the speed asked for, and said so.
    let clock = &report["clock"];
    assert_eq!(clock["speed"], 1_000_000.0, "{clock:#}");
    let effective = clock["effectiveSpeed"].as_f64().expect("a number");
    assert!(
        effective > 0.0 && effective < 100_000.0,
        "effective speed {effective}: {clock:#}"
    );
    assert!(
        clock["heldBackShare"].as_f64().expect("a number") > 0.5,
        "{clock:#}"
    );
    assert!(clock["played"]["seconds"].as_i64().expect("seconds") > 0);
}
