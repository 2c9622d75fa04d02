//! `strata`: the one binary.
//!
//! ```text
//!  strata import <source> <files…>   backfill history into a source's raw table
//!  strata batch run [--from --to]    compact the lake and recompute views, once
//!  strata batch                      the same, on the configured schedule
//!  strata serve                      Arrow Flight SQL over the lake
//!  strata query "SQL"                a Flight SQL client
//!  strata generate                   a clickstream with known flaws, for tests and trials
//! ```

mod generate;
mod query;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use clap::{Parser, Subcommand};
use strata_batch::{BatchLayer, RunReport, ViewOutcome};
use strata_core::clock::SystemClock;
use strata_core::config::Config;
use strata_core::executor::CpuRuntime;
use strata_core::schema::SourceSchema;
use tokio_util::sync::CancellationToken;

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
    /// Log filter, e.g. "info" or "strata_batch=debug".
    #[arg(
        long,
        env = "STRATA_LOG",
        default_value = "warn,buoyant_kernel=off,deltalake_core::writer::stats=error,strata=info,strata_core=info,strata_batch=info,strata_serving=info",
        global = true
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load JSON-lines or Parquet files into a source's raw table (a backfill of history).
    Import {
        /// The source, as named in the config.
        source: String,
        /// JSON-lines (.json, .jsonl, any text) or Parquet files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Rows per commit to the lake.
        #[arg(long, env = "STRATA_IMPORT_CHUNK_ROWS", default_value_t = strata_batch::import::DEFAULT_CHUNK_ROWS)]
        chunk_rows: usize,
    },
    /// The batch layer: compact raw files and recompute views. Without a subcommand, runs on
    /// the schedule of [batch] in the config.
    Batch {
        #[command(subcommand)]
        command: Option<BatchCommand>,
    },
    /// Serve SQL over Arrow Flight SQL.
    Serve {
        /// Address to listen on (overrides serve.address).
        #[arg(long, env = "STRATA_SERVE_ADDRESS")]
        address: Option<SocketAddr>,
    },
    /// Run SQL against a Strata server and print the result.
    Query {
        /// The SQL statement.
        sql: String,
        #[arg(long, value_enum, env = "STRATA_FORMAT", default_value = "table")]
        format: query::Format,
        /// Write the result here instead of standard output.
        #[arg(short, long, env = "STRATA_OUTPUT")]
        output: Option<PathBuf>,
        #[command(flatten)]
        connection: query::Connection,
    },
    /// Generate a clickstream (JSON lines) with late and malformed events.
    Generate {
        /// How many records.
        #[arg(long, env = "STRATA_GEN_EVENTS", default_value_t = 100_000)]
        events: u64,
        /// The output file ("-" for standard output); a manifest is written next to it.
        #[arg(short, long, env = "STRATA_GEN_OUT", default_value = "-")]
        out: PathBuf,
        /// Event time of the first event (RFC 3339 or a date).
        #[arg(long, env = "STRATA_GEN_START", default_value = "2026-11-20T00:00:00Z")]
        start: String,
        /// Event-time span of the events, e.g. "2d", "6h".
        #[arg(long, env = "STRATA_GEN_SPAN", default_value = "2d")]
        span: String,
        /// Share of malformed records.
        #[arg(long, env = "STRATA_GEN_MALFORMED", default_value_t = 0.01)]
        malformed: f64,
        /// Share of late (out-of-order) events.
        #[arg(long, env = "STRATA_GEN_LATE", default_value_t = 0.05)]
        late: f64,
        #[arg(long, env = "STRATA_GEN_SEED", default_value_t = 42)]
        seed: u64,
        /// Generate "too large" records bigger than this (0: none).
        #[arg(long, env = "STRATA_GEN_MAX_RECORD_BYTES", default_value_t = 0)]
        max_record_bytes: usize,
    },
}

