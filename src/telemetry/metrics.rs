//! nmo's metrics: every series `/metrics` serves, and the calls that update them.
//!
//! Labels are bounded: controller names, error categories, eviction outcomes, phases and
//! MaintenanceWindow names. Never a node or pod name. The window series are computed from the
//! MaintenanceWindow controller's cache at scrape time, so a deleted window's series goes with
//! it.

use super::registry::{Counter, Desc, Encode, Gauge, Histogram, Sourced};
use std::time::Duration;

/// `controller` label of the NodeMaintenance controller.
pub const NODE_MAINTENANCE: &str = "node_maintenance";
/// `controller` label of the MaintenanceWindow controller.
pub const MAINTENANCE_WINDOW: &str = "maintenance_window";

/// Upper bounds of `nmo_reconcile_duration_seconds`.
pub const RECONCILE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Upper bounds of `nmo_drain_duration_seconds`: a second to four hours.
pub const DRAIN_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

/// The phases `nmo_node_maintenances` always shows; `Pending` is a NodeMaintenance without a
/// phase yet.
pub const PHASES: [&str; 4] = ["Pending", "Running", "Succeeded", "Failed"];

/// What one eviction request came to, as the `outcome` label of `nmo_evictions_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictionLabel {
    /// Accepted.
    Evicted,
    /// The pod was already gone.
    Gone,
    /// Refused by a PodDisruptionBudget.
    BlockedByPdb,
    /// Any other failure (including API throttling).
    Failed,
}

impl EvictionLabel {
    fn as_str(self) -> &'static str {
        match self {
            EvictionLabel::Evicted => "evicted",
            EvictionLabel::Gone => "gone",
            EvictionLabel::BlockedByPdb => "blocked_by_pdb",
            EvictionLabel::Failed => "failed",
        }
    }
}

