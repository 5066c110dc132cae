//! PostgreSQL's ISO text of a timestamp, as the replication stream sends it, in microseconds
//! since the Unix epoch: over PostgreSQL's whole range (4713 BC to 294276 AD), which is wider
//! than chrono's (±262143). A `… BC` or a year past 262143 once stopped the feed for good,
//! though the export path handles them; here the date is counted with integers alone.

use anyhow::{Context as _, Result};

/// `2026-01-01 00:00:00.5+00`, `0044-03-15 12:00:00+00 BC`, `2026-01-01 05:30:00` (a
/// `timestamp without time zone`: its wall clock, as UTC), `infinity`, `-infinity`.
pub fn micros(text: &str) -> Result<i64> {
    match text {
        "infinity" => return Ok(i64::MAX),
        "-infinity" => return Ok(i64::MIN),
        _ => {}
    }
    parse(text).with_context(|| {
        format!("timestamp {text:?} is not in PostgreSQL's ISO format (DateStyle ISO)")
    })
}

fn parse(text: &str) -> Option<i64> {
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (text, false),
    };
    let (date, rest) = body.split_once(' ')?;
    let (time, offset) = match rest.find(['+', '-']) {
        Some(at) => (&rest[..at], Some(&rest[at..])),
        None => (rest, None),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = number(parts.next()?)?;
    let (month, day) = (number(parts.next()?)?, number(parts.next()?)?);
    // 1 BC is year 0 of the proleptic calendar, 2 BC is -1.
    let year = if bc { 1 - year } else { year };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut clock = time.splitn(3, ':');
    let (hour, minute) = (number(clock.next()?)?, number(clock.next()?)?);
    let seconds = clock.next()?;
    let (seconds, fraction) = match seconds.split_once('.') {
        Some((seconds, fraction)) => (number(seconds)?, fraction),
        None => (number(seconds)?, ""),
    };
    if hour > 24 || minute > 59 || seconds > 60 || fraction.len() > 6 {
        return None;
    }
    let fraction = match fraction {
        "" => 0,
        digits => number(digits)? * 10_i64.pow(6 - digits.len() as u32),
    };
    let offset = match offset {
        None => 0,
        Some(offset) => {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let mut fields = offset[1..].splitn(3, ':').map(number);
            let hours = fields.next()??;
            let minutes = fields.next().unwrap_or(Some(0))?;
            let secs = fields.next().unwrap_or(Some(0))?;
            sign * (hours * 3_600 + minutes * 60 + secs)
        }
    };
    let seconds = days_from_civil(year, month, day)
        .checked_mul(86_400)?
        .checked_add(hour * 3_600 + minute * 60 + seconds - offset)?;
    seconds.checked_mul(1_000_000)?.checked_add(fraction)
}

/// A field of digits only.
fn number(text: &str) -> Option<i64> {
    match !text.is_empty() && text.len() <= 12 && text.bytes().all(|b| b.is_ascii_digit()) {
        true => text.parse().ok(),
        false => None,
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_timestamp_postgresql_keeps() {
        assert_eq!(
            micros("2026-01-01 00:00:00.5+00").unwrap(),
            1_767_225_600_500_000
        );
        assert_eq!(
            micros("2026-01-01 05:30:00+05:30").unwrap(),
            1_767_225_600_000_000
        );
        assert_eq!(micros("1969-12-31 23:59:59.999999+00").unwrap(), -1);
        assert_eq!(micros("infinity").unwrap(), i64::MAX);
        // Naive (USE_TZ = False): the wall clock as UTC.
        assert_eq!(
            micros("2026-01-01 00:00:00.5").unwrap(),
            1_767_225_600_500_000
        );
        assert_eq!(
            micros("2026-01-01 05:30:00").unwrap(),
            1_767_245_400_000_000
        );
        // BC and years past chrono's: PostgreSQL's own values (extract(epoch ...) * 1e6).
        assert_eq!(
            micros("0001-01-01 00:00:00+00 BC").unwrap(),
            -62_167_219_200_000_000
        );
        assert_eq!(
            micros("4713-01-01 00:00:00+00 BC").unwrap(),
            -210_863_520_000_000_000
        );
        assert_eq!(
            micros("0044-03-15 12:00:00+00 BC").unwrap(),
            -63_517_780_800_000_000
        );
        assert_eq!(
            micros("262144-06-15 12:34:56.789012+00").unwrap(),
            8_210_312_800_496_789_012
        );
        assert_eq!(
            micros("294246-12-31 23:59:59.999999+00").unwrap(),
            9_223_371_244_799_999_999
        );
        // Past what 64-bit microseconds since 1970 hold: refused, not wrapped.
        assert!(micros("294276-12-31 23:59:59.999999+00").is_err());
        assert_eq!(
            micros("1901-12-13 20:45:52+00:00:08").unwrap(),
            -2_147_483_656_000_000
        );
        for bad in [
            "Thu Jan 01 00:00:00 2026 UTC",
            "2026-02-30 00:00:00+00",
            "2026-01-01 25:00:00+00",
            "2026-01-01 00:00:00.1234567+00",
            "2026-01-01",
            "-2026-01-01 00:00:00+00",
        ] {
            assert!(micros(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Within chrono's range, the same instant as chrono reads; anything else, a value or
        /// an error, never a panic.
        #[test]
        fn the_same_as_chrono_where_chrono_reaches(
            seconds in -8_000_000_000_000_i64..8_000_000_000_000,
            micro in 0_u32..1_000_000,
            offset in -53_999_i32..53_999,
            text in "\\PC{0,40}",
        ) {
            let _ = micros(&text);
            let zone = chrono::FixedOffset::east_opt(offset / 60 * 60).unwrap();
            if let Some(t) = chrono::DateTime::from_timestamp(seconds, micro * 1_000) {
                let local = t.with_timezone(&zone);
                let text = local.format("%Y-%m-%d %H:%M:%S%.6f%:z").to_string();
                if local.format("%Y").to_string().len() == 4 {
                    proptest::prop_assert_eq!(micros(&text).unwrap(), t.timestamp_micros(), "{}", text);
                }
            }
        }
    }
}
