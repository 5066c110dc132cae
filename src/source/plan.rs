//! How an export reads PostgreSQL: one ordered query (the serial plan); for large exports,
//! several time windows read at once, each an ordered query on its own connection in one
//! snapshot (the windowed plan); or, for large exports of most of the table, a sequential read
//! in page ranges put in order by our own distribution sort (the sequential plan,
//! `source::scan`). Which one is a cost decision from PostgreSQL's statistics
//! (`docs/performance.md` has the measurements behind the constants).
//!
//! The windowed plan splits the export query at timestamps taken from PostgreSQL's own statistics
//! (`pg_stats.histogram_bounds`, equal-frequency buckets), so the windows hold about as many rows
//! each, whatever the data. Window 0 holds the newest rows and streams to the output as it
//! arrives; the others are read at the same time into spool files and appended after it, in
//! order. Rows with the same timestamp always fall into one window, so the concatenation is the
//! serial plan's order exactly. The sequential plan's sort buckets are cut from the same
//! histogram.

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};

use super::distribute::Key;
use super::engine::Engine;
use super::query::{self, in_postgres};
use super::scan::{self, Scan};

/// Fewer rows than this read serially: a second connection and the spool cost more than the
/// parallel scan saves (measured: `docs/performance.md`).
pub const MIN_PARALLEL_ROWS: u64 = 500_000;
/// Windows per connection: with several, encoding a window overlaps reading the next, and only
/// the last one's encoding is left when the reading ends.
const WINDOWS_PER_JOB: usize = 3;
/// The sequential plan reads the whole table to export this share of it or more: below, the
/// index read of the rows asked for costs PostgreSQL less (measured: `docs/performance.md`).
const MIN_SCAN_SHARE: f64 = 0.2;
/// What a row of the sequential read (the event's own columns and `rule_id`; rule names are
/// joined after the sort) is taken to cost in memory before any is read, to cut the sort's
/// buckets; a bucket that turns out larger is split again.
const ROW_BYTES: u64 = 64;
/// Page ranges per connection: enough that connections finish together.
const TASKS_PER_JOB: u64 = 16;

/// How `--read` lets PostgreSQL serve an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Read {
    /// The cheaper of the two for this export, from the table's statistics.
    #[default]
    Auto,
    /// Read the table sequentially in page ranges and sort locally within --memory.
    Scan,
    /// Read in order along the timestamp index (in time windows with --jobs above 1).
    Index,
}

/// Where the rule's columns of an export come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// The query joins `rules` itself (DuckDB files, incremental runs, datasets by rule).
    InQuery,
    /// The query reads the events alone, with their `rule_id`; the rules, read once in the
    /// same snapshot, are joined as the rows go to the sinks (`source::rules`).
    Here,
}

/// The read of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// One query, streamed in order.
    Serial(String, Join),
    /// One query per time window, newest window first, read `jobs` at a time; their results
    /// concatenate in order. The rules are joined here.
    Windows { queries: Vec<String>, jobs: usize },
    /// Page ranges read `jobs` at a time in any order, then sorted. The rules are joined here.
    Scan(Scan),
}

impl Plan {
    /// Where the rule's columns come from.
    pub fn join(&self) -> Join {
        match self {
            Plan::Serial(_, join) => *join,
            Plan::Windows { .. } | Plan::Scan(_) => Join::Here,
        }
    }

    /// How the plan is described to the user (`--quiet` off) and in the docs.
    pub fn describe(&self) -> String {
        match self {
            Plan::Serial(..) => "one ordered query".into(),
            Plan::Windows { queries, jobs } => {
                format!("{} time windows, {jobs} read at a time", queries.len())
            }
            Plan::Scan(scan) => format!(
                "a sequential read in {} page ranges, {} at a time, sorted in {} buckets",
                scan.tasks.len(),
                scan.jobs,
                scan.cuts.len() + 1
            ),
        }
    }
}

/// The plan for exporting the events from `since` from PostgreSQL with at most `jobs`
/// connections and `memory` bytes: the sequential read when `read` asks for it or, for `Auto`,
/// when the export is large and most of the table; else windows when the export is large and
/// the statistics can split it; else serial.
pub fn choose(
    engine: &Engine,
    since: Option<DateTime<Utc>>,
    jobs: usize,
    read: Read,
    memory: u64,
) -> Result<Plan> {
    let serial = Plan::Serial(query::events_unjoined(since), Join::Here);
    // The statistics only make the export faster: without them (never analyzed, no access),
    // the serial plan is as right.
    let stats = Statistics::read(engine).ok();
    let jobs = jobs
        .min(stats.as_ref().map_or(1, |s| s.free_connections))
        .max(1);
    if read != Read::Index {
        let empty = Statistics::default();
        let stats = stats.as_ref().unwrap_or(&empty);
        if let Some(scan) = sequential(engine, since, jobs, read == Read::Scan, stats, memory)? {
            return Ok(Plan::Scan(scan));
        }
    }
    let Some(stats) = stats else {
        return Ok(serial);
    };
    let Some(cuts) = stats.cuts(since, jobs, jobs * WINDOWS_PER_JOB) else {
        return Ok(serial);
    };
    let queries = window_bounds(since, &cuts)
        .into_iter()
        .map(|(from, to)| query::events_between(from, to))
        .collect();
    Ok(Plan::Windows { queries, jobs })
}

