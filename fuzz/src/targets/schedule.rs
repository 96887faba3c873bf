//! Targets for `nmo::schedule`: the cron parser and evaluator, Go durations, time zones, and
//! whole MaintenanceWindow manifests as `nmo validate` reads them.

use super::input::Input;
use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use nmo::api::MaintenanceWindow;
use nmo::schedule::{
    Schedule, ScheduleError, WindowPolicy, format_duration, parse_go_duration, resolve_local,
};
use std::path::Path;

/// Seconds from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z: the range of an RFC 3339 time
/// (and so of every time an object can carry).
const FIRST_SECOND: i64 = -62_135_596_800;
const LAST_SECOND: i64 = 253_402_300_799;

/// An instant in the RFC 3339 range, from 8 bytes.
pub fn instant(input: &mut Input) -> DateTime<Utc> {
    let span = (LAST_SECOND - FIRST_SECOND + 1) as u64;
    let secs = FIRST_SECOND + (input.u64() % span) as i64;
    Utc.timestamp_opt(secs, 0).single().expect("in range")
}

/// A zone: the name on the line if it parses, else one picked by the line's bytes.
fn zone(line: &[u8]) -> Tz {
    let text = String::from_utf8_lossy(line);
    text.parse::<Tz>().unwrap_or_else(|_| {
        let pick = line.iter().map(|b| usize::from(*b)).sum::<usize>();
        chrono_tz::TZ_VARIANTS[pick % chrono_tz::TZ_VARIANTS.len()]
    })
}

/// `cron`: line 1 is a schedule, line 2 a zone, the rest an instant. Parsing must not panic;
/// a schedule that parses displays as itself and parses again to the same schedule; an error
/// names the schedule and (for a bad field) the field; `next_after` is after the instant, is
/// a matching local minute (or the end of a DST gap that swallowed one), and no matching
/// minute in the day before it was skipped.
pub fn cron(data: &[u8]) {
    let mut input = Input::new(data);
    let text = String::from_utf8_lossy(input.line()).into_owned();
    let tz = zone(input.line());
    let after = instant(&mut input);
    let schedule = match Schedule::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            check_cron_error(&text, &e);
            return;
        }
    };
    assert_eq!(schedule.to_string(), text, "Display is the source");
    assert_eq!(
        Schedule::parse(&schedule.to_string()).as_ref(),
        Ok(&schedule),
        "{text:?} round-trips"
    );
    let next = schedule.next_after(after, tz);
    if !schedule.fires_ever() {
        assert_eq!(next, None, "{text:?} never fires but fired after {after}");
        return;
    }
    let Some(next) = next else {
        // A schedule that can fire does so within 9 years, unless that is past the calendar.
        assert!(
            after > Utc.with_ymd_and_hms(9990, 1, 1, 0, 0, 0).unwrap(),
            "{text:?} in {tz} fires ever but not after {after}"
        );
        return;
    };
    assert!(
        next > after,
        "{text:?} in {tz}: {next} is not after {after}"
    );
    let local = next.with_timezone(&tz).naive_local();
    let at_gap_end = tz.offset_from_utc_datetime(&(next - Duration::seconds(1)).naive_utc())
        != tz.offset_from_utc_datetime(&next.naive_utc());
    assert!(
        schedule.matches_local(local) || at_gap_end,
        "{text:?} in {tz}: fired at {next} (local {local}), which does not match"
    );
    // Nothing that fires was skipped in the (at most) 25 hours before `next`.
    let mut probe = after + Duration::seconds(60 - i64::from(after.second()));
    for _ in 0..1500 {
        if probe >= next {
            break;
        }
        let local = probe.with_timezone(&tz).naive_local();
        let minute = local.with_second(0).expect("second 0");
        if schedule.matches_local(minute)
            && let Some(fires) = resolve_local(tz, minute)
        {
            assert!(
                fires <= after || fires >= next,
                "{text:?} in {tz}: after {after} the next firing is {next}, but {minute} (at {fires}) comes first"
            );
        }
        probe += Duration::minutes(1);
    }
    // The next firing after any instant in [after, next) is `next`.
    let middle = after + (next - after) / 2;
    assert_eq!(
        schedule.next_after(middle, tz),
        Some(next),
        "{text:?} in {tz}: after {middle}"
    );
}

