//! The archiver: commits what the speed layer consumed to the lake, exactly once, and only
//! for partitions this process still owns.
//!
//! ```text
//!  claim (on assignment)      one commit to raw.<source>: owner:<t>/<p> = generation + 1,
//!                             kafka:<t>/<p> = where consumption starts (pinned if new)
//!  archive (every flush)      read raw.<source> anew; for each partition of the flush:
//!                               owner still ours and kafka:<t>/<p> == the range's start?
//!                               no  -> the range is fenced off (a newer owner has it)
//!                               yes -> rejects to rejected.<source>, then events to
//!                                      raw.<source> with kafka:<t>/<p> = end, owner:<t>/<p>
//! ```
//!
//! Positions are always read from the snapshot the commit is made on, never from what this
//! process remembers, and the commit carries the `txn` ids it depends on: if another writer's
//! commit touching them lands first, the Delta conflict check refuses ours and the flush is
//! decided again on a fresh snapshot. So a process that lost a partition (a rebalance, a
//! pause longer than its session, a kill -9 and a restart elsewhere) cannot land a stale
//! range, and the new owner's ranges land whatever was in flight.
//!
//! The rejected table keeps positions of its own, which only move forward: rejects below
//! them are there already (a flush whose rejected commit landed before its raw commit failed,
//! or one the previous owner began). Offsets are then committed to Kafka, only to report
//! progress.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int32Type, Int64Type};
use datafusion::parquet::file::properties::WriterProperties;
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use strata_core::lake::{AppTransactions, Lake, kafka_app_id, owner_app_id, raw_writer_properties};
use strata_core::metrics::{Counter, Histogram, SourceLabel, metrics};
use strata_core::schema::{EVENT_DATE, PARTITION, SourceSchema, TOPIC, rejected, rejected_schema};
use strata_core::speed::{OffsetRange, TopicPartition};
use strata_core::{Error, Result};
use tokio::sync::{mpsc, oneshot};

use crate::consumer::KafkaConsumer;
use crate::store::Store;

/// The events of one partition in a flush, consumed under an owner generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveRange {
    pub generation: u64,
    pub offsets: OffsetRange,
}

/// What the archiver commits: the events and rejects of one source since the last flush,
/// and the offset range of every partition they cover.
#[derive(Debug)]
pub struct ArchiveJob {
    pub source: usize,
    pub events: Vec<RecordBatch>,
    pub rejects: Vec<RecordBatch>,
    /// The segment each partition closed.
    pub ranges: Vec<ArchiveRange>,
}

/// What the aggregator sends the archiver, in order.
#[derive(Debug)]
pub enum ArchiveMessage {
    Job(ArchiveJob),
    /// Answered once every job sent before it is committed (or fenced off).
    Barrier(oneshot::Sender<()>),
}

/// A partition newly owned: the generation this process claimed it with, and where its
/// consumption starts (the next offset the lake holds, or the pinned start of a partition
/// nothing was archived from yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub partition: TopicPartition,
    pub generation: u64,
    pub start: i64,
}

