//! `strata batch run` (once) and `strata batch` (on the configured schedule): compact the
//! lake and recompute views.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, bail};
use strata_batch::{BatchLayer, RunReport, ViewOutcome};
use strata_core::clock::SystemClock;
use strata_core::executor::CpuRuntime;

use super::{load_config, parse_time};
use crate::ops::{Ops, finish_ops, shutdown_signal, start_ops};

/// The batch layer: compact raw files and recompute views. Without a subcommand, runs on
/// the schedule of [batch] in the config.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    ops: Ops,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// One run now: compact, then recompute views (all windows, or only --from..--to).
    Run {
        /// Recompute only the windows overlapping event times from this time (RFC 3339 or a
        /// date), e.g. after a backfill of that period.
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// ... to this time (exclusive).
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// Recompute views even when they are up to date.
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(config: &Path, args: Args) -> Result<()> {
    let config = load_config(config)?;
    let cpu = CpuRuntime::new(None)?;
    let batch = BatchLayer::new(config.clone(), cpu)?;
    match args.command {
        Some(Command::Run { from, to, force }) => {
            let range = match (from, to) {
                (Some(f), Some(t)) => {
                    let (f, t) = (parse_time(&f)?, parse_time(&t)?);
                    if t <= f {
                        bail!("--to must be after --from");
                    }
                    Some((f.timestamp_micros(), t.timestamp_micros()))
                }
                _ => None,
            };
            let report = batch.run_once(strata_batch::RunOptions { range, force }).await?;
            print_report(&report);
            Ok(())
        }
        None => {
            let Some(schedule) = strata_batch::schedule(&config) else {
                bail!(
                    "{}: [batch] has no schedule: set batch.interval (e.g. \"5m\") or batch.cron, or use `strata batch run` for one run",
                    config.file.display()
                );
            };
            let stop = shutdown_signal();
            let ops = start_ops(
                args.ops.address(&config),
                Arc::new(|| Ok("{\"status\":\"scheduled\"}".to_string())),
                stop.clone(),
            )
            .await?;
            batch
                .run_scheduled(&schedule, Arc::new(SystemClock), stop, &|r| {
                    if let Ok(report) = r {
                        print_report(report);
                    }
                })
                .await?;
            finish_ops(ops).await;
            Ok(())
        }
    }
}

/// What a batch run did, a line per compaction and per view.
pub fn print_report(report: &RunReport) {
    for c in &report.compactions {
        match c.version {
            Some(v) => println!(
                "compacted raw.{}: {} files into {} ({} rows, {:.1} MB -> {:.1} MB) in {:.3}s, version {v}",
                c.source,
                c.files_in,
                c.files_out,
                c.rows,
                c.bytes_in as f64 / 1e6,
                c.bytes_out as f64 / 1e6,
                c.elapsed.as_secs_f64()
            ),
            None => println!("raw.{}: nothing to compact", c.source),
        }
    }
    for v in &report.views {
        match &v.outcome {
            ViewOutcome::Published { version, commit } => println!(
                "published view {} version {version}: {} state rows from {} events (raw version {}) in {:.3}s",
                v.view,
                commit.rows,
                commit.events,
                commit.raw_version,
                v.elapsed.as_secs_f64()
            ),
            ViewOutcome::UpToDate { version } => println!("view {}: up to date (version {version})", v.view),
            ViewOutcome::NoData => println!("view {}: no data yet", v.view),
        }
    }
}
