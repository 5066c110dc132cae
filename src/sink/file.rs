//! A file being written under a hidden temporary name beside its target, with the permissions
//! of its target (owner-only by default), never through a symlink planted in its place, hashed
//! (SHA-256) and counted as it is written so the manifest costs no second read. Dropping it
//! unfinished removes the temporary file; `commit` puts it in place. A full disk is reported as
//! such, naming the file. At an object storage target the same file is a multipart upload
//! ([`super::object::Upload`]) that the commit completes.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

use super::object::Upload;
use super::target::Target;

/// A file being written under a temporary name beside its target.
pub struct AtomicFile {
    pub(super) body: Body,
    pub(super) target: PathBuf,
    /// Bytes written so far, and how many of them the kernel was asked to write back.
    written: u64,
    flushed: u64,
    hash: std::sync::Mutex<Hasher>,
    /// Past this many bytes the hash moves to a thread of its own (text files, see
    /// [`Self::hash_apart`]).
    hash_apart_from: u64,
    rows: u64,
    range: Option<(i64, i64)>,
}

/// Where the bytes go until the commit.
pub(super) enum Body {
    /// A temporary file beside the target, renamed over it.
    Local(NamedTempFile),
    /// A multipart upload, completed at the target's key.
    Object(Box<Upload>),
}

/// What a finished file holds, for the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    pub bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
    pub rows: u64,
    /// The oldest and newest event timestamps in it (microseconds since the epoch).
    pub range: Option<(i64, i64)>,
}

/// Every this many bytes, the kernel is asked to start writing the file back (without waiting),
/// so the fsync before the rename has little left to do: with 8 MB, the fsync of a slice's 8 MB
/// CSV took 5.3 ms, with 1 MB 0.6 ms; a 740 MB export runs as fast either way.
const WRITE_BACK: u64 = 1 << 20;

/// The folder `target` goes in, created (with the target's folder mode) when the tool owns it.
pub(super) fn folder_of(target: &Target) -> Result<&Path> {
    let folder = target.path.parent().unwrap_or(Path::new("/"));
    if target.create_folder() {
        target
            .create_dir_all(folder)
            .with_context(|| format!("creating folder {}", folder.display()))?;
    }
    Ok(folder)
}

/// Names temporary files and folders beside `target` as [`recover`](super::recover) knows them
/// (`.{name}.XXXXXX.tmp`), created O_CREAT | O_EXCL: a symlink planted at the name is never
/// followed. `use_it` gets the builder (for a file or a folder).
pub fn beside<T>(
    target: &Path,
    use_it: impl FnOnce(&mut tempfile::Builder) -> io::Result<T>,
) -> io::Result<T> {
    let prefix = temp_prefix(target);
    let mut builder = tempfile::Builder::new();
    builder
        .prefix(&prefix)
        .suffix(TEMP_SUFFIX)
        .rand_bytes(TEMP_RANDOM);
    use_it(&mut builder)
}