/// The sequential plan, when it is asked for (`forced`: an error when `events` cannot be read
/// in page ranges) or is the cheaper one.
fn sequential(
    engine: &Engine,
    since: Option<DateTime<Utc>>,
    jobs: usize,
    forced: bool,
    stats: &Statistics,
    memory: u64,
) -> Result<Option<Scan>> {
    let share = stats.share_from(since);
    // Worth a look at the table's size only when the statistics do not rule it out already.
    let maybe = stats.rows == 0 || stats.rows as f64 * share >= MIN_PARALLEL_ROWS as f64;
    if !forced && (jobs < 2 || share < MIN_SCAN_SHARE || !maybe) {
        return Ok(None);
    }
    let relations: Vec<(String, i64, bool)> = {
        let conn = engine.connection();
        let mut statement = conn.prepare(&scan::relations_sql())?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    if relations.is_empty() || relations.iter().any(|r| !r.2) {
        if forced {
            bail!(
                "--read scan: events cannot be read in page ranges here (PostgreSQL 14 or later \
                 is needed, and no foreign or inherited child tables); use --read index"
            );
        }
        return Ok(None);
    }
    let pages: u64 = relations.iter().map(|r| r.1.max(0) as u64).sum();
    // A table never analyzed: its size tells.
    let rows = match stats.rows {
        0 => pages * 8_192 / 100,
        rows => rows,
    };
    let wanted = (rows as f64 * share) as u64;
    if !forced && wanted < MIN_PARALLEL_ROWS {
        return Ok(None);
    }
    let per_task = (pages / (jobs as u64 * TASKS_PER_JOB)).max(32);
    let named: Vec<(String, u64)> = relations
        .into_iter()
        .map(|(name, pages, _)| (name, pages.max(0) as u64))
        .collect();
    let tasks = scan::page_ranges(&named, per_task)
        .into_iter()
        .map(|(name, from, to)| query::events_in_pages(&name, from, to, since))
        .collect();
    // Buckets whose loading (twice their rows and a sort entry each: `distribute`) takes
    // about two thirds of what a bucket may, so statistics a little off still fit; no more
    // than open files and `--memory` allow (larger ones are split again as they are sorted).
    let buckets = (wanted * ROW_BYTES)
        .div_ceil((memory / 9).max(1))
        .clamp(1, super::distribute::max_buckets(memory));
    let cuts = stats
        .quantiles(since, buckets as usize)
        .into_iter()
        .map(|t| (false, t, i64::MIN))
        .collect::<Vec<Key>>();
    Ok(Some(Scan {
        tasks,
        jobs,
        cuts,
        memory,
    }))
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

    /// The share of the rows at or after `since` (all without it; none known: none).
    fn share_from(&self, since: Option<DateTime<Utc>>) -> f64 {
        let Some(since) = since else { return 1.0 };
        if self.bounds.len() < 2 {
            return 0.0;
        }
        let since = since.timestamp_micros();
        let above = self.bounds.iter().filter(|&&b| b >= since).count();
        above as f64 / self.bounds.len() as f64
    }

    /// `parts - 1` timestamps (ascending) that cut the rows from `since` into `parts` of about
    /// equal size, interpolated within the histogram's buckets; none without a histogram.
    fn quantiles(&self, since: Option<DateTime<Utc>>, parts: usize) -> Vec<i64> {
        let since = since.map(|s| s.timestamp_micros());
        let mut above: Vec<i64> = since.into_iter().collect();
        above.extend(
            self.bounds
                .iter()
                .copied()
                .filter(|&b| since.is_none_or(|s| b > s)),
        );
        if above.len() < 2 || parts < 2 {
            return Vec::new();
        }
        let last = (above.len() - 1) as f64;
        let mut cuts: Vec<i64> = (1..parts)
            .map(|i| {
                let at = i as f64 * last / parts as f64;
                let (low, frac) = (at.floor() as usize, at.fract());
                let high = above[(low + 1).min(above.len() - 1)];
                above[low] + ((high as f64 - above[low] as f64) * frac) as i64
            })
            .collect();
        cuts.dedup();
        cuts
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
    fn sort_buckets_interpolate_the_histogram() {
        let s = stats(10_000_000, (0..=10).map(|i| i * 1_000));
        assert_eq!(s.quantiles(None, 4), vec![2_500, 5_000, 7_500]);
        assert_eq!(s.quantiles(None, 20).len(), 19);
        let since = Utc.timestamp_micros(6_000).unwrap();
        assert_eq!(s.quantiles(Some(since), 2), vec![8_000]);
        assert_eq!(s.share_from(Some(since)), 5.0 / 11.0);
        assert!(stats(5, []).quantiles(None, 8).is_empty());
        assert_eq!(stats(5, []).share_from(Some(since)), 0.0);
        assert_eq!(stats(5, []).share_from(None), 1.0);
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
