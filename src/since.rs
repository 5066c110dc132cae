//! `--since WHEN`: turns what the user typed into one instant in UTC.
//!
//! Accepts what the original Django command accepted (Django's `parse_datetime`: ISO 8601
//! date-time with `T` or a space, optional seconds, fraction and offset, `Z`), a bare date
//! (midnight UTC, which Python's `fromisoformat` also took) and a relative age such as `90m`,
//! `24h` or `7d` for cron jobs. A value without an offset means UTC. Pure and unit-tested: the
//! caller passes "now", and the result is an instant the query formats itself, never user text.

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

use crate::error::UsageError;

/// What `--since` accepts, for error messages and `--help`.
pub const ACCEPTED: &str = "an ISO 8601 date-time such as 2026-02-01T00:00:00Z \
(no offset means UTC), a date such as 2026-02-01, or an age such as 90m, 24h or 7d";

/// Parses a `--since` value; `now` anchors relative ages.
pub fn parse(input: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, UsageError> {
    let text = input.trim();
    let parsed = relative_age(text)
        .map(|age| age.and_then(|age| now.checked_sub_signed(age)))
        .or_else(|| absolute(text));
    // `Some(None)`: recognised but out of range, an error like any other.
    parsed.flatten().ok_or_else(|| {
        UsageError(format!(
            "invalid --since value {input:?}: expected {ACCEPTED}"
        ))
    })
}

/// `90m`, `24h`, `7d`, `2w`, `30s`: `Some(None)` when the number overflows.
fn relative_age(text: &str) -> Option<Option<Duration>> {
    let unit = text.chars().last()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds_per_unit: i64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    Some(
        digits
            .parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(seconds_per_unit))
            .and_then(Duration::try_seconds),
    )
}

/// A date, or a date-time with an optional offset; `Some(None)` when the instant is out of range.
fn absolute(text: &str) -> Option<Option<DateTime<Utc>>> {
    if let Some(date) = date(text) {
        return Some(Some(Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN))));
    }
    let (date_part, rest) = text.split_at_checked(10)?;
    let date = date(date_part)?;
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (time, offset) = split_offset(rest)?;
    let local = NaiveDateTime::new(date, clock(time)?);
    Some(
        offset
            .from_local_datetime(&local)
            .single()
            .map(|t| t.with_timezone(&Utc)),
    )
}

/// `YYYY-MM-DD`, four-digit year.
fn date(text: &str) -> Option<NaiveDate> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    NaiveDate::from_ymd_opt(
        number(&text[0..4])? as i32,
        number(&text[5..7])?,
        number(&text[8..10])?,
    )
}

/// `HH:MM`, `HH:MM:SS`, `HH:MM:SS.f` (1 to 9 digits, `.` or `,`; beyond microseconds dropped).
fn clock(text: &str) -> Option<NaiveTime> {
    let (hms, fraction) = match text.find(['.', ',']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let parts: Vec<&str> = hms.split(':').collect();
    let two = |s: &str| (s.len() == 2).then(|| number(s)).flatten();
    let (hour, minute, second) = match parts.as_slice() {
        [h, m] if fraction.is_none() => (two(h)?, two(m)?, 0),
        [h, m, s] => (two(h)?, two(m)?, two(s)?),
        _ => return None,
    };
    let micros = match fraction {
        None => 0,
        Some(f) if (1..=9).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()) => {
            let six = format!("{f:0<6}");
            number(&six[..6])?
        }
        Some(_) => return None,
    };
    NaiveTime::from_hms_micro_opt(hour, minute, second, micros)
}

/// Splits `12:00:00+02:00` into the clock and its offset (`Z`, `±HH`, `±HHMM`, `±HH:MM`);
/// no offset means UTC.
fn split_offset(text: &str) -> Option<(&str, FixedOffset)> {
    let utc = FixedOffset::east_opt(0)?;
    if let Some(clock) = text.strip_suffix(['Z', 'z']) {
        return Some((clock.trim_end(), utc));
    }
    let Some(at) = text.rfind(['+', '-']) else {
        return Some((text, utc));
    };
    let (clock, offset) = (text[..at].trim_end(), &text[at + 1..]);
    // `HH`, `HHMM` or `HH:MM`, nothing else (`+::` once reached the slicing below).
    let b = offset.as_bytes();
    let digit = |i: usize| b[i].is_ascii_digit();
    let valid_shape = match b.len() {
        2 => digit(0) && digit(1),
        4 => (0..4).all(digit),
        5 => digit(0) && digit(1) && b[2] == b':' && digit(3) && digit(4),
        _ => false,
    };
    if !valid_shape {
        return None;
    }
    let digits: String = offset.chars().filter(|c| *c != ':').collect();
    let hours = number(&digits[..2])? as i32;
    let minutes = if digits.len() == 4 {
        number(&digits[2..])? as i32
    } else {
        0
    };
    if minutes >= 60 {
        return None;
    }
    let seconds = (hours * 3600 + minutes * 60) * if text.as_bytes()[at] == b'-' { -1 } else { 1 };
    Some((clock, FixedOffset::east_opt(seconds)?))
}

