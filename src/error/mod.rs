//! How failures leave the program: one line on stderr and an exit status a script can branch on.
//!
//! Errors travel as `anyhow::Error` with context added at each edge; the types callers branch
//! on are [`UsageError`] (bad flags or input: exit 2), [`Interrupted`] (SIGINT/SIGTERM: exit
//! 130) and the classified runtime failures of [`class`] (decided once where a client hands
//! them over, [`postgres`] for PostgreSQL's). Everything else is a runtime failure (exit 1). A
//! full disk is said first, whatever context surrounds it.

pub mod class;
pub mod postgres;

use std::sync::Mutex;

pub use class::{class_of, Class, Failure};

use crate::cancel::Interrupted;

/// The passwords this run knows of ([`keep_secret`]): masked in every line [`one_line`] and
/// [`redact`] give, whichever library's message carries them (DuckDB's attach of a parallel
/// reader, libpq, the replication client).
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// What a secret is replaced with.
pub const MASK: &str = "********";

/// Remembers `secret` so that no message of this process shows it.
pub fn keep_secret(secret: &str) {
    if secret.is_empty() {
        return;
    }
    let mut secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == secret) {
        secrets.push(secret.to_owned());
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `text` with every kept secret masked, and the password of any `scheme://user:password@host`
/// in it, known or not.
pub fn redact(text: &str) -> String {
    let secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    let known = secrets.iter().fold(text.to_owned(), |acc, secret| {
        acc.replace(secret.as_str(), MASK)
    });
    mask_url_passwords(&known)
}

/// A URL the user gave, as lines show it: whatever stands before its host's `@` (a user and
/// password, or a token alone) masked.
pub fn masked_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let scheme = match scheme {
        "" => String::new(),
        scheme => format!("{scheme}://"),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}{MASK}{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// Masks the password part of every `://user:password@` in `text`.
fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', quote or white space; its userinfo at its last '@'.
        let end = tail
            .find(|c: char| c == '/' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@').and_then(|a| {
            let user = &authority[..a];
            user.find(':').map(|colon| (colon, a))
        }) {
            Some((colon, a)) => {
                out.push_str(&authority[..=colon]);
                out.push_str(MASK);
                out.push_str(&authority[a..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A full disk, and what was being written: the payload of an `io::Error` of kind
/// `StorageFull` that knows its file.
#[derive(Debug, thiserror::Error)]
#[error("no space left on device writing {0}")]
pub struct DiskFull(pub String);

/// Bad usage or input: the user can fix it by changing the command line or its settings.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Exit status for a run that failed: 2 for bad usage or input, 130 when interrupted, 1 for
/// everything else.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|cause| cause.is::<UsageError>()) {
        2
    } else if err.downcast_ref::<Interrupted>().is_some()
        || err.chain().any(|cause| cause.is::<Interrupted>())
    {
        130
    } else {
        err.chain()
            .find_map(|cause| cause.downcast_ref::<Failure>())
            .map_or(1, Failure::exit_code)
    }
}

/// "no space left on device writing /abs/path", when that is what happened.
fn disk_full(err: &anyhow::Error) -> Option<String> {
    let io = err
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .find(|e| e.kind() == std::io::ErrorKind::StorageFull)?;
    let what = io
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<DiskFull>())
        .map_or_else(|| "no space left on device".to_owned(), ToString::to_string);
    Some(format!(
        "{what}: free some space or write elsewhere (--output); nothing was changed"
    ))
}

/// The whole cause chain on one line (`context: cause: root cause`), with line breaks inside
/// messages (DuckDB and libpq write several lines) folded to spaces.
pub fn one_line(err: &anyhow::Error) -> String {
    if let Some(full) = disk_full(err) {
        return redact(&full);
    }
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !text.is_empty() && !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
    }
    redact(&parts.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn usage_errors_exit_2_anywhere_in_the_chain() {
        let err = anyhow::Error::new(UsageError("bad".into())).context("reading flags");
        assert_eq!(exit_code(&err), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("connection refused")), 1);
    }

    #[test]
    fn chain_is_folded_onto_one_line_without_repeats() {
        let err: anyhow::Result<()> = Err(anyhow::anyhow!("IO Error:\n  connection\trefused"));
        let err = err.context("attaching PostgreSQL").unwrap_err();
        assert_eq!(
            one_line(&err),
            "attaching PostgreSQL: IO Error: connection refused"
        );
        let repeated = anyhow::anyhow!("disk full").context("disk full");
        assert_eq!(one_line(&repeated), "disk full");
    }

    #[test]
    fn passwords_never_reach_a_line() {
        keep_secret("hunter2 with spaces");
        let err = anyhow::anyhow!(
            "Unable to connect to Postgres at \"postgres://hub:p%40ss@db:5432/x\": password \
             hunter2 with spaces"
        );
        let line = one_line(&err.context("attaching reader 2"));
        assert!(
            !line.contains("p%40ss") && !line.contains("hunter2"),
            "{line}"
        );
        assert!(line.contains("postgres://hub:********@db:5432/x"), "{line}");
        assert_eq!(
            redact("s3://bucket/key and https://h/x"),
            "s3://bucket/key and https://h/x"
        );
        assert_eq!(redact("postgres://a:b:c@@h"), "postgres://a:********@h");
        assert_eq!(masked_url("nats://T0KEN@h:1"), "nats://********@h:1");
        assert_eq!(masked_url("kafka://u:p@h/x@y"), "kafka://********@h/x@y");
        assert_eq!(masked_url("nats://h:1"), "nats://h:1");
    }

    proptest::proptest! {
        #[test]
        fn redaction_never_panics(text in "\\PC{0,60}") {
            let _ = redact(&text);
        }
    }

    #[test]
    fn a_full_disk_is_said_first_with_the_file() {
        let io = std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            DiskFull("/x/out.csv".into()),
        );
        let err = anyhow::Error::new(io).context("writing /x/out.csv");
        assert_eq!(
            one_line(&err),
            "no space left on device writing /x/out.csv: free some space or write elsewhere \
             (--output); nothing was changed"
        );
        assert_eq!(exit_code(&err), 1);
        assert_eq!(exit_code(&anyhow::Error::new(Interrupted)), 130);
        let bare = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(one_line(&bare).starts_with("no space left on device: free some space"));
    }
}
