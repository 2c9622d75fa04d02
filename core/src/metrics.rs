//! Every metric Strata exports, and the HTTP endpoint that serves them with a health check.
//!
//! The metrics are [`prometheus_client`] families, declared once in [`Metrics`] (this file is
//! their catalogue: name, help, labels, buckets) and registered in one registry at first use.
//! A component takes the handles it updates when it is built ([`Family::get_or_create_owned`]
//! for a labelled series) and updates them with one atomic operation; nothing is looked up by
//! name on the data path. [`serve_ops`] answers `GET /metrics` (OpenMetrics text) and
//! `GET /health` (200 while healthy, 503 with the reason otherwise) over axum.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Bucket bounds for latencies in seconds, from 100 µs to 1 minute; finer from 5 to 100 ms,
/// where the speed layer's freshness goal lies.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Bucket bounds for batch runs in seconds, from 100 ms to an hour.
pub const RUN_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// A series per source.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

/// A series per view.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViewLabel {
    pub view: String,
}

/// A series per Kafka partition.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub topic: String,
    pub partition: i32,
}

impl From<&crate::speed::TopicPartition> for PartitionLabel {
    fn from(tp: &crate::speed::TopicPartition) -> Self {
        PartitionLabel {
            topic: tp.topic.clone(),
            partition: tp.partition,
        }
    }
}

/// A series per outcome: `ok` or `error`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

impl ResultLabel {
    pub const OK: ResultLabel = ResultLabel { result: "ok" };
    pub const ERROR: ResultLabel = ResultLabel { result: "error" };
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

/// The metrics of every layer. Counters are rendered with the `_total` suffix.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `strata_events_consumed_total{source}`.
    pub events_consumed: Family<SourceLabel, Counter>,
    /// `strata_events_rejected_total{source}`.
    pub events_rejected: Family<SourceLabel, Counter>,
    /// `strata_kafka_delay_seconds{source}`.
    pub kafka_delay: Histograms<SourceLabel>,
    /// `strata_consumer_offsets_out_of_range_total`.
    pub offsets_out_of_range: Counter,
    /// `strata_consumer_lag{topic,partition}`.
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    /// `strata_speed_visible_seconds`.
    pub speed_visible: Histogram,
    /// `strata_speed_batch_seconds`.
    pub speed_batch: Histogram,
    /// `strata_speed_recency_missed_total`.
    pub speed_recency_missed: Counter,
    /// `strata_speed_generations{view}`.
    pub speed_generations: Family<ViewLabel, Gauge>,
    /// `strata_speed_states{view}`.
    pub speed_states: Family<ViewLabel, Gauge>,
    /// `strata_speed_state_bytes{view}`.
    pub speed_state_bytes: Family<ViewLabel, Gauge>,
    /// `strata_archive_commit_seconds{source}`.
    pub archive_commit: Histograms<SourceLabel>,
    /// `strata_archive_failures_total`.
    pub archive_failures: Counter,
    /// `strata_archive_fenced_total`.
    pub archive_fenced: Counter,
    /// `strata_batch_runs_total{result}`.
    pub batch_runs: Family<ResultLabel, Counter>,
    /// `strata_batch_run_seconds`.
    pub batch_run_seconds: Histogram,
    /// `strata_queries_total{result}`.
    pub queries: Family<ResultLabel, Counter>,
    /// `strata_query_seconds`.
    pub query_seconds: Histogram,
    /// `strata_partitions_unowned`.
    pub partitions_unowned: Gauge,
    /// `strata_speed_unavailable_total`.
    pub speed_unavailable: Counter,
}

