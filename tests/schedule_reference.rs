//! Property test: `Schedule::next_after` agrees with a naive reference evaluator over random
//! CronJob expressions, zones and start instants, including around DST changes.
//!
//! The reference is written independently of `src/schedule/`: it expands each field into a
//! set of values by brute force, and walks UTC minute by minute, deciding for each instant
//! whether something fires then:
//! - the local time at that instant matches and this is the first time that local time
//!   occurs (the repeated hour in autumn fires once), or
//! - the clock just jumped forward and a matching local time lay inside the skipped part
//!   (a start in the spring gap fires at the first instant after it).

use chrono::{DateTime, Datelike, Duration, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use nmo::schedule::Schedule;
use proptest::prelude::*;

/// How far the reference looks ahead.
const HORIZON_DAYS: i64 = 40;

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// The values a field allows, as a plain boolean table indexed by value, and whether the
/// field counts as "starred" for the day-of-month/day-of-week rule.
struct Field {
    allowed: Vec<bool>,
    starred: bool,
}

fn value_of(text: &str, names: &[&str], first_name_value: u32) -> u32 {
    match names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        Some(i) => i as u32 + first_name_value,
        None => text.parse().expect("generator writes numbers or names"),
    }
}

/// `star_max` is what `*` and `N/S` run up to; day of week accepts 7 but `*` means 0-6.
fn read_field(
    text: &str,
    star_min: u32,
    star_max: u32,
    names: &[&str],
    first_name_value: u32,
) -> Field {
    let mut allowed = vec![false; 64];
    let mut starred = false;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, step.parse::<u32>().unwrap()),
            None => (item, 1),
        };
        let (from, to) = if range == "*" || range == "?" {
            if step == 1 {
                starred = true;
            }
            (star_min, star_max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                value_of(a, names, first_name_value),
                value_of(b, names, first_name_value),
            )
        } else if item.contains('/') {
            (value_of(range, names, first_name_value), star_max)
        } else {
            let v = value_of(range, names, first_name_value);
            (v, v)
        };
        let mut v = from;
        while v <= to {
            allowed[v as usize] = true;
            v += step;
        }
    }
    Field { allowed, starred }
}

struct Reference {
    minute: Field,
    hour: Field,
    dom: Field,
    month: Field,
    dow: Field,
}

impl Reference {
    fn new(expr: &str) -> Reference {
        let expr = match expr {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let f: Vec<&str> = expr.split(' ').collect();
        Reference {
            minute: read_field(f[0], 0, 59, &[], 0),
            hour: read_field(f[1], 0, 23, &[], 0),
            dom: read_field(f[2], 1, 31, &[], 0),
            month: read_field(f[3], 1, 12, &MONTHS, 1),
            dow: read_field(f[4], 0, 6, &DAYS, 0),
        }
    }

    fn matches(&self, t: NaiveDateTime) -> bool {
        let weekday = t.weekday().num_days_from_sunday() as usize;
        let dom = self.dom.allowed[t.day() as usize];
        let dow = self.dow.allowed[weekday] || (weekday == 0 && self.dow.allowed[7]);
        let day = if self.dom.starred || self.dow.starred {
            dom && dow
        } else {
            dom || dow
        };
        self.minute.allowed[t.minute() as usize]
            && self.hour.allowed[t.hour() as usize]
            && self.month.allowed[t.month() as usize]
            && day
    }

    /// The first instant strictly after `after` at which something fires, within the horizon.
    fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let floor = after
            - Duration::seconds(after.timestamp().rem_euclid(60))
            - Duration::nanoseconds(after.timestamp_subsec_nanos() as i64);
        let mut u = floor + Duration::minutes(1);
        for _ in 0..HORIZON_DAYS * 24 * 60 {
            let local = u.with_timezone(&tz).naive_local();
            let first_occurrence = tz
                .from_local_datetime(&local)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                == Some(u);
            if self.matches(local) && first_occurrence {
                return Some(u);
            }
            let before = (u - Duration::minutes(1)).with_timezone(&tz).naive_local();
            let mut skipped = before + Duration::minutes(1);
            while skipped < local {
                if self.matches(skipped) {
                    return Some(u);
                }
                skipped += Duration::minutes(1);
            }
            u += Duration::minutes(1);
        }
        None
    }
}

fn number_or_name(v: u32, names: &'static [&'static str], first: u32, upper: bool) -> String {
    let i = v.wrapping_sub(first) as usize;
    match names.get(i) {
        Some(name) if upper => name.to_uppercase(),
        Some(name) => name.to_string(),
        None => v.to_string(),
    }
}

