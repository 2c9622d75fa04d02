//! `strata demo`: Strata working, in one command, on embedded defaults.
//!
//! ```text
//!  generator ──► in-process Kafka (librdkafka's mock cluster, topic page_views, 4 partitions)
//!                    │
//!                    ▼
//!  speed layer ──► lake in ./strata-demo/lake ◄── batch layer (every 30 s)
//!        └──────────────┬──────────────────────────────┘
//!                       ▼
//!              Flight SQL on 127.0.0.1:50051, /metrics on 127.0.0.1:9464
//! ```
//!
//! A live terminal view shows the ingest rate, freshness, the last batch run and view rows
//! changing. Ctrl-C stops it gracefully: everything consumed is archived first.

use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use strata_core::config::Config;
use strata_core::metrics::metrics;
use strata_core::speed::SpeedSource;

use crate::generate::Spec;
use crate::node::Node;
use crate::ops::shutdown_signal;
use crate::produce::{Produced, produce};
use crate::query::{Connection, Format};

const EXAMPLE: &str = include_str!("../../strata.example.toml");
pub const TOPIC: &str = "page_views";
/// Where the demo serves /metrics and /health unless told (the example config leaves them off).
const METRICS_ADDRESS: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));

/// Options of `strata demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Events per second the generator produces.
    #[arg(long, env = "STRATA_DEMO_RATE", default_value_t = 2000.0)]
    pub rate: f64,
    /// Stop after this long (e.g. "2m"); runs until Ctrl-C otherwise.
    #[arg(long, env = "STRATA_DEMO_DURATION")]
    pub duration: Option<String>,
    /// Where the demo keeps its config and lake.
    #[arg(long, env = "STRATA_DEMO_DIR", default_value = "strata-demo")]
    pub dir: PathBuf,
    /// Flight SQL address (overrides serve.address of the demo's config, 127.0.0.1:50051,
    /// itself overridden by STRATA_SERVE_ADDRESS).
    #[arg(long)]
    pub address: Option<SocketAddr>,
    /// Prometheus /metrics and /health address (overrides STRATA_METRICS_ADDRESS; default
    /// 127.0.0.1:9464).
    #[arg(long)]
    pub metrics_address: Option<SocketAddr>,
    /// Print a status line every few seconds instead of redrawing the screen.
    #[arg(long)]
    pub plain: bool,
}

/// The demo's config: the documented example, its lake in `dir`, Kafka in process.
fn write_config(dir: &Path, brokers: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = EXAMPLE
        .replace(
            "brokers = \"127.0.0.1:9092\"",
            &format!("brokers = \"{brokers}\"  # the demo's in-process Kafka (gone when it stops)"),
        )
        .replace("interval = \"5m\"", "interval = \"30s\"");
    let path = dir.join("strata.toml");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let duration = args
        .duration
        .as_deref()
        .map(strata_core::duration::parse_duration)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
    let cluster = MockCluster::<DefaultProducerContext>::new(1).context("cannot start the in-process Kafka")?;
    cluster
        .create_topic(TOPIC, 4, 1)
        .context("cannot create the demo topic")?;
    let brokers = cluster.bootstrap_servers();
    let config_path = write_config(&args.dir, &brokers)?;
    // The environment's overrides (STRATA_SERVE_ADDRESS, ...) apply here, the flags after.
    let config = Arc::new(Config::load(&config_path)?);
    let address = args.address.unwrap_or(config.serve.address);
    let metrics_address = args
        .metrics_address
        .or(config.ops.metrics_address)
        .unwrap_or(METRICS_ADDRESS);
    let stop = shutdown_signal();
    let node = Node::start(&config, address, Some(metrics_address), false).await?;
    let address = node.server.address;
    let metrics = node.metrics.unwrap_or(metrics_address);
    println!("strata serving Flight SQL on {address}");
    print_connect(address, metrics, &config_path);
    std::io::stdout().flush()?;

    let counts = Arc::new(Produced::default());
    let producer = {
        let (counts, stop, brokers, rate) = (counts.clone(), stop.clone(), brokers.clone(), args.rate);
        std::thread::Builder::new()
            .name("strata-demo-producer".into())
            .spawn(move || {
                let spec = Spec {
                    events: u64::MAX,
                    start: chrono::Utc::now(),
                    span: Duration::from_secs(1),
                    malformed_ratio: 0.01,
                    late_ratio: 0.05,
                    seed: 7,
                    max_record_bytes: 0,
                    users: 100_000,
                    pages: 500,
                };
                produce(&brokers, TOPIC, rate, None, spec, &stop, &counts)
            })?
    };

    let started = Instant::now();
    let connection = Connection {
        endpoint: format!("grpc://{address}"),
        tls_ca: None,
        token: config.serve.auth.token.clone(),
        user: None,
        password: None,
    };
    let interactive = std::io::stdout().is_terminal() && !args.plain;
    let mut last = (Instant::now(), 0u64);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if duration.is_some_and(|d| started.elapsed() >= d) {
            stop.cancel();
            break;
        }
        if let Some(f) = node.speed.failure() {
            eprintln!("error: the speed layer failed: {f}");
            stop.cancel();
            break;
        }
        ticks += 1;
        let status = node.speed.status().await?;
        let consumed: u64 = status.partitions.iter().map(|p| p.events + p.rejected).sum();
        let rate = (consumed - last.1.min(consumed)) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), consumed);
        if interactive {
            let view = live_view(
                &connection,
                &status,
                rate,
                counts.records.load(Ordering::Relaxed),
                started.elapsed(),
            )
            .await;
            print!("\x1b[2J\x1b[H{view}");
            print_connect(address, metrics, &config_path);
            std::io::stdout().flush()?;
        } else if ticks.is_multiple_of(5) {
            println!("{}", status_line(&status, rate, started.elapsed()));
            std::io::stdout().flush()?;
        }
    }
    eprintln!("stopping: the producer, then the speed layer (archiving what it consumed)...");
    let produced = producer.join().map_err(|_| anyhow::anyhow!("the producer panicked"))?;
    // The in-process Kafka goes away with the demo: consume what is left in it first.
    let sent = counts.records.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = node.speed.status().await?;
        let consumed: u64 = status.partitions.iter().map(|p| p.events + p.rejected).sum();
        if consumed >= sent || Instant::now() > deadline || node.speed.failure().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = node.speed.status().await?;
    node.shutdown().await?;
    produced?;
    let events: u64 = status.partitions.iter().map(|p| p.events).sum();
    let rejected: u64 = status.partitions.iter().map(|p| p.rejected).sum();
    println!(
        "demo stopped after {:.0}s: {} records produced; {events} events and {rejected} rejected records archived in {}.",
        started.elapsed().as_secs_f64(),
        counts.records.load(Ordering::Relaxed),
        config.lake.url
    );
    println!("Query them again with: strata serve --config {}", config_path.display());
    drop(cluster);
    Ok(())
}

