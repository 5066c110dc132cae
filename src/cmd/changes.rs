//! `export-events changes --slot NAME ...`: the feed's flags become its plan (`feed::plan`),
//! which `feed` runs.

use anyhow::Result;

use crate::cli::{ChangesArgs, DEFAULT_MEMORY};
use crate::context::Context;
use crate::feed::plan::{self as feed, Request};
use crate::feed::sink::api::Request as SinkRequest;

/// `export-events changes`.
pub fn run(ctx: &Context, args: &ChangesArgs) -> Result<()> {
    let output = &args.output;
    let request = Request {
        slot: &args.slot,
        create_slot: args.create_slot,
        initial_export: args.initial_export.as_deref(),
        status: args.status,
        drop_slot: args.drop_slot,
        sink: SinkRequest {
            to: args.to.as_deref(),
            output: output.output.as_deref(),
            subject: &args.subject,
            stream: args.stream.as_deref(),
            create_stream: args.create_stream,
            formats: &output.format,
            compression: output.compression,
            mode: output.mode,
            catalog: output.catalog.as_deref(),
            warehouse: output.warehouse.as_deref(),
            cwd: &ctx.cwd,
        },
        via: args.via,
        follow: args.follow,
        flush_interval: args.flush_interval,
        heartbeat: args.heartbeat,
        metrics: args.metrics,
        max_changes: args.max_changes,
        memory: crate::cli::parse_size(DEFAULT_MEMORY).expect("a valid default"),
    };
    crate::feed::run(&feed::resolve(ctx, &request)?)
}
