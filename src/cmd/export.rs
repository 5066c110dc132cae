//! `export-events [--since WHEN] [--output PATH] [--format F] [--incremental] [source]`: the
//! export's flags become its plan (`plan::export`), which the runner runs.

use anyhow::Result;

use crate::cli::ExportArgs;
use crate::context::Context;
use crate::plan::export::{self, Incremental, Request};
use crate::retention::Keep;
use crate::runner::{self, Exported, OwnSnapshot};

/// One export, silent but for the progress bar and notices.
pub fn run(ctx: &Context, args: &ExportArgs) -> Result<Exported> {
    let plan = export::resolve(ctx, &request(args))?;
    runner::run(&plan, &mut OwnSnapshot)
}

/// What the flags ask for.
fn request(args: &ExportArgs) -> Request<'_> {
    let output = &args.output;
    Request {
        since: args.since.as_deref(),
        output: output.output.as_deref(),
        formats: &output.format,
        compression: output.compression,
        mode: output.mode,
        catalog: output.catalog.as_deref(),
        warehouse: output.warehouse.as_deref(),
        duckdb: args.duckdb.as_deref(),
        demo: args.demo,
        jobs: args.jobs,
        read: args.read,
        memory: args.memory,
        partition_by: args.partition_by,
        max_rows_per_file: args.max_rows_per_file,
        keep: Keep {
            runs: args.keep.map(|n| n as usize),
            newer_than: args.keep_for,
        },
        incremental: args.incremental.then_some(Incremental {
            state: args.state.as_deref(),
            write_empty: args.write_empty,
            reset_state: args.reset_state,
        }),
    }
}
