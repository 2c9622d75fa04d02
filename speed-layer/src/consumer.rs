//! The Kafka consumer: one thread polling librdkafka, decoding records into micro-batches of
//! Arrow rows (and rejects), sent on a bounded channel to the aggregator.
//!
//! Offsets live in the lake: on assignment, each partition resumes at the next offset its
//! last archive commit recorded. Messages below it (already archived) are skipped; if Kafka
//! starts beyond it, the consumer seeks back. Auto-commit is off; offsets are committed to
//! Kafka after each archive commit only to report progress (lag).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use strata_core::config::Config;
use strata_core::decode::{JsonDecoder, KafkaPosition, Origin, Rejects};
use strata_core::lake::{Lake, app_transactions, kafka_app_id};
use strata_core::metrics::{Counter, Histogram, LATENCY_BUCKETS, global};
use strata_core::schema::SourceSchema;
use strata_core::speed::partition_key;
use strata_core::{Error, Result};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Rows after which a micro-batch is cut even before its interval ends.
const MAX_BATCH_ROWS: usize = 64 * 1024;

/// Where a partition must resume, guarding against brokers that skip records.
///
/// Kafka answers a fetch from an offset inside a record batch with that whole batch (the
/// client drops the records before the offset). Some brokers answer with the next batch
/// instead, which would silently skip records (tansu 0.6 does; it also answers nothing at
/// all while no record follows that batch). So a first record beyond the expected offset
/// makes the consumer seek back — 4096 records, then twice as far each time the answer
/// still starts beyond it, down to the partition's beginning — and skip what the lake
/// already holds. Only a gap seen when reading from the beginning is a real one (compacted
/// or control records), and is taken.
struct Cursor {
    /// The next offset to take (None: whatever comes first).
    expected: Option<i64>,
    /// Where the consumer sought back to, to reach `expected`.
    rewound_to: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Take,
    Skip,
    Rewind(i64),
}

/// How far the first seek back goes.
const FIRST_REWIND: i64 = 4096;

impl Cursor {
    fn new(expected: Option<i64>) -> Cursor {
        Cursor {
            expected,
            rewound_to: None,
        }
    }

    /// What to do with the record at `offset`.
    fn step(&mut self, offset: i64) -> Step {
        let Some(next) = self.expected else {
            self.expected = Some(offset + 1);
            return Step::Take;
        };
        if offset < next {
            return Step::Skip; // archived already
        }
        if offset > next {
            if let Some(target) = self.rewind_target(next) {
                return Step::Rewind(target);
            }
            tracing::warn!(
                from = next,
                to = offset,
                "offsets missing in a partition (compacted or control records)"
            );
        }
        self.rewound_to = None;
        self.expected = Some(offset + 1);
        Step::Take
    }

    /// Whether to take this record, seeking back when the broker skipped ahead.
    fn accept(&mut self, consumer: &KafkaConsumer, topic: &str, partition: i32, offset: i64) -> bool {
        match self.step(offset) {
            Step::Take => true,
            Step::Skip => false,
            Step::Rewind(target) => {
                global()
                    .counter(
                        "strata_consumer_rewinds_total",
                        "Seeks back after the broker answered a fetch from beyond the offset asked for.",
                        &[],
                    )
                    .inc();
                tracing::debug!(
                    topic,
                    partition,
                    got = offset,
                    target,
                    "the broker skipped ahead: rewinding"
                );
                match consumer.seek(topic, partition, Offset::Offset(target), Duration::from_secs(10)) {
                    Ok(()) => self.rewound_to = Some(target),
                    Err(e) => tracing::warn!(error = %e, topic, partition, "cannot seek; will try again"),
                }
                false
            }
        }
    }

    /// Where to seek back to after an answer that started beyond `next`; None once the
    /// partition was read from its beginning.
    fn rewind_target(&self, next: i64) -> Option<i64> {
        let distance = match self.rewound_to {
            None => FIRST_REWIND,
            Some(0) => return None,
            Some(at) => (next - at).saturating_mul(2),
        };
        Some((next - distance).max(0))
    }
}

