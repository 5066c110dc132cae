//! Object storage (S3 and S3-compatible servers such as Garage or MinIO) as a store. A file is
//! a multipart upload completed at commit ([`upload`]): it appears whole or not at all, and
//! replaces the old object whole; a dataset is a prefix of such uploads ([`prefix`]). There is
//! no rename to journal: a group's objects are completed one after another, the manifest last.
//! Locks and upload notes are this machine's ([`notes`]); a run's spools wait in `$TMPDIR`.

mod bucket;
mod notes;
mod prefix;
mod table_io;
mod upload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Result;

use crate::confine::{self, Refused};
use crate::error::UsageError;
use crate::store::api::{Feature, Given, Kind, Options, Prepared, Staged, StagedDir, Store};
use crate::store::file::Body;
use crate::store::lock::{RunLock, Wait};
use crate::store::scratch;
use bucket::Bucket;

/// The scheme of object storage URLs.
const SCHEME: &str = "s3://";

/// A bucket as a store.
#[derive(Debug)]
pub struct S3Store {
    bucket: Arc<Bucket>,
}

/// `s3://bucket/key` as its bucket's store (one per bucket for the whole run: its connections
/// are reused) and the key, when `text` is such a URL; `prefix` allows an empty key and a
/// trailing `/` (a warehouse), else a key names an object.
pub fn parse(text: &str, prefix: bool) -> Option<Result<(Arc<S3Store>, String), UsageError>> {
    let rest = text.strip_prefix(SCHEME)?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let key = key.trim_start_matches('/');
    let trimmed = match prefix {
        true => key.trim_end_matches('/'),
        false => key,
    };
    let parts_ok = trimmed.is_empty()
        || trimmed
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..");
    let valid = bucket_name_ok(bucket)
        && match prefix {
            true => parts_ok,
            false => !key.is_empty() && !key.ends_with('/'),
        };
    if !valid {
        let such = match prefix {
            true => "a bucket and a prefix, such as s3://lake/warehouse",
            false => "a bucket and an object key, such as s3://bucket/exports/events.csv",
        };
        return Some(Err(UsageError(format!("{text}: give {such}"))));
    }
    Some(store(bucket).map(|store| (store, trimmed.to_owned())))
}

/// Whether `name` can be a bucket: letters, digits, `.`, `-` and `_`, beginning and ending with a
/// letter or digit (so never `.` or `..`), no `..` inside. S3's own rules are stricter (3 to 63
/// lowercase characters); S3-compatible servers differ, so the server judges the rest.
fn bucket_name_ok(name: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && edge_ok(name.chars().next())
        && edge_ok(name.chars().last())
        && !name.contains("..")
}

/// The store of bucket `name`, made once.
fn store(name: &str) -> Result<Arc<S3Store>, UsageError> {
    static STORES: OnceLock<Mutex<Vec<Arc<S3Store>>>> = OnceLock::new();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(found) = stores.iter().find(|s| s.bucket.name == name) {
        return Ok(found.clone());
    }
    let store = Arc::new(S3Store {
        bucket: Bucket::open(name)?,
    });
    stores.push(store.clone());
    Ok(store)
}

/// `.name` for a key `folder/name`: where a file whose name is known only at the end uploads,
/// hidden from readers listing the folder until it is copied to its name.
fn hidden(key: &str) -> String {
    match key.rsplit_once('/') {
        Some((folder, name)) => format!("{folder}/.{name}"),
        None => format!(".{key}"),
    }
}

impl Store for S3Store {
    fn url(&self, key: &str) -> String {
        self.bucket.url(key)
    }

    fn check(&self, _key: &str, _kind: Kind, _given: &Given) -> Result<(), UsageError> {
        // A key names no folder that must exist; what is at it is known only by asking.
        Ok(())
    }

    fn check_write(&self, key: &str) -> Result<()> {
        self.bucket.check_write(key)
    }

    fn create_file(&self, key: &str, options: &Options) -> Result<Box<dyn Body>> {
        let staged = match options.named_later {
            true => hidden(key),
            false => key.to_owned(),
        };
        Ok(Box::new(upload::Upload::start(&self.bucket, &staged)?))
    }

    fn create_dir(&self, key: &str, _options: &Options) -> Result<Box<dyn StagedDir>> {
        Ok(Box::new(prefix::ObjectDir::create(&self.bucket, key)?))
    }

