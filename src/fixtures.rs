//! Deterministic fixture databases (for `export-events generate`, the demo, tests and benches): the IoT Hub's `rules` and `events` tables filled with
//! synthetic events, in PostgreSQL or a DuckDB file, and the demo database built from them.
//!
//! The data is computed by DuckDB from `hash(id, seed)`, so the same seed gives the same rows on
//! any machine, and both targets get identical values. The first rules and events are the
//! awkward ones of `fixtures/compat/sample.sql` (commas, quotes, line breaks, non-ASCII, NULL
//! ids, extreme timestamps); the rest have a realistic shape: a year of timestamps with whole
//! and fractional seconds and ties, about 10% NULL telemetry ids, 8% NULL device ids, a third
//! acknowledged. As in the Hub, timestamps follow insertion order (ids) with jitter, and a few
//! are back-dated by devices that were offline, so the physical order of the table and its
//! timestamp index agree the way they do in production. PostgreSQL gets its indexes after
//! loading, as bulk loads should. Rows are loaded in chunks so a progress bar can follow.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::error::UsageError;
use crate::progress::Progress;
use crate::source::engine::{literal, Access, Engine, CATALOG};
use crate::source::settings::Source;

/// The awkward sample data every fixture starts with.
const SAMPLE: &str = include_str!("../fixtures/compat/sample.sql");
/// Rows in the sample data.
const SAMPLE_EVENTS: u64 = 15;
const SAMPLE_RULES: u32 = 10;
/// Generated events per INSERT: the progress bar moves once a chunk.
const CHUNK: u64 = 1_000_000;
/// The demo database: where, and how big.
pub const DEMO_PATH: &str = "exports/demo.duckdb";
const DEMO: Plan = Plan {
    rows: 100_000,
    seed: 42,
    rules: 300,
    shape: Shape::Hub,
};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub rows: u64,
    pub seed: u64,
    pub rules: u32,
    pub shape: Shape,
}

/// The shape of generated timestamps and rule names, so speed can be measured on more than one
/// kind of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// As in the Hub: timestamps follow insertion with jitter, ties and back-dated events;
    /// short rule names.
    Hub,
    /// Timestamps strictly increasing with insertion (no ties, no back-dating) and long rule
    /// names (about 120 characters).
    Ordered,
}

/// The demo source as the DuckDB file it is (made on first use); other sources as they are.
pub fn demo(source: Source, cwd: &Path, quiet: bool) -> Result<Source> {
    if !matches!(source, Source::Demo) {
        return Ok(source);
    }
    let path = ensure_demo(cwd, quiet)?;
    if !quiet {
        eprintln!(
            "export-events: reading the demo database {}",
            path.display()
        );
    }
    Ok(Source::DuckDbFile(path))
}

/// Makes the demo database under `cwd` when it is missing; returns its path.
fn ensure_demo(cwd: &Path, quiet: bool) -> Result<PathBuf> {
    let path = cwd.join(DEMO_PATH);
    if path.is_file() {
        return Ok(path);
    }
    if !quiet {
        eprintln!(
            "export-events: creating the demo database {DEMO_PATH} ({} events)",
            DEMO.rows
        );
    }
    let folder = path.parent().context("demo path has a folder")?;
    std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    // Built in a scratch folder beside it and renamed, so an interrupted run leaves nothing.
    let scratch = tempfile::Builder::new()
        .prefix(".demo.")
        .tempdir_in(folder)?;
    let building = scratch.path().join("demo.duckdb");
    into_duckdb(&building, DEMO, false, &Progress::hidden())?;
    std::fs::rename(&building, &path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path)
}

/// Fills a DuckDB database file (created when missing).
pub fn into_duckdb(path: &Path, plan: Plan, replace: bool, progress: &Progress) -> Result<()> {
    let engine = Engine::new()?.attach_duckdb(path, Access::ReadWrite)?;
    prepare_target(&engine, replace, &format!("DuckDB file {}", path.display()))?;
    run_sql(&engine, &format!("USE {CATALOG}; {DUCKDB_TABLES}"))?;
    load(&engine, plan, progress)?;
    run_sql(&engine, "CHECKPOINT")
}

/// Fills the PostgreSQL database attached (read-write) to `engine`.
pub fn into_postgres(
    engine: &Engine,
    plan: Plan,
    replace: bool,
    progress: &Progress,
) -> Result<()> {
    prepare_target(engine, replace, "the PostgreSQL database")?;
    postgres_execute(engine, POSTGRES_TABLES)?;
    load(engine, plan, progress)?;
    postgres_execute(engine, POSTGRES_INDEXES)
}

