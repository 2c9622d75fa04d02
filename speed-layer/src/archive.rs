//! The archiver: commits what the speed layer consumed to the lake, exactly once.
//!
//! For each flush of a source: first the rejected records, then the valid events, each in
//! one commit recording, per partition, the next offset it covers (`txn` actions
//! `kafka:<topic>/<partition>`). A restart resumes every partition at the raw table's
//! position; rejects at or beyond it that the rejected table already holds are not written
//! twice (their offsets are below its own position). Offsets are then committed to Kafka,
//! only to report progress.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int32Type, Int64Type};
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use strata_core::lake::{Lake, app_transactions, kafka_app_id};
use strata_core::metrics::{Counter, Histogram, LATENCY_BUCKETS, global};
use strata_core::schema::{SourceSchema, rejected, rejected_schema};
use strata_core::speed::partition_key;
use strata_core::{Error, Result};
use tokio::sync::mpsc;

use crate::aggregate::ArchiveJob;
use crate::consumer::KafkaConsumer;
use crate::store::Store;

struct SourceTables {
    raw: DeltaTable,
    rejected: DeltaTable,
    /// The raw table's positions: a range ending at or below them is archived already (a
    /// commit that landed although it reported an error, before a retry).
    raw_positions: std::collections::BTreeMap<String, i64>,
    /// The rejected table's positions: rejects below them are already there. They only
    /// move forward (after a crash between the two commits of a flush they are ahead).
    rejected_positions: std::collections::BTreeMap<String, i64>,
}

pub struct Archiver {
    pub lake: Lake,
    pub sources: Vec<Arc<SourceSchema>>,
    pub store: Arc<Mutex<Store>>,
    pub consumer: Option<Arc<KafkaConsumer>>,
    tables: Vec<Option<SourceTables>>,
    commit_seconds: Vec<Histogram>,
    failures: Counter,
}

impl Archiver {
    pub fn new(
        lake: Lake,
        sources: Vec<Arc<SourceSchema>>,
        store: Arc<Mutex<Store>>,
        consumer: Option<Arc<KafkaConsumer>>,
    ) -> Self {
        let commit_seconds = sources
            .iter()
            .map(|s| {
                global().histogram(
                    "strata_archive_commit_seconds",
                    "Time to commit a flush of consumed events to the lake.",
                    &[("source", &s.name)],
                    LATENCY_BUCKETS,
                )
            })
            .collect();
        let n = sources.len();
        Archiver {
            lake,
            sources,
            store,
            consumer,
            tables: (0..n).map(|_| None).collect(),
            commit_seconds,
            failures: global().counter(
                "strata_archive_failures_total",
                "Archive commits that failed (and were retried).",
                &[],
            ),
        }
    }

