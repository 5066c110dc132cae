//! The registry of output formats: each format module contributes one [`Format`] constant and
//! one line in [`FORMATS`], nothing else. `--format` takes a list (`csv,parquet`; `both` stays an
//! alias for all of them); the first format's file is `--output` (or the default), the others go
//! beside it with the same stem.

use std::path::Path;

use super::format::{Encoding, Format};
use super::{csv, parquet, Target};
use crate::error::UsageError;

/// Every format, in the order `--format both` writes them.
pub const FORMATS: [&Format; 2] = [&csv::FORMAT, &parquet::FORMAT];

/// What `--format` asked for: one or more formats, each once.
#[derive(Debug, Clone)]
pub struct Formats(pub Vec<&'static Format>);

impl Default for Formats {
    fn default() -> Self {
        Self(vec![FORMATS[0]])
    }
}

/// Parses `csv`, `parquet`, `csv,parquet` or `both` (every format).
pub fn parse(text: &str) -> Result<Formats, String> {
    let mut formats: Vec<&'static Format> = Vec::new();
    for name in text.split(',').map(str::trim) {
        let found: Vec<&'static Format> = if name == "both" {
            FORMATS.to_vec()
        } else {
            let format = FORMATS.iter().find(|f| f.name == name).ok_or_else(|| {
                let names: Vec<&str> = FORMATS.iter().map(|f| f.name).collect();
                format!(
                    "unknown format {name:?}: use {}, a comma-separated list of them, or both",
                    names.join(", ")
                )
            })?;
            vec![*format]
        };
        for format in found {
            if !formats.contains(&format) {
                formats.push(format);
            }
        }
    }
    Ok(Formats(formats))
}

/// The files to write, each with its format: the first at `output` or at `default_stem` plus
/// its extension (under `cwd`), the others beside it with their own extension.
pub fn targets(
    output: Option<&Path>,
    formats: &Formats,
    default_stem: &str,
    cwd: &Path,
    encoding: &Encoding,
    dataset: bool,
) -> Result<Vec<(Target, &'static Format)>, UsageError> {
    let (first, rest) = formats.0.split_first().expect("at least one format");
    let own = first.file_extension(encoding);
    let default = format!("{default_stem}.{own}");
    let main = if dataset {
        Target::resolve_dataset(output, &default, cwd)?
    } else {
        Target::resolve(output, &default, cwd)?
    };
    let mut targets = vec![(main.clone(), *first)];
    for format in rest {
        let sibling = main.sibling(&own, &format.file_extension(encoding))?;
        if dataset && sibling.remote.is_none() {
            Target::check_dataset(&sibling.path)?;
        }
        targets.push((sibling, *format));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<&'static str> {
        parse(text).unwrap().0.iter().map(|f| f.name).collect()
    }

    #[test]
    fn lists_aliases_and_repeats() {
        assert_eq!(names("csv"), ["csv"]);
        assert_eq!(names("parquet,csv"), ["parquet", "csv"]);
        assert_eq!(names("both"), ["csv", "parquet"]);
        assert_eq!(names("csv, csv,both"), ["csv", "parquet"]);
        let err = parse("xlsx").unwrap_err();
        assert!(err.contains("use csv, parquet"), "{err}");
    }

    #[test]
    fn later_formats_go_beside_the_first_with_the_same_stem() {
        let cwd = Path::new("/w");
        let plain = Encoding {
            compression: super::super::format::Compression::Zstd,
            text: super::super::compress::TextCompression::None,
        };
        let both = targets(
            None,
            &parse("both").unwrap(),
            "exports/events_export",
            cwd,
            &plain,
            false,
        );
        let paths: Vec<_> = both.unwrap().into_iter().map(|(t, _)| t.path).collect();
        assert_eq!(
            paths,
            [
                Path::new("/w/exports/events_export.csv"),
                Path::new("/w/exports/events_export.parquet")
            ]
        );
        let parquet = targets(
            None,
            &parse("parquet").unwrap(),
            "exports/x",
            cwd,
            &plain,
            false,
        )
        .unwrap();
        assert_eq!(parquet[0].0.path, Path::new("/w/exports/x.parquet"));
    }
}