/// ASCII digits only (no sign, no spaces) as a number.
fn number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 2, 0, 0).unwrap()
    }

    fn ok(input: &str) -> String {
        parse(input, now())
            .unwrap_or_else(|e| panic!("{input}: {e}"))
            .format("%Y-%m-%d %H:%M:%S%.6f")
            .to_string()
    }

    #[test]
    fn iso_date_times_in_every_shape_django_accepted() {
        assert_eq!(ok("2026-02-01T00:00:00Z"), "2026-02-01 00:00:00.000000");
        assert_eq!(ok("2026-02-01 00:00:00"), "2026-02-01 00:00:00.000000");
        assert_eq!(ok("2026-02-01T12:34"), "2026-02-01 12:34:00.000000");
        assert_eq!(ok("2026-02-01T12:34:56.5"), "2026-02-01 12:34:56.500000");
        assert_eq!(
            ok("2026-02-01T12:34:56,123456789"),
            "2026-02-01 12:34:56.123456"
        );
        assert_eq!(
            ok("2026-02-01T14:34:56+02:00"),
            "2026-02-01 12:34:56.000000"
        );
        assert_eq!(ok("2026-02-01T14:34:56+0200"), "2026-02-01 12:34:56.000000");
        assert_eq!(ok("2026-02-01T14:34:56+02"), "2026-02-01 12:34:56.000000");
        assert_eq!(
            ok("2026-01-31T23:59:59.123456-05:30"),
            "2026-02-01 05:29:59.123456"
        );
        assert_eq!(
            ok("2026-02-01 00:00:00 +00:00"),
            "2026-02-01 00:00:00.000000"
        );
        assert_eq!(ok(" 2026-02-01t00:00z "), "2026-02-01 00:00:00.000000");
    }

    #[test]
    fn bare_date_is_midnight_utc() {
        assert_eq!(ok("2026-02-01"), "2026-02-01 00:00:00.000000");
        assert_eq!(ok("0999-06-15"), "0999-06-15 00:00:00.000000");
    }

    #[test]
    fn relative_ages_count_back_from_now() {
        assert_eq!(ok("24h"), "2026-11-24 02:00:00.000000");
        assert_eq!(ok("90m"), "2026-11-25 00:30:00.000000");
        assert_eq!(ok("7d"), "2026-11-18 02:00:00.000000");
        assert_eq!(ok("2w"), "2026-11-11 02:00:00.000000");
        assert_eq!(ok("30s"), "2026-11-25 01:59:30.000000");
        assert_eq!(ok("0h"), "2026-11-25 02:00:00.000000");
    }

    #[test]
    fn rejects_what_is_not_a_time() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2026-02-01T24:00:00",
            "2026-02-01T12:60",
            "2026-02-01T12:00:61",
            "2026-02-01T12",
            "2026-02-01T12:00:00.",
            "2026-02-01T12:00:00.1234567890",
            "2026-02-01T12:00:00+2",
            "2026-02-01T12:00:00+02:60",
            "2026-02-01T12:00:00+0é00",
            "2026-02-01T12:00:00+25:00",
            "26-02-01",
            "2026/02/01",
            "24",
            "h",
            "-24h",
            "24 h",
            "1.5h",
            "99999999999999999999d",
            "9999999999999d",
            "2026-02-01'; DROP TABLE events; --",
            "2026-02-01T00:00+::",
            "2026-02-01T00:00+:",
            "2026-02-01T00:00-1:00",
            "2026-02-01T00:00+12:3",
        ] {
            let err = parse(bad, now()).expect_err(bad);
            assert!(err.0.starts_with("invalid --since value"), "{bad}: {err}");
        }
    }

    proptest::proptest! {
        /// Whatever is typed, `--since` answers with an instant or a usage error, never a panic.
        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = parse(&text, now());
        }

        #[test]
        fn never_panics_on_near_misses(
            date in "[0-9]{4}-[0-9]{2}-[0-9]{2}",
            sep in "[Tt ]",
            rest in "[0-9:.,+Zz -]{0,16}",
        ) {
            let _ = parse(&format!("{date}{sep}{rest}"), now());
        }
    }

    #[test]
    fn error_names_the_value_and_the_accepted_forms() {
        let err = parse("last tuesday", now()).unwrap_err();
        assert_eq!(
            err.0,
            "invalid --since value \"last tuesday\": expected an ISO 8601 date-time such as \
             2026-02-01T00:00:00Z (no offset means UTC), a date such as 2026-02-01, or an age \
             such as 90m, 24h or 7d"
        );
    }
}