    /// Commits jobs until the aggregator stops; a failed commit is retried (with backoff) so
    /// that nothing consumed is lost, while the bounded channel holds the consumer back.
    pub async fn run(mut self, mut jobs: mpsc::Receiver<ArchiveJob>) -> Result<()> {
        while let Some(job) = jobs.recv().await {
            let mut backoff = Duration::from_millis(100);
            loop {
                match self.commit(&job).await {
                    Ok(()) => break,
                    Err(e) => {
                        self.failures.inc();
                        tracing::error!(error = %e, retry_in = ?backoff, "archive commit failed; retrying");
                        // Reload the tables: a concurrent writer may have moved them.
                        self.tables[job.source] = None;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
        Ok(())
    }

    async fn tables(&mut self, s: usize) -> Result<&mut SourceTables> {
        if self.tables[s].is_none() {
            let source = &self.sources[s];
            let raw = self
                .lake
                .open_or_create(
                    &self.lake.raw_url(&source.name),
                    &source.raw,
                    &[strata_core::schema::EVENT_DATE],
                    &format!("raw_{}", source.name),
                )
                .await?;
            let rejected = self
                .lake
                .open_or_create(
                    &self.lake.rejected_url(&source.name),
                    &rejected_schema(),
                    &[],
                    &format!("rejected_{}", source.name),
                )
                .await?;
            let raw_positions = app_transactions(&raw, raw.version().unwrap_or(0)).await?;
            let rejected_positions = app_transactions(&rejected, rejected.version().unwrap_or(0)).await?;
            self.tables[s] = Some(SourceTables {
                raw,
                rejected,
                raw_positions,
                rejected_positions,
            });
        }
        Ok(self.tables[s].as_mut().expect("just opened"))
    }

    async fn commit(&mut self, job: &ArchiveJob) -> Result<()> {
        let started = Instant::now();
        let s = job.source;
        let txns: Vec<Transaction> = job
            .ranges
            .iter()
            .map(|(t, p, _, end)| Transaction::new(kafka_app_id(t, *p), *end))
            .collect();
        let info = serde_json::json!({ "archive": {
            "ranges": job.ranges.iter().map(|(t, p, start, end)| serde_json::json!({"partition": partition_key(t, *p), "from": start, "to": end})).collect::<Vec<_>>(),
        }});
        let raw_schema = self.sources[s].raw.clone();
        let tables = self.tables(s).await?;
        let archived = |(t, p, _, end): &(String, i32, i64, i64)| {
            tables.raw_positions.get(&kafka_app_id(t, *p)).is_some_and(|v| v >= end)
        };
        if job.ranges.iter().all(archived) {
            tracing::warn!(source = %self.sources[s].name, "this flush is archived already (a commit reported as failed had landed)");
            self.mark_archived(job);
            return Ok(());
        }
        if job.ranges.iter().any(archived) {
            return Err(Error::Internal(format!(
                "part of a flush of `{}` is archived already: another speed layer wrote these partitions",
                self.sources[s].name
            )));
        }
        // Rejects not already in the rejected table (a commit there may have landed before a
        // crash that lost the raw commit).
        let rejects: Vec<RecordBatch> = job
            .rejects
            .iter()
            .map(|b| not_yet_rejected(b, &tables.rejected_positions))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .collect();
        if !rejects.is_empty() {
            // The rejected table's positions only move forward: after a crash between the two
            // commits it is ahead of the raw table, and the flushes that catch up may end
            // below it (they need not fall where the lost one did).
            let positions: Vec<(String, i64)> = job
                .ranges
                .iter()
                .map(|(t, p, _, end)| {
                    let id = kafka_app_id(t, *p);
                    let at = tables.rejected_positions.get(&id).map_or(*end, |&done| done.max(*end));
                    (id, at)
                })
                .collect();
            let rejected_txns = positions
                .iter()
                .map(|(id, at)| Transaction::new(id.clone(), *at))
                .collect();
            strata_core::lake::append(&mut tables.rejected, rejects, rejected_txns, info.clone()).await?;
            tables.rejected_positions.extend(positions);
        }
        let rows: usize = job.events.iter().map(RecordBatch::num_rows).sum();
        let events: Vec<RecordBatch> = job.events.iter().filter(|b| b.num_rows() > 0).cloned().collect();
        let events = if events.is_empty() {
            events
        } else {
            vec![arrow::compute::concat_batches(&raw_schema, &events)?]
        };
        let version = strata_core::lake::append(&mut tables.raw, events, txns, info).await?;
        for (t, p, _, end) in &job.ranges {
            tables.raw_positions.insert(kafka_app_id(t, *p), *end);
        }
        self.commit_seconds[s].observe(started.elapsed().as_secs_f64());
        tracing::debug!(source = %self.sources[s].name, version, rows, elapsed = ?started.elapsed(), "archived");
        self.mark_archived(job);
        Ok(())
    }

    /// Records the new archived positions, and reports them to Kafka (progress only).
    fn mark_archived(&self, job: &ArchiveJob) {
        {
            let mut store = self.store.lock().expect("store lock");
            for (t, p, _, end) in &job.ranges {
                if let Some(ps) = store.partitions.get_mut(&partition_key(t, *p)) {
                    ps.archived = ps.archived.max(*end);
                }
            }
        }
        if let Some(consumer) = &self.consumer {
            let mut tpl = TopicPartitionList::new();
            for (t, p, _, end) in &job.ranges {
                if tpl.add_partition_offset(t, *p, Offset::Offset(*end)).is_err() {
                    continue;
                }
            }
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "could not report progress to Kafka (the lake holds the offsets)");
            }
        }
    }
}

/// The rejects of a batch at or beyond the rejected table's positions.
fn not_yet_rejected(batch: &RecordBatch, positions: &std::collections::BTreeMap<String, i64>) -> Result<RecordBatch> {
    let (Some(t), Some(p), Some(o)) = (
        batch.column_by_name(rejected::TOPIC),
        batch.column_by_name(rejected::PARTITION),
        batch.column_by_name(rejected::OFFSET),
    ) else {
        return Err(Error::Internal("rejects without Kafka positions".into()));
    };
    let (t, p, o) = (
        t.as_string::<i32>(),
        p.as_primitive::<Int32Type>(),
        o.as_primitive::<Int64Type>(),
    );
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|row| {
            let done = positions
                .get(&kafka_app_id(t.value(row), p.value(row)))
                .copied()
                .unwrap_or(0);
            Some(o.value(row) >= done)
        })
        .collect();
    Ok(filter_record_batch(batch, &keep)?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use strata_core::decode::{KafkaPosition, Origin, Rejects};
    use strata_core::session::{new_context, session_config};

    use super::*;

    const TOPIC: &str = "clicks";

    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn setup(name: &str) -> (Scratch, Lake, Arc<SourceSchema>) {
        let dir = std::env::temp_dir().join(format!("strata-archive-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = crate::fixtures::clicks_config(&dir.join("strata.toml"));
        let lake = Lake::new(&config.lake, config.base_dir()).unwrap();
        let source = SourceSchema::new(&config.sources[0]);
        (Scratch(dir), lake, source)
    }

    fn archiver(lake: &Lake, source: &Arc<SourceSchema>) -> Archiver {
        let store = Store::new(vec!["per_page".into(), "sliding".into()], vec![0, 0], 1);
        Archiver::new(lake.clone(), vec![source.clone()], Arc::new(Mutex::new(store)), None)
    }

    /// A flush of partitions `(partition, start, end)` whose records at `bad` (partition,
    /// offset) were malformed; the valid events are left out (the rejected table is checked).
    fn job(ranges: &[(i32, i64, i64)], bad: &[(i32, i64)]) -> ArchiveJob {
        let mut rejects = Rejects::new("clicks", 0);
        for &(partition, offset) in bad {
            let inside = ranges
                .iter()
                .any(|&(p, s, e)| p == partition && (s..e).contains(&offset));
            assert!(inside, "reject {partition}@{offset} outside the flush");
            let position = KafkaPosition {
                topic: TOPIC,
                partition,
                offset,
            };
            rejects.push(Origin::Kafka(position), b"{oops", "invalid JSON");
        }
        ArchiveJob {
            source: 0,
            events: vec![],
            rejects: vec![rejects.finish()],
            ranges: ranges.iter().map(|&(p, s, e)| (TOPIC.to_string(), p, s, e)).collect(),
        }
    }

    async fn rejected_positions(lake: &Lake) -> Vec<(i32, i64)> {
        let table = lake.open(&lake.rejected_url("clicks")).await.unwrap().unwrap();
        let ctx = new_context(session_config()).unwrap();
        ctx.register_table(
            "rejected",
            strata_core::lake::table_provider(&ctx, &table).await.unwrap(),
        )
        .unwrap();
        let batches = ctx
            .sql("SELECT kafka_partition, kafka_offset FROM rejected ORDER BY 1, 2")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let p = b.column(0).as_primitive::<Int32Type>().clone();
                let o = b.column(1).as_primitive::<Int64Type>().clone();
                (0..b.num_rows()).map(move |i| (p.value(i), o.value(i)))
            })
            .collect()
    }

    async fn raw_positions(lake: &Lake) -> BTreeMap<String, i64> {
        let table = lake.open(&lake.raw_url("clicks")).await.unwrap().unwrap();
        app_transactions(&table, table.version().unwrap()).await.unwrap()
    }

    /// A kill between the rejected-table commit and the raw-table commit of a flush leaves the
    /// rejected table ahead. The flushes that catch up fall elsewhere: one ends below the
    /// rejected table's position on a partition while it writes rejects of another. Every
    /// malformed record is still in the rejected table once, whether the archiver goes on
    /// or restarts in between.
    #[tokio::test]
    async fn rejects_archived_once_after_a_kill_between_the_two_commits() {
        let lost = || job(&[(0, 0, 100), (1, 0, 100)], &[(0, 50), (0, 90), (1, 10)]);
        let catch_up = || job(&[(0, 0, 80), (1, 0, 130)], &[(0, 50), (1, 10), (1, 120)]);
        let next = || job(&[(0, 80, 200)], &[(0, 90), (0, 150)]);
        for restart in [false, true] {
            let (_scratch, lake, source) = setup(&format!("kill-{restart}"));
            // The flush whose rejected commit landed and whose raw commit was lost.
            {
                let mut archiver = archiver(&lake, &source);
                let job = lost();
                let tables = archiver.tables(0).await.unwrap();
                let txns = job
                    .ranges
                    .iter()
                    .map(|(t, p, _, end)| Transaction::new(kafka_app_id(t, *p), *end))
                    .collect();
                strata_core::lake::append(&mut tables.rejected, job.rejects, txns, serde_json::json!({}))
                    .await
                    .unwrap();
            }
            // The restarted speed layer resumes at the raw table's position (nothing).
            let mut archiver = archiver(&lake, &source);
            archiver.commit(&catch_up()).await.unwrap();
            if restart {
                archiver = self::archiver(&lake, &source);
            }
            archiver.commit(&next()).await.unwrap();
            assert_eq!(
                rejected_positions(&lake).await,
                vec![(0, 50), (0, 90), (0, 150), (1, 10), (1, 120)],
                "restart between the flushes: {restart}"
            );
            let raw = raw_positions(&lake).await;
            assert_eq!(raw.get(&kafka_app_id(TOPIC, 0)), Some(&200));
            assert_eq!(raw.get(&kafka_app_id(TOPIC, 1)), Some(&130));
        }
    }
}
