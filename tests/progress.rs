//! The progress bar: drawn on a terminal, with a total known before the first row and a summary
//! at the end; absent when stderr is not a terminal or with --quiet.

mod common;

use std::process::Command;

use common::*;

/// Runs the binary under a pseudo-terminal (util-linux `script`); returns what the terminal got.
fn on_a_terminal(dir: &std::path::Path, args: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_export-events");
    let out = Command::new("script")
        .args(["-qefc", &format!("{bin} {args}"), "/dev/null"])
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        // A terminal that says what it is (without TERM, as under `env -i`, the bar is not drawn).
        .env("TERM", "xterm")
        .output()
        .expect("script runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn a_terminal_gets_the_bar_then_a_summary() {
    let db = TestDb::empty("progress_tty");
    let dir = scratch();
    Run::of(export_events(dir.path()).args([
        "generate",
        "--rows",
        "200000",
        "--database-url",
        &db.url(),
    ]))
    .success();
    let screen = on_a_terminal(
        dir.path(),
        &format!("--database-url {} --since 2025-01-01", db.url()),
    );
    assert!(screen.contains("events/s"), "bar drawn\n{screen}");
    // The three sample events before 2025 are left out by --since, and by an exact count.
    assert!(screen.contains("/199,997 events"), "exact total\n{screen}");
    assert!(
        screen.contains("Wrote 199,997 events in"),
        "summary\n{screen}"
    );
    assert!(screen.contains("Exported 199997 events to"), "{screen}");
    let screen = on_a_terminal(dir.path(), &format!("--database-url {}", db.url()));
    assert!(
        screen.contains("/~200,000 events"),
        "estimated total without --since\n{screen}"
    );
    // The sequential plan counts the rows twice: as it reads them, then as it writes them.
    let screen = on_a_terminal(
        dir.path(),
        &format!("--database-url {} --read scan", db.url()),
    );
    assert!(
        screen.contains("reading [") && screen.contains("writing [") && screen.contains("Wrote "),
        "two phases\n{screen}"
    );
    // An incremental first run is a whole export, with its bar; later runs are small: none.
    let incremental = format!("--incremental --database-url {}", db.url());
    let screen = on_a_terminal(dir.path(), &incremental);
    assert!(
        screen.contains("/~200,000 events") && screen.contains("Wrote "),
        "{screen}"
    );
    let screen = on_a_terminal(dir.path(), &incremental);
    assert!(
        !screen.contains("events/s") && !screen.contains("Wrote "),
        "{screen}"
    );
    let screen = on_a_terminal(dir.path(), &format!("--database-url {} --quiet", db.url()));
    assert!(
        !screen.contains("events/s") && !screen.contains("Wrote"),
        "--quiet\n{screen}"
    );
}

#[test]
fn no_bar_when_stderr_is_not_a_terminal() {
    let db = TestDb::sample("progress_pipe");
    let dir = scratch();
    let run = Run::of(export_events(dir.path()).args(["--database-url", &db.url()])).success();
    assert_eq!(run.stderr, "", "nothing on a piped stderr");
}
