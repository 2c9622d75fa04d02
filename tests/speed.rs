//! The speed layer against Apache Kafka: events keyed by user to a 6-partition topic, batch
//! runs interleaved, the speed process killed with SIGKILL twice at random moments and
//! restarted; at every query point each view equals DuckDB over exactly the valid events
//! produced so far, and at the end the lake holds each valid event and each malformed record
//! exactly once.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{
    Process, Scratch, StrataServer, certificates, free_port, python, repo, run_ok, run_python, strata,
};
use crate::historical::{example_config, generate};
use crate::kafka::Kafka;

const PARTITIONS: i32 = 6;
const TOPIC: &str = "page_views";

pub fn events() -> u64 {
    std::env::var("STRATA_E2E_KAFKA_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000)
}

/// Produces lines [from, to) of the data file in the background, keyed by user; where each
/// landed goes to `positions`. `extra`: more options of produce.py (--transactional ID).
pub fn produce_with(
    brokers: &str,
    data: &Path,
    positions: &Path,
    from: u64,
    to: u64,
    extra: &[&str],
) -> std::process::Child {
    Command::new(python())
        .arg(repo().join("tests/python/produce.py"))
        .args(["--brokers", brokers, "--topic", TOPIC])
        .arg("--file")
        .arg(data)
        .arg("--positions")
        .arg(positions)
        .args(["--from-line", &from.to_string(), "--to-line", &to.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the producer")
}

pub fn wait_produced(child: std::process::Child) {
    let out = child.wait_with_output().expect("producer");
    assert!(
        out.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the oracle on the first `lines` lines, once the speed layer has consumed them.
pub fn oracle(endpoint: &str, scratch: &Scratch, data: &Path, positions: &Path, lines: u64, full: bool) {
    oracle_with(endpoint, scratch, data, positions, lines, full, &["--wait-consumed"]);
}

/// The oracle with more of its options (`--wait-consumed`, `--page-stats-minutes 2`).
pub fn oracle_with(
    endpoint: &str,
    scratch: &Scratch,
    data: &Path,
    positions: &Path,
    lines: u64,
    full: bool,
    extra: &[&str],
) {
    let lines = lines.to_string();
    let mut args = vec![
        "--endpoint",
        endpoint,
        "--scratch",
        scratch.0.to_str().unwrap(),
        "--lines",
        &lines,
        "--positions",
        positions.to_str().unwrap(),
    ];
    if full {
        args.push("--check-archive");
    } else {
        args.push("--views-only");
    }
    args.extend(extra);
    args.push(data.to_str().unwrap());
    let out = run_python("oracle.py", &args);
    assert!(out.contains("oracle: every view equals DuckDB"), "{out}");
    println!(
        "after {lines} lines: {}",
        out.lines().take(2).collect::<Vec<_>>().join("; ")
    );
}

/// Polls the served consumed position until it reaches `at_least`.
pub fn wait_consumed(endpoint: &str, at_least: u64) {
    let script = format!(
        "import sys, time\nsys.path.insert(0, '{}')\nfrom flight_clients import PyArrowFlightSql\nc = PyArrowFlightSql('{endpoint}')\n\
         deadline = time.monotonic() + 120\nwhile time.monotonic() < deadline:\n    try:\n        n = c.query('SELECT coalesce(sum(consumed_offset), 0) AS n FROM system.partitions').to_pylist()[0]['n']\n        if n >= {at_least}: sys.exit(0)\n    except Exception: pass\n    time.sleep(0.01)\nsys.exit('never consumed {at_least}')\n",
        repo().join("tests/python").display()
    );
    run_ok(Command::new(python()).args(["-c", &script]));
}

/// The speed layer under test: in `strata run`, or `strata speed` + `strata serve`.
pub enum Deployment {
    OneProcess,
    Separate,
}

struct Running {
    speed: Process,
    server: Option<StrataServer>,
    endpoint: String,
}

fn start(
    deployment: &Deployment,
    config: &Path,
    env: &[(&str, &str)],
    speed_address: SocketAddr,
    server: Option<StrataServer>,
) -> Running {
    match deployment {
        Deployment::OneProcess => {
            let s = StrataServer::start_command(config, "run", env);
            let endpoint = s.endpoint();
            Running {
                speed: s.process,
                server: None,
                endpoint,
            }
        }
        Deployment::Separate => {
            let mut cmd = strata(config);
            cmd.args(["speed", "--address", &speed_address.to_string()])
                .envs(env.iter().copied())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            let mut child = cmd.spawn().expect("start strata speed");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert!(line.contains("strata speed serving states on"), "{line}");
            let server = server.unwrap_or_else(|| {
                let endpoint = format!("grpc+tls://{speed_address}");
                let mut env = env.to_vec();
                env.push(("STRATA_SPEED_ENDPOINTS", &endpoint));
                StrataServer::start(config, &env)
            });
            let endpoint = server.endpoint();
            Running {
                speed: Process {
                    child,
                    name: "strata speed".into(),
                },
                server: Some(server),
                endpoint,
            }
        }
    }
}

/// The speed oracle of `total` events with the lake at `lake_url`, every process started with
/// `extra_env` too. The caller holds `heavy()` (it may start the lake's store first).
pub fn speed_oracle(
    deployment: Deployment,
    scratch: &Scratch,
    lake_url: &str,
    total: u64,
    seed: u64,
    extra_env: &[(&str, &str)],
) {
    let broker = Kafka::start(scratch);
    broker.create_topic(TOPIC, PARTITIONS);
    let positions = scratch.path("positions.jsonl");
    // Archive often, and let a restarted consumer rejoin the group quickly.
    let config = example_config(&scratch.0, lake_url, "").to_path_buf();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("flush_interval = \"1s\"", "flush_interval = \"300ms\"")
        .replace("interval = \"5m\"\n", "")
        .replace("\"auto.offset.reset\" = \"earliest\"", "\"auto.offset.reset\" = \"earliest\"\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"");
    std::fs::write(&config, text).unwrap();
    let data = scratch.path("events.jsonl");
    generate(&config, &data, total, seed);
    // Apart, the serving layer reaches the speed layer over TLS, trusting the test's CA.
    let (ca, cert, key) = certificates(&scratch.0);
    let mut env = vec![("STRATA_KAFKA_BROKERS", broker.brokers.as_str())];
    env.extend_from_slice(extra_env);
    if matches!(deployment, Deployment::Separate) {
        env.extend([
            ("STRATA_SPEED_TLS_CERT", cert.to_str().unwrap()),
            ("STRATA_SPEED_TLS_KEY", key.to_str().unwrap()),
            ("STRATA_SPEED_TLS_CA", ca.to_str().unwrap()),
        ]);
    }
    let env = env.as_slice();

    let speed_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut running = start(&deployment, &config, env, speed_address, None);
    let mut rng = StdRng::seed_from_u64(seed);
    let chunks = 8u64;
    let per_chunk = total / chunks;
    let kills: Vec<u64> = {
        let first = rng.random_range(1..4);
        vec![first, rng.random_range(first + 1..chunks - 1)]
    };
    let batch_after = [1u64, 3, 4, 6];
    let mut produced = 0u64;
    for chunk in 0..chunks {
        let to = if chunk == chunks - 1 {
            total
        } else {
            produced + per_chunk
        };
        let producer = produce_with(&broker.brokers, &data, &positions, produced + 1, to + 1, &[]);
        if kills.contains(&chunk) {
            // A random moment: once the speed layer has consumed a random share of the chunk.
            let at = produced + rng.random_range(1..per_chunk);
            wait_consumed(&running.endpoint, at);
            println!("chunk {chunk}: SIGKILL to the speed process after {at}+ lines");
            let _ = running.speed.child.kill();
            let _ = running.speed.child.wait();
            wait_produced(producer);
            let server = running.server.take();
            running = start(&deployment, &config, env, speed_address, server);
        } else {
            wait_produced(producer);
        }
        produced = to;
        if batch_after.contains(&chunk) {
            let out = run_ok(strata(&config).args(["batch", "run"]).envs(env.iter().copied()));
            println!(
                "chunk {chunk}: {}",
                out.lines()
                    .filter(|l| l.contains("published"))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        oracle(&running.endpoint, scratch, &data, &positions, produced, false);
    }
    // The end: everything archived exactly once, rejects exactly once, views still exact.
    oracle(&running.endpoint, scratch, &data, &positions, produced, true);
    let out = run_ok(strata(&config).args(["batch", "run"]).envs(env.iter().copied()));
    assert!(out.contains("published view page_stats"), "{out}");
    oracle(&running.endpoint, scratch, &data, &positions, produced, true);
    let status = run_ok(strata(&config).args([
        "query",
        "SELECT view, batch_version IS NOT NULL AS published, speed_generations >= 0 AS live FROM system.freshness ORDER BY view",
        "--endpoint",
        &running.endpoint,
        "--format",
        "csv",
    ]));
    assert_eq!(
        status,
        "view,published,live\ndevice_5m,true,true\npage_stats,true,true\n"
    );
    let late = run_ok(strata(&config).args([
        "query",
        "SELECT sum(late_events) AS late FROM system.partitions",
        "--endpoint",
        &running.endpoint,
        "--format",
        "csv",
    ]));
    let late: u64 = late.lines().nth(1).unwrap().parse().unwrap();
    assert!(late > 0, "late events are counted");
    assert!(
        running.speed.terminate(),
        "the speed process did not stop cleanly on SIGTERM"
    );
    if let Some(mut s) = running.server.take() {
        assert!(s.process.terminate());
    }

    // An operator changes a view's definition and restarts: until a batch run recomputes
    // it, its answers come from the lake and the speed layer, under the new definition only.
    let text = std::fs::read_to_string(&config).unwrap();
    let changed = text.replace(
        "GROUP BY tumble(ts, INTERVAL '1 minute'), country",
        "GROUP BY tumble(ts, INTERVAL '2 minutes'), country",
    );
    assert_ne!(changed, text, "the example view changed shape");
    std::fs::write(&config, changed).unwrap();
    let mut running = start(&deployment, &config, env, speed_address, None);
    let two_minutes = ["--wait-consumed", "--page-stats-minutes", "2"];
    oracle_with(
        &running.endpoint,
        scratch,
        &data,
        &positions,
        produced,
        false,
        &two_minutes,
    );
    let current = |endpoint: &str| {
        let sql = "SELECT view, batch_current FROM system.freshness ORDER BY view";
        run_ok(strata(&config).args(["query", sql, "--endpoint", endpoint, "--format", "csv"]))
    };
    assert_eq!(
        current(&running.endpoint),
        "view,batch_current\ndevice_5m,true\npage_stats,false\n"
    );
    let out = run_ok(strata(&config).args(["batch", "run"]).envs(env.iter().copied()));
    assert!(
        out.contains("published view page_stats") && out.contains("view device_5m: up to date"),
        "{out}"
    );
    oracle_with(
        &running.endpoint,
        scratch,
        &data,
        &positions,
        produced,
        true,
        &two_minutes,
    );
    assert_eq!(
        current(&running.endpoint),
        "view,batch_current\ndevice_5m,true\npage_stats,true\n"
    );
    assert!(
        running.speed.terminate(),
        "the speed process did not stop cleanly on SIGTERM"
    );
    if let Some(mut s) = running.server.take() {
        assert!(s.process.terminate());
    }
}

#[test]
fn speed_layer_equals_duckdb_through_kills_in_one_process() {
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("speed-run");
    let lake = scratch.path("lake");
    speed_oracle(
        Deployment::OneProcess,
        &scratch,
        lake.to_str().unwrap(),
        events(),
        11,
        &[],
    );
}

#[test]
fn speed_layer_equals_duckdb_through_kills_with_serve_in_another_process() {
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("speed-separate");
    let lake = scratch.path("lake");
    speed_oracle(
        Deployment::Separate,
        &scratch,
        lake.to_str().unwrap(),
        events(),
        12,
        &[],
    );
}

/// `serve.real_time_recency` on Apache Kafka. Plain and transactional chunks alternate (each
/// committed transaction followed by an aborted one), each then checked against DuckDB with
/// no wait for the consumer; then, from one client, twenty times an event is produced and
/// made readable (acknowledged, or committed in a transaction and its marker written: Kafka
/// writes markers after the commit returns) and at once one query must count it.
/// A partition's last offsets are then transaction markers, which the consumer never sees as
/// records: no query waits out its bound for them (`strata_speed_recency_missed_total` 0).
#[test]
fn real_time_recency_counts_every_record_acknowledged_before_the_query() {
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("speed-recency");
    let broker = Kafka::start(&scratch);
    broker.create_topic(TOPIC, 3);
    let lake = scratch.path("lake");
    let config = example_config(&scratch.0, lake.to_str().unwrap(), "");
    let text = std::fs::read_to_string(&config).unwrap();
    let with_recency = text.replace("real_time_recency = false", "real_time_recency = true");
    assert_ne!(with_recency, text, "the example config sets serve.real_time_recency");
    std::fs::write(&config, with_recency).unwrap();
    let total = 20_000u64;
    let data = scratch.path("events.jsonl");
    generate(&config, &data, total, 5);
    let positions = scratch.path("positions.jsonl");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics_text = metrics.to_string();
    let env = [
        ("STRATA_KAFKA_BROKERS", broker.brokers.as_str()),
        ("STRATA_METRICS_ADDRESS", metrics_text.as_str()),
    ];
    let mut run = StrataServer::start_command(&config, "run", &env);
    let endpoint = run.endpoint();
    // Recency is for the partitions a process owns: the test starts once it owns them all.
    crate::group::wait_query(
        &config,
        &endpoint,
        "SELECT count(owner) AS owned FROM system.partitions",
        std::time::Duration::from_secs(60),
        |csv| csv == "owned\n3\n",
    );
    let chunks = 4u64;
    for chunk in 0..chunks {
        let (from, to) = (chunk * total / chunks + 1, (chunk + 1) * total / chunks + 1);
        let extra: &[&str] = if chunk % 2 == 1 {
            &["--transactional", "strata-recency", "--txn-lines", "700"]
        } else {
            &[]
        };
        wait_produced(produce_with(&broker.brokers, &data, &positions, from, to, extra));
        oracle_with(&endpoint, &scratch, &data, &positions, to - 1, false, &[]);
    }
    let out = run_python(
        "recency.py",
        &[
            "--endpoint",
            &endpoint,
            "--brokers",
            &broker.brokers,
            "--topic",
            TOPIC,
            "--rounds",
            "20",
        ],
    );
    assert!(out.contains("recency: 20 rounds, every event counted"), "{out}");
    let page = crate::common::http_get(metrics, "/metrics");
    assert!(
        page.contains("strata_speed_recency_missed_total 0\n"),
        "{}",
        page.lines()
            .filter(|l| l.contains("recency"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(run.process.terminate(), "strata run did not stop cleanly on SIGTERM");
    broker.stop();
}
