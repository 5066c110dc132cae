//! File outputs, resolved: which files (or dataset folders) an export writes, in which store,
//! how they are encoded and named from run to run. What the store can check without a server
//! (a folder that must exist, a dataset folder that is not ours) is checked here.

use std::path::Path;

use crate::error::UsageError;
use crate::retention::Keep;
use crate::sink::compress::TextCompression;
use crate::sink::format::{Compression, Encoding, Format};
use crate::sink::registry::Formats;
use crate::store::{url, Feature, Given, Kind, Location, Target, DEFAULT_MODE};
use crate::template::{self, TIME};

/// What the command line says about files.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `--output`, as given (a template, for runs named by their time).
    pub output: Option<&'a Path>,
    pub formats: &'a Formats,
    pub compression: Option<Compression>,
    pub mode: Option<u32>,
    /// A partitioned dataset instead of files.
    pub dataset: bool,
}

/// The files (or dataset folders) of a run: `output` (or `default_stem` with the first format's
/// extension) and, for further formats, files beside it; all with the permissions of `--mode`.
pub fn targets(
    request: &Request,
    output: Option<&str>,
    default_stem: &str,
    encoding: &Encoding,
    cwd: &Path,
) -> Result<Vec<(Target, &'static Format)>, UsageError> {
    let (first, rest) = request
        .formats
        .0
        .split_first()
        .expect("at least one format");
    let own = first.file_extension(encoding);
    let default = format!("{default_stem}.{own}");
    let kind = match request.dataset {
        true => Kind::Dataset,
        false => Kind::File,
    };
    let given = Given {
        flag: "--output",
        text: output.map(str::to_owned),
        default_name: Path::new(&default)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let at = url::locate(output.unwrap_or(&default), cwd)?;
    at.store().check(at.key(), kind, &given)?;
    let main = Target {
        at,
        mode: request.mode.unwrap_or(DEFAULT_MODE),
        create_folder: output.is_none(),
        named_later: false,
    };
    let mut targets = vec![(main.clone(), *first)];
    for format in rest {
        let sibling = main.sibling(&own, &format.file_extension(encoding))?;
        let besides = Given {
            text: None,
            ..given.clone()
        };
        sibling.at.store().check(sibling.at.key(), kind, &besides)?;
        targets.push((sibling, *format));
    }
    Ok(targets)
}

/// How files are encoded: `--compression` for every format (gzip and zstd compress whole CSV
/// files, snappy is Parquet's only); without it, Parquet's zstd and a CSV compressed only if
/// `output` ends with `.gz` or `.zst`.
pub fn encoding(request: &Request, output: Option<&Path>) -> Result<Encoding, UsageError> {
    let text_formats = request.formats.0.iter().any(|f| f.text);
    let Some(compression) = request.compression else {
        let name = output
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(Encoding {
            compression: Compression::Zstd,
            text: TextCompression::of_name(&name),
        });
    };
    let text =
        match compression {
            Compression::Gzip => TextCompression::Gzip,
            Compression::Zstd => TextCompression::Zstd,
            Compression::None => TextCompression::None,
            Compression::Snappy if text_formats => return Err(UsageError(
                "--compression snappy is Parquet's only: for CSV use gzip or zstd (or --format \
                 parquet)"
                    .into(),
            )),
            Compression::Snappy => TextCompression::None,
        };
    Ok(Encoding { compression, text })
}

/// The template an output is, in the first target's folder (`{time}` still in its name), if
/// `output` has `{time}`.
pub fn template(output: Option<&str>, first: &Target) -> Option<Location> {
    let output = output.filter(|o| template::is_template(o))?;
    let name = output.rsplit('/').next().unwrap_or(output);
    Some(first.at.with_name(name))
}

/// What `--keep`/`--keep-for` keep; they need a template, or there is nothing to tell runs
/// apart, and a store that can find and delete earlier runs.
pub fn keep(keep: Keep, output: Option<&str>, first: &Target) -> Result<Keep, UsageError> {
    if !keep.any() {
        return Ok(keep);
    }
    if !first.at.store().supports(Feature::Retention) {
        return Err(UsageError(format!(
            "--keep and --keep-for work on local files: for {}, expire old runs with a lifecycle \
             rule on the bucket",
            first.at.shown()
        )));
    }
    if !output.is_some_and(template::is_template) {
        return Err(UsageError(format!(
            "--keep and --keep-for delete earlier runs' outputs: give --output a template with \
             {TIME}, such as exports/events_{TIME}.csv"
        )));
    }
    Ok(keep)
}
