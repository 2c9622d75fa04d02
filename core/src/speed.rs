//! What the serving layer asks of the speed layer, in process or over Flight.
//!
//! ```text
//!  serving: batch version of view V covers Kafka offsets O (per topic/partition)
//!     │  states(V, O)
//!     ▼
//!  speed layer: per partition it owns, with its owner generation: the partial states of V
//!               for the events at offsets [from, until), from = max(O, what it holds)
//! ```
//!
//! The answer is `finalize(merge(batch states, speed states))`: every event is counted
//! exactly once because the boundary is a Kafka offset recorded with the batch version. A
//! partition two speed layers report counts once, from the newest owner generation; offsets
//! no speed layer holds come from the lake's archived raw events.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A partition of a Kafka topic; shown, and stored in the lake's commits, as
/// `topic/partition`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

impl std::str::FromStr for TopicPartition {
    type Err = String;

    /// `topic/partition`; a topic name may not hold `/`, so the last one splits.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (topic, partition) = s
            .rsplit_once('/')
            .ok_or_else(|| format!("`{s}` is not a Kafka partition: expected `topic/partition`"))?;
        let partition = partition
            .parse()
            .map_err(|_| format!("`{s}` is not a Kafka partition: `{partition}` is not a partition number"))?;
        Ok(TopicPartition::new(topic, partition))
    }
}

impl Serialize for TopicPartition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TopicPartition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde of a [`TopicPartition`] as two fields, `topic` and `partition`, for the messages
/// that carry a partition flat among their own fields:
/// `#[serde(flatten, with = "partition_fields")]`. (A partition on its own, or as a map key,
/// is `topic/partition`.)
pub mod partition_fields {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::TopicPartition;

    #[derive(Serialize)]
    struct Fields<'a> {
        topic: &'a str,
        partition: i32,
    }

    #[derive(Deserialize)]
    struct OwnedFields {
        topic: String,
        partition: i32,
    }

    pub fn serialize<S: Serializer>(tp: &TopicPartition, s: S) -> Result<S::Ok, S::Error> {
        Fields {
            topic: &tp.topic,
            partition: tp.partition,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TopicPartition, D::Error> {
        let OwnedFields { topic, partition } = OwnedFields::deserialize(d)?;
        Ok(TopicPartition { topic, partition })
    }
}

/// Kafka positions: per partition, an offset.
pub type Offsets = BTreeMap<TopicPartition, i64>;

/// The records of one partition at offsets `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetRange {
    pub partition: TopicPartition,
    pub start: i64,
    pub end: i64,
}

/// Which events of one partition a speed layer's states hold. In the Flight answer's
/// headers it is flat, as it always was: `topic`, `partition`, `generation`, `from`, `until`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartRange {
    /// The owner generation under which the speed layer holds the partition (raised by each
    /// new owner's claim in the lake): of two reports of a partition, the newer counts.
    pub generation: u64,
    /// The states hold the events at these offsets.
    pub offsets: OffsetRange,
}

/// A [`PartRange`] as it travels.
#[derive(Serialize, Deserialize)]
#[serde(rename = "PartRange")]
struct PartRangeFields<'a> {
    topic: Cow<'a, str>,
    partition: i32,
    generation: u64,
    from: i64,
    until: i64,
}

impl Serialize for PartRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        PartRangeFields {
            topic: Cow::Borrowed(&self.offsets.partition.topic),
            partition: self.offsets.partition.partition,
            generation: self.generation,
            from: self.offsets.start,
            until: self.offsets.end,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for PartRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let f = PartRangeFields::deserialize(d)?;
        Ok(PartRange {
            generation: f.generation,
            offsets: OffsetRange {
                partition: TopicPartition::new(f.topic.into_owned(), f.partition),
                start: f.from,
                end: f.until,
            },
        })
    }
}

/// One partition's part of a view's speed states.
#[derive(Debug, Clone)]
pub struct SpeedPart {
    pub range: PartRange,
    /// State rows of the view (its state schema).
    pub batches: Vec<RecordBatch>,
}

/// A speed layer, local or remote.
#[async_trait::async_trait]
pub trait SpeedSource: Send + Sync + std::fmt::Debug {
    /// Where it is (for messages and system tables).
    fn name(&self) -> String;

    /// State rows of `view` for every partition this speed layer owns: the events at offsets
    /// at or beyond `coverage`, or beyond what it still holds if that is further. With
    /// `recency`, first waits (that long at most) until it has consumed every record Kafka
    /// held of those partitions when asked (`serve.real_time_recency`).
    async fn states(&self, view: &str, coverage: &Offsets, recency: Option<Duration>) -> Result<Vec<SpeedPart>>;

    /// Positions, lateness and memory, for system tables.
    async fn status(&self) -> Result<SpeedStatus>;
}

/// What a speed layer reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpeedStatus {
    pub instance: String,
    pub partitions: Vec<PartitionStatus>,
    pub views: Vec<ViewSpeedStatus>,
    pub lateness: Vec<LatenessBucket>,
}

