//! `--keep N` and `--keep-for 30d`: deleting the outputs of earlier runs of the same output
//! template (`exports/events_{time}.csv`), after a run succeeded.
//!
//! Only what the tool can prove it wrote is deleted: a run is found by its manifest (a file
//! named after the template, holding an export-events manifest), and only the files that
//! manifest lists are removed (then the partition folders they leave empty, the dataset folder,
//! and the manifest). The newest run, the one that just finished, is never deleted. Each
//! deletion is said on stderr.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};

use crate::sink::manifest::Manifest;

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

/// The marker of a template's time.
pub const TIME: &str = "{time}";

/// How `{time}` is written: the run's UTC time, `20261130T020000.000Z` (names sort in run
/// order).
pub const STAMP_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";
/// The length of a stamp.
const STAMP_LEN: usize = 20;

/// The stamp at the start of `text` and what follows it, if `text` starts with one: the run a
/// file belongs to. `daily_{time}.csv` must not take `daily_full_…` for one of its runs.
pub fn split_stamp(text: &str) -> Option<(&str, &str)> {
    let stamp = text.get(..STAMP_LEN)?;
    let rest = &text[STAMP_LEN..];
    chrono::NaiveDateTime::parse_from_str(stamp, STAMP_FORMAT).ok()?;
    Some((stamp, rest))
}

/// Whether `name` holds a `{time}` stamp anywhere: a run file of some template.
pub fn has_stamp(name: &str) -> bool {
    (0..name.len()).any(|at| name.get(at..).and_then(split_stamp).is_some())
}

/// Whether the file `name` is one of a run of the template whose file names start with
/// `prefix` (the text before `{time}`): `prefix`, a stamp, then any name.
pub fn is_run_file(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(split_stamp)
        .is_some_and(|(_, rest)| !rest.contains('/'))
}

/// Deletes the runs of `template` (an absolute path with `{time}`) that `keep` does not keep;
/// `current` is this run's manifest. Returns the outputs deleted.
pub fn apply(
    template: &Path,
    current: &Path,
    keep: &Keep,
    now: DateTime<Utc>,
    quiet: bool,
) -> Result<Vec<PathBuf>> {
    let folder = template.parent().unwrap_or(Path::new("/"));
    let name = template
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((prefix, suffix)) = name.split_once(TIME) else {
        return Ok(Vec::new());
    };
    let suffix = format!("{suffix}.manifest.json");
    let mut runs: Vec<(String, PathBuf)> = std::fs::read_dir(folder)
        .with_context(|| format!("listing {}", folder.display()))?
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            let (stamp, rest) = split_stamp(file.strip_prefix(prefix)?)?;
            (rest == suffix && entry.file_type().is_ok_and(|t| t.is_file()))
                .then(|| (stamp.to_owned(), entry.path()))
        })
        .filter(|(_, path)| path != current)
        .collect();
    // Stamps sort in time order; newest first.
    runs.sort();
    runs.reverse();
    // Only runs whose manifest is one count; anything else that looks like one is left alone.
    let runs = runs
        .into_iter()
        .filter_map(|(_, path)| Manifest::read(&path).ok().map(|found| (path, found)));
    // Every run to delete is checked before the first deletion: a manifest naming anything
    // outside its run stops retention with nothing deleted.
    let mut doomed = Vec::new();
    for (index, (path, found)) in runs.enumerate() {
        // The current run counts as the newest one kept.
        let beyond_count = keep.runs.is_some_and(|n| index + 1 >= n);
        let created =
            DateTime::parse_from_rfc3339(&found.created_at).map(|t| t.with_timezone(&Utc));
        let too_old = match (keep.newer_than, created) {
            (Some(age), Ok(created)) => (now - created).to_std().is_ok_and(|d| d > age),
            _ => false,
        };
        if beyond_count || too_old {
            let files = run_files(&found, &path, prefix)?;
            doomed.push((path, found, files, too_old));
        }
    }
    let mut deleted = Vec::new();
    for (path, found, files, too_old) in doomed {
        let output = output_of(&path);
        remove_run(&files, &path)?;
        if !quiet {
            eprintln!(
                "export-events: removed {} (written {}; --keep{})",
                output.display(),
                found.created_at,
                if too_old { "-for" } else { "" }
            );
        }
        deleted.push(output);
    }
    Ok(deleted)
}