/// One list item of a field: `*`, `?`, `N`, `A-B`, `*/S`, `A-B/S` or `N/S`.
fn item(
    lo: u32,
    hi: u32,
    star_hi: u32,
    names: &'static [&'static str],
    first: u32,
) -> impl Strategy<Value = String> {
    let max_step = (star_hi - lo).max(1) + 2;
    let word = move |v: u32, style: u8| {
        if style == 1 {
            number_or_name(v, names, first, false)
        } else if style == 2 {
            number_or_name(v, names, first, true)
        } else {
            v.to_string()
        }
    };
    prop_oneof![
        2 => Just("*".to_string()),
        1 => Just("?".to_string()),
        3 => (lo..=hi, 0u8..3).prop_map(move |(v, s)| word(v, s)),
        2 => (lo..=hi, lo..=hi, 0u8..3).prop_map(move |(a, b, s)| format!("{}-{}", word(a.min(b), s), word(a.max(b), s))),
        2 => (1..=max_step).prop_map(|s| format!("*/{s}")),
        1 => (lo..=hi, lo..=hi, 1..=max_step).prop_map(move |(a, b, s)| format!("{}-{}/{s}", a.min(b), a.max(b))),
        1 => (lo..=star_hi, 1..=max_step, 0u8..3).prop_map(move |(a, s, st)| format!("{}/{s}", word(a, st))),
    ]
}

fn field(
    lo: u32,
    hi: u32,
    star_hi: u32,
    names: &'static [&'static str],
    first: u32,
) -> impl Strategy<Value = String> {
    prop::collection::vec(item(lo, hi, star_hi, names, first), 1..=3)
        .prop_map(|items| items.join(","))
}

fn expression() -> impl Strategy<Value = String> {
    let five = (
        field(0, 59, 59, &[], 0),
        field(0, 23, 23, &[], 0),
        // Day of month and month lean towards `*` so that most expressions fire within the horizon.
        prop_oneof![2 => Just("*".to_string()), 1 => field(1, 31, 31, &[], 0)],
        prop_oneof![3 => Just("*".to_string()), 1 => field(1, 12, 12, &MONTHS, 1)],
        field(0, 7, 6, &DAYS, 0),
    )
        .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"));
    prop_oneof![
        12 => five,
        1 => prop::sample::select(vec!["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"]).prop_map(str::to_string),
    ]
}

fn zone() -> impl Strategy<Value = Tz> {
    prop::sample::select(vec![
        Tz::UTC,
        Tz::Europe__Berlin,
        Tz::America__New_York,
        Tz::Australia__Lord_Howe, // 30-minute DST shift
        Tz::Asia__Kathmandu,      // +05:45, no DST
        Tz::America__Santiago,    // southern-hemisphere DST at midnight
    ])
}

/// A zone and a start instant: uniform over 2020-2030, or within 36 hours of one of the
/// zone's DST changes.
fn zone_and_start() -> impl Strategy<Value = (Tz, DateTime<Utc>)> {
    let transitions = vec![
        (Tz::Europe__Berlin, "2025-03-30T01:00:00Z"),
        (Tz::Europe__Berlin, "2025-10-26T01:00:00Z"),
        (Tz::America__New_York, "2025-03-09T07:00:00Z"),
        (Tz::America__New_York, "2025-11-02T06:00:00Z"),
        (Tz::Australia__Lord_Howe, "2025-04-05T15:00:00Z"),
        (Tz::Australia__Lord_Howe, "2025-10-04T15:30:00Z"),
        (Tz::America__Santiago, "2025-04-06T03:00:00Z"),
        (Tz::America__Santiago, "2025-09-07T04:00:00Z"),
    ];
    let near = (prop::sample::select(transitions), -36 * 3600i64..36 * 3600).prop_map(
        |((tz, t), offset)| {
            (
                tz,
                DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
                    + Duration::seconds(offset),
            )
        },
    );
    let uniform = (zone(), 1_577_836_800i64..1_893_456_000, 0u32..1_000_000_000)
        .prop_map(|(tz, s, ns)| (tz, DateTime::from_timestamp(s, ns).unwrap()));
    prop_oneof![1 => uniform, 2 => near]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn next_after_agrees_with_the_minute_by_minute_reference(expr in expression(), (tz, from) in zone_and_start()) {
        let schedule = Schedule::parse(&expr).map_err(|e| TestCaseError::fail(format!("{expr}: {e}")))?;
        let reference = Reference::new(&expr);
        let horizon = from + Duration::days(HORIZON_DAYS) - Duration::minutes(1);
        // Three firings in a row, each from the one before.
        let mut cursor = from;
        for _ in 0..3 {
            let expected = reference.next_after(cursor, tz);
            let got = schedule.next_after(cursor, tz);
            match expected {
                Some(want) => prop_assert_eq!(got, Some(want), "{} in {} after {}", expr, tz, cursor),
                None => {
                    // Nothing within the horizon: the real answer must lie beyond it.
                    prop_assert!(got.is_none_or(|t| t > horizon), "{} in {} after {}: got {:?}", expr, tz, cursor, got);
                    break;
                }
            }
            cursor = got.unwrap();
            if cursor > horizon - Duration::days(2) {
                break;
            }
        }
    }
}
