//! PostgreSQL's failures as [`Class`]es, decided where its two clients hand them over.
//!
//! The replication client (`pgwire-replication`) keeps the server's SQLSTATE in its message,
//! as `(SQLSTATE 42710)`: [`class_of_code`] maps the code. DuckDB's postgres extension hands
//! over libpq's message only: duckdb-rs reads `duckdb_result_error` and drops the error type,
//! and libpq's default verbosity leaves the SQLSTATE out. PostgreSQL's messages are fixed per
//! SQLSTATE in its source, so [`SERVER`] lists the messages the tool acts on with their codes,
//! and [`CLIENT`] names libpq's own conditions (which have none). This file is the only place
//! a PostgreSQL message's text is read.

use super::class::Class;

/// The server's messages the tool acts on (every part of each), with the SQLSTATE PostgreSQL
/// sends with it and what it means here.
const SERVER: &[(&[&str], &str, Class)] = &[
    (
        &["sorry, too many clients already"],
        "53300",
        Class::TooManyConnections,
    ),
    (
        &["too many connections for role"],
        "53300",
        Class::TooManyConnections,
    ),
    (
        &["too many connections for database"],
        "53300",
        Class::TooManyConnections,
    ),
    (
        &["remaining connection slots are reserved"],
        "53300",
        Class::TooManyConnections,
    ),
    (&["terminating connection"], "57P01", Class::SessionLost),
    (
        &["the database system is shutting down"],
        "57P03",
        Class::SessionLost,
    ),
    (
        &["password authentication failed"],
        "28P01",
        Class::AuthFailed,
    ),
    (&["no pg_hba.conf entry"], "28000", Class::AuthFailed),
    (
        &["logical decoding requires wal_level"],
        "55000",
        Class::Prerequisite,
    ),
    (
        &["must be superuser or replication role"],
        "42501",
        Class::NotAllowed,
    ),
    (
        &["permission denied to start WAL sender"],
        "42501",
        Class::NotAllowed,
    ),
    (
        &["replication slot", "is active for PID"],
        "55006",
        Class::InUse,
    ),
    (
        &["can no longer get changes from replication slot"],
        "55000",
        Class::SlotLost,
    ),
    (
        &["replication slot", "does not exist"],
        "42704",
        Class::MissingSlot,
    ),
    (
        &["replication slot", "already exists"],
        "42710",
        Class::AlreadyExists,
    ),
];

/// libpq's conditions that come with no SQLSTATE: the client noticed them itself.
const CLIENT: &[(&str, Class)] = &[
    ("server closed the connection", Class::SessionLost),
    ("connection to server was lost", Class::SessionLost),
    ("no connection to the server", Class::SessionLost),
    ("could not receive data from server", Class::SessionLost),
    ("unexpected eof", Class::SessionLost),
    ("EOF detected", Class::SessionLost),
    (
        "connection has been closed unexpectedly",
        Class::SessionLost,
    ),
    ("no password supplied", Class::AuthFailed),
    ("certificate", Class::Tls),
    ("SSL", Class::Tls),
];

/// The class of a SQLSTATE the tool acts on.
pub fn class_of_code(code: &str) -> Option<Class> {
    Some(match code {
        "53300" => Class::TooManyConnections,
        "57P01" | "57P02" | "57P03" => Class::SessionLost,
        "28P01" | "28000" => Class::AuthFailed,
        "55000" => Class::Prerequisite,
        "42501" => Class::NotAllowed,
        "55006" => Class::InUse,
        "42710" => Class::AlreadyExists,
        "42704" => Class::MissingSlot,
        _ => return None,
    })
}

/// The class of a failure DuckDB's postgres extension (libpq) reported as `text`.
pub fn class_of_text(text: &str) -> Option<Class> {
    SERVER
        .iter()
        .find(|(parts, ..)| parts.iter().all(|part| text.contains(part)))
        .map(|(.., class)| *class)
        .or_else(|| {
            CLIENT
                .iter()
                .find(|(condition, _)| text.contains(condition))
                .map(|(_, class)| *class)
        })
}

/// The SQLSTATE the replication client put in `text` (`… (SQLSTATE 42710)`).
pub fn code_in(text: &str) -> Option<&str> {
    let (_, rest) = text.rsplit_once("(SQLSTATE ")?;
    let code = rest.get(..5)?;
    code.bytes()
        .all(|b| b.is_ascii_alphanumeric())
        .then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_text_is_classified_by_the_server_message_first() {
        for (text, class) in [
            (
                "IO Error: FATAL: terminating connection due to administrator command",
                Class::SessionLost,
            ),
            (
                "Unable to read binary COPY data from Postgres: SSL error: unexpected eof",
                Class::SessionLost,
            ),
            (
                "FATAL: password authentication failed for user \"hub\"",
                Class::AuthFailed,
            ),
            (
                "FATAL:  sorry, too many clients already",
                Class::TooManyConnections,
            ),
            ("certificate verify failed", Class::Tls),
            (
                "ERROR: logical decoding requires wal_level >= logical",
                Class::Prerequisite,
            ),
        ] {
            assert_eq!(class_of_text(text), Some(class), "{text}");
        }
        assert_eq!(class_of_text("Conversion Error: x"), None);
    }

    #[test]
    fn the_replication_client_carries_the_code() {
        let text = "server error: replication slot \"s\" already exists (SQLSTATE 42710)";
        assert_eq!(code_in(text), Some("42710"));
        assert_eq!(class_of_code("42710"), Some(Class::AlreadyExists));
        assert_eq!(code_in("(SQLSTATE 4"), None);
        assert_eq!(code_in("no code"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_classified_without_panic(text in "\\PC{0,60}") {
            let _ = class_of_text(&text);
            let _ = code_in(&text);
        }
    }
}
