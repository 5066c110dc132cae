//! Change files (the default destination): one per batch of whole transactions (in each format
//! asked for), named by the LSN range they cover (`changes_<from>_<to>.csv`, 16 hex digits each,
//! so names sort in commit order and a rerun after a crash rewrites the same file), in a folder
//! or an `s3://` prefix. Columns: the model's change columns (`lsn`, `commit_time`, `xid`, `op`,
//! then the event's). Rows are gathered into Arrow batches and written through the export's own
//! sinks, atomically; nothing here encodes CSV or Parquet.

use anyhow::Result;

use super::api::{ChangeBatch, ChangeSink, Registration, Request, SinkPlan};
use crate::error::UsageError;
use crate::feed::change::{Changes, Value};
use crate::feed::pgoutput::Lsn;
use crate::feed::rows::Rows;
use crate::model::Zone;
use crate::plan::files::{self as planned, Request as FilesRequest};
use crate::sink::format::{Encoding, Format};
use crate::sink::Sink;
use crate::store::commit::commit_all;
use crate::store::{url, Location, RunLock, Staged, Target, Wait, DEFAULT_MODE};

/// The registry's entry: whatever no other destination takes.
pub const SINK: Registration = Registration {
    example: "a folder",
    takes: |_| false,
    fallback: true,
    resolve,
};

/// Where change files go without `--output`.
const DEFAULT_FOLDER: &str = "exports/changes";

/// The marker of a change files folder: which feed writes there.
const OWNER: &str = ".export-events-changes.json";

/// A folder of change files, resolved.
#[derive(Debug)]
struct Folder {
    folder: Target,
    formats: Vec<&'static Format>,
    encoding: Encoding,
}

fn resolve(request: &Request) -> Result<Box<dyn SinkPlan>, UsageError> {
    let files = FilesRequest {
        output: None,
        formats: request.formats,
        compression: request.compression,
        mode: request.mode,
        dataset: false,
    };
    Ok(Box::new(Folder {
        folder: record_folder(request)?,
        formats: request.formats.0.clone(),
        encoding: planned::encoding(&files, None)?,
    }))
}

/// The folder of `--output` (or the default), with the files' permissions: where change files
/// go, and where `--create-slot` records the slot whatever the destination.
pub fn record_folder(request: &Request) -> Result<Target, UsageError> {
    let given = request.output.map(|o| o.to_string_lossy().into_owned());
    let at = url::locate(given.as_deref().unwrap_or(DEFAULT_FOLDER), request.cwd)?;
    Ok(Target::owned(at, request.mode.unwrap_or(DEFAULT_MODE)))
}

impl SinkPlan for Folder {
    fn record_folder(&self) -> Target {
        self.folder.clone()
    }

    fn open(&self, scope: &str, zone: Zone, _quiet: bool) -> Result<Box<dyn ChangeSink + '_>> {
        claim(&self.folder, scope)?;
        Ok(Box::new(Open { folder: self, zone }))
    }
}

/// Claims `folder` for the feed `scope`, or refuses it when another feed (another server,
/// database or slot) writes there: its files would be taken for this feed's, and removed as
/// unconfirmed by the LSNs of another slot. A folder without the marker (new, or written by an
/// earlier version) is claimed.
fn claim(folder: &Target, scope: &str) -> Result<()> {
    let marker = folder.at.join(OWNER);
    let store = marker.store();
    // Read back from a place others may write: never through a symlink planted at its name.
    store.confine(folder.at.key(), OWNER).map_err(|e| {
        UsageError(format!(
            "{} is not a file export-events wrote ({e}): remove it, or choose another --output",
            marker.shown()
        ))
    })?;
    let text = store.get(marker.key())?;
    let owner = text.as_deref().map(|t| {
        serde_json::from_slice::<serde_json::Value>(t)
            .ok()
            .and_then(|v| v.get("source").and_then(|s| s.as_str()).map(str::to_owned))
            .unwrap_or_default()
    });
    match owner {
        Some(owner) if owner == scope => Ok(()),
        Some(owner) => anyhow::bail!(UsageError(format!(
            "{} holds the change files of another feed ({owner:?}; this one is {scope:?}: \
             server-database-slot): give each database and slot its own --output",
            folder.at.shown()
        ))),
        None => {
            let text = serde_json::json!({ "source": scope });
            folder.at(marker).replace(format!("{text:#}\n").as_bytes())
        }
    }
}

/// The folder, open for a feed.
struct Open<'a> {
    folder: &'a Folder,
    zone: Zone,
}

