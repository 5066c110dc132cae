//! One module a command: each turns its parsed flags into a plan and hands it on, then prints
//! what came of it. The export is the default command ([`export`], also `--incremental`); the
//! change feed ([`changes`]), the checks of what was written ([`verify`]) and the fixture
//! generator ([`generate`]). Clap's types stop here.

pub mod changes;
pub mod export;
pub mod generate;
pub mod verify;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::context::Context;

/// Runs the command the user asked for.
pub fn run(cli: &Cli) -> Result<()> {
    let global = &cli.global;
    let ctx = Context::new(global.database_url.clone(), global.quiet, global.wait)?;
    match &cli.command {
        Some(Command::Generate(args)) => generate::run(&ctx, args),
        Some(Command::Changes(args)) => changes::run(&ctx, args),
        Some(Command::Verify(args)) => verify::run(&ctx, args),
        None => {
            let exported = export::run(&ctx, &cli.export)?;
            println!("{}", exported.success_line());
            Ok(())
        }
    }
}
