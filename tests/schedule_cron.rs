//! Schedules against independently worked-out times (checked with GNU `date` and a calendar),
//! and the DST rules in Europe/Berlin and America/New_York.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use nmo::api::{MaintenanceWindowSpec, Release};
use nmo::schedule::{Schedule, WindowPolicy};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

/// The next `expected.len()` firings of `expr` in `tz` after `from`, each strictly after the
/// one before.
fn assert_firings(expr: &str, tz: Tz, from: &str, expected: &[&str]) {
    let schedule = Schedule::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let mut cursor = at(from);
    for want in expected {
        let got = schedule
            .next_after(cursor, tz)
            .unwrap_or_else(|| panic!("{expr}: no firing after {cursor}"));
        assert_eq!(got, at(want), "{expr} in {tz} after {cursor}");
        cursor = got;
    }
}

#[test]
fn schedules_fire_at_independently_worked_out_times() {
    let utc = Tz::UTC;
    let cases: &[(&str, &str, &[&str])] = &[
        // Mondays at 02:00; 2025-01-01 is a Wednesday.
        (
            "0 2 * * 1",
            "2025-01-01T00:00:00Z",
            &[
                "2025-01-06T02:00:00Z",
                "2025-01-13T02:00:00Z",
                "2025-01-20T02:00:00Z",
            ],
        ),
        // The 13th OR any Friday: both restricted, so OR-ed (13 Jan 2025 is a Monday).
        (
            "0 2 13 * 5",
            "2025-01-01T00:00:00Z",
            &[
                "2025-01-03T02:00:00Z",
                "2025-01-10T02:00:00Z",
                "2025-01-13T02:00:00Z",
                "2025-01-17T02:00:00Z",
                "2025-01-24T02:00:00Z",
                "2025-01-31T02:00:00Z",
                "2025-02-07T02:00:00Z",
                "2025-02-13T02:00:00Z",
                "2025-02-14T02:00:00Z",
            ],
        ),
        // Every 15 minutes in office hours; Friday evening rolls over to Monday morning.
        (
            "*/15 9-17 * * MON-FRI",
            "2025-01-03T17:31:00Z",
            &[
                "2025-01-03T17:45:00Z",
                "2025-01-06T09:00:00Z",
                "2025-01-06T09:15:00Z",
            ],
        ),
        // 0 and 7 are both Sunday; 2025-01-05 is a Sunday.
        (
            "0 0 * * 0",
            "2025-01-01T00:00:00Z",
            &["2025-01-05T00:00:00Z", "2025-01-12T00:00:00Z"],
        ),
        (
            "0 0 * * 7",
            "2025-01-01T00:00:00Z",
            &["2025-01-05T00:00:00Z", "2025-01-12T00:00:00Z"],
        ),
        (
            "0 0 * * SUN",
            "2025-01-01T00:00:00Z",
            &["2025-01-05T00:00:00Z"],
        ),
        // @weekly is Sunday midnight.
        (
            "@weekly",
            "2025-01-01T00:00:00Z",
            &["2025-01-05T00:00:00Z", "2025-01-12T00:00:00Z"],
        ),
        // The 31st only exists in 7 months.
        (
            "0 3 31 * *",
            "2025-01-01T00:00:00Z",
            &[
                "2025-01-31T03:00:00Z",
                "2025-03-31T03:00:00Z",
                "2025-05-31T03:00:00Z",
                "2025-07-31T03:00:00Z",
                "2025-08-31T03:00:00Z",
                "2025-10-31T03:00:00Z",
                "2025-12-31T03:00:00Z",
                "2026-01-31T03:00:00Z",
            ],
        ),
        // 29 February: leap years only, and 2100 is not one.
        (
            "0 0 29 2 *",
            "2025-01-01T00:00:00Z",
            &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"],
        ),
        (
            "0 0 29 2 *",
            "2096-03-01T00:00:00Z",
            &["2104-02-29T00:00:00Z"],
        ),
        // A stepped day of month has no star bit, so it is OR-ed with the day of week.
        (
            "0 0 */2 * MON",
            "2024-12-31T12:00:00Z",
            &[
                "2025-01-01T00:00:00Z",
                "2025-01-03T00:00:00Z",
                "2025-01-05T00:00:00Z",
                "2025-01-06T00:00:00Z",
                "2025-01-07T00:00:00Z",
            ],
        ),
        // `?` is a star: AND-ed, so Mondays only.
        (
            "0 0 ? * MON",
            "2025-01-01T00:00:00Z",
            &["2025-01-06T00:00:00Z"],
        ),
        // `N/S` means N-max/S.
        (
            "5/20 * * * *",
            "2025-01-01T00:00:00Z",
            &[
                "2025-01-01T00:05:00Z",
                "2025-01-01T00:25:00Z",
                "2025-01-01T00:45:00Z",
                "2025-01-01T01:05:00Z",
            ],
        ),
        // Names in ranges and lists, case-insensitively.
        (
            "0 12 1 jan,Jul *",
            "2025-01-01T12:00:00Z",
            &["2025-07-01T12:00:00Z", "2026-01-01T12:00:00Z"],
        ),
        (
            "@monthly",
            "2025-01-15T00:00:00Z",
            &["2025-02-01T00:00:00Z", "2025-03-01T00:00:00Z"],
        ),
        ("@yearly", "2025-01-01T00:00:00Z", &["2026-01-01T00:00:00Z"]),
        (
            "@annually",
            "2025-06-01T00:00:00Z",
            &["2026-01-01T00:00:00Z"],
        ),
        ("@daily", "2025-01-01T00:00:00Z", &["2025-01-02T00:00:00Z"]),
        (
            "@midnight",
            "2025-01-01T23:59:59Z",
            &["2025-01-02T00:00:00Z"],
        ),
        (
            "@hourly",
            "2025-01-01T00:30:00Z",
            &["2025-01-01T01:00:00Z", "2025-01-01T02:00:00Z"],
        ),
        // Strictly after, also with seconds and sub-seconds.
        (
            "0 2 * * *",
            "2025-01-01T02:00:00Z",
            &["2025-01-02T02:00:00Z"],
        ),
        (
            "0 2 * * *",
            "2025-01-01T01:59:59.999Z",
            &["2025-01-01T02:00:00Z"],
        ),
    ];
    for (expr, from, expected) in cases {
        assert_firings(expr, utc, from, expected);
    }
}

