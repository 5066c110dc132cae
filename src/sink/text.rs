//! The text the original command wrote for each value: Python's `str()` of what Django returned.
//!
//! Timestamps are `str(datetime)` of an aware UTC datetime (`YYYY-MM-DD HH:MM:SS+00:00`, with
//! `.ffffff` only when the microseconds are not zero), booleans are `True`/`False`, integers are
//! plain. Computed from UTC microseconds, so no time zone setting can change the bytes.

use chrono::{DateTime, Datelike, Timelike};

/// Microseconds in a day.
const DAY: i64 = 86_400_000_000;

/// Writes timestamps as [`push_timestamp`] does, remembering the text of the last day seen:
/// rows come in time order, so most share their date with the row before, and only the time of
/// day is computed (integer arithmetic instead of a calendar conversion per row).
#[derive(Debug, Default)]
pub struct Timestamps {
    /// The day (since the epoch) whose `YYYY-MM-DD ` is in `date`.
    day: Option<i64>,
    date: Vec<u8>,
}

impl Timestamps {
    /// Appends Python's `str()` of the aware UTC datetime `micros` after the epoch to `out`.
    pub fn push(&mut self, out: &mut Vec<u8>, micros: i64) {
        let (day, time) = (micros.div_euclid(DAY), micros.rem_euclid(DAY));
        if self.day != Some(day) {
            self.day = None;
            self.date.clear();
            let Some(start) = day.checked_mul(DAY) else {
                return push_timestamp(out, micros);
            };
            push_timestamp(&mut self.date, start);
            // `YYYY-MM-DD 00:00:00+00:00` minus the time; an instant that is not a date
            // (infinity) is written whole every time.
            let Some(cut) = self.date.len().checked_sub(b"00:00:00+00:00".len()) else {
                return push_timestamp(out, micros);
            };
            if !self.date.ends_with(b" 00:00:00+00:00") {
                return push_timestamp(out, micros);
            }
            self.date.truncate(cut);
            self.day = Some(day);
        }
        out.extend_from_slice(&self.date);
        let seconds = time / 1_000_000;
        for (i, value) in [seconds / 3600, seconds / 60 % 60, seconds % 60]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                out.push(b':');
            }
            out.extend_from_slice(&[b'0' + (value / 10) as u8, b'0' + (value % 10) as u8]);
        }
        let fraction = time % 1_000_000;
        if fraction != 0 {
            out.push(b'.');
            push_padded(out, fraction as u32, 6);
        }
        out.extend_from_slice(b"+00:00");
    }
}

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
    fn the_day_cache_writes_what_the_calendar_does() {
        let mut cached = Timestamps::default();
        let mut samples = vec![0, -1, -500_000, i64::MAX, i64::MIN, 951_825_600_000_000];
        samples.extend((0..2_000).map(|i: i64| {
            (i * 7_919_000_001).wrapping_mul(if i % 3 == 0 { -1 } else { 1 }) % (300 * 365 * DAY)
        }));
        samples.extend((0..2_000).map(|i| 1_769_904_000_000_000 + i * 97_000_123));
        for micros in samples {
            let mut out = Vec::new();
            cached.push(&mut out, micros);
            assert_eq!(String::from_utf8(out).unwrap(), text(micros), "{micros}");
        }
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