impl Metrics {
    /// Every metric, registered in a registry of its own, component after component (the
    /// order they are rendered in).
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            events_consumed: Family::default(),
            events_rejected: Family::default(),
            kafka_delay: Family::new_with_constructor(latency),
            offsets_out_of_range: Counter::default(),
            consumer_lag: Family::default(),
            speed_visible: latency(),
            speed_recency_missed: Counter::default(),
            speed_batch: latency(),
            speed_generations: Family::default(),
            speed_states: Family::default(),
            speed_state_bytes: Family::default(),
            archive_commit: Family::new_with_constructor(latency),
            archive_failures: Counter::default(),
            archive_fenced: Counter::default(),
            batch_runs: Family::default(),
            batch_run_seconds: Histogram::new(RUN_BUCKETS.iter().copied()),
            queries: Family::default(),
            query_seconds: latency(),
            partitions_unowned: Gauge::default(),
            speed_unavailable: Counter::default(),
        };
        m.register_consumer();
        m.register_speed();
        m.register_archive();
        m.register_batch();
        m.register_serving();
        m
    }

    /// The speed layer's Kafka consumer: what it consumed, rejected, skipped, and its lag.
    fn register_consumer(&mut self) {
        let r = &mut self.registry;
        r.register(
            "strata_events_consumed",
            "Valid events consumed from Kafka",
            self.events_consumed.clone(),
        );
        r.register(
            "strata_events_rejected",
            "Records rejected (unparsable, wrong type, no event time, too large)",
            self.events_rejected.clone(),
        );
        r.register(
            "strata_kafka_delay_seconds",
            "From a record's Kafka timestamp (its produce, under CreateTime) to its consumption",
            self.kafka_delay.clone(),
        );
        r.register(
            "strata_consumer_offsets_out_of_range",
            "Offsets between a partition's position in the lake and what Kafka holds, never consumed (retention deleted them, or the topic was recreated)",
            self.offsets_out_of_range.clone(),
        );
        r.register(
            "strata_consumer_lag",
            "Messages in Kafka not yet consumed",
            self.consumer_lag.clone(),
        );
    }

    /// The speed layer's views: freshness, micro-batches, and the states held.
    fn register_speed(&mut self) {
        let r = &mut self.registry;
        r.register(
            "strata_speed_visible_seconds",
            "From a micro-batch's first record until its events are in the views' states (added once speed.aggregate_rows events wait, or when the states are published: when a query asks, and a query counts every event received before it)",
            self.speed_visible.clone(),
        );
        r.register(
            "strata_speed_batch_seconds",
            "Time to add the waiting micro-batches to the views' open states, and to publish these when a query asks or they are archived",
            self.speed_batch.clone(),
        );
        r.register(
            "strata_speed_recency_missed",
            "Misses of real-time recency (serve.real_time_recency), after which a query reads what was consumed: Kafka did not give the partitions' ends (one per partition without one), the consumer did not reach them, or their states were not published, within serve.real_time_recency_timeout",
            self.speed_recency_missed.clone(),
        );
        r.register(
            "strata_speed_generations",
            "Speed-layer generations held",
            self.speed_generations.clone(),
        );
        r.register(
            "strata_speed_states",
            "Published (window, group) states in the speed layer (not the open states the views add to between publications)",
            self.speed_states.clone(),
        );
        r.register(
            "strata_speed_state_bytes",
            "Memory of the speed layer's published states",
            self.speed_state_bytes.clone(),
        );
    }

    /// The speed layer's archive to the lake: commits, failures, fencing.
    fn register_archive(&mut self) {
        let r = &mut self.registry;
        r.register(
            "strata_archive_commit_seconds",
            "Time to commit a flush of consumed events to the lake",
            self.archive_commit.clone(),
        );
        r.register(
            "strata_archive_failures",
            "Archive commits that failed (and were retried)",
            self.archive_failures.clone(),
        );
        r.register(
            "strata_archive_fenced",
            "Archive ranges not committed because another speed process owns their partition now",
            self.archive_fenced.clone(),
        );
    }

    /// The batch layer's runs.
    fn register_batch(&mut self) {
        let r = &mut self.registry;
        r.register("strata_batch_runs", "Batch runs.", self.batch_runs.clone());
        r.register(
            "strata_batch_run_seconds",
            "Duration of batch runs",
            self.batch_run_seconds.clone(),
        );
    }

    /// The serving layer: queries, and the partitions and speed layers it misses.
    fn register_serving(&mut self) {
        let r = &mut self.registry;
        r.register("strata_queries", "Queries answered.", self.queries.clone());
        r.register(
            "strata_query_seconds",
            "Time from a query's arrival to its last batch",
            self.query_seconds.clone(),
        );
        r.register(
            "strata_partitions_unowned",
            "Kafka partitions of the sources no live speed process has owned for longer than serve.unowned_partition_grace",
            self.partitions_unowned.clone(),
        );
        r.register(
            "strata_speed_unavailable",
            "Queries whose speed layer did not answer: its partitions came from the lake",
            self.speed_unavailable.clone(),
        );
    }

    /// Every metric in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// The upper bound of the bucket below which a share `q` of a label-less histogram's
    /// observations fall, read from the rendered text as a scraper would (`None` before the
    /// first observation).
    pub fn quantile(&self, histogram: &str, q: f64) -> Option<f64> {
        let text = self.render();
        let prefix = format!("{histogram}_bucket{{le=\"");
        let buckets: Vec<(f64, u64)> = text
            .lines()
            .filter_map(|line| {
                let (le, count) = line.strip_prefix(&prefix)?.split_once("\"} ")?;
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((le, count.parse().ok()?))
            })
            .collect();
        let total = buckets.last()?.1;
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil().max(1.0) as u64;
        buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= want)
            .map(|(le, _)| *le)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Answers whether the process is healthy: `Ok(details)` or `Err(reason)`.
