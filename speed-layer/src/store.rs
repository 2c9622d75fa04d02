//! The in-memory states of the speed layer, kept in generations aligned with archive commits.
//!
//! ```text
//!  partition t/0:  [100, 250) [250, 400) [400, 520) [520, ...open
//!                  └ archived, covered by batch ┘   └ archived ┘ └ consumed, not yet archived
//!  batch coverage of view V: t/0 -> 400
//!  states(V, {t/0: 400}) = states of [400, 520) and of the open segment
//! ```
//!
//! Every segment holds, per view, the partial states of its events. Segment boundaries are
//! the offsets archive commits record, and batch coverage is read from those same commits,
//! so a batch version covers whole segments: merging batch states with the segments it does
//! not cover counts every event exactly once. A segment is dropped once the batch versions
//! of every view cover it (after a grace period, for queries planned on the previous
//! version); memory is bounded by what the batch layer has not covered yet. A query on an
//! older batch version than the states go back to gets the states from where they start,
//! and says so: the serving layer reads the offsets in between from the lake.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use strata_core::speed::{
    LATENESS_BUCKETS, OffsetRange, Offsets, PartRange, PartitionStatus, SpeedPart, TopicPartition, ViewSpeedStatus,
};
use strata_core::{Error, Result};

/// The events of one partition between two archive commits.
#[derive(Debug)]
pub struct Segment {
    pub start: i64,
    /// Exclusive; for the open segment, the next offset to consume.
    pub end: i64,
    pub open: bool,
    /// Per view: state batches (folded when many).
    pub states: Vec<Vec<RecordBatch>>,
}

impl Segment {
    fn new(start: i64, views: usize) -> Segment {
        Segment {
            start,
            end: start,
            open: true,
            states: vec![Vec::new(); views],
        }
    }

    fn rows(&self, view: usize) -> u64 {
        self.states[view].iter().map(|b| b.num_rows() as u64).sum()
    }

    fn bytes(&self, view: usize) -> u64 {
        self.states[view].iter().map(|b| b.get_array_memory_size() as u64).sum()
    }
}

/// One Kafka partition this speed layer owns.
#[derive(Debug)]
pub struct PartitionStates {
    pub source: usize,
    pub partition: TopicPartition,
    /// The owner generation this process claimed the partition with.
    pub generation: u64,
    pub segments: VecDeque<Segment>,
    /// Per view: no states are held for offsets below this (dropped, or before recovery).
    pub floor: Vec<i64>,
    pub archived: i64,
    pub events: u64,
    pub rejected: u64,
    pub late: u64,
    pub max_event_time: Option<i64>,
    pub high_watermark: Option<i64>,
    /// The end of the last micro-batch received of the partition, whose states may not be
    /// published yet: where its consumer lag is counted from.
    pub received: i64,
}

impl PartitionStates {
    /// The next offset to consume.
    pub fn consumed(&self) -> i64 {
        self.segments.back().map_or(self.archived, |s| s.end)
    }

    /// How many records the partition holds beyond the last micro-batch received (published
    /// or not), once its high watermark is known.
    pub fn lag(&self) -> Option<i64> {
        self.high_watermark
            .map(|high| (high - self.consumed().max(self.received)).max(0))
    }

    /// The open segment, opened at the consumed position if there is none.
    pub fn open_segment(&mut self, views: usize) -> &mut Segment {
        if !self.segments.back().is_some_and(|s| s.open) {
            let start = self.consumed();
            self.segments.push_back(Segment::new(start, views));
        }
        self.segments.back_mut().expect("just pushed")
    }
}

/// A batch version's coverage as seen by the speed layer, and when it was seen.
#[derive(Debug, Clone)]
struct SeenCoverage {
    offsets: Offsets,
    seen: Instant,
}

/// All states of the speed layer.
#[derive(Debug)]
pub struct Store {
    pub views: Vec<String>,
    /// View index -> source index.
    pub view_source: Vec<usize>,
    pub partitions: BTreeMap<TopicPartition, PartitionStates>,
    /// Per view: coverages seen, oldest first (the newest older than the grace is applied).
    coverage: Vec<VecDeque<SeenCoverage>>,
    /// Per view: lateness histogram counts (see [`LATENESS_BUCKETS`]).
    pub lateness: Vec<Vec<u64>>,
}

impl Store {
    pub fn new(views: Vec<String>, view_source: Vec<usize>) -> Store {
        let n = views.len();
        Store {
            views,
            view_source,
            partitions: BTreeMap::new(),
            coverage: vec![VecDeque::new(); n],
            lateness: vec![vec![0; LATENESS_BUCKETS.len()]; n],
        }
    }

    pub fn view_index(&self, view: &str) -> Option<usize> {
        self.views.iter().position(|v| v.eq_ignore_ascii_case(view))
    }

