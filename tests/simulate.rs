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
    // From Friday evening for 30 hours: the weekly Saturday window (02:00 Berlin = 01:00 UTC)
    // and one nightly GPU window (01:30 New York = 06:30 UTC).
    let out = nmo(&[
        "simulate",
        "--start",
        "2026-11-27T20:00:00Z",
        "--for",
        "30h",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "weekly-workers       WindowOpened",
        "weekly-workers       RoundCompleted           round 1 completed: 6 node(s) maintained, 0 failed",
        "nightly-gpu-reboot   RoundCompleted           round 1 completed: 3 node(s) maintained, 0 failed",
        "gpu-2                rebooted by the simulated node agent",
        "skipping ahead",
        "Summary:",
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
    ] {
        let out = nmo(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
