//! The export query: events joined to their rule, since-filtered, newest first (ties by id,
//! highest first), with explicit column types so every source yields the same Arrow schema; and
//! the query that sizes the progress bar.
//!
//! From PostgreSQL the query (filter, order) runs in PostgreSQL through `postgres_query`, so
//! rows stream back already in order: memory stays flat whatever the table size (DuckDB's own
//! sort would hold every row), and progress moves from the first row. A plain export's queries
//! read `events` alone and the rules are joined as rows arrive (`source::rules`): the join was
//! a quarter of PostgreSQL's time for an ordered slice. The since instant is validated by
//! `since` and formatted here from a `DateTime`, so no text the user typed reaches SQL; as a
//! constant it lets PostgreSQL use the timestamp index.

use chrono::{DateTime, Utc};

use super::engine::{literal, CATALOG};
use crate::model;

/// Where the query runs: the SQL below is valid in both dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// A DuckDB file attached as the catalog.
    DuckDb,
    /// PostgreSQL, the query passed through whole.
    Postgres,
}

/// The SQL of one export, run by DuckDB.
pub fn events(since: Option<DateTime<Utc>>, dialect: Dialect) -> String {
    select(dialect, &filter(since))
}

/// The export query ordered by rule first (then newest first), for a dataset partitioned by
/// rule: each rule's rows come together, with [`model::RULE_ID`] last. PostgreSQL walks its
/// `rule_id` index.
pub fn events_by_rule(since: Option<DateTime<Utc>>, dialect: Dialect) -> String {
    passed_through(
        by_rule(select_sql(dialect, &filter(since), &rule_id())),
        dialect,
    )
}

/// `, e.rule_id::BIGINT AS rule_id`.
fn rule_id() -> String {
    format!(", e.rule_id::BIGINT AS {}", model::RULE_ID)
}

/// `sql` ordered by rule first.
fn by_rule(sql: String) -> String {
    sql.replace(
        "ORDER BY e.\"timestamp\" DESC",
        "ORDER BY e.rule_id, e.\"timestamp\" DESC",
    )
}

/// Which row versions an incremental run exports: those written by the transactions of its
/// window, told apart by PostgreSQL's `age(xmin)` (see `source::horizon`). A row is in the
/// window when `end_age < age(xmin) <= start_age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The age of the window's end (this run's horizon): transactions this old or younger
    /// began after it and belong to a later run.
    pub end_age: i64,
    /// The age of the window's start (the previous run's horizon): older transactions belong to
    /// earlier runs. `None` for a run that exports everything before its end (frozen rows
    /// included).
    pub start_age: Option<i64>,
    /// `--since` of a first run.
    pub since: Option<DateTime<Utc>>,
}

/// The SQL of an incremental run: the export query restricted to `window`. PostgreSQL only.
/// `by_rule_first`: ordered by rule first, with [`model::RULE_ID`] last, for a dataset partitioned by rule
/// (in time order every change of rule would start a new part file).
pub fn changed_events(window: &Window, by_rule_first: bool) -> String {
    let mut conditions = filter(window.since);
    let rule = if by_rule_first {
        rule_id()
    } else {
        String::new()
    };
    let order = |sql: String| if by_rule_first { by_rule(sql) } else { sql };
    let Some(start_age) = window.start_age else {
        // A first run reads (nearly) every row: walking the timestamp index in PostgreSQL and
        // dropping the rows of later transactions in DuckDB, as they stream, beats letting
        // PostgreSQL filter on xmin and then sort everything (measured on 10M events).
        let inner = select_sql(
            Dialect::Postgres,
            &conditions,
            &format!("{rule}, age(e.xmin)::BIGINT AS xmin_age"),
        );
        let outer = if by_rule_first {
            format!(", {}", model::RULE_ID)
        } else {
            String::new()
        };
        return format!(
            "SELECT {}{outer} FROM ({}) WHERE xmin_age > {}",
            model::names(),
            passed_through(order(inner), Dialect::Postgres),
            window.end_age
        );
    };
    conditions.push(format!("age(e.xmin) > {}", window.end_age));
    conditions.push(format!("age(e.xmin) <= {start_age}"));
    passed_through(
        order(select_sql(Dialect::Postgres, &conditions, &rule)),
        Dialect::Postgres,
    )
}

fn select(dialect: Dialect, conditions: &[String]) -> String {
    passed_through(select_sql(dialect, conditions, ""), dialect)
}

/// The current events of rule `rule_id`, as the export has them (the change feed writes a rule's
/// rename as an update of each). PostgreSQL only.
pub fn events_of_rule(rule_id: i64) -> String {
    select(Dialect::Postgres, &[format!("e.rule_id = {rule_id}")])
}

/// The current values of the rule columns the model uses, with the rule's id first.
pub fn rules() -> String {
    let columns: Vec<String> = model::rule_columns()
        .map(|name| format!(", \"{name}\"::text"))
        .collect();
    in_postgres(&format!("SELECT id::bigint{} FROM rules", columns.concat()))
}

