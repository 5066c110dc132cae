//! The text the original command wrote for each value: Python's `str()` of what Django returned.
//!
//! Timestamps are `str(datetime)` of an aware UTC datetime (`YYYY-MM-DD HH:MM:SS+00:00`, with
//! `.ffffff` only when the microseconds are not zero), booleans are `True`/`False`, integers are
//! plain. Computed from UTC microseconds, so no time zone setting can change the bytes.

use chrono::{DateTime, Datelike, Timelike};

/// Appends Python's `str()` of the aware UTC datetime `micros` after the epoch to `out`.
/// Instants Python cannot represent (PostgreSQL's `infinity`) are written as psql does.
pub fn push_timestamp(out: &mut Vec<u8>, micros: i64) {
    let Some(t) = DateTime::from_timestamp_micros(micros) else {
        out.extend_from_slice(if micros > 0 {
            b"infinity"
        } else {
            b"-infinity"
        });
        return;
    };
    let year = t.year();
    if year < 0 {
        out.push(b'-');
    }
    let year = year.unsigned_abs();
    if year < 1000 {
        push_padded(out, year, 4);
    } else {
        out.extend_from_slice(itoa::Buffer::new().format(year).as_bytes());
    }
    for (separator, value) in [
        (b'-', t.month()),
        (b'-', t.day()),
        (b' ', t.hour()),
        (b':', t.minute()),
        (b':', t.second()),
    ] {
        out.push(separator);
        push_padded(out, value, 2);
    }
    let fraction = t.nanosecond() / 1000;
    if fraction != 0 {
        out.push(b'.');
        push_padded(out, fraction, 6);
    }
    out.extend_from_slice(b"+00:00");
}

/// Python's `str(bool)`.
pub fn boolean(value: bool) -> &'static [u8] {
    if value {
        b"True"
    } else {
        b"False"
    }
}

/// `value` in decimal, zero-padded to `width` digits.
fn push_padded(out: &mut Vec<u8>, value: u32, width: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(value).as_bytes();
    out.extend(std::iter::repeat_n(
        b'0',
        width.saturating_sub(digits.len()),
    ));
    out.extend_from_slice(digits);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(micros: i64) -> String {
        let mut out = Vec::new();
        push_timestamp(&mut out, micros);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn whole_seconds_have_no_fraction() {
        assert_eq!(text(1_769_904_000_000_000), "2026-02-01 00:00:00+00:00");
        assert_eq!(text(0), "1970-01-01 00:00:00+00:00");
        assert_eq!(text(2_147_483_648_000_000), "2038-01-19 03:14:08+00:00");
    }

    #[test]
    fn fractions_are_always_six_digits() {
        assert_eq!(
            text(1_769_904_000_000_001),
            "2026-02-01 00:00:00.000001+00:00"
        );
        assert_eq!(
            text(1_769_904_000_100_000),
            "2026-02-01 00:00:00.100000+00:00"
        );
        assert_eq!(
            text(1_769_949_296_999_999),
            "2026-02-01 12:34:56.999999+00:00"
        );
    }

    #[test]
    fn before_the_epoch_and_small_years() {
        assert_eq!(text(-500_000), "1969-12-31 23:59:59.500000+00:00");
        assert_eq!(text(-30_627_475_200_000_000), "0999-06-15 08:00:00+00:00");
        assert_eq!(text(951_825_600_000_000), "2000-02-29 12:00:00+00:00");
    }

    #[test]
    fn infinities_are_named() {
        assert_eq!(text(i64::MAX), "infinity");
        assert_eq!(text(i64::MIN), "-infinity");
    }

    #[test]
    fn booleans_are_python_words() {
        assert_eq!(
            (boolean(true), boolean(false)),
            (&b"True"[..], &b"False"[..])
        );
    }
}
