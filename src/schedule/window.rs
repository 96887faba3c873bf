//! A MaintenanceWindow's spec parsed once ([`WindowPolicy`]) and the window maths on it.
//!
//! Windows are stateless: whether a window is open at `now` is found by looking back
//! `duration` from `now`, so an operator restarted mid-window still sees it open. A window
//! is the half-open interval `[start, start + duration)`, with `duration` counted in elapsed
//! time (a 4h window across a DST change lasts 4 real hours).

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
            }),
            _ => Err(errors),
        }
    }

    /// The window open at `now`, if any: the earliest opening in `(now - duration, now]`.
    /// Stateless, so it survives restarts. When openings overlap (a schedule that fires more
    /// often than `duration`), this is the earliest still open; when it closes the next one
    /// is found, so the window stays open without a gap.
    pub fn current_window(&self, now: DateTime<Utc>) -> Option<WindowOccurrence> {
        let start = self
            .schedule
            .next_after(now - self.duration, self.time_zone)?;
        (start <= now).then(|| self.occurrence(start))
    }

    /// The first opening strictly after `now`.
    pub fn next_window(&self, now: DateTime<Utc>) -> Option<WindowOccurrence> {
        self.schedule
            .next_after(now, self.time_zone)
            .map(|start| self.occurrence(start))
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
