//! `strata produce`: the generator's clickstream, live, to a Kafka topic at a steady rate
//! (the demo's event source, and a sample producer for real deployments).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use tokio_util::sync::CancellationToken;

use crate::generate::{Generator, Spec};

/// Counts of what a producer sent.
#[derive(Debug, Default)]
pub struct Produced {
    pub records: AtomicU64,
    pub malformed: AtomicU64,
}

/// Produces generated records to `topic` at `rate` per second until `stop` or `limit`
/// records. Runs on the calling thread (blocking).
pub fn produce(
    brokers: &str,
    topic: &str,
    rate: f64,
    limit: Option<u64>,
    spec: Spec,
    stop: &CancellationToken,
    counts: &Arc<Produced>,
) -> Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .with_context(|| format!("cannot create a Kafka producer for {brokers}"))?;
    let mut generator = Generator::new(spec);
    let started = Instant::now();
    let tick = Duration::from_millis(10);
    let mut sent = 0u64;
    while !stop.is_cancelled() && limit.is_none_or(|l| sent < l) {
        // Catch up to the rate: records due by now.
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        let due = limit.map_or(due, |l| due.min(l));
        while sent < due {
            let now = chrono::Utc::now().timestamp_micros();
            let (record, malformed) = generator.live_record(now);
            let mut pending = BaseRecord::<(), str>::to(topic).payload(record.as_str());
            loop {
                match producer.send(pending) {
                    Ok(()) => break,
                    Err((e, back))
                        if matches!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ) =>
                    {
                        producer.poll(Duration::from_millis(10));
                        pending = back;
                    }
                    Err((e, _)) => return Err(anyhow::anyhow!("cannot produce to {topic}: {e}")),
                }
            }
            sent += 1;
            counts.records.fetch_add(1, Ordering::Relaxed);
            if malformed {
                counts.malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
        producer.poll(Duration::ZERO);
        std::thread::sleep(tick);
    }
    producer
        .flush(Duration::from_secs(30))
        .with_context(|| format!("cannot deliver the last records to {topic}"))?;
    Ok(())
}