/// Every metric of the operator. One instance is shared by the controllers and the `/metrics`
/// server; tests make their own, so that concurrent tests do not add to each other's counts.
pub struct Metrics {
    /// `nmo_windows_open{window}`: 1 while the window is open, else 0. From the cache.
    pub windows_open: Sourced<1>,
    /// `nmo_nodes_in_maintenance`: nodes named by a NodeMaintenance that has not failed. From
    /// the cache.
    pub nodes_in_maintenance: Sourced<0>,
    /// `nmo_node_maintenances{phase}`: NodeMaintenances by phase. From the cache.
    pub node_maintenances: Sourced<1>,
    /// `nmo_drain_duration_seconds`: how long completed drains took (on the controller's
    /// clock), from the drain task's start.
    pub drain_duration: Histogram<0>,
    /// `nmo_evictions_total{outcome}`: eviction requests by outcome.
    pub evictions: Counter<1>,
    /// `nmo_evictions_blocked_by_pdb_total`: evictions a PodDisruptionBudget refused.
    pub evictions_blocked: Counter<0>,
    /// `nmo_failures_total{category}`: maintenance failures.
    pub failures: Counter<1>,
    /// `nmo_reconcile_total{controller}`: reconciles run.
    pub reconciles: Counter<1>,
    /// `nmo_reconcile_errors_total{controller,category}`: reconciles that failed.
    pub reconcile_errors: Counter<2>,
    /// `nmo_reconcile_duration_seconds{controller}`: how long reconciles took.
    pub reconcile_duration: Histogram<1>,
    /// `nmo_config_last_reload_successful`: whether the last load of `--config` worked.
    pub config_last_reload_successful: Gauge<0>,
    /// `nmo_health_gate_blocks_total{reason}`: plans in which the health gate held back node
    /// starts, by reason (`QueryFiring`, `Clearing`, `PrometheusUnreachable`, ...).
    pub health_gate_blocks: Counter<1>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every series at its start value: counters 0, `nmo_config_last_reload_successful` 1
    /// (nothing has failed to load yet), no window series.
    pub fn new() -> Self {
        let m = Metrics {
            windows_open: Sourced::new(Desc {
                name: "nmo_windows_open",
                help: "Whether the MaintenanceWindow is open (1) or closed (0).",
                labels: ["window"],
            }),
            nodes_in_maintenance: Sourced::new(Desc {
                name: "nmo_nodes_in_maintenance",
                help: "Nodes named by a NodeMaintenance that has not failed.",
                labels: [],
            }),
            node_maintenances: Sourced::new(Desc {
                name: "nmo_node_maintenances",
                help: "NodeMaintenances by phase (Pending: no phase yet).",
                labels: ["phase"],
            }),
            drain_duration: Histogram::new(
                Desc {
                    name: "nmo_drain_duration_seconds",
                    help: "Time from the start of a drain to no evictable pod left on the node.",
                    labels: [],
                },
                DRAIN_BUCKETS,
            ),
            evictions: Counter::new(Desc {
                name: "nmo_evictions_total",
                help: "Eviction requests sent, by outcome.",
                labels: ["outcome"],
            }),
            evictions_blocked: Counter::new(Desc {
                name: "nmo_evictions_blocked_by_pdb_total",
                help: "Eviction requests refused by a PodDisruptionBudget.",
                labels: [],
            }),
            failures: Counter::new(Desc {
                name: "nmo_failures_total",
                help: "Maintenance failures, by category.",
                labels: ["category"],
            }),
            reconciles: Counter::new(Desc {
                name: "nmo_reconcile_total",
                help: "Reconciles run, by controller.",
                labels: ["controller"],
            }),
            reconcile_errors: Counter::new(Desc {
                name: "nmo_reconcile_errors_total",
                help: "Reconciles that failed, by controller and error category.",
                labels: ["controller", "category"],
            }),
            reconcile_duration: Histogram::new(
                Desc {
                    name: "nmo_reconcile_duration_seconds",
                    help: "How long reconciles took, by controller.",
                    labels: ["controller"],
                },
                RECONCILE_BUCKETS,
            ),
            config_last_reload_successful: Gauge::new(Desc {
                name: "nmo_config_last_reload_successful",
                help: "Whether the last load of the --config file succeeded (1) or failed (0).",
                labels: [],
            }),
            health_gate_blocks: Counter::new(Desc {
                name: "nmo_health_gate_blocks_total",
                help: "Plans in which a MaintenanceWindow's health gate held back node starts, by reason.",
                labels: ["reason"],
            }),
        };
        m.config_last_reload_successful.set([], 1.0);
        for outcome in [
            EvictionLabel::Evicted,
            EvictionLabel::Gone,
            EvictionLabel::BlockedByPdb,
            EvictionLabel::Failed,
        ] {
            m.evictions.touch([outcome.as_str()]);
        }
        m
    }

    /// Show the per-controller series of `controller` at 0: it has started.
    pub fn controller_started(&self, controller: &'static str) {
        self.reconciles.touch([controller]);
        self.reconcile_duration.touch([controller]);
    }

    /// Record one reconcile of `controller` that took `elapsed` and failed with `error` (a
    /// bounded category) or succeeded.
    pub fn reconciled(&self, controller: &'static str, elapsed: Duration, error: Option<&str>) {
        self.reconciles.inc([controller]);
        self.reconcile_duration
            .observe([controller], elapsed.as_secs_f64());
        if let Some(category) = error {
            self.reconcile_errors.inc([controller, category]);
        }
    }

    /// Record one eviction request's outcome.
    pub fn evicted(&self, outcome: EvictionLabel) {
        self.evictions.inc([outcome.as_str()]);
        if outcome == EvictionLabel::BlockedByPdb {
            self.evictions_blocked.inc([]);
        }
    }

    /// Record a completed drain that took `elapsed`.
    pub fn drain_completed(&self, elapsed: Duration) {
        self.drain_duration.observe([], elapsed.as_secs_f64());
    }

    /// Record a maintenance failure of a bounded `category` (`NodeNotFound`, `LeaseLost`,
    /// `NodeTimeout`, ...).
    pub fn failed(&self, category: &str) {
        self.failures.inc([category]);
    }

