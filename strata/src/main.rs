//! `strata`: the one binary. Each subcommand lives in its own file under `cmd/`; the
//! one-process node (`strata run`, `strata demo`) in the library, `node.rs`.
//!
//! ```text
//!  strata import <source> <files…>   backfill history into a source's raw table
//!  strata batch run [--from --to]    compact the lake and recompute views, once
//!  strata batch                      the same, on the configured schedule
//!  strata speed                      consume Kafka: live views, exactly-once archive
//!  strata serve                      Arrow Flight SQL over the lake (and speed layers)
//!  strata run                        speed, batch schedule and serving in one process
//!  strata demo                       all of it on embedded defaults, with a live view
//!  strata produce                    a live clickstream to a Kafka topic
//!  strata query "SQL"                a Flight SQL client
//!  strata generate                   a clickstream with known flaws, for tests and trials
//! ```

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use strata::{cmd, demo};

/// mimalloc, for Rust and C alike (it replaces `malloc` and `free` process-wide): librdkafka
/// allocates each fetched message on its broker thread and the consumer frees it on its own,
/// and under the system allocator every such free waited on the broker thread's arena lock
/// (measured: 40% of the consumer thread's waits while catching up; ingest went from 127k to
/// 140k events/s without them). Transparent huge pages are off for the process (mimalloc's
/// `no_thp` sets `PR_SET_THP_DISABLE`): zeroing 2 MB pages that micro-batches use a little
/// of cost more than it saved.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "strata",
    version,
    about = "Lambda-architecture analytics: Kafka in, exact SQL out over Arrow Flight SQL"
)]
struct Cli {
    /// The configuration file (see strata.example.toml).
    #[arg(short, long, env = "STRATA_CONFIG", default_value = "strata.toml", global = true)]
    config: PathBuf,
    /// Log filter, e.g. "info" or "strata_batch=debug". The Delta kernel's snapshot logs and
    /// the Delta writer's statistics warnings stay quiet unless the filter names them.
    #[arg(
        long,
        env = "STRATA_LOG",
        default_value = "warn,strata=info,strata_core=info,strata_batch=info,strata_serving=info",
        global = true
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Import(cmd::import::Args),
    Batch(cmd::batch::Args),
    Serve(cmd::serve::Args),
    Speed(cmd::speed::Args),
    Run(cmd::run::Args),
    /// A Ballista scheduler for the batch layer's recomputes on a cluster.
    Scheduler(cmd::scheduler::Args),
    /// A Ballista executor, running recompute tasks its scheduler gives it.
    Executor(cmd::executor::Args),
    /// Strata working in one command: an in-process Kafka, a live clickstream, every layer,
    /// Flight SQL on 127.0.0.1:50051 and a live terminal view.
    Demo(demo::DemoArgs),
    Produce(cmd::produce::Args),
    Query(cmd::query::Args),
    Generate(cmd::generate::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = match log_filter(&cli.log) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-io")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", causes(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: most errors already print their
/// source, and many stores wrap one error in several layers that print the same text (a
/// cause the text already ends with is not repeated).
fn causes(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.ends_with(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Third-party log targets kept quiet whatever the filter's level, unless it names them: the
/// Delta kernel logs every snapshot it builds at INFO, and the Delta writer warns, for each
/// file of the rejected table, that it keeps no statistics of the binary `raw` column.
const QUIET_LOGS: &[(&str, &str)] = &[
    ("buoyant_kernel", "off"),
    ("deltalake_core::writer::stats", "error"),
    // A commit that loses to another writer's is logged there as an error; for the archive's
    // fenced commits that is the expected way to find a partition moved (Strata decides
    // again, and says so itself when it matters).
    ("deltalake_core::kernel::transaction", "off"),
];

/// The log filter of `--log` (or STRATA_LOG), with the quiet targets added.
fn log_filter(spec: &str) -> std::result::Result<tracing_subscriber::EnvFilter, String> {
    let mut filter = tracing_subscriber::EnvFilter::builder()
        .parse(spec)
        .map_err(|e| format!("the log filter `{spec}` (--log or STRATA_LOG): {e}"))?;
    for (target, level) in QUIET_LOGS {
        if !spec.contains(target) {
            let directive = format!("{target}={level}").parse().expect("a valid log directive");
            filter = filter.add_directive(directive);
        }
    }
    Ok(filter)
}

async fn run(cli: Cli) -> Result<()> {
    let config = cli.config.as_path();
    match cli.command {
        Command::Import(args) => cmd::import::run(config, args).await,
        Command::Batch(args) => cmd::batch::run(config, args).await,
        Command::Serve(args) => cmd::serve::run(config, args).await,
        Command::Speed(args) => cmd::speed::run(config, args).await,
        Command::Run(args) => cmd::run::run(config, args).await,
        Command::Scheduler(args) => cmd::scheduler::run(config, args).await,
        Command::Executor(args) => cmd::executor::run(config, args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Produce(args) => cmd::produce::run(config, args).await,
        Command::Query(args) => cmd::query::run(args).await,
        Command::Generate(args) => cmd::generate::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_level_keeps_the_delta_noise_out_unless_asked_for() {
        let filter = log_filter("warn").unwrap().to_string();
        assert!(filter.contains("buoyant_kernel=off"), "{filter}");
        assert!(filter.contains("deltalake_core::writer::stats=error"), "{filter}");
        let filter = log_filter("info,buoyant_kernel=debug").unwrap().to_string();
        assert!(
            filter.contains("buoyant_kernel=debug") && !filter.contains("buoyant_kernel=off"),
            "{filter}"
        );
    }

    #[test]
    fn a_bad_log_filter_is_an_error_that_names_its_setting() {
        let e = log_filter("strata=loud").unwrap_err();
        assert!(e.contains("`strata=loud`") && e.contains("STRATA_LOG"), "{e}");
    }
}