/// Claims partitions of `source` for this process in one commit to its raw table: each
/// partition's owner generation goes up by one, and a partition with no position yet gets
/// `start_of(topic, partition)` pinned as its start (so that a crash before its first archive
/// commit resumes where the events queries already showed began, whatever
/// `auto.offset.reset` says). Read and written on one snapshot, retried on a conflict.
pub async fn claim(
    lake: &Lake,
    source: &SourceSchema,
    partitions: &[TopicPartition],
    start_of: &(dyn Fn(&TopicPartition) -> Result<i64> + Sync),
) -> Result<Vec<Claim>> {
    let mut table = open_raw(lake, source).await?;
    let mut backoff = Duration::from_millis(20);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut txns = AppTransactions::default();
        txns.refresh(&table).await?;
        let mut claims = Vec::new();
        for tp in partitions {
            let owner = txns.get(&owner_app_id(tp)).unwrap_or(0);
            let start = match txns.get(&kafka_app_id(tp)) {
                Some(at) => at,
                None => start_of(tp)?,
            };
            claims.push(Claim {
                partition: tp.clone(),
                generation: owner.max(0) as u64 + 1,
                start,
            });
        }
        let actions = claims
            .iter()
            .flat_map(|c| {
                [
                    Transaction::new(owner_app_id(&c.partition), c.generation as i64),
                    Transaction::new(kafka_app_id(&c.partition), c.start),
                ]
            })
            .collect();
        let info = serde_json::json!({ "claim": claims.iter().map(|c| serde_json::json!({
            "partition": c.partition, "generation": c.generation, "start": c.start,
        })).collect::<Vec<_>>() });
        match strata_core::lake::append(&mut table, Vec::new(), actions, info).await {
            Ok(_) => return Ok(claims),
            Err(Error::Conflict(why)) if attempt < 50 => {
                tracing::debug!(source = %source.name, %why, "a claim lost a race; trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                table
                    .update_incremental(None)
                    .await
                    .map_err(|e| Error::lake("reload the raw table", e))?;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn open_raw(lake: &Lake, source: &SourceSchema) -> Result<DeltaTable> {
    lake.open_or_create(
        &lake.raw_url(&source.name),
        &source.raw,
        &[EVENT_DATE],
        &format!("raw_{}", source.name),
    )
    .await
}

struct SourceTables {
    raw: DeltaTable,
    rejected: DeltaTable,
    /// Positions and owners as of the raw table's loaded version.
    raw_txns: AppTransactions,
    /// Positions as of the rejected table's loaded version.
    rejected_txns: AppTransactions,
}

pub struct Archiver {
    pub lake: Lake,
    pub sources: Vec<Arc<SourceSchema>>,
    pub store: Arc<Mutex<Store>>,
    pub consumer: Option<Arc<KafkaConsumer>>,
    tables: Vec<Option<SourceTables>>,
    /// The Parquet settings of each source's raw files.
    raw_properties: Vec<WriterProperties>,
    commit_seconds: Vec<Histogram>,
    failures: Counter,
    fenced: Counter,
}

/// How a flush went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Committed {
    /// The ranges now in the lake (committed now, or found there already).
    pub(crate) archived: Vec<ArchiveRange>,
    /// The ranges of partitions another owner has now: not committed.
    pub(crate) fenced: Vec<ArchiveRange>,
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
                metrics()
                    .archive_commit
                    .get_or_create_owned(&SourceLabel { source: s.name.clone() })
            })
            .collect();
        let n = sources.len();
        let raw_properties = sources.iter().map(|s| raw_writer_properties(s)).collect();
        Archiver {
            lake,
            sources,
            store,
            consumer,
            tables: (0..n).map(|_| None).collect(),
            raw_properties,
            commit_seconds,
            failures: metrics().archive_failures.clone(),
            fenced: metrics().archive_fenced.clone(),
        }
    }

    /// Commits jobs until the aggregator stops; a failed commit is retried (with backoff) so
    /// that nothing consumed is lost, while the bounded channel holds the consumer back. A
    /// broken invariant stops the archiver (and the speed layer): a restart resumes from the
    /// lake.
    pub async fn run(mut self, mut messages: mpsc::Receiver<ArchiveMessage>) -> Result<()> {
        while let Some(message) = messages.recv().await {
            let job = match message {
                ArchiveMessage::Job(job) => job,
                ArchiveMessage::Barrier(done) => {
                    let _ = done.send(());
                    continue;
                }
            };
            let mut backoff = Duration::from_millis(100);
            let mut conflict_pause = Duration::from_millis(5);
            loop {
                match self.commit(&job).await {
                    Ok(_) => break,
                    Err(e @ Error::Internal(_)) => return Err(e),
                    Err(Error::Conflict(why)) => {
                        // Decided again on a fresh snapshot, after a pause that grows while
                        // the races go on (other writers get their turn).
                        tracing::debug!(%why, "an archive commit lost a race; deciding again");
                        tokio::time::sleep(conflict_pause).await;
                        conflict_pause = (conflict_pause * 2).min(Duration::from_millis(500));
                    }
                    Err(e) => {
                        self.failures.inc();
                        tracing::error!(error = %e, retry_in = ?backoff, "archive commit failed; retrying");
                        // Reopen the tables: the store may have failed us half way.
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
            let raw = open_raw(&self.lake, source).await?;
            let rejected = self
                .lake
                .open_or_create(
                    &self.lake.rejected_url(&source.name),
                    &rejected_schema(),
                    &[],
                    &format!("rejected_{}", source.name),
                )
                .await?;
            self.tables[s] = Some(SourceTables {
                raw,
                rejected,
                raw_txns: AppTransactions::default(),
                rejected_txns: AppTransactions::default(),
            });
        }
        Ok(self.tables[s].as_mut().expect("just opened"))
    }

    /// Commits one flush: decides on a fresh snapshot of the raw table which ranges are still
    /// this process's to write, writes their rejects, then their events.
    pub(crate) async fn commit(&mut self, job: &ArchiveJob) -> Result<Committed> {
        let started = Instant::now();
        let s = job.source;
        let name = self.sources[s].name.clone();
        let tables = self.tables(s).await?;
        tables
            .raw
            .update_incremental(None)
            .await
            .map_err(|e| Error::lake("reload the raw table", e))?;
        tables.raw_txns.refresh(&tables.raw).await?;
        let mut outcome = Committed {
            archived: Vec::new(),
            fenced: Vec::new(),
        };
        let mut to_write = Vec::new();
        for range in &job.ranges {
            let o = &range.offsets;
            let owner = tables.raw_txns.get(&owner_app_id(&o.partition));
            let at = tables.raw_txns.get(&kafka_app_id(&o.partition));
            if owner != Some(range.generation as i64) {
                tracing::warn!(source = %name, partition = %o.partition, generation = range.generation, lake_owner = ?owner,
                    "another speed process owns this partition now: its flushed range [{}, {}) is left to it", o.start, o.end);
                outcome.fenced.push(range.clone());
            } else if at.is_some_and(|at| at >= o.end) {
                // A commit that reported an error had landed.
                outcome.archived.push(range.clone());
            } else if at == Some(o.start) {
                to_write.push(range.clone());
            } else {
                return Err(Error::Internal(format!(
                    "raw.{name}: {} is archived up to {at:?} under this process's own generation {}, but its next flush starts at {}",
                    o.partition, range.generation, o.start
                )));
            }
        }
        self.fenced.inc_by(outcome.fenced.len() as u64);
        if !to_write.is_empty() {
            self.write(s, job, &to_write).await?;
            self.commit_seconds[s].observe(started.elapsed().as_secs_f64());
            tracing::debug!(source = %name, ranges = to_write.len(), elapsed = ?started.elapsed(), "archived");
            outcome.archived.extend(to_write);
        }
        self.mark_archived(&outcome.archived);
        Ok(outcome)
    }

    /// Writes the rejects and events of `ranges` (all this process's, as of the raw table's
    /// loaded snapshot, on which the raw commit is made).
    async fn write(&mut self, s: usize, job: &ArchiveJob, ranges: &[ArchiveRange]) -> Result<()> {
        let properties = self.raw_properties[s].clone();
        let tables = self.tables(s).await?;
        let keys: Vec<TopicPartition> = ranges.iter().map(|r| r.offsets.partition.clone()).collect();
        let info = serde_json::json!({ "archive": {
            "ranges": ranges.iter().map(|r| serde_json::json!({
                "partition": r.offsets.partition, "generation": r.generation, "from": r.offsets.start, "to": r.offsets.end,
            })).collect::<Vec<_>>(),
        }});
        // Rejects not in the rejected table yet, as of its newest snapshot.
        tables
            .rejected
            .update_incremental(None)
            .await
            .map_err(|e| Error::lake("reload the rejected table", e))?;
        tables.rejected_txns.refresh(&tables.rejected).await?;
        let rejects: Vec<RecordBatch> = job
            .rejects
            .iter()
            .map(|b| not_yet_rejected(b, &keys, &tables.rejected_txns))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .collect();
        if !rejects.is_empty() {
            // The rejected table's positions only move forward: after a crash between the two
            // commits it is ahead of the raw table, and the flushes that catch up may end
            // below it (they need not fall where the lost one did).
            let positions = ranges
                .iter()
                .map(|r| {
                    let id = kafka_app_id(&r.offsets.partition);
                    let end = r.offsets.end;
                    let at = tables.rejected_txns.get(&id).map_or(end, |done| done.max(end));
                    Transaction::new(id, at)
                })
                .collect();
            strata_core::lake::append(&mut tables.rejected, rejects, positions, info.clone()).await?;
        }
        let events: Vec<RecordBatch> = job
            .events
            .iter()
            .map(|b| keep_partitions(b, &keys, TOPIC, PARTITION))
            .filter(|b| b.num_rows() > 0)
            .collect();
        let txns = ranges
            .iter()
            .flat_map(|r| {
                [
                    Transaction::new(kafka_app_id(&r.offsets.partition), r.offsets.end),
                    Transaction::new(owner_app_id(&r.offsets.partition), r.generation as i64),
                ]
            })
            .collect();
        strata_core::lake::append_with(&mut tables.raw, events, txns, info, properties).await?;
        Ok(())
    }

    /// Records the new archived positions, and reports them to Kafka (progress only).
    fn mark_archived(&self, ranges: &[ArchiveRange]) {
        if ranges.is_empty() {
            return;
        }
        {
            let mut store = self.store.lock().expect("store lock");
            for r in ranges {
                if let Some(ps) = store.partitions.get_mut(&r.offsets.partition)
                    && ps.generation == r.generation
                {
                    ps.archived = ps.archived.max(r.offsets.end);
                }
            }
        }
        if let Some(consumer) = &self.consumer {
            let mut tpl = TopicPartitionList::new();
            for r in ranges {
                let o = &r.offsets;
                if tpl
                    .add_partition_offset(&o.partition.topic, o.partition.partition, Offset::Offset(o.end))
                    .is_err()
                {
                    continue;
                }
            }
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "could not report progress to Kafka (the lake holds the offsets)");
            }
        }
    }
}

/// The rows of a batch (events or rejects) of the partitions `keys`.
pub fn keep_partitions(batch: &RecordBatch, keys: &[TopicPartition], topic: &str, partition: &str) -> RecordBatch {
    select_partitions(batch, keys, topic, partition, true)
}

/// The rows of a batch (events or rejects) of partitions other than `keys`.
pub fn drop_partitions(batch: &RecordBatch, keys: &[TopicPartition], topic: &str, partition: &str) -> RecordBatch {
    select_partitions(batch, keys, topic, partition, false)
}

fn select_partitions(
    batch: &RecordBatch,
    keys: &[TopicPartition],
    topic: &str,
    partition: &str,
    keep: bool,
) -> RecordBatch {
    let (Some(t), Some(p)) = (batch.column_by_name(topic), batch.column_by_name(partition)) else {
        return batch.clone();
    };
    let t = t.as_string::<i32>();
    let p = p.as_primitive::<Int32Type>();
    // Compared in place, without a key per row: a flush selects every row of its batches.
    let selected = |row: usize| {
        let (topic, partition) = (t.value(row), p.value(row));
        keys.iter().any(|k| k.partition == partition && k.topic == topic) == keep
    };
    if (0..batch.num_rows()).all(selected) {
        return batch.clone();
    }
    let mask: BooleanArray = (0..batch.num_rows()).map(|row| Some(selected(row))).collect();
    // A mask of the batch's own length cannot fail to filter it; were it to, the whole batch
    // would be the wrong answer either way (rows of other partitions archived, or kept).
    filter_record_batch(batch, &mask).expect("a mask as long as its batch")
}

/// The rejects of a batch of partitions `keys`, at or beyond the rejected table's positions.
fn not_yet_rejected(batch: &RecordBatch, keys: &[TopicPartition], positions: &AppTransactions) -> Result<RecordBatch> {
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
    let mut done: BTreeMap<TopicPartition, Option<i64>> = BTreeMap::new();
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|row| {
            let key = TopicPartition::new(t.value(row), p.value(row));
            if !keys.contains(&key) {
                return Some(false);
            }
            let done = *done
                .entry(key)
                .or_insert_with_key(|key| positions.get(&kafka_app_id(key)));
            Some(o.value(row) >= done.unwrap_or(0))
        })
        .collect();
    Ok(filter_record_batch(batch, &keep)?)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use strata_core::decode::{KafkaPosition, Origin, Rejects};
    use strata_core::schema::OFFSET;
    use strata_core::session::{new_context, session_config};

    use super::*;

    const TOPIC_NAME: &str = "clicks";

    #[test]
    fn partitions_are_kept_or_dropped_row_by_row() {
        use arrow::array::{Int32Array, StringArray};
        use arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Utf8, true),
            Field::new("p", DataType::Int32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "a", "b", "a", "b"])),
                Arc::new(Int32Array::from(vec![0, 1, 0, 0, 1])),
            ],
        )
        .unwrap();
        let rows = |b: &RecordBatch| -> Vec<(String, i32)> {
            let (t, p) = (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<Int32Type>());
            (0..b.num_rows())
                .map(|r| (t.value(r).to_string(), p.value(r)))
                .collect()
        };
        let keys =
            |k: &[(&str, i32)]| -> Vec<TopicPartition> { k.iter().map(|(t, p)| TopicPartition::new(*t, *p)).collect() };
        let a0 = keys(&[("a", 0)]);
        let want_a0 = vec![("a".to_string(), 0), ("a".to_string(), 0)];
        assert_eq!(rows(&keep_partitions(&batch, &a0, "t", "p")), want_a0);
        assert_eq!(
            rows(&drop_partitions(&batch, &a0, "t", "p")),
            vec![("a".to_string(), 1), ("b".to_string(), 0), ("b".to_string(), 1)]
        );
        // A topic's name and a partition's number match together, not each on its own.
        assert_eq!(
            rows(&keep_partitions(&batch, &keys(&[("a", 1)]), "t", "p")),
            vec![("a".to_string(), 1)]
        );
        assert_eq!(keep_partitions(&batch, &keys(&[("c", 0)]), "t", "p").num_rows(), 0);
        let every = keys(&[("a", 0), ("a", 1), ("b", 0), ("b", 1)]);
        assert_eq!(rows(&keep_partitions(&batch, &every, "t", "p")), rows(&batch));
        assert_eq!(drop_partitions(&batch, &every, "t", "p").num_rows(), 0);
    }

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
        let lake = Lake::new(&config.lake).unwrap();
        let source = SourceSchema::new(&config.sources[0]);
        (Scratch(dir), lake, source)
    }

    fn archiver(lake: &Lake, source: &Arc<SourceSchema>) -> Archiver {
        let store = Store::new(vec!["per_page".into(), "sliding".into()], vec![0, 0]);
        Archiver::new(lake.clone(), vec![source.clone()], Arc::new(Mutex::new(store)), None)
    }

    /// The raw table's writer takes the archive's batches (of the source's raw schema) as
    /// they are: a flush of one day's events goes straight to that day's file
    /// (`strata_core::lake::append` takes that way only for the table's very schema).
    #[tokio::test]
    async fn the_raw_tables_writer_takes_the_archives_batches_as_they_are() {
        let (_scratch, lake, source) = setup("raw-schema");
        let raw = open_raw(&lake, &source).await.unwrap();
        let writer = deltalake::writer::RecordBatchWriter::for_table(&raw).unwrap();
        assert_eq!(writer.arrow_schema(), source.raw);
    }

    /// The archive's files keep no dictionary of the event time or the Kafka offset (mostly
    /// distinct values, whose dictionary costs as much as the values), and keep one of the
    /// other columns, whose values repeat.
    #[tokio::test]
    async fn the_archives_files_have_no_dictionary_of_times_and_offsets() {
        use datafusion::parquet::file::reader::{FileReader as _, SerializedFileReader};
        let (scratch, lake, source) = setup("dictionaries");
        let g = claim_all(&lake, &source, &[0]).await[&0].generation;
        archiver(&lake, &source)
            .commit(&job(&source, &[(0, g, 0, 500)], &[]))
            .await
            .unwrap();
        let mut files = Vec::new();
        let mut dirs = vec![scratch.0.join("lake/raw/clicks")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "parquet") {
                    files.push(path);
                }
            }
        }
        assert_eq!(files.len(), 1, "{files:?}");
        let reader = SerializedFileReader::new(std::fs::File::open(&files[0]).unwrap()).unwrap();
        let group = reader.metadata().row_group(0);
        assert_eq!(group.num_rows(), 500);
        let columns = |dictionary: bool| -> Vec<String> {
            group
                .columns()
                .iter()
                .filter(|c| c.dictionary_page_offset().is_some() == dictionary)
                .map(|c| c.column_path().string())
                .collect()
        };
        assert_eq!(columns(true), ["user", "page", "ms", "_topic", "_partition"]);
        assert_eq!(columns(false), ["ts", "_offset"]);
    }

    /// Claims partitions for a process; a partition new to the lake starts at 0.
    async fn claim_all(lake: &Lake, source: &SourceSchema, partitions: &[i32]) -> BTreeMap<i32, Claim> {
        let list: Vec<TopicPartition> = partitions.iter().map(|p| TopicPartition::new(TOPIC_NAME, *p)).collect();
        claim(lake, source, &list, &|_| Ok(0))
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.partition.partition, c))
            .collect()
    }

    /// A flush of partitions `(partition, generation, start, end)`: one valid event at each
    /// offset except at `bad` (partition, offset), which are malformed.
    fn job(source: &Arc<SourceSchema>, ranges: &[(i32, u64, i64, i64)], bad: &[(i32, i64)]) -> ArchiveJob {
        let mut rejects = Rejects::new("clicks", 0);
        let mut decoder = strata_core::decode::JsonDecoder::new(source.clone());
        for &(partition, _, start, end) in ranges {
            for offset in start..end {
                let position = KafkaPosition {
                    topic: TOPIC_NAME,
                    partition,
                    offset,
                };
                if bad.contains(&(partition, offset)) {
                    rejects.push(Origin::Kafka(position), b"{oops", "invalid JSON");
                } else {
                    let record = format!(r#"{{"ts":1795219200000,"user":"u{offset}","page":"/p","ms":5}}"#);
                    decoder.decode(record.as_bytes(), Some(position)).unwrap();
                }
            }
        }
        for &(partition, offset) in bad {
            assert!(
                ranges
                    .iter()
                    .any(|&(p, _, s, e)| p == partition && (s..e).contains(&offset)),
                "reject {partition}@{offset} outside the flush"
            );
        }
        ArchiveJob {
            source: 0,
            events: vec![decoder.finish()],
            rejects: vec![rejects.finish()],
            ranges: ranges
                .iter()
                .map(|&(partition, generation, start, end)| ArchiveRange {
                    generation,
                    offsets: OffsetRange {
                        partition: TopicPartition::new(TOPIC_NAME, partition),
                        start,
                        end,
                    },
                })
                .collect(),
        }
    }

    async fn positions(lake: &Lake, table: &str) -> Vec<(i32, i64)> {
        let url = if table == "raw" {
            lake.raw_url("clicks")
        } else {
            lake.rejected_url("clicks")
        };
        let Some(table) = lake.open(&url).await.unwrap() else {
            return Vec::new();
        };
        let ctx = new_context(session_config()).unwrap();
        ctx.register_table("t", strata_core::lake::table_provider(&ctx, &table).await.unwrap())
            .unwrap();
        let (p, o) = if url == lake.raw_url("clicks") {
            (PARTITION, OFFSET)
        } else {
            (rejected::PARTITION, rejected::OFFSET)
        };
        let batches = ctx
            .sql(&format!("SELECT \"{p}\", \"{o}\" FROM t ORDER BY 1, 2"))
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

    async fn lake_txns(lake: &Lake) -> AppTransactions {
        let table = lake.open(&lake.raw_url("clicks")).await.unwrap().unwrap();
        let mut txns = AppTransactions::default();
        txns.refresh(&table).await.unwrap();
        txns
    }

    fn every(partition: i32, offsets: std::ops::Range<i64>, except: &[i64]) -> Vec<(i32, i64)> {
        offsets
            .filter(|o| !except.contains(o))
            .map(|o| (partition, o))
            .collect()
    }

    /// A kill between the rejected-table commit and the raw-table commit of a flush leaves the
    /// rejected table ahead. The flushes that catch up fall elsewhere: one ends below the
    /// rejected table's position on a partition while it writes rejects of another. Every
    /// malformed record is still in the rejected table once, whether the archiver goes on
    /// or restarts in between.
    #[tokio::test]
    async fn rejects_archived_once_after_a_kill_between_the_two_commits() {
        for restart in [false, true] {
            let (_scratch, lake, source) = setup(&format!("kill-{restart}"));
            let claims = claim_all(&lake, &source, &[0, 1]).await;
            let g = claims[&0].generation;
            // The flush whose rejected commit landed and whose raw commit was lost.
            let lost = job(&source, &[(0, g, 0, 100), (1, g, 0, 100)], &[(0, 50), (0, 90), (1, 10)]);
            {
                let mut archiver = archiver(&lake, &source);
                let tables = archiver.tables(0).await.unwrap();
                let txns = lost
                    .ranges
                    .iter()
                    .map(|r| Transaction::new(kafka_app_id(&r.offsets.partition), r.offsets.end))
                    .collect();
                strata_core::lake::append(&mut tables.rejected, lost.rejects, txns, serde_json::json!({}))
                    .await
                    .unwrap();
            }
            // The restarted speed layer claims anew and resumes at the raw table's position.
            let claims = claim_all(&lake, &source, &[0, 1]).await;
            let g = claims[&0].generation;
            assert_eq!((claims[&0].start, claims[&1].start), (0, 0));
            let mut archiver = archiver(&lake, &source);
            let catch_up = job(&source, &[(0, g, 0, 80), (1, g, 0, 130)], &[(0, 50), (1, 10), (1, 120)]);
            archiver.commit(&catch_up).await.unwrap();
            if restart {
                archiver = self::archiver(&lake, &source);
            }
            let next = job(&source, &[(0, g, 80, 200)], &[(0, 90), (0, 150)]);
            archiver.commit(&next).await.unwrap();
            assert_eq!(
                positions(&lake, "rejected").await,
                vec![(0, 50), (0, 90), (0, 150), (1, 10), (1, 120)],
                "restart between the flushes: {restart}"
            );
            let raw = lake_txns(&lake).await;
            assert_eq!(raw.get(&kafka_app_id(&TopicPartition::new(TOPIC_NAME, 0))), Some(200));
            assert_eq!(raw.get(&kafka_app_id(&TopicPartition::new(TOPIC_NAME, 1))), Some(130));
        }
    }

    /// A rebalance with a flush in flight: process A's flush of partition 0 was handed to its
    /// archiver before the partition moved to process B, which claimed it and started from
    /// the lake's position. Whichever lands first, the raw table holds every offset once and
    /// the rejected table every malformed record once; A's late range is fenced off.
    #[tokio::test]
    async fn a_flush_in_flight_when_a_partition_moves_is_fenced_off() {
        for a_lands_first in [true, false] {
            let (_scratch, lake, source) = setup(&format!("fence-{a_lands_first}"));
            let a = claim_all(&lake, &source, &[0, 1]).await;
            let mut archiver_a = archiver(&lake, &source);
            archiver_a
                .commit(&job(
                    &source,
                    &[(0, a[&0].generation, 0, 100), (1, a[&1].generation, 0, 40)],
                    &[(0, 7)],
                ))
                .await
                .unwrap();
            // A's next flush, in flight: [100, 150) of partition 0 with a malformed record.
            let in_flight = job(
                &source,
                &[(0, a[&0].generation, 100, 150), (1, a[&1].generation, 40, 60)],
                &[(0, 120)],
            );
            if a_lands_first {
                let done = archiver_a.commit(&in_flight).await.unwrap();
                assert!(done.fenced.is_empty());
            }
            // B takes partition 0 over.
            let b = claim_all(&lake, &source, &[0]).await;
            assert_eq!(b[&0].generation, a[&0].generation + 1);
            assert_eq!(b[&0].start, if a_lands_first { 150 } else { 100 });
            let mut archiver_b = archiver(&lake, &source);
            // The malformed records of what B consumed from its start.
            let bad: Vec<(i32, i64)> = [(0, 120), (0, 170)]
                .into_iter()
                .filter(|&(_, o)| o >= b[&0].start)
                .collect();
            archiver_b
                .commit(&job(&source, &[(0, b[&0].generation, b[&0].start, 180)], &bad))
                .await
                .unwrap();
            if !a_lands_first {
                // A's stale range goes nowhere; its partition 1 (still A's) lands.
                let done = archiver_a.commit(&in_flight).await.unwrap();
                assert_eq!(done.fenced.len(), 1);
                let fenced = &done.fenced[0].offsets;
                assert_eq!((fenced.partition.partition, fenced.start), (0, 100));
                assert_eq!(done.archived.len(), 1);
            }
            let raw = positions(&lake, "raw").await;
            let mut want = every(0, 0..180, &[7, 120, 170]);
            want.extend(every(1, 0..60, &[]));
            assert_eq!(raw, want, "each offset once (A first: {a_lands_first})");
            assert_eq!(
                positions(&lake, "rejected").await,
                vec![(0, 7), (0, 120), (0, 170)],
                "A first: {a_lands_first}"
            );
            let txns = lake_txns(&lake).await;
            assert_eq!(txns.get(&kafka_app_id(&TopicPartition::new(TOPIC_NAME, 0))), Some(180));
            assert_eq!(
                txns.get(&owner_app_id(&TopicPartition::new(TOPIC_NAME, 0))),
                Some(b[&0].generation as i64)
            );
        }
    }

    /// The fence's last line: a commit decided on a snapshot that another process's claim
    /// has since moved past (A read the table, B claimed, A commits) is refused by the Delta
    /// conflict check, because both carry the partition's `txn` ids; decided again, A's
    /// range is fenced off and nothing of it lands.
    #[tokio::test]
    async fn a_commit_decided_before_a_claim_landed_is_refused() {
        let (_scratch, lake, source) = setup("race");
        let a = claim_all(&lake, &source, &[0]).await;
        let mut archiver_a = archiver(&lake, &source);
        let job_a = job(&source, &[(0, a[&0].generation, 0, 50)], &[(0, 3)]);
        // A reads the table (as commit() does first) ...
        let tables = archiver_a.tables(0).await.unwrap();
        tables.raw_txns.refresh(&tables.raw).await.unwrap();
        assert_eq!(
            tables.raw_txns.get(&owner_app_id(&TopicPartition::new(TOPIC_NAME, 0))),
            Some(a[&0].generation as i64)
        );
        // ... B claims the partition ...
        let b = claim_all(&lake, &source, &[0]).await;
        // ... and A's write, on its snapshot from before the claim, is refused.
        let written = archiver_a.write(0, &job_a, &job_a.ranges).await;
        assert!(matches!(written, Err(Error::Conflict(_))), "{written:?}");
        let decided_again = archiver_a.commit(&job_a).await.unwrap();
        assert_eq!(decided_again.fenced, job_a.ranges);
        assert_eq!(positions(&lake, "raw").await, Vec::<(i32, i64)>::new());
        // B's flush lands. A's rejected commit had landed before its raw commit was refused:
        // B finds the record there and does not write it again.
        let mut archiver_b = archiver(&lake, &source);
        archiver_b
            .commit(&job(&source, &[(0, b[&0].generation, 0, 60)], &[(0, 3)]))
            .await
            .unwrap();
        assert_eq!(positions(&lake, "raw").await, every(0, 0..60, &[3]));
        assert_eq!(positions(&lake, "rejected").await, vec![(0, 3)]);
    }

    /// The rejected table's positions are read from its newest snapshot, never from what a
    /// process saw before: A archives partition 0, B takes it over and dies between its
    /// rejected commit and its raw commit, A gets the partition back and consumes the same
    /// offsets again. A's archiver, which read the rejected table before B wrote, must not
    /// write B's malformed record a second time.
    #[tokio::test]
    async fn rejects_written_by_another_process_are_not_written_again() {
        let (_scratch, lake, source) = setup("takeover-rejects");
        let a = claim_all(&lake, &source, &[0]).await;
        let mut archiver_a = archiver(&lake, &source);
        archiver_a
            .commit(&job(&source, &[(0, a[&0].generation, 0, 100)], &[(0, 40)]))
            .await
            .unwrap();
        // B claims, writes its rejects of [100, 200), and is killed before its raw commit.
        let b = claim_all(&lake, &source, &[0]).await;
        assert_eq!(b[&0].start, 100);
        {
            let lost = job(&source, &[(0, b[&0].generation, 100, 200)], &[(0, 150)]);
            let mut archiver_b = archiver(&lake, &source);
            let tables = archiver_b.tables(0).await.unwrap();
            let txns = vec![Transaction::new(kafka_app_id(&TopicPartition::new(TOPIC_NAME, 0)), 200)];
            strata_core::lake::append(&mut tables.rejected, lost.rejects, txns, serde_json::json!({}))
                .await
                .unwrap();
        }
        // A owns the partition again and archives the same offsets.
        let again = claim_all(&lake, &source, &[0]).await;
        assert_eq!(again[&0].start, 100);
        archiver_a
            .commit(&job(
                &source,
                &[(0, again[&0].generation, 100, 220)],
                &[(0, 150), (0, 210)],
            ))
            .await
            .unwrap();
        assert_eq!(positions(&lake, "rejected").await, vec![(0, 40), (0, 150), (0, 210)]);
        assert_eq!(positions(&lake, "raw").await, every(0, 0..220, &[40, 150, 210]));
    }

    /// A partition nothing was archived from yet gets its start pinned by the first claim, so
    /// a restart resumes there even where `auto.offset.reset = latest` would now start later;
    /// later claims keep it and raise the generation.
    #[tokio::test]
    async fn the_first_claim_pins_the_start() {
        let (_scratch, lake, source) = setup("pin");
        let list = vec![TopicPartition::new(TOPIC_NAME, 3)];
        let first = claim(&lake, &source, &list, &|_| Ok(1000)).await.unwrap();
        assert_eq!((first[0].generation, first[0].start), (1, 1000));
        let again = claim(&lake, &source, &list, &|_| Ok(5000)).await.unwrap();
        assert_eq!(
            (again[0].generation, again[0].start),
            (2, 1000),
            "the pinned start holds"
        );
        let failing = claim(&lake, &source, &list, &|_| Err(Error::Input("no watermark".into())))
            .await
            .unwrap();
        assert_eq!(failing[0].start, 1000, "a known start needs no lookup");
    }
}