    /// The state batches of `view` for every owned partition: the events at offsets from
    /// `coverage` on, or from the first offset states are held for if that is further.
    pub fn states(&self, view: &str, coverage: &Offsets) -> Result<Vec<SpeedPart>> {
        let v = self
            .view_index(view)
            .ok_or_else(|| Error::Input(format!("the speed layer has no view named `{view}`")))?;
        let mut out = Vec::new();
        'partitions: for p in self.partitions.values().filter(|p| p.source == self.view_source[v]) {
            let from = coverage.get(&p.partition).copied().unwrap_or(0).max(p.floor[v]);
            let mut batches = Vec::new();
            for s in &p.segments {
                if s.end <= from && !s.open {
                    continue;
                }
                if s.start < from {
                    // Coverage falls inside a segment only when another process archived
                    // this partition beyond what this one holds (it lost the partition and
                    // has not noticed yet): it has no exact states to offer, and says
                    // nothing of it (the newer owner, or the lake, answers for it).
                    tracing::debug!(partition = %p.partition, from, segment = ?(s.start, s.end), view, "batch coverage inside a segment: not reporting the partition");
                    continue 'partitions;
                }
                batches.extend(s.states[v].iter().cloned());
            }
            out.push(SpeedPart {
                range: PartRange {
                    generation: p.generation,
                    offsets: OffsetRange {
                        partition: p.partition.clone(),
                        start: from,
                        end: p.consumed().max(from),
                    },
                },
                batches,
            });
        }
        Ok(out)
    }

    /// Records the newest batch coverage of a view, and drops the segments that every view's
    /// coverage, seen at least `grace` ago, covers.
    pub fn observe_coverage(&mut self, view: usize, offsets: Offsets, now: Instant, grace: Duration) {
        let seen = &mut self.coverage[view];
        if seen.back().is_none_or(|c| c.offsets != offsets) {
            seen.push_back(SeenCoverage { offsets, seen: now });
        }
        self.drop_covered(now, grace);
    }

    fn drop_covered(&mut self, now: Instant, grace: Duration) {
        // Per view, the newest coverage seen at least `grace` ago.
        let applicable: Vec<Option<Offsets>> = self
            .coverage
            .iter_mut()
            .map(|seen| {
                while seen.len() > 1 && now.duration_since(seen[1].seen) >= grace {
                    seen.pop_front();
                }
                seen.front()
                    .filter(|c| now.duration_since(c.seen) >= grace)
                    .map(|c| c.offsets.clone())
            })
            .collect();
        for p in self.partitions.values_mut() {
            for (v, coverage) in applicable.iter().enumerate() {
                if self.view_source[v] != p.source {
                    continue;
                }
                let Some(coverage) = coverage else { continue };
                let covered = coverage.get(&p.partition).copied().unwrap_or(0);
                for s in p.segments.iter_mut().filter(|s| !s.open && s.end <= covered) {
                    if !s.states[v].is_empty() {
                        s.states[v] = Vec::new();
                    }
                    p.floor[v] = p.floor[v].max(s.end);
                }
            }
            // A segment without states for any view and covered for all views goes.
            while let Some(front) = p.segments.front() {
                let done = !front.open
                    && (0..front.states.len()).all(|v| self.view_source[v] != p.source || p.floor[v] >= front.end);
                if done {
                    p.segments.pop_front();
                } else {
                    break;
                }
            }
        }
    }

    /// The newest coverage seen for a view.
    pub fn latest_coverage(&self, view: usize) -> Offsets {
        self.coverage[view]
            .back()
            .map(|c| c.offsets.clone())
            .unwrap_or_default()
    }

    pub fn partition_status(&self) -> Vec<PartitionStatus> {
        self.partitions
            .values()
            .map(|p| PartitionStatus {
                source: String::new(),
                partition: p.partition.clone(),
                generation: p.generation,
                consumed: p.consumed(),
                archived: p.archived,
                high_watermark: p.high_watermark,
                max_event_time: p.max_event_time,
                events: p.events,
                rejected: p.rejected,
                late_events: p.late,
            })
            .collect()
    }

    pub fn view_status(&self) -> Vec<ViewSpeedStatus> {
        (0..self.views.len())
            .map(|v| {
                let mut status = ViewSpeedStatus {
                    view: self.views[v].clone(),
                    batch_coverage: self.latest_coverage(v),
                    ..Default::default()
                };
                for p in self.partitions.values().filter(|p| p.source == self.view_source[v]) {
                    for s in p.segments.iter().filter(|s| !s.states[v].is_empty() || s.open) {
                        status.generations += 1;
                        status.state_rows += s.rows(v);
                        status.state_bytes += s.bytes(v);
                    }
                }
                status
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{int64_batch, int64_values};

    fn batch(v: i64) -> RecordBatch {
        int64_batch([v])
    }

    fn values(parts: &[SpeedPart]) -> Vec<i64> {
        int64_values(parts.iter().flat_map(|p| &p.batches))
    }

    fn store_with_segments() -> Store {
        let mut store = Store::new(vec!["v".into(), "w".into()], vec![0, 0]);
        let mut p = PartitionStates {
            source: 0,
            partition: TopicPartition::new("t", 0),
            generation: 7,
            segments: VecDeque::new(),
            floor: vec![100, 100],
            archived: 100,
            events: 0,
            rejected: 0,
            late: 0,
            max_event_time: None,
            high_watermark: None,
            received: 0,
        };
        for (i, (start, end)) in [(100, 250), (250, 400), (400, 520)].into_iter().enumerate() {
            let mut s = Segment::new(start, 2);
            s.end = end;
            s.open = false;
            s.states[0].push(batch(i as i64));
            s.states[1].push(batch(10 + i as i64));
            p.segments.push_back(s);
        }
        let mut open = Segment::new(520, 2);
        open.end = 600;
        open.states[0].push(batch(3));
        p.segments.push_back(open);
        store.partitions.insert(p.partition.clone(), p);
        store
    }

    fn cov(o: i64) -> Offsets {
        [(TopicPartition::new("t", 0), o)].into_iter().collect()
    }

    fn range(parts: &[SpeedPart]) -> (u64, i64, i64) {
        assert_eq!(parts.len(), 1);
        let r = &parts[0].range;
        (r.generation, r.offsets.start, r.offsets.end)
    }

    /// A partition's lag counts from the last micro-batch received, published or not, and
    /// from its states' end when nothing newer was received.
    #[test]
    fn lag_counts_from_what_was_received() {
        let mut store = store_with_segments();
        let p = store.partitions.get_mut(&TopicPartition::new("t", 0)).unwrap();
        assert_eq!(p.lag(), None, "no high watermark yet");
        p.high_watermark = Some(700);
        assert_eq!(p.lag(), Some(100), "from the states' end, 600");
        p.received = 650;
        assert_eq!(p.lag(), Some(50));
        p.received = 720;
        assert_eq!(p.lag(), Some(0), "a watermark read before the last batch");
    }

    #[test]
    fn states_beyond_a_coverage_are_whole_segments() {
        let store = store_with_segments();
        let states = store.states("v", &cov(100)).unwrap();
        assert_eq!(values(&states), [0, 1, 2, 3]);
        assert_eq!(range(&states), (7, 100, 600));
        assert_eq!(values(&store.states("v", &cov(400)).unwrap()), [2, 3]);
        assert_eq!(range(&store.states("v", &cov(520)).unwrap()), (7, 520, 600));
        assert_eq!(values(&store.states("v", &cov(520)).unwrap()), [3]);
        assert!(
            store.states("v", &cov(300)).unwrap().is_empty(),
            "a coverage inside a segment (archived by another process): the partition is not reported"
        );
        // Older than what is held: the states from where they start, and that start.
        for older in [cov(0), Offsets::new()] {
            let states = store.states("v", &older).unwrap();
            assert_eq!(values(&states), [0, 1, 2, 3]);
            assert_eq!(range(&states), (7, 100, 600));
        }
        assert!(store.states("nosuch", &cov(100)).is_err());
    }

    #[test]
    fn covered_segments_are_dropped_after_the_grace_for_every_view() {
        let mut store = store_with_segments();
        let t0 = Instant::now();
        let grace = Duration::from_secs(10);
        store.observe_coverage(0, cov(400), t0, grace);
        // Within the grace: nothing dropped.
        assert_eq!(values(&store.states("v", &cov(100)).unwrap()), [0, 1, 2, 3]);
        store.observe_coverage(0, cov(400), t0 + grace, grace);
        // Asked from the older coverage: what is held, from where it starts now.
        let states = store.states("v", &cov(100)).unwrap();
        assert_eq!((values(&states), range(&states)), (vec![2, 3], (7, 400, 600)));
        assert_eq!(values(&store.states("v", &cov(400)).unwrap()), [2, 3]);
        // View w still needs them: the segments stay.
        assert_eq!(store.partitions[&TopicPartition::new("t", 0)].segments.len(), 4);
        assert_eq!(values(&store.states("w", &cov(100)).unwrap()), [10, 11, 12]);
        store.observe_coverage(1, cov(520), t0 + grace, grace);
        store.observe_coverage(1, cov(520), t0 + 2 * grace, grace);
        assert_eq!(
            store.partitions[&TopicPartition::new("t", 0)].segments.len(),
            2,
            "covered for both views: dropped"
        );
        let status = store.view_status();
        assert_eq!((status[0].generations, status[0].state_rows), (2, 2));
        assert_eq!(status[1].generations, 1, "w: only the open segment");
    }
}
