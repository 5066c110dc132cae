//! `export-events verify MANIFEST`: checks an export against its manifest; `verify
//! iceberg:NAMESPACE.TABLE` checks a table's current snapshot against its data files.
//!
//! Every file the manifest lists is hashed again (SHA-256) and its size compared; a missing or
//! changed file is a failure (exit 1), with a table of what differs. When a source can be read
//! (the DuckDB file the manifest names, or PostgreSQL from the usual settings), the rows the
//! manifest's filter selects are counted again: rows inserted or deleted since are reported as
//! such ("source has N more"), not as a failure of the files.

use anyhow::{bail, Context as _, Result};
use chrono::DateTime;

use crate::cli::VerifyArgs;
use crate::context::Context;
use crate::sink::manifest::Manifest;
use crate::sink::table::{check, TableOutput};
use crate::source::identity;
use crate::source::query::{self, Dialect};
use crate::source::settings::Source;
use crate::store::{url, Location};

/// Checks the files, then the source; prints a line per file and the verdict.
pub fn run(ctx: &Context, args: &VerifyArgs) -> Result<()> {
    let table = TableOutput::resolve(
        Some(&args.manifest),
        args.catalog.as_deref(),
        args.warehouse.as_deref(),
        &ctx.cwd,
    )?;
    if let Some(table) = table {
        return run_table(&table);
    }
    let at = url::locate(&args.manifest.to_string_lossy(), &ctx.cwd)?;
    let manifest = Manifest::read(&at)?;
    let failures = check_files(&manifest, &at)?;
    println!("{}", source_line(ctx, &manifest));
    let shown = at.shown();
    if failures > 0 {
        bail!(
            "{failures} of {} files differ from manifest {shown}",
            manifest.files.len(),
        );
    }
    println!(
        "Verified {} files ({} rows) of {shown}",
        manifest.files.len(),
        manifest.rows,
    );
    Ok(())
}

/// Each file the manifest at `at` lists, hashed where it is; a line per file. Returns how many
/// differ.
fn check_files(manifest: &Manifest, at: &Location) -> Result<usize> {
    let keys = manifest.file_keys(at)?;
    let store = at.store();
    let mut failures = 0;
    println!("{:<60} {:>12} {:>14}  status", "file", "rows", "bytes");
    for (entry, key) in manifest.files.iter().zip(keys) {
        let status = match store.hash(&key) {
            Ok(None) => "missing".into(),
            Ok(Some(found)) => compare(found, entry.bytes, &entry.sha256),
            Err(e) => format!("unreadable: {}", crate::error::one_line(&e)),
        };
        if status != "ok" {
            failures += 1;
        }
        println!(
            "{:<60} {:>12} {:>14}  {status}",
            entry.path, entry.rows, entry.bytes
        );
    }
    Ok(failures)
}

/// A table: each data file of its current snapshot, then the rows they add up to.
fn run_table(output: &TableOutput) -> Result<()> {
    let checked = check::check(output)?;
    let shown = output.shown();
    let Some(snapshot) = checked.snapshot else {
        println!("Verified {shown}: no snapshot yet (an empty table)");
        return Ok(());
    };
    println!("{:<60} {:>12} {:>14}  status", "file", "rows", "bytes");
    for file in &checked.files {
        println!(
            "{:<60} {:>12} {:>14}  {}",
            file.path, file.rows, file.bytes, file.status
        );
    }
    let failures = checked.files.iter().filter(|f| f.status != "ok").count();
    if failures > 0 {
        bail!(
            "{failures} of {} data files of {shown} (snapshot {snapshot}) differ from what it \
             records",
            checked.files.len()
        );
    }
    if let Some(total) = checked.total.filter(|t| *t != checked.counted) {
        bail!(
            "{shown} (snapshot {snapshot}) records {total} rows in its summary, and its data \
             files {}",
            checked.counted
        );
    }
    println!(
        "Verified {} data files ({} rows) of {shown}, snapshot {snapshot}",
        checked.files.len(),
        checked.counted
    );
    Ok(())
}

/// `ok`, or how a file's size and hash `found` differ from the manifest's.
fn compare(found: (u64, String), bytes: u64, sha256: &str) -> String {
    let (size, hash) = found;
    if size != bytes {
        return format!("size differs ({size} bytes now)");
    }
    if hash != sha256 {
        return "content differs (SHA-256)".into();
    }
    "ok".into()
}

/// What the source says now, or why it was not asked.
fn source_line(ctx: &Context, manifest: &Manifest) -> String {
    match recount(ctx, manifest) {
        Ok(Some(now)) => match now.cmp(&manifest.rows) {
            std::cmp::Ordering::Equal => format!("source: {now} rows, as exported"),
            std::cmp::Ordering::Greater => format!(
                "source: has {} more rows than the export (inserted since)",
                now - manifest.rows
            ),
            std::cmp::Ordering::Less => format!(
                "source: has {} fewer rows than the export (deleted since)",
                manifest.rows - now
            ),
        },
        Ok(None) => "source: not checked (no connection configured)".into(),
        Err(e) => format!("source: not checked ({})", crate::error::one_line(&e)),
    }
}

/// The number of rows the manifest's filter selects now, when the source can be read.
fn recount(ctx: &Context, manifest: &Manifest) -> Result<Option<u64>> {
    let since = manifest
        .since
        .as_deref()
        .map(DateTime::parse_from_rfc3339)
        .transpose()
        .context("the manifest's since")?
        .map(|t| t.to_utc());
    let source = match (manifest.source.kind.as_str(), &manifest.source.path) {
        ("duckdb", Some(path)) => Source::DuckDbFile(path.into()),
        ("postgres", _) => match ctx.postgres() {
            Ok(pg) => Source::Postgres(pg),
            Err(_) => return Ok(None),
        },
        _ => return Ok(None),
    };
    let opened = crate::source::open(&source)?;
    if opened.dialect == Dialect::Postgres {
        let (now, _) = identity::read(&opened.engine)?;
        let same = Some(now.system_identifier.as_str())
            == manifest.source.system_identifier.as_deref()
            && Some(now.events_oid) == manifest.source.events_oid;
        if !same {
            bail!("the configured database is not the one the export read");
        }
    }
    let (sql, _) = query::total(since, opened.dialect);
    let sql = if opened.dialect == Dialect::Postgres && since.is_none() {
        query::in_postgres("SELECT count(*) FROM events")
    } else {
        sql
    };
    Ok(Some(opened.engine.count(&sql)?))
}
