//! The export query: events joined to their rule, since-filtered, newest first (ties by id,
//! highest first), with explicit column types so every source yields the same Arrow schema.
//!
//! The since instant is validated by `since` and formatted here from a `DateTime`, so no text
//! the user typed reaches SQL; as a constant it is pushed down to PostgreSQL's scan, where the
//! timestamp index can serve it.

use chrono::{DateTime, Utc};

use crate::engine::CATALOG;

/// The CSV header and the result columns, in order.
pub const COLUMNS: [&str; 6] = [
    "id",
    "timestamp",
    "rule",
    "acknowledged",
    "trigger_telemetry_id",
    "trigger_device_id",
];

/// The SQL of one export.
pub fn events(since: Option<DateTime<Utc>>) -> String {
    let filter = since.map_or(String::new(), |t| {
        format!(
            "\nWHERE e.\"timestamp\" >= TIMESTAMPTZ '{}'",
            t.format("%Y-%m-%d %H:%M:%S%.6f+00")
        )
    });
    format!(
        "SELECT e.id::BIGINT AS id, e.\"timestamp\"::TIMESTAMPTZ AS \"timestamp\", \
         r.name::VARCHAR AS rule, e.acknowledged::BOOLEAN AS acknowledged, \
         e.trigger_telemetry_id::BIGINT AS trigger_telemetry_id, \
         e.trigger_device_id::BIGINT AS trigger_device_id\n\
         FROM {CATALOG}.events AS e JOIN {CATALOG}.rules AS r ON r.id = e.rule_id{filter}\n\
         ORDER BY e.\"timestamp\" DESC, e.id DESC"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn without_since_reads_everything_newest_first() {
        let sql = events(None);
        assert!(!sql.contains("WHERE"));
        assert!(sql.ends_with("ORDER BY e.\"timestamp\" DESC, e.id DESC"));
        assert!(sql.contains("FROM src.events AS e JOIN src.rules AS r ON r.id = e.rule_id"));
    }

    #[test]
    fn since_is_a_utc_constant_with_microseconds() {
        let since = Utc.timestamp_micros(1_769_904_000_000_001).unwrap();
        assert!(events(Some(since))
            .contains("WHERE e.\"timestamp\" >= TIMESTAMPTZ '2026-02-01 00:00:00.000001+00'"));
        let early = Utc.with_ymd_and_hms(999, 6, 15, 0, 0, 0).unwrap();
        assert!(events(Some(early)).contains("TIMESTAMPTZ '0999-06-15 00:00:00.000000+00'"));
    }
}
