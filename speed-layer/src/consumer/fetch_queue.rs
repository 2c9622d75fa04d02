//! The poller's own queue of records, drained many at a time.
//!
//! rdkafka's poll hands over one record per call, each a round of librdkafka's queue: a lock,
//! reads of the clock, an event set up and torn down, and a reference count allocated for it.
//! librdkafka's batch call (`rd_kafka_consume_batch_queue`) takes every record at hand in one
//! round, but on the consumer's queue it would also serve a rebalance itself: with rdkafka's
//! events and no rebalance callback, it unassigns every partition, where Strata's poller must
//! see the rebalance, archive and claim before answering it. So the records of each partition
//! the poller assigns are routed to a queue of its own, which holds records only (and the
//! errors of fetching them), and drained with the batch call; rebalances, offset commits'
//! results and client errors stay on the consumer's queue, served by rdkafka's poll as before.
//!
//! ```text
//!  partition fetch queues ──(routed before each assign)──► FetchQueue ──batch call──► poller
//!  consumer queue (rebalances, commits, errors; records of a partition not routed) ──poll──┘
//! ```
//!
//! What librdkafka does on the queue is as with the poll: a revoked partition's records still
//! queued are dropped by the batch call itself (their fetch version is outdated once the
//! partition is unassigned or sought), transaction markers advance the partition's position
//! without being returned, and the position (`Consumer::position`) follows the records
//! returned. One thing differs: the batch call also moves a partition's position past the
//! offset of an error it returns in a record's place (a fetch error carries the offset the
//! fetcher was at, not yet consumed), where the poll leaves it. The poller seeks such a
//! partition back to its own next offset (see `to_seek_back`), and the consumer turns
//! `enable.partition.eof` off: an end-of-partition error comes each time fetching reaches a
//! partition's end, and again after each seek.
//!
//! Routing is librdkafka's application forwarding of the partition's fetch queue: it stays
//! marked as the application's even once fetching stops and the forwarding is cleared, so
//! a partition once routed must be routed again before it is assigned again (or its records
//! would go nowhere); the poller routes every partition before every assign it makes.
//!
//! This module is the only one of Strata with unsafe code: rdkafka has no batch call. Every
//! pointer it handles comes from librdkafka. The `*_queue` consume calls are documented for
//! the legacy consumer; librdkafka's high-level consumer serves its own queues with the same
//! code (`rd_kafka_q_serve_rkmessages`).

use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use strata_core::speed::TopicPartition;

use super::{KafkaConsumer, KafkaRecord};

/// A queue of the consumer's client the records of routed partitions go to.
pub(crate) struct FetchQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
    /// The messages of the last [`FetchQueue::fetch`], destroyed when its [`Fetched`] drops.
    messages: Vec<*mut rd::rd_kafka_message_t>,
    /// Keeps the client alive while the queue is (dropped after it: see `Drop`).
    consumer: Arc<KafkaConsumer>,
}

impl FetchQueue {
    pub(crate) fn new(consumer: Arc<KafkaConsumer>) -> FetchQueue {
        // SAFETY: the client is alive (held by `consumer`); librdkafka returns a new queue,
        // never null (it aborts when out of memory).
        let queue = unsafe { rd::rd_kafka_queue_new(consumer.client().native_ptr()) };
        FetchQueue {
            queue: NonNull::new(queue).expect("librdkafka returns a queue"),
            messages: Vec::new(),
            consumer,
        }
    }

    /// Routes the records of `partition` to this queue, from its next start of fetching on:
    /// called before the partition is assigned. False if librdkafka has no queue for it (a
    /// topic name it cannot take).
    pub(crate) fn route(&self, partition: &TopicPartition) -> bool {
        let Ok(topic) = CString::new(partition.topic.as_str()) else {
            return false;
        };
        // SAFETY: the client is alive; `topic` is a C string that outlives the call. The
        // partition's queue handle is released once forwarded (the forwarding stays).
        unsafe {
            let partition_queue = rd::rd_kafka_queue_get_partition(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                partition.partition,
            );
            if partition_queue.is_null() {
                return false;
            }
            rd::rd_kafka_queue_forward(partition_queue, self.queue.as_ptr());
            rd::rd_kafka_queue_destroy(partition_queue);
        }
        true
    }