    /// Set `nmo_config_last_reload_successful`: the config loader calls this after every load
    /// of `--config`, initial or on change.
    pub fn config_reloaded(&self, successful: bool) {
        self.config_last_reload_successful
            .set([], if successful { 1.0 } else { 0.0 });
    }

    /// Record a plan in which the health gate held back starts, for a bounded `reason`.
    pub fn health_gate_blocked(&self, reason: &str) {
        self.health_gate_blocks.inc([reason]);
    }

    /// Every series in the text exposition format 0.0.4.
    pub fn encode(&self) -> String {
        let families: [&dyn Encode; 12] = [
            &self.windows_open,
            &self.nodes_in_maintenance,
            &self.node_maintenances,
            &self.drain_duration,
            &self.evictions,
            &self.evictions_blocked,
            &self.failures,
            &self.reconciles,
            &self.reconcile_errors,
            &self.reconcile_duration,
            &self.config_last_reload_successful,
            &self.health_gate_blocks,
        ];
        let mut out = String::new();
        for family in families {
            family.encode(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn a_fresh_registry_shows_every_family_with_its_start_values() {
        let m = Metrics::new();
        let text = m.encode();
        for name in [
            "nmo_windows_open",
            "nmo_nodes_in_maintenance",
            "nmo_node_maintenances",
            "nmo_drain_duration_seconds",
            "nmo_evictions_total",
            "nmo_evictions_blocked_by_pdb_total",
            "nmo_failures_total",
            "nmo_reconcile_total",
            "nmo_reconcile_errors_total",
            "nmo_reconcile_duration_seconds",
            "nmo_config_last_reload_successful",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}: {text}");
        }
        assert_eq!(
            sample(&text, "nmo_config_last_reload_successful"),
            Some("1")
        );
        assert_eq!(
            sample(&text, "nmo_evictions_blocked_by_pdb_total"),
            Some("0")
        );
        assert_eq!(
            sample(&text, "nmo_evictions_total{outcome=\"evicted\"}"),
            Some("0")
        );
        assert_eq!(sample(&text, "nmo_drain_duration_seconds_count"), Some("0"));
    }

    #[test]
    fn reconciles_are_counted_timed_and_their_errors_categorised() {
        let m = Metrics::new();
        m.controller_started(NODE_MAINTENANCE);
        m.reconciled(NODE_MAINTENANCE, Duration::from_millis(3), None);
        m.reconciled(
            NODE_MAINTENANCE,
            Duration::from_millis(30),
            Some("PatchNode"),
        );
        let text = m.encode();
        assert_eq!(
            sample(
                &text,
                "nmo_reconcile_total{controller=\"node_maintenance\"}"
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                "nmo_reconcile_errors_total{controller=\"node_maintenance\",category=\"PatchNode\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                "nmo_reconcile_duration_seconds_bucket{controller=\"node_maintenance\",le=\"0.005\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                "nmo_reconcile_duration_seconds_count{controller=\"node_maintenance\"}"
            ),
            Some("2")
        );
    }

    #[test]
    fn a_blocked_eviction_counts_in_both_eviction_series() {
        let m = Metrics::new();
        m.evicted(EvictionLabel::BlockedByPdb);
        m.evicted(EvictionLabel::Evicted);
        let text = m.encode();
        assert_eq!(
            sample(&text, "nmo_evictions_blocked_by_pdb_total"),
            Some("1")
        );
        assert_eq!(
            sample(&text, "nmo_evictions_total{outcome=\"blocked_by_pdb\"}"),
            Some("1")
        );
        assert_eq!(
            sample(&text, "nmo_evictions_total{outcome=\"evicted\"}"),
            Some("1")
        );
    }

    #[test]
    fn a_failed_config_load_sets_the_gauge_to_zero_until_a_good_one() {
        let m = Metrics::new();
        m.config_reloaded(false);
        assert_eq!(
            sample(&m.encode(), "nmo_config_last_reload_successful"),
            Some("0")
        );
        m.config_reloaded(true);
        assert_eq!(
            sample(&m.encode(), "nmo_config_last_reload_successful"),
            Some("1")
        );
    }
}
