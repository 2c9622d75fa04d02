//! The Kafka consumer: one thread polling librdkafka, decoding records into micro-batches of
//! Arrow rows (and rejects), sent on a bounded channel to the aggregator.
//!
//! Offsets live in the lake. librdkafka's rebalance callback only records what changed; the
//! polling loop acts on it between polls:
//!
//! ```text
//!  revoked  ─► cut the pending micro-batch ─► the aggregator archives what the partitions
//!              consumed and drops them ─► unassign (their new owner starts where we ended)
//!  assigned ─► claim them in the lake (owner generation + 1, start pinned if new) ─► assign
//!              at the claimed start ─► the aggregator rebuilds their states from the lake
//! ```
//!
//! Auto-commit is off; offsets are committed to Kafka after each archive commit only to
//! report progress (lag). Records are read `read_committed`: aborted transactions are never
//! seen, and the offsets transaction markers (or compaction) leave out are simply not there.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use strata_core::config::Config;
use strata_core::decode::{JsonDecoder, KafkaPosition, Origin, Rejects};
use strata_core::lake::Lake;
use strata_core::metrics::{Counter, Histogram, SourceLabel, metrics};
use strata_core::schema::SourceSchema;
use strata_core::speed::{OffsetRange, TopicPartition};
use strata_core::{Error, Result};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::archive::{Claim, claim};

#[allow(unsafe_code)]
mod fetch_queue;

use fetch_queue::{FetchError, FetchQueue};

/// Rows after which a micro-batch is cut even before its interval ends.
const MAX_BATCH_ROWS: usize = 64 * 1024;

/// While a query waits at a [`Barrier`], the messages polled between two checks of it (each
/// compares the positions of the partitions it waits for).
const BARRIER_CHECK_EVERY: usize = 32;

/// Records taken in one go once one has come, as long as librdkafka has them at hand: the
/// loop's own checks (stopping, rebalances, room for a batch, waiting queries, the clock)
/// are made once per run of them instead of once per record. While queries wait at a
/// [`Barrier`], a run is [`BARRIER_CHECK_EVERY`] records.
const POLL_RUN: usize = 1024;

/// For this long after a query waited at a [`Barrier`], an idle consumer polls every
/// BARRIER_POLL rather than every `speed.batch_interval` (10 ms at most).
const BARRIERS_RECENT: Duration = Duration::from_secs(10);
const BARRIER_POLL: Duration = Duration::from_millis(1);

/// How long a seek back after a fetch error waits for librdkafka, and how long after a failed
/// one the next is tried.
const SEEK_TIMEOUT: Duration = Duration::from_secs(2);
const SEEK_RETRY: Duration = Duration::from_secs(1);

/// How long a revocation waits for the aggregator to archive and drop the partitions.
const REVOKE_WAIT: Duration = Duration::from_secs(40);

/// How long claims of assigned partitions are retried when Kafka or the lake fails, well
/// within the consumer's max.poll.interval.ms (5 minutes by default).
const CLAIM_PATIENCE: Duration = Duration::from_secs(120);

/// A query waiting until this process has consumed what Kafka held of its partitions when
/// the query arrived (`serve.real_time_recency`): `passed` is answered once every record
/// before `ends` (the next offset of each partition, as the broker reported it) of the
/// partitions the process owns is in a micro-batch sent to the aggregator.
#[derive(Debug)]
pub struct Barrier {
    pub ends: Vec<(TopicPartition, i64)>,
    pub passed: tokio::sync::oneshot::Sender<()>,
}

/// What the consumer sends to the aggregator, in consumption order.
#[derive(Debug)]
pub enum Input {
    /// Partitions newly owned, each claimed in the lake.
    Assigned(Vec<Assigned>),
    /// Partitions no longer owned: what they consumed is archived, then their states are
    /// dropped; `done` is answered when they are gone.
    Revoked {
        partitions: Vec<TopicPartition>,
        done: std::sync::mpsc::SyncSender<()>,
    },
    Batch(MicroBatch),
}

#[derive(Debug, Clone)]
pub struct Assigned {
    pub source: usize,
    pub partition: TopicPartition,
    /// The owner generation of this process's claim.
    pub generation: u64,
    /// The next offset the lake holds (where consumption starts).
    pub start: i64,
}

/// Records of one source consumed since the last cut.
#[derive(Debug)]
pub struct MicroBatch {
    pub source: usize,
    pub events: Option<arrow::array::RecordBatch>,
    pub rejects: Option<arrow::array::RecordBatch>,
    /// Per partition, the offsets consumed: from the first record to the next offset.
    pub positions: Vec<OffsetRange>,
    pub consumed_at: Instant,
}

/// A change of assignment, as librdkafka's callback saw it.
#[derive(Debug)]
enum Rebalance {
    Assign(Vec<TopicPartition>),
    Revoke(Vec<TopicPartition>),
}

/// Rebalance events recorded by librdkafka's callback, in order, for the polling loop.
#[derive(Default)]
pub struct Rebalances {
    events: Mutex<VecDeque<Rebalance>>,
    /// Whether `events` holds any, read without the lock after each message of a run.
    queued: std::sync::atomic::AtomicBool,
    /// Set when the polling loop has ended: the consumer is closing, nothing is left to
    /// archive, and the callback (then called while the consumer leaves its group) assigns
    /// and unassigns by itself.
    closing: std::sync::atomic::AtomicBool,
}

impl Rebalances {
    fn next(&self) -> Option<Rebalance> {
        let mut events = self.events.lock().expect("rebalance lock");
        let next = events.pop_front();
        self.queued
            .store(!events.is_empty(), std::sync::atomic::Ordering::Release);
        next
    }

    fn push(&self, event: Rebalance) {
        self.events.lock().expect("rebalance lock").push_back(event);
        self.queued.store(true, std::sync::atomic::Ordering::Release);
    }

