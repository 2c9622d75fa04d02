//! `strata`: the one binary.
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

mod demo;
mod generate;
mod produce;
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
use strata_core::speed::SpeedSource;
use strata_speed::SpeedLayer;
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
        /// (On the schedule) serve Prometheus /metrics and /health here (overrides
        /// ops.metrics_address).
        #[arg(long, env = "STRATA_METRICS_ADDRESS")]
        metrics_address: Option<SocketAddr>,
    },
    /// Serve SQL over Arrow Flight SQL, merging batch views with speed layers' states.
    Serve {
        /// Address to listen on (overrides serve.address).
        #[arg(long, env = "STRATA_SERVE_ADDRESS")]
        address: Option<SocketAddr>,
        /// Flight endpoints of `strata speed` processes (overrides serve.speed_endpoints).
        #[arg(long = "speed-endpoint", env = "STRATA_SPEED_ENDPOINTS", value_delimiter = ',')]
        speed_endpoints: Vec<String>,
        #[command(flatten)]
        ops: Ops,
    },
    /// The speed layer: consume Kafka, keep views live in memory, archive to the lake.
    Speed {
        /// Where to serve states to `strata serve` (overrides speed.address).
        #[arg(long, env = "STRATA_SPEED_ADDRESS")]
        address: Option<SocketAddr>,
        #[command(flatten)]
        ops: Ops,
    },
    /// Everything in one process: the speed layer, the batch layer on its schedule, and
    /// Flight SQL serving both merged.
    Run {
        /// Address of Flight SQL (overrides serve.address).
        #[arg(long, env = "STRATA_SERVE_ADDRESS")]
        address: Option<SocketAddr>,
        #[command(flatten)]
        ops: Ops,
    },
    /// Strata working in one command: an in-process Kafka, a live clickstream, every layer,
    /// Flight SQL on 127.0.0.1:50051 and a live terminal view.
    Demo(demo::DemoArgs),
    /// Produce a live clickstream (with late and malformed records) to a Kafka topic.
    Produce {
        /// Bootstrap servers (default: kafka.brokers of the config).
        #[arg(long, env = "STRATA_KAFKA_BROKERS")]
        brokers: Option<String>,
        #[arg(long, env = "STRATA_PRODUCE_TOPIC", default_value = "page_views")]
        topic: String,
        /// Records per second.
        #[arg(long, env = "STRATA_PRODUCE_RATE", default_value_t = 1000.0)]
        rate: f64,
        /// Stop after this many records (default: until Ctrl-C).
        #[arg(long, env = "STRATA_PRODUCE_RECORDS")]
        records: Option<u64>,
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

/// Operations endpoints.
#[derive(Debug, Clone, clap::Args)]
struct Ops {
    /// Serve Prometheus /metrics and /health here (overrides ops.metrics_address).
    #[arg(long, env = "STRATA_METRICS_ADDRESS")]
    metrics_address: Option<SocketAddr>,
}

impl Ops {
    fn address(&self, config: &Config) -> Result<Option<SocketAddr>> {
        match (&self.metrics_address, &config.ops.metrics_address) {
            (Some(a), _) => Ok(Some(*a)),
            (None, Some(a)) => Ok(Some(a.parse().context("ops.metrics_address")?)),
            (None, None) => Ok(None),
        }
    }
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
        /// Recompute views even when they are up to date.
        #[arg(long)]
        force: bool,
    },
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
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
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
        Command::Batch {
            command,
            metrics_address,
        } => {
            let config = load_config(&cli.config)?;
            let cpu = CpuRuntime::new(None)?;
            let batch = BatchLayer::new(config.clone(), cpu)?;
            match command {
                Some(BatchCommand::Run { from, to, force }) => {
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
                    let ops = Ops { metrics_address }.address(&config)?;
                    let ops = start_ops(
                        ops,
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
        Command::Serve {
            address,
            speed_endpoints,
            ops,
        } => {
            let config = load_config(&cli.config)?;
            let address = serve_address(&config, address)?;
            let endpoints = if speed_endpoints.is_empty() {
                config.serve.speed_endpoints.clone()
            } else {
                speed_endpoints
            };
            let speed = endpoints
                .iter()
                .map(|e| {
                    strata_speed::flight::RemoteSpeed::new(e, config.serve.auth.token.clone())
                        .map(|r| Arc::new(r) as Arc<dyn SpeedSource>)
                })
                .collect::<strata_core::Result<Vec<_>>>()?;
            let cpu = CpuRuntime::new(None)?;
            let stop = shutdown_signal();
            let mut server = strata_serving::start(&config, address, speed, cpu, stop.clone()).await?;
            let catalog = server.catalog.clone();
            let ops = start_ops(
                ops.address(&config)?,
                Arc::new(move || strata_serving::health(&catalog)),
                stop.clone(),
            )
            .await?;
            // Tests and scripts read this line to learn the port.
            println!("strata serving Flight SQL on {}", server.address);
            std::io::stdout().flush()?;
            server.wait().await?;
            finish_ops(ops).await;
            eprintln!("strata serve stopped");
            Ok(())
        }
        Command::Speed { address, ops } => {
            let config = load_config(&cli.config)?;
            let address = match address {
                Some(a) => a,
                None => config.speed.address.parse().context("speed.address")?,
            };
            let cpu = CpuRuntime::new(None)?;
            let stop = shutdown_signal();
            // Bound first: the speed layer is known to the serving layer by that address.
            let listener = strata_speed::flight::bind(address, config.serve.auth.token.as_deref()).await?;
            let mut named = (*config).clone();
            named.speed.address = listener.local_addr()?.to_string();
            let speed = SpeedLayer::start(&named, cpu).await?;
            let flight_stop = CancellationToken::new();
            let (bound, flight) = strata_speed::flight::serve(
                speed.clone(),
                listener,
                config.serve.auth.token.clone(),
                flight_stop.clone(),
            )
            .await?;
            let health = speed_health(&speed);
            let ops = start_ops(ops.address(&config)?, health, flight_stop.clone()).await?;
            println!("strata speed serving states on {bound}");
            std::io::stdout().flush()?;
            wait_or_fail(&stop, &speed).await;
            // Ordered: archive everything consumed, then stop answering.
            let archived = speed.shutdown().await;
            flight_stop.cancel();
            let _ = flight.await;
            finish_ops(ops).await;
            archived?;
            eprintln!("strata speed stopped");
            Ok(())
        }
        Command::Run { address, ops } => {
            let config = load_config(&cli.config)?;
            run_all(config, address, ops.metrics_address).await
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
        Command::Demo(args) => demo::run(args).await,
        Command::Produce {
            brokers,
            topic,
            rate,
            records,
        } => {
            let brokers = match brokers {
                Some(b) => b,
                None => load_config(&cli.config)?.kafka.brokers.clone(),
            };
            let stop = shutdown_signal();
            let counts = Arc::new(produce::Produced::default());
            let spec = generate::Spec {
                events: u64::MAX,
                start: Utc::now(),
                span: std::time::Duration::from_secs(1),
                malformed_ratio: 0.01,
                late_ratio: 0.05,
                seed: rand::random(),
                max_record_bytes: 0,
                users: 100_000,
                pages: 500,
            };
            let c = counts.clone();
            tokio::task::spawn_blocking(move || produce::produce(&brokers, &topic, rate, records, spec, &stop, &c))
                .await
                .context("the producer")??;
            eprintln!(
                "produced {} records",
                counts.records.load(std::sync::atomic::Ordering::Relaxed)
            );
            Ok(())
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

fn serve_address(config: &Config, flag: Option<SocketAddr>) -> Result<SocketAddr> {
    match flag {
        Some(a) => Ok(a),
        None => config.serve.address.parse().context("serve.address"),
    }
}

/// A running /metrics and /health endpoint.
type OpsTask = Option<(SocketAddr, tokio::task::JoinHandle<()>)>;

async fn start_ops(
    address: Option<SocketAddr>,
    health: strata_core::metrics::HealthCheck,
    stop: CancellationToken,
) -> Result<OpsTask> {
    let Some(address) = address else { return Ok(None) };
    let (bound, task) = strata_core::metrics::serve_ops(address, health, stop).await?;
    eprintln!("metrics on http://{bound}/metrics, health on http://{bound}/health");
    Ok(Some((bound, task)))
}

async fn finish_ops(task: OpsTask) {
    if let Some((_, task)) = task {
        let _ = task.await;
    }
}

fn speed_health(speed: &Arc<SpeedLayer>) -> strata_core::metrics::HealthCheck {
    let speed = speed.clone();
    Arc::new(move || match speed.failure() {
        None => Ok("{\"status\":\"consuming\"}".to_string()),
        Some(f) => Err(serde_json::json!({ "status": "failed", "reason": f }).to_string()),
    })
}

/// `strata run`: failed if its speed layer failed, else the serving layer's health.
fn node_health(speed: &Arc<SpeedLayer>, catalog: &Arc<strata_serving::Catalog>) -> strata_core::metrics::HealthCheck {
    let (speed, catalog) = (speed_health(speed), catalog.clone());
    Arc::new(move || speed().and_then(|_| strata_serving::health(&catalog)))
}

/// Waits for a shutdown signal, or for the speed layer to fail.
async fn wait_or_fail(stop: &CancellationToken, speed: &Arc<SpeedLayer>) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                if let Some(f) = speed.failure() {
                    eprintln!("error: the speed layer failed: {f}");
                    return;
                }
            }
        }
    }
}

/// `strata run`: speed, batch on its schedule and serving, in one process.
async fn run_all(config: Arc<Config>, address: Option<SocketAddr>, metrics: Option<SocketAddr>) -> Result<()> {
    let address = serve_address(&config, address)?;
    let metrics = match metrics {
        Some(m) => Some(m),
        None => config
            .ops
            .metrics_address
            .as_deref()
            .map(str::parse)
            .transpose()
            .context("ops.metrics_address")?,
    };
    let stop = shutdown_signal();
    let node = Node::start(&config, address, metrics, true).await?;
    println!("strata serving Flight SQL on {}", node.server.address);
    std::io::stdout().flush()?;
    wait_or_fail(&stop, &node.speed).await;
    node.shutdown().await?;
    eprintln!("strata run stopped: everything consumed is archived");
    Ok(())
}

/// Every layer in one process: speed, batch on its schedule, Flight SQL, /metrics.
struct Node {
    speed: Arc<SpeedLayer>,
    server: strata_serving::RunningServer,
    /// Where /metrics is served, if it is.
    metrics: Option<SocketAddr>,
    batch: Option<tokio::task::JoinHandle<strata_core::Result<()>>>,
    batch_stop: CancellationToken,
    serve_stop: CancellationToken,
    ops: OpsTask,
}

impl Node {
    async fn start(
        config: &Arc<Config>,
        address: SocketAddr,
        metrics: Option<SocketAddr>,
        print_batch_runs: bool,
    ) -> Result<Node> {
        let cpu = CpuRuntime::new(None)?;
        let speed = SpeedLayer::start(config, cpu.clone()).await?;
        let serve_stop = CancellationToken::new();
        let speed_source = speed.clone() as Arc<dyn SpeedSource>;
        let server =
            strata_serving::start(config, address, vec![speed_source], cpu.clone(), serve_stop.clone()).await?;
        let ops = start_ops(metrics, node_health(&speed, &server.catalog), serve_stop.clone()).await?;
        let batch_stop = CancellationToken::new();
        let batch = match strata_batch::schedule(config) {
            Some(schedule) => {
                let layer = BatchLayer::new(config.clone(), cpu.clone())?;
                let batch_stop = batch_stop.clone();
                Some(tokio::spawn(async move {
                    layer
                        .run_scheduled(&schedule, Arc::new(SystemClock), batch_stop, &|r| {
                            if let (Ok(report), true) = (r, print_batch_runs) {
                                print_report(report);
                            }
                        })
                        .await
                }))
            }
            None => {
                eprintln!("warning: [batch] has no schedule: the batch layer will not run (use `strata batch run`)");
                None
            }
        };
        Ok(Node {
            speed,
            server,
            metrics: ops.as_ref().map(|(a, _)| *a),
            batch,
            batch_stop,
            serve_stop,
            ops,
        })
    }

    /// Ordered: no new batch run; archive what the speed layer consumed; then stop serving.
    async fn shutdown(mut self) -> Result<()> {
        self.batch_stop.cancel();
        if let Some(b) = self.batch.take() {
            let _ = b.await;
        }
        let archived = self.speed.shutdown().await;
        self.serve_stop.cancel();
        self.server.wait().await?;
        finish_ops(self.ops.take()).await;
        archived?;
        Ok(())
    }
}

async fn import(config: &Config, source: &str, files: &[PathBuf], chunk_rows: usize) -> Result<()> {
    let source = SourceSchema::new(config.source(source)?);
    let lake = strata_core::lake::Lake::new(&config.lake, config.base_dir())?;
    let started = std::time::Instant::now();
    // A line a second per file (and its last), with its rate and the time it has left.
    let shown: std::sync::Mutex<Option<(String, std::time::Instant, std::time::Instant)>> = std::sync::Mutex::new(None);
    let progress = |p: &strata_batch::import::ImportProgress| {
        let now = std::time::Instant::now();
        let mut shown = shown.lock().expect("progress lock");
        // A file starts when the one before ended (its last chunk is always shown).
        let (file_started, last) = match &*shown {
            Some((file, file_started, last)) if *file == p.file => (*file_started, Some(*last)),
            Some((_, _, last)) => (*last, None),
            None => (started, None),
        };
        let done = p.bytes_read >= p.file_bytes;
        if !done && last.is_some_and(|last| now.duration_since(last) < std::time::Duration::from_secs(1)) {
            return;
        }
        *shown = Some((p.file.clone(), file_started, now));
        let pct = if p.file_bytes > 0 {
            100.0 * p.bytes_read as f64 / p.file_bytes as f64
        } else {
            100.0
        };
        let rate = p.bytes_read as f64 / now.duration_since(file_started).as_secs_f64().max(1e-3);
        let left = if done || rate <= 0.0 {
            String::new()
        } else {
            format!(", {:.0}s left", p.file_bytes.saturating_sub(p.bytes_read) as f64 / rate)
        };
        eprintln!(
            "{}: {pct:5.1}%  {} imported, {} rejected  ({:.1} MB/s{left})",
            p.file,
            p.imported,
            p.rejected,
            rate / 1e6
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
