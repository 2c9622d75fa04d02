//! The ceiling of the ingest benchmark: librdkafka consuming a topic as fast as it can,
//! touching every payload and doing nothing else.
//!
//! raw_consume BROKERS TOPIC MESSAGES  ->  prints "messages seconds bytes"

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, topic, expected] = args.as_slice() else {
        eprintln!("usage: raw_consume BROKERS TOPIC MESSAGES");
        std::process::exit(2);
    };
    let expected: u64 = expected.parse().expect("MESSAGES is a number");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("raw-consume-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
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
