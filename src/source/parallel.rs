//! Reading the windows of a windowed plan at once, in one snapshot, and handing their rows on in
//! order.
//!
//! The engine's own connection, inside the caller's REPEATABLE READ transaction, exports its
//! snapshot (`pg_export_snapshot()`); every reader gets a DuckDB connection of its own (a PostgreSQL
//! session of its own) that imports it (`SET TRANSACTION SNAPSHOT`), as DuckDB's parallel scan
//! does, so all windows together are one consistent read. Window 0 streams to the caller as it
//! arrives; the later ones are taken in order by reader threads, each into an Arrow IPC spool
//! file (hidden, beside the output, so the store's recovery removes one a killed run left), and
//! replayed in order as soon as each is complete: the caller's encoding of one window overlaps
//! the reading of the next. At most `jobs` windows are read at a time. Memory stays flat; the
//! spools cost disk, at most about the size of the windows not yet replayed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context as _, Result};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use tempfile::NamedTempFile;

use super::engine::{literal, session_error, Engine, CATALOG};
use super::query::in_postgres;

/// A window read into its spool: its index, rows and spool file.
type Spooled = (usize, u64, NamedTempFile);

/// What the readers share.
struct Shared {
    windows: Vec<String>,
    snapshot: String,
    /// The next window a reader takes.
    next: AtomicUsize,
    /// Set when anything failed: every reader stops at its next batch.
    abort: AtomicBool,
    /// Where spool files go: `.{name}.XXXXXX.tmp` beside this path.
    spool: PathBuf,
}

