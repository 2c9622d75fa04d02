//! Which events of each Kafka partition a view's answer takes from where, so that every
//! partition is counted exactly once whoever owns it at the moment.
//!
//! ```text
//!  partition P:  [0 ──── batch states ──── C) [C ── lake raw ── F) [F ─ speed states of the ─ U)
//!                 covered by the batch         archived, not held    newest owner generation
//!                 version (its coverage C)     by any speed layer    that reports P
//! ```
//!
//! - a partition two speed layers report (a rebalance in progress, a process that has not
//!   noticed it lost the partition) counts once, from the newest owner generation;
//! - a partition no speed layer reports (between owners, its owner dead or unreachable) is
//!   answered from the lake's archived raw events beyond the batch coverage;
//! - where the owner's states start beyond the coverage (it dropped states a newer batch
//!   version covers, or the batch version is of another view definition), the lake fills
//!   the offsets in between.

use std::collections::BTreeMap;

use strata_core::speed::{Offsets, PartRange, SpeedPart, TopicPartition};

/// Events of one partition to read from the lake's raw table: offsets `[from, until)`
/// (`until` None: everything archived from `from` on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeRange {
    pub partition: TopicPartition,
    pub from: i64,
    pub until: Option<i64>,
}

/// Where a view's answer comes from, per partition.
#[derive(Debug, Default)]
pub struct Composition {
    /// The chosen speed states: one part per partition.
    pub speed: Vec<SpeedPart>,
    /// What the lake fills.
    pub lake: Vec<LakeRange>,
}

impl Composition {
    /// Whether an owner's states start beyond the coverage somewhere (a newer batch version
    /// may cover that gap: worth planning again before reading the lake).
    pub fn has_gaps(&self) -> bool {
        self.lake.iter().any(|r| r.until.is_some())
    }
}

/// Chooses, for every partition of `topics`, where its events beyond `coverage` come from:
/// `parts` are every speed layer's answer, `archived` the lake's next offset per partition.
pub fn compose(
    topics: &[String],
    coverage: &Offsets,
    archived: &Offsets,
    parts: impl IntoIterator<Item = SpeedPart>,
) -> Composition {
    let mut chosen: BTreeMap<TopicPartition, SpeedPart> = BTreeMap::new();
    for part in parts {
        if !topics.contains(&part.range.offsets.partition.topic) {
            continue;
        }
        let key = part.range.offsets.partition.clone();
        let newer = |p: &PartRange| (p.generation, p.offsets.end);
        match chosen.get(&key) {
            Some(held) if newer(&held.range) >= newer(&part.range) => {}
            _ => {
                chosen.insert(key, part);
            }
        }
    }
    let mut lake = Vec::new();
    for (tp, &next) in archived.iter().filter(|(tp, _)| topics.contains(&tp.topic)) {
        if chosen.contains_key(tp) {
            continue;
        }
        let from = coverage.get(tp).copied().unwrap_or(0);
        if next > from {
            lake.push(LakeRange {
                partition: tp.clone(),
                from,
                until: None,
            });
        }
    }
    for (tp, part) in &chosen {
        let covered = coverage.get(tp).copied().unwrap_or(0);
        let start = part.range.offsets.start;
        if start > covered {
            lake.push(LakeRange {
                partition: tp.clone(),
                from: covered,
                until: Some(start),
            });
        }
    }
    Composition {
        speed: chosen.into_values().collect(),
        lake,
    }
}

#[cfg(test)]
mod tests {
    use strata_core::speed::OffsetRange;

    use super::*;

    fn part(partition: i32, generation: u64, from: i64, until: i64) -> SpeedPart {
        SpeedPart {
            range: PartRange {
                generation,
                offsets: OffsetRange {
                    partition: TopicPartition::new("t", partition),
                    start: from,
                    end: until,
                },
            },
            batches: Vec::new(),
        }
    }

    fn ranges(c: &Composition) -> Vec<(i32, u64, i64, i64)> {
        c.speed
            .iter()
            .map(|p| {
                let o = &p.range.offsets;
                (o.partition.partition, p.range.generation, o.start, o.end)
            })
            .collect()
    }

    fn lake(partition: i32, from: i64, until: Option<i64>) -> LakeRange {
        LakeRange {
            partition: TopicPartition::new("t", partition),
            from,
            until,
        }
    }

    #[test]
    fn every_partition_counts_once_from_the_newest_owner_or_the_lake() {
        let topics = vec!["t".to_string()];
        let coverage: Offsets = [(TopicPartition::new("t", 0), 100), (TopicPartition::new("t", 1), 50)].into();
        let archived: Offsets = [
            (TopicPartition::new("t", 0), 300),
            (TopicPartition::new("t", 1), 80),
            (TopicPartition::new("t", 2), 40),
            (TopicPartition::new("u", 0), 9),
        ]
        .into();
        // Partition 0 reported by a process that lost it (generation 3) and by its new owner.
        let parts = vec![
            part(0, 3, 100, 320),
            part(0, 4, 100, 300),
            part(3, 1, 0, 0),
            part(9, 1, 0, 5),
        ];
        let mut parts = parts;
        parts.last_mut().unwrap().range.offsets.partition.topic = "other".into();
        let c = compose(&topics, &coverage, &archived, parts);
        assert_eq!(ranges(&c), [(0, 4, 100, 300), (3, 1, 0, 0)]);
        // Partitions 1 and 2 are nobody's: archived events beyond the coverage.
        assert_eq!(c.lake, [lake(1, 50, None), lake(2, 0, None)]);
        assert!(!c.has_gaps());
    }

    #[test]
    fn the_lake_fills_between_the_coverage_and_where_the_states_start() {
        let topics = vec!["t".to_string()];
        let coverage: Offsets = [(TopicPartition::new("t", 0), 100)].into();
        let archived: Offsets = [(TopicPartition::new("t", 0), 500), (TopicPartition::new("t", 1), 70)].into();
        let c = compose(
            &topics,
            &coverage,
            &archived,
            vec![part(0, 2, 400, 520), part(1, 2, 0, 90)],
        );
        assert_eq!(c.lake, [lake(0, 100, Some(400))]);
        assert!(c.has_gaps());
        // Nothing archived beyond the coverage of an unowned partition: nothing to read.
        let c = compose(&topics, &coverage, &[(TopicPartition::new("t", 0), 100)].into(), vec![]);
        assert!(c.lake.is_empty() && c.speed.is_empty());
    }
}
