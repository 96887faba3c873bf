//! Cron expressions with exactly the grammar of a Kubernetes CronJob `schedule`.
//!
//! Kubernetes parses CronJob schedules with `cron.ParseStandard` from robfig/cron v3. This is a
//! re-implementation of that parser and of its matching rules:
//!
//! - 5 whitespace-separated fields: minute (0-59), hour (0-23), day of month (1-31),
//!   month (1-12 or `JAN`-`DEC`) and day of week (0-6 or `SUN`-`SAT`); names are
//!   case-insensitive;
//! - each field is a comma list of `*`, `?` (the same as `*`), `N`, `N-M`, and any of these
//!   with a step: `*/S`, `N-M/S`, and `N/S`, which means `N-max/S`;
//! - `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight` and `@hourly`
//!   (matched exactly, as robfig does);
//! - day of month and day of week: when either field is "starred" the day must match both
//!   (which in effect means the other field), otherwise it must match either. A field is starred
//!   when one of its list items is `*` or `?` with no step, or with step 1 (robfig's star bit).
//!
//! Two deliberate differences from robfig, both required by nmo's API contract:
//!
//! - day of week `7` is accepted as Sunday (robfig v3 rejects it), also as a range end
//!   (`5-7` is Friday to Sunday); `*` and `N/S` still span 0-6 as in robfig;
//! - `TZ=`/`CRON_TZ=` prefixes and `@every` are rejected: the zone comes from
//!   `spec.timeZone` (the CronJob API rejects the prefix too), and `@every` is relative to
//!   when a process started, which has no meaning for a stateless window.
//!
//! Evaluation is on local wall-clock times in a zone; see [`Schedule::next_after`] for DST.

use super::ScheduleError;
use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

/// How far ahead [`Schedule::next_after`] looks for a matching date. Every satisfiable
/// schedule matches within 8 years (the longest gap between two 29 Februaries, as around 2100).
const SEARCH_YEARS: i32 = 9;

/// A parsed cron schedule. Cheap to clone and to evaluate; parse once, evaluate often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    source: String,
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days_of_month: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    days_of_week: u8,
    dom_starred: bool,
    dow_starred: bool,
}

/// One of the five cron fields, for parsing and for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CronField {
    /// Minute, 0-59.
    Minute,
    /// Hour, 0-23.
    Hour,
    /// Day of month, 1-31.
    DayOfMonth,
    /// Month, 1-12 or JAN-DEC.
    Month,
    /// Day of week, 0-7 or SUN-SAT (0 and 7 are Sunday).
    DayOfWeek,
}

impl CronField {
    const ALL: [CronField; 5] = [
        CronField::Minute,
        CronField::Hour,
        CronField::DayOfMonth,
        CronField::Month,
        CronField::DayOfWeek,
    ];

    /// The field's name as used in messages, such as `day of week`.
    pub fn name(self) -> &'static str {
        match self {
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day of month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day of week",
        }
    }

    /// Range of `*` and of `N/S` (robfig's bounds).
    fn bounds(self) -> (u32, u32) {
        match self {
            CronField::Minute => (0, 59),
            CronField::Hour => (0, 23),
            CronField::DayOfMonth => (1, 31),
            CronField::Month => (1, 12),
            CronField::DayOfWeek => (0, 6),
        }
    }

    /// Largest number allowed when written explicitly (7 = Sunday for day of week).
    fn explicit_max(self) -> u32 {
        match self {
            CronField::DayOfWeek => 7,
            other => other.bounds().1,
        }
    }

    /// What the field allows, for messages.
    fn allowed(self) -> &'static str {
        match self {
            CronField::Minute => "0-59",
            CronField::Hour => "0-23",
            CronField::DayOfMonth => "1-31",
            CronField::Month => "1-12 or JAN-DEC",
            CronField::DayOfWeek => "0-7 or SUN-SAT (0 and 7 are Sunday)",
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            CronField::Month => &[
                "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
            ],
            CronField::DayOfWeek => &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
            _ => &[],
        }
    }

    /// Value of a name: months start at 1, days of week at 0.
    fn name_value(self, text: &str) -> Option<u32> {
        let lower = text.to_ascii_lowercase();
        let offset = u32::from(self == CronField::Month);
        self.names()
            .iter()
            .position(|n| *n == lower)
            .map(|i| i as u32 + offset)
    }
}