/// The export query, with `extra` columns after the export's.
fn select_sql(dialect: Dialect, conditions: &[String], extra: &str) -> String {
    format!(
        "SELECT {columns}{extra}\n\
         FROM {events} AS e JOIN {rules} AS r ON r.id = e.rule_id{filter}\n\
         ORDER BY e.\"timestamp\" DESC, e.id DESC",
        columns = model::select_list(),
        events = table(dialect, "events"),
        rules = table(dialect, "rules"),
        filter = where_clause(conditions),
    )
}

/// The number of events the export will write, exact (`true`) or estimated (`false`).
///
/// Exact with a since filter (PostgreSQL counts on the timestamp index) or from a DuckDB file;
/// PostgreSQL's statistics for the whole table, which would otherwise cost a full scan.
pub fn total(since: Option<DateTime<Utc>>, dialect: Dialect) -> (String, bool) {
    let count = format!(
        "SELECT count(*) FROM {} AS e{}",
        table(dialect, "events"),
        where_clause(&filter(since))
    );
    if since.is_some() || dialect == Dialect::DuckDb {
        return (passed_through(count, dialect), true);
    }
    // reltuples is -1 for a table never analyzed: then count after all.
    let estimate = format!(
        "SELECT CASE WHEN reltuples >= 0 THEN reltuples::bigint ELSE ({count}) END \
         FROM pg_class WHERE oid = 'events'::regclass"
    );
    (passed_through(estimate, dialect), false)
}

fn table(dialect: Dialect, name: &str) -> String {
    match dialect {
        Dialect::DuckDb => format!("{CATALOG}.{name}"),
        Dialect::Postgres => name.to_owned(),
    }
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        return String::new();
    }
    format!("\nWHERE {}", conditions.join(" AND "))
}

/// The number of events without a timestamp (where a Hub's migration let it be NULL).
pub fn null_timestamps(dialect: Dialect) -> String {
    let count = format!(
        "SELECT count(*) FROM {} AS e WHERE e.\"timestamp\" IS NULL",
        table(dialect, "events")
    );
    passed_through(count, dialect)
}

/// The `--since` condition, when there is one.
fn filter(since: Option<DateTime<Utc>>) -> Vec<String> {
    since
        .map(|t| format!("e.\"timestamp\" >= {}", instant(t)))
        .into_iter()
        .collect()
}

/// A `TIMESTAMPTZ` literal of `t`, exact to the microsecond.
fn instant(t: DateTime<Utc>) -> String {
    format!("TIMESTAMPTZ '{}'", t.format("%Y-%m-%d %H:%M:%S%.6f+00"))
}

/// The events from `since`, newest first, without the join to `rules` (their `rule_id` last;
/// see `source::rules`): the serial plan of a PostgreSQL export. PostgreSQL only.
pub fn events_unjoined(since: Option<DateTime<Utc>>) -> String {
    unjoined(&filter(since))
}

/// The events with `from <= timestamp < to` (microseconds since the epoch; `None`:
/// unbounded), newest first and without the join to `rules`, for one window of the windowed
/// plan. PostgreSQL only.
pub fn events_between(from: Option<i64>, to: Option<i64>) -> String {
    // A bound past chrono's years (PostgreSQL keeps timestamps up to 294276 AD) is written as
    // PostgreSQL's own arithmetic, exact to the microsecond.
    let bound = |micros: i64| match DateTime::from_timestamp_micros(micros) {
        Some(t) => instant(t),
        None => format!("(TIMESTAMPTZ 'epoch' + {micros} * INTERVAL '1 microsecond')"),
    };
    let conditions: Vec<String> = [
        from.map(|f| format!("e.\"timestamp\" >= {}", bound(f))),
        to.map(|t| format!("e.\"timestamp\" < {}", bound(t))),
    ]
    .into_iter()
    .flatten()
    .collect();
    unjoined(&conditions)
}

/// The events under `conditions`, newest first, with their `rule_id` in place of the rule's
/// columns. PostgreSQL only.
fn unjoined(conditions: &[String]) -> String {
    in_postgres(&format!(
        "SELECT {columns}\nFROM events AS e{filter}\nORDER BY e.\"timestamp\" DESC, e.id DESC",
        columns = model::event_select_list(),
        filter = where_clause(conditions),
    ))
}

/// The events in pages `from..to` (`None`: to the end) of `relation` (`events` or one of its
/// partitions, named as the catalog quotes it), unordered and without the join to `rules`
/// (their `rule_id` last; see `source::rules`), for one task of the sequential plan.
/// PostgreSQL only.
pub fn events_in_pages(
    relation: &str,
    from: u64,
    to: Option<u64>,
    since: Option<DateTime<Utc>>,
) -> String {
    let mut conditions = filter(since);
    conditions.push(format!("e.ctid >= '({from},0)'::tid"));
    conditions.extend(to.map(|to| format!("e.ctid < '({to},0)'::tid")));
    in_postgres(&format!(
        "SELECT {columns}\nFROM {relation} AS e{filter}",
        columns = model::event_select_list(),
        filter = where_clause(&conditions),
    ))
}

fn passed_through(sql: String, dialect: Dialect) -> String {
    match dialect {
        Dialect::DuckDb => sql,
        Dialect::Postgres => in_postgres(&sql),
    }
}

