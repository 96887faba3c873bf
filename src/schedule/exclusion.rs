//! Freeze periods (`spec.exclusions`), parsed into UTC instants, and what they do to window
//! openings. Pure: `now` is always passed in.
//!
//! - A bound is an RFC 3339 timestamp (absolute) or a date `YYYY-MM-DD` read in the window's
//!   zone: as `start` it means the first instant of that day, as `end` the first instant of
//!   the next day (so `{start: 2026-12-24, end: 2026-12-26}` freezes three whole days). A
//!   local midnight that does not exist (a DST gap at midnight) resolves to the first valid
//!   instant after the gap, as cron times do.
//! - An exclusion is the half-open interval `[start, end)`; `end` must be after `start`.
//! - An opening whose start falls inside an exclusion is skipped; a window that an exclusion
//!   starts inside of is cut at the exclusion's start.

use super::cron::resolve_local;
use crate::admission::FieldError;
use crate::api::Exclusion;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Serialize;

/// One exclusion, resolved to UTC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExclusionPeriod {
    /// Its index in `spec.exclusions`.
    pub index: usize,
    /// First excluded instant.
    pub start: DateTime<Utc>,
    /// First instant after the exclusion.
    pub end: DateTime<Utc>,
    /// `reason`, if given.
    pub reason: Option<String>,
}

impl ExclusionPeriod {
    /// Whether `now` is inside `[start, end)`.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        self.start <= now && now < self.end
    }

    /// For status and Events: `spec.exclusions[1] "Black Friday" (2026-11-27 00:00 UTC - 2026-11-30 00:00 UTC)`.
    pub fn describe(&self) -> String {
        let fmt = "%Y-%m-%d %H:%M UTC";
        let reason = self
            .reason
            .as_deref()
            .map(|r| format!(" {r:?}"))
            .unwrap_or_default();
        format!(
            "spec.exclusions[{}]{reason} ({} - {})",
            self.index,
            self.start.format(fmt),
            self.end.format(fmt)
        )
    }
}

/// Which end of an exclusion a bound is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound {
    Start,
    End,
}

/// Parse every exclusion in `tz`. On failure, returns every problem, each naming its field
/// (`spec.exclusions[2].end`).
pub fn parse_exclusions(
    exclusions: &[Exclusion],
    tz: Tz,
) -> Result<Vec<ExclusionPeriod>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(exclusions.len());
    for (index, exclusion) in exclusions.iter().enumerate() {
        let field = |name: &str| format!("spec.exclusions[{index}].{name}");
        let start = parse_bound(&exclusion.start, tz, Bound::Start)
            .map_err(|m| errors.push(FieldError::new(field("start"), m)))
            .ok();
        let end = parse_bound(&exclusion.end, tz, Bound::End)
            .map_err(|m| errors.push(FieldError::new(field("end"), m)))
            .ok();
        if let (Some(start), Some(end)) = (start, end) {
            if end <= start {
                errors.push(FieldError::new(
                    field("end"),
                    format!(
                        "{:?} ({}) is not after start {:?} ({}): an exclusion must end after it starts",
                        exclusion.end,
                        end.to_rfc3339(),
                        exclusion.start,
                        start.to_rfc3339()
                    ),
                ));
            } else {
                out.push(ExclusionPeriod {
                    index,
                    start,
                    end,
                    reason: exclusion.reason.clone(),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn parse_bound(text: &str, tz: Tz, bound: Bound) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(
            "must not be empty: use a date such as \"2026-12-24\" or an RFC 3339 timestamp such as \"2026-12-24T18:00:00Z\"".to_string(),
        );
    }
    if text.len() == 10 {
        let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|e| {
            format!("{text:?} is not a valid date ({e}): use YYYY-MM-DD such as \"2026-12-24\"")
        })?;
        let day = match bound {
            Bound::Start => date,
            Bound::End => date
                .succ_opt()
                .ok_or_else(|| format!("{text:?} is too late"))?,
        };
        let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
        return resolve_local(tz, midnight).ok_or_else(|| {
            format!(
                "{text:?}: the start of that day does not exist in {}",
                tz.name()
            )
        });
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "{text:?} is not a valid RFC 3339 timestamp ({e}): use a date such as \"2026-12-24\" or a timestamp with an offset such as \"2026-12-24T18:00:00+01:00\""
            )
        })
}

/// The exclusion in force at `now`, if any (the first in spec order).
pub fn exclusion_at(
    exclusions: &[ExclusionPeriod],
    now: DateTime<Utc>,
) -> Option<&ExclusionPeriod> {
    exclusions.iter().find(|e| e.contains(now))
}

/// The first exclusion starting strictly after `now`.
pub fn next_exclusion_start(
    exclusions: &[ExclusionPeriod],
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    exclusions
        .iter()
        .map(|e| e.start)
        .filter(|s| *s > now)
        .min()
}

