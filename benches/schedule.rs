//! Benchmark: the next window of 10,000 MaintenanceWindows (parse once, then `next_window`),
//! with a mix of schedules and zones. Target: under 50 ms in total. Prints the figures.
//!
//! Run with `cargo bench --bench schedule`.

use chrono::{DateTime, Utc};
use nmo::api::{MaintenanceWindowSpec, Release};
use nmo::schedule::WindowPolicy;
use std::hint::black_box;
use std::time::{Duration, Instant};

const WINDOWS: usize = 10_000;

fn specs() -> Vec<MaintenanceWindowSpec> {
    let schedules = [
        "0 2 * * SAT",
        "30 1 * * *",
        "*/15 9-17 * * MON-FRI",
        "0 2 13 * 5",
        "0 3 31 * *",
        "0 0 29 2 *",
        "@weekly",
        "@monthly",
        "0 22 * * 1-5",
        "45 23 1,15 * *",
    ];
    let zones = [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Asia/Tokyo",
        "Australia/Lord_Howe",
        "America/Santiago",
        "Asia/Kolkata",
    ];
    (0..WINDOWS)
        .map(|i| MaintenanceWindowSpec {
            schedule: schedules[i % schedules.len()].to_string(),
            time_zone: Some(zones[i % zones.len()].to_string()),
            duration: format!("{}h", 1 + i % 6),
            node_selector: Default::default(),
            max_unavailable: None,
            reason: None,
            release: Release {
                after: Some("30m".into()),
                on_reboot: None,
            },
            node_timeout: None,
            min_ready_seconds: None,
            max_failures: None,
            on_window_end: None,
            suspend: None,
            dry_run: None,
            exclusions: None,
            topology_key: None,
            health_gate: None,
        })
        .collect()
}

fn main() {
    let specs = specs();
    let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2025-03-29T23:30:00Z")
        .unwrap()
        .with_timezone(&Utc);

    let started = Instant::now();
    let policies: Vec<WindowPolicy> = specs
        .iter()
        .map(|s| WindowPolicy::from_spec(s).expect("valid spec"))
        .collect();
    let parse = started.elapsed();

    // Best of 5 runs, so a noisy neighbour does not decide the figure.
    let mut best = Duration::MAX;
    let mut found = 0;
    for _ in 0..5 {
        let started = Instant::now();
        found = policies
            .iter()
            .filter_map(|p| black_box(p.next_window(black_box(now))))
            .count();
        best = best.min(started.elapsed());
    }
    let mut best_current = Duration::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        black_box(
            policies
                .iter()
                .filter_map(|p| p.current_window(black_box(now)))
                .count(),
        );
        best_current = best_current.min(started.elapsed());
    }
    assert_eq!(found, WINDOWS);
    println!(
        "parse {WINDOWS} MaintenanceWindow specs: {:.2} ms",
        parse.as_secs_f64() * 1e3
    );
    println!(
        "next window for {WINDOWS} MaintenanceWindows: {:.2} ms total, {:.2} us each (target < 50 ms total: {})",
        best.as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e6 / WINDOWS as f64,
        if best < Duration::from_millis(50) {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "current window (look-back) for {WINDOWS} MaintenanceWindows: {:.2} ms total",
        best_current.as_secs_f64() * 1e3
    );
}