/// The output a manifest describes: its path without `.manifest.json`.
fn output_of(manifest: &Path) -> PathBuf {
    let text = manifest.as_os_str().to_string_lossy();
    PathBuf::from(
        text.strip_suffix(".manifest.json")
            .unwrap_or(&text)
            .to_owned(),
    )
}

/// The files a run's manifest lists, if every one is a file of that run (named after the
/// template, inside the folder, through no symlink); a manifest naming anything else is refused
/// whole and nothing of its run is deleted.
fn run_files(found: &Manifest, manifest_path: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let files = found.file_paths(manifest_path)?;
    let folder = manifest_path.parent().unwrap_or(Path::new("/"));
    for (file, entry) in files.iter().zip(&found.files) {
        let first = entry.path.split('/').next().unwrap_or_default();
        if !is_run_file(first, prefix) {
            anyhow::bail!(crate::error::UsageError(format!(
                "{} lists {}, which is not a file of its run: not deleting that run (remove the \
                 manifest if it is not export-events')",
                manifest_path.display(),
                file.strip_prefix(folder).unwrap_or(file).display()
            )));
        }
    }
    Ok(files)
}

/// Removes `files`, the partition folders that leaves empty, each dataset's marker and folder
/// (every file's first path component below the manifest's folder is its output: a file, or a
/// dataset folder), then the manifest.
fn remove_run(files: &[PathBuf], manifest_path: &Path) -> Result<()> {
    let folder = manifest_path.parent().unwrap_or(Path::new("/"));
    let mut datasets = Vec::new();
    for file in files {
        match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", file.display()));
            }
            _ => {}
        }
        let Some(root) = file
            .strip_prefix(folder)
            .ok()
            .and_then(|r| r.components().next())
            .map(|first| folder.join(first))
            .filter(|root| root != file)
        else {
            continue;
        };
        // Partition folders inside the dataset, once empty.
        let mut parent = file.parent();
        while let Some(dir) = parent.filter(|d| d.starts_with(&root) && *d != root) {
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
            parent = dir.parent();
        }
        if !datasets.contains(&root) {
            datasets.push(root);
        }
    }
    for root in datasets {
        let _ = std::fs::remove_file(root.join(crate::sink::DATASET_MARKER));
        let _ = std::fs::remove_dir(&root);
    }
    let removed = std::fs::remove_file(manifest_path);
    removed.with_context(|| format!("removing {}", manifest_path.display()))?;
    Ok(())
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
    fn runs_of_a_template_have_its_prefix_then_a_stamp() {
        assert_eq!(
            split_stamp("20261130T020000.123Z.csv"),
            Some(("20261130T020000.123Z", ".csv"))
        );
        assert!(is_run_file(
            "daily_20261130T020000.123Z.csv.manifest.json",
            "daily_"
        ));
        assert!(!is_run_file(
            "daily_full_20261130T020000.123Z.csv",
            "daily_"
        ));
        assert!(
            !is_run_file("daily_20261399T020000.123Z.csv", "daily_"),
            "no 99th day"
        );
        assert!(!is_run_file("daily_x", "daily_"));
        assert!(!is_run_file("daily_2026é", "daily_"));
        assert!(has_stamp("other_20261130T020000.123Z.parquet"));
        assert!(!has_stamp("precious"));
    }

    #[test]
    fn a_manifest_names_its_output() {
        assert_eq!(
            output_of(Path::new("/x/events_1.csv.manifest.json")),
            Path::new("/x/events_1.csv")
        );
    }
}