fn print_connect(address: SocketAddr, metrics: SocketAddr, config: &Path) {
    println!();
    println!("Connect:");
    println!("  strata query \"SELECT * FROM page_stats ORDER BY window_start DESC, views DESC LIMIT 10\"");
    println!("  python: import adbc_driver_flightsql.dbapi as f; f.connect(\"grpc://{address}\", autocommit=True)");
    println!("  DBeaver / JDBC: jdbc:arrow-flight-sql://{address}?useEncryption=false");
    println!(
        "  metrics: http://{metrics}/metrics   health: http://{metrics}/health   config: {}",
        config.display()
    );
    println!("Ctrl-C stops the demo (gracefully: every consumed event is archived first).");
}

fn status_line(status: &strata_core::speed::SpeedStatus, rate: f64, elapsed: Duration) -> String {
    let p99 = metrics()
        .quantile("strata_speed_visible_seconds", 0.99)
        .map_or("-".to_string(), |s| format!("{:.0} ms", s * 1000.0));
    let events: u64 = status.partitions.iter().map(|p| p.events).sum();
    let late: u64 = status.partitions.iter().map(|p| p.late_events).sum();
    let rejected: u64 = status.partitions.iter().map(|p| p.rejected).sum();
    format!(
        "[{:>4.0}s] {rate:>8.0} events/s  {events} events ({late} late, {rejected} rejected)  aggregated p99 <= {p99}",
        elapsed.as_secs_f64()
    )
}

async fn live_view(
    connection: &Connection,
    status: &strata_core::speed::SpeedStatus,
    rate: f64,
    produced: u64,
    elapsed: Duration,
) -> String {
    let mut out = String::new();
    out.push_str("Strata demo — Kafka (in process) -> speed + batch layers -> Flight SQL\n\n");
    out.push_str(&status_line(status, rate, elapsed));
    out.push_str(&format!("  produced {produced}\n"));
    let p50 = metrics()
        .quantile("strata_speed_visible_seconds", 0.5)
        .map_or("-".to_string(), |s| format!("{:.1} ms", s * 1000.0));
    out.push_str(&format!(
        "freshness: consumed -> aggregated p50 <= {p50} (a query aggregates what waits: it counts every event consumed before it)\n"
    ));
    for v in &status.views {
        out.push_str(&format!(
            "  {:<11} {:>3} generations, {:>7} live states, {:>6.0} bytes/state\n",
            v.view,
            v.generations,
            v.state_rows,
            if v.state_rows > 0 {
                v.state_bytes as f64 / v.state_rows as f64
            } else {
                0.0
            }
        ));
    }
    let queries = [
        (
            "last batch run",
            "SELECT view, version, started_at, duration_ms, events FROM system.view_versions WHERE current ORDER BY view",
        ),
        (
            "page_stats, newest windows",
            "SELECT window_start, country, views, users, round(avg_latency_ms, 1) AS avg_ms, p95_latency_ms AS p95_ms \
             FROM page_stats ORDER BY window_start DESC, views DESC LIMIT 6",
        ),
    ];
    for (title, sql) in queries {
        out.push('\n');
        out.push_str(title);
        out.push('\n');
        match crate::query::run(connection, sql).await {
            Ok(batches) => {
                let mut buf = Vec::new();
                if crate::query::write(&batches, Format::Table, &mut buf).is_ok() {
                    out.push_str(&String::from_utf8_lossy(&buf));
                }
            }
            Err(e) => out.push_str(&format!("  (not yet: {e})\n")),
        }
    }
    out
}
