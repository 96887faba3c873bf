//! What a simulation saw, and the report made of it: per window the nodes maintained and
//! when, round durations, the longest node and the longest unavailability, the peak of nodes
//! unavailable against the budget, the PDBs that blocked, the nodes never reached, and for an
//! unfinished round how many windows it will need at the pace measured.
//!
//! [`Observations`] is filled by the watchers of a run; [`build_report`] is pure.

use crate::api::MaintenanceWindow;
use crate::api::maintenance_window::RoundStatus;
use crate::schedule::{format_duration, resolve_max_unavailable, selector_matches};
use chrono::{DateTime, Duration, Utc};
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One NodeMaintenance seen during a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// The NodeMaintenance's name.
    pub name: String,
    /// The window that created it (none for an ad-hoc one).
    pub window: Option<String>,
    /// Its node.
    pub node: String,
    /// Created.
    pub started: Option<DateTime<Utc>>,
    /// Drain succeeded.
    pub drained: Option<DateTime<Utc>>,
    /// Deleted (the node released).
    pub released: Option<DateTime<Utc>>,
    /// The PDBs (`namespace/name`) that blocked one of its evictions.
    pub blocked_by: BTreeSet<String>,
}

/// Event counts of one window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// WindowOpened.
    pub opened: u32,
    /// RoundCompleted.
    pub rounds_completed: u32,
    /// NodeMaintenanceStarted.
    pub started: u32,
    /// NodeReleased.
    pub released: u32,
    /// NodeFailed.
    pub failed: u32,
}

/// A window opening: start and end.
pub type Opening = (DateTime<Utc>, DateTime<Utc>);

/// Everything the watchers of a run collect.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    /// MaintenanceWindow Events printed.
    pub events: usize,
    /// Events already counted: (Event name, count).
    pub seen_events: BTreeSet<(String, i32)>,
    /// Event counts per window.
    pub counts: BTreeMap<String, EventCounts>,
    /// NodeMaintenances by uid.
    pub maintenances: BTreeMap<String, Maintenance>,
    /// Per window, the most of its selected nodes unavailable at once.
    pub peak_unavailable: BTreeMap<String, usize>,
    /// Per node, since when it is unavailable (cordoned or not Ready).
    pub unavailable_since: BTreeMap<String, DateTime<Utc>>,
    /// Per node, its longest unavailability so far.
    pub longest_unavailable: BTreeMap<String, Duration>,
    /// Per window, the windows seen open (start, end).
    pub openings: BTreeMap<String, BTreeSet<Opening>>,
    /// Per window, the last status seen of each round, by number.
    pub rounds: BTreeMap<String, BTreeMap<i64, RoundStatus>>,
}

impl Observations {
    /// A node's availability at `now`: closes or opens its unavailability.
    pub fn node_availability(&mut self, node: &str, available: bool, now: DateTime<Utc>) {
        if available {
            if let Some(since) = self.unavailable_since.remove(node) {
                let d = now - since;
                let longest = self
                    .longest_unavailable
                    .entry(node.to_string())
                    .or_default();
                *longest = (*longest).max(d);
            }
        } else {
            self.unavailable_since
                .entry(node.to_string())
                .or_insert(now);
        }
    }

    /// Record a window's status: its current opening and its round.
    pub fn window_status(&mut self, w: &MaintenanceWindow) {
        let name = w.name_any();
        let Some(s) = w.status.as_ref() else { return };
        if let Some(c) = &s.current_window {
            self.openings.entry(name.clone()).or_default().insert((
                crate::api::from_time(&c.start),
                crate::api::from_time(&c.end),
            ));
        }
        if let Some(r) = &s.round {
            self.rounds
                .entry(name)
                .or_default()
                .insert(r.number, r.clone());
        }
    }
}

/// The PDB of a NodeMaintenance's `lastError` ("cannot evict pod NS/POD: blocked by
/// PodDisruptionBudget NAME: …"), as `NS/NAME`.
pub fn blocking_pdb(last_error: &str) -> Option<String> {
    let rest = last_error.strip_prefix("cannot evict pod ")?;
    let (pod, rest) = rest.split_once(": blocked by PodDisruptionBudget ")?;
    let namespace = pod.split_once('/').map(|(ns, _)| ns).unwrap_or("default");
    let name = rest.split(':').next()?.trim();
    (!name.is_empty()).then(|| format!("{namespace}/{name}"))
}

/// A span of time, in seconds and as text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Span {
    /// Seconds.
    pub seconds: i64,
    /// Go duration syntax, such as `1h30m`.
    pub text: String,
}

