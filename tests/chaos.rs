//! The chaos harness: both controllers, as two leader-elected replicas, against clusters that
//! fail under them, over many seeded random scenarios. Each scenario mixes MaintenanceWindows
//! opening and closing on a fast virtual clock, ad-hoc NodeMaintenances, nodes failing,
//! rebooting, joining and leaving, a person cordoning, uncordoning and deleting, operator
//! kills, restarts and failovers; on the sandbox also failing requests (500, 409, 429),
//! latency, short watches and an expiring watch history. The invariants are checked on every
//! state (see `chaos/observer.rs`), then the chaos stops and the cluster must converge.
//!
//! Parameters (environment): `NMO_CHAOS_SCENARIOS` (sandbox scenarios, default 40),
//! `NMO_CHAOS_REAL_SCENARIOS` (real control plane, default 10), `NMO_CHAOS_SEED` (first seed,
//! default 1; scenario i has seed + i, and seed + 1000 + i on the real control plane),
//! `NMO_CHAOS_PARALLEL` (sandbox scenarios at once, default 4). A failure prints the seed,
//! the windows, the step log and the violations. See `docs/chaos.md`.

#[path = "support/backend.rs"]
mod backend;
#[path = "support/real_cluster.rs"]
mod real_cluster;

#[path = "chaos/observer.rs"]
mod observer;
#[path = "chaos/operator.rs"]
mod operator;
#[path = "chaos/plan.rs"]
mod plan;
#[path = "chaos/run.rs"]
mod run;

use futures::StreamExt;
use run::Outcome;
use std::time::Instant;

fn env(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

fn summary(what: &str, outcomes: &[Outcome], failures: &[String], started: Instant) -> String {
    let sum = |f: fn(&Outcome) -> u64| outcomes.iter().map(f).sum::<u64>();
    format!(
        "chaos on {what}: {} scenarios ({} passed, {} failed), {} steps, {} faults injected, \
         {} observed changes ({} of windows), {} window NodeMaintenances, {} leader terms, {} feed gaps, \
         {} NodeMaintenances begun without a BeginMaintenance Event, \
         {:.0}s wall ({:.0}s in scenarios)",
        outcomes.len() + failures.len(),
        outcomes.len(),
        failures.len(),
        sum(|o| o.steps as u64),
        sum(|o| o.faults),
        sum(|o| o.changes),
        sum(|o| o.window_changes),
        sum(|o| o.window_nms),
        sum(|o| o.leader_changes as u64),
        sum(|o| o.gaps),
        sum(|o| o.begin_events_missing),
        started.elapsed().as_secs_f64(),
        outcomes.iter().map(|o| o.seconds).sum::<f64>(),
    )
}

fn report(what: &str, results: Vec<Result<Outcome, String>>, started: Instant) {
    let (mut outcomes, mut failures) = (Vec::new(), Vec::new());
    for r in results {
        match r {
            Ok(o) => outcomes.push(o),
            Err(e) => failures.push(e),
        }
    }
    let line = summary(what, &outcomes, &failures, started);
    println!("{line}");
    assert!(
        failures.is_empty(),
        "{line}\n\n{}",
        failures.join("\n----------------\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_scenarios_on_the_sandbox_under_faults_keep_every_invariant() {
    let (n, seed, parallel) = (
        env("NMO_CHAOS_SCENARIOS", 40),
        env("NMO_CHAOS_SEED", 1),
        env("NMO_CHAOS_PARALLEL", 4).max(1),
    );
    let started = Instant::now();
    let results: Vec<Result<Outcome, String>> = futures::stream::iter(0..n)
        .map(|i| async move {
            let seed = seed + i;
            match tokio::spawn(run::on_sandbox(seed)).await {
                Ok(r) => r,
                Err(e) => Err(format!("seed {seed}: the scenario panicked: {e}")),
            }
        })
        .buffer_unordered(parallel as usize)
        .collect()
        .await;
    report("the sandbox", results, started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_scenarios_on_a_real_control_plane_keep_every_invariant() {
    let (n, seed) = (
        env("NMO_CHAOS_REAL_SCENARIOS", 10),
        env("NMO_CHAOS_SEED", 1) + 1000,
    );
    let started = Instant::now();
    let backend = backend::Backend::real().await;
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/");
    backend.kubectl_ok(&["apply", "-f", crds]).await;
    backend
        .kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ])
        .await;
    let mut results = Vec::new();
    for i in 0..n {
        results.push(run::on_real(&backend, seed + i).await);
    }
    report("a real control plane", results, started);
}