#[test]
fn sunday_as_0_and_as_7_give_the_same_firings_for_a_year() {
    let zero = Schedule::parse("15 4 * * 0").unwrap();
    let seven = Schedule::parse("15 4 * * 7").unwrap();
    let (mut a, mut b) = (at("2025-01-01T00:00:00Z"), at("2025-01-01T00:00:00Z"));
    for _ in 0..53 {
        a = zero.next_after(a, Tz::Europe__Berlin).unwrap();
        b = seven.next_after(b, Tz::Europe__Berlin).unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn schedules_are_read_in_their_zone() {
    // 02:00 on Saturdays in Berlin is 01:00 UTC in winter and 00:00 UTC in summer.
    assert_firings(
        "0 2 * * SAT",
        Tz::Europe__Berlin,
        "2025-03-20T00:00:00Z",
        &[
            "2025-03-22T01:00:00Z",
            "2025-03-29T01:00:00Z",
            "2025-04-05T00:00:00Z",
        ],
    );
    // 01:30 New York is 06:30 UTC in winter.
    assert_firings(
        "30 1 * * *",
        Tz::America__New_York,
        "2025-01-01T00:00:00Z",
        &["2025-01-01T06:30:00Z"],
    );
}

fn window(schedule: &str, zone: &str, duration: &str) -> WindowPolicy {
    WindowPolicy::from_spec(&MaintenanceWindowSpec {
        schedule: schedule.into(),
        time_zone: Some(zone.into()),
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
        exclusions: None,
        topology_key: None,
        health_gate: None,
    })
    .unwrap()
}

#[test]
fn a_start_in_the_spring_gap_opens_at_three_local_in_berlin() {
    // 2025-03-30: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:30 does not exist.
    assert_firings(
        "30 2 * * *",
        Tz::Europe__Berlin,
        "2025-03-29T12:00:00Z",
        &["2025-03-30T01:00:00Z", "2025-03-31T00:30:00Z"],
    );
    let w = window("30 2 * * *", "Europe/Berlin", "4h");
    let open = w.next_window(at("2025-03-29T12:00:00Z")).unwrap();
    assert_eq!(w.local_string(open.start), "Sun 2025-03-30 03:00 CEST");
    assert_eq!(open.end - open.start, Duration::hours(4));
    assert_eq!(w.local_string(open.end), "Sun 2025-03-30 07:00 CEST");
}

#[test]
fn a_start_in_the_spring_gap_opens_at_three_local_in_new_york() {
    // 2025-03-09: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
    assert_firings(
        "30 2 * * *",
        Tz::America__New_York,
        "2025-03-08T12:00:00Z",
        &["2025-03-09T07:00:00Z", "2025-03-10T06:30:00Z"],
    );
    let w = window("30 2 * * *", "America/New_York", "4h");
    let open = w.next_window(at("2025-03-08T12:00:00Z")).unwrap();
    assert_eq!(w.local_string(open.start), "Sun 2025-03-09 03:00 EDT");
}

#[test]
fn several_starts_in_the_gap_collapse_into_one_opening() {
    assert_firings(
        "*/15 2 * * *",
        Tz::Europe__Berlin,
        "2025-03-29T23:00:00Z",
        &["2025-03-30T01:00:00Z", "2025-03-31T00:00:00Z"],
    );
}

#[test]
fn a_start_in_the_repeated_hour_opens_once_in_berlin() {
    // 2025-10-26: 03:00 CEST falls back to 02:00 CET; 02:30 happens at 00:30 and 01:30 UTC.
    assert_firings(
        "30 2 * * *",
        Tz::Europe__Berlin,
        "2025-10-25T12:00:00Z",
        &["2025-10-26T00:30:00Z", "2025-10-27T01:30:00Z"],
    );
    // Asking from inside the second 02:00-03:00 does not find the repeat either.
    assert_firings(
        "30 2 * * *",
        Tz::Europe__Berlin,
        "2025-10-26T01:10:00Z",
        &["2025-10-27T01:30:00Z"],
    );
}

#[test]
fn a_start_in_the_repeated_hour_opens_once_in_new_york() {
    // 2025-11-02: 02:00 EDT falls back to 01:00 EST; 01:30 happens at 05:30 and 06:30 UTC.
    assert_firings(
        "30 1 * * *",
        Tz::America__New_York,
        "2025-11-01T12:00:00Z",
        &["2025-11-02T05:30:00Z", "2025-11-03T06:30:00Z"],
    );
    // Every minute: after 01:59 EDT comes 02:00 EST, the repeated hour is not run again.
    assert_firings(
        "* * * * *",
        Tz::America__New_York,
        "2025-11-02T05:58:30Z",
        &["2025-11-02T05:59:00Z", "2025-11-02T07:00:00Z"],
    );
}

#[test]
fn a_four_hour_window_lasts_four_elapsed_hours_across_either_change() {
    let cases = [
        // Berlin spring: opens 01:00 CET, closes 06:00 CEST (5 hours on the wall clock).
        (
            "0 1 * * *",
            "Europe/Berlin",
            "2025-03-29T12:00:00Z",
            "2025-03-30T00:00:00Z",
            "Sun 2025-03-30 06:00 CEST",
        ),
        // Berlin autumn: opens 01:00 CEST, closes 04:00 CET (3 hours on the wall clock).
        (
            "0 1 * * *",
            "Europe/Berlin",
            "2025-10-25T12:00:00Z",
            "2025-10-25T23:00:00Z",
            "Sun 2025-10-26 04:00 CET",
        ),
        (
            "0 0 * * *",
            "America/New_York",
            "2025-03-08T12:00:00Z",
            "2025-03-09T05:00:00Z",
            "Sun 2025-03-09 05:00 EDT",
        ),
        (
            "0 0 * * *",
            "America/New_York",
            "2025-11-01T12:00:00Z",
            "2025-11-02T04:00:00Z",
            "Sun 2025-11-02 03:00 EST",
        ),
    ];
    for (schedule, zone, from, start, local_end) in cases {
        let w = window(schedule, zone, "4h");
        let open = w.next_window(at(from)).unwrap();
        assert_eq!(open.start, at(start), "{schedule} {zone}");
        assert_eq!(open.end - open.start, Duration::hours(4));
        assert_eq!(w.local_string(open.end), local_end);
        // Open for its whole elapsed length, including the repeated hour, and not after.
        assert_eq!(
            w.current_window(open.end - Duration::seconds(1)),
            Some(open)
        );
        assert_eq!(w.current_window(open.end), None);
    }
}

#[test]
fn a_restart_mid_window_still_finds_the_window_open() {
    let w = window("0 2 * * SAT", "Europe/Berlin", "4h");
    let open = w.current_window(at("2025-06-07T03:17:00Z")).unwrap();
    assert_eq!(
        (open.start, open.end),
        (at("2025-06-07T00:00:00Z"), at("2025-06-07T04:00:00Z"))
    );
    let next = w.next_windows(at("2025-06-07T03:17:00Z"), 3);
    let starts: Vec<_> = next.iter().map(|o| o.start).collect();
    assert_eq!(
        starts,
        [
            at("2025-06-14T00:00:00Z"),
            at("2025-06-21T00:00:00Z"),
            at("2025-06-28T00:00:00Z")
        ]
    );
}