/// What the exclusions make of the window `[start, end)`: `Err` with the exclusion that skips
/// it (one containing its start), or `Ok` with its end cut at the first exclusion that starts
/// inside it.
pub fn apply_exclusions(
    exclusions: &[ExclusionPeriod],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<DateTime<Utc>, &ExclusionPeriod> {
    if let Some(e) = exclusion_at(exclusions, start) {
        return Err(e);
    }
    Ok(exclusions
        .iter()
        .map(|e| e.start)
        .filter(|s| *s > start && *s < end)
        .min()
        .unwrap_or(end))
}

/// The latest end of an exclusion that is over at `now` (`end <= now`).
pub fn last_exclusion_end(
    exclusions: &[ExclusionPeriod],
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    exclusions
        .iter()
        .map(|e| e.end)
        .filter(|end| *end <= now)
        .max()
}

/// One nanosecond before `t`: the cursor from which "the next opening strictly after" finds
/// openings at or after `t`.
pub(crate) fn just_before(t: DateTime<Utc>) -> DateTime<Utc> {
    t - Duration::nanoseconds(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ex(start: &str, end: &str) -> Exclusion {
        Exclusion {
            start: start.into(),
            end: end.into(),
            reason: Some("freeze".into()),
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn a_date_means_the_whole_day_in_the_window_zone() {
        let p = parse_exclusions(&[ex("2026-12-24", "2026-12-26")], Tz::Europe__Berlin).unwrap();
        assert_eq!(p[0].start, utc(2026, 12, 23, 23, 0));
        assert_eq!(p[0].end, utc(2026, 12, 26, 23, 0));
        let p = parse_exclusions(&[ex("2026-12-24", "2026-12-24")], Tz::America__New_York).unwrap();
        assert_eq!(
            (p[0].start, p[0].end),
            (utc(2026, 12, 24, 5, 0), utc(2026, 12, 25, 5, 0))
        );
    }

    #[test]
    fn a_date_only_day_across_dst_lasts_its_local_length_in_two_zones() {
        // Europe/Berlin springs forward on 2026-03-29: that day lasts 23 hours.
        let p = parse_exclusions(&[ex("2026-03-29", "2026-03-29")], Tz::Europe__Berlin).unwrap();
        assert_eq!(p[0].end - p[0].start, Duration::hours(23));
        // ... and falls back on 2026-10-25: 25 hours.
        let p = parse_exclusions(&[ex("2026-10-25", "2026-10-25")], Tz::Europe__Berlin).unwrap();
        assert_eq!(p[0].end - p[0].start, Duration::hours(25));
        // America/New_York: 2026-03-08 (23h) and 2026-11-01 (25h).
        let p = parse_exclusions(&[ex("2026-03-08", "2026-03-08")], Tz::America__New_York).unwrap();
        assert_eq!(p[0].end - p[0].start, Duration::hours(23));
        assert_eq!(p[0].start, utc(2026, 3, 8, 5, 0));
        let p = parse_exclusions(&[ex("2026-11-01", "2026-11-01")], Tz::America__New_York).unwrap();
        assert_eq!(p[0].end - p[0].start, Duration::hours(25));
    }

    #[test]
    fn a_day_whose_midnight_is_skipped_starts_after_the_gap() {
        // America/Santiago springs forward at 24:00 on 2026-09-05: 2026-09-06 00:00 does not
        // exist and the day starts at 01:00 local (-03).
        let p = parse_exclusions(&[ex("2026-09-06", "2026-09-06")], Tz::America__Santiago).unwrap();
        assert_eq!(p[0].start, utc(2026, 9, 6, 4, 0));
    }

    #[test]
    fn timestamps_are_absolute_and_may_mix_with_dates() {
        let p = parse_exclusions(
            &[ex("2026-12-24T18:00:00+01:00", "2026-12-26")],
            Tz::Europe__Berlin,
        )
        .unwrap();
        assert_eq!(p[0].start, utc(2026, 12, 24, 17, 0));
        assert_eq!(p[0].end, utc(2026, 12, 26, 23, 0));
    }

    #[test]
    fn bad_bounds_get_field_specific_messages() {
        let errors = parse_exclusions(
            &[
                ex("2026-12-26", "2026-12-24"),
                ex("2026-13-01", "tomorrow"),
                ex("2026-12-24T10:00:00Z", "2026-12-24T10:00:00Z"),
            ],
            Tz::UTC,
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 4, "{text:#?}");
        assert!(
            text[0].starts_with("spec.exclusions[0].end: \"2026-12-24\" (2026-12-25T00:00:00+00:00) is not after start \"2026-12-26\""),
            "{}",
            text[0]
        );
        assert!(
            text[1].starts_with("spec.exclusions[1].start: \"2026-13-01\" is not a valid date"),
            "{}",
            text[1]
        );
        assert!(
            text[2].starts_with(
                "spec.exclusions[1].end: \"tomorrow\" is not a valid RFC 3339 timestamp"
            ),
            "{}",
            text[2]
        );
        assert!(
            text[3].starts_with("spec.exclusions[2].end: "),
            "{}",
            text[3]
        );
    }

    #[test]
    fn an_opening_inside_an_exclusion_is_skipped_and_one_before_it_is_cut() {
        let p = parse_exclusions(&[ex("2026-12-24", "2026-12-24")], Tz::UTC).unwrap();
        assert_eq!(
            apply_exclusions(&p, utc(2026, 12, 24, 2, 0), utc(2026, 12, 24, 6, 0)).unwrap_err(),
            &p[0]
        );
        assert_eq!(
            apply_exclusions(&p, utc(2026, 12, 23, 22, 0), utc(2026, 12, 24, 2, 0)),
            Ok(utc(2026, 12, 24, 0, 0))
        );
        assert_eq!(
            apply_exclusions(&p, utc(2026, 12, 25, 0, 0), utc(2026, 12, 25, 4, 0)),
            Ok(utc(2026, 12, 25, 4, 0)),
            "the end is exclusive: a window opening at the exclusion's end is kept"
        );
        assert_eq!(exclusion_at(&p, utc(2026, 12, 24, 23, 59)), Some(&p[0]));
        assert_eq!(exclusion_at(&p, utc(2026, 12, 25, 0, 0)), None);
        assert_eq!(
            next_exclusion_start(&p, utc(2026, 12, 1, 0, 0)),
            Some(p[0].start)
        );
        assert_eq!(
            last_exclusion_end(&p, utc(2026, 12, 26, 0, 0)),
            Some(p[0].end)
        );
    }
}
