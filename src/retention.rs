//! `--keep N` and `--keep-for 30d`: deleting the outputs of earlier runs of the same output
//! template (`exports/events_{time}.csv`), after a run succeeded.
//!
//! Only what the tool can prove it wrote is deleted: a run is found by its manifest (a file
//! named after the template, holding an export-events manifest), and only the files that
//! manifest lists are removed (then the partition folders they leave empty, the dataset folder,
//! and the manifest). A manifest deletes only its own run's files (those named with its own
//! stamp), and only if it is this user's. The newest run, the one that just finished, is never
//! deleted, whatever any manifest lists. Each deletion is said on stderr.

use std::time::Duration;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};

use crate::sink::manifest::Manifest;
use crate::store::api::{DATASET_MARKER, MANIFEST_SUFFIX};
use crate::store::Location;
use crate::template::{split_stamp, TIME};

/// What to keep.
#[derive(Debug, Clone, Copy, Default)]
pub struct Keep {
    /// The newest this many runs.
    pub runs: Option<usize>,
    /// Runs younger than this.
    pub newer_than: Option<Duration>,
}

impl Keep {
    pub fn any(&self) -> bool {
        self.runs.is_some() || self.newer_than.is_some()
    }
}

/// Deletes the runs of `template` (a location whose name holds `{time}`) that `keep` does not
/// keep; `current` is this run's manifest. Returns the outputs deleted.
pub fn apply(
    template: &Location,
    current: &Location,
    keep: &Keep,
    now: DateTime<Utc>,
    quiet: bool,
) -> Result<Vec<String>> {
    let folder = template.folder();
    let Some((prefix, suffix)) = template.name().split_once(TIME) else {
        return Ok(Vec::new());
    };
    let suffix = format!("{suffix}{MANIFEST_SUFFIX}");
    let mut runs: Vec<(String, Location)> = folder
        .store()
        .list(folder.key())
        .with_context(|| format!("listing {}", folder.shown()))?
        .into_iter()
        .filter_map(|file| {
            let (stamp, rest) = split_stamp(file.strip_prefix(prefix)?)?;
            (rest == suffix).then(|| (stamp.to_owned(), folder.join(&file)))
        })
        .filter(|(_, manifest)| manifest.key() != current.key())
        .collect();
    // Stamps sort in time order; newest first.
    runs.sort_by(|a, b| b.0.cmp(&a.0));
    // Only runs whose manifest is one, and this user's, count; anything else that looks like
    // one is left alone.
    let runs = runs.into_iter().filter_map(|(stamp, manifest)| {
        if let Err(refused) = manifest.store().owned(manifest.key()) {
            if !quiet {
                eprintln!("export-events: leaving {}: {}", manifest.shown(), refused.0);
            }
            return None;
        }
        let found = Manifest::read(&manifest).ok()?;
        Some((stamp, manifest, found))
    });
    // Every run to delete is checked before the first deletion: a manifest naming anything
    // outside its own run stops retention with nothing deleted.
    let mut doomed = Vec::new();
    for (index, (stamp, manifest, found)) in runs.enumerate() {
        // The current run counts as the newest one kept.
        let beyond_count = keep.runs.is_some_and(|n| index + 1 >= n);
        let created =
            DateTime::parse_from_rfc3339(&found.created_at).map(|t| t.with_timezone(&Utc));
        let too_old = match (keep.newer_than, created) {
            (Some(age), Ok(created)) => (now - created).to_std().is_ok_and(|d| d > age),
            _ => false,
        };
        if beyond_count || too_old {
            let files = run_files(&found, &manifest, prefix, &stamp)?;
            doomed.push((manifest, found, files, too_old));
        }
    }
    let mut deleted = Vec::new();
    for (manifest, found, files, too_old) in doomed {
        let output = output_of(&manifest.shown());
        remove_run(&files, &manifest)?;
        if !quiet {
            eprintln!(
                "export-events: removed {output} (written {}; --keep{})",
                found.created_at,
                if too_old { "-for" } else { "" }
            );
        }
        deleted.push(output);
    }
    Ok(deleted)
}

