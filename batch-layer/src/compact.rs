//! Compaction of a raw table: small files (the speed layer's flushes, chunks of imports)
//! become few large files sorted by event time.
//!
//! ```text
//!  per event_date partition: small files ──read──► sort by event time ──► large files
//!  one Delta commit for all partitions: remove(small, dataChange=false) + add(large, dataChange=false)
//! ```
//!
//! The commit is atomic: a reader sees either the small files or the large ones, never both
//! or neither. A query already running keeps reading its snapshot's files, which stay on
//! storage. The rows are the same, so no answer changes. Concurrent appends do not conflict
//! with a compaction; two compactions must not run at once (the batch lease ensures it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Date32Array, RecordBatch};
use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::kernel::{Action, Add, LogicalFileView};
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter as _, RecordBatchWriter};
use futures::StreamExt as _;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use strata_core::executor::CpuRuntime;
use strata_core::lake::COMMIT_INFO_KEY;
use strata_core::schema::{EVENT_DATE, SourceSchema};
use strata_core::{Error, Result};

use crate::writer_properties;

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompactionReport {
    pub source: String,
    pub partitions: usize,
    pub files_in: usize,
    pub files_out: usize,
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub elapsed: Duration,
    /// The raw table version the compaction committed, if it committed.
    pub version: Option<u64>,
}

/// Sizes that drive compaction.
#[derive(Debug, Clone, Copy)]
pub struct CompactionSizes {
    /// Files below this are compacted.
    pub small_file_bytes: u64,
    /// Output files are about this large, and one bin reads at most this much.
    pub target_file_bytes: u64,
}

/// A group of small files of one partition, rewritten together.
struct Bin {
    date: String,
    files: Vec<LogicalFileView>,
}