    fn queued(&self) -> bool {
        self.queued.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// When the polling loop ends, however it ends: marks the consumer closing and answers the
/// rebalances it recorded and did not act on (librdkafka waits for that answer, and closing
/// the consumer would wait for ever).
struct Closing<'a> {
    rebalances: &'a Rebalances,
    consumer: &'a KafkaConsumer,
}

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.rebalances.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        while let Some(change) = self.rebalances.next() {
            answer(self.consumer, &change);
        }
    }
}

/// `partitions` as librdkafka's list of them (without offsets).
pub(crate) fn partition_list(partitions: &[TopicPartition]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for tp in partitions {
        tpl.add_partition(&tp.topic, tp.partition);
    }
    tpl
}

/// What librdkafka's own handling of a rebalance does: assign or unassign the partitions.
fn answer(consumer: &KafkaConsumer, change: &Rebalance) {
    let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
    let result = match (change, cooperative) {
        (Rebalance::Assign(p), true) => consumer.incremental_assign(&partition_list(p)),
        (Rebalance::Assign(p), false) => consumer.assign(&partition_list(p)),
        (Rebalance::Revoke(p), true) => consumer.incremental_unassign(&partition_list(p)),
        (Rebalance::Revoke(_), false) => consumer.unassign(),
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "answering a rebalance while the consumer stops");
    }
}

pub struct SpeedContext {
    rebalances: Arc<Rebalances>,
}

impl ClientContext for SpeedContext {}

impl ConsumerContext for SpeedContext {
    /// Records the change; the polling loop claims, seeks and archives, then assigns or
    /// unassigns (librdkafka waits for that call).
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let list: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| TopicPartition::new(e.topic(), e.partition()))
            .collect();
        let event = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(list),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(list),
            other => {
                tracing::warn!(error = ?other, "Kafka rebalance error: dropping the assignment");
                let owned = consumer
                    .assignment()
                    .map(|a| {
                        a.elements()
                            .iter()
                            .map(|e| TopicPartition::new(e.topic(), e.partition()))
                            .collect()
                    })
                    .unwrap_or_default();
                Rebalance::Revoke(owned)
            }
        };
        if self.rebalances.closing.load(std::sync::atomic::Ordering::SeqCst) {
            // The polling loop has ended (the consumer is closing): answer at once.
            answer(consumer, &event);
        } else {
            self.rebalances.push(event);
        }
    }
}

pub type KafkaConsumer = BaseConsumer<SpeedContext>;

/// Where a partition with nothing in the lake starts: `auto.offset.reset` = latest starts at
/// the end of the partition, anything else at its beginning.
fn starts_at_end(config: &Config) -> bool {
    config
        .kafka
        .properties
        .get("auto.offset.reset")
        .is_some_and(|v| matches!(v.as_str(), "latest" | "end" | "largest"))
}