impl From<Duration> for Span {
    fn from(d: Duration) -> Span {
        Span {
            seconds: d.num_seconds(),
            text: format_duration(Duration::seconds(d.num_seconds())),
        }
    }
}

/// One node's maintenance by a window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    /// Node name.
    pub node: String,
    /// NodeMaintenance created.
    pub started: Option<DateTime<Utc>>,
    /// Drain succeeded.
    pub drained: Option<DateTime<Utc>>,
    /// Released; none while still in maintenance at the end of the run.
    pub released: Option<DateTime<Utc>>,
    /// From creation to release (or to the end of the run).
    pub duration: Option<Span>,
    /// Counted as failed by its window.
    pub failed: bool,
    /// PDBs (`namespace/name`) that blocked its drain.
    pub blocked_by: Vec<String>,
}

/// One round of a window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoundReport {
    /// Round number.
    pub number: i64,
    /// Started.
    pub started: Option<DateTime<Utc>>,
    /// Finished, if it did.
    pub finished: Option<DateTime<Utc>>,
    /// From start to finish (or to the end of the run), in virtual time.
    pub duration: Option<Span>,
    /// Nodes in the round.
    pub total: i32,
    /// Nodes maintained and released.
    pub completed: i32,
    /// Nodes failed.
    pub failed: i32,
    /// For an unfinished round: windows still needed at the pace measured (nodes finished per
    /// window opening so far); none when no node finished yet.
    pub windows_needed: Option<u64>,
}

/// Everything about one MaintenanceWindow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowReport {
    /// Its name.
    pub name: String,
    /// Nodes it selects at the end of the run.
    pub selected: usize,
    /// maxUnavailable resolved against them.
    pub budget: usize,
    /// Most of its selected nodes unavailable at once.
    pub peak_unavailable: usize,
    /// Windows opened (Events).
    pub windows_opened: u32,
    /// Rounds completed (Events).
    pub rounds_completed: u32,
    /// Node maintenances started (Events).
    pub started: u32,
    /// Nodes released (Events).
    pub released: u32,
    /// Nodes failed (Events).
    pub failed: u32,
    /// The openings seen.
    pub openings: Vec<Opening>,
    /// Its rounds.
    pub rounds: Vec<RoundReport>,
    /// Each node it maintained, in start order.
    pub nodes: Vec<NodeReport>,
    /// The node whose maintenance took longest.
    pub longest_node: Option<(String, Span)>,
    /// The longest time one of its selected nodes was unavailable (cordoned or not Ready).
    pub longest_unavailable: Option<(String, Span)>,
    /// Selected nodes it never started.
    pub never_reached: Vec<String>,
}

/// A PDB that refused evictions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlockingPdb {
    /// `namespace/name`.
    pub pdb: String,
    /// The nodes whose drain it held up.
    pub nodes: Vec<String>,
}

/// The report of a run (`-o json` prints it as it is).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Virtual start.
    pub start: DateTime<Utc>,
    /// Virtual end.
    pub end: DateTime<Utc>,
    /// Virtual time covered.
    pub virtual_span: Span,
    /// Real seconds taken.
    pub real_seconds: f64,
    /// MaintenanceWindow Events seen.
    pub events: usize,
    /// Per window.
    pub windows: Vec<WindowReport>,
    /// PDBs that blocked an eviction.
    pub blocking_pdbs: Vec<BlockingPdb>,
    /// Ad-hoc NodeMaintenances (no window).
    pub ad_hoc: Vec<NodeReport>,
    /// Windows whose peak went over their budget (never expected).
    pub budget_violations: Vec<String>,
    /// How fast the virtual clock ran (see `crate::simulate::pace`).
    pub clock: ClockReport,
}

/// How fast the virtual clock ran over a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClockReport {
    /// `--speed`: virtual seconds per real second at full pace.
    pub speed: f64,
    /// Virtual time played at the clock's pace (the idle jumps left out).
    pub played: Span,
    /// `played` over the real time: virtual seconds per real second.
    pub effective_speed: f64,
    /// The share of the run the governor held the clock below `speed` because the
    /// controllers lagged.
    pub held_back_share: f64,
    /// The largest lag measured, in milliseconds.
    pub max_lag_ms: u64,
}

