//! What the serving layer asks of the speed layer, in process or over Flight.
//!
//! ```text
//!  serving: batch version of view V covers Kafka offsets O (per topic/partition)
//!     │  states(V, O)
//!     ▼
//!  speed layer: the partial states of V for the events at offsets >= O, per partition;
//!               refused (stale) if it no longer holds states that far back
//! ```
//!
//! The answer is `finalize(merge(batch states, speed states))`: every event is counted
//! exactly once because the boundary is a Kafka offset recorded with the batch version.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Kafka positions: `topic/partition` -> offset.
pub type Offsets = BTreeMap<String, i64>;

/// Key of a partition in [`Offsets`].
pub fn partition_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// A speed layer, local or remote.
#[async_trait::async_trait]
pub trait SpeedSource: Send + Sync + std::fmt::Debug {
    /// Where it is (for messages and system tables).
    fn name(&self) -> String;

    /// State rows of `view` (the view table's state schema) for the events at offsets at or
    /// beyond `coverage`, for every partition this speed layer owns.
    async fn states(&self, view: &str, coverage: &Offsets) -> Result<Vec<RecordBatch>>;

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
    pub topic: String,
    pub partition: i32,
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
    /// Events older than the highest event time seen before them.
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

/// How late events arrive: counts of events by how far behind the highest event time seen
/// they were.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatenessBucket {
    pub source: String,
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