/// DuckDB SQL that runs `sql` in the attached PostgreSQL, as it is, and returns its rows.
pub fn in_postgres(sql: &str) -> String {
    format!(
        "SELECT * FROM postgres_query('{CATALOG}', {})",
        literal(sql)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn without_since_reads_everything_newest_first() {
        let sql = events(None, Dialect::DuckDb);
        assert!(!sql.contains("WHERE"));
        assert!(sql.ends_with("ORDER BY e.\"timestamp\" DESC, e.id DESC"));
        assert!(sql.contains("FROM src.events AS e JOIN src.rules AS r ON r.id = e.rule_id"));
    }

    #[test]
    fn since_is_a_utc_constant_with_microseconds() {
        let since = Utc.timestamp_micros(1_769_904_000_000_001).unwrap();
        assert!(events(Some(since), Dialect::DuckDb)
            .contains("WHERE e.\"timestamp\" >= TIMESTAMPTZ '2026-02-01 00:00:00.000001+00'"));
        let early = Utc.with_ymd_and_hms(999, 6, 15, 0, 0, 0).unwrap();
        assert!(events(Some(early), Dialect::DuckDb)
            .contains("TIMESTAMPTZ '0999-06-15 00:00:00.000000+00'"));
    }

    #[test]
    fn postgres_runs_the_whole_query_with_quotes_doubled() {
        let since = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        let sql = events(Some(since), Dialect::Postgres);
        assert!(
            sql.starts_with("SELECT * FROM postgres_query('src', 'SELECT e.\"id\"::BIGINT"),
            "{sql}"
        );
        assert!(sql.contains("FROM events AS e JOIN rules AS r"), "{sql}");
        assert!(
            sql.contains(">= TIMESTAMPTZ ''2026-02-01 00:00:00.000000+00''"),
            "{sql}"
        );
        assert!(sql.ends_with("e.id DESC')"), "{sql}");
    }

    #[test]
    fn incremental_windows_bound_the_age_of_the_writing_transaction() {
        let mut window = Window {
            end_age: 12,
            start_age: Some(3_000),
            since: None,
        };
        let sql = changed_events(&window, false);
        assert!(
            sql.contains("WHERE age(e.xmin) > 12 AND age(e.xmin) <= 3000\nORDER BY"),
            "{sql}"
        );
        window.start_age = None;
        window.since = Some(Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap());
        let sql = changed_events(&window, false);
        assert!(
            sql.starts_with("SELECT \"id\", \"timestamp\", \"rule\""),
            "{sql}"
        );
        assert!(sql.contains("AS xmin_age\nFROM events"), "{sql}");
        assert!(sql.ends_with("e.id DESC')) WHERE xmin_age > 12"), "{sql}");
        // Partitioned by rule: each rule's changes together, its id last.
        let sql = changed_events(&window, true);
        assert!(sql.contains(", rule_id FROM (SELECT"), "{sql}");
        assert!(
            sql.contains("ORDER BY e.rule_id, e.\"timestamp\" DESC"),
            "{sql}"
        );
        window.start_age = Some(3_000);
        let sql = changed_events(&window, true);
        assert!(sql.contains("e.rule_id::BIGINT AS rule_id\nFROM"), "{sql}");
        assert!(
            sql.contains("ORDER BY e.rule_id, e.\"timestamp\" DESC"),
            "{sql}"
        );
    }

    #[test]
    fn windows_are_half_open_ranges_of_the_timestamp() {
        let sql = events_between(Some(1_769_904_000_000_001), Some(1_769_904_060_000_000));
        assert!(
            sql.contains(
                "WHERE e.\"timestamp\" >= TIMESTAMPTZ ''2026-02-01 00:00:00.000001+00'' \
                 AND e.\"timestamp\" < TIMESTAMPTZ ''2026-02-01 00:01:00.000000+00''\nORDER BY"
            ),
            "{sql}"
        );
        assert!(!events_between(None, None).contains("WHERE"));
    }

    #[test]
    fn page_ranges_read_without_order() {
        let since = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        let sql = events_in_pages("events_2026", 1_000, Some(2_000), Some(since));
        assert!(
            sql.contains(
                "e.rule_id::BIGINT AS rule_id\nFROM events_2026 AS e\nWHERE e.\"timestamp\" \
                 >= TIMESTAMPTZ ''2026-02-01 00:00:00.000000+00'' AND e.ctid >= ''(1000,0)''::tid \
                 AND e.ctid < ''(2000,0)''::tid')"
            ),
            "{sql}"
        );
        assert!(!events_in_pages("events", 0, None, None).contains("ORDER BY"));
    }

    #[test]
    fn totals_are_exact_where_cheap_and_estimated_for_whole_postgres_tables() {
        let since = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        assert_eq!(
            total(None, Dialect::DuckDb),
            ("SELECT count(*) FROM src.events AS e".into(), true)
        );
        assert!(total(Some(since), Dialect::Postgres).1);
        let (sql, exact) = total(None, Dialect::Postgres);
        assert!(!exact && sql.contains("reltuples"), "{sql}");
    }
}