#[derive(Debug, Subcommand)]
enum BatchCommand {
    /// One run now: compact, then recompute views (all windows, or only --from..--to).
    Run {
        /// Recompute only the windows overlapping event times from this time (RFC 3339 or a
        /// date), e.g. after a backfill of that period.
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// ... to this time (exclusive).
        #[arg(long, requires = "from")]
        to: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()))
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
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load_config(path: &Path) -> Result<Arc<Config>> {
    if !path.exists() {
        bail!(
            "no config file at {}: pass --config FILE (or STRATA_CONFIG), or start from strata.example.toml",
            path.display()
        );
    }
    Ok(Arc::new(Config::load(path)?))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Import {
            source,
            files,
            chunk_rows,
        } => {
            let config = load_config(&cli.config)?;
            import(&config, &source, &files, chunk_rows).await
        }
        Command::Batch { command } => {
            let config = load_config(&cli.config)?;
            let cpu = CpuRuntime::new(None)?;
            let batch = BatchLayer::new(config.clone(), cpu)?;
            match command {
                Some(BatchCommand::Run { from, to }) => {
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
                    let report = batch.run_once(range).await?;
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
                    batch
                        .run_scheduled(&schedule, Arc::new(SystemClock), stop, &|r| {
                            if let Ok(report) = r {
                                print_report(report);
                            }
                        })
                        .await?;
                    Ok(())
                }
            }
        }
        Command::Serve { address } => {
            let config = load_config(&cli.config)?;
            let address = match address {
                Some(a) => a,
                None => config.serve.address.parse().context("serve.address")?,
            };
            let cpu = CpuRuntime::new(None)?;
            let stop = shutdown_signal();
            let mut server = strata_serving::start(&config, address, cpu, stop).await?;
            // Tests and scripts read this line to learn the port.
            println!("strata serving Flight SQL on {}", server.address);
            std::io::stdout().flush()?;
            server.wait().await?;
            eprintln!("strata serve stopped");
            Ok(())
        }
        Command::Query {
            sql,
            format,
            output,
            connection,
        } => {
            let batches = query::run(&connection, &sql).await?;
            match output {
                Some(path) => {
                    let mut f =
                        std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
                    query::write(&batches, format, &mut f)
                }
                None => {
                    if format == query::Format::Parquet && std::io::stdout().is_terminal() {
                        bail!("Parquet is binary: write it to a file with --output FILE");
                    }
                    let stdout = std::io::stdout();
                    let mut lock = stdout.lock();
                    query::write(&batches, format, &mut lock)?;
                    lock.flush()?;
                    Ok(())
                }
            }
        }
        Command::Generate {
            events,
            out,
            start,
            span,
            malformed,
            late,
            seed,
            max_record_bytes,
        } => {
            let spec = generate::Spec {
                events,
                start: parse_time(&start)?,
                span: humantime::parse_duration(&span).with_context(|| format!("--span `{span}`"))?,
                malformed_ratio: malformed,
                late_ratio: late,
                seed,
                max_record_bytes,
                users: 100_000,
                pages: 500,
            };
            if out.as_os_str() == "-" {
                let stdout = std::io::stdout();
                let mut lock = std::io::BufWriter::new(stdout.lock());
                let manifest = generate::write_jsonl(spec, &mut lock)?;
                eprintln!(
                    "generated {} lines: {} valid ({} late), {} malformed",
                    manifest.lines,
                    manifest.valid,
                    manifest.late,
                    manifest.malformed.len()
                );
            } else {
                let file = std::fs::File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
                let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
                let manifest = generate::write_jsonl(spec, &mut w)?;
                let manifest_path = PathBuf::from(format!("{}.manifest.json", out.display()));
                std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)?;
                eprintln!(
                    "generated {}: {} lines, {} valid ({} late), {} malformed (listed in {})",
                    out.display(),
                    manifest.lines,
                    manifest.valid,
                    manifest.late,
                    manifest.malformed.len(),
                    manifest_path.display()
                );
            }
            Ok(())
        }
    }
}

async fn import(config: &Config, source: &str, files: &[PathBuf], chunk_rows: usize) -> Result<()> {
    let source = SourceSchema::new(config.source(source)?);
    let lake = strata_core::lake::Lake::new(&config.lake, config.base_dir())?;
    let started = std::time::Instant::now();
    let progress = |p: &strata_batch::import::ImportProgress| {
        let pct = if p.file_bytes > 0 {
            100.0 * p.bytes_read as f64 / p.file_bytes as f64
        } else {
            100.0
        };
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        eprintln!(
            "{}: {pct:5.1}%  {} imported, {} rejected  ({:.1} MB/s)",
            p.file,
            p.imported,
            p.rejected,
            p.bytes_read as f64 / 1e6 / secs
        );
    };
    let report = strata_batch::import::import(&lake, &source, files, chunk_rows, &progress).await?;
    let mut summary = format!(
        "imported {} events into raw.{}, rejected {} records into rejected.{} ({} file{}, {:.1}s)",
        report.imported,
        source.name,
        report.rejected,
        source.name,
        report.files,
        if report.files == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64()
    );
    if report.already_imported > 0 {
        summary.push_str(&format!("; skipped {} lines imported before", report.already_imported));
    }
    if report.blank > 0 {
        summary.push_str(&format!("; skipped {} blank lines", report.blank));
    }
    println!("{summary}");
    Ok(())
}

fn print_report(report: &RunReport) {
    for c in &report.compactions {
        match c.version {
            Some(v) => println!(
                "compacted raw.{}: {} files into {} ({} rows, {:.1} MB -> {:.1} MB) in {:.1}s, version {v}",
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
                "published view {} version {version}: {} state rows from {} events (raw version {}) in {:.1}s",
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

/// `2026-11-21T10:00:00Z`, `2026-11-21T10:00:00` (UTC) or `2026-11-21`.
fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        return Ok(t.and_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    bail!("`{s}` is not a time: expected RFC 3339 (2026-11-21T10:00:00Z) or a date (2026-11-21)")
}

/// Cancelled on SIGINT or SIGTERM.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        eprintln!("shutting down");
        t.cancel();
    });
    token
}