impl ClockReport {
    /// The clock's figures from the run's `speed`, virtual time `played`, `real` time and the
    /// governor's summary.
    pub fn new(
        speed: f64,
        played: Duration,
        real: std::time::Duration,
        pace: &super::pace::PaceSummary,
    ) -> ClockReport {
        ClockReport {
            speed,
            played: Span::from(played),
            effective_speed: super::pace::effective_speed(played, real).round(),
            held_back_share: (pace.held_share * 100.0).round() / 100.0,
            max_lag_ms: pace.max_lag.as_millis() as u64,
        }
    }
}

fn node_report(m: &Maintenance, failed: bool, end: DateTime<Utc>) -> NodeReport {
    NodeReport {
        node: m.node.clone(),
        started: m.started,
        drained: m.drained,
        released: m.released,
        duration: m.started.map(|s| Span::from(m.released.unwrap_or(end) - s)),
        failed,
        blocked_by: m.blocked_by.iter().cloned().collect(),
    }
}

fn round_report(r: &RoundStatus, openings: usize, end: DateTime<Utc>) -> RoundReport {
    let started = r.started.as_ref().map(crate::api::from_time);
    let finished = r.finished.as_ref().map(crate::api::from_time);
    let remaining = (r.total - r.completed - r.failed).max(0) as u64;
    let done = (r.completed + r.failed).max(0) as u64;
    let windows_needed = match (finished, openings as u64) {
        (Some(_), _) | (None, 0) => None,
        (None, _) if remaining == 0 => Some(0),
        (None, _) if done == 0 => None,
        // Nodes per opening so far; the current opening counts as one.
        (None, n) => Some((remaining * n).div_ceil(done)),
    };
    RoundReport {
        number: r.number,
        started,
        finished,
        duration: started.map(|s| Span::from(finished.unwrap_or(end) - s)),
        total: r.total,
        completed: r.completed,
        failed: r.failed,
        windows_needed,
    }
}

/// Make the report of a run from what was observed, the windows and nodes at its end.
pub fn build_report(
    obs: &Observations,
    windows: &[MaintenanceWindow],
    nodes: &[Node],
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    real: std::time::Duration,
) -> Report {
    let mut reports = Vec::new();
    let mut violations = Vec::new();
    for w in windows {
        let name = w.name_any();
        let selected: Vec<String> = nodes
            .iter()
            .filter(|n| selector_matches(&w.spec.node_selector, n.labels()))
            .map(|n| n.name_any())
            .collect();
        let budget = resolve_max_unavailable(&w.spec.max_unavailable_or_default(), selected.len());
        let rounds_seen = obs.rounds.get(&name);
        let failed_nodes: BTreeSet<&str> = rounds_seen
            .into_iter()
            .flat_map(|r| r.values())
            .flat_map(|r| r.failed_nodes.iter().map(|f| f.name.as_str()))
            .collect();
        let mut mine: Vec<&Maintenance> = obs
            .maintenances
            .values()
            .filter(|m| m.window.as_deref() == Some(name.as_str()))
            .collect();
        mine.sort_by(|a, b| (a.started, &a.node).cmp(&(b.started, &b.node)));
        let node_reports: Vec<NodeReport> = mine
            .iter()
            .map(|m| node_report(m, failed_nodes.contains(m.node.as_str()), end))
            .collect();
        let longest_node = node_reports
            .iter()
            .filter_map(|n| n.duration.as_ref().map(|d| (n.node.clone(), d.clone())))
            .max_by_key(|(_, d)| d.seconds);
        let longest_unavailable = selected
            .iter()
            .filter_map(|n| {
                let closed = obs.longest_unavailable.get(n).copied();
                let open = obs.unavailable_since.get(n).map(|s| end - *s);
                closed.max(open).map(|d| (n.clone(), d))
            })
            .max_by_key(|(_, d)| *d)
            .map(|(n, d)| (n, Span::from(d)));
        let reached: BTreeSet<&str> = mine.iter().map(|m| m.node.as_str()).collect();
        let never_reached = selected
            .iter()
            .filter(|n| !reached.contains(n.as_str()))
            .cloned()
            .collect();
        let openings: Vec<_> = obs
            .openings
            .get(&name)
            .map(|o| o.iter().copied().collect())
            .unwrap_or_default();
        let rounds = rounds_seen
            .into_iter()
            .flat_map(|r| r.values())
            .map(|r| {
                let started = r.started.as_ref().map(crate::api::from_time);
                let during = openings
                    .iter()
                    .filter(|(_, e)| started.is_none_or(|s| *e > s))
                    .count();
                round_report(r, during, end)
            })
            .collect();
        let counts = obs.counts.get(&name).cloned().unwrap_or_default();
        let peak = obs.peak_unavailable.get(&name).copied().unwrap_or(0);
        if peak > budget {
            violations.push(name.clone());
        }
        reports.push(WindowReport {
            name,
            selected: selected.len(),
            budget,
            peak_unavailable: peak,
            windows_opened: counts.opened,
            rounds_completed: counts.rounds_completed,
            started: counts.started,
            released: counts.released,
            failed: counts.failed,
            openings,
            rounds,
            nodes: node_reports,
            longest_node,
            longest_unavailable,
            never_reached,
        });
    }
    reports.sort_by(|a, b| a.name.cmp(&b.name));
    let mut blocking: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for m in obs.maintenances.values() {
        for pdb in &m.blocked_by {
            blocking.entry(pdb).or_default().insert(&m.node);
        }
    }
    let mut ad_hoc: Vec<NodeReport> = obs
        .maintenances
        .values()
        .filter(|m| m.window.is_none())
        .map(|m| node_report(m, false, end))
        .collect();
    ad_hoc.sort_by(|a, b| (a.started, &a.node).cmp(&(b.started, &b.node)));
    Report {
        start,
        end,
        virtual_span: Span::from(end - start),
        real_seconds: (real.as_secs_f64() * 10.0).round() / 10.0,
        events: obs.events,
        windows: reports,
        blocking_pdbs: blocking
            .into_iter()
            .map(|(pdb, nodes)| BlockingPdb {
                pdb: pdb.to_string(),
                nodes: nodes.into_iter().map(str::to_string).collect(),
            })
            .collect(),
        ad_hoc,
        budget_violations: violations,
        clock: ClockReport::default(),
    }
}