/// One Kafka partition as the speed layer sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionStatus {
    pub source: String,
    /// Sent as the two fields `topic` and `partition`.
    #[serde(flatten, with = "partition_fields")]
    pub partition: TopicPartition,
    /// The owner generation this speed layer claimed the partition with.
    #[serde(default)]
    pub generation: u64,
    /// The next offset to consume.
    pub consumed: i64,
    /// The next offset not yet archived in the lake.
    pub archived: i64,
    /// The partition's high watermark in Kafka (for lag), when known.
    pub high_watermark: Option<i64>,
    /// The highest event time seen (microseconds since the epoch).
    pub max_event_time: Option<i64>,
    pub events: u64,
    pub rejected: u64,
    /// Events that arrived after one of their windows had closed in event time (see
    /// [`LatenessBucket`]).
    pub late_events: u64,
}

/// The in-memory states of one view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ViewSpeedStatus {
    pub view: String,
    /// Generations held (one per archive commit not yet covered by the batch layer, plus the
    /// open one), over all partitions.
    pub generations: u64,
    /// Live (window, group) state rows and their memory.
    pub state_rows: u64,
    pub state_bytes: u64,
    /// The batch coverage the speed layer last saw for this view.
    pub batch_coverage: Offsets,
}

/// How late events arrive, per view: an event is late when the last window of the view it
/// falls in had already closed in event time, i.e. the highest event time seen before it in
/// its partition had reached that window's end; counted by how long before it had.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatenessBucket {
    pub source: String,
    pub view: String,
    /// Upper bound of the bucket, e.g. "1s", "1m", "+Inf".
    pub le: String,
    pub events: u64,
}

/// Lateness bucket bounds in microseconds, and their labels.
pub const LATENESS_BUCKETS: &[(i64, &str)] = &[
    (0, "0"),
    (1_000_000, "1s"),
    (10_000_000, "10s"),
    (60_000_000, "1m"),
    (600_000_000, "10m"),
    (3_600_000_000, "1h"),
    (86_400_000_000, "1d"),
    (i64::MAX, "+Inf"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_stored_as_topic_slash_partition() {
        let offsets: Offsets = [
            (TopicPartition::new("page.views", 10), 7),
            (TopicPartition::new("page.views", 2), 5),
        ]
        .into();
        // Ordered by partition number, stored in the JSON the lake's commits always held.
        assert_eq!(
            offsets.keys().map(ToString::to_string).collect::<Vec<_>>(),
            ["page.views/2", "page.views/10"]
        );
        let json = serde_json::to_string(&offsets).unwrap();
        assert_eq!(json, r#"{"page.views/2":5,"page.views/10":7}"#);
        assert_eq!(serde_json::from_str::<Offsets>(&json).unwrap(), offsets);
        assert_eq!(
            "a/b/3".parse::<TopicPartition>().unwrap(),
            TopicPartition::new("a/b", 3)
        );
        assert_eq!(
            "clicks".parse::<TopicPartition>().unwrap_err(),
            "`clicks` is not a Kafka partition: expected `topic/partition`"
        );
        let bad = serde_json::from_str::<Offsets>(r#"{"clicks/x":1}"#)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("`x` is not a partition number"), "{bad}");
    }

    /// The speed layer's messages carry a partition as the two fields they always had.
    #[test]
    fn messages_carry_a_partition_as_topic_and_partition_fields() {
        let range = PartRange {
            generation: 3,
            offsets: OffsetRange {
                partition: TopicPartition::new("page.views", 2),
                start: 10,
                end: 20,
            },
        };
        let json = serde_json::to_string(&range).unwrap();
        assert_eq!(
            json,
            r#"{"topic":"page.views","partition":2,"generation":3,"from":10,"until":20}"#
        );
        assert_eq!(serde_json::from_str::<PartRange>(&json).unwrap(), range);
        let status = PartitionStatus {
            source: "views".into(),
            partition: TopicPartition::new("page.views", 2),
            generation: 3,
            consumed: 20,
            archived: 10,
            high_watermark: Some(25),
            ..Default::default()
        };
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"source":"views","topic":"page.views","partition":2,"generation":3,"consumed":20,"#,
                r#""archived":10,"high_watermark":25,"max_event_time":null,"events":0,"rejected":0,"late_events":0}"#
            )
        );
        assert_eq!(serde_json::from_str::<PartitionStatus>(&json).unwrap(), status);
        // A status of a speed layer that did not send its generation yet.
        let old = r#"{"source":"views","topic":"t","partition":0,"consumed":1,"archived":1,"high_watermark":null,
            "max_event_time":null,"events":1,"rejected":0,"late_events":0}"#;
        let old = serde_json::from_str::<PartitionStatus>(old).unwrap();
        assert_eq!((old.partition, old.generation), (TopicPartition::new("t", 0), 0));
    }
}