    fn prepare_commit(&self, _staged: &[Staged]) -> Result<Box<dyn Prepared>> {
        Ok(Box::new(Completions))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.bucket.get(key)?.map(|b| b.to_vec()))
    }

    fn hash(&self, key: &str) -> Result<Option<(u64, String)>> {
        self.bucket.hash(key)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        self.bucket.exists(key)
    }

    fn list(&self, folder: &str) -> Result<Vec<String>> {
        let start = format!("{}/", folder.trim_end_matches('/'));
        Ok(self
            .bucket
            .list(folder)?
            .into_iter()
            .filter_map(|key| key.strip_prefix(&start).map(str::to_owned))
            .filter(|name| !name.contains('/'))
            .collect())
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.bucket.delete(key)
    }

    fn prune(&self, _folder: &str) {}

    fn remove_all(&self, key: &str) -> Result<bool> {
        let aborted = notes::recover(&self.bucket, &self.url(key))?;
        let mut found = self.bucket.exists(key)?;
        self.bucket.delete(key)?;
        for part in self.bucket.list(key)? {
            self.bucket.delete(&part)?;
            found = true;
        }
        Ok(found || aborted > 0)
    }

    fn confine(&self, folder: &str, name: &str) -> Result<String, Refused> {
        let relative = confine::relative(name)?;
        Ok(match folder {
            "" => relative.display().to_string(),
            folder => format!("{folder}/{}", relative.display()),
        })
    }

    fn owned(&self, _key: &str) -> Result<(), Refused> {
        Ok(())
    }

    fn lock(&self, key: &str, what: &str, wait: Wait) -> Result<RunLock> {
        RunLock::acquire(&scratch::state_file(&self.url(key), "lock"), what, wait)
    }

    fn recover(&self, keys: &[&str]) -> Result<()> {
        notes::sweep_dead(&self.bucket);
        for key in keys {
            notes::recover(&self.bucket, &self.url(key))?;
        }
        Ok(())
    }

    fn recover_runs(&self, _folder: &str, _prefix: &str, _current: &[&str]) -> Result<()> {
        // A killed run of another `{time}` file left uploads only, whose notes name their
        // process: `recover` aborts them once it is gone.
        Ok(())
    }

    fn scratch(&self, key: &str) -> PathBuf {
        scratch::process_spool(key.rsplit('/').next().unwrap_or(key))
    }

    fn private_folder(&self, key: &str, name: &str) -> PathBuf {
        scratch::state_file(&self.url(key), "warehouse").join(name)
    }

    fn supports(&self, feature: Feature) -> bool {
        match feature {
            // Its locks are this machine's only: another machine's run would neither see a
            // state's lock nor the runs retention deletes.
            Feature::Retention | Feature::StateFile => false,
        }
    }

    fn iceberg(&self) -> Arc<dyn iceberg::io::Storage> {
        Arc::new(table_io::BucketStorage::new(self.bucket.clone()))
    }
}

/// A group commit of objects: their uploads complete one by one, and there is nothing to put
/// back (the manifest, removed before and completed last, tells readers a group is whole).
struct Completions;

impl Prepared for Completions {
    fn restore(&self, _done: usize) {}
    fn finish(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_name_a_bucket_and_a_key() {
        let (store, key) = super::parse("s3://lake/iot/x.csv", false).unwrap().unwrap();
        assert_eq!(
            (store.bucket.name.as_str(), key.as_str()),
            ("lake", "iot/x.csv")
        );
        for bad in [
            "s3://",
            "s3://lake",
            "s3://lake/",
            "s3://lake/x/",
            "s3:///x",
        ] {
            assert!(super::parse(bad, false).unwrap().is_err(), "{bad}");
        }
        let (_, key) = super::parse("s3://lake/wh/", true).unwrap().unwrap();
        assert_eq!(key, "wh");
        assert!(super::parse("s3://lake", true).unwrap().is_ok());
        assert!(super::parse("s3://lake/../w", true).unwrap().is_err());
        // A bucket is never a step up, nor a name with a query or a space in it.
        for bad in [
            "s3://..",
            "s3://./w",
            "s3://../w",
            "s3://a..b/w",
            "s3://-a/w",
            "s3://a b/w",
        ] {
            assert!(super::parse(bad, true).unwrap().is_err(), "{bad}");
        }
        assert!(super::parse("s3://my-lake.2026/w", true).unwrap().is_ok());
        assert!(super::parse("/local/x", false).is_none());
        assert_eq!(super::hidden("a/b.csv"), "a/.b.csv");
    }
}
