//! How an export reads PostgreSQL: one ordered query (the serial plan), or, for large exports,
//! several time windows read at once, each an ordered query on its own connection in one
//! snapshot (the windowed plan).
//!
//! The windowed plan splits the export query at timestamps taken from PostgreSQL's own statistics
//! (`pg_stats.histogram_bounds`, equal-frequency buckets), so the windows hold about as many rows
//! each, whatever the data. Window 0 holds the newest rows and streams to the output as it
//! arrives; the others are read at the same time into spool files and appended after it, in
//! order. Rows with the same timestamp always fall into one window, so the concatenation is the
//! serial plan's order exactly. The server's ordered index scan is the bottleneck of a full
//! export (its CPU, not ours), and two backends scan twice as fast as one on two cores.

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::engine::Engine;
use super::query::{self, in_postgres};

/// Fewer rows than this read serially: a second connection and the spool cost more than the
/// parallel scan saves (measured: `docs/performance.md`).
pub const MIN_PARALLEL_ROWS: u64 = 500_000;
/// Windows per connection: with several, encoding a window overlaps reading the next, and only
/// the last one's encoding is left when the reading ends.
const WINDOWS_PER_JOB: usize = 3;

/// The read of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// One query, streamed in order.
    Serial(String),
    /// One query per time window, newest window first, read `jobs` at a time; their results
    /// concatenate in order.
    Windows { queries: Vec<String>, jobs: usize },
}

impl Plan {
    /// How the plan is described to the user (`--quiet` off) and in the docs.
    pub fn describe(&self) -> String {
        match self {
            Plan::Serial(_) => "one ordered query".into(),
            Plan::Windows { queries, jobs } => {
                format!("{} time windows, {jobs} read at a time", queries.len())
            }
        }
    }
}

/// The plan for exporting the events from `since` from PostgreSQL with at most `jobs`
/// connections: windows when the export is large and the statistics can split it, else serial.
pub fn choose(engine: &Engine, since: Option<DateTime<Utc>>, jobs: usize) -> Result<Plan> {
    let serial = Plan::Serial(query::events(since, query::Dialect::Postgres));
    if jobs < 2 {
        return Ok(serial);
    }
    // The statistics only make the export faster: without them (never analyzed, no access),
    // the serial plan is as right.
    let Ok(stats) = Statistics::read(engine) else {
        return Ok(serial);
    };
    let jobs = jobs.min(stats.free_connections);
    let Some(cuts) = stats.cuts(since, jobs, jobs * WINDOWS_PER_JOB) else {
        return Ok(serial);
    };
    let queries = window_bounds(since, &cuts)
        .into_iter()
        .map(|(from, to)| query::events_between(from, to))
        .collect();
    Ok(Plan::Windows { queries, jobs })
}

/// The windows' `[from, to)` bounds, newest first, from ascending cut points.
fn window_bounds(since: Option<DateTime<Utc>>, cuts: &[i64]) -> Vec<(Option<i64>, Option<i64>)> {
    let lower =
        std::iter::once(since.map(|s| s.timestamp_micros())).chain(cuts.iter().copied().map(Some));
    let upper = cuts.iter().copied().map(Some).chain(std::iter::once(None));
    let mut bounds: Vec<_> = lower.zip(upper).collect();
    bounds.reverse();
    bounds
}

/// What PostgreSQL's statistics say about `events`.
#[derive(Debug, Default)]
struct Statistics {
    /// The table's row estimate.
    rows: u64,
    /// Equal-frequency bucket bounds of `timestamp`, ascending, in microseconds since the epoch.
    bounds: Vec<i64>,
    /// Connections the server would still accept from us.
    free_connections: usize,
}

