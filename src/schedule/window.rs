//! A MaintenanceWindow's spec parsed once ([`WindowPolicy`]) and the window maths on it.
//!
//! Windows are stateless: whether a window is open at `now` is found by looking back
//! `duration` from `now`, so an operator restarted mid-window still sees it open. A window
//! is the half-open interval `[start, start + duration)`, with `duration` counted in elapsed
//! time (a 4h window across a DST change lasts 4 real hours).

use super::exclusion::{
    ExclusionPeriod, apply_exclusions, exclusion_at, just_before, last_exclusion_end,
    parse_exclusions,
};
use super::round::{Budget, estimate_round, parse_max_unavailable};
use super::{Schedule, parse_go_duration, parse_time_zone};
use crate::admission::FieldError;
use crate::api::maintenance_window::WindowSpan;
use crate::api::{MaintenanceWindowSpec, OnWindowEnd};
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::Serialize;

/// The shortest window: one minute, the resolution of cron.
pub const MIN_WINDOW_DURATION: Duration = Duration::minutes(1);
/// The longest window, and the longest `nodeTimeout` and `release.after`: 744h (31 days).
/// Anything longer is almost certainly a typo (`4000h` for `40h`).
pub const MAX_WINDOW_DURATION: Duration = Duration::hours(744);

/// One opening of a window, in UTC: open from `start` (inclusive) to `end` (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct WindowOccurrence {
    /// When the window opens.
    pub start: DateTime<Utc>,
    /// When it closes: `start + duration`, in elapsed time.
    pub end: DateTime<Utc>,
}

impl WindowOccurrence {
    /// Whether `now` is inside `[start, end)`.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        self.start <= now && now < self.end
    }

    /// As the `{start, end}` status field.
    pub fn to_span(&self) -> WindowSpan {
        WindowSpan {
            start: crate::api::to_time(self.start),
            end: crate::api::to_time(self.end),
            run_now: None,
        }
    }
}

/// Where a node is expected to be maintained: which opening (an index into the openings given
/// to [`WindowPolicy::plan_round`]) and when, or `None` if it does not fit in them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedNode {
    /// The node.
    pub name: String,
    /// Index of the opening it is expected in.
    pub window: Option<usize>,
    /// When its NodeMaintenance is expected to be created.
    pub start: Option<DateTime<Utc>>,
    /// When its slot is expected to free up (released, plus minReadySeconds).
    pub end: Option<DateTime<Utc>>,
}

/// When a node's maintenance ends (`spec.release`), parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleasePolicy {
    /// Release this long after the drain succeeded.
    pub after: Option<Duration>,
    /// Release once the node rebooted and is Ready again.
    pub on_reboot: bool,
}

/// Everything in a `MaintenanceWindowSpec`, parsed and defaulted once.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowPolicy {
    /// `spec.schedule`.
    pub schedule: Schedule,
    /// `spec.timeZone`, default UTC.
    pub time_zone: Tz,
    /// `spec.duration`, between [`MIN_WINDOW_DURATION`] and [`MAX_WINDOW_DURATION`].
    pub duration: Duration,
    /// `spec.maxUnavailable`, default 1.
    pub max_unavailable: Budget,
    /// `spec.release`.
    pub release: ReleasePolicy,
    /// `spec.nodeTimeout`, default 2h.
    pub node_timeout: Duration,
    /// `spec.minReadySeconds`, default 0.
    pub min_ready: Duration,
    /// `spec.maxFailures`, default 0.
    pub max_failures: u32,
    /// `spec.onWindowEnd`, default `FinishInFlight`.
    pub on_window_end: OnWindowEnd,
    /// `spec.suspend`, default false.
    pub suspend: bool,
    /// `spec.dryRun`, default false.
    pub dry_run: bool,
    /// `spec.exclusions`, resolved to UTC, in spec order.
    pub exclusions: Vec<ExclusionPeriod>,
    /// `spec.topologyKey`.
    pub topology_key: Option<String>,
    /// `spec.healthGate`.
    pub health_gate: Option<HealthGatePolicy>,
}

