//! Where something is: a store and a key in it ([`Location`]); and a target, a location with
//! how its files are written ([`Target`]). Keys are `/`-separated and handled as text, so the
//! same code names a local path and an object key.

use std::sync::Arc;

use anyhow::{Context as _, Result};

use super::api::{Options, Staged, StagedDir, Store, MANIFEST_SUFFIX};
use super::commit::commit_all;
use super::file::AtomicFile;
use crate::error::UsageError;

/// A key in a store.
#[derive(Clone)]
pub struct Location {
    store: Arc<dyn Store>,
    key: String,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl Location {
    pub fn new(store: Arc<dyn Store>, key: String) -> Self {
        Self { store, key }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// How it is shown to users: a path, or a URL.
    pub fn shown(&self) -> String {
        self.store.url(&self.key)
    }

    /// Another key of the same store.
    pub fn with_key(&self, key: String) -> Self {
        Self {
            store: self.store.clone(),
            key,
        }
    }

    /// `relative` below this key.
    pub fn join(&self, relative: &str) -> Self {
        match self.key.as_str() {
            "" => self.with_key(relative.to_owned()),
            key => self.with_key(format!("{}/{relative}", key.trim_end_matches('/'))),
        }
    }

    /// Its last part (a file name).
    pub fn name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or_default()
    }

    /// The key of the folder it is in.
    pub fn folder_key(&self) -> &str {
        match self.key.rsplit_once('/') {
            Some(("", _)) => "/",
            Some((folder, _)) => folder,
            None => "",
        }
    }

    /// The folder it is in.
    pub fn folder(&self) -> Self {
        self.with_key(self.folder_key().to_owned())
    }

    /// `name` in the same folder.
    pub fn with_name(&self, name: &str) -> Self {
        self.folder().join(name)
    }

    /// Its manifest: `<key>.manifest.json`.
    pub fn manifest(&self) -> Self {
        self.with_key(format!("{}{MANIFEST_SUFFIX}", self.key))
    }
}

/// Where an output goes and how its files are written.
#[derive(Debug, Clone)]
pub struct Target {
    pub at: Location,
    /// Permissions of the files written here (folders the tool creates get the same, plus
    /// execute where read is allowed).
    pub mode: u32,
    /// Whether writing may create the folder (a default path), or it must exist.
    pub create_folder: bool,
    /// Whether the file's final name is given only at the end ([`AtomicFile::retarget`]).
    pub named_later: bool,
}

/// Files are owner-only unless `--mode` says otherwise: events can hold personal data.
pub const DEFAULT_MODE: u32 = 0o600;

impl Target {
    /// A target in a folder the tool owns (a manifest, a dataset's part, a record): its folder
    /// is created as needed.
    pub fn owned(at: Location, mode: u32) -> Self {
        Self {
            at,
            mode,
            create_folder: true,
            named_later: false,
        }
    }

    /// Another file at `at`, written as this one (a manifest, a part of a dataset).
    pub fn at(&self, at: Location) -> Self {
        Self::owned(at, self.mode)
    }

    fn options(&self) -> Options {
        Options {
            mode: self.mode,
            create_folder: self.create_folder,
            named_later: self.named_later,
        }
    }

    /// Starts writing the file; nothing at the target changes until it is committed.
    pub fn create_file(&self) -> Result<AtomicFile> {
        let body = self
            .at
            .store()
            .create_file(self.at.key(), &self.options())?;
        Ok(AtomicFile::new(
            body,
            self.at.key().to_owned(),
            self.at.shown(),
        ))
    }

    /// Starts writing a dataset at the target.
    pub fn create_dir(&self) -> Result<Box<dyn StagedDir>> {
        self.at.store().create_dir(self.at.key(), &self.options())
    }

    /// Replaces the small file at the target with `bytes`, whole and durable (a state, a
    /// marker, a record): staged with the target's permissions and put in place over whatever
    /// is there (a symlink planted at the name is replaced, never followed).
    pub fn replace(&self, bytes: &[u8]) -> Result<()> {
        let mut file = self.create_file()?;
        std::io::Write::write_all(&mut file, bytes)
            .with_context(|| format!("writing {}", self.at.shown()))?;
        commit_all(self.at.store(), vec![Staged::File(file)]).map(drop)
    }

    /// The file beside this one with the same stem and extension `ext` (several formats);
    /// `own` is this file's extension as its format names it (`csv.gz`), when it has it.
    pub fn sibling(&self, own: &str, ext: &str) -> Result<Self, UsageError> {
        let name = self.at.name();
        let sibling = match name.strip_suffix(&format!(".{own}")) {
            Some(stem) if !stem.is_empty() => format!("{stem}.{ext}"),
            _ => std::path::Path::new(name)
                .with_extension(ext)
                .to_string_lossy()
                .into_owned(),
        };
        if sibling == name {
            return Err(UsageError(format!(
                "--output {} would be written twice: with several formats it names the first \
                 format's file (the .{ext} file goes beside it)",
                self.at.shown()
            )));
        }
        Ok(Self {
            at: self.at.with_name(&sibling),
            ..self.clone()
        })
    }
}
