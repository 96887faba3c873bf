//! Go duration syntax (`time.ParseDuration`), as Kubernetes users write it: `90m`, `1h30m`,
//! `1.5h`, `300ms`, `2h45m30s`.

use super::ScheduleError;
use chrono::Duration;

/// Parse a Go duration exactly as Go's `time.ParseDuration` does: an optional sign, then one
/// or more `<number><unit>` with units `ns`, `us` (or `µs`, `μs`), `ms`, `s`, `m`, `h` and
/// decimal fractions allowed (`1.5h`, `.5h`); the bare `0` is also valid. Negative durations
/// parse here; callers reject them where they are not allowed.
pub fn parse_go_duration(text: &str) -> Result<Duration, ScheduleError> {
    let invalid = |reason: &str| ScheduleError::InvalidDuration {
        value: text.to_string(),
        reason: reason.to_string(),
    };
    let mut s = text;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::zero());
    }
    if s.is_empty() {
        return Err(invalid("it is empty"));
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let first = s.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(invalid("expected a number such as 90 in \"90m\""));
        }
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &rest[..frac_len];
            s = &rest[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid("expected digits around the decimal point"));
        }
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        if unit.is_empty() {
            return Err(invalid(
                "a number is missing its unit (use ns, us, ms, s, m or h, as in \"90m\")",
            ));
        }
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(invalid(&format!(
                    "unknown unit {unit:?} (use ns, us, ms, s, m or h)"
                )));
            }
        };
        let overflow = || invalid("it is too large (the maximum is about 2562047h)");
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse::<u128>().map_err(|_| overflow())?
        };
        let mut value = whole.checked_mul(unit_nanos).ok_or_else(overflow)?;
        if !frac_part.is_empty() {
            // Exact decimal arithmetic; digits beyond nanosecond precision cannot matter.
            let digits = &frac_part[..frac_part.len().min(24)];
            let numerator: u128 = digits.parse().map_err(|_| overflow())?;
            value += numerator * unit_nanos / 10u128.pow(digits.len() as u32);
        }
        total = total.checked_add(value).ok_or_else(overflow)?;
        if total > i64::MAX as u128 + u128::from(negative) {
            return Err(overflow());
        }
    }
    let nanos = if negative {
        (total as i128).wrapping_neg() as i64
    } else {
        total as i64
    };
    Ok(Duration::nanoseconds(nanos))
}

/// Render a duration the short way people write it: `4h`, `1h30m`, `45m`, `30s`, `0s`,
/// `-10m`. Sub-second parts are dropped.
pub fn format_duration(duration: Duration) -> String {
    let mut secs = duration.num_seconds();
    let mut out = String::new();
    if secs < 0 {
        out.push('-');
        secs = -secs;
    }
    if secs == 0 {
        return "0s".to_string();
    }
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let hours = d * 24 + h;
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_to_the_same_values_as_go() {
        let cases = [
            ("0", 0),
            ("90m", 90 * 60_000_000_000),
            ("1h30m", 90 * 60_000_000_000),
            ("1.5h", 90 * 60_000_000_000),
            (".5h", 30 * 60_000_000_000),
            ("1.h", 3_600_000_000_000),
            ("300ms", 300_000_000),
            ("2h45m30s", (2 * 3600 + 45 * 60 + 30) * 1_000_000_000),
            ("1us", 1_000),
            ("1\u{b5}s", 1_000),
            ("1\u{3bc}s", 1_000),
            ("7ns", 7),
            ("+5s", 5_000_000_000),
            ("-5s", -5_000_000_000),
            ("1.000000001s", 1_000_000_001),
            ("2562047h", 2_562_047 * 3_600_000_000_000),
        ];
        for (text, nanos) in cases {
            let got = parse_go_duration(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got.num_nanoseconds(), Some(nanos), "{text}");
        }
    }

    #[test]
    fn malformed_go_durations_are_rejected_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("-", "empty"),
            ("90", "missing its unit"),
            ("1h30", "missing its unit"),
            ("5d", "unknown unit \"d\""),
            ("h", "expected a number"),
            (".h", "digits around the decimal point"),
            ("1 h", "unknown unit \" h\""),
            ("3000000h", "too large"),
        ];
        for (text, expected) in cases {
            let err = parse_go_duration(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn durations_are_formatted_the_short_way() {
        assert_eq!(format_duration(Duration::hours(4)), "4h");
        assert_eq!(format_duration(Duration::minutes(90)), "1h30m");
        assert_eq!(format_duration(Duration::seconds(45)), "45s");
        assert_eq!(format_duration(Duration::zero()), "0s");
        assert_eq!(format_duration(Duration::hours(49)), "49h");
        assert_eq!(format_duration(Duration::minutes(-10)), "-10m");
    }
}