/// `spec.healthGate`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthGatePolicy {
    /// The PromQL query.
    pub query: String,
    /// How long the result must stay empty before starts resume.
    pub clear_for: Duration,
}

/// An opening that an exclusion removed, for `nmo plan`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedOpening {
    /// When the window would have opened.
    pub start: DateTime<Utc>,
    /// The exclusion that removed it (index into `spec.exclusions`).
    pub exclusion: usize,
}

impl WindowPolicy {
    /// Parse every field of the spec, applying the defaults from the spec's accessors. On
    /// failure, returns every problem found (not only the first), each naming its field.
    ///
    /// Rules: a valid cron schedule that can fire; a known zone; `duration` from 1m to 744h;
    /// `maxUnavailable` an integer >= 1 or 1%-100%; `release` with `after` (>= 0, <= 744h) and/or
    /// `onReboot: true`; `nodeTimeout` > 0 and <= 744h, and longer than `release.after` (or
    /// every node would time out); `minReadySeconds` and `maxFailures` >= 0.
    pub fn from_spec(spec: &MaintenanceWindowSpec) -> Result<WindowPolicy, Vec<FieldError>> {
        Self::from_spec_with_node_timeout(spec, default_node_timeout())
    }

    /// [`WindowPolicy::from_spec`], with `default_node_timeout` for a window that sets no
    /// `nodeTimeout` (the operator's configured default; see `nmo run --config`). The
    /// `release.after < nodeTimeout` rule is checked against the timeout that applies.
    pub fn from_spec_with_node_timeout(
        spec: &MaintenanceWindowSpec,
        default_node_timeout: Duration,
    ) -> Result<WindowPolicy, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut err = |field: &str, message: String| errors.push(FieldError::new(field, message));

        let schedule = match Schedule::parse(&spec.schedule) {
            Ok(s) if !s.fires_ever() => {
                err(
                    "spec.schedule",
                    format!(
                        "{:?} never fires: no date and time matches it (such as day 30 of February), so no window would ever open",
                        spec.schedule
                    ),
                );
                None
            }
            Ok(s) => Some(s),
            Err(e) => {
                err("spec.schedule", e.to_string());
                None
            }
        };
        let time_zone = parse_time_zone(spec.time_zone_or_default())
            .map_err(|e| err("spec.timeZone", e.to_string()))
            .ok();
        let duration = bounded_duration(
            &spec.duration,
            MIN_WINDOW_DURATION,
            "a window must last at least 1m",
        )
        .map_err(|m| err("spec.duration", m))
        .ok();
        let max_unavailable = parse_max_unavailable(&spec.max_unavailable_or_default())
            .map_err(|e| err("spec.maxUnavailable", e.to_string()))
            .ok();
        let node_timeout = match spec.node_timeout.as_deref() {
            Some(text) => {
                bounded_duration(text, Duration::nanoseconds(1), "it must be longer than 0")
                    .map_err(|m| err("spec.nodeTimeout", m))
                    .ok()
            }
            None => Some(default_node_timeout),
        };
        let node_timeout_text = spec
            .node_timeout
            .clone()
            .unwrap_or_else(|| super::format_duration(default_node_timeout));
        let after = match &spec.release.after {
            None => Ok(None),
            Some(text) => bounded_duration(text, Duration::zero(), "it must not be negative")
                .map(Some)
                .map_err(|m| err("spec.release.after", m)),
        };
        let on_reboot = spec.release.on_reboot.unwrap_or(false);
        if matches!(after, Ok(None)) && !on_reboot {
            err(
                "spec.release",
                "must set after (a duration such as \"30m\") and/or onReboot: true, or nodes are only ever released by nodeTimeout".to_string(),
            );
        }
        if let (Ok(Some(after)), Some(timeout)) = (&after, node_timeout)
            && *after >= timeout
        {
            err(
                "spec.release.after",
                format!(
                    "{:?} is not shorter than spec.nodeTimeout ({}): every node would time out and count as failed",
                    spec.release.after.as_deref().unwrap_or_default(),
                    node_timeout_text
                ),
            );
        }
        let min_ready_seconds = spec.min_ready_seconds_or_default();
        if min_ready_seconds < 0 {
            err(
                "spec.minReadySeconds",
                format!("{min_ready_seconds} is not allowed: it must be 0 or more"),
            );
        }
        let max_failures = spec.max_failures_or_default();
        if max_failures < 0 {
            err(
                "spec.maxFailures",
                format!("{max_failures} is not allowed: it must be 0 or more"),
            );
        }