/// Creates the consumer of every source's topics, subscribed, auto-commit off; partitions
/// are assigned at the offsets the lake archived.
pub fn create(config: &Config) -> Result<(Arc<KafkaConsumer>, Arc<Rebalances>)> {
    let mut client = client_config(
        config,
        &[
            ("group.id", &config.kafka.group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
        ],
    );
    // The poller's batch call would move a partition's position past each end-of-partition
    // error (see `fetch_queue`): the consumer has no use for them.
    if client.get("enable.partition.eof").is_some_and(|v| v != "false") {
        tracing::warn!(file = %config.file.display(), "kafka.properties sets enable.partition.eof: the speed layer's consumer turns it off");
    }
    client.set("enable.partition.eof", "false");
    let rebalances = Arc::new(Rebalances::default());
    let consumer: KafkaConsumer = client
        .create_with_context(SpeedContext {
            rebalances: rebalances.clone(),
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

/// The settings of Strata's Kafka clients: the brokers, `read_committed`, then `settings`,
/// then the user's `[kafka.properties]` (which override them).
fn client_config(config: &Config, settings: &[(&str, &str)]) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("isolation.level", "read_committed");
    for (k, v) in settings {
        client.set(*k, *v);
    }
    for (k, v) in &config.kafka.properties {
        client.set(k, v);
    }
    client
}

/// A client of its own for asking Kafka where the partitions end (real-time recency): on the
/// consumer's connections, the request would queue behind a fetch waiting for records (up to
/// fetch.wait.max.ms), as a broker answers one request of a connection at a time. No group:
/// it only asks; `read_committed` as the consumer, so the end it gets is the last stable
/// offset.
pub fn ends_client(config: &Config) -> Result<BaseConsumer> {
    client_config(config, &[]).create().map_err(|e| {
        kafka_error(
            "create the Kafka client asking for the partitions' ends",
            &config.file,
            e,
        )
    })
}

fn kafka_error(what: &str, file: &std::path::Path, e: KafkaError) -> Error {
    match &e {
        KafkaError::ClientCreation(message) => Error::config(file, "kafka", format!("cannot {what}: {message}")),
        _ => Error::kafka(format!("cannot {what}"), e),
    }
}

/// Per owned partition, the next offset to take. A record below it was consumed before the
/// partition's start (the lake holds it: a seek lands inside a compressed batch, which
/// Kafka sends whole). Offsets beyond it are gaps Kafka leaves — transaction markers,
/// aborted transactions, compaction — and the record after a gap is taken as it comes: a
/// gap costs nothing.
/// Found without allocating or hashing: records come in runs of one partition, and the
/// partition of the last record taken is tried first.
#[derive(Debug, Default)]
struct NextOffsets {
    owned: Vec<Owned>,
    last: usize,
}

#[derive(Debug)]
struct Owned {
    partition: TopicPartition,
    source: usize,
    next: i64,
    /// The offsets taken since the last [`NextOffsets::drain`]: first, and last + 1.
    taken: Option<(i64, i64)>,
}

impl NextOffsets {
    fn start(&mut self, partition: TopicPartition, at: i64, source: usize) {
        self.forget(&partition);
        self.owned.push(Owned {
            partition,
            source,
            next: at,
            taken: None,
        });
    }

    fn forget(&mut self, partition: &TopicPartition) {
        self.owned.retain(|o| &o.partition != partition);
    }

    fn partitions(&self) -> Vec<TopicPartition> {
        self.owned.iter().map(|o| o.partition.clone()).collect()
    }

    /// Whether to take the record at `offset` (of a partition owned, at or beyond the next
    /// offset), and then its source; the next offset then follows it.
    fn take(&mut self, topic: &str, partition: i32, offset: i64) -> Option<usize> {
        let is = |o: &Owned| o.partition.partition == partition && o.partition.topic == topic;
        let i = match self.owned.get(self.last) {
            Some(o) if is(o) => self.last,
            _ => {
                self.last = self.owned.iter().position(is)?;
                self.last
            }
        };
        let o = &mut self.owned[i];
        if offset < o.next {
            return None;
        }
        o.next = offset + 1;
        o.taken = Some(o.taken.map_or((offset, offset + 1), |(first, _)| (first, offset + 1)));
        Some(o.source)
    }

    /// The next offset to take of `partition`, if owned.
    fn next(&self, partition: &TopicPartition) -> Option<i64> {
        self.owned.iter().find(|o| &o.partition == partition).map(|o| o.next)
    }

    /// Whether every record of `partition` before `end` was taken, or is not this consumer's
    /// to take (a partition not owned, or owned from `end` on).
    fn passed(&self, partition: &TopicPartition, end: i64) -> bool {
        self.owned
            .iter()
            .find(|o| &o.partition == partition)
            .is_none_or(|o| o.next >= end)
    }

    /// The offsets of `source`'s partitions taken since the last drain, in partition order.
    fn drain(&mut self, source: usize) -> Vec<OffsetRange> {
        let mut ranges: Vec<OffsetRange> = self
            .owned
            .iter_mut()
            .filter(|o| o.source == source)
            .filter_map(|o| {
                let (start, end) = o.taken.take()?;
                Some(OffsetRange {
                    partition: o.partition.clone(),
                    start,
                    end,
                })
            })
            .collect();
        ranges.sort_by(|a, b| a.partition.cmp(&b.partition));
        ranges
    }
}

/// Reports an error librdkafka returned in place of a record, and says which partition of
/// this consumer's to seek back to its next offset: the batch call moved the partition's
/// position past the offset the error carries (for a fetch error, the fetcher's, not yet
/// consumed), which a real-time recency query would read as consumed, and from which
/// librdkafka resumes fetching a partition a cooperative rebalance paused. A seek resets
/// that position and fetches again from where the poller is. Not for a message librdkafka
/// skips on purpose (one it cannot read, or of a format it does not implement): its offset is
/// the message's own, and it would only be fetched, and skipped, again.
fn to_seek_back(e: FetchError, next: &NextOffsets) -> Option<TopicPartition> {
    let FetchError {
        error,
        detail,
        partition,
    } = e;
    let Some((tp, offset)) = partition else {
        tracing::warn!(error = %error, detail, "Kafka fetch error");
        return None;
    };
    let skipped = matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::BadMessage | RDKafkaErrorCode::NotImplemented)
    );
    match next.next(&tp) {
        Some(at) if !skipped => {
            tracing::warn!(error = %error, detail, partition = %tp, offset, seek_to = at, "Kafka fetch error: fetching the partition again from the poller's position");
            Some(tp)
        }
        _ => {
            tracing::warn!(error = %error, detail, partition = %tp, offset, "Kafka fetch error");
            None
        }
    }
}

/// Seeks `tp` back to its next offset (see [`to_seek_back`]); true once done, or if the
/// partition is no longer owned.
fn seek_back(consumer: &KafkaConsumer, tp: &TopicPartition, next: &NextOffsets) -> bool {
    let Some(at) = next.next(tp) else {
        return true;
    };
    match consumer.seek(&tp.topic, tp.partition, Offset::Offset(at), SEEK_TIMEOUT) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, partition = %tp, seek_to = at, retry_in = ?SEEK_RETRY,
                "cannot seek the partition back after a fetch error: real-time recency queries wait for records rather than for librdkafka's positions until it can");
            false
        }
    }
}

/// The wall time (Unix milliseconds) of the consumer's monotonic clock readings, from one
/// reading of both clocks.
struct WallClock {
    at: Instant,
    millis: i64,
}

impl WallClock {
    fn new(at: Instant) -> Self {
        WallClock {
            at,
            millis: chrono::Utc::now().timestamp_millis(),
        }
    }

    fn millis(&self, now: Instant) -> i64 {
        self.millis + now.saturating_duration_since(self.at).as_millis() as i64
    }
}

struct SourceState {
    decoder: JsonDecoder,
    rejects: Rejects,
    consumed: Counter,
    rejected: Counter,
    /// From a record's Kafka timestamp to its consumption.
    delay: Histogram,
}

/// What the poller reads of a Kafka record, from rdkafka's poll or from the [`FetchQueue`].
#[derive(Debug)]
struct KafkaRecord<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    /// The record's Kafka timestamp (Unix milliseconds), if it has one.
    timestamp: Option<i64>,
    payload: Option<&'a [u8]>,
}

impl<'a> KafkaRecord<'a> {
    fn of(message: &'a rdkafka::message::BorrowedMessage<'_>) -> Self {
        KafkaRecord {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            payload: message.payload(),
        }
    }
}

/// The polling loop, run on its own thread until `stop`.
pub struct Poller {
    pub consumer: Arc<KafkaConsumer>,
    pub rebalances: Arc<Rebalances>,
    pub sources: Vec<Arc<SourceSchema>>,
    pub lake: Lake,
    /// Runs the lake I/O of claims (the poller is a thread of its own, outside the runtime).
    pub runtime: tokio::runtime::Handle,
    /// Partitions with nothing in the lake start at their end (else at their beginning).
    pub start_at_end: bool,
    pub batch_interval: Duration,
    pub output: mpsc::Sender<Input>,
    pub stop: CancellationToken,
    /// Queries waiting for the consumer to reach Kafka's ends (see [`Barrier`]).
    barriers: std::sync::mpsc::Receiver<Barrier>,
    barrier_sender: std::sync::mpsc::Sender<Barrier>,
    /// The partitions consumed, as of the last rebalance acted on: those whose ends such a
    /// query asks (librdkafka's own list is a round trip to its main thread).
    owned: OwnedPartitions,
}

