//! `export-events generate --rows N (--database-url URL | --duckdb FILE)`: fixture databases of
//! any size, for trying the tool, load tests and benchmarks (the data itself is `fixtures`').

use anyhow::{bail, Result};

use crate::cli::GenerateArgs;
use crate::context::Context;
use crate::error::UsageError;
use crate::fixtures::{self, Plan};
use crate::progress::{self, Progress, Total};
use crate::source::engine::{Access, Engine};

/// Generates, then prints what and where.
pub fn run(ctx: &Context, args: &GenerateArgs) -> Result<()> {
    let plan = Plan {
        rows: args.rows,
        seed: args.seed,
        rules: args.rules,
        shape: args.shape,
    };
    let started = std::time::Instant::now();
    let explicit = ctx.explicit_postgres();
    if explicit.is_some() == args.duckdb.is_some() {
        bail!(UsageError(
            "generate creates tables, so it writes only where it is told: give exactly one of \
             --database-url URL and --duckdb FILE"
                .into()
        ));
    }
    let progress = if progress::wanted(ctx.quiet) {
        Progress::start(Total::Exact(plan.rows))
    } else {
        Progress::hidden()
    };
    let described = match (&args.duckdb, explicit) {
        (Some(path), _) => {
            fixtures::into_duckdb(path, plan, args.replace, &progress)?;
            format!("DuckDB file {}", path.display())
        }
        (None, Some(pg)) => {
            let pg = pg?;
            let engine = Engine::postgres(&pg, Access::ReadWrite)?;
            fixtures::into_postgres(&engine, plan, args.replace, &progress)?;
            format!("PostgreSQL (settings from {})", pg.origin)
        }
        (None, None) => unreachable!("checked above"),
    };
    progress.finish(plan.rows);
    println!(
        "Generated {} events and {} rules (seed {}, shape {}) in {described} in {:.1} s",
        plan.rows,
        plan.rules,
        plan.seed,
        format!("{:?}", plan.shape).to_lowercase(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