/// The output a manifest describes: its name without `.manifest.json`.
fn output_of(manifest: &str) -> String {
    manifest
        .strip_suffix(MANIFEST_SUFFIX)
        .unwrap_or(manifest)
        .to_owned()
}

/// The files a run's manifest lists, if every one is a file of that run (named after the
/// template with the manifest's own stamp, inside the folder, through no symlink); a manifest
/// naming anything else is refused whole and nothing of its run is deleted. That also keeps
/// this run's files, whatever another manifest lists: they carry this run's stamp, and the one
/// manifest of the template with that stamp is this run's, never taken for an old one.
fn run_files(
    found: &Manifest,
    manifest: &Location,
    prefix: &str,
    stamp: &str,
) -> Result<Vec<String>> {
    let files = found.file_keys(manifest)?;
    let of_this_run = |path: &str| {
        let first = path.split('/').next().unwrap_or_default();
        first
            .strip_prefix(prefix)
            .and_then(split_stamp)
            .is_some_and(|(own, _)| own == stamp)
    };
    if let Some(path) = found
        .files
        .iter()
        .map(|entry| entry.path.as_str())
        .find(|path| !of_this_run(path))
    {
        anyhow::bail!(crate::error::UsageError(format!(
            "{} lists {path}, which is not a file of its run: not deleting that run (remove the \
             manifest if it is not export-events')",
            manifest.shown(),
        )));
    }
    Ok(files)
}

/// Removes `files`, the partition folders that leaves empty, each dataset's marker and folder
/// (every file's first path component below the manifest's folder is its output: a file, or a
/// dataset folder), then the manifest.
fn remove_run(files: &[String], manifest: &Location) -> Result<()> {
    let store = manifest.store();
    let folder = format!("{}/", manifest.folder_key().trim_end_matches('/'));
    let mut datasets: Vec<String> = Vec::new();
    for file in files {
        store.delete(file)?;
        let Some(relative) = file.strip_prefix(&folder) else {
            continue;
        };
        let Some((first, _)) = relative.split_once('/') else {
            continue;
        };
        let root = format!("{folder}{first}");
        // Partition folders inside the dataset, once empty.
        let mut parent = file.rsplit_once('/').map(|(p, _)| p);
        while let Some(dir) = parent.filter(|d| d.len() > root.len() && d.starts_with(&root)) {
            store.prune(dir);
            parent = dir.rsplit_once('/').map(|(p, _)| p);
        }
        if !datasets.contains(&root) {
            datasets.push(root);
        }
    }
    for root in datasets {
        let _ = store.delete(&format!("{root}/{DATASET_MARKER}"));
        store.prune(&root);
    }
    store
        .delete(manifest.key())
        .with_context(|| format!("removing {}", manifest.shown()))
}

/// The longest age `--keep-for` takes: 1,000 years.
const MAX_AGE_SECONDS: u64 = 1_000 * 366 * 86_400;

/// `30d`, `12h`, `90m`, `2w`: how long to keep runs.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => 0,
    };
    // An age beyond what a clock can subtract (`30500568904944w` once wrapped around to a
    // few days) is refused, not wrapped.
    let seconds = number
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0 && seconds > 0)
        .and_then(|n| n.checked_mul(seconds))
        .filter(|&s| s <= MAX_AGE_SECONDS);
    match seconds {
        Some(seconds) => Ok(Duration::from_secs(seconds)),
        _ => Err(format!(
            "invalid age {text:?}: expected a number and a unit, such as 30d, 12h, 90m or 2w"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_have_a_unit() {
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert!(parse_age("30").is_err());
        assert!(parse_age("0d").is_err());
        assert!(parse_age("d").is_err());
        assert!(parse_age("30500568904944w").is_err(), "wrapped around");
        assert!(parse_age("99999999999999999999s").is_err());
    }

    #[test]
    fn a_manifest_names_its_output() {
        assert_eq!(
            output_of("/x/events_1.csv.manifest.json"),
            "/x/events_1.csv"
        );
    }
}