/// Runs the `windows` queries, at most `jobs` at a time (the first on `engine`'s connection,
/// which must be in a transaction: the caller's, which it commits), and hands every batch to
/// `each`, window after window; returns the number of rows.
pub fn for_each_batch(
    engine: &Engine,
    windows: &[String],
    jobs: usize,
    spool: &Path,
    mut each: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<u64> {
    let snapshot = export_snapshot(engine)?;
    let shared = Arc::new(Shared {
        windows: windows.to_vec(),
        snapshot,
        next: AtomicUsize::new(1),
        abort: AtomicBool::new(false),
        spool: spool.to_owned(),
    });
    let (sender, spooled) = channel::<Result<Spooled>>();
    let mut readers: Vec<JoinHandle<()>> = Vec::new();
    let mut result = (|| -> Result<u64> {
        // A server, role or database out of connections (another client took the last one
        // since the plan counted them) means fewer readers, not a failed export.
        for _ in 1..jobs.max(1) {
            match start_reader(engine, &shared, sender.clone()) {
                Ok(reader) => readers.push(reader),
                Err(e) if is_connection_refused(&e) => break,
                Err(e) => return Err(e),
            }
        }
        let first = shared.windows.first().context("a plan has a window")?;
        let mut rows = engine.for_each_batch(first, |batch| {
            stop_if_aborted(&shared.abort)?;
            each(batch)
        })?;
        // This connection's share of the reading is done: a reader takes its place. Only the
        // readers hold senders from here, so a reader that dies ends the wait below.
        if shared.windows.len() > 1 {
            match start_reader(engine, &shared, sender) {
                Ok(reader) => readers.push(reader),
                Err(e) if is_connection_refused(&e) && readers.is_empty() => {
                    // No second connection at all: this one reads the rest, in order.
                    return Ok(rows + read_rest_here(engine, &shared, &mut each)?);
                }
                Err(e) if is_connection_refused(&e) => {}
                Err(e) => return Err(e),
            }
        }
        rows += replay(&shared, &spooled, &mut each)?;
        Ok(rows)
    })();
    if let Err(error) = &result {
        // Every reader ends (its spool removed) before the error is reported; when this side
        // only stopped because a reader failed, the reader's error is the cause.
        shared.abort.store(true, Ordering::SeqCst);
        let stopped = error.is::<Aborted>();
        readers.drain(..).for_each(|r| drop(r.join()));
        let cause = spooled.try_iter().filter_map(Result::err);
        if let (true, Some(cause)) = (stopped, cause.filter(|e| !e.is::<Aborted>()).last()) {
            result = Err(cause);
        }
    }
    for reader in readers {
        reader
            .join()
            .map_err(|_| anyhow!("a reader thread panicked"))?;
    }
    if result.is_err() {
        let _ = end_transaction(engine, false);
    }
    result
}

/// Exports the snapshot of `engine`'s transaction for other sessions to read in.
pub(super) fn export_snapshot(engine: &Engine) -> Result<String> {
    engine
        .connection()
        .query_row(
            &in_postgres("SELECT pg_export_snapshot()::text"),
            [],
            |row| row.get(0),
        )
        .map_err(|e| {
            // The session may be gone: never roll it back (see `Engine::abandon`).
            engine.abandon();
            session_error(&e.to_string())
        })
        .context("exporting the snapshot for the parallel read")
}

/// A new connection (a PostgreSQL session of its own) in a transaction that reads in
/// `snapshot`.
pub(super) fn join_snapshot(engine: &Engine, snapshot: &str) -> Result<Engine> {
    let conn = engine.connection().try_clone()?;
    let import = format!("SET TRANSACTION SNAPSHOT '{snapshot}'");
    conn.execute_batch(&format!(
        "BEGIN TRANSACTION; CALL postgres_execute('{CATALOG}', {})",
        literal(&import)
    ))
    .map_err(|e| session_error(&e.to_string()))
    .context("joining the export's snapshot")?;
    Ok(Engine::from(conn))
}

/// Reads every window not yet taken on the caller's connection, in order, straight to `each`.
fn read_rest_here(
    engine: &Engine,
    shared: &Shared,
    each: &mut impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<u64> {
    let mut rows = 0;
    loop {
        let index = shared.next.fetch_add(1, Ordering::SeqCst);
        let Some(sql) = shared.windows.get(index) else {
            return Ok(rows);
        };
        rows += engine.for_each_batch(sql, |batch| each(batch))?;
    }
}

/// Whether starting a reader failed because the server refused another connection (its, the
/// role's or the database's limit: SQLSTATE 53300).
pub(super) fn is_connection_refused(error: &anyhow::Error) -> bool {
    crate::error::class_of(error) == Some(crate::error::Class::TooManyConnections)
}

/// Commits a reader's read that succeeded. After a failure the connection is abandoned, not
/// rolled back:
/// the server may have ended the session, and a failed rollback aborts the process
/// ([`Engine::abandon`]); the server ends the transaction when the process exits.
pub(super) fn end_transaction(engine: &Engine, succeeded: bool) -> Result<()> {
    if succeeded {
        let committed = engine.connection().execute_batch("COMMIT");
        if committed.is_err() {
            engine.abandon();
        }
        return committed.context("ending the export's transaction");
    }
    engine.abandon();
    Ok(())
}

/// Hands the rows of windows 1.. to `each`, in order, as their spools complete.
fn replay(
    shared: &Shared,
    spooled: &Receiver<Result<Spooled>>,
    each: &mut impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<u64> {
    let mut waiting: BTreeMap<usize, (u64, NamedTempFile)> = BTreeMap::new();
    let mut rows = 0;
    for index in 1..shared.windows.len() {
        let (read, file) = loop {
            if let Some(done) = waiting.remove(&index) {
                break done;
            }
            let (done, read, file) = spooled
                .recv()
                .map_err(|_| anyhow!("the readers stopped early"))??;
            waiting.insert(done, (read, file));
        };
        if read > 0 {
            let batches = StreamReader::try_new(BufReader::new(file.reopen()?), None)
                .context("reading a spooled window")?;
            // SAFETY: the spool holds exactly the valid arrays this process wrote a moment ago
            // (a private temporary file); validating them again (UTF-8, offsets) only costs.
            let batches = unsafe { batches.with_skip_validation(true) };
            for batch in batches {
                stop_if_aborted(&shared.abort)?;
                each(&batch.context("reading a spooled window")?)?;
            }
        }
        rows += read;
    }
    Ok(rows)
}

/// Starts a reader on a connection of its own, in the export's snapshot: it takes windows in
/// order until none is left.
fn start_reader(
    engine: &Engine,
    shared: &Arc<Shared>,
    sender: Sender<Result<Spooled>>,
) -> Result<JoinHandle<()>> {
    let reader = join_snapshot(engine, &shared.snapshot)?;
    let shared = shared.clone();
    std::thread::Builder::new()
        .name("export-events-window".into())
        .spawn(move || loop {
            let index = shared.next.fetch_add(1, Ordering::SeqCst);
            let Some(sql) = shared.windows.get(index) else {
                let _ = end_transaction(&reader, true);
                return;
            };
            let read = spool_window(&reader, sql, &shared).map(|(rows, file)| (index, rows, file));
            let failed = read.is_err();
            if failed {
                shared.abort.store(true, Ordering::SeqCst);
                let _ = end_transaction(&reader, false);
            }
            if sender.send(read).is_err() || failed {
                return;
            }
        })
        .context("starting a reader thread")
}

/// Streams the rows of `sql` into a new spool file as Arrow IPC.
fn spool_window(engine: &Engine, sql: &str, shared: &Shared) -> Result<(u64, NamedTempFile)> {
    let folder = shared.spool.parent().unwrap_or(Path::new("."));
    let mut file = crate::store::local::beside(&shared.spool, |b| b.tempfile_in(folder))
        .with_context(|| format!("creating a spool file in {}", folder.display()))?;
    let mut writer: Option<StreamWriter<BufWriter<File>>> = None;
    let rows = engine.for_each_batch(sql, |batch| {
        stop_if_aborted(&shared.abort)?;
        if writer.is_none() {
            let out = BufWriter::with_capacity(1 << 20, file.reopen()?);
            writer = Some(StreamWriter::try_new(out, &batch.schema())?);
        }
        let writer = writer.as_mut().expect("just made");
        writer.write(batch).context("writing a spool file")?;
        Ok(())
    })?;
    if let Some(mut writer) = writer {
        writer.finish().context("writing a spool file")?;
        writer
            .into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?;
    }
    file.rewind()?;
    Ok((rows, file))
}

/// A window stopped because something else failed.
#[derive(Debug, thiserror::Error)]
#[error("another window of the read failed")]
pub(super) struct Aborted;

pub(super) fn stop_if_aborted(abort: &AtomicBool) -> Result<()> {
    if abort.load(Ordering::SeqCst) {
        bail!(Aborted);
    }
    Ok(())
}