/// A field after parsing: its value bits (bit n = value n) and robfig's star bit.
struct ParsedField {
    bits: u64,
    starred: bool,
}

impl Schedule {
    /// Parse a CronJob `schedule`. Errors say which field is wrong and what it allows.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        if text.is_empty() {
            return Err(ScheduleError::EmptySchedule);
        }
        // The CronJob API rejects any "TZ" in the schedule, which covers TZ= and CRON_TZ=.
        if text.contains("TZ") {
            return Err(ScheduleError::TimeZoneInSchedule {
                schedule: text.to_string(),
            });
        }
        if text.starts_with('@') {
            return Self::parse_macro(text);
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ScheduleError::FieldCount {
                schedule: text.to_string(),
                found: fields.len(),
            });
        }
        let mut parsed = Vec::with_capacity(5);
        for (field, part) in CronField::ALL.into_iter().zip(&fields) {
            parsed.push(parse_field(field, part).map_err(|reason| {
                ScheduleError::InvalidField {
                    schedule: text.to_string(),
                    field,
                    value: (*part).to_string(),
                    reason,
                }
            })?);
        }
        let dow = &parsed[4];
        // Day of week 7 is Sunday: fold bit 7 onto bit 0.
        let dow_bits = ((dow.bits | (dow.bits >> 7)) & 0x7f) as u8;
        Ok(Schedule {
            source: text.to_string(),
            minutes: parsed[0].bits,
            hours: parsed[1].bits as u32,
            days_of_month: parsed[2].bits as u32,
            months: parsed[3].bits as u16,
            days_of_week: dow_bits,
            dom_starred: parsed[2].starred,
            dow_starred: dow.starred,
        })
    }

    fn parse_macro(text: &str) -> Result<Schedule, ScheduleError> {
        let all_hours = (1u32 << 24) - 1;
        let all_dom = ((1u32 << 31) - 1) << 1;
        let all_months = ((1u16 << 12) - 1) << 1;
        let all_dow = 0x7f;
        // (hours, day of month, month, day of week, dom starred, dow starred), as robfig
        // builds its descriptors.
        let (hours, dom, months, dow, dom_starred, dow_starred) = match text {
            "@yearly" | "@annually" => (1, 1 << 1, 1 << 1, all_dow, false, true),
            "@monthly" => (1, 1 << 1, all_months, all_dow, false, true),
            "@weekly" => (1, all_dom, all_months, 1, true, false),
            "@daily" | "@midnight" => (1, all_dom, all_months, all_dow, true, true),
            "@hourly" => (all_hours, all_dom, all_months, all_dow, true, true),
            _ => {
                return Err(ScheduleError::UnknownMacro {
                    schedule: text.to_string(),
                });
            }
        };
        Ok(Schedule {
            source: text.to_string(),
            minutes: 1,
            hours,
            days_of_month: dom,
            months,
            days_of_week: dow,
            dom_starred,
            dow_starred,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Does this calendar day match the day-of-month, day-of-week and month fields?
    fn date_matches(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.dom_starred || self.dow_starred {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// Does this local wall-clock minute match? (Seconds are ignored.)
    pub fn matches_local(&self, local: NaiveDateTime) -> bool {
        self.minutes & (1 << local.minute()) != 0
            && self.hours & (1 << local.hour()) != 0
            && self.date_matches(local.date())
    }

    /// Whether any time can ever match. `0 0 30 2 *` parses (as in Kubernetes) but never
    /// fires; so does a field that is only commas, which robfig reads as an empty list.
    pub fn fires_ever(&self) -> bool {
        if self.minutes == 0 || self.hours == 0 || self.months == 0 {
            return false;
        }
        // Some listed day of month exists in some listed month (29 February counts).
        let dom_possible = (1..=12u32).any(|month| {
            self.months & (1 << month) != 0
                && (1..=days_in_month_max(month)).any(|d| self.days_of_month & (1 << d) != 0)
        });
        // Every month has every weekday, so any listed weekday occurs.
        let dow_possible = self.days_of_week != 0;
        match (self.dom_starred, self.dow_starred) {
            (true, true) => true,
            (true, false) => dow_possible,
            (false, true) => dom_possible,
            (false, false) => dom_possible || dow_possible,
        }
    }

    /// The first local wall-clock minute at or after `from` (rounded up to a whole minute)
    /// that matches, looking at most 9 years ahead.
    pub fn next_local_at_or_after(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut from = from.with_nanosecond(0)?;
        if from.second() != 0 {
            from = from.with_second(0)? + Duration::minutes(1);
        }
        // Not `with_year`: that fails when `from` is on 29 February.
        let limit = from
            .date()
            .checked_add_days(chrono::Days::new(366 * SEARCH_YEARS as u64))?;
        let mut date = from.date();
        let (mut hour, mut minute) = (from.hour(), from.minute());
        while date <= limit {
            if self.months & (1 << date.month()) == 0 {
                // Jump to the first of the next month.
                let (y, m) = if date.month() == 12 {
                    (date.year() + 1, 1)
                } else {
                    (date.year(), date.month() + 1)
                };
                date = NaiveDate::from_ymd_opt(y, m, 1)?;
                (hour, minute) = (0, 0);
                continue;
            }
            if self.date_matches(date)
                && let Some((h, m)) = self.first_time_at_or_after(hour, minute)
            {
                return date.and_hms_opt(h, m, 0);
            }
            date = date.succ_opt()?;
            (hour, minute) = (0, 0);
        }
        None
    }

    /// First matching (hour, minute) on a day at or after `hour:minute`.
    fn first_time_at_or_after(&self, hour: u32, minute: u32) -> Option<(u32, u32)> {
        let hours = self.hours & (u32::MAX << hour);
        let mut remaining = hours;
        while remaining != 0 {
            let h = remaining.trailing_zeros();
            let from_minute = if h == hour { minute } else { 0 };
            let minutes = self.minutes & (u64::MAX << from_minute);
            if minutes != 0 {
                return Some((h, minutes.trailing_zeros()));
            }
            remaining &= remaining - 1;
        }
        None
    }

    /// The first firing strictly after `after`, with the schedule read in `tz`.
    ///
    /// Firings are the matching local wall-clock minutes, each mapped to an instant:
    /// - a time that exists once is that instant;
    /// - a time in a repeated hour (autumn) is its **first** occurrence, so it fires once;
    /// - a time in a skipped hour (spring) is the first valid instant after the gap (`02:30`
    ///   on the Europe/Berlin spring-forward day fires at 03:00 CEST); several skipped times
    ///   collapse into that one firing.
    ///
    /// Returns `None` if nothing matches within the next 9 years (only for schedules that
    /// never fire, see [`Schedule::fires_ever`]).
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        // The mapping from local minute to instant is monotonic, so no matching minute before
        // the local time of `after` can map to an instant after it.
        let mut cursor = after.with_timezone(&tz).naive_local().with_second(0)?;
        cursor = cursor.with_nanosecond(0)?;
        loop {
            let local = self.next_local_at_or_after(cursor)?;
            let instant = resolve_local(tz, local)?;
            if instant > after {
                return Some(instant);
            }
            cursor = local + Duration::minutes(1);
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Schedule {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

/// The instant a local wall-clock time stands for, with nmo's DST rules: the earlier of two
/// occurrences, and for a time in a gap the first valid instant after the gap.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        LocalResult::None => {
            // Walk to the first valid local minute after the gap (gaps are at most a day,
            // as Samoa's in 2011), then back to the exact transition instant in case a
            // historical transition was not on a whole minute.
            let mut probe = local;
            for _ in 0..(48 * 60) {
                probe += Duration::minutes(1);
                if let Some(valid) = tz.from_local_datetime(&probe).earliest() {
                    let after_gap = valid.with_timezone(&Utc);
                    let offset = *valid.offset();
                    let mut transition = after_gap;
                    for s in 1..60 {
                        let earlier = after_gap - Duration::seconds(s);
                        if tz.offset_from_utc_datetime(&earlier.naive_utc()) != offset {
                            break;
                        }
                        transition = earlier;
                    }
                    return Some(transition);
                }
            }
            None
        }
    }
}

fn days_in_month_max(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parse one field: a comma list of ranges. The error is the reason, without the field name.
/// Empty list items are skipped, as robfig's `strings.FieldsFunc` does (`1,,2` is `1,2`).
fn parse_field(field: CronField, text: &str) -> Result<ParsedField, String> {
    let mut out = ParsedField {
        bits: 0,
        starred: false,
    };
    for item in text.split(',').filter(|item| !item.is_empty()) {
        let parsed = parse_range(field, item)?;
        out.bits |= parsed.bits;
        out.starred |= parsed.starred;
    }
    Ok(out)
}

/// robfig's `getRange`: `*`, `?`, `N`, `N-M`, each optionally followed by `/STEP`.
fn parse_range(field: CronField, item: &str) -> Result<ParsedField, String> {
    let (min, max) = field.bounds();
    let mut range_and_step = item.split('/');
    let range = range_and_step.next().unwrap_or("");
    let step_text = range_and_step.next();
    if range_and_step.next().is_some() {
        return Err(format!("{item:?} has too many slashes"));
    }
    let low_high: Vec<&str> = range.split('-').collect();
    let single = low_high.len() == 1;
    let (start, mut end, mut starred);
    if low_high[0] == "*" || low_high[0] == "?" {
        // robfig ignores anything after "*-" here; so do we, to accept what Kubernetes accepts.
        (start, end, starred) = (min, max, true);
    } else if low_high[0].is_empty() && low_high.len() > 1 {
        return Err(format!(
            "{item:?} starts with '-': negative numbers are not allowed (allowed: {})",
            field.allowed()
        ));
    } else {
        start = parse_value(field, low_high[0])?;
        end = match low_high.len() {
            1 => start,
            2 => parse_value(field, low_high[1])?,
            _ => return Err(format!("{item:?} has too many hyphens")),
        };
        starred = false;
    }
    let mut step = 1;
    if let Some(step_text) = step_text {
        step = parse_number(step_text).map_err(|reason| format!("step {step_text:?} {reason}"))?;
        // "N/S" means "N-max/S".
        if single {
            end = max;
        }
        if step > 1 {
            starred = false;
        }
    }
    if start < min {
        return Err(format!(
            "{start} is below the minimum {min} (allowed: {})",
            field.allowed()
        ));
    }
    let explicit_max = field.explicit_max();
    if start.max(end) > explicit_max {
        return Err(format!(
            "{} is above the maximum {explicit_max} (allowed: {})",
            start.max(end),
            field.allowed()
        ));
    }
    if start > end {
        return Err(format!(
            "range start {start} is after range end {end} (allowed: {})",
            field.allowed()
        ));
    }
    if step == 0 {
        return Err("step must be a positive number".to_string());
    }
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v = match v.checked_add(step) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(ParsedField { bits, starred })
}

/// A number (robfig's `mustParseInt`) or, in month and day-of-week, a name.
fn parse_value(field: CronField, text: &str) -> Result<u32, String> {
    if let Some(v) = field.name_value(text) {
        return Ok(v);
    }
    parse_number(text).map_err(|reason| {
        if field.names().is_empty() {
            format!("{text:?} {reason}")
        } else {
            format!(
                "{text:?} is neither a number nor a name (allowed: {})",
                field.allowed()
            )
        }
    })
}

/// Go's `strconv.Atoi` with robfig's "no negatives": an optional `+`, then digits.
fn parse_number(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    if text.starts_with('-') && text.len() > 1 && text[1..].bytes().all(|b| b.is_ascii_digit()) {
        return Err("is negative, which is not allowed".to_string());
    }
    if digits.is_empty() {
        return Err("is empty, expected a number".to_string());
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not a number".to_string());
    }
    // Anything above u32 is out of every field's range anyway; keep it an honest number.
    digits
        .parse::<u64>()
        .map(|v| v.min(u64::from(u32::MAX)) as u32)
        .map_err(|_| "is too large".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(v: &[u32]) -> u64 {
        v.iter().fold(0, |acc, b| acc | 1 << b)
    }

    #[test]
    fn n_slash_step_means_n_to_max() {
        let s = Schedule::parse("5/20 * * * *").unwrap();
        assert_eq!(s.minutes, bits(&[5, 25, 45]));
    }

    #[test]
    fn star_with_step_one_keeps_the_star_but_a_larger_step_drops_it() {
        assert!(Schedule::parse("* * */1 * 1").unwrap().dom_starred);
        assert!(!Schedule::parse("* * */2 * 1").unwrap().dom_starred);
        assert!(Schedule::parse("* * 1,? * 1").unwrap().dom_starred);
    }

    #[test]
    fn day_of_week_seven_is_sunday_and_ranges_may_end_at_seven() {
        assert_eq!(Schedule::parse("0 0 * * 7").unwrap().days_of_week, 1);
        assert_eq!(
            Schedule::parse("0 0 * * 5-7").unwrap().days_of_week,
            bits(&[0, 5, 6]) as u8
        );
        assert_eq!(
            Schedule::parse("0 0 * * 3/2").unwrap().days_of_week,
            bits(&[3, 5]) as u8
        );
    }

    #[test]
    fn names_are_case_insensitive() {
        let s = Schedule::parse("0 0 * jan,Feb,MAR mon-Fri").unwrap();
        assert_eq!(s.months, bits(&[1, 2, 3]) as u16);
        assert_eq!(s.days_of_week, bits(&[1, 2, 3, 4, 5]) as u8);
    }

    #[test]
    fn errors_name_the_field_and_what_it_allows() {
        let cases = [
            ("0 24 * * *", "hour field \"24\""),
            ("60 * * * *", "minute field \"60\""),
            (
                "0 0 0 * *",
                "day of month field \"0\": 0 is below the minimum 1",
            ),
            ("0 0 * 13 *", "month field \"13\""),
            (
                "0 0 * * 8",
                "day of week field \"8\": 8 is above the maximum 7",
            ),
            ("0 0 * * MON-XYZ", "\"XYZ\" is neither a number nor a name"),
            ("0 0 * * 5-1", "range start 5 is after range end 1"),
            ("*/0 * * * *", "step must be a positive number"),
            ("1-2-3 * * * *", "too many hyphens"),
            ("*/2/3 * * * *", "too many slashes"),
            ("-1 * * * *", "negative numbers are not allowed"),
            ("*/-2 * * * *", "step \"-2\" is negative"),
            ("0 0 1-/2 * *", "\"\" is empty"),
            ("mon * * * *", "\"mon\" is not a number"),
            ("0 0 * *", "expected exactly 5 fields"),
            ("0 0 * * * *", "found 6"),
            ("@every 1h", "unknown macro"),
            ("@Daily", "unknown macro"),
            ("CRON_TZ=UTC 0 0 * * *", "spec.timeZone"),
            ("TZ=Europe/Berlin 0 0 * * *", "spec.timeZone"),
            ("", "empty"),
        ];
        for (expr, expected) in cases {
            let err = Schedule::parse(expr).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{expr:?}: {err:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn a_schedule_on_30_february_parses_but_never_fires() {
        let s = Schedule::parse("0 0 30 2 *").unwrap();
        assert!(!s.fires_ever());
        assert_eq!(s.next_after(Utc::now(), Tz::UTC), None);
        assert!(Schedule::parse("0 0 29 2 *").unwrap().fires_ever());
        assert!(Schedule::parse("0 0 30 2 1").unwrap().fires_ever());
    }

    #[test]
    fn robfig_quirks_are_accepted_like_kubernetes_does() {
        // Anything after "*-" is ignored.
        let s = Schedule::parse("*-5 * * * *").unwrap();
        assert_eq!(s.minutes, (1u64 << 60) - 1);
        // Empty list items are skipped; a field of only commas matches nothing.
        assert_eq!(
            Schedule::parse("1,,2 * * * *").unwrap().minutes,
            bits(&[1, 2])
        );
        let never = Schedule::parse(", * * * *").unwrap();
        assert!(!never.fires_ever());
        // Go's Atoi takes a leading '+'.
        assert_eq!(Schedule::parse("+5 * * * *").unwrap().minutes, bits(&[5]));
    }
}