        let exclusions = match (&spec.exclusions, time_zone) {
            (Some(list), Some(tz)) => parse_exclusions(list, tz)
                .map_err(|e| errors.extend(e))
                .ok(),
            (None, _) => Some(Vec::new()),
            (Some(_), None) => None,
        };
        if let Some(key) = &spec.topology_key
            && let Some(problem) = label_key_problem(key)
        {
            errors.push(FieldError::new("spec.topologyKey", problem));
        }
        let health_gate = match &spec.health_gate {
            None => Some(None),
            Some(gate) => {
                let mut ok = true;
                if gate.query.trim().is_empty() {
                    ok = false;
                    errors.push(FieldError::new(
                        "spec.healthGate.query",
                        "must not be empty: give a PromQL query such as ALERTS{alertstate=\"firing\"}; any series in its result blocks new starts",
                    ));
                }
                let clear_for = parse_go_duration(&gate.for_)
                    .map_err(|e| {
                        errors.push(FieldError::new(
                            "spec.healthGate.for",
                            format!("{e} (use a Go duration such as \"5m\" or \"30s\")"),
                        ))
                    })
                    .ok();
                match clear_for {
                    Some(d) if d > MAX_WINDOW_DURATION => {
                        errors.push(FieldError::new(
                            "spec.healthGate.for",
                            format!("{:?} is too long: the maximum is 744h (31 days)", gate.for_),
                        ));
                        None
                    }
                    Some(clear_for) if ok => Some(Some(HealthGatePolicy {
                        query: gate.query.clone(),
                        clear_for,
                    })),
                    _ => None,
                }
            }
        };

