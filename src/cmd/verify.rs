//! `export-events verify MANIFEST`: checks an export against its manifest; `verify
//! iceberg:NAMESPACE.TABLE` checks a table's current snapshot against its data files.
//!
//! Every file the manifest lists is hashed again (SHA-256) and its size compared; a missing or
//! changed file is a failure (exit 1), with a table of what differs. When a source can be read
//! (the DuckDB file the manifest names, or PostgreSQL from the usual settings), the rows the
//! manifest's filter selects are counted again: rows inserted or deleted since are reported as
//! such ("source has N more"), not as a failure of the files.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use chrono::DateTime;
use sha2::{Digest as _, Sha256};

use crate::cli::VerifyArgs;
use crate::context::Context;
use crate::sink::file::hex;
use crate::sink::manifest::Manifest;
use crate::sink::object;
use crate::sink::table::{check, TableOutput};
use crate::sink::target::{key_of, Target};
use crate::source::identity;
use crate::source::query::{self, Dialect};
use crate::source::settings::Source;

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
    let remote = Target::folder(Some(&args.manifest), "", &ctx.cwd)?.remote;
    let path = match &remote {
        Some(_) => PathBuf::from("/").join(
            object::parse(&args.manifest.to_string_lossy())
                .expect("an s3:// URL")?
                .1,
        ),
        None => ctx.cwd.join(&args.manifest),
    };
    let (manifest, shown) = match &remote {
        Some(bucket) => {
            let url = bucket.url(&key_of(&path));
            let text = bucket.read(&key_of(&path))?;
            (Manifest::parse(&String::from_utf8_lossy(&text), &url)?, url)
        }
        None => (Manifest::read(&path)?, path.display().to_string()),
    };
    let files = match &remote {
        Some(_) => manifest.file_keys(&path)?,
        None => manifest.file_paths(&path)?,
    };
    let mut failures = 0;
    println!("{:<60} {:>12} {:>14}  status", "file", "rows", "bytes");
    for (entry, file) in manifest.files.iter().zip(files) {
        let status = match &remote {
            Some(bucket) => match bucket.hash(&key_of(&file)) {
                Ok(None) => "missing".into(),
                Ok(Some(found)) => compare(found, entry.bytes, &entry.sha256),
                Err(e) => format!("unreadable: {}", crate::error::one_line(&e)),
            },
            None => check_file(&file, entry.bytes, &entry.sha256),
        };
        if status != "ok" {
            failures += 1;
        }
        println!(
            "{:<60} {:>12} {:>14}  {status}",
            entry.path, entry.rows, entry.bytes
        );
    }
    println!("{}", source_line(ctx, &manifest));
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

/// `ok`, or what differs.
fn check_file(path: &Path, bytes: u64, sha256: &str) -> String {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return "missing".into(),
        Err(e) => return format!("unreadable: {e}"),
    };
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                hash.update(&buffer[..n]);
                size += n as u64;
            }
            Err(e) => return format!("unreadable: {e}"),
        }
    }
    compare((size, hex(&hash.finalize())), bytes, sha256)
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
