//! Output templates: `--output exports/events_{time}.csv` names each run's files after the
//! run's UTC time, its stamp, so that names sort in run order and a run's files can be told
//! from another run's (and from another template's: `daily_{time}` never takes
//! `daily_full_…` for one of its runs).

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

/// `template` with `{time}` filled in with `stamp`; as it is without `{time}`.
pub fn fill(template: &str, stamp: &str) -> String {
    template.replace(TIME, stamp)
}

/// Whether `text` is a template.
pub fn is_template(text: &str) -> bool {
    text.contains(TIME)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