impl AtomicFile {
    /// Starts writing `target`; nothing at `target` changes until [`commit_all`].
    pub fn create(target: &Target) -> Result<Self> {
        if let Some(bucket) = &target.remote {
            let upload = Upload::start(bucket, &target.key())?;
            return Ok(Self::new(Body::Object(Box::new(upload)), target));
        }
        let folder = folder_of(target)?;
        let temp = beside(&target.path, |b| {
            b.permissions(std::os::unix::fs::PermissionsExt::from_mode(target.mode))
                .tempfile_in(folder)
        })
        .map_err(|e| io_error(e, &target.path))
        .with_context(|| format!("creating a file in {}", folder.display()))?;
        // The umask may have taken bits away from an explicit --mode: set it exactly.
        temp.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(target.mode))
            .with_context(|| format!("setting the permissions of {}", target.path.display()))?;
        Ok(Self::new(Body::Local(temp), target))
    }

    fn new(body: Body, target: &Target) -> Self {
        Self {
            body,
            target: target.path.clone(),
            written: 0,
            flushed: 0,
            hash: std::sync::Mutex::new(Hasher::Here(Sha256::new())),
            hash_apart_from: u64::MAX,
            rows: 0,
            range: None,
        }
    }

    /// The temporary file, for a local target.
    pub(super) fn temp_path(&self) -> Option<&Path> {
        match &self.body {
            Body::Local(temp) => Some(temp.path()),
            Body::Object(_) => None,
        }
    }

    /// Puts the finished file at its target: a rename, or the upload's completion.
    pub(super) fn put_in_place(self) -> io::Result<()> {
        match self.body {
            Body::Local(temp) => temp
                .persist(&self.target)
                .map(|_| ())
                .map_err(|e| io_error(e.error, &self.target)),
            Body::Object(upload) => upload.complete_at(&super::target::key_of(&self.target)),
        }
    }

    /// Counts `rows` more events, whose timestamps span `range`, into the file's record.
    pub fn record(&mut self, rows: u64, range: Option<(i64, i64)>) {
        self.rows += rows;
        self.range = match (self.range, range) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (a, b) => a.or(b),
        };
    }

    /// Hashes this file on a thread of its own once it is large: a text file, whose writing
    /// thread does little else (see [`Hasher`]).
    pub(super) fn hash_apart(&mut self) {
        self.hash_apart_from = HASH_APART;
    }

    /// The SHA-256 of everything written.
    fn digest(&self) -> Vec<u8> {
        let mut hash = self.hash.lock().unwrap_or_else(|e| e.into_inner());
        hash.finish().finalize().to_vec()
    }

    /// What the file holds, once it is at `path`.
    pub(super) fn written(&self, path: PathBuf) -> Written {
        Written {
            path,
            bytes: self.written,
            sha256: hex(&self.digest()),
            rows: self.rows,
            range: self.range,
        }
    }

    /// Starts the write-back of what was written since the last call, once there is enough.
    fn start_write_back(&mut self) {
        if self.written - self.flushed < WRITE_BACK {
            return;
        }
        let Body::Local(temp) = &self.body else {
            return;
        };
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd as _;
            // SAFETY: a valid descriptor and range; the call only schedules I/O. Failure is
            // harmless: the fsync at commit writes everything anyway.
            unsafe {
                libc::sync_file_range(
                    temp.as_file().as_raw_fd(),
                    self.flushed as libc::off64_t,
                    (self.written - self.flushed) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.flushed = self.written;
    }

    /// Puts the finished file at `target` instead (a name known only at the end), in the same
    /// folder as the temporary file.
    pub fn retarget(&mut self, target: &Path) {
        self.target = target.to_owned();
    }

    /// Makes the file durable (a local file) or every part uploaded (an object).
    pub(super) fn sync(&mut self) -> Result<()> {
        match &mut self.body {
            Body::Local(temp) => temp
                .flush()
                .and_then(|()| temp.as_file().sync_all())
                .map_err(|e| io_error(e, &self.target)),
            Body::Object(upload) => upload.finish(),
        }
        .with_context(|| format!("writing {}", self.target.display()))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.body {
            Body::Local(temp) => temp.write(buf).map_err(|e| io_error(e, &self.target))?,
            Body::Object(upload) => upload.write(buf)?,
        };
        let hash = self.hash.get_mut().unwrap_or_else(|e| e.into_inner());
        hash.update(&buf[..n], self.written, self.hash_apart_from);
        self.written += n as u64;
        self.start_write_back();
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.body {
            Body::Local(temp) => temp.flush().map_err(|e| io_error(e, &self.target)),
            Body::Object(_) => Ok(()),
        }
    }
}

/// Text files larger than this are hashed on a thread of their own, from here on (see
/// [`Hasher`]).
const HASH_APART: u64 = 256 << 20;
/// Bytes handed to the hashing thread at a time; a few buffers of this size go round.
const HASH_CHUNK: usize = 1 << 20;

/// The SHA-256 of a file's bytes, computed as they are written so the manifest costs no second
/// read. Beyond [`HASH_APART`] bytes it runs on a thread of its own: on the writing thread it
/// was a serial cost of every large file (perf, 10M ordered events to CSV: 18% of the
/// process's samples, about a second for the 2 GB), where copying the bytes to the hasher
/// costs a tenth of that. For text files only, and past 256 MB: a Parquet file (whose
/// encoding, not its writing, is the cost) gained nothing and its run peaked 10-20 MB higher
/// (16 MB threshold, 10M events: 215 -> 231 MB; 256 MB, 100M events: 195 -> 214 MB).
enum Hasher {
    Here(Sha256),
    Apart {
        pending: Vec<u8>,
        chunks: std::sync::mpsc::SyncSender<Vec<u8>>,
        /// Buffers the thread is done with, to fill again.
        spare: std::sync::mpsc::Receiver<Vec<u8>>,
        thread: std::thread::JoinHandle<Sha256>,
    },
}

impl Hasher {
    /// Adds `bytes`, written after `before` others.
    fn update(&mut self, bytes: &[u8], before: u64, apart_from: u64) {
        match self {
            Hasher::Here(hash) if before.saturating_add(bytes.len() as u64) < apart_from => {
                hash.update(bytes)
            }
            Hasher::Here(hash) => {
                let (chunks, inbox) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
                let (done, spare) = std::sync::mpsc::sync_channel::<Vec<u8>>(3);
                let mut state = hash.clone();
                let started = std::thread::Builder::new()
                    .name("export-events-hash".into())
                    .spawn(move || {
                        for mut chunk in inbox {
                            state.update(&chunk);
                            chunk.clear();
                            let _ = done.try_send(chunk);
                        }
                        state
                    });
                // Without a thread, the hash goes on here.
                let Ok(thread) = started else {
                    return hash.update(bytes);
                };
                *self = Hasher::Apart {
                    pending: Vec::with_capacity(HASH_CHUNK),
                    chunks,
                    spare,
                    thread,
                };
                self.update(bytes, before, apart_from);
            }
            Hasher::Apart {
                pending,
                chunks,
                spare,
                ..
            } => {
                // A large write (a Parquet column chunk) goes over in chunks too, so that at
                // most a few chunks are held, however far the hasher is behind.
                let mut rest = bytes;
                while !rest.is_empty() {
                    let room = HASH_CHUNK - pending.len();
                    let (now, later) = rest.split_at(room.min(rest.len()));
                    pending.extend_from_slice(now);
                    rest = later;
                    if pending.len() == HASH_CHUNK {
                        let next = spare
                            .try_recv()
                            .unwrap_or_else(|_| Vec::with_capacity(HASH_CHUNK));
                        let full = std::mem::replace(pending, next);
                        // The thread only ends when this side is dropped.
                        let _ = chunks.send(full);
                    }
                }
            }
        }
    }

    /// The state after every byte: the thread, if any, is done with.
    fn finish(&mut self) -> Sha256 {
        let state = match std::mem::replace(self, Hasher::Here(Sha256::new())) {
            Hasher::Here(hash) => hash,
            Hasher::Apart {
                pending,
                chunks,
                thread,
                ..
            } => {
                let _ = chunks.send(pending);
                drop(chunks);
                thread.join().expect("hashing cannot panic")
            }
        };
        *self = Hasher::Here(state.clone());
        state
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `e`, saying which file could not be written when the disk is full.
pub(super) fn io_error(e: io::Error, target: &Path) -> io::Error {
    full_disk_writing(e, &target.display().to_string())
}

/// `e`, saying what was being written (`what`) when the disk is full: the message the one-line
/// full-disk error (`error::one_line`) shows.
pub fn full_disk_writing(e: io::Error, what: &str) -> io::Error {
    if e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::ENOSPC) {
        return io::Error::new(
            io::ErrorKind::StorageFull,
            format!("no space left on device writing {what}"),
        );
    }
    e
}

/// Temporary files are `.{name}.XXXXXX.tmp` beside the target `name` (`XXXXXX` random).
pub(super) const TEMP_SUFFIX: &str = ".tmp";
pub(super) const TEMP_RANDOM: usize = 6;

/// Whether `file` is a temporary file of `target` (and not of a target whose name merely
/// starts the same way, as `x.csv` starts `x.csv.gz`).
pub(super) fn is_temporary_of(file: &str, target: &Path) -> bool {
    let name = file_name(target);
    file.strip_prefix('.')
        .and_then(temporary_stem)
        .is_some_and(|stem| stem == name || stem.strip_suffix(".previous") == Some(&name))
}

/// `NAME` of a temporary's name without its leading dot, `NAME.XXXXXX.tmp` (for a file kept
/// until a commit succeeds, `NAME` ends with `.previous`): the one reader of that format.
fn temporary_stem(hidden: &str) -> Option<&str> {
    let (stem, random) = hidden.strip_suffix(TEMP_SUFFIX)?.rsplit_once('.')?;
    let valid = random.len() == TEMP_RANDOM && random.bytes().all(|b| b.is_ascii_alphanumeric());
    valid.then_some(stem)
}

/// The target a hidden file beside it belongs to, from its name without the leading dot: a
/// temporary (`NAME.XXXXXX.tmp`, `NAME.previous.XXXXXX.tmp`), a commit journal
/// (`NAME.commit`) or a lock (`NAME.lock`).
pub fn target_of_hidden(hidden: &str) -> Option<&str> {
    if let Some(name) = hidden
        .strip_suffix(".commit")
        .or_else(|| hidden.strip_suffix(".lock"))
    {
        return Some(name);
    }
    temporary_stem(hidden).map(|stem| stem.strip_suffix(".previous").unwrap_or(stem))
}

pub(super) fn temp_prefix(target: &Path) -> String {
    format!(".{}.", file_name(target))
}

pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_file_is_hashed_apart_to_the_same_digest() {
        // Past the threshold in uneven pieces (one larger than a chunk), with a digest asked
        // for midway and at the end, against the same bytes hashed in one place.
        let total = HASH_APART + 3 * HASH_CHUNK as u64 + 12_345;
        let (mut hasher, mut reference) = (Hasher::Here(Sha256::new()), Sha256::new());
        let mut written = 0u64;
        let mut asked_midway = false;
        while written < total {
            let size = if written.is_multiple_of(3) {
                3 * HASH_CHUNK + 7
            } else {
                700_001
            };
            let size = size.min((total - written) as usize);
            let piece: Vec<u8> = (0..size)
                .map(|i| ((written as usize + i) % 251) as u8)
                .collect();
            hasher.update(&piece, written, HASH_APART);
            reference.update(&piece);
            written += size as u64;
            if written > HASH_APART && !asked_midway {
                asked_midway = true;
                assert_eq!(hasher.finish().finalize(), reference.clone().finalize());
            }
        }
        assert!(asked_midway);
        assert_eq!(hasher.finish().finalize(), reference.finalize());
    }

    #[test]
    fn hidden_files_name_their_target() {
        assert_eq!(target_of_hidden("x.csv.abc123.tmp"), Some("x.csv"));
        assert_eq!(target_of_hidden("x.csv.previous.abc123.tmp"), Some("x.csv"));
        assert_eq!(
            target_of_hidden("x.csv.manifest.json.Ab9xYz.tmp"),
            Some("x.csv.manifest.json")
        );
        assert_eq!(target_of_hidden("x.csv.commit"), Some("x.csv"));
        assert_eq!(target_of_hidden("x.csv.lock"), Some("x.csv"));
        assert_eq!(target_of_hidden("x.csv.toolong7.tmp"), None);
        assert_eq!(target_of_hidden("export-events-dataset"), None);
        assert!(is_temporary_of(".x.csv.abc123.tmp", Path::new("/o/x.csv")));
        assert!(!is_temporary_of(
            ".x.csv.gz.abc123.tmp",
            Path::new("/o/x.csv")
        ));
    }
}
