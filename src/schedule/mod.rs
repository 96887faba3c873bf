//! Schedules: CronJob-exact cron, IANA time zones, Go durations and window maths. All pure:
//! `now` is always passed in.
//!
//! - [`Schedule`]: a cron expression with exactly Kubernetes CronJob semantics, evaluated in a
//!   zone with nmo's DST rules ([`Schedule::next_after`]).
//! - [`parse_time_zone`], [`parse_go_duration`]: the other spec strings.
//! - [`WindowPolicy`]: a whole `MaintenanceWindowSpec` parsed once, with the window maths the
//!   controller, `nmo plan` and `nmo simulate` share ([`WindowPolicy::current_window`],
//!   [`WindowPolicy::next_window`], [`WindowPolicy::next_windows`]).
//! - [`round`]: the round's node order, the budget and round-time estimates.

pub mod cron;
pub mod duration;
pub mod exclusion;
pub mod round;
pub mod window;

pub use cron::{CronField, Schedule, resolve_local};
pub use duration::{format_duration, parse_go_duration};
pub use exclusion::{ExclusionPeriod, parse_exclusions};
pub use round::{
    Budget, BudgetError, estimate_round, parse_max_unavailable, resolve_max_unavailable,
    round_order, selector_matches,
};
pub use window::{
    HealthGatePolicy, MAX_WINDOW_DURATION, MIN_WINDOW_DURATION, PlannedNode, ReleasePolicy,
    SkippedOpening, WindowOccurrence, WindowPolicy, default_node_timeout,
};

use chrono_tz::Tz;

/// Why a schedule, zone or duration string is invalid. Messages say what was given and what
/// is allowed; callers prefix the field (`spec.schedule: ...`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The schedule is the empty string.
    #[error("must not be empty: use 5 fields such as \"0 2 * * 6\" or a macro such as \"@weekly\"")]
    EmptySchedule,
    /// `TZ=` / `CRON_TZ=` in the schedule.
    #[error(
        "invalid cron expression {schedule:?}: TZ= and CRON_TZ= are not allowed in a schedule (as in a CronJob), set spec.timeZone instead"
    )]
    TimeZoneInSchedule {
        /// The schedule as written.
        schedule: String,
    },
    /// Not 5 fields.
    #[error(
        "invalid cron expression {schedule:?}: expected exactly 5 fields (minute, hour, day of month, month, day of week), found {found}"
    )]
    FieldCount {
        /// The schedule as written.
        schedule: String,
        /// How many fields it has.
        found: usize,
    },
    /// An `@` word that is not one of the CronJob macros.
    #[error(
        "invalid cron expression {schedule:?}: unknown macro, use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
    )]
    UnknownMacro {
        /// The schedule as written.
        schedule: String,
    },
    /// One field is malformed or out of range.
    #[error("invalid cron expression {schedule:?}: {} field {value:?}: {reason}", field.name())]
    InvalidField {
        /// The schedule as written.
        schedule: String,
        /// Which field.
        field: CronField,
        /// The field's text.
        value: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The zone is not in the IANA database.
    #[error("unknown time zone {name:?}{}", suggestion.as_ref().map_or_else(
        || ": use an IANA name such as \"Europe/Berlin\" or \"UTC\"".to_string(),
        |s| format!(", did you mean {s:?}?")))]
    UnknownTimeZone {
        /// The name as written.
        name: String,
        /// The closest known zone name, if one is close.
        suggestion: Option<String>,
    },
    /// An empty zone name (leave the field out for UTC).
    #[error(
        "must not be empty: leave it out for UTC, or use an IANA name such as \"Europe/Berlin\""
    )]
    EmptyTimeZone,
    /// `Local`, which depends on the machine.
    #[error(
        "{name:?} is not allowed: use an explicit IANA name such as \"Europe/Berlin\" (the operator's local zone is not part of the spec)"
    )]
    LocalTimeZone {
        /// The name as written.
        name: String,
    },
    /// Not a Go duration.
    #[error("invalid duration {value:?}: {reason}")]
    InvalidDuration {
        /// The text as written.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

impl ScheduleError {
    /// A bounded category for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            ScheduleError::EmptySchedule
            | ScheduleError::TimeZoneInSchedule { .. }
            | ScheduleError::FieldCount { .. }
            | ScheduleError::UnknownMacro { .. }
            | ScheduleError::InvalidField { .. } => "InvalidSchedule",
            ScheduleError::UnknownTimeZone { .. }
            | ScheduleError::EmptyTimeZone
            | ScheduleError::LocalTimeZone { .. } => "UnknownTimeZone",
            ScheduleError::InvalidDuration { .. } => "InvalidDuration",
        }
    }
}