fn check_cron_error(text: &str, e: &ScheduleError) {
    let message = e.to_string();
    assert_eq!(e.category(), "InvalidSchedule", "{text:?}: {e:?}");
    match e {
        ScheduleError::EmptySchedule => assert!(text.is_empty()),
        ScheduleError::InvalidField {
            field,
            value,
            reason,
            ..
        } => {
            assert!(!reason.is_empty(), "{text:?}: empty reason");
            assert!(
                message.contains(field.name()) && message.contains(&format!("{value:?}")),
                "{text:?}: {message:?} does not name the field"
            );
        }
        _ => assert!(
            message.contains(&format!("{text:?}")),
            "{text:?}: {message:?} does not quote the schedule"
        ),
    }
}

/// `duration`: the input is a Go duration (`spec.duration`, `--for`). A duration that parses
/// formats to a duration that parses to the same whole seconds; an error quotes the input.
/// Also a time zone name: one that parses is that zone; an error quotes the name.
pub fn duration(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match parse_go_duration(&text) {
        Ok(d) => {
            let formatted = format_duration(d);
            let again = parse_go_duration(&formatted)
                .unwrap_or_else(|e| panic!("{text:?} formats as {formatted:?}, which fails: {e}"));
            assert_eq!(
                again,
                Duration::seconds(d.num_seconds()),
                "{text:?} -> {formatted:?}"
            );
            // Go's syntax: a sign, then numbers with units (or the bare 0).
            let unsigned = text.trim_start_matches(['-', '+']);
            assert!(
                unsigned == "0" || unsigned.starts_with(|c: char| c == '.' || c.is_ascii_digit()),
                "{text:?} parsed"
            );
        }
        Err(e) => {
            assert_eq!(e.category(), "InvalidDuration");
            let message = e.to_string();
            assert!(
                message.starts_with(&format!("invalid duration {text:?}: ")),
                "{message:?} does not quote {text:?}"
            );
        }
    }
    match nmo::schedule::parse_time_zone(&text) {
        Ok(tz) => assert_eq!(tz.name(), text, "zone {text:?}"),
        Err(e) => {
            assert_eq!(e.category(), "UnknownTimeZone");
            let message = e.to_string();
            assert!(
                text.is_empty() || message.contains(&format!("{text:?}")),
                "{message:?} does not quote {text:?}"
            );
        }
    }
}

/// `manifest`: the input is a YAML file as `nmo validate` reads it. Every MaintenanceWindow in
/// it is validated; every problem names a field under `metadata.` or `spec.`; a window that
/// validates has openings after an instant that are in order, after it, of the spec's length
/// and outside the exclusions, and the window open at an instant contains it.
pub fn manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(docs) = nmo::manifest::parse_documents(Path::new("fuzz.yaml"), &text) else {
        return;
    };
    // The instant: from the document text, so the seeds stay plain YAML.
    let seed = data
        .iter()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)));
    let now = instant(&mut Input::new(&seed.to_le_bytes()));
    for doc in docs {
        let Ok(window) = serde_json::from_value::<MaintenanceWindow>(doc.value) else {
            continue;
        };
        let errors = nmo::admission::validate_maintenance_window(&window);
        for e in &errors {
            assert!(
                (e.field.starts_with("spec.") || e.field.starts_with("metadata."))
                    && !e.message.is_empty(),
                "{e:?}"
            );
        }
        let policy = match WindowPolicy::from_spec(&window.spec) {
            Ok(p) => p,
            Err(spec_errors) => {
                assert!(!spec_errors.is_empty(), "an Err with no errors");
                assert!(
                    spec_errors.iter().all(|e| errors.contains(e)),
                    "validate reports what from_spec does"
                );
                continue;
            }
        };
        let openings = policy.next_windows(now, 4);
        let mut previous = now;
        for w in &openings {
            assert!(
                w.start > previous,
                "openings after {now} not in order: {openings:?}"
            );
            assert!(w.end > w.start, "{w:?}");
            assert!(
                w.end - w.start <= policy.duration,
                "{w:?} is longer than the window"
            );
            assert!(
                policy.exclusion_at(w.start).is_none(),
                "{w:?} opens inside an exclusion"
            );
            previous = w.start;
        }
        if let Some(open) = policy.current_window(now) {
            assert!(open.contains(now), "{open:?} is current at {now}");
        }
    }
}
