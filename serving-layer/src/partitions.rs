//! The alarm for Kafka partitions nobody consumes.
//!
//! ```text
//!  every serve.partition_check_interval:
//!    Kafka metadata ──► the sources' topics' partitions ─┐
//!    each speed layer ──► the partitions it owns ────────┴─► per partition: owned now? since when not?
//!  a partition no live speed process has owned for serve.unowned_partition_grace:
//!    strata_partitions_unowned > 0, /health "degraded", system.partitions alarm = true
//! ```
//!
//! Its answers stay exact meanwhile (the lake's archived events stand in), but they stop
//! growing: an operator must know.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use strata_core::config::Config;
use strata_core::metrics::{Gauge, metrics};
use strata_core::speed::{SpeedSource, TopicPartition};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// When the watch first knew of the partition.
    first: Instant,
    /// When a live speed layer last reported owning it.
    owned: Option<Instant>,
}

/// What the watch knows of one partition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ownership {
    /// How long no live speed process has owned it (zero while one does).
    pub unowned_for: Duration,
    /// Whether that is longer than the grace.
    pub alarm: bool,
}

/// Partitions, their ownership over time, and the alarm.
#[derive(Debug)]
pub struct PartitionWatch {
    grace: Duration,
    seen: Mutex<BTreeMap<TopicPartition, Seen>>,
    /// Why the topics' partitions could not be read from Kafka, the last time.
    metadata_error: Mutex<Option<String>>,
    unowned: Gauge,
}

impl PartitionWatch {
    pub fn new(grace: Duration) -> Self {
        PartitionWatch {
            grace,
            seen: Mutex::new(BTreeMap::new()),
            metadata_error: Mutex::new(None),
            unowned: metrics().partitions_unowned.clone(),
        }
    }

    /// Records one look: the partitions that exist (from Kafka, the lake or the speed
    /// layers) and those a live speed layer owns.
    pub fn observe(&self, existing: &BTreeSet<TopicPartition>, owned: &BTreeSet<TopicPartition>, now: Instant) {
        let mut seen = self.seen.lock().expect("watch lock");
        for tp in existing.iter().chain(owned) {
            let entry = seen.entry(tp.clone()).or_insert(Seen {
                first: now,
                owned: None,
            });
            if owned.contains(tp) {
                entry.owned = Some(now);
            }
        }
        let alarms = seen.values().filter(|s| self.ownership(s, now).alarm).count();
        drop(seen);
        self.unowned.set(alarms as i64);
    }

    fn ownership(&self, seen: &Seen, now: Instant) -> Ownership {
        let since = seen.owned.unwrap_or(seen.first).max(seen.first);
        let unowned_for = if seen.owned == Some(now) {
            Duration::ZERO
        } else {
            now.saturating_duration_since(since)
        };
        Ownership {
            unowned_for,
            alarm: unowned_for > self.grace,
        }
    }

    /// Every partition known, and its ownership as of `now`.
    pub fn partitions(&self, now: Instant) -> BTreeMap<TopicPartition, Ownership> {
        let seen = self.seen.lock().expect("watch lock");
        seen.iter()
            .map(|(tp, s)| (tp.clone(), self.ownership(s, now)))
            .collect()
    }

    /// The partitions in alarm, for /health.
    pub fn alarms(&self, now: Instant) -> Vec<(TopicPartition, Duration)> {
        self.partitions(now)
            .into_iter()
            .filter(|(_, o)| o.alarm)
            .map(|(tp, o)| (tp, o.unowned_for))
            .collect()
    }

    pub fn metadata_error(&self) -> Option<String> {
        self.metadata_error.lock().expect("watch lock").clone()
    }
}

