//! A file being written into a store: the bytes go to the store's [`Body`] (a hidden temporary
//! file beside the target, or a multipart upload), hashed (SHA-256) and counted as they pass, so
//! the manifest costs no second read. Dropping it unfinished discards it; the commit protocol
//! ([`super::commit`]) puts it in place. Nothing here knows which store it writes to.

use std::io::{self, Write};

use anyhow::{Context as _, Result};
use sha2::Digest as _;

use super::hash::{hex, Hasher, HASH_APART};

/// Where a store keeps a file's bytes until the commit.
pub trait Body: Write + Send {
    /// Makes every byte written durable (a local file) or uploaded (an object).
    fn sync(&mut self) -> io::Result<()>;
    /// The hidden name of the staged bytes beside the target, when the store stages them
    /// under one (what a commit journal records); `None` where nothing can be renamed.
    fn staged_name(&self) -> Option<String>;
    /// Makes the file appear, whole, at `key` (its target, or a name known only at the end).
    fn put_in_place(self: Box<Self>, key: &str) -> io::Result<()>;
}

/// A file being written: its body, its target and what it holds so far.
pub struct AtomicFile {
    body: Box<dyn Body>,
    /// The key the file appears at when it is put in place.
    target: String,
    /// How the target is shown in messages.
    shown: String,
    written: u64,
    hash: std::sync::Mutex<Hasher>,
    /// Past this many bytes the hash moves to a thread of its own (text files, see
    /// [`Self::hash_apart`]).
    hash_apart_from: u64,
    rows: u64,
    range: Option<(i64, i64)>,
}

/// What a finished file holds, for the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Its key in the store (a path, or an object key).
    pub key: String,
    pub bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
    pub rows: u64,
    /// The oldest and newest event timestamps in it (microseconds since the epoch).
    pub range: Option<(i64, i64)>,
}

impl AtomicFile {
    /// A file whose bytes go to `body` until it is put in place at `target` (shown as `shown`).
    pub fn new(body: Box<dyn Body>, target: String, shown: String) -> Self {
        Self {
            body,
            target,
            shown,
            written: 0,
            hash: std::sync::Mutex::new(Hasher::Here(sha2::Sha256::new())),
            hash_apart_from: u64::MAX,
            rows: 0,
            range: None,
        }
    }

    /// The key the file appears at.
    pub fn target(&self) -> &str {
        &self.target
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
    pub fn hash_apart(&mut self) {
        self.hash_apart_from = HASH_APART;
    }

    /// What the file holds, once it is at its target.
    pub fn written(&self) -> Written {
        let mut hash = self.hash.lock().unwrap_or_else(|e| e.into_inner());
        Written {
            key: self.target.clone(),
            bytes: self.written,
            sha256: hex(&hash.finish().finalize()),
            rows: self.rows,
            range: self.range,
        }
    }

    /// Puts the finished file at `key` instead (a name known only at the end).
    pub fn retarget(&mut self, key: String, shown: String) {
        self.target = key;
        self.shown = shown;
    }

    /// Makes the file durable (a local file) or every part uploaded (an object).
    pub fn sync(&mut self) -> Result<()> {
        self.body
            .sync()
            .with_context(|| format!("writing {}", self.shown))
    }

    /// The staged bytes' hidden name, for a commit journal.
    pub fn staged_name(&self) -> Option<String> {
        self.body.staged_name()
    }

    /// Puts the finished file at its target.
    pub fn put_in_place(self) -> io::Result<()> {
        self.body.put_in_place(&self.target)
    }

    /// How the target is shown.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.body.write(buf)?;
        let hash = self.hash.get_mut().unwrap_or_else(|e| e.into_inner());
        hash.update(&buf[..n], self.written, self.hash_apart_from);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.body.flush()
    }
}

/// `e`, saying what was being written (`what`) when the disk is full: the message the one-line
/// full-disk error (`error::one_line`) shows.
pub fn full_disk_writing(e: io::Error, what: &str) -> io::Error {
    if e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::ENOSPC) {
        return io::Error::new(
            io::ErrorKind::StorageFull,
            crate::error::DiskFull(what.to_owned()),
        );
    }
    e
}