/// Compacts the small files of a raw table. Does nothing (and commits nothing) when no
/// partition has two or more small files.
pub async fn compact(
    table: &mut DeltaTable,
    source: &SourceSchema,
    sizes: CompactionSizes,
    cpu: &CpuRuntime,
) -> Result<CompactionReport> {
    let started = Instant::now();
    let mut report = CompactionReport {
        source: source.name.clone(),
        ..Default::default()
    };
    let bins = plan(table, sizes)?;
    if bins.is_empty() {
        report.elapsed = started.elapsed();
        return Ok(report);
    }
    let store = table.object_store();
    let mut removes = Vec::new();
    let mut dates = std::collections::BTreeSet::new();
    let mut work = Vec::with_capacity(bins.len());
    for bin in &bins {
        dates.insert(bin.date.clone());
        report.files_in += bin.files.len();
        report.bytes_in += bin.files.iter().map(|f| f.size().max(0) as u64).sum::<u64>();
        removes.extend(bin.files.iter().map(|f| Action::Remove(f.remove_action(false))));
        let writer = RecordBatchWriter::for_table(table)
            .map_err(|e| Error::lake("open a compaction writer", e))?
            .with_writer_properties(writer_properties())
            .with_target_file_size(sizes.target_file_bytes);
        work.push(BinWork {
            paths: bin.files.iter().map(|f| StorePath::from(f.path().as_ref())).collect(),
            date: parse_date(&bin.date)?,
            writer,
        });
    }
    // Bins are independent: as many at once as there are cores (each holds at most one
    // target file of input in memory), their files added in plan order.
    let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (schema, event_time) = (source.raw.clone(), source.event_time);
    let mut done = futures::stream::iter(work)
        .map(|w| cpu.spawn(w.run(store.clone(), schema.clone(), event_time)))
        .buffered(parallel);
    let mut actions = Vec::new();
    while let Some(result) = done.next().await {
        let (rows, adds) = result.map_err(|e| Error::Internal(format!("a compaction task failed: {e}")))??;
        report.rows += rows;
        for mut add in adds {
            add.data_change = false;
            report.files_out += 1;
            report.bytes_out += add.size.max(0) as u64;
            actions.push(Action::Add(add));
        }
    }
    actions.extend(removes);
    report.partitions = dates.len();
    let info = serde_json::json!({ "compaction": {
        "files_in": report.files_in, "files_out": report.files_out, "rows": report.rows,
        "bytes_in": report.bytes_in, "bytes_out": report.bytes_out,
    }});
    let snapshot = table
        .snapshot()
        .map_err(|e| Error::lake("read the raw table state", e))?;
    let committed =
        CommitBuilder::from(CommitProperties::default().with_metadata([(COMMIT_INFO_KEY.to_string(), info)]))
            .with_actions(actions)
            .build(
                Some(snapshot as &dyn TableReference),
                table.log_store(),
                DeltaOperation::Optimize {
                    predicate: None,
                    target_size: sizes.target_file_bytes as i64,
                },
            )
            .await
            .map_err(|e| Error::lake(format!("commit the compaction of `{}`", source.name), e))?;
    report.version = Some(committed.version() as u64);
    table
        .update_incremental(None)
        .await
        .map_err(|e| Error::lake("reload the raw table", e))?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Chooses the files to compact: per partition, the small files, in bins of at most the
/// target size; a partition with a single small file is left as it is.
fn plan(table: &DeltaTable, sizes: CompactionSizes) -> Result<Vec<Bin>> {
    let snapshot = table
        .snapshot()
        .map_err(|e| Error::lake("read the raw table state", e))?;
    let mut by_date: BTreeMap<String, Vec<LogicalFileView>> = BTreeMap::new();
    for file in snapshot.log_data().iter() {
        if (file.size().max(0) as u64) < sizes.small_file_bytes {
            let date = file
                .partition_values_map()
                .get(EVENT_DATE)
                .cloned()
                .flatten()
                .unwrap_or_default();
            by_date.entry(date).or_default().push(file);
        }
    }
    let mut bins = Vec::new();
    for (date, files) in by_date {
        if files.len() < 2 {
            continue;
        }
        let mut current = Bin {
            date: date.clone(),
            files: Vec::new(),
        };
        let mut bytes = 0u64;
        for f in files {
            let size = f.size().max(0) as u64;
            if !current.files.is_empty() && bytes + size > sizes.target_file_bytes {
                bins.push(std::mem::replace(
                    &mut current,
                    Bin {
                        date: date.clone(),
                        files: Vec::new(),
                    },
                ));
                bytes = 0;
            }
            bytes += size;
            current.files.push(f);
        }
        bins.push(current);
    }
    // A bin of one file would rewrite it as it is.
    bins.retain(|b| b.files.len() > 1);
    Ok(bins)
}

/// One bin's rewrite: its small files read, sorted into one batch, written as large files.
struct BinWork {
    paths: Vec<StorePath>,
    date: i32,
    writer: RecordBatchWriter,
}

impl BinWork {
    /// Returns the rows written and the files added.
    async fn run(
        mut self,
        store: Arc<dyn ObjectStore>,
        schema: arrow::datatypes::SchemaRef,
        event_time: usize,
    ) -> Result<(u64, Vec<Add>)> {
        let mut batches = Vec::new();
        for path in &self.paths {
            batches.extend(read_file(&store, path).await?);
        }
        let sorted = sorted_batch(&schema, event_time, batches, self.date)?;
        let rows = sorted.num_rows() as u64;
        self.writer
            .write(sorted)
            .await
            .map_err(|e| Error::lake("write a compacted file", e))?;
        // Flush per bin: one bin is at most one target file of input.
        let adds = self
            .writer
            .flush()
            .await
            .map_err(|e| Error::lake("write a compacted file", e))?;
        Ok((rows, adds))
    }
}

async fn read_file(store: &Arc<dyn ObjectStore>, path: &StorePath) -> Result<Vec<RecordBatch>> {
    // Small files by definition: read each whole, then decode from memory.
    let bytes = store
        .get(path)
        .await
        .map_err(|e| Error::lake(format!("read {path}"), e))?
        .bytes()
        .await
        .map_err(|e| Error::lake(format!("read {path}"), e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| Error::lake(format!("read {path}"), e))?
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| Error::lake(format!("read {path}"), e))?;
    reader
        .map(|b| b.map_err(|e| Error::lake(format!("read {path}"), e)))
        .collect()
}

fn parse_date(date: &str) -> Result<i32> {
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|e| Error::Internal(format!("raw table partition `{date}` is not a date: {e}")))?;
    Ok(
        d.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch"))
            .num_days() as i32,
    )
}

/// Concatenates the data files of one partition (without the partition column), adds the
/// partition column back and sorts by event time.
fn sorted_batch(
    schema: &arrow::datatypes::SchemaRef,
    event_time: usize,
    batches: Vec<RecordBatch>,
    date: i32,
) -> Result<RecordBatch> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let data_fields = schema.fields().len() - 1; // all but event_date, the last
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for i in 0..data_fields {
        let name = schema.field(i).name();
        let parts: Vec<&dyn arrow::array::Array> = batches
            .iter()
            .map(|b| {
                b.column_by_name(name)
                    .map(|c| c.as_ref())
                    .ok_or_else(|| Error::Internal(format!("raw data file without column `{name}`")))
            })
            .collect::<Result<_>>()?;
        let target = schema.field(i).data_type();
        let column = if parts.is_empty() {
            arrow::array::new_empty_array(target)
        } else {
            arrow::compute::concat(&parts)?
        };
        // Files written by other Delta writers may use other encodings of the same type.
        let column = if column.data_type() == target {
            column
        } else {
            arrow::compute::cast(&column, target)?
        };
        columns.push(column);
    }
    columns.push(Arc::new(Date32Array::from(vec![date; rows])));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let indices = arrow::compute::sort_to_indices(batch.column(event_time), None, None)?;
    Ok(arrow::compute::take_record_batch(&batch, &indices)?)
}
