//! Metrics in the Prometheus text format, and the HTTP endpoint that serves them with a
//! health check.
//!
//! Counters, gauges and histograms are atomics registered once by name and labels; updating
//! one is a single atomic operation. `GET /metrics` renders them all; `GET /health` answers
//! 200 while the process is healthy and 503 with the reason otherwise.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

type Labels = Vec<(String, String)>;

#[derive(Debug, Clone)]
enum Metric {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<AtomicI64>),
    Histogram(Arc<HistogramInner>),
}

#[derive(Debug)]
struct HistogramInner {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    /// Sum of observations, as f64 bits.
    sum: AtomicU64,
    count: AtomicU64,
}

/// A registry of metrics.
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<BTreeMap<String, Family>>,
}

#[derive(Debug)]
struct Family {
    help: String,
    kind: &'static str,
    series: BTreeMap<Labels, Metric>,
}

/// The process's registry.
pub fn global() -> &'static Registry {
    static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);
    &REGISTRY
}

fn labels(l: &[(&str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A monotonically increasing count.
#[derive(Debug, Clone)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Clone)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A distribution of observations in fixed buckets.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramInner>);

impl Histogram {
    pub fn observe(&self, v: f64) {
        let i = self
            .0
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.0.bounds.len());
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
        let mut current = self.0.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + v).to_bits();
            match self
                .0
                .sum
                .compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// The bucket bound below which a share `q` of the observations fall (`None` if none).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.0.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= want {
                return Some(self.0.bounds.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

/// Bucket bounds for latencies in seconds, from 100 µs to 1 minute; finer from 5 to 100 ms,
/// where the speed layer's freshness goal lies.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl Registry {
    fn get_or_insert(
        &self,
        name: &str,
        help: &str,
        kind: &'static str,
        labels: Labels,
        make: impl FnOnce() -> Metric,
    ) -> Metric {
        let mut families = self.families.lock().expect("metrics lock");
        let family = families.entry(name.to_string()).or_insert_with(|| Family {
            help: help.to_string(),
            kind,
            series: BTreeMap::new(),
        });
        family.series.entry(labels).or_insert_with(make).clone()
    }

    pub fn counter(&self, name: &str, help: &str, l: &[(&str, &str)]) -> Counter {
        match self.get_or_insert(name, help, "counter", labels(l), || Metric::Counter(Arc::default())) {
            Metric::Counter(c) => Counter(c),
            _ => panic!("metric {name} registered with another type"),
        }
    }

    pub fn gauge(&self, name: &str, help: &str, l: &[(&str, &str)]) -> Gauge {
        match self.get_or_insert(name, help, "gauge", labels(l), || Metric::Gauge(Arc::default())) {
            Metric::Gauge(g) => Gauge(g),
            _ => panic!("metric {name} registered with another type"),
        }
    }

    pub fn histogram(&self, name: &str, help: &str, l: &[(&str, &str)], bounds: &[f64]) -> Histogram {
        let make = || {
            Metric::Histogram(Arc::new(HistogramInner {
                bounds: bounds.to_vec(),
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum: AtomicU64::new(0f64.to_bits()),
                count: AtomicU64::new(0),
            }))
        };
        match self.get_or_insert(name, help, "histogram", labels(l), make) {
            Metric::Histogram(h) => Histogram(h),
            _ => panic!("metric {name} registered with another type"),
        }
    }

    /// Every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let families = self.families.lock().expect("metrics lock");
        let mut out = String::new();
        for (name, family) in families.iter() {
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} {}", family.kind);
            for (labels, metric) in &family.series {
                match metric {
                    Metric::Counter(c) => {
                        let _ = writeln!(
                            out,
                            "{name}{} {}",
                            render_labels(labels, None),
                            c.load(Ordering::Relaxed)
                        );
                    }
                    Metric::Gauge(g) => {
                        let _ = writeln!(
                            out,
                            "{name}{} {}",
                            render_labels(labels, None),
                            g.load(Ordering::Relaxed)
                        );
                    }
                    Metric::Histogram(h) => {
                        let mut cumulative = 0;
                        for (i, bound) in h
                            .bounds
                            .iter()
                            .map(|b| b.to_string())
                            .chain(["+Inf".to_string()])
                            .enumerate()
                        {
                            cumulative += h.counts[i].load(Ordering::Relaxed);
                            let le = ("le", bound.as_str());
                            let _ = writeln!(out, "{name}_bucket{} {cumulative}", render_labels(labels, Some(le)));
                        }
                        let sum = f64::from_bits(h.sum.load(Ordering::Relaxed));
                        let _ = writeln!(out, "{name}_sum{} {sum}", render_labels(labels, None));
                        let _ = writeln!(
                            out,
                            "{name}_count{} {}",
                            render_labels(labels, None),
                            h.count.load(Ordering::Relaxed)
                        );
                    }
                }
            }
        }
        out
    }
}

fn render_labels(labels: &Labels, extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
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
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let health = health.clone();
                    connections.spawn(answer(stream, health));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
    });
    Ok((bound, task))
}

async fn answer(mut stream: tokio::net::TcpStream, health: HealthCheck) {
    let mut buf = vec![0u8; 4096];
    let mut read = 0;
    while read < buf.len() {
        match stream.read(&mut buf[read..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                read += n;
                if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let request = String::from_utf8_lossy(&buf[..read]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, content_type, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", global().render()),
        "/health" | "/healthz" => match health() {
            Ok(details) => ("200 OK", "application/json", details),
            Err(reason) => ("503 Service Unavailable", "application/json", reason),
        },
        _ => ("404 Not Found", "text/plain", "try /metrics or /health\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let r = Registry::default();
        r.counter("strata_events_total", "Events consumed.", &[("source", "clicks")])
            .add(3);
        r.gauge("strata_lag", "Lag.", &[("partition", "0")]).set(7);
        let h = r.histogram("strata_latency_seconds", "Latency.", &[], &[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let text = r.render();
        assert!(
            text.contains("# TYPE strata_events_total counter\nstrata_events_total{source=\"clicks\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("strata_lag{partition=\"0\"} 7"), "{text}");
        assert!(text.contains("strata_latency_seconds_bucket{le=\"0.1\"} 1\n"), "{text}");
        assert!(text.contains("strata_latency_seconds_bucket{le=\"1\"} 2\n"), "{text}");
        assert!(
            text.contains("strata_latency_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("strata_latency_seconds_count 3"), "{text}");
        assert_eq!(h.quantile(0.3), Some(0.1));
        assert_eq!(h.quantile(0.6), Some(1.0));
        assert_eq!(h.quantile(1.0), Some(f64::INFINITY));
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        global().counter("strata_test_total", "A test counter.", &[]).inc();
        let stop = CancellationToken::new();
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let h = healthy.clone();
        let check: HealthCheck = Arc::new(move || {
            if h.load(Ordering::SeqCst) {
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
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/metrics").await.contains("strata_test_total 1"));
        assert!(get("/health").await.starts_with("HTTP/1.1 200 OK"));
        healthy.store(false, Ordering::SeqCst);
        assert!(get("/health").await.starts_with("HTTP/1.1 503"));
        stop.cancel();
        task.await.unwrap();
    }
}
