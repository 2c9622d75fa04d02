//! Queries under limits: in `strata run` (speed and serving in one process, on Apache Kafka)
//! a query that needs more memory than the pool fails with RESOURCE_EXHAUSTED, one that runs
//! past the timeout with DEADLINE_EXCEEDED, and a query whose client goes away stops using
//! CPU, while the same process keeps ingesting and answering other queries exactly.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{Scratch, StrataServer, free_port, heavy, strata};
use crate::historical::{example_config, generate};
use crate::kafka::Kafka;
use crate::speed::{oracle, produce_with, wait_produced};

/// Runs `strata query` and returns (success, stderr).
fn query(config: &std::path::Path, endpoint: &str, sql: &str) -> (bool, String) {
    let out = strata(config)
        .args(["query", sql, "--endpoint", endpoint, "--format", "csv"])
        .output()
        .expect("strata query");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// CPU seconds a process has used so far (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/pid/stat");
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Events consumed so far, from the metrics endpoint.
fn consumed(metrics: SocketAddr) -> u64 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(metrics).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page.lines()
        .filter(|l| l.starts_with("strata_events_consumed_total") || l.starts_with("strata_events_rejected_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn greedy_and_slow_queries_fail_alone_while_the_process_ingests() {
    let _heavy = heavy();
    let scratch = Scratch::new("limits");
    let broker = Kafka::start(&scratch);
    broker.create_topic("page_views", 4);
    let lake = scratch.path("lake");
    let config = example_config(&scratch.0, lake.to_str().unwrap(), "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("interval = \"5m\"\n", "")
        .replace("# query_memory = \"2GiB\"", "query_memory = \"64MiB\"")
        .replace("query_timeout = \"5m\"", "query_timeout = \"4s\"");
    assert!(
        text.contains("query_memory = \"64MiB\""),
        "the example config changed shape"
    );
    std::fs::write(&config, text).unwrap();
    let data = scratch.path("events.jsonl");
    let positions = scratch.path("positions.jsonl");
    let total = 120_000;
    generate(&config, &data, total, 5);
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics_text = metrics.to_string();
    let env = [
        ("STRATA_KAFKA_BROKERS", broker.brokers.as_str()),
        ("STRATA_METRICS_ADDRESS", metrics_text.as_str()),
    ];
    let mut server = StrataServer::start_command(&config, "run", &env);
    let endpoint = server.endpoint();
    wait_produced(produce_with(&broker.brokers, &data, &positions, 1, total / 2 + 1, &[]));
    oracle(&endpoint, &scratch, &data, &positions, total / 2, false);

    // The rest is produced while the greedy and the slow query run.
    let producer = produce_with(&broker.brokers, &data, &positions, total / 2 + 1, total + 1, &[]);
    let before = consumed(metrics);
    let (ok, out) = query(
        &config,
        &endpoint,
        "SELECT count(*) FROM generate_series(1, 30000000) a JOIN generate_series(1, 30000000) b ON a.value = b.value",
    );
    assert!(
        !ok && out.contains("ResourceExhausted:") && out.contains("serve.query_memory"),
        "{out}"
    );
    let started = Instant::now();
    let (ok, out) = query(
        &config,
        &endpoint,
        "SELECT count(*) FROM generate_series(1, 1000000000000) WHERE value % 7 = 9",
    );
    assert!(
        !ok && out.contains("DeadlineExceeded:") && out.contains("serve.query_timeout"),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "the deadline is 4 s");
    // Meanwhile the speed layer went on, and other queries answer.
    wait_produced(producer);
    assert!(consumed(metrics) > before, "the speed layer kept consuming");
    oracle(&endpoint, &scratch, &data, &positions, total, false);

    // A client that goes away: its query stops using CPU (the process is otherwise idle
    // now that everything is consumed).
    let mut client = strata(&config)
        .args([
            "query",
            "SELECT count(*) FROM generate_series(1, 1000000000000) WHERE value % 7 = 9",
            "--endpoint",
            &endpoint,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = server.process.pid();
    let running_from = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(2));
    let running = cpu_seconds(pid) - running_from;
    assert!(running > 1.0, "the query runs ({running:.2} CPU s in 2 s)");
    let _ = client.kill();
    let _ = client.wait();
    std::thread::sleep(Duration::from_millis(500));
    let idle_from = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(2));
    let idle = cpu_seconds(pid) - idle_from;
    assert!(
        idle < 0.5,
        "the query went on after its client left: {idle:.2} CPU s in 2 s"
    );

    let (ok, out) = query(&config, &endpoint, "SELECT count(*) AS n FROM raw.page_views");
    assert!(ok, "{out}");
    assert!(server.process.terminate(), "strata run did not stop cleanly");
    broker.stop();
}