fn stamp(t: &DateTime<Utc>) -> String {
    t.format("%a %m-%d %H:%M").to_string()
}

fn opt_stamp(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(stamp).unwrap_or_else(|| "-".into())
}

/// The report as text: the table of windows, then per window its rounds and nodes, then the
/// PDBs that blocked and the nodes never reached.
pub fn render_report(r: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "\nSummary: {} of virtual time in {:.1} s real, {} events\n",
        r.virtual_span.text, r.real_seconds, r.events
    ));
    if r.clock.speed > 0.0 {
        out.push_str(&format!(
            "Clock: virtual {} played in {:.1} s, {}x effective (--speed {}; held back {:.0}% of the time, lag up to {} ms)\n",
            r.clock.played.text,
            r.real_seconds,
            r.clock.effective_speed,
            r.clock.speed,
            r.clock.held_back_share * 100.0,
            r.clock.max_lag_ms
        ));
    }
    out.push_str(&format!(
        "  {:<22} {:>8} {:>7} {:>8} {:>9} {:>7} {:>16}\n",
        "WINDOW", "OPENED", "ROUNDS", "STARTED", "RELEASED", "FAILED", "MAX-UNAVAILABLE"
    ));
    for w in &r.windows {
        out.push_str(&format!(
            "  {:<22} {:>8} {:>7} {:>8} {:>9} {:>7} {:>16}\n",
            w.name,
            w.windows_opened,
            w.rounds_completed,
            w.started,
            w.released,
            w.failed,
            format!("{}/{} (of {})", w.peak_unavailable, w.budget, w.selected)
        ));
    }
    for w in &r.windows {
        out.push_str(&format!("\n{}:\n", w.name));
        for round in &w.rounds {
            let took = round
                .duration
                .as_ref()
                .map(|d| d.text.as_str())
                .unwrap_or("-");
            match (&round.finished, round.windows_needed) {
                (Some(_), _) => out.push_str(&format!(
                    "  round {}: {}/{} nodes in {took} of virtual time ({} - {}), {} failed\n",
                    round.number,
                    round.completed,
                    round.total,
                    opt_stamp(&round.started),
                    opt_stamp(&round.finished),
                    round.failed
                )),
                (None, needed) => out.push_str(&format!(
                    "  round {}: unfinished, {}/{} nodes after {took}, {} failed; {}\n",
                    round.number,
                    round.completed,
                    round.total,
                    round.failed,
                    match needed {
                        Some(0) => "only in-flight nodes left".to_string(),
                        Some(n) => format!("needs about {n} more window(s) at this pace"),
                        None => "no node finished yet, so no pace to estimate from".to_string(),
                    }
                )),
            }
        }
        if let Some((node, d)) = &w.longest_node {
            out.push_str(&format!("  longest node: {node} ({})\n", d.text));
        }
        if let Some((node, d)) = &w.longest_unavailable {
            out.push_str(&format!("  longest unavailability: {node} ({})\n", d.text));
        }
        if !w.nodes.is_empty() {
            out.push_str(
                "  NODE                 STARTED          DRAINED          RELEASED         TOOK\n",
            );
        }
        for n in &w.nodes {
            let mut note = String::new();
            if n.failed {
                note.push_str("  failed");
            }
            if !n.blocked_by.is_empty() {
                note.push_str(&format!("  blocked by PDB {}", n.blocked_by.join(", ")));
            }
            out.push_str(&format!(
                "  {:<20} {:<16} {:<16} {:<16} {}{note}\n",
                n.node,
                opt_stamp(&n.started),
                opt_stamp(&n.drained),
                opt_stamp(&n.released),
                n.duration.as_ref().map(|d| d.text.as_str()).unwrap_or("-"),
            ));
        }
        if !w.never_reached.is_empty() {
            out.push_str(&format!(
                "  never reached ({}): {}\n",
                w.never_reached.len(),
                abbreviate(&w.never_reached, 10)
            ));
        }
    }
    if !r.ad_hoc.is_empty() {
        out.push_str("\nad-hoc NodeMaintenances:\n");
        for n in &r.ad_hoc {
            out.push_str(&format!(
                "  {:<20} {:<16} {:<16} {:<16} {}\n",
                n.node,
                opt_stamp(&n.started),
                opt_stamp(&n.drained),
                opt_stamp(&n.released),
                n.duration.as_ref().map(|d| d.text.as_str()).unwrap_or("-"),
            ));
        }
    }
    if r.blocking_pdbs.is_empty() {
        out.push_str("\nNo PodDisruptionBudget blocked an eviction.\n");
    } else {
        out.push_str("\nPodDisruptionBudgets that blocked evictions:\n");
        for b in &r.blocking_pdbs {
            out.push_str(&format!(
                "  {:<30} on {}\n",
                b.pdb,
                abbreviate(&b.nodes, 10)
            ));
        }
    }
    out
}

