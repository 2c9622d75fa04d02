//! The ceilings of the speed benchmark: librdkafka consuming a topic, touching every payload
//! and doing nothing else.
//!
//! raw_consume BROKERS TOPIC MESSAGES [KEY=VALUE ...]
//!     consumes MESSAGES from the beginning as fast as it can  ->  "messages seconds bytes checksum"
//! raw_consume BROKERS TOPIC follow [KEY=VALUE ...]
//!     consumes what is produced from now until its standard input closes, timing each
//!     record that has a key (the benchmark's probes; the load has none) from its Kafka
//!     timestamp (the produce call) to its consumption, from 3 s after the first record on
//!     ->  "probes p50_ms p99_ms max_ms messages" (messages: every record consumed)
//!
//! KEY=VALUE pairs are librdkafka properties (e.g. fetch.wait.max.ms=5, as Strata's).

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, topic, mode, properties @ ..] = args.as_slice() else {
        eprintln!("usage: raw_consume BROKERS TOPIC MESSAGES|follow [KEY=VALUE ...]");
        std::process::exit(2);
    };
    let follow = mode == "follow";
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("raw-consume-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", if follow { "latest" } else { "earliest" });
    for p in properties {
        let (k, v) = p.split_once('=').expect("properties are KEY=VALUE");
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    if follow {
        follow_delays(&consumer);
    } else {
        consume_all(&consumer, mode.parse().expect("MESSAGES is a number or follow"));
    }
}

fn consume_all(consumer: &BaseConsumer, expected: u64) {
    let (mut messages, mut bytes, mut checksum) = (0u64, 0u64, 0u64);
    let mut started: Option<Instant> = None;
    while messages < expected {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            let payload = m.payload().unwrap_or_default();
            bytes += payload.len() as u64;
            checksum = checksum.wrapping_add(payload.first().copied().unwrap_or(0) as u64);
            messages += 1;
        }
    }
    let seconds = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    println!("{messages} {seconds} {bytes} {checksum}");
}

/// How long after its first record the follow mode starts timing.
const WARM_UP: Duration = Duration::from_secs(3);

fn follow_delays(consumer: &BaseConsumer) {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stop.store(true, Ordering::Relaxed);
        });
    }
    // Delays in ms, one count per millisecond up to a minute.
    let mut counts = vec![0u64; 60_001];
    let (mut messages, mut consumed, mut checksum) = (0u64, 0u64, 0u64);
    let mut first: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            consumed += 1;
            let payload = m.payload().unwrap_or_default();
            checksum = checksum.wrapping_add(payload.first().copied().unwrap_or(0) as u64);
            // The first seconds (the group join, the catch-up after it) are not timed.
            if first.get_or_insert_with(Instant::now).elapsed() < WARM_UP {
                continue;
            }
            if m.key().is_none() {
                continue;
            }
            if let Some(produced) = m.timestamp().to_millis() {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock after 1970")
                    .as_millis() as i64;
                counts[(now - produced).clamp(0, 60_000) as usize] += 1;
                messages += 1;
            }
        }
    }
    let quantile = |q: f64| {
        let want = ((q * messages as f64).ceil() as u64).max(1);
        let mut seen = 0;
        counts.iter().position(|c| {
            seen += c;
            seen >= want
        })
    };
    let max = counts.iter().rposition(|&c| c > 0);
    match (quantile(0.5), quantile(0.99), max) {
        (Some(p50), Some(p99), Some(max)) if messages > 0 => println!("{messages} {p50} {p99} {max} {consumed}"),
        _ => println!("0 0 0 0 {consumed}"),
    }
    eprintln!("checksum {checksum}");
}
