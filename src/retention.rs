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
            let stamp = file.strip_prefix(prefix)?.strip_suffix(suffix.as_str())?;
            (!stamp.is_empty() && !stamp.contains('/')).then(|| (stamp.to_owned(), entry.path()))
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
    let mut deleted = Vec::new();
    for (index, (path, found)) in runs.enumerate() {
        // The current run counts as the newest one kept.
        let beyond_count = keep.runs.is_some_and(|n| index + 1 >= n);
        let created =
            DateTime::parse_from_rfc3339(&found.created_at).map(|t| t.with_timezone(&Utc));
        let too_old = match (keep.newer_than, created) {
            (Some(age), Ok(created)) => (now - created).to_std().is_ok_and(|d| d > age),
            _ => false,
        };
        if !(beyond_count || too_old) {
            continue;
        }
        let output = output_of(&path);
        remove_run(&found, &path, &output)?;
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

/// Removes the files `found` lists, the folders that leaves empty up to the dataset, then the
/// manifest.
fn remove_run(found: &Manifest, manifest_path: &Path, output: &Path) -> Result<()> {
    for file in found.file_paths(manifest_path) {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", file.display()));
            }
            _ => {}
        }
        // Partition folders inside the dataset, once empty.
        let mut folder = file.parent();
        while let Some(dir) = folder.filter(|d| d.starts_with(output)) {
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
            folder = dir.parent();
        }
    }
    let removed = std::fs::remove_file(manifest_path);
    removed.with_context(|| format!("removing {}", manifest_path.display()))?;
    Ok(())
}

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
    match number.parse::<u64>() {
        Ok(n) if seconds > 0 && n > 0 => Ok(Duration::from_secs(n * seconds)),
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
    }

    #[test]
    fn a_manifest_names_its_output() {
        assert_eq!(
            output_of(Path::new("/x/events_1.csv.manifest.json")),
            Path::new("/x/events_1.csv")
        );
    }
}