        match (
            schedule,
            time_zone,
            duration,
            max_unavailable,
            node_timeout,
            after,
        ) {
            (
                Some(schedule),
                Some(time_zone),
                Some(duration),
                Some(max_unavailable),
                Some(node_timeout),
                Ok(after),
            ) if errors.is_empty() => Ok(WindowPolicy {
                schedule,
                time_zone,
                duration,
                max_unavailable,
                release: ReleasePolicy { after, on_reboot },
                node_timeout,
                min_ready: Duration::seconds(i64::from(min_ready_seconds)),
                max_failures: max_failures as u32,
                on_window_end: spec.on_window_end_or_default(),
                suspend: spec.suspend.unwrap_or(false),
                dry_run: spec.dry_run.unwrap_or(false),
                exclusions: exclusions.unwrap_or_default(),
                topology_key: spec.topology_key.clone(),
                health_gate: health_gate.flatten(),
            }),
            _ => Err(errors),
        }
    }

    /// The window open at `now`, if any: the earliest opening in `(now - duration, now]`.
    /// Stateless, so it survives restarts. When openings overlap (a schedule that fires more
    /// often than `duration`), this is the earliest still open; when it closes the next one
    /// is found, so the window stays open without a gap.
    ///
    /// With exclusions: none is open during an exclusion, an opening inside one is skipped,
    /// and a window is cut at the start of an exclusion that begins while it is open.
    pub fn current_window(&self, now: DateTime<Utc>) -> Option<WindowOccurrence> {
        if exclusion_at(&self.exclusions, now).is_some() {
            return None;
        }
        // An opening before the last exclusion that is over was skipped or cut by it.
        let mut from = now - self.duration;
        if let Some(end) = last_exclusion_end(&self.exclusions, now) {
            from = from.max(just_before(end));
        }
        let start = self.schedule.next_after(from, self.time_zone)?;
        if start > now {
            return None;
        }
        let end = apply_exclusions(&self.exclusions, start, start + self.duration).ok()?;
        Some(WindowOccurrence { start, end })
    }

    /// The first opening strictly after `now` that no exclusion skips, cut by exclusions.
    pub fn next_window(&self, now: DateTime<Utc>) -> Option<WindowOccurrence> {
        let mut cursor = now;
        loop {
            let start = self.schedule.next_after(cursor, self.time_zone)?;
            match apply_exclusions(&self.exclusions, start, start + self.duration) {
                Ok(end) => return Some(WindowOccurrence { start, end }),
                Err(exclusion) => cursor = just_before(exclusion.end).max(start),
            }
        }
    }

    /// The openings strictly after `after` and before `until` that exclusions skip, each
    /// with the exclusion that removed it, at most `limit` of them.
    pub fn skipped_openings(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<SkippedOpening> {
        let mut out = Vec::new();
        if self.exclusions.is_empty() {
            return out;
        }
        let mut cursor = after;
        while out.len() < limit {
            let Some(start) = self.schedule.next_after(cursor, self.time_zone) else {
                break;
            };
            if start >= until {
                break;
            }
            if let Some(e) = exclusion_at(&self.exclusions, start) {
                out.push(SkippedOpening {
                    start,
                    exclusion: e.index,
                });
                cursor = start;
            } else {
                // Jump to the next exclusion: openings between here and there are kept.
                match self
                    .exclusions
                    .iter()
                    .map(|e| e.start)
                    .filter(|s| *s > start)
                    .min()
                {
                    Some(next) => cursor = just_before(next),
                    None => break,
                }
            }
        }
        out
    }

    /// The exclusion in force at `now`, if any.
    pub fn exclusion_at(&self, now: DateTime<Utc>) -> Option<&ExclusionPeriod> {
        exclusion_at(&self.exclusions, now)
    }

    /// The next `n` openings strictly after `after`, in order (fewer if the schedule runs out
    /// within the search horizon, which only happens to schedules that never fire).
    pub fn next_windows(&self, after: DateTime<Utc>, n: usize) -> Vec<WindowOccurrence> {
        let mut out = Vec::with_capacity(n);
        let mut cursor = after;
        while out.len() < n {
            let Some(next) = self.next_window(cursor) else {
                break;
            };
            cursor = next.start;
            out.push(next);
        }
        out
    }

    /// The window that starts at `start`.
    pub fn occurrence(&self, start: DateTime<Utc>) -> WindowOccurrence {
        WindowOccurrence {
            start,
            end: start + self.duration,
        }
    }

    /// How many of `total_nodes` selected nodes may be unavailable at once.
    pub fn budget(&self, total_nodes: usize) -> usize {
        self.max_unavailable.resolve(total_nodes)
    }

    /// Estimated time one node holds a slot: from NodeMaintenance creation to release
    /// (`release.after`, capped by `nodeTimeout`; with only `onReboot`, `nodeTimeout` as the
    /// worst case), plus `minReadySeconds`. Drain time is unknown offline and counted as 0.
    pub fn per_node_estimate(&self) -> Duration {
        let hold = self
            .release
            .after
            .map_or(self.node_timeout, |after| after.min(self.node_timeout));
        hold + self.min_ready
    }

    /// Estimated time a round of `nodes` takes with this window's budget.
    pub fn round_estimate(&self, nodes: usize) -> Duration {
        estimate_round(nodes, self.budget(nodes), self.per_node_estimate())
    }

    /// Expected placement of a round: `nodes` (already in round order) are taken a budget's
    /// worth at a time, each batch holding its slots for [`Self::per_node_estimate`], starting
    /// no earlier than `now`, inside `openings` (in order). With `FinishInFlight` a batch may
    /// start until the window closes; with `Abort` only if it can finish before. Nodes that do
    /// not fit in the given openings get no window.
    pub fn plan_round(
        &self,
        nodes: &[String],
        openings: &[WindowOccurrence],
        now: DateTime<Utc>,
    ) -> Vec<PlannedNode> {
        let budget = self.budget(nodes.len());
        let per_node = self.per_node_estimate();
        let mut planned = Vec::with_capacity(nodes.len());
        let mut window = 0;
        let mut cursor = now;
        for batch in nodes.chunks(budget) {
            let mut placed = None;
            while let Some(opening) = openings.get(window) {
                let start = cursor.max(opening.start);
                let fits = match self.on_window_end {
                    OnWindowEnd::FinishInFlight => start < opening.end,
                    OnWindowEnd::Abort => start < opening.end && start + per_node <= opening.end,
                };
                if fits {
                    placed = Some((window, start));
                    cursor = start + per_node;
                    break;
                }
                window += 1;
            }
            for name in batch {
                planned.push(PlannedNode {
                    name: name.clone(),
                    window: placed.map(|(w, _)| w),
                    start: placed.map(|(_, s)| s),
                    end: placed.map(|(_, s)| s + per_node),
                });
            }
        }
        planned
    }

    /// `instant` as readable local time in the window's zone: `Sat 2025-06-07 02:00 CEST`.
    pub fn local_string(&self, instant: DateTime<Utc>) -> String {
        instant
            .with_timezone(&self.time_zone)
            .format("%a %Y-%m-%d %H:%M %Z")
            .to_string()
    }
}