/// Refuses to overwrite tables unless asked to; drops them when asked to.
fn prepare_target(engine: &Engine, replace: bool, target: &str) -> Result<()> {
    let existing: Vec<&str> = ["events", "rules"]
        .into_iter()
        .filter(|t| engine.has_table(t))
        .collect();
    if existing.is_empty() {
        return Ok(());
    }
    if !replace {
        bail!(UsageError(format!(
            "{target} already has table {}: pass --replace to drop and recreate it",
            existing.join(" and ")
        )));
    }
    run_sql(
        engine,
        &format!("DROP TABLE IF EXISTS {CATALOG}.events; DROP TABLE IF EXISTS {CATALOG}.rules"),
    )
}

/// Inserts the sample rows, then the generated ones, into the attached tables.
fn load(engine: &Engine, plan: Plan, progress: &Progress) -> Result<()> {
    if plan.rules < SAMPLE_RULES {
        bail!(UsageError(format!(
            "--rules must be at least {SAMPLE_RULES} (the sample rules)"
        )));
    }
    let sample: String = SAMPLE
        .lines()
        .filter(|line| !line.starts_with("SELECT setval"))
        .collect::<Vec<_>>()
        .join("\n");
    let events = sample
        .find("INSERT INTO events")
        .context("sample.sql has events")?;
    let (rules_sql, events_sql) = sample.split_at(events);
    let limited_events = if plan.rows < SAMPLE_EVENTS {
        format!(
            "{events_sql}; DELETE FROM {CATALOG}.events WHERE id > {}",
            plan.rows
        )
    } else {
        events_sql.to_owned()
    };
    run_sql(engine, &format!("USE {CATALOG}; {rules_sql}"))?;
    run_sql(engine, &generated_rules(plan))?;
    run_sql(engine, &format!("USE {CATALOG}; {limited_events}"))?;
    progress.advance(plan.rows.min(SAMPLE_EVENTS));
    let mut first = SAMPLE_EVENTS + 1;
    while first <= plan.rows {
        let end = (first + CHUNK).min(plan.rows + 1);
        run_sql(engine, &generated_events(plan, first, end))?;
        progress.advance(end - first);
        first = end;
    }
    Ok(())
}

fn generated_rules(plan: Plan) -> String {
    format!(
        "INSERT INTO {CATALOG}.rules (id, name, description, condition, action, is_active, device_metric_id)
         SELECT i, CASE i % 7
                WHEN 0 THEN 'Rule ' || i || ', \"quoted\"'
                WHEN 1 THEN 'Règle ' || i || ' — température élevée'
                WHEN 2 THEN 'Rule ' || i || chr(10) || 'second line'
                WHEN 3 THEN 'Rule ' || i || ' ; | ' || chr(9) || 'tab'
                WHEN 4 THEN '湿度 ' || i
                ELSE 'Rule ' || i || ' high temperature' END{long},
                'generated', '{{}}', '{{}}', i % 5 <> 0, i
         FROM range({first}, {last}) AS t(i)",
        first = SAMPLE_RULES + 1,
        last = u64::from(plan.rules) + 1,
        long = match plan.shape {
            Shape::Hub => "",
            Shape::Ordered => {
                " || ': ' || repeat('threshold exceeded on sensor group ' || (i % 97) || ', ', 3)"
            }
        },
    )
}

