//! The registry of output formats: each format module contributes one [`Format`] constant and
//! one line in [`FORMATS`], nothing else. `--format` takes a list (`csv,parquet`; `both` stays an
//! alias for all of them); the first format's file is `--output` (or the default), the others go
//! beside it with the same stem (`plan::files`).

use super::format::Format;
use super::{csv, parquet};

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
}