fn abbreviate(names: &[String], max: usize) -> String {
    if names.len() <= max {
        names.join(", ")
    } else {
        format!(
            "{}, … ({} more)",
            names[..max].join(", "),
            names.len() - max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, h, m, 0).unwrap()
    }

    #[test]
    fn the_blocking_pdb_is_read_from_last_error() {
        assert_eq!(
            blocking_pdb(
                "cannot evict pod shop/db-0: blocked by PodDisruptionBudget db: Cannot evict pod as it would violate the pod's disruption budget. (and 1 more pods)"
            )
            .as_deref(),
            Some("shop/db")
        );
        assert_eq!(
            blocking_pdb("cannot evict pod shop/db-0: blocked by a PodDisruptionBudget: x"),
            None
        );
        assert_eq!(blocking_pdb("cannot watch the node's pods: boom"), None);
    }

    #[test]
    fn unavailability_is_measured_from_down_to_up() {
        let mut obs = Observations::default();
        obs.node_availability("a", false, t(1, 0));
        obs.node_availability("a", false, t(1, 10));
        obs.node_availability("a", true, t(1, 40));
        obs.node_availability("a", false, t(2, 0));
        obs.node_availability("a", true, t(2, 5));
        assert_eq!(obs.longest_unavailable["a"], Duration::minutes(40));
        assert!(obs.unavailable_since.is_empty());
    }

    fn round(total: i32, completed: i32, finished: bool) -> RoundStatus {
        RoundStatus {
            number: 1,
            started: Some(crate::api::to_time(t(1, 0))),
            finished: finished.then(|| crate::api::to_time(t(3, 0))),
            total,
            completed,
            ..Default::default()
        }
    }

    #[test]
    fn an_unfinished_round_needs_windows_at_the_measured_pace() {
        // 10 of 100 nodes in 2 openings: 5 per window, 90 left, 18 more windows.
        let r = round_report(&round(100, 10, false), 2, t(5, 0));
        assert_eq!(r.windows_needed, Some(18));
        assert_eq!(r.duration.unwrap().text, "4h");
        // 3 of 10 in one opening: 7 left at 3 per window, 3 windows.
        assert_eq!(
            round_report(&round(10, 3, false), 1, t(5, 0)).windows_needed,
            Some(3)
        );
        assert_eq!(
            round_report(&round(10, 0, false), 1, t(5, 0)).windows_needed,
            None
        );
        let done = round_report(&round(10, 10, true), 1, t(5, 0));
        assert_eq!(done.windows_needed, None);
        assert_eq!(done.duration.unwrap().text, "2h");
    }
}