pub type HealthCheck = Arc<dyn Fn() -> std::result::Result<String, String> + Send + Sync>;

/// Serves `GET /metrics` and `GET /health` on `address` until `stop`; returns the bound
/// address and the task (owned by the caller).
pub async fn serve_ops(
    address: SocketAddr,
    health: HealthCheck,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {address} for /metrics"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("read the metrics address", e))?;
    let check = move || {
        let health = health.clone();
        async move {
            let (status, body) = match health() {
                Ok(details) => (StatusCode::OK, details),
                Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
            };
            (status, [(header::CONTENT_TYPE, "application/json")], body)
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(render))
        .route("/health", get(check.clone()))
        .route("/healthz", get(check))
        .fallback(|| async { (StatusCode::NOT_FOUND, "try /metrics or /health\n") });
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!("the /metrics endpoint stopped: {e}");
        }
    });
    Ok((bound, task))
}

async fn render() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics().render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.events_consumed
            .get_or_create_owned(&SourceLabel {
                source: "clicks".into(),
            })
            .inc_by(3);
        m.consumer_lag
            .get_or_create_owned(&PartitionLabel {
                topic: "clicks".into(),
                partition: 0,
            })
            .set(7);
        m.speed_visible.observe(0.00005);
        m.speed_visible.observe(0.02);
        m.speed_visible.observe(90.0);
        let text = m.render();
        assert!(
            text.contains("# TYPE strata_events_consumed counter\nstrata_events_consumed_total{source=\"clicks\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("strata_consumer_lag{topic=\"clicks\",partition=\"0\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("strata_speed_visible_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("strata_speed_visible_seconds_bucket{le=\"0.02\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("strata_speed_visible_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("strata_speed_visible_seconds_count 3\n"), "{text}");
        assert!(text.contains("strata_partitions_unowned 0\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        // The library ends each help text with a period: the texts here carry none.
        let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
        assert!(helps.len() >= 10, "{text}");
        for help in helps {
            assert!(help.ends_with('.') && !help.ends_with(".."), "{help}");
        }
        assert_eq!(m.quantile("strata_speed_visible_seconds", 0.3), Some(0.0001));
        assert_eq!(m.quantile("strata_speed_visible_seconds", 0.6), Some(0.02));
        assert_eq!(m.quantile("strata_speed_visible_seconds", 1.0), Some(f64::INFINITY));
        assert_eq!(m.quantile("strata_speed_batch_seconds", 0.5), None);
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        metrics().archive_fenced.inc();
        let stop = CancellationToken::new();
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let h = healthy.clone();
        let check: HealthCheck = Arc::new(move || {
            if h.load(std::sync::atomic::Ordering::SeqCst) {
                Ok("{\"status\":\"ok\"}".into())
            } else {
                Err("{\"status\":\"down\"}".into())
            }
        });
        let (addr, task) = serve_ops("127.0.0.1:0".parse().unwrap(), check, stop.clone())
            .await
            .unwrap();
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let page = get("/metrics").await;
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        assert!(page.contains("\nstrata_archive_fenced_total "), "{page}");
        let health = get("/health").await;
        assert!(
            health.starts_with("HTTP/1.1 200 OK") && health.ends_with("{\"status\":\"ok\"}"),
            "{health}"
        );
        healthy.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(get("/health").await.starts_with("HTTP/1.1 503"));
        assert!(get("/nothing").await.starts_with("HTTP/1.1 404"));
        stop.cancel();
        task.await.unwrap();
    }
}