/// Looks at Kafka and the speed layers every `interval` until `stop`.
pub async fn run(
    watch: Arc<PartitionWatch>,
    config: Arc<Config>,
    speed: Vec<Arc<dyn SpeedSource>>,
    interval: Duration,
    timeout: Duration,
    stop: CancellationToken,
) {
    let topics: Vec<String> = config.sources.iter().flat_map(|s| s.topics.clone()).collect();
    if topics.is_empty() {
        return;
    }
    let metadata = Arc::new(metadata_client(&config));
    let mut alarmed: BTreeSet<TopicPartition> = BTreeSet::new();
    loop {
        let (client, wanted) = (metadata.clone(), topics.clone());
        let existing = tokio::task::spawn_blocking(move || topic_partitions(client.as_ref().as_ref(), &wanted))
            .await
            .unwrap_or_else(|e| Err(format!("the metadata lookup failed: {e}")));
        let mut all = BTreeSet::new();
        match existing {
            Ok(found) => {
                *watch.metadata_error.lock().expect("watch lock") = None;
                all.extend(found);
            }
            Err(e) => {
                let mut last = watch.metadata_error.lock().expect("watch lock");
                if last.as_deref() != Some(e.as_str()) {
                    tracing::warn!(error = %e, "cannot read the topics' partitions from Kafka: the unowned-partition alarm sees only the partitions the speed layers and the lake know");
                }
                *last = Some(e);
            }
        }
        let mut owned = BTreeSet::new();
        let statuses = futures::future::join_all(speed.iter().map(|s| tokio::time::timeout(timeout, s.status()))).await;
        for status in statuses.into_iter().flatten().flatten() {
            owned.extend(status.partitions.into_iter().map(|p| p.partition));
        }
        let now = Instant::now();
        watch.observe(&all, &owned, now);
        let alarms: BTreeSet<TopicPartition> = watch.alarms(now).into_iter().map(|(tp, _)| tp).collect();
        for tp in alarms.difference(&alarmed) {
            tracing::warn!(partition = %tp, grace = ?watch.grace, "no live speed process has consumed this partition for longer than serve.unowned_partition_grace: answers miss its newest events");
        }
        for tp in alarmed.difference(&alarms) {
            tracing::info!(partition = %tp, "the partition is consumed again");
        }
        alarmed = alarms;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// A client for topic metadata only (no group), with the config's Kafka properties
/// (security settings) minus the consumer's own.
fn metadata_client(config: &Config) -> Result<BaseConsumer, String> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.kafka.brokers);
    for (k, v) in &config.kafka.properties {
        if k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.") || k.starts_with("client.") {
            client.set(k, v);
        }
    }
    client.set("log_level", "3");
    client
        .create()
        .map_err(|e| format!("cannot create a Kafka client: {e}"))
}

fn topic_partitions(client: Result<&BaseConsumer, &String>, topics: &[String]) -> Result<Vec<TopicPartition>, String> {
    let client = client.map_err(Clone::clone)?;
    let mut out = Vec::new();
    for topic in topics {
        let metadata = client
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map_err(|e| format!("the partitions of topic `{topic}`: {e}"))?;
        for t in metadata.topics() {
            if let Some(e) = t.error() {
                return Err(format!("topic `{topic}`: {e:?}"));
            }
            out.extend(t.partitions().iter().map(|p| TopicPartition::new(t.name(), p.id())));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(&str, i32)]) -> BTreeSet<TopicPartition> {
        items.iter().map(|(t, p)| TopicPartition::new(*t, *p)).collect()
    }

    #[test]
    fn a_partition_nobody_owns_for_longer_than_the_grace_is_an_alarm() {
        let watch = PartitionWatch::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let all = set(&[("t", 0), ("t", 1), ("t", 2)]);
        watch.observe(&all, &set(&[("t", 0), ("t", 1)]), t0);
        let at = |s| t0 + Duration::from_secs(s);
        // Partition 2 was never owned: its clock starts when the watch first saw it.
        assert!(watch.alarms(at(10)).is_empty());
        // Partition 1's owner goes away at 20 s.
        watch.observe(&all, &set(&[("t", 0), ("t", 1)]), at(20));
        watch.observe(&all, &set(&[("t", 0)]), at(25));
        let alarms = watch.alarms(at(31));
        assert_eq!(alarms, vec![(TopicPartition::new("t", 2), Duration::from_secs(31))]);
        let state = watch.partitions(at(51));
        assert_eq!(
            state[&TopicPartition::new("t", 1)],
            Ownership {
                unowned_for: Duration::from_secs(31),
                alarm: true
            }
        );
        assert!(!state[&TopicPartition::new("t", 0)].alarm);
        // Owned again: the alarm ends.
        watch.observe(&all, &set(&[("t", 0), ("t", 1), ("t", 2)]), at(60));
        assert!(watch.alarms(at(60)).is_empty());
        assert_eq!(
            watch.partitions(at(60))[&TopicPartition::new("t", 2)].unowned_for,
            Duration::ZERO
        );
    }
}
