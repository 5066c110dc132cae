//! Real authentication against the test cluster's role that must log in with a password
//! (scram-sha-256), in every form a password can be given, and TLS with `sslmode=verify-full`:
//! the right secret gets the export, a wrong one gets "password authentication failed" and is
//! never echoed, a server certificate from another CA is refused.

mod common;

use std::process::Command;

use common::*;

/// The password role of the test cluster, and its password.
fn role() -> (String, String) {
    (
        setting("EXPORT_EVENTS_TEST_SCRAM_ROLE"),
        setting("EXPORT_EVENTS_TEST_SCRAM_PASSWORD"),
    )
}

/// `text` with every byte but unreserved ones percent-encoded, for a URL's password.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A libpq `key=value` value, quoted.
fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Every way of giving the role and `password` for database `db`: a name and the command.
fn forms(db: &TestDb, password: &str) -> Vec<(&'static str, Command)> {
    let (role, _) = role();
    let (host, port) = server_address();
    let url = format!(
        "postgres://{role}:{}@{host}:{port}/{}",
        percent_encode(password),
        db.name
    );
    let keyvalue = format!(
        "host={host} port={port} dbname={} user={role} password={}",
        db.name,
        quoted(password)
    );
    let dotenv_db = format!(
        "DB_NAME={}\nDB_USER={role}\nDB_HOST={host}\nDB_PORT={port}\nDB_PASSWORD=\"{}\"\n",
        db.name,
        password.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let mut all = Vec::new();
    let mut form = |name, setup: &dyn Fn(&mut Command, &std::path::Path)| {
        let dir = scratch().keep();
        let mut cmd = export_events(&dir);
        cmd.arg("-q");
        setup(&mut cmd, &dir);
        all.push((name, cmd));
    };
    form("--database-url URL", &|c, _| {
        c.args(["--database-url", &url]);
    });
    form("--database-url key=value", &|c, _| {
        c.args(["--database-url", &keyvalue]);
    });
    form("DATABASE_URL", &|c, _| {
        c.env("DATABASE_URL", &url);
    });
    form("DATABASE_URL in .env", &|_, dir| {
        std::fs::write(dir.join(".env"), format!("DATABASE_URL=\"{url}\"\n")).unwrap();
    });
    form("DB_* variables", &|c, _| {
        c.env("DB_NAME", &db.name)
            .env("DB_USER", &role)
            .env("DB_HOST", &host)
            .env("DB_PORT", &port)
            .env("DB_PASSWORD", password);
    });
    form("DB_* in .env", &|_, dir| {
        std::fs::write(dir.join(".env"), &dotenv_db).unwrap();
    });
    form("PG* variables", &|c, _| {
        c.env("PGHOST", &host)
            .env("PGPORT", &port)
            .env("PGDATABASE", &db.name)
            .env("PGUSER", &role)
            .env("PGPASSWORD", password);
    });
    all
}

#[test]
fn the_password_role_gets_in_with_its_password_in_every_form_and_never_with_another() {
    let db = TestDb::sample("auth_scram");
    let (role, password) = role();
    db.sql(&format!("GRANT SELECT ON events, rules TO {role}"));
    for (name, mut cmd) in forms(&db, &password) {
        let run = Run::of(&mut cmd);
        assert_eq!(run.code, Some(0), "{name}\n{run}");
        let dir = cmd.get_current_dir().unwrap().to_owned();
        assert_eq!(
            std::fs::read(dir.join("exports/events_export.csv")).unwrap(),
            compat_bytes("expected_all.csv"),
            "{name}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
    let wrong = "Wr0ng p@ss:'word";
    for (name, mut cmd) in forms(&db, wrong) {
        let run = Run::of(&mut cmd);
        let dir = cmd.get_current_dir().unwrap().to_owned();
        let run = run.failure(
            1,
            &format!("password authentication failed for user \"{role}\""),
        );
        for secret in [wrong.to_owned(), percent_encode(wrong), quoted(wrong)] {
            assert!(!run.stderr.contains(&secret), "{name}: leaked\n{run}");
        }
        assert!(
            files_in(&dir).iter().all(|f| f == ".env"),
            "{name}: nothing written"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
    db.sql(&format!("REVOKE ALL ON events, rules FROM {role}"));
}

#[test]
fn tls_with_verify_full_accepts_the_servers_ca_and_refuses_another() {
    let db = TestDb::sample("auth_tls");
    let dir = scratch();
    let (_, port) = server_address();
    let conninfo = |ca: &str| {
        format!(
            "host=localhost port={port} dbname={} user=postgres sslmode=verify-full \
             sslrootcert={ca}",
            db.name
        )
    };
    let run = Run::of(export_events(dir.path()).args([
        "-q",
        "--database-url",
        &conninfo(&setting("EXPORT_EVENTS_TEST_CA")),
    ]));
    run.success();
    assert_eq!(
        std::fs::read(dir.path().join("exports/events_export.csv")).unwrap(),
        compat_bytes("expected_all.csv")
    );
    let run = Run::of(export_events(dir.path()).args([
        "-q",
        "--database-url",
        &conninfo(&setting("EXPORT_EVENTS_TEST_WRONG_CA")),
    ]));
    let run = run.failure(1, "certificate verify failed");
    assert!(run.stderr.contains("sslrootcert"), "{run}");
}
