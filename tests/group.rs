//! Exactly once with many processes, on Apache Kafka: two `strata speed` processes in one
//! consumer group (cooperative rebalancing) and a separate `strata serve` over both. Events
//! keyed by user go to 6 partitions; a phase comes from a transactional producer that also
//! aborts transactions; each speed process is killed with SIGKILL and restarted at random
//! moments; batch runs come in between, one of them killed mid-run; both processes go down
//! at once for a while. At every check point each view equals DuckDB over the valid events
//! consumed, a monitor querying all along never sees fewer events in a view than the lake
//! held before the query, a partition nobody consumes raises the alarm, and at the end each
//! valid event is in the raw table once and each malformed record in the rejected table once.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{Process, Scratch, StrataServer, free_port, http_get, python, repo, run_ok, strata};
use crate::historical::{example_config, generate};
use crate::kafka::Kafka;
use crate::speed::{oracle, oracle_with, produce_with, wait_consumed, wait_produced};

const TOPIC: &str = "page_views";

fn events() -> u64 {
    std::env::var("STRATA_E2E_GROUP_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(240_000)
}

/// `strata speed` on `address`, started when it prints its banner.
fn start_speed(config: &Path, env: &[(&str, &str)], address: SocketAddr, name: &str) -> Process {
    let mut child = strata(config)
        .args(["speed", "--address", &address.to_string()])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start strata speed");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("strata speed serving states on"), "{name}: {line}");
    Process {
        child,
        name: name.into(),
    }
}

fn kill(process: &mut Process) {
    let _ = process.child.kill();
    let _ = process.child.wait();
}

/// Runs a query with `strata query`; its CSV.
fn query(config: &Path, endpoint: &str, sql: &str) -> String {
    run_ok(strata(config).args(["query", sql, "--endpoint", endpoint, "--format", "csv"]))
}

/// Polls until `check` holds on the CSV of `sql` (at most `within`).
pub fn wait_query(config: &Path, endpoint: &str, sql: &str, within: Duration, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let out = strata(config)
            .args(["query", sql, "--endpoint", endpoint, "--format", "csv"])
            .output()
            .expect("strata query");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && check(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "`{sql}` did not reach the expected answer in {within:?}; last: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The monitor of visible vs archived events, in the background.
struct Monitor {
    child: Child,
    out: PathBuf,
}

impl Monitor {
    fn start(endpoint: &str, scratch: &Scratch) -> Monitor {
        let out = scratch.path("monitor.json");
        let child = Command::new(python())
            .arg(repo().join("tests/python/monitor.py"))
            .args(["--endpoint", endpoint, "--out"])
            .arg(&out)
            .spawn()
            .expect("start the monitor");
        Monitor { child, out }
    }

    fn finish(mut self) -> serde_json::Value {
        std::fs::write(format!("{}.stop", self.out.display()), b"").unwrap();
        let status = self.child.wait().expect("monitor");
        assert!(status.success(), "the monitor failed");
        serde_json::from_str(&std::fs::read_to_string(&self.out).unwrap()).unwrap()
    }
}

#[test]
fn two_speed_processes_through_kills_rebalances_and_transactions_equal_duckdb() {
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("group");
    let broker = Kafka::start(&scratch);
    broker.create_topic(TOPIC, 6);
    let lake = scratch.path("lake");
    let extra = "\n";
    let config = example_config(&scratch.0, lake.to_str().unwrap(), extra).to_path_buf();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("flush_interval = \"1s\"", "flush_interval = \"300ms\"")
        .replace("interval = \"5m\"\n", "")
        .replace(
            "\"auto.offset.reset\" = \"earliest\"",
            "\"auto.offset.reset\" = \"earliest\"\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\"partition.assignment.strategy\" = \"cooperative-sticky\"",
        )
        .replace("speed_timeout = \"5s\"", "speed_timeout = \"3s\"")
        .replace("unowned_partition_grace = \"60s\"", "unowned_partition_grace = \"2s\"")
        .replace("partition_check_interval = \"5s\"", "partition_check_interval = \"300ms\"");
    assert!(
        text.contains("unowned_partition_grace = \"2s\""),
        "the example config changed shape"
    );
    std::fs::write(&config, text).unwrap();
    let data = scratch.path("events.jsonl");
    let positions = scratch.path("positions.jsonl");
    let total = events();
    generate(&config, &data, total, 21);
    let env = [("STRATA_KAFKA_BROKERS", broker.brokers.as_str())];

    let addresses: Vec<SocketAddr> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
        .collect();
    let endpoints = addresses
        .iter()
        .map(|a| format!("http://{a}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut speed = vec![
        start_speed(&config, &env, addresses[0], "speed A"),
        start_speed(&config, &env, addresses[1], "speed B"),
    ];
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics_text = metrics.to_string();
    let serve_env = [
        ("STRATA_KAFKA_BROKERS", broker.brokers.as_str()),
        ("STRATA_SPEED_ENDPOINTS", endpoints.as_str()),
        ("STRATA_METRICS_ADDRESS", metrics_text.as_str()),
    ];
    let mut server = StrataServer::start(&config, &serve_env);
    let endpoint = server.endpoint();
    let monitor = Monitor::start(&endpoint, &scratch);
    let mut rng = StdRng::seed_from_u64(21);
    let chunk = total / 4;

    // 1. Both processes share the partitions.
    wait_produced(produce_with(&broker.brokers, &data, &positions, 1, chunk + 1, &[]));
    oracle(&endpoint, &scratch, &data, &positions, chunk, false);
    let owners = wait_query(
        &config,
        &endpoint,
        "SELECT count(DISTINCT owner) AS n, count(*) AS p FROM system.partitions WHERE owner IS NOT NULL",
        Duration::from_secs(60),
        |csv| csv == "n,p\n2,6\n",
    );
    println!("phase 1: both processes own partitions: {owners:?}");

    // 2. Speed A is killed at a random moment and restarted.
    let producer = produce_with(&broker.brokers, &data, &positions, chunk + 1, 2 * chunk + 1, &[]);
    let at = chunk + rng.random_range(1..chunk / 2);
    wait_consumed(&endpoint, at);
    println!("phase 2: SIGKILL to speed A after {at}+ lines");
    kill(&mut speed[0]);
    wait_produced(producer);
    speed[0] = start_speed(&config, &env, addresses[0], "speed A");
    oracle(&endpoint, &scratch, &data, &positions, 2 * chunk, false);
    let out = run_ok(strata(&config).args(["batch", "run"]).envs(env));
    println!(
        "phase 2: {}",
        out.lines()
            .filter(|l| l.contains("published"))
            .collect::<Vec<_>>()
            .join("; ")
    );

    // 3. A transactional producer (committed and aborted transactions); speed B is killed
    // meanwhile and restarted.
    let producer = produce_with(
        &broker.brokers,
        &data,
        &positions,
        2 * chunk + 1,
        3 * chunk + 1,
        &["--transactional", "strata-e2e", "--txn-lines", "700"],
    );
    let at = 2 * chunk + rng.random_range(1..chunk / 2);
    wait_consumed(&endpoint, at);
    println!("phase 3: SIGKILL to speed B after {at}+ lines (offsets include transaction markers)");
    kill(&mut speed[1]);
    wait_produced(producer);
    speed[1] = start_speed(&config, &env, addresses[1], "speed B");
    oracle(&endpoint, &scratch, &data, &positions, 3 * chunk, true);

    // 4. A batch run killed mid-run publishes nothing half; the next run publishes.
    let mut batch = strata(&config)
        .args(["batch", "run", "--force"])
        .envs(env)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(rng.random_range(200..1500)));
    let _ = batch.kill();
    let _ = batch.wait();
    oracle(&endpoint, &scratch, &data, &positions, 3 * chunk, false);
    run_ok(strata(&config).args(["batch", "run"]).envs(env));
    // Everything consumed archived, before both processes go.
    oracle(&endpoint, &scratch, &data, &positions, 3 * chunk, true);

    // 5. Both processes down: answers come from the lake, still exact; the partitions nobody
    // consumes raise the alarm; it clears when they are back.
    kill(&mut speed[0]);
    kill(&mut speed[1]);
    // Nothing consumes now: the answers come from the lake alone (all of it archived above).
    oracle_with(&endpoint, &scratch, &data, &positions, 3 * chunk, false, &[]);
    let alarms = wait_query(
        &config,
        &endpoint,
        "SELECT count(*) AS alarms, count(owner) AS owned, min(answered_from) AS source FROM system.partitions WHERE alarm",
        Duration::from_secs(30),
        |csv| csv == "alarms,owned,source\n6,0,lake\n",
    );
    println!("phase 5: both processes down: {alarms:?}");
    let health = http_get(metrics, "/health");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains("\"degraded\"") && health.contains("unowned_partitions"),
        "{health}"
    );
    let metrics_page = http_get(metrics, "/metrics");
    assert!(metrics_page.contains("strata_partitions_unowned 6"), "{metrics_page}");
    speed[0] = start_speed(&config, &env, addresses[0], "speed A");
    speed[1] = start_speed(&config, &env, addresses[1], "speed B");
    wait_query(
        &config,
        &endpoint,
        "SELECT count(*) AS alarms FROM system.partitions WHERE alarm",
        Duration::from_secs(60),
        |csv| csv == "alarms\n0\n",
    );
    assert!(http_get(metrics, "/health").contains("\"serving\""));

    // 6. The rest, then everything archived exactly once.
    wait_produced(produce_with(
        &broker.brokers,
        &data,
        &positions,
        3 * chunk + 1,
        total + 1,
        &[],
    ));
    oracle(&endpoint, &scratch, &data, &positions, total, true);
    run_ok(strata(&config).args(["batch", "run"]).envs(env));
    oracle(&endpoint, &scratch, &data, &positions, total, true);

    let summary = monitor.finish();
    println!("monitor: {summary}");
    assert_eq!(summary["violations"], serde_json::json!([]), "{summary}");
    assert!(summary["rounds"].as_u64().unwrap() >= 20, "{summary}");
    let late = query(
        &config,
        &endpoint,
        "SELECT sum(events) AS e FROM system.lateness WHERE view = 'page_stats'",
    );
    let late: u64 = late.lines().nth(1).unwrap().parse().unwrap();
    assert!(late > 0, "late events are counted");
    for p in &mut speed {
        assert!(p.terminate(), "{} did not stop cleanly on SIGTERM", p.name);
    }
    assert!(server.process.terminate());
    broker.stop();
}