/// Parse an IANA zone name (`Europe/Berlin`, `UTC`) against the zone database compiled into
/// the binary, so no tzdata is needed in the image. Names are case-sensitive, as in Go's
/// `time.LoadLocation` on Linux; the error suggests the closest name.
pub fn parse_time_zone(name: &str) -> Result<Tz, ScheduleError> {
    if name.is_empty() {
        return Err(ScheduleError::EmptyTimeZone);
    }
    if name.eq_ignore_ascii_case("local") {
        return Err(ScheduleError::LocalTimeZone {
            name: name.to_string(),
        });
    }
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::UnknownTimeZone {
            name: name.to_string(),
            suggestion: closest_zone(name),
        })
}

/// The known zone closest to `name` by edit distance (case-insensitive), if it is close.
///
/// Zones whose name length differs from `name`'s by more than the allowed distance are not
/// compared (the length difference is a lower bound of the distance), so a very long name
/// costs no more than reading it: found by fuzzing, where a 1 MB `spec.timeZone` (the CRD
/// sets no maximum length) took seconds of edit distances against every zone.
fn closest_zone(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let limit = 3.max(name.len() / 5);
    let chars = lower.chars().count();
    let (best, distance) = chrono_tz::TZ_VARIANTS
        .iter()
        // Zone names are ASCII: their length in bytes is their length in characters.
        .filter(|tz| tz.name().len().abs_diff(chars) <= limit)
        .map(|tz| {
            (
                tz.name(),
                edit_distance(&lower, &tz.name().to_ascii_lowercase()),
            )
        })
        .min_by_key(|(_, d)| *d)?;
    (distance <= limit).then(|| best.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_zones_parse_and_unknown_ones_get_a_suggestion() {
        assert_eq!(
            parse_time_zone("Europe/Berlin").unwrap(),
            Tz::Europe__Berlin
        );
        assert_eq!(parse_time_zone("UTC").unwrap(), Tz::UTC);
        let err = parse_time_zone("Europe/Berln").unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown time zone \"Europe/Berln\", did you mean \"Europe/Berlin\"?"
        );
        let err = parse_time_zone("Mars/Olympus_Mons")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("unknown time zone \"Mars/Olympus_Mons\": use an IANA"),
            "{err}"
        );
        assert!(parse_time_zone("europe/berlin").is_err());
        assert!(matches!(
            parse_time_zone(""),
            Err(ScheduleError::EmptyTimeZone)
        ));
        assert!(matches!(
            parse_time_zone("Local"),
            Err(ScheduleError::LocalTimeZone { .. })
        ));
    }

    /// Regression (fuzzing, docs/fuzzing.md): a huge zone name is refused without comparing
    /// it with every zone, and names near a zone still get their suggestion.
    #[test]
    fn a_huge_zone_name_is_refused_without_a_suggestion() {
        let huge = "Europe/Berlin".repeat(80_000);
        match parse_time_zone(&huge) {
            Err(ScheduleError::UnknownTimeZone { name, suggestion }) => {
                assert_eq!(name.len(), huge.len());
                assert_eq!(suggestion, None);
            }
            other => panic!("{other:?}"),
        }
        for (typo, zone) in [
            ("Europe/Berln", "Europe/Berlin"),
            ("europe/berlin", "Europe/Berlin"),
            (
                "America/Argentina/ComodRivadavi",
                "America/Argentina/ComodRivadavia",
            ),
        ] {
            match parse_time_zone(typo) {
                Err(ScheduleError::UnknownTimeZone { suggestion, .. }) => {
                    assert_eq!(suggestion.as_deref(), Some(zone), "{typo}")
                }
                other => panic!("{typo}: {other:?}"),
            }
        }
    }
}