impl Statistics {
    /// One query: the row estimate, the free connections and the timestamp histogram.
    fn read(engine: &Engine) -> Result<Self> {
        // The server's, the role's and the database's limits (managed PostgreSQL sets the
        // latter two); a superuser's role limit is not enforced.
        let sql = in_postgres(
            "SELECT greatest(c.reltuples, 0)::bigint, least(\
               current_setting('max_connections')::int \
               - current_setting('superuser_reserved_connections')::int \
               - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'), \
               (SELECT CASE WHEN r.rolconnlimit < 0 OR r.rolsuper THEN 2147483647 \
                 ELSE r.rolconnlimit - (SELECT count(*) FROM pg_stat_activity \
                   WHERE backend_type = 'client backend' AND usename = session_user) END \
                FROM pg_roles AS r WHERE r.rolname = session_user), \
               (SELECT CASE WHEN d.datconnlimit < 0 THEN 2147483647 \
                 ELSE d.datconnlimit - (SELECT count(*) FROM pg_stat_activity \
                   WHERE backend_type = 'client backend' AND datname = current_database()) END \
                FROM pg_database AS d WHERE d.datname = current_database())), \
             (SELECT string_agg((extract(epoch FROM b) * 1000000)::bigint::text, ',' \
                                ORDER BY b) \
              FROM pg_stats, unnest(histogram_bounds::text::timestamptz[]) AS b \
              WHERE schemaname = current_schema() AND tablename = 'events' \
              AND attname = 'timestamp' AND isfinite(b)) \
             FROM pg_class AS c WHERE c.oid = 'events'::regclass",
        );
        let (rows, free, bounds) = engine.connection().query_row(&sql, [], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Option<String>>(2)?,
            ))
        })?;
        let bounds = bounds
            .unwrap_or_default()
            .split(',')
            .filter(|b| !b.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<i64>, _>>()?;
        Ok(Self {
            rows: rows.max(0) as u64,
            bounds,
            free_connections: free.max(0) as usize,
        })
    }

    /// `windows - 1` cut points (ascending) that split the rows from `since` into windows of
    /// about equal size; `None` when the export is too small for `jobs` connections or the
    /// statistics cannot tell.
    fn cuts(&self, since: Option<DateTime<Utc>>, jobs: usize, windows: usize) -> Option<Vec<i64>> {
        if jobs < 2 {
            return None;
        }
        let buckets = self.bounds.len().checked_sub(1).filter(|&b| b > 0)?;
        let since = since.map(|s| s.timestamp_micros());
        let above: Vec<i64> = self
            .bounds
            .iter()
            .copied()
            .filter(|&b| since.is_none_or(|s| b > s))
            .collect();
        let expected = self.rows * above.len() as u64 / buckets as u64;
        if expected < MIN_PARALLEL_ROWS || above.len() < windows * 2 {
            return None;
        }
        let mut cuts: Vec<i64> = (1..windows)
            .map(|j| above[j * (above.len() - 1) / windows])
            .collect();
        cuts.dedup();
        (!cuts.is_empty()).then_some(cuts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn stats(rows: u64, bounds: impl IntoIterator<Item = i64>) -> Statistics {
        Statistics {
            rows,
            bounds: bounds.into_iter().collect(),
            free_connections: 10,
        }
    }

    #[test]
    fn windows_split_the_statistics_evenly() {
        let s = stats(10_000_000, (0..=100).map(|i| i * 1_000));
        assert_eq!(s.cuts(None, 2, 2), Some(vec![50_000]));
        assert_eq!(s.cuts(None, 2, 4), Some(vec![25_000, 50_000, 75_000]));
        let since = Utc.timestamp_micros(60_500).unwrap();
        assert_eq!(s.cuts(Some(since), 2, 2), Some(vec![80_000]));
        assert_eq!(s.cuts(None, 1, 3), None, "one connection reads serially");
    }

    #[test]
    fn small_exports_and_missing_statistics_read_serially() {
        assert_eq!(
            stats(400_000, (0..=100).map(|i| i * 1_000)).cuts(None, 2, 2),
            None
        );
        let s = stats(10_000_000, (0..=100).map(|i| i * 1_000));
        let late = Utc.timestamp_micros(97_500).unwrap();
        assert_eq!(s.cuts(Some(late), 2, 2), None, "a 2% slice");
        assert_eq!(stats(10_000_000, []).cuts(None, 2, 2), None);
    }

    #[test]
    fn window_bounds_run_newest_first_and_cover_everything() {
        assert_eq!(
            window_bounds(None, &[10, 20]),
            [(Some(20), None), (Some(10), Some(20)), (None, Some(10))]
        );
        let since = Utc.timestamp_micros(5).unwrap();
        assert_eq!(
            window_bounds(Some(since), &[10]),
            [(Some(10), None), (Some(5), Some(10))]
        );
    }
}
