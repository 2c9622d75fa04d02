//! The steady load of the freshness benchmark: produces the lines of a file, round robin
//! over a topic's partitions, at a fixed rate, until its standard input closes. A load
//! generator in Python takes most of a core at the rates the benchmark needs; this one
//! leaves the cores to the broker and Strata.
//!
//! produce_load BROKERS TOPIC PARTITIONS FILE RATE [LINGER_MS]
//!     ->  prints the count sent, every 50 ms
//!
//! LINGER_MS (librdkafka's `linger.ms`, default 5 as librdkafka's own) sets how many records
//! a batch gathers. tansu 0.6 (the test broker) lists every batch a partition holds on each
//! fetch, so many small batches slow it down as they accumulate: at 1 ms its floor (bare
//! librdkafka's produce-to-consume delay) reached p99 850 ms within 15 s at 2,000
//! records/s, against 72 ms at 5 ms.

use std::io::{BufRead, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (brokers, topic, partitions, file, rate, linger) = match args.as_slice() {
        [_, b, t, p, f, r] => (b, t, p, f, r, "5"),
        [_, b, t, p, f, r, l] => (b, t, p, f, r, l.as_str()),
        _ => {
            eprintln!("usage: produce_load BROKERS TOPIC PARTITIONS FILE RATE [LINGER_MS]");
            std::process::exit(2);
        }
    };
    let partitions: i32 = partitions.parse().expect("PARTITIONS is a number");
    let rate: f64 = rate.parse().expect("RATE is a number of records per second");
    let lines: Vec<Vec<u8>> = std::io::BufReader::new(std::fs::File::open(file).expect("FILE opens"))
        .split(b'\n')
        .map(|l| l.expect("FILE reads"))
        .filter(|l| !l.is_empty())
        .collect();
    assert!(!lines.is_empty(), "{file} has no records");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger)
        .create()
        .expect("producer");
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stop.store(true, Ordering::Relaxed);
        });
    }
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut sent: u64 = 0;
    let mut out = std::io::stdout().lock();
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let line = &lines[(sent % lines.len() as u64) as usize];
            let partition = (sent % partitions as u64) as i32;
            match producer.send(BaseRecord::<(), [u8]>::to(topic).payload(line).partition(partition)) {
                Ok(()) => sent += 1,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
        if last_report.elapsed() >= Duration::from_millis(50) {
            writeln!(out, "{sent}").and_then(|()| out.flush()).expect("stdout");
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    writeln!(out, "{sent}").and_then(|()| out.flush()).expect("stdout");
}