/// The partitions a [`Poller`] consumes, shared with the queries that wait for it.
pub type OwnedPartitions = Arc<Mutex<Vec<TopicPartition>>>;

impl Poller {
    pub fn new(
        config: &Config,
        lake: Lake,
        (consumer, rebalances): (Arc<KafkaConsumer>, Arc<Rebalances>),
        runtime: tokio::runtime::Handle,
        output: mpsc::Sender<Input>,
        stop: CancellationToken,
    ) -> Poller {
        let (barrier_sender, barriers) = std::sync::mpsc::channel();
        Poller {
            consumer,
            rebalances,
            sources: config.sources.iter().map(SourceSchema::new).collect(),
            lake,
            runtime,
            start_at_end: starts_at_end(config),
            batch_interval: config.speed.batch_interval,
            output,
            stop,
            barriers,
            barrier_sender,
            owned: OwnedPartitions::default(),
        }
    }

    /// Where queries send their [`Barrier`]s.
    pub fn barriers(&self) -> std::sync::mpsc::Sender<Barrier> {
        self.barrier_sender.clone()
    }

    /// The partitions it consumes, kept up to date.
    pub fn owned(&self) -> OwnedPartitions {
        self.owned.clone()
    }

    pub fn run(self) -> Result<()> {
        let _closing = Closing {
            rebalances: &self.rebalances,
            consumer: &self.consumer,
        };
        let topic_source: HashMap<String, usize> = self
            .sources
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.topics.iter().map(move |t| (t.clone(), i)))
            .collect();
        let mut sources = self.source_states();
        let mut next = NextOffsets::default();
        let mut barriers: Vec<Barrier> = Vec::new();
        let mut unchecked = 0usize;
        let mut last_barrier: Option<Instant> = None;
        let mut pending = 0usize;
        let mut first_pending: Option<Instant> = None;
        // One clock read per run of records: the consumer's own time, and the wall time (for
        // how late records arrive) derived from it, taken afresh with every batch cut.
        let mut now = Instant::now();
        let mut wall = WallClock::new(now);
        let mut millis = wall.millis(now);
        let mut queue = FetchQueue::new(self.consumer.clone());
        // Partitions to seek back after a fetch error (see `seek_back`), while the seek fails.
        let mut unsought: Vec<TopicPartition> = Vec::new();
        let mut sought_at = now;
        let poll_timeout = self
            .batch_interval
            .min(Duration::from_millis(10))
            .max(Duration::from_millis(1));

