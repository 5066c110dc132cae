//! The `export-events` binary: parse, run, report a failure as one line and an exit status.

use std::process::ExitCode;

use export_events::{cli, error};

fn main() -> ExitCode {
    match export_events::run(cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error::one_line(&err));
            ExitCode::from(error::exit_code(&err))
        }
    }
}