    /// Waits up to `timeout` for a first record, then takes every record at hand, up to `max`
    /// in all (librdkafka's batch call would wait for `max` records until the timeout).
    pub(crate) fn fetch(&mut self, timeout: Duration, max: usize) -> Fetched<'_> {
        debug_assert!(self.messages.is_empty());
        self.messages.resize(max, std::ptr::null_mut());
        let mut taken = self.take(0, 0, max);
        if taken == 0 && !timeout.is_zero() && max > 0 {
            let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX).max(1);
            taken = self.take(millis, 0, 1);
            if taken == 1 {
                taken += self.take(0, 1, max - 1);
            }
        }
        self.messages.truncate(taken);
        Fetched {
            messages: &mut self.messages,
            topic: None,
        }
    }

    /// One batch call: up to `count` messages into `messages[at..]`.
    fn take(&mut self, timeout_ms: i32, at: usize, count: usize) -> usize {
        if count == 0 {
            return 0;
        }
        let slots = &mut self.messages[at..at + count];
        // SAFETY: the queue is alive; librdkafka writes at most `count` message pointers into
        // `slots`, which has room for `count`.
        let taken =
            unsafe { rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), timeout_ms, slots.as_mut_ptr(), count) };
        // Never negative for a queue (only the legacy per-partition call returns -1).
        usize::try_from(taken).unwrap_or(0).min(count)
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: no `Fetched` is alive (it borrows `self`); the client is still alive
        // (`consumer` drops after this).
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// The records of one [`FetchQueue::fetch`], in queue order; released when dropped.
pub(crate) struct Fetched<'q> {
    messages: &'q mut Vec<*mut rd::rd_kafka_message_t>,
    /// The topic of the last record read, and its name: records come in runs of one
    /// partition, and the name is measured and checked as UTF-8 once per run.
    topic: Option<(*mut rd::rd_kafka_topic_t, *const u8, usize)>,
}

impl Fetched<'_> {
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    /// The `i`th record (borrowed from this `Fetched`), or the error librdkafka put in its
    /// place.
    pub(crate) fn get(&mut self, i: usize) -> Result<KafkaRecord<'_>, Box<FetchError>> {
        // SAFETY: each pointer is a message the batch call returned, alive until this
        // `Fetched` drops and destroys it; the record borrows `self`.
        let message: &rd::rd_kafka_message_t = unsafe { &*self.messages[i] };
        if message.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(Box::new(FetchError::of(message)));
        }
        let (name, len) = match self.topic {
            Some((rkt, name, len)) if rkt == message.rkt => (name, len),
            _ => {
                // SAFETY: a message holds a reference to its topic, whose name is a C string
                // that lives as long as the topic.
                let name = unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(message.rkt)) }
                    .to_str()
                    .map_err(|_| {
                        Box::new(FetchError {
                            error: KafkaError::MessageConsumption(RDKafkaErrorCode::InvalidTopic),
                            detail: "a topic name that is not UTF-8".into(),
                            partition: None,
                        })
                    })?;
                self.topic = Some((message.rkt, name.as_ptr(), name.len()));
                (name.as_ptr(), name.len())
            }
        };
        // SAFETY: the name of this message's topic (the same topic as when it was read), checked
        // as UTF-8 then, alive with the message.
        let topic = unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(name, len)) };
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is alive.
        let timestamp = unsafe { rd::rd_kafka_message_timestamp(message, &mut kind) };
        let payload = (!message.payload.is_null()).then(|| {
            // SAFETY: a message's payload is `len` bytes, alive with the message.
            unsafe { std::slice::from_raw_parts(message.payload as *const u8, message.len) }
        });
        let available = kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && timestamp != -1;
        Ok(KafkaRecord {
            topic,
            partition: message.partition,
            offset: message.offset,
            timestamp: available.then_some(timestamp),
            payload,
        })
    }
}

/// An error librdkafka returned in a record's place: a fetch error of a partition (then with
/// the offset the fetcher was at) or of the client.
#[derive(Debug)]
pub(crate) struct FetchError {
    pub(crate) error: KafkaError,
    /// librdkafka's own description of it.
    pub(crate) detail: String,
    pub(crate) partition: Option<(TopicPartition, i64)>,
}

impl FetchError {
    fn of(message: &rd::rd_kafka_message_t) -> FetchError {
        // SAFETY: an error message's payload, if any, is librdkafka's description of it, `len`
        // bytes, alive with the message.
        let detail = if message.payload.is_null() {
            String::new()
        } else {
            String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(message.payload as *const u8, message.len) })
                .into_owned()
        };
        let partition = (!message.rkt.is_null() && message.partition >= 0).then(|| {
            // SAFETY: the message holds a reference to its topic, whose name is a C string.
            let topic = unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(message.rkt)) };
            (
                TopicPartition::new(topic.to_string_lossy().into_owned(), message.partition),
                message.offset,
            )
        });
        FetchError {
            error: KafkaError::MessageConsumption(RDKafkaErrorCode::from(message.err)),
            detail,
            partition,
        }
    }
}

impl Drop for Fetched<'_> {
    fn drop(&mut self) {
        for message in self.messages.drain(..) {
            // SAFETY: returned by the batch call, destroyed once.
            unsafe { rd::rd_kafka_message_destroy(message) };
        }
    }
}
