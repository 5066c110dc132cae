//! Each place a connection can come from reaches the right database; a failed connection says
//! so in one line without the password.

mod common;

use common::*;

fn rows_of(run: Run) -> String {
    run.success()
        .stdout
        .split(" events")
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn database_url_flag_as_url_and_as_keyvalue_string() {
    let db = TestDb::sample("settings_flag");
    let dir = scratch();
    let url = db.url();
    assert_eq!(
        rows_of(Run::of(
            export_events(dir.path()).args(["--database-url", &url])
        )),
        "Exported 15"
    );
    let (host, port) = server_address();
    let kv = format!("host={host} port={port} user=postgres dbname='{}'", db.name);
    assert_eq!(
        rows_of(Run::of(
            export_events(dir.path()).args(["--database-url", &kv])
        )),
        "Exported 15"
    );
}

#[test]
fn database_url_variable_and_its_precedence_over_db_settings() {
    let db = TestDb::sample("settings_env");
    let dir = scratch();
    let run = Run::of(
        export_events(dir.path())
            .env("DATABASE_URL", db.url())
            .env("DB_NAME", "no_such_db"),
    );
    assert_eq!(rows_of(run), "Exported 15");
}

#[test]
fn iot_hub_db_settings_from_environment_and_from_dotenv() {
    let db = TestDb::sample("settings_db");
    let dir = scratch();
    let (host, port) = server_address();
    let run = Run::of(
        export_events(dir.path())
            .env("DB_NAME", &db.name)
            .env("DB_USER", "postgres")
            .env("DB_HOST", &host)
            .env("DB_PORT", &port)
            .env("DB_PASSWORD", "unused-with-trust"),
    );
    assert_eq!(rows_of(run), "Exported 15");
    std::fs::write(
        dir.path().join(".env"),
        format!("# as the IoT Hub's docker-compose\nDB_NAME={}\nDB_USER=postgres\nDB_HOST={host}\nDB_PORT={port}\n", db.name),
    )
    .unwrap();
    assert_eq!(
        rows_of(Run::of(&mut export_events(dir.path()))),
        "Exported 15"
    );
}

#[test]
fn libpq_pg_variables_come_last() {
    let db = TestDb::sample("settings_pg");
    let dir = scratch();
    let (host, port) = server_address();
    let run = Run::of(
        export_events(dir.path())
            .env("PGHOST", &host)
            .env("PGPORT", &port)
            .env("PGUSER", "postgres")
            .env("PGDATABASE", &db.name),
    );
    assert_eq!(rows_of(run), "Exported 15");
}

#[test]
fn nothing_configured_is_an_error_naming_every_option() {
    let dir = scratch();
    let run =
        Run::of(&mut export_events(dir.path())).failure(2, "no PostgreSQL connection configured");
    for word in ["--database-url", "DATABASE_URL", "DB_NAME", "PG*", "--demo"] {
        assert!(run.stderr.contains(word), "{word}\n{run}");
    }
    assert!(
        files_in(dir.path()).is_empty(),
        "never falls back to the demo"
    );
}

#[test]
fn a_failed_connection_never_shows_the_password() {
    let dir = scratch();
    let (host, port) = server_address();
    for url in [
        format!("postgres://nobody_here:Sup3r-Secret-pw@{host}:{port}/postgres"),
        format!(
            "host={host} port={port} user=nobody_here password='Sup3r-Secret-pw' dbname=postgres"
        ),
        "postgres://nobody_here:Sup3r-Secret-pw@127.0.0.1:1/postgres".to_owned(),
    ] {
        let run = Run::of(export_events(dir.path()).args(["--database-url", &url]));
        let run = run.failure(
            1,
            "could not connect to PostgreSQL (settings from --database-url)",
        );
        assert!(
            !run.stderr.contains("Sup3r-Secret-pw"),
            "password leaked\n{run}"
        );
    }
    let run = Run::of(
        export_events(dir.path())
            .env("DB_NAME", "postgres")
            .env("DB_USER", "nobody_here")
            .env("DB_HOST", &host)
            .env("DB_PORT", &port)
            .env("DB_PASSWORD", "Sup3r-Secret-pw"),
    );
    let run = run.failure(1, "settings from DB_* settings");
    assert!(
        !run.stderr.contains("Sup3r-Secret-pw"),
        "password leaked\n{run}"
    );
}