/// What the consumer sends to the aggregator, in consumption order.
#[derive(Debug)]
pub enum Input {
    /// Partitions newly owned, each with the next offset the lake has archived (if any).
    Assigned(Vec<Assigned>),
    /// Partitions no longer owned: their states and unarchived events are dropped (their
    /// new owner resumes from the lake).
    Revoked(Vec<String>),
    Batch(MicroBatch),
}

#[derive(Debug, Clone)]
pub struct Assigned {
    pub source: usize,
    pub topic: String,
    pub partition: i32,
    pub archived: Option<i64>,
}

/// Records consumed in one interval for one source.
#[derive(Debug)]
pub struct MicroBatch {
    pub source: usize,
    pub events: Option<arrow::array::RecordBatch>,
    pub rejects: Option<arrow::array::RecordBatch>,
    /// Per partition: (topic, partition, first offset, next offset).
    pub positions: Vec<(String, i32, i64, i64)>,
    pub consumed_at: Instant,
}

/// Rebalance events seen by librdkafka's callbacks, handled by the polling loop.
#[derive(Default)]
pub struct Rebalances {
    /// Partitions assigned, with the offset they were assigned at (from the lake).
    assigned: Mutex<Vec<(String, i32, Option<i64>)>>,
    revoked: Mutex<Vec<(String, i32)>>,
    /// Why partitions could not be assigned (the lake could not be read).
    failed: Mutex<Option<String>>,
}

/// Reads the archived positions of partitions from the lake (blocking).
pub type OffsetLookup = Box<dyn Fn(&[(String, i32)]) -> Result<HashMap<(String, i32), i64>> + Send + Sync>;

pub struct SpeedContext {
    rebalances: Arc<Rebalances>,
    lookup: OffsetLookup,
    /// Where a partition with nothing archived starts: the end (auto.offset.reset=latest)
    /// or the beginning.
    start_at_end: bool,
}

impl ClientContext for SpeedContext {}

impl ConsumerContext for SpeedContext {
    /// Assigns partitions at the offsets the lake has archived: Kafka's committed offsets
    /// only report progress, they never decide where to resume.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let list: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let archived = match (self.lookup)(&list) {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the archived positions: not consuming");
                        *self.rebalances.failed.lock().expect("lock") =
                            Some(format!("cannot read the archived Kafka positions from the lake: {e}"));
                        return;
                    }
                };
                let mut assigned = Vec::new();
                for (topic, partition) in list {
                    let at = archived.get(&(topic.clone(), partition)).copied();
                    let offset = match at {
                        Some(n) => Offset::Offset(n),
                        None if self.start_at_end => Offset::End,
                        None => Offset::Beginning,
                    };
                    if let Err(e) = tpl.set_partition_offset(&topic, partition, offset) {
                        tracing::warn!(error = %e, topic, partition, "cannot set the start offset");
                    }
                    assigned.push((topic, partition, at));
                }
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = result {
                    *self.rebalances.failed.lock().expect("lock") = Some(format!("cannot assign partitions: {e}"));
                    return;
                }
                self.rebalances.assigned.lock().expect("lock").extend(assigned);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.rebalances.revoked.lock().expect("lock").extend(list);
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "cannot unassign revoked partitions");
                }
            }
            other => tracing::warn!(error = ?other, "Kafka rebalance error"),
        }
    }
}

pub type KafkaConsumer = BaseConsumer<SpeedContext>;

/// Creates the consumer of every source's topics, subscribed, auto-commit off; partitions
/// are assigned at the offsets the lake archived.
pub fn create(
    config: &Config,
    lake: &Lake,
    runtime: tokio::runtime::Handle,
) -> Result<(Arc<KafkaConsumer>, Arc<Rebalances>)> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    for (k, v) in &config.kafka.properties {
        client.set(k, v);
    }
    let start_at_end = config
        .kafka
        .properties
        .get("auto.offset.reset")
        .is_some_and(|v| matches!(v.as_str(), "latest" | "end" | "largest"));
    let rebalances = Arc::new(Rebalances::default());
    let sources: Vec<Arc<SourceSchema>> = config.sources.iter().map(SourceSchema::new).collect();
    let lake = lake.clone();
    let lookup: OffsetLookup = Box::new(move |partitions| archived_offsets(&lake, &sources, &runtime, partitions));
    let consumer: KafkaConsumer = client
        .create_with_context(SpeedContext {
            rebalances: rebalances.clone(),
            lookup,
            start_at_end,
        })
        .map_err(|e| kafka_error("create the Kafka consumer", &config.file, e))?;
    let topics: Vec<&str> = config
        .sources
        .iter()
        .flat_map(|s| s.topics.iter().map(String::as_str))
        .collect();
    if topics.is_empty() {
        return Err(Error::config(
            &config.file,
            "sources[].topics",
            "no source lists Kafka topics: the speed layer has nothing to read",
        ));
    }
    consumer
        .subscribe(&topics)
        .map_err(|e| kafka_error("subscribe to the topics", &config.file, e))?;
    Ok((Arc::new(consumer), rebalances))
}

