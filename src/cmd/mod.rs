//! One module a command, each over the resolved [`Context`]: the export (the default command,
//! [`export`], or [`incremental`] with `--incremental`), the change feed ([`changes`]) and the
//! fixture generator ([`generate`]).

pub mod changes;
pub mod export;
pub mod generate;
pub mod incremental;
pub mod table;
pub mod verify;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::context::Context;

/// Runs the command the user asked for.
pub fn run(cli: &Cli) -> Result<()> {
    let ctx = Context::new(&cli.global)?;
    match &cli.command {
        Some(Command::Generate(args)) => generate::run(&ctx, args),
        Some(Command::Changes(args)) => changes::run(&ctx, args),
        Some(Command::Verify(args)) => verify::run(&ctx, args),
        None => {
            let exported = if cli.export.incremental {
                incremental::run(&ctx, &cli.export)?
            } else {
                export::run(&ctx, &cli.export)?
            };
            println!("{}", exported.success_line());
            Ok(())
        }
    }
}