/// Parse a Go duration and check it lies in `[min, MAX_WINDOW_DURATION]`.
/// The node timeout of a window that sets none, unless the operator is configured otherwise:
/// [`crate::api::maintenance_window::DEFAULT_NODE_TIMEOUT`] (2h).
pub fn default_node_timeout() -> Duration {
    parse_go_duration(crate::api::maintenance_window::DEFAULT_NODE_TIMEOUT)
        .unwrap_or_else(|_| Duration::hours(2))
}

/// What is wrong with a label key (`prefix/name`), if anything.
fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    (!name_ok || !prefix_ok).then(|| {
        format!(
            "{key:?} is not a valid label key: use an optional DNS prefix and a name of at most 63 letters, digits, '-', '_' and '.', such as \"topology.kubernetes.io/zone\""
        )
    })
}

fn bounded_duration(text: &str, min: Duration, too_small: &str) -> Result<Duration, String> {
    let d = parse_go_duration(text)
        .map_err(|e| format!("{e} (use a Go duration such as \"90m\", \"4h\" or \"1h30m\")"))?;
    if d < min {
        return Err(format!("{text:?} is not allowed: {too_small}"));
    }
    if d > MAX_WINDOW_DURATION {
        return Err(format!(
            "{text:?} is too long: the maximum is 744h (31 days)"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Release;
    use chrono::TimeZone;

    fn spec(schedule: &str) -> MaintenanceWindowSpec {
        MaintenanceWindowSpec {
            schedule: schedule.to_string(),
            time_zone: None,
            duration: "4h".to_string(),
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
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn a_window_is_open_from_its_start_until_just_before_its_end() {
        let p = WindowPolicy::from_spec(&spec("0 2 * * *")).unwrap();
        let w = p.current_window(utc(2025, 3, 4, 2, 0)).unwrap();
        assert_eq!(
            (w.start, w.end),
            (utc(2025, 3, 4, 2, 0), utc(2025, 3, 4, 6, 0))
        );
        assert_eq!(p.current_window(utc(2025, 3, 4, 5, 59)), Some(w));
        assert_eq!(p.current_window(utc(2025, 3, 4, 6, 0)), None);
        assert_eq!(p.current_window(utc(2025, 3, 4, 1, 59)), None);
        assert_eq!(
            p.next_window(utc(2025, 3, 4, 2, 0)).unwrap().start,
            utc(2025, 3, 5, 2, 0)
        );
    }

    #[test]
    fn overlapping_openings_keep_the_window_open_without_a_gap() {
        let p = WindowPolicy::from_spec(&spec("0 * * * *")).unwrap();
        let w = p.current_window(utc(2025, 3, 4, 10, 30)).unwrap();
        assert_eq!(w.start, utc(2025, 3, 4, 7, 0));
        assert!(p.current_window(w.end).is_some());
    }

    #[test]
    fn defaults_come_from_the_spec_accessors() {
        let p = WindowPolicy::from_spec(&spec("@weekly")).unwrap();
        assert_eq!(p.time_zone, Tz::UTC);
        assert_eq!(p.max_unavailable, Budget::Count(1));
        assert_eq!(p.node_timeout, Duration::hours(2));
        assert_eq!(p.min_ready, Duration::zero());
        assert_eq!(p.on_window_end, OnWindowEnd::FinishInFlight);
        assert_eq!(p.per_node_estimate(), Duration::minutes(30));
        assert_eq!(p.round_estimate(3), Duration::minutes(90));
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_field() {
        let mut s = spec("0 25 * * *");
        s.time_zone = Some("Europe/Berln".into());
        s.duration = "30s".into();
        s.max_unavailable = Some(IntOrString::Int(0));
        s.release = Release::default();
        s.min_ready_seconds = Some(-1);
        s.max_failures = Some(-2);
        s.node_timeout = Some("0s".into());
        let fields: Vec<String> = WindowPolicy::from_spec(&s)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.schedule",
                "spec.timeZone",
                "spec.duration",
                "spec.maxUnavailable",
                "spec.nodeTimeout",
                "spec.release",
                "spec.minReadySeconds",
                "spec.maxFailures"
            ]
        );
    }

    #[test]
    fn a_window_without_node_timeout_takes_the_operator_default() {
        let mut s = spec("@daily");
        s.release.after = Some("3h".into());
        let p = WindowPolicy::from_spec_with_node_timeout(&s, Duration::hours(4)).unwrap();
        assert_eq!(p.node_timeout, Duration::hours(4));
        let errors = WindowPolicy::from_spec_with_node_timeout(&s, Duration::hours(3)).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "spec.release.after: \"3h\" is not shorter than spec.nodeTimeout (3h): every node would time out and count as failed"
        );
        s.node_timeout = Some("5h".into());
        let p = WindowPolicy::from_spec_with_node_timeout(&s, Duration::hours(3)).unwrap();
        assert_eq!(
            p.node_timeout,
            Duration::hours(5),
            "the spec wins over the default"
        );
    }

    #[test]
    fn release_after_must_be_shorter_than_node_timeout() {
        let mut s = spec("@daily");
        s.release.after = Some("3h".into());
        let errors = WindowPolicy::from_spec(&s).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "spec.release.after: \"3h\" is not shorter than spec.nodeTimeout (2h): every node would time out and count as failed"
        );
    }

    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn a_round_fills_windows_a_budget_at_a_time_and_carries_over() {
        // 2 at a time, 30m + 2m each, in a 1h window: two batches per window.
        let mut s = spec("0 2 * * *");
        s.duration = "1h".into();
        s.max_unavailable = Some(IntOrString::Int(2));
        s.min_ready_seconds = Some(120);
        let p = WindowPolicy::from_spec(&s).unwrap();
        let openings = p.next_windows(utc(2025, 3, 3, 0, 0), 3);
        let nodes: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
        let plan = p.plan_round(&nodes, &openings, utc(2025, 3, 3, 0, 0));
        let windows: Vec<_> = plan.iter().map(|n| n.window).collect();
        assert_eq!(windows, [Some(0), Some(0), Some(0), Some(0), Some(1)]);
        assert_eq!(plan[2].start, Some(utc(2025, 3, 3, 2, 32)));
        assert_eq!(plan[4].start, Some(utc(2025, 3, 4, 2, 0)));
        assert_eq!(plan[4].end, Some(utc(2025, 3, 4, 2, 32)));
    }

    #[test]
    fn with_abort_a_batch_only_starts_when_it_can_finish() {
        let mut s = spec("0 2 * * *");
        s.duration = "50m".into();
        s.on_window_end = Some(OnWindowEnd::Abort);
        let p = WindowPolicy::from_spec(&s).unwrap();
        let openings = p.next_windows(utc(2025, 3, 3, 0, 0), 2);
        let nodes: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let windows: Vec<_> = p
            .plan_round(&nodes, &openings, utc(2025, 3, 3, 0, 0))
            .iter()
            .map(|n| n.window)
            .collect();
        assert_eq!(windows, [Some(0), Some(1), None]);
    }
}

#[cfg(test)]
mod exclusion_tests {
    use super::*;
    use crate::api::{Exclusion, Release};
    use chrono::TimeZone;

    fn policy(
        schedule: &str,
        tz: &str,
        duration: &str,
        exclusions: &[(&str, &str)],
    ) -> WindowPolicy {
        WindowPolicy::from_spec(&MaintenanceWindowSpec {
            schedule: schedule.into(),
            time_zone: Some(tz.into()),
            duration: duration.into(),
            node_selector: Default::default(),
            max_unavailable: None,
            reason: None,
            release: Release {
                after: Some("10m".into()),
                on_reboot: None,
            },
            node_timeout: None,
            min_ready_seconds: None,
            max_failures: None,
            on_window_end: None,
            suspend: None,
            dry_run: None,
            exclusions: Some(
                exclusions
                    .iter()
                    .map(|(s, e)| Exclusion {
                        start: s.to_string(),
                        end: e.to_string(),
                        reason: Some("freeze".into()),
                    })
                    .collect(),
            ),
            topology_key: None,
            health_gate: None,
        })
        .unwrap()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn next_window_skips_excluded_openings_in_berlin() {
        // Daily 02:00 Berlin; 24-26 Dec frozen (local days).
        let p = policy(
            "0 2 * * *",
            "Europe/Berlin",
            "4h",
            &[("2026-12-24", "2026-12-26")],
        );
        let next = p.next_window(utc(2026, 12, 23, 12, 0)).unwrap();
        assert_eq!(
            next.start,
            utc(2026, 12, 27, 1, 0),
            "24, 25 and 26 are skipped"
        );
        let skipped = p.skipped_openings(utc(2026, 12, 23, 12, 0), next.start, 10);
        let starts: Vec<_> = skipped.iter().map(|s| s.start).collect();
        assert_eq!(
            starts,
            [
                utc(2026, 12, 24, 1, 0),
                utc(2026, 12, 25, 1, 0),
                utc(2026, 12, 26, 1, 0)
            ]
        );
        assert!(skipped.iter().all(|s| s.exclusion == 0));
        assert_eq!(p.current_window(utc(2026, 12, 25, 2, 0)), None);
        assert!(p.exclusion_at(utc(2026, 12, 25, 2, 0)).is_some());
    }

    #[test]
    fn a_window_is_cut_at_the_start_of_an_exclusion() {
        // 22:00-02:00 New York windows; an exclusion from 2026-11-27 (local midnight).
        let p = policy(
            "0 22 * * *",
            "America/New_York",
            "4h",
            &[("2026-11-27", "2026-11-27")],
        );
        let w = p.current_window(utc(2026, 11, 27, 4, 0)).unwrap();
        assert_eq!(w.start, utc(2026, 11, 27, 3, 0));
        assert_eq!(
            w.end,
            utc(2026, 11, 27, 5, 0),
            "cut at 00:00 local (05:00 UTC)"
        );
        assert_eq!(p.current_window(utc(2026, 11, 27, 5, 0)), None);
        assert_eq!(p.next_window(utc(2026, 11, 26, 12, 0)), Some(w));
        // The opening of the 27th (22:00 local) is inside the exclusion: skipped.
        assert_eq!(
            p.next_window(utc(2026, 11, 27, 4, 0)).unwrap().start,
            utc(2026, 11, 29, 3, 0)
        );
    }

    #[test]
    fn exclusions_across_dst_changes_cover_local_days_in_two_zones() {
        // Berlin falls back on 2026-10-25; the opening at 02:30 local happens once.
        let p = policy(
            "30 2 * * *",
            "Europe/Berlin",
            "1h",
            &[("2026-10-25", "2026-10-25")],
        );
        assert_eq!(
            p.next_window(utc(2026, 10, 24, 12, 0)).unwrap().start,
            utc(2026, 10, 26, 1, 30)
        );
        // New York springs forward on 2026-03-08: 02:30 does not exist and fires at 03:00
        // EDT, which is inside the whole-day exclusion of the 8th.
        let p = policy(
            "30 2 * * *",
            "America/New_York",
            "1h",
            &[("2026-03-08", "2026-03-08")],
        );
        let skipped = p.skipped_openings(utc(2026, 3, 7, 12, 0), utc(2026, 3, 10, 0, 0), 5);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].start, utc(2026, 3, 8, 7, 0));
        assert_eq!(
            p.next_window(utc(2026, 3, 7, 12, 0)).unwrap().start,
            utc(2026, 3, 9, 6, 30)
        );
    }

    #[test]
    fn an_opening_at_an_exclusions_end_is_kept_and_overlapping_openings_resume_after_it() {
        let p = policy(
            "0 * * * *",
            "UTC",
            "3h",
            &[("2026-05-01T10:00:00Z", "2026-05-01T12:00:00Z")],
        );
        assert_eq!(p.current_window(utc(2026, 5, 1, 11, 0)), None);
        let w = p.current_window(utc(2026, 5, 1, 12, 30)).unwrap();
        assert_eq!(
            w.start,
            utc(2026, 5, 1, 12, 0),
            "openings cut before the exclusion stay closed"
        );
        assert_eq!(w.end, utc(2026, 5, 1, 15, 0));
        let w = p.current_window(utc(2026, 5, 1, 9, 30)).unwrap();
        assert_eq!(
            (w.start, w.end),
            (utc(2026, 5, 1, 7, 0), utc(2026, 5, 1, 10, 0))
        );
    }

    #[test]
    fn health_gate_and_topology_key_are_checked_per_field() {
        let mut spec = MaintenanceWindowSpec {
            schedule: "@daily".into(),
            time_zone: None,
            duration: "1h".into(),
            node_selector: Default::default(),
            max_unavailable: None,
            reason: None,
            release: Release {
                after: Some("10m".into()),
                on_reboot: None,
            },
            node_timeout: None,
            min_ready_seconds: None,
            max_failures: None,
            on_window_end: None,
            suspend: None,
            dry_run: None,
            exclusions: None,
            topology_key: Some("topology.kubernetes.io/zone".into()),
            health_gate: Some(crate::api::HealthGate {
                query: "ALERTS".into(),
                for_: "5m".into(),
            }),
        };
        let p = WindowPolicy::from_spec(&spec).unwrap();
        assert_eq!(p.health_gate.unwrap().clear_for, Duration::minutes(5));
        spec.topology_key = Some("bad key!".into());
        spec.health_gate = Some(crate::api::HealthGate {
            query: "  ".into(),
            for_: "five minutes".into(),
        });
        let errors: Vec<String> = WindowPolicy::from_spec(&spec)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors[0].starts_with("spec.topologyKey: \"bad key!\" is not a valid label key"));
        assert!(errors[1].starts_with("spec.healthGate.query: must not be empty"));
        assert!(
            errors[2].starts_with("spec.healthGate.for: invalid duration \"five minutes\""),
            "{}",
            errors[2]
        );
    }
}