impl ChangeSink for Open<'_> {
    fn shown(&self) -> String {
        self.folder.folder.at.shown()
    }

    fn lock(&self, slot: &str, wait: Wait) -> Result<RunLock> {
        let at = self.folder.folder.at.join(slot);
        at.store().lock(at.key(), &format!("slot {slot}"), wait)
    }

    /// The end of the last change file in place (`changes_<from>_<to>.<ext>`).
    fn end(&self) -> Result<Option<Lsn>> {
        let at = &self.folder.folder.at;
        Ok(at
            .store()
            .list(at.key())?
            .iter()
            .filter_map(|name| range_of(name)?.1)
            .max())
    }

    /// Removes the files (and partial files) of runs that wrote changes from `from` on but were
    /// interrupted before the server had their confirmation: the slot is still at `from`, so
    /// the files written next hold those changes again (maybe cut into other batches, under
    /// other names). Confirmations go out asynchronously, so that can be several files: every
    /// file whose range starts at or after `from` goes.
    fn prepare(&self, from: Lsn) -> Result<()> {
        let at = &self.folder.folder.at;
        let unconfirmed = |name: &str| {
            range_of(name.strip_prefix('.').unwrap_or(name)).is_some_and(|(start, _)| start >= from)
        };
        let store = at.store();
        for name in store.list(at.key())? {
            if unconfirmed(&name) {
                store.delete(at.join(&name).key())?;
            }
        }
        store.recover(&[at.key()])
    }

    fn batch(&self, from: Lsn) -> Result<Box<dyn ChangeBatch + '_>> {
        Ok(Box::new(ChangeFiles::create(self.folder, from, self.zone)?))
    }
}

/// The name of the file for changes in `[from, to)` in `format`, named for its encoding
/// (`.csv.gz` when gzip-compressed).
fn name(from: Lsn, to: Lsn, format: &Format, encoding: &Encoding) -> String {
    format!(
        "changes_{:016X}_{:016X}.{}",
        from.0,
        to.0,
        format.file_extension(encoding)
    )
}

/// The LSN range a change file's name gives (`changes_<from>_<to>.…`, as [`name`] makes it):
/// its start, and its end where the name has one (a staged file's provisional name may not).
fn range_of(name: &str) -> Option<(Lsn, Option<Lsn>)> {
    let rest = name.strip_prefix("changes_")?;
    let hex = |digits: Option<&str>| {
        digits
            .and_then(|d| u64::from_str_radix(d, 16).ok())
            .map(Lsn)
    };
    Some((hex(rest.get(..16))?, hex(rest.get(17..33))))
}

/// The change files of one batch of transactions, being written as the changes stream in:
/// memory stays flat whatever the size of a transaction. Their names, which need the end LSN,
/// are given at [`ChangeBatch::finish`].
struct ChangeFiles {
    sinks: Vec<(Box<dyn Sink>, &'static Format)>,
    gathered: Rows,
    folder: Location,
    encoding: Encoding,
    from: Lsn,
    rows: u64,
}

impl ChangeFiles {
    /// Starts the files of the changes from `from`, one per format.
    fn create(folder: &Folder, from: Lsn, zone: Zone) -> Result<Self> {
        let gathered = Rows::new(zone);
        let schema = gathered.schema();
        let sinks = folder
            .formats
            .iter()
            .map(|format| {
                // A provisional name: staged as `.changes_<from>_…`, which `prepare` knows.
                let provisional = name(from, Lsn(0), format, &folder.encoding);
                let target = Target {
                    named_later: true,
                    ..folder.folder.at(folder.folder.at.join(&provisional))
                };
                Ok((
                    format.open(&target, schema.clone(), &folder.encoding)?,
                    *format,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            sinks,
            gathered,
            folder: folder.folder.at.clone(),
            encoding: folder.encoding,
            from,
            rows: 0,
        })
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(batch) = self.gathered.take()? {
            for (sink, _) in &mut self.sinks {
                sink.write_batch(&batch)?;
            }
        }
        Ok(())
    }
}

impl ChangeBatch for ChangeFiles {
    /// Files are written again whole: nothing is skipped.
    fn skipped(&self) -> u64 {
        0
    }

    /// Completes the files as the changes up to `to`, durably and together; none when no
    /// change was pushed.
    fn finish(mut self: Box<Self>, to: Lsn) -> Result<String> {
        if self.rows == 0 {
            return Ok(String::new());
        }
        self.flush()?;
        let mut files = Vec::with_capacity(self.sinks.len());
        let mut shown = Vec::with_capacity(self.sinks.len());
        for (sink, format) in std::mem::take(&mut self.sinks) {
            let at = self
                .folder
                .join(&name(self.from, to, format, &self.encoding));
            let Staged::File(mut file) = sink.close()? else {
                anyhow::bail!("a change file is a file");
            };
            file.retarget(at.key().to_owned(), at.shown());
            files.push(Staged::File(file));
            shown.push(at.shown());
        }
        commit_all(self.folder.store(), files)?;
        crate::cancel::committed();
        Ok(shown.into_iter().next().unwrap_or_default())
    }
}

impl Changes for ChangeFiles {
    fn push(&mut self, row: &[Value]) -> Result<()> {
        self.gathered.push(row)?;
        self.rows += 1;
        if self.gathered.full() {
            self.flush()?;
        }
        Ok(())
    }

    fn rows(&self) -> u64 {
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_files_name_gives_its_range() {
        let named = format!(
            "changes_{:016X}_{:016X}.csv.gz",
            0x16_B374_D848_u64, 0x17_u64
        );
        assert_eq!(
            range_of(&named),
            Some((Lsn(0x16_B374_D848), Some(Lsn(0x17))))
        );
        // A staged file's provisional name has a start only.
        assert_eq!(
            range_of("changes_0000000000000010_.csv.ABC123"),
            Some((Lsn(0x10), None))
        );
        for other in [
            "changes_x",
            ".changes_0000000000000010_",
            "slot.json",
            "changes_",
        ] {
            assert_eq!(range_of(other), None, "{other}");
        }
    }
}