/// The archived positions of partitions, read from each source's raw table.
fn archived_offsets(
    lake: &Lake,
    sources: &[Arc<SourceSchema>],
    runtime: &tokio::runtime::Handle,
    partitions: &[(String, i32)],
) -> Result<HashMap<(String, i32), i64>> {
    let mut out = HashMap::new();
    for source in sources {
        let mine: Vec<&(String, i32)> = partitions.iter().filter(|(t, _)| source.topics.contains(t)).collect();
        if mine.is_empty() {
            continue;
        }
        let lake = lake.clone();
        let url = lake.raw_url(&source.name);
        let txns = runtime.block_on(async move {
            match lake.open(&url).await? {
                Some(table) => {
                    let version = table.version().unwrap_or(0);
                    app_transactions(&table, version).await.map(Some)
                }
                None => Ok(None),
            }
        })?;
        if let Some(txns) = txns {
            for (t, p) in mine {
                if let Some(v) = txns.get(&kafka_app_id(t, *p)) {
                    out.insert((t.clone(), *p), *v);
                }
            }
        }
    }
    Ok(out)
}

fn kafka_error(what: &str, file: &std::path::Path, e: KafkaError) -> Error {
    match &e {
        KafkaError::ClientCreation(message) => Error::config(file, "kafka", format!("cannot {what}: {message}")),
        _ => Error::lake(format!("Kafka: cannot {what}"), e),
    }
}

struct SourceState {
    schema: Arc<SourceSchema>,
    decoder: JsonDecoder,
    rejects: Rejects,
    positions: BTreeMap<(String, i32), (i64, i64)>,
    consumed: Counter,
    rejected: Counter,
    /// From a record's Kafka timestamp to its consumption.
    delay: Histogram,
}

/// The polling loop, run on its own thread until `stop`.
pub struct Poller {
    pub consumer: Arc<KafkaConsumer>,
    pub rebalances: Arc<Rebalances>,
    pub sources: Vec<Arc<SourceSchema>>,
    pub batch_interval: Duration,
    pub output: mpsc::Sender<Input>,
    pub stop: CancellationToken,
}

impl Poller {
    pub fn run(self) -> Result<()> {
        let topic_source: HashMap<String, usize> = self
            .sources
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.topics.iter().map(move |t| (t.clone(), i)))
            .collect();
        let mut sources: Vec<SourceState> = self
            .sources
            .iter()
            .map(|s| SourceState {
                schema: s.clone(),
                decoder: JsonDecoder::new(s.clone()),
                rejects: Rejects::new(&s.name, chrono::Utc::now().timestamp_micros()),
                positions: BTreeMap::new(),
                consumed: global().counter(
                    "strata_events_consumed_total",
                    "Valid events consumed from Kafka.",
                    &[("source", &s.name)],
                ),
                rejected: global().counter(
                    "strata_events_rejected_total",
                    "Records rejected (unparsable, wrong type, no event time, too large).",
                    &[("source", &s.name)],
                ),
                delay: global().histogram(
                    "strata_kafka_delay_seconds",
                    "From a record's Kafka timestamp (its produce, under CreateTime) to its consumption.",
                    &[("source", &s.name)],
                    LATENCY_BUCKETS,
                ),
            })
            .collect();
        // Per partition: where it must resume, and whether a re-read is under way.
        let mut cursors: HashMap<(String, i32), Cursor> = HashMap::new();
        let mut pending = 0usize;
        let mut first_pending: Option<Instant> = None;
        let poll_timeout = self
            .batch_interval
            .min(Duration::from_millis(10))
            .max(Duration::from_millis(1));