        loop {
            if self.stop.is_cancelled() {
                self.cut(&mut sources, &mut next, &mut pending, &mut first_pending)?;
                return Ok(());
            }
            // Rebalances happen inside poll: act on them between polls, in order.
            while let Some(change) = self.rebalances.next() {
                self.cut(&mut sources, &mut next, &mut pending, &mut first_pending)?;
                let acted = self.rebalance(change, &mut next, &topic_source, &queue)?;
                *self.owned.lock().expect("owned lock") = next.partitions();
                if !acted {
                    return Ok(());
                }
            }

            // The consumer's queue first, without waiting: rebalances (recorded by the
            // callback and acted on at the top of the loop, before any record is taken after
            // them), offset commits' results, errors, and the records of a partition not
            // routed to the fetch queue.
            let run = if barriers.is_empty() {
                POLL_RUN
            } else {
                BARRIER_CHECK_EVERY
            };
            let mut polled = 0;
            while polled < run && pending < MAX_BATCH_ROWS {
                let Some(message) = self.consumer.poll(Duration::ZERO) else {
                    break;
                };
                polled += 1;
                match message {
                    Err(e) => tracing::warn!(error = %e, "Kafka poll error"),
                    Ok(message) if self.record(&KafkaRecord::of(&message), millis, &mut sources, &mut next) => {
                        pending += 1;
                        first_pending.get_or_insert(now);
                    }
                    Ok(_) => {}
                }
                if self.rebalances.queued() {
                    break;
                }
            }
            if self.rebalances.queued() {
                continue;
            }

            // Then the records. With records pending and room for a batch, take what is
            // already fetched without waiting: once nothing is left, the consumer has caught
            // up and the batch is cut. Otherwise wait for records no longer than until the
            // pending batch is due (at least 1 ms: a due batch held for a busy aggregator is
            // no reason to spin).
            let room = self.output.capacity() > 0;
            let timeout = match first_pending {
                Some(_) if room => Duration::ZERO,
                Some(t) => self
                    .batch_interval
                    .saturating_sub(now.saturating_duration_since(t))
                    .clamp(Duration::from_millis(1), poll_timeout),
                // While queries with real-time recency come, an idle consumer looks at them
                // every millisecond: one may wait for nothing but that look (what it waits for
                // was consumed already).
                None if last_barrier.is_some_and(|t| now.saturating_duration_since(t) < BARRIERS_RECENT) => {
                    BARRIER_POLL.min(poll_timeout)
                }
                None => poll_timeout,
            };
            // The first record waits up to `timeout`, the rest of the run only if fetched; one
            // clock read for the run (it takes microseconds).
            let want = run.saturating_sub(polled).min(MAX_BATCH_ROWS - pending);
            let mut fetched = queue.fetch(timeout, want);
            now = Instant::now();
            millis = wall.millis(now);
            let caught_up = fetched.len() < want;
            polled += fetched.len();
            let mut errors = Vec::new();
            for i in 0..fetched.len() {
                match fetched.get(i) {
                    Err(e) => errors.push(*e),
                    Ok(record) if self.record(&record, millis, &mut sources, &mut next) => {
                        pending += 1;
                        first_pending.get_or_insert(now);
                    }
                    Ok(_) => {}
                }
            }
            drop(fetched);
            // Seeks back at once after new errors, and retries failed seeks every SEEK_RETRY.
            let before = unsought.len();
            for tp in errors.into_iter().filter_map(|e| to_seek_back(e, &next)) {
                if !unsought.contains(&tp) {
                    unsought.push(tp);
                }
            }
            if unsought.len() > before
                || (!unsought.is_empty() && now.saturating_duration_since(sought_at) >= SEEK_RETRY)
            {
                sought_at = now;
                unsought.retain(|tp| !seek_back(&self.consumer, tp, &next));
            }
            // A batch is due once the consumer has caught up, or after its interval while
            // records keep coming; but it is held (and grows) while the aggregator still has
            // one waiting: records never queue behind more than one batch, and a busy
            // aggregator gets fewer, larger batches instead of falling further behind.
            let due = first_pending
                .is_some_and(|t| caught_up || now.saturating_duration_since(t) >= self.batch_interval)
                && self.output.capacity() > 0;
            let before = barriers.len();
            barriers.extend(self.barriers.try_iter());
            if barriers.len() > before {
                last_barrier = Some(now);
            }
            let passed = if barriers.is_empty() {
                Vec::new()
            } else {
                // Checked once caught up (where librdkafka's position is read too), else every
                // BARRIER_CHECK_EVERY records: the consumer such a query waits for is busy.
                unchecked += polled;
                if caught_up || unchecked >= BARRIER_CHECK_EVERY {
                    unchecked = 0;
                    // librdkafka's positions are not to be trusted while a seek back is due.
                    self.passed(&mut barriers, &next, caught_up && unsought.is_empty())
                } else {
                    Vec::new()
                }
            };
            if pending >= MAX_BATCH_ROWS || due || !passed.is_empty() {
                if !self.cut(&mut sources, &mut next, &mut pending, &mut first_pending)? {
                    return Ok(());
                }
                // Both clocks read afresh: the cut may have waited for the aggregator.
                now = Instant::now();
                wall = WallClock::new(now);
                millis = wall.millis(now);
            }
            for b in passed {
                let _ = b.passed.send(());
            }
        }
    }

    /// The barriers passed (taken out of `barriers`): every record before their ends is
    /// taken, or, once the consumer has caught up (and `caught_up` says librdkafka's positions
    /// can be trusted), librdkafka's position is past their ends
    /// (a transaction's marker takes the last offset of a partition, and is no record). A
    /// barrier whose query stopped waiting goes too.
    fn passed(&self, barriers: &mut Vec<Barrier>, next: &NextOffsets, caught_up: bool) -> Vec<Barrier> {
        let positions = caught_up.then(|| self.consumer.position().ok()).flatten();
        let at_end = |(tp, end): &(TopicPartition, i64)| {
            next.passed(tp, *end)
                || positions.as_ref().is_some_and(|p| {
                    p.find_partition(&tp.topic, tp.partition)
                        .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= *end))
                })
        };
        barriers
            .extract_if(.., |b| b.passed.is_closed() || b.ends.iter().all(at_end))
            .collect()
    }

    /// The decoding state and metric handles of each source.
    fn source_states(&self) -> Vec<SourceState> {
        let label = |s: &SourceSchema| SourceLabel { source: s.name.clone() };
        self.sources
            .iter()
            .map(|s| SourceState {
                decoder: JsonDecoder::new(s.clone()),
                rejects: Rejects::new(&s.name, chrono::Utc::now().timestamp_micros()),
                consumed: metrics().events_consumed.get_or_create_owned(&label(s)),
                rejected: metrics().events_rejected.get_or_create_owned(&label(s)),
                delay: metrics().kafka_delay.get_or_create_owned(&label(s)),
            })
            .collect()
    }

    /// Acts on one rebalance (the pending batch already cut): revoked partitions are archived
    /// and dropped, assigned ones claimed and started where the lake says; false if the
    /// aggregator is gone.
    fn rebalance(
        &self,
        change: Rebalance,
        next: &mut NextOffsets,
        topic_source: &HashMap<String, usize>,
        queue: &FetchQueue,
    ) -> Result<bool> {
        match change {
            Rebalance::Revoke(list) => {
                for tp in &list {
                    next.forget(tp);
                }
                self.revoke(&list)
            }
            Rebalance::Assign(list) => {
                let claims = self.assign(&list, queue)?;
                for c in &claims {
                    next.start(c.partition.clone(), c.start, topic_source[&c.partition.topic]);
                }
                let list = claims
                    .into_iter()
                    .map(|c| Assigned {
                        source: topic_source[&c.partition.topic],
                        partition: c.partition,
                        generation: c.generation,
                        start: c.start,
                    })
                    .collect();
                self.send(Input::Assigned(list))
            }
        }
    }

    /// Decodes one record into its source's pending batch, or its rejects; false if it is
    /// not taken (an offset before the partition's next, a topic of no source).
    fn record(
        &self,
        message: &KafkaRecord<'_>,
        now_millis: i64,
        sources: &mut [SourceState],
        next: &mut NextOffsets,
    ) -> bool {
        let KafkaRecord {
            topic,
            partition,
            offset,
            ..
        } = *message;
        let Some(s) = next.take(topic, partition, offset) else {
            return false;
        };
        let source = &mut sources[s];
        if let Some(produced) = message.timestamp {
            source.delay.observe((now_millis - produced).max(0) as f64 / 1000.0);
        }
        let position = KafkaPosition {
            topic,
            partition,
            offset,
        };
        let result = match message.payload {
            Some(payload) => source
                .decoder
                .decode(payload, Some(position))
                .map_err(|reason| (payload, reason)),
            None => Err((&[][..], "empty message: no payload".to_string())),
        };
        match result {
            Ok(()) => {
                source.consumed.inc();
            }
            Err((payload, reason)) => {
                source.rejects.push(Origin::Kafka(position), payload, &reason);
                source.rejected.inc();
            }
        }
        true
    }

    /// Lets partitions go once the aggregator has archived what they consumed and dropped
    /// them; false if the aggregator is gone.
    fn revoke(&self, list: &[TopicPartition]) -> Result<bool> {
        tracing::info!(partitions = %list.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "), "partitions revoked: archiving what they consumed");
        let (done, archived) = std::sync::mpsc::sync_channel(1);
        let sent = self.send(Input::Revoked {
            partitions: list.to_vec(),
            done,
        });
        if matches!(sent, Ok(true)) && archived.recv_timeout(REVOKE_WAIT).is_err() {
            tracing::warn!("the revoked partitions were not archived in time: letting them go");
        }
        // Unassigned whatever happened: librdkafka waits for it.
        answer(&self.consumer, &Rebalance::Revoke(list.to_vec()));
        sent
    }

    /// Claims newly assigned partitions in the lake (per source, one commit), routes their
    /// records to the fetch queue and assigns them at the claimed starts.
    fn assign(&self, list: &[TopicPartition], queue: &FetchQueue) -> Result<Vec<Claim>> {
        let claims = self.claim_all(list);
        let claims = match claims {
            Ok(c) => c,
            Err(e) => {
                // librdkafka waits for an answer: the partitions are taken (nothing will be
                // consumed: the failure stops the speed layer) and let go as it closes.
                answer(&self.consumer, &Rebalance::Assign(list.to_vec()));
                return Err(e);
            }
        };
        let mut tpl = TopicPartitionList::new();
        for c in &claims {
            if !queue.route(&c.partition) {
                answer(&self.consumer, &Rebalance::Assign(list.to_vec()));
                return Err(Error::kafka(
                    format!("route the records of {} to the poller's queue", c.partition),
                    "librdkafka has no queue for the partition",
                ));
            }
            tpl.add_partition_offset(&c.partition.topic, c.partition.partition, Offset::Offset(c.start))
                .map_err(|e| Error::kafka("set a start offset", e))?;
        }
        let result = if self.cooperative() {
            self.consumer.incremental_assign(&tpl)
        } else {
            self.consumer.assign(&tpl)
        };
        result.map_err(|e| Error::kafka("assign partitions", e))?;
        tracing::info!(
            partitions = ?claims.iter().map(|c| (c.partition.to_string(), c.generation, c.start)).collect::<Vec<_>>(),
            "partitions assigned (generation, start)"
        );
        for c in &claims {
            self.check_start(c);
        }
        Ok(claims)
    }

    /// Says so loudly when a partition's start (the lake's position) is outside what Kafka
    /// holds: records deleted by retention before they were consumed are lost, and a topic
    /// recreated (or truncated) below the lake's position has its records up to it skipped.
    fn check_start(&self, c: &Claim) {
        let TopicPartition { topic, partition } = &c.partition;
        let Ok((low, high)) = self
            .consumer
            .fetch_watermarks(topic, *partition, Duration::from_secs(5))
        else {
            return;
        };
        let skipped = &metrics().offsets_out_of_range;
        if c.start < low {
            skipped.inc_by((low - c.start) as u64);
            tracing::error!(topic = %topic, partition = *partition, position = c.start, log_start = low,
                "records between the lake's position and the partition's log start were deleted by retention before they were consumed: they are lost");
        } else if c.start > high {
            skipped.inc_by((c.start - high) as u64);
            tracing::error!(topic = %topic, partition = *partition, position = c.start, log_end = high,
                "the lake's position is beyond the end of the partition (the topic was recreated or truncated): records below the position are skipped");
        }
    }

    /// Claims partitions in the lake, one commit per source; a failure of Kafka or of the lake
    /// is retried (with backoff, for up to [`CLAIM_PATIENCE`]) before it stops the speed layer.
    fn claim_all(&self, list: &[TopicPartition]) -> Result<Vec<Claim>> {
        let mut claims = Vec::new();
        for source in &self.sources {
            let mine: Vec<TopicPartition> = list
                .iter()
                .filter(|tp| source.topics.contains(&tp.topic))
                .cloned()
                .collect();
            if mine.is_empty() {
                continue;
            }
            let consumer = self.consumer.clone();
            let at_end = self.start_at_end;
            // Where a partition new to the lake starts: its end, or its beginning (the log
            // start, which retention may have moved past offset 0).
            let start_of = move |tp: &TopicPartition| -> Result<i64> {
                let (low, high) = consumer
                    .fetch_watermarks(&tp.topic, tp.partition, Duration::from_secs(10))
                    .map_err(|e| Error::kafka(format!("read the offsets of {tp}"), e))?;
                Ok(if at_end { high } else { low })
            };
            let started = Instant::now();
            let mut backoff = Duration::from_millis(200);
            let claimed = loop {
                match self.runtime.block_on(claim(&self.lake, source, &mine, &start_of)) {
                    Ok(c) => break c,
                    Err(e)
                        if e.domain() == strata_core::error::ErrorDomain::External
                            && started.elapsed() + backoff < CLAIM_PATIENCE
                            && !self.stop.is_cancelled() =>
                    {
                        tracing::warn!(error = %e, source = %source.name, retry_in = ?backoff, "cannot claim the assigned partitions yet; retrying");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => {
                        return Err(match e {
                            e @ Error::Kafka { .. } => e,
                            e => Error::Lake {
                                context: format!("claim partitions {mine:?} of source `{}` in the lake", source.name),
                                source: Box::new(e),
                            },
                        });
                    }
                }
            };
            claims.extend(claimed);
        }
        Ok(claims)
    }

    fn cooperative(&self) -> bool {
        matches!(self.consumer.rebalance_protocol(), RebalanceProtocol::Cooperative)
    }

    /// Sends what was consumed as micro-batches; false if the aggregator is gone.
    fn cut(
        &self,
        sources: &mut [SourceState],
        next: &mut NextOffsets,
        pending: &mut usize,
        first_pending: &mut Option<Instant>,
    ) -> Result<bool> {
        if *pending == 0 {
            return Ok(true);
        }
        let consumed_at = first_pending.take().unwrap_or_else(Instant::now);
        *pending = 0;
        for (i, s) in sources.iter_mut().enumerate() {
            let positions = next.drain(i);
            if positions.is_empty() {
                continue;
            }
            let batch = MicroBatch {
                source: i,
                events: (s.decoder.rows() > 0).then(|| s.decoder.finish()),
                rejects: (!s.rejects.is_empty()).then(|| s.rejects.finish()),
                positions,
                consumed_at,
            };
            if !self.send(Input::Batch(batch))? {
                return Ok(false);
            }
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

    use crate::fixtures::on_mock_cluster;

    /// The polling loop ends (a stop, a failure) with a rebalance it recorded and did not
    /// act on: librdkafka waits for that rebalance to be answered, and closing the consumer
    /// would wait for ever. The loop answers it as it ends, and the consumer closes.
    #[test]
    fn a_consumer_with_a_rebalance_left_unanswered_still_closes() {
        let (_cluster, dir, mut config) = on_mock_cluster("close", 2);
        config
            .kafka
            .properties
            .insert("partition.assignment.strategy".into(), "cooperative-sticky".into());
        let lake = Lake::new(&config.lake).unwrap();
        let (consumer, rebalances) = create(&config).unwrap();
        // Poll until librdkafka hands out the assignment (recorded, not answered).
        let deadline = Instant::now() + Duration::from_secs(30);
        while rebalances.events.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no assignment within 30 s");
            let _ = consumer.poll(Duration::from_millis(50));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (output, _input) = mpsc::channel(1);
        let stop = CancellationToken::new();
        stop.cancel();
        let poller = Poller::new(
            &config,
            lake,
            (consumer, rebalances),
            runtime.handle().clone(),
            output,
            stop,
        );
        let (closed, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The poller holds the last reference: the consumer closes as it returns.
            poller.run().unwrap();
            let _ = closed.send(());
        });
        assert!(
            done.recv_timeout(Duration::from_secs(30)).is_ok(),
            "the consumer did not close"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A micro-batch is cut as soon as the consumer has taken everything fetched, not when its
    /// interval ends: with an interval of a minute, records produced to a quiet topic reach
    /// the aggregator within seconds.
    #[test]
    fn a_batch_is_cut_once_the_consumer_has_caught_up() {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

        fn next(runtime: &tokio::runtime::Runtime, input: &mut mpsc::Receiver<Input>, what: &str) -> Input {
            let within = Duration::from_secs(30);
            runtime
                .block_on(async { tokio::time::timeout(within, input.recv()).await })
                .unwrap_or_else(|_| panic!("{what} not sent within {within:?}"))
                .expect("the poller stopped")
        }

        let (cluster, dir, mut config) = on_mock_cluster("caught-up", 1);
        config.speed.batch_interval = Duration::from_secs(60);
        let lake = Lake::new(&config.lake).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (output, mut input) = mpsc::channel(1);
        let stop = CancellationToken::new();
        // The poller stops however the test ends.
        let _stopping = stop.clone().drop_guard();
        let poller = Poller::new(
            &config,
            lake,
            create(&config).unwrap(),
            runtime.handle().clone(),
            output,
            stop.clone(),
        );
        let (stopped, polling) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = stopped.send(poller.run());
        });
        assert!(matches!(
            next(&runtime, &mut input, "the assignment"),
            Input::Assigned(list) if list.len() == 1
        ));

        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .unwrap();
        for i in 0..5i64 {
            let record = format!(
                r#"{{"ts":{},"user":"u{i}","page":"/p","ms":{i}}}"#,
                1_795_219_200_000 + i
            );
            producer
                .send(BaseRecord::<(), str>::to("clicks").payload(&record))
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let mut offsets = Vec::new();
        while offsets.len() < 5 {
            let Input::Batch(batch) = next(&runtime, &mut input, "the produced records") else {
                panic!("a micro-batch expected");
            };
            assert_eq!(
                batch.events.as_ref().map_or(0, arrow::array::RecordBatch::num_rows) as i64,
                batch.positions[0].end - batch.positions[0].start
            );
            offsets.extend(batch.positions[0].start..batch.positions[0].end);
        }
        assert_eq!(offsets, (0..5).collect::<Vec<i64>>(), "each record once, in order");

        stop.cancel();
        polling
            .recv_timeout(Duration::from_secs(30))
            .expect("the poller did not stop")
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The batch call moves a partition's position past the offset an error in a record's
    /// place carries (the fetcher's, not consumed); a cooperative rebalance pauses and resumes
    /// a partition from that position, and would skip the record there. The poller seeks
    /// the partition back to its own next offset, and the record comes.
    #[test]
    fn a_fetch_error_does_not_move_a_partition_past_a_record() {
        /// Fetches until `done` says so: the offsets taken and the errors seen.
        fn fetch_until(
            consumer: &KafkaConsumer,
            queue: &mut FetchQueue,
            next: &mut NextOffsets,
            done: impl Fn(&[i64], &[FetchError]) -> bool,
            what: &str,
        ) -> (Vec<i64>, Vec<FetchError>) {
            let (mut taken, mut errors) = (Vec::new(), Vec::new());
            let deadline = Instant::now() + Duration::from_secs(20);
            while !done(&taken, &errors) {
                assert!(
                    Instant::now() < deadline,
                    "{what} not within 20 s: took {taken:?}, errors {errors:?}"
                );
                let _ = consumer.poll(Duration::ZERO);
                let mut fetched = queue.fetch(Duration::from_millis(50), 64);
                for i in 0..fetched.len() {
                    match fetched.get(i) {
                        Ok(r) if next.take(r.topic, r.partition, r.offset).is_some() => taken.push(r.offset),
                        Ok(_) => {}
                        Err(e) => errors.push(*e),
                    }
                }
            }
            (taken, errors)
        }

        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        use rdkafka::types::RDKafkaApiKey;

        let (cluster, dir, config) = on_mock_cluster("fetch-error", 1);
        // Assigned, not subscribed: no rebalance of the group's can pause the partition.
        let consumer: Arc<KafkaConsumer> = Arc::new(
            client_config(&config, &[("group.id", "fetch-error"), ("enable.auto.commit", "false")])
                .create_with_context(SpeedContext {
                    rebalances: Arc::default(),
                })
                .unwrap(),
        );
        let tp = TopicPartition::new("clicks", 0);
        let mut queue = FetchQueue::new(consumer.clone());
        assert!(queue.route(&tp));
        let mut start = TopicPartitionList::new();
        start.add_partition_offset("clicks", 0, Offset::Offset(0)).unwrap();
        consumer.assign(&start).unwrap();
        let mut next = NextOffsets::default();
        next.start(tp.clone(), 0, 0);

        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .unwrap();
        let produce = |n: i64| {
            producer
                .send(
                    BaseRecord::<(), str>::to("clicks")
                        .payload(&format!(r#"{{"ts":{n},"user":"u","page":"/p","ms":1}}"#)),
                )
                .unwrap();
            producer.flush(Duration::from_secs(10)).unwrap();
        };
        for n in 0..3 {
            produce(n);
        }
        let (taken, errors) = fetch_until(
            &consumer,
            &mut queue,
            &mut next,
            |t, _| t.len() == 3,
            "the first three records",
        );
        assert_eq!(taken, [0, 1, 2]);
        assert!(errors.is_empty(), "no end-of-partition errors: {errors:?}");

        cluster.request_errors(
            RDKafkaApiKey::Fetch,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_MSG; 3],
        );
        let (taken, errors) = fetch_until(
            &consumer,
            &mut queue,
            &mut next,
            |_, e| !e.is_empty(),
            "the injected fetch error",
        );
        assert!(taken.is_empty());
        let error = &errors[0];
        assert_eq!(error.partition, Some((tp.clone(), 3)), "{error:?}");
        assert_eq!(
            error.error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::InvalidMessage),
            "the injected error, not an end of partition: {error:?}"
        );
        let position = |c: &KafkaConsumer| c.position().unwrap().find_partition("clicks", 0).unwrap().offset();
        assert_eq!(
            position(&consumer),
            Offset::Offset(4),
            "librdkafka's batch call moved the position past offset 3 (if this fails, it no longer does)"
        );

        let sought: Vec<TopicPartition> = errors.into_iter().filter_map(|e| to_seek_back(e, &next)).collect();
        assert!(!sought.is_empty() && sought.iter().all(|s| s == &tp), "{sought:?}");
        assert!(seek_back(&consumer, &tp, &next));
        assert_ne!(position(&consumer), Offset::Offset(4));
        // What a cooperative rebalance does to the partitions it keeps.
        consumer.pause(&partition_list(std::slice::from_ref(&tp))).unwrap();
        consumer.resume(&partition_list(std::slice::from_ref(&tp))).unwrap();
        produce(3);
        produce(4);
        let (taken, _) = fetch_until(
            &consumer,
            &mut queue,
            &mut next,
            |t, _| t.len() == 2,
            "the records after the error",
        );
        assert_eq!(taken, [3, 4], "the record at the error's offset is taken");

        drop(queue);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The workspace denies unsafe code; the fetch queue (librdkafka's batch call, which
    /// rdkafka does not wrap) is the one module allowed it.
    #[test]
    fn unsafe_code_is_allowed_in_the_fetch_queue_alone() {
        fn sources(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if path.is_dir() && !name.starts_with('.') && name != "target" {
                    sources(&path, found);
                } else if name.ends_with(".rs") {
                    found.push(path);
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut files = Vec::new();
        sources(root, &mut files);
        let allowing: Vec<String> = files
            .iter()
            .filter(|f| {
                std::fs::read_to_string(f).unwrap().lines().any(|l| {
                    l.trim_start().starts_with("#[allow(unsafe_code)]")
                        || l.trim_start().starts_with("#![allow(unsafe_code)]")
                })
            })
            .map(|f| f.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            allowing,
            ["speed-layer/src/consumer.rs"],
            "the modules allowing unsafe code"
        );
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("unsafe_code = \"deny\""),
            "the workspace denies unsafe code"
        );
    }

    /// Offsets a transactional producer leaves out (a commit marker after each transaction,
    /// aborted records and their marker) are passed over at once, without seeking back; a
    /// record below the start, or of a partition given up, is not taken.
    #[test]
    fn gaps_in_offsets_are_taken_at_once() {
        let p0 = TopicPartition::new("t", 0);
        let mut next = NextOffsets::default();
        next.start(p0.clone(), 100, 0);
        next.start(TopicPartition::new("u", 0), 7, 1);
        let offsets = [98, 99, 100, 101, 102, 104, 105, 106, 120, 121, 500, 501];
        let taken: Vec<i64> = offsets
            .into_iter()
            .filter(|o| next.take("t", 0, *o) == Some(0))
            .collect();
        assert_eq!(taken, [100, 101, 102, 104, 105, 106, 120, 121, 500, 501]);
        assert_eq!(next.take("t", 0, 501), None, "a record taken once is not taken again");
        assert_eq!(next.take("t", 1, 0), None, "a partition not owned");
        assert_eq!(next.take("u", 0, 7), Some(1), "the source of its partition");
        // What was taken, per source, once: from the first offset taken to past the last.
        let ranges = |r: Vec<OffsetRange>| {
            r.into_iter()
                .map(|r| (r.partition.topic, r.start, r.end))
                .collect::<Vec<_>>()
        };
        assert_eq!(ranges(next.drain(0)), [("t".to_string(), 100, 502)]);
        assert_eq!(ranges(next.drain(1)), [("u".to_string(), 7, 8)]);
        assert!(next.drain(0).is_empty(), "drained");
        assert_eq!(next.take("t", 0, 502), Some(0));
        assert_eq!(ranges(next.drain(0)), [("t".to_string(), 502, 503)]);
        next.forget(&p0);
        assert_eq!(next.take("t", 0, 503), None, "a partition given up");
    }
}