/// Events `first..end` (ids) of the plan.
///
/// Event k of the generated ones is inserted at `k / n` of the way through 2025, in groups of
/// three that share an instant (rules firing together). Its device timestamp is: that instant
/// to the whole second for a quarter of the rows (ties within a group), up to two seconds
/// earlier with a fraction for half, to the whole second for the rest, and for one in sixteen
/// back-dated by up to three days (a device that was offline). Bits of one hash pick every
/// column.
///
/// With [`Shape::Ordered`], event k's timestamp lies in the k-th of n equal slices of 2025 (a
/// hash picks where), so timestamps strictly increase with ids.
fn generated_events(plan: Plan, first: u64, end: u64) -> String {
    let generated = plan.rows.saturating_sub(SAMPLE_EVENTS).max(1);
    let step = YEAR / i64::try_from(generated.div_ceil(3)).unwrap_or(i64::MAX);
    let slice = (YEAR / i64::try_from(generated).unwrap_or(i64::MAX)).max(1);
    let micros = match plan.shape {
        Shape::Hub => "CASE
                 WHEN h % 16 < 4 THEN inserted // 1000000 * 1000000
                 WHEN h % 16 = 4 THEN (inserted - (h >> 8) % 259200000000) // 1000000 * 1000000
                 WHEN h % 16 < 12 THEN inserted - (h >> 8) % 2000000
                 ELSE (inserted - (h >> 8) % 2000000) // 1000000 * 1000000 END"
            .to_owned(),
        Shape::Ordered => format!(
            "{START} + (i - {offset}) * {slice} + (h >> 8) % {slice}",
            offset = SAMPLE_EVENTS + 1
        ),
    };
    format!(
        "INSERT INTO {CATALOG}.events
             (id, \"timestamp\", created_at, rule_id, acknowledged, trigger_telemetry_id, trigger_device_id)
         SELECT i, make_timestamp(greatest({START}, micros))::TIMESTAMPTZ,
                make_timestamp((inserted + (h >> 8) % 50000)::BIGINT)::TIMESTAMPTZ,
                (1 + (h >> 20) % {rules})::INTEGER,
                (h >> 40) % 3 = 0,
                CASE WHEN (h >> 44) % 10 = 0 THEN NULL ELSE (i * 10 + (h >> 12) % 10)::BIGINT END,
                CASE WHEN (h >> 50) % 100 < 8 THEN NULL ELSE (1 + (h >> 56) % 200)::BIGINT END
         FROM (
             SELECT i, h, inserted, ({micros})::BIGINT AS micros
             FROM (
                 SELECT i, h, ({START} + (i - {offset}) // 3 * {step})::BIGINT AS inserted
                 FROM (SELECT i, hash(i, {seed}::UBIGINT) AS h FROM range({first}, {end}) AS t(i))
             )
         )",
        rules = plan.rules,
        seed = plan.seed,
        offset = SAMPLE_EVENTS + 1,
    )
}

/// 2025-01-01T00:00:00Z and the length of 2025, in microseconds.
const START: i64 = 1_735_689_600_000_000;
const YEAR: i64 = 31_536_000_000_000;

fn run_sql(engine: &Engine, sql: &str) -> Result<()> {
    engine.execute(sql).context("generating fixture data")
}

/// Runs statements on PostgreSQL itself, then forgets DuckDB's cached view of its catalog.
fn postgres_execute(engine: &Engine, sql: &str) -> Result<()> {
    run_sql(
        engine,
        &format!(
            "CALL postgres_execute('{CATALOG}', {}); CALL pg_clear_cache()",
            literal(sql)
        ),
    )
}

const DUCKDB_TABLES: &str = "
CREATE TABLE rules (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, description VARCHAR,
    condition VARCHAR NOT NULL, action VARCHAR NOT NULL, is_active BOOLEAN NOT NULL,
    device_metric_id INTEGER NOT NULL);
CREATE TABLE events (id BIGINT PRIMARY KEY, \"timestamp\" TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL, rule_id INTEGER NOT NULL, acknowledged BOOLEAN NOT NULL,
    trigger_telemetry_id BIGINT, trigger_device_id BIGINT);";

/// `fixtures/compat/schema.sql` without its constraints and indexes, which come after the load.
const POSTGRES_TABLES: &str = "
CREATE TABLE rules (id integer GENERATED BY DEFAULT AS IDENTITY, name varchar(255) NOT NULL,
    description text NULL, condition jsonb NOT NULL, action jsonb NOT NULL,
    is_active boolean NOT NULL, device_metric_id integer NOT NULL);
CREATE TABLE events (id bigint GENERATED BY DEFAULT AS IDENTITY,
    \"timestamp\" timestamp with time zone NOT NULL, created_at timestamp with time zone NOT NULL,
    rule_id integer NOT NULL, acknowledged boolean NOT NULL, trigger_telemetry_id bigint NULL,
    trigger_device_id bigint NULL);";

const POSTGRES_INDEXES: &str = "
ALTER TABLE rules ADD PRIMARY KEY (id);
ALTER TABLE events ADD PRIMARY KEY (id);
ALTER TABLE events ADD FOREIGN KEY (rule_id) REFERENCES rules (id) DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX idx_events_timestamp ON events (\"timestamp\");
CREATE INDEX idx_events_rule ON events (rule_id);
CREATE INDEX idx_events_ack ON events (acknowledged);
CREATE INDEX idx_events_telemetry_id ON events (trigger_telemetry_id);
CREATE INDEX idx_events_device_id ON events (trigger_device_id);
SELECT setval(pg_get_serial_sequence('rules', 'id'), (SELECT max(id) FROM rules));
SELECT setval(pg_get_serial_sequence('events', 'id'), GREATEST((SELECT max(id) FROM events), 1));
ANALYZE rules; ANALYZE events;";