        loop {
            let stopping = self.stop.is_cancelled();
            if stopping {
                self.cut(&mut sources, &mut pending, &mut first_pending)?;
                return Ok(());
            }
            // Rebalances happen inside poll: handle them between polls.
            let revoked: Vec<(String, i32)> = std::mem::take(&mut *self.rebalances.revoked.lock().expect("lock"));
            if !revoked.is_empty() {
                self.cut(&mut sources, &mut pending, &mut first_pending)?;
                for tp in &revoked {
                    cursors.remove(tp);
                }
                tracing::info!(partitions = ?revoked, "partitions revoked");
                if !self.send(Input::Revoked(
                    revoked.iter().map(|(t, p)| partition_key(t, *p)).collect(),
                ))? {
                    return Ok(());
                }
            }
            if let Some(reason) = self.rebalances.failed.lock().expect("lock").take() {
                return Err(Error::Lake {
                    context: "Kafka assignment".into(),
                    source: reason.into(),
                });
            }
            let assigned: Vec<(String, i32, Option<i64>)> =
                std::mem::take(&mut *self.rebalances.assigned.lock().expect("lock"));
            if !assigned.is_empty() {
                self.cut(&mut sources, &mut pending, &mut first_pending)?;
                let mut list = Vec::new();
                for (topic, partition, archived) in assigned {
                    cursors.insert((topic.clone(), partition), Cursor::new(archived));
                    list.push(Assigned {
                        source: topic_source[&topic],
                        topic,
                        partition,
                        archived,
                    });
                }
                tracing::info!(partitions = ?list.iter().map(|a| (partition_key(&a.topic, a.partition), a.archived)).collect::<Vec<_>>(), "partitions assigned at the archived offsets");
                if !self.send(Input::Assigned(list))? {
                    return Ok(());
                }
            }

            // Wait for records no longer than until the pending batch is due (at least 1 ms:
            // a due batch held for a busy aggregator is no reason to spin).
            let timeout = first_pending.map_or(poll_timeout, |t| {
                self.batch_interval
                    .saturating_sub(t.elapsed())
                    .clamp(Duration::from_millis(1), poll_timeout)
            });
            match self.consumer.poll(timeout) {
                None => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Kafka poll error");
                }
                Some(Ok(message)) => {
                    let topic = message.topic();
                    let partition = message.partition();
                    let offset = message.offset();
                    let key = (topic.to_string(), partition);
                    let cursor = cursors.entry(key.clone()).or_insert_with(|| Cursor::new(None));
                    if !cursor.accept(&self.consumer, topic, partition, offset) {
                        continue;
                    }
                    let Some(&s) = topic_source.get(topic) else { continue };
                    let source = &mut sources[s];
                    if let Some(produced) = message.timestamp().to_millis() {
                        let now = chrono::Utc::now().timestamp_millis();
                        source.delay.observe((now - produced).max(0) as f64 / 1000.0);
                    }
                    let position = KafkaPosition {
                        topic,
                        partition,
                        offset,
                    };
                    let result = match message.payload() {
                        Some(payload) => source
                            .decoder
                            .decode(payload, Some(position))
                            .map_err(|reason| (payload, reason)),
                        None => Err((&[][..], "empty message: no payload".to_string())),
                    };
                    match result {
                        Ok(()) => source.consumed.inc(),
                        Err((payload, reason)) => {
                            source.rejects.push(Origin::Kafka(position), payload, &reason);
                            source.rejected.inc();
                        }
                    }
                    source
                        .positions
                        .entry(key)
                        .and_modify(|(_, next)| *next = offset + 1)
                        .or_insert((offset, offset + 1));
                    pending += 1;
                    first_pending.get_or_insert_with(Instant::now);
                }
            }
            // A batch is due after its interval, but is held (and grows) while the aggregator
            // still has one waiting: records never queue behind more than one batch, and a
            // busy aggregator gets fewer, larger batches instead of falling further behind.
            let due = first_pending.is_some_and(|t| t.elapsed() >= self.batch_interval) && self.output.capacity() > 0;
            if (pending >= MAX_BATCH_ROWS || due) && !self.cut(&mut sources, &mut pending, &mut first_pending)? {
                return Ok(());
            }
        }
    }

    /// Sends what was consumed as micro-batches; false if the aggregator is gone.
    fn cut(
        &self,
        sources: &mut [SourceState],
        pending: &mut usize,
        first_pending: &mut Option<Instant>,
    ) -> Result<bool> {
        if *pending == 0 {
            return Ok(true);
        }
        let consumed_at = first_pending.take().unwrap_or_else(Instant::now);
        *pending = 0;
        for (i, s) in sources.iter_mut().enumerate() {
            if s.positions.is_empty() {
                continue;
            }
            let batch = MicroBatch {
                source: i,
                events: (s.decoder.rows() > 0).then(|| s.decoder.finish()),
                rejects: (!s.rejects.is_empty()).then(|| s.rejects.finish()),
                positions: std::mem::take(&mut s.positions)
                    .into_iter()
                    .map(|((t, p), (first, next))| (t, p, first, next))
                    .collect(),
                consumed_at,
            };
            if !self.send(Input::Batch(batch))? {
                return Ok(false);
            }
            let _ = &s.schema;
        }
        Ok(true)
    }

    fn send(&self, input: Input) -> Result<bool> {
        Ok(self.output.blocking_send(input).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broker like tansu 0.6: a fetch from the base offset of a batch returns that batch,
    /// a fetch from inside a batch returns the next one. The cursor still takes every
    /// record once, in order, from any starting point.
    #[test]
    fn cursor_takes_every_record_from_a_broker_that_skips_ahead() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut bases = vec![0i64];
        while *bases.last().unwrap() < 300_000 {
            let size = if rng.random_bool(0.1) {
                rng.random_range(4000..40_000)
            } else {
                rng.random_range(1..3000)
            };
            bases.push(bases.last().unwrap() + size);
        }
        // The records checked; the broker holds one more batch beyond them.
        let end = bases[bases.len() - 2];
        let fetch = |from: i64| -> std::ops::Range<i64> {
            let i = bases.partition_point(|&b| b <= from) - 1;
            let i = if bases[i] == from { i } else { i + 1 };
            bases[i]..bases[i + 1]
        };
        for _ in 0..200 {
            let start = rng.random_range(0..end);
            let mut cursor = Cursor::new(Some(start));
            let (mut position, mut taken, mut fetches) = (start, Vec::new(), 0);
            'fetching: while taken.last().map_or(start, |o| o + 1) < end {
                fetches += 1;
                assert!(fetches < 1000, "no progress from {start}");
                let batch = fetch(position);
                position = batch.end;
                for offset in batch {
                    match cursor.step(offset) {
                        Step::Take => taken.push(offset),
                        Step::Skip => {}
                        Step::Rewind(target) => {
                            cursor.rewound_to = Some(target);
                            position = target;
                            continue 'fetching;
                        }
                    }
                }
            }
            taken.retain(|&o| o < end);
            assert_eq!(taken, (start..end).collect::<Vec<_>>(), "from {start}");
        }
    }

    #[test]
    fn rewinds_double_down_to_the_beginning_then_take_a_real_gap() {
        let mut cursor = Cursor::new(Some(10_000));
        assert_eq!(cursor.step(10_500), Step::Rewind(10_000 - FIRST_REWIND));
        cursor.rewound_to = Some(10_000 - FIRST_REWIND);
        assert_eq!(cursor.step(10_500), Step::Rewind(10_000 - 2 * FIRST_REWIND));
        cursor.rewound_to = Some(10_000 - 2 * FIRST_REWIND);
        assert_eq!(cursor.step(10_500), Step::Rewind(0));
        cursor.rewound_to = Some(0);
        assert_eq!(cursor.step(100), Step::Skip);
        assert_eq!(cursor.step(10_500), Step::Take, "a gap seen from the beginning is real");
        assert_eq!(cursor.step(10_501), Step::Take);
    }
}
