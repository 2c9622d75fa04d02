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

use arrow::array::AsArray as _;
use arrow::array::{
    Array, ArrayData, ArrayRef, MutableArrayData, RecordBatch, RecordBatchOptions, TimestampMicrosecondArray,
    make_array,
};
use arrow::datatypes::{DataType, Schema, SchemaRef, TimestampMicrosecondType};
use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::kernel::{Action, Add, LogicalFileView};
use deltalake::protocol::DeltaOperation;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use strata_core::executor::CpuRuntime;
use strata_core::lake::{COMMIT_INFO_KEY, column_mapped, raw_writer_properties};
use strata_core::schema::{EVENT_DATE, SourceSchema};
use strata_core::session::parallelism;
use strata_core::{Error, Result};

use crate::data_file::{RowGroups, Slots, StatsColumns, add_action, encode, file_name, group_rows};

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
    let snapshot = table
        .snapshot()
        .map_err(|e| Error::lake("read the raw table state", e))?;
    let configuration = snapshot.metadata().configuration();
    if column_mapped(configuration) {
        return Err(Error::Internal(format!(
            "raw.{} uses Delta column mapping, which compaction does not write",
            source.name
        )));
    }
    let partitions = snapshot.metadata().partition_columns();
    if partitions.len() != 1 || partitions[0] != EVENT_DATE {
        return Err(Error::Internal(format!(
            "raw.{} is partitioned by {partitions:?}; compaction writes tables partitioned by `{EVENT_DATE}` alone",
            source.name
        )));
    }
    let stats = StatsColumns::of(configuration, &format!("raw.{}", source.name))?;
    // The files are written in the table's own schema (without the partition column), as
    // the Delta writer wrote them; the small files' batches are cast to it.
    let file_schema = file_schema(&snapshot.snapshot().arrow_schema())?;
    let event_time = file_schema
        .index_of(source.raw.field(source.event_time).name())
        .map_err(|_| {
            Error::Internal(format!(
                "raw.{} has no column `{}`",
                source.name,
                source.raw.field(source.event_time).name()
            ))
        })?;
    let mut removes = Vec::new();
    let mut dates = std::collections::BTreeSet::new();
    let mut work = Vec::with_capacity(bins.len());
    let properties = compaction_properties(source);
    let parallel = parallelism();
    // Every bin sorts and encodes on every core: while two bins run, their threads share the
    // cores, and the one still running when the other ends has them all (each bin with its
    // share only, the last one's tail ran on one core).
    // Together, no more encoding jobs at once than cores: each holds a column of a row group.
    let slots = Slots::new(parallel);
    for bin in &bins {
        if chrono::NaiveDate::parse_from_str(&bin.date, "%Y-%m-%d").is_err() {
            return Err(Error::Internal(format!(
                "raw.{}: files in the partition {EVENT_DATE}={:?}, which is not a date",
                source.name, bin.date
            )));
        }
        dates.insert(bin.date.clone());
        report.files_in += bin.files.len();
        let bytes = bin.files.iter().map(|f| f.size().max(0) as u64).sum::<u64>();
        report.bytes_in += bytes;
        removes.extend(bin.files.iter().map(|f| Action::Remove(f.remove_action(false))));
        work.push(BinWork {
            bytes: bytes as usize,
            paths: bin.files.iter().map(|f| StorePath::from(f.path().as_ref())).collect(),
            partition: bin.date.clone(),
            properties: properties.clone(),
            stats: stats.clone(),
            slots: slots.clone(),
        });
    }
    // Bins are independent: as many at once as there are cores (each holds at most one
    // target file of input in memory, and its compacted file, smaller), their files added
    // in plan order.
    let mut done = futures::stream::iter(work)
        .map(|w| cpu.spawn(w.run(store.clone(), file_schema.clone(), event_time, cpu.clone())))
        .buffered(parallel);
    let mut actions = Vec::new();
    while let Some(result) = done.next().await {
        let (rows, add) = result.map_err(|e| Error::Internal(format!("a compaction task failed: {e}")))??;
        report.rows += rows;
        // A bin whose files hold no rows is removed and replaced by nothing.
        if let Some(add) = add {
            report.files_out += 1;
            report.bytes_out += add.size.max(0) as u64;
            actions.push(Action::Add(add));
        }
    }
    actions.extend(removes);
    report.partitions = dates.len();
    report.version = Some(commit(table, source, sizes, actions, &report).await?);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Commits a compaction's new files and the removal of the files they replace, as one
/// Delta `OPTIMIZE` (no data change), and reloads the table; returns the version.
async fn commit(
    table: &mut DeltaTable,
    source: &SourceSchema,
    sizes: CompactionSizes,
    actions: Vec<Action>,
    report: &CompactionReport,
) -> Result<u64> {
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
    table
        .update_incremental(None)
        .await
        .map_err(|e| Error::lake("reload the raw table", e))?;
    Ok(committed.version() as u64)
}

/// Parquet settings of compacted files: those of a raw table's files (the event time and the
/// Kafka offset without a dictionary: their values are mostly distinct, so a dictionary
/// would be built and given up), and a column gives up its dictionary at 256 KiB, so that a
/// column of ids does not intern a megabyte of distinct values per row group before falling
/// back (together: the benchmark's bins of 2.5M rows written in ~420 ms instead of ~590).
/// Encodings stay those every Parquet reader knows (DELTA_BINARY_PACKED would make the event
/// time ~20% smaller, but Spark before 3.3 cannot read it).
fn compaction_properties(source: &SourceSchema) -> WriterProperties {
    raw_writer_properties(source)
        .into_builder()
        .set_dictionary_page_size_limit(256 * 1024)
        .build()
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

/// One bin's rewrite: its small files read, sorted into one batch, written as one file (its
/// input is at most the target size, and the sorted rows compress at least as well).
struct BinWork {
    paths: Vec<StorePath>,
    /// The bytes of its files, more than the compacted file takes.
    bytes: usize,
    /// The partition's value, as in its path.
    partition: String,
    properties: WriterProperties,
    stats: StatsColumns,
    /// The encoding jobs all bins may run at once.
    slots: Slots,
}

impl BinWork {
    /// Returns the rows written and the file added, if the bin had rows.
    async fn run(
        self,
        store: Arc<dyn ObjectStore>,
        file_schema: SchemaRef,
        event_time: usize,
        cpu: CpuRuntime,
    ) -> Result<(u64, Option<Add>)> {
        // The bin's files decoded at once, one per core, in their order; then sorted,
        // gathered and encoded on every core.
        let parallel = parallelism();
        let files: Vec<Vec<RecordBatch>> = futures::stream::iter(self.paths.clone())
            .map(|path| {
                let store = store.clone();
                cpu.spawn(async move { read_file(&store, &path).await })
            })
            .buffered(parallel)
            .map(|read| read.map_err(|e| Error::Internal(format!("a compaction read failed: {e}")))?)
            .try_collect()
            .await?;
        let batches: Vec<RecordBatch> = files.into_iter().flatten().collect();
        let sorted = SortedRows::new(
            &file_schema,
            event_time,
            &batches,
            parallel,
            MAX_COLUMN_BYTES,
            group_rows(&self.properties),
        )
        .map_err(|e| {
            Error::lake(
                format!(
                    "sort the {} small files of partition {EVENT_DATE}={}",
                    self.paths.len(),
                    self.partition
                ),
                e,
            )
        })?;
        drop(batches);
        let rows = sorted.rows() as u64;
        if rows == 0 {
            return Ok((0, None));
        }
        // Each column of each row group gathered and encoded by one job.
        let path = format!("{EVENT_DATE}={}/{}", self.partition, file_name(&self.properties));
        let (bytes, metadata) = encode(
            &file_schema,
            &sorted,
            self.properties,
            parallel,
            &self.slots,
            self.bytes,
        )
        .map_err(|e| Error::lake(format!("write the compacted file {path}"), e))?;
        drop(sorted);
        let add = add_action(
            path.clone(),
            bytes.len(),
            (EVENT_DATE, &self.partition),
            &file_schema,
            &metadata,
            &self.stats,
        )?;
        upload(&store, &path, bytes)
            .await
            .map_err(|e| Error::lake(format!("write the compacted file {path}"), e))?;
        Ok((rows, Some(add)))
    }
}

/// The parts a large file is uploaded in (at least the 5 MiB object stores ask of a part).
const PART_BYTES: usize = 16 << 20;

/// How many parts of one file are uploaded at once.
const PARTS_AT_ONCE: usize = 4;

/// Puts a file to the store: at once when it is small, else in parts uploaded a few at a
/// time. A failed part aborts the upload, so that no part is left on the store.
async fn upload(store: &Arc<dyn ObjectStore>, path: &str, bytes: Vec<u8>) -> object_store::Result<()> {
    let path = StorePath::from(path);
    let bytes = bytes::Bytes::from(bytes);
    if bytes.len() <= PART_BYTES {
        store.put(&path, bytes.into()).await?;
        return Ok(());
    }
    let mut upload = store.put_multipart(&path).await?;
    let parts: Vec<_> = (0..bytes.len())
        .step_by(PART_BYTES)
        .map(|start| upload.put_part(bytes.slice(start..(start + PART_BYTES).min(bytes.len())).into()))
        .collect();
    let sent: object_store::Result<Vec<()>> = futures::stream::iter(parts).buffered(PARTS_AT_ONCE).try_collect().await;
    match sent {
        Ok(_) => upload.complete().await.map(|_| ()),
        Err(e) => {
            // The error is the part's; a failed abort leaves parts the store expires.
            let _ = upload.abort().await;
            Err(e)
        }
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

/// The schema of a raw table's data files: the table's schema without `event_date`, which
/// lives in the partition path.
fn file_schema(table: &SchemaRef) -> Result<SchemaRef> {
    let fields: Vec<_> = table
        .fields()
        .iter()
        .filter(|f| f.name() != EVENT_DATE)
        .cloned()
        .collect();
    if fields.len() == table.fields().len() {
        return Err(Error::Internal(format!("a raw table schema has `{EVENT_DATE}`")));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The most bytes of one string or binary column in one sorted batch: its offsets are
/// 32-bit, so a batch stops well before 2 GiB.
const MAX_COLUMN_BYTES: usize = 1 << 30;

/// A bin's rows sorted by event time (equal times in the order of the files' batches' latest
/// events, then of their rows), as row groups of `file_schema`: where each group's rows are
/// in the files' batches. A group's column is gathered when it is encoded, so each value is
/// copied once and the sorted rows are never all in memory at once.
struct SortedRows {
    /// The files' batches, as `file_schema`.
    batches: Vec<RecordBatch>,
    groups: Vec<Group>,
}

/// Where the rows of one row group are.
enum Group {
    /// Slices of consecutive rows of one batch, `(batch, start, end)`, each copied at once.
    Slices {
        rows: usize,
        slices: Vec<(usize, usize, usize)>,
    },
    /// Mostly single rows (files not in event-time order): `(batch, row)` each.
    Rows(Vec<(usize, usize)>),
}

impl SortedRows {
    /// The rows sorted on `threads` threads, in groups of at most `group_rows` rows, cut
    /// earlier where a string or binary column of a group would hold more than `max_bytes`.
    fn new(
        file_schema: &SchemaRef,
        event_time: usize,
        batches: &[RecordBatch],
        threads: usize,
        max_bytes: usize,
        group_rows: usize,
    ) -> Result<Self> {
        let mut batches: Vec<RecordBatch> = batches
            .iter()
            .map(|b| conformed(file_schema, b))
            .collect::<Result<_>>()?;
        // The files' batches in the order of their latest events (the table lists the files
        // in no order): one after the other in time, most of their rows are in order
        // already. Not of their earliest: a late event would move its file before others.
        batches.sort_by_cached_key(|b| {
            b.column(event_time)
                .as_primitive_opt::<TimestampMicrosecondType>()
                .and_then(arrow::compute::max)
        });
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        // Each file holds its events in arrival order (or sorted): runs in event-time order,
        // broken by the late ones, which `sorted_by_time` takes out and merges back in.
        let mut keyed: Vec<(i64, u32, u32)> = Vec::with_capacity(rows);
        for (b, batch) in batches.iter().enumerate() {
            let column = batch.column(event_time);
            let times = column
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .ok_or_else(|| Error::Internal(format!("an event time column of type {}", column.data_type())))?;
            keyed.extend(times.values().iter().enumerate().map(|(r, &t)| (t, b as u32, r as u32)));
        }
        let keyed = sorted_by_time(keyed, threads, MIN_ROWS_PER_SORT);
        let groups = chunks(file_schema, &batches, &keyed, max_bytes)
            .into_iter()
            .flat_map(|piece| piece.chunks(group_rows.max(1)))
            .map(Group::of)
            .collect();
        Ok(Self { batches, groups })
    }

    fn rows(&self) -> usize {
        self.groups
            .iter()
            .map(|g| match g {
                Group::Slices { rows, .. } => *rows,
                Group::Rows(rows) => rows.len(),
            })
            .sum()
    }
}

impl Group {
    fn of(sorted: &[(i64, u32, u32)]) -> Self {
        let mut slices: Vec<(usize, usize, usize)> = Vec::new();
        for &(_, b, r) in sorted {
            let (b, r) = (b as usize, r as usize);
            match slices.last_mut() {
                Some((last, _, end)) if *last == b && *end == r => *end += 1,
                _ => slices.push((b, r, r + 1)),
            }
        }
        if slices.len() > sorted.len() / 4 {
            Self::Rows(sorted.iter().map(|&(_, b, r)| (b as usize, r as usize)).collect())
        } else {
            Self::Slices {
                rows: sorted.len(),
                slices,
            }
        }
    }
}

impl RowGroups for SortedRows {
    fn groups(&self) -> usize {
        self.groups.len()
    }

    fn column(&self, group: usize, column: usize) -> parquet::errors::Result<ArrayRef> {
        match &self.groups[group] {
            Group::Slices { rows, slices } => {
                let parts: Vec<ArrayData> = self.batches.iter().map(|b| b.column(column).to_data()).collect();
                let mut sorted = MutableArrayData::new(parts.iter().collect(), false, *rows);
                for &(b, start, end) in slices {
                    sorted.try_extend(b, start, end)?;
                }
                Ok(make_array(sorted.freeze()))
            }
            Group::Rows(rows) => {
                let parts: Vec<&dyn Array> = self.batches.iter().map(|b| b.column(column).as_ref()).collect();
                Ok(arrow::compute::interleave(&parts, rows)?)
            }
        }
    }
}

/// Below this many rows, a sort is not split among threads.
const MIN_ROWS_PER_SORT: usize = 1 << 16;

/// At most this share of the rows (one in four) may be late for the rows in time order to be
/// kept as they are and the late ones sorted and merged in.
const LATE_SHARE: usize = 4;

/// `keyed` (time, batch, row), in (batch, row) order, stably sorted by time (ties keep
/// their order: the rows in order and the late ones are merged by all three). Most rows come
/// in time order: the files of an import or of one speed process's partition follow each
/// other, each holding its events in arrival order or sorted. A row at or after every time
/// before it is in place among those; only the others, the late ones, are sorted, then
/// merged in, each where it belongs, in `keyed`'s own memory. When more than one row in
/// [`LATE_SHARE`] is late (files of several partitions interleaved in time), all are sorted
/// ([`compared_by_time`]).
fn sorted_by_time(mut keyed: Vec<(i64, u32, u32)>, threads: usize, min_rows: usize) -> Vec<(i64, u32, u32)> {
    let rows = keyed.len();
    let mut latest = i64::MIN;
    let mut late: Vec<(i64, u32, u32)> = keyed
        .iter()
        .filter(|&&(t, _, _)| {
            latest = latest.max(t);
            t < latest
        })
        .take(rows / LATE_SHARE + 1)
        .copied()
        .collect();
    if late.len() > rows / LATE_SHARE {
        return compared_by_time(keyed, threads, min_rows);
    }
    // The rows in order moved to the front: all but the late ones, met in the same order.
    let mut next_late = late.iter().peekable();
    keyed.retain(|row| next_late.next_if_eq(&row).is_none());
    let mut in_order = keyed.len();
    keyed.resize(rows, (0, 0, 0));
    // Stable: equal times keep the files' order, as the rows in order do.
    late.sort_by_key(|&(t, _, _)| t);
    // Merged from the back: the latest late row goes after the rows in order above it
    // (later, or as late and later in the files), which move up to make room.
    let mut end = rows;
    for &row in late.iter().rev() {
        let above = count_above(&keyed[..in_order], row);
        keyed.copy_within(in_order - above..in_order, end - above);
        in_order -= above;
        end -= above + 1;
        keyed[end] = row;
    }
    keyed
}

/// How many of `rows` (sorted, none equal to `row`) are above `row`, searched from the end
/// inwards: a late row's place is usually near the one after it.
fn count_above(rows: &[(i64, u32, u32)], row: (i64, u32, u32)) -> usize {
    let n = rows.len();
    let mut k = 1;
    while k < n && rows[n - k] > row {
        k *= 2;
    }
    // The last `k / 2` rows are above it; of the ones before them, a last few may be.
    let (known, searched) = (k / 2, k.min(n));
    let part = &rows[n - searched..n - known];
    known + part.len() - part.partition_point(|&r| r < row)
}

/// `keyed` (time, batch, row) stably sorted by time: in `threads` parts of at least
/// `min_rows` each, sorted at once, then merged in pairs. Ties keep their order: a part's
/// rows come before the next part's.
fn compared_by_time(mut keyed: Vec<(i64, u32, u32)>, threads: usize, min_rows: usize) -> Vec<(i64, u32, u32)> {
    let parts = threads.min(keyed.len() / min_rows.max(1)).max(1);
    let size = keyed.len().div_ceil(parts);
    if parts == 1 {
        keyed.sort_by_key(|&(t, _, _)| t);
        return keyed;
    }
    std::thread::scope(|scope| {
        let mut pieces = keyed.chunks_mut(size);
        let first = pieces.next();
        for piece in pieces {
            scope.spawn(move || piece.sort_by_key(|&(t, _, _)| t));
        }
        if let Some(first) = first {
            first.sort_by_key(|&(t, _, _)| t);
        }
    });
    // Merged in pairs of neighbours until one run is left.
    let mut runs: Vec<Vec<(i64, u32, u32)>> = keyed
        .chunks(size)
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|pair| match pair {
            [left, right] => merge_by_time(left, right),
            _ => pair.concat(),
        })
        .collect();
    drop(keyed);
    while runs.len() > 1 {
        runs = runs
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => merge_by_time(left, right),
                _ => pair.concat(),
            })
            .collect();
    }
    runs.pop().unwrap_or_default()
}

/// Two runs sorted by time merged into one; on equal times, `left`'s rows first.
fn merge_by_time(left: &[(i64, u32, u32)], right: &[(i64, u32, u32)]) -> Vec<(i64, u32, u32)> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let (mut l, mut r) = (0, 0);
    while l < left.len() && r < right.len() {
        if right[r].0 < left[l].0 {
            out.push(right[r]);
            r += 1;
        } else {
            out.push(left[l]);
            l += 1;
        }
    }
    out.extend_from_slice(&left[l..]);
    out.extend_from_slice(&right[r..]);
    out
}

/// The sorted rows cut where a string or binary column would pass `max_bytes`: one piece
/// unless a column of all the files together passes it.
fn chunks<'a>(
    file_schema: &SchemaRef,
    batches: &[RecordBatch],
    sorted: &'a [(i64, u32, u32)],
    max_bytes: usize,
) -> Vec<&'a [(i64, u32, u32)]> {
    let wide: Vec<usize> = file_schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f.data_type(), DataType::Utf8 | DataType::Binary))
        .map(|(c, _)| c)
        .collect();
    let bytes = |c: usize| -> usize { batches.iter().map(|b| b.column(c).to_data().buffers()[1].len()).sum() };
    if wide.iter().all(|&c| bytes(c) <= max_bytes) {
        return vec![sorted];
    }
    let data: Vec<Vec<ArrayData>> = wide
        .iter()
        .map(|&c| batches.iter().map(|b| b.column(c).to_data()).collect())
        .collect();
    let offsets: Vec<Vec<&[i32]>> = data
        .iter()
        .map(|column| column.iter().map(|d| d.buffer::<i32>(0)).collect())
        .collect();
    let mut pieces = Vec::new();
    let (mut start, mut filled) = (0, vec![0usize; wide.len()]);
    for (i, &(_, b, r)) in sorted.iter().enumerate() {
        let sizes = offsets.iter().map(|o| {
            let o = o[b as usize];
            (o[r as usize + 1] - o[r as usize]) as usize
        });
        if i > start && filled.iter().zip(sizes.clone()).any(|(f, s)| f + s > max_bytes) {
            pieces.push(&sorted[start..i]);
            start = i;
            filled.iter_mut().for_each(|f| *f = 0);
        }
        filled.iter_mut().zip(sizes).for_each(|(f, s)| *f += s);
    }
    pieces.push(&sorted[start..]);
    pieces
}

/// A data file's batch as `file_schema`: its columns by name, cast where another Delta
/// writer used another encoding of the same type.
fn conformed(file_schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    let columns = file_schema
        .fields()
        .iter()
        .map(|field| {
            let Some(column) = batch.column_by_name(field.name()) else {
                // A column added to the table after the file was written: null in it, as
                // Delta readers read it.
                if field.is_nullable() {
                    return Ok(arrow::array::new_null_array(field.data_type(), batch.num_rows()));
                }
                return Err(Error::Internal(format!(
                    "raw data file without column `{}`, which is not nullable",
                    field.name()
                )));
            };
            Ok(if column.data_type() == field.data_type() {
                column.clone()
            } else {
                // Unsafe casts fail rather than turn a value they cannot convert into a null.
                let options = arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                arrow::compute::cast_with_options(column, field.data_type(), &options)?
            })
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new_with_options(
        file_schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray as _, StringArray};
    use arrow::datatypes::{DataType, Field, TimestampMicrosecondType};
    use object_store::ObjectStoreExt as _;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;
    use crate::writer_properties;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("ts", strata_core::schema::timestamp_type(), false),
            Field::new("id", DataType::Utf8, true),
        ]))
    }

    /// A file of `(time, id)` rows; an empty id is a null.
    fn file(rows: &[(i64, &str)]) -> RecordBatch {
        let times = TimestampMicrosecondArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())
            .with_timezone(strata_core::schema::TIMESTAMP_TZ);
        let ids = StringArray::from(
            rows.iter()
                .map(|r| Some(r.1).filter(|id| !id.is_empty()))
                .collect::<Vec<_>>(),
        );
        RecordBatch::try_new(schema(), vec![Arc::new(times), Arc::new(ids)]).unwrap()
    }

    /// The sorted rows gathered, a batch per row group.
    fn sorted_groups(
        schema: &SchemaRef,
        event_time: usize,
        files: &[RecordBatch],
        max_bytes: usize,
        group_rows: usize,
    ) -> Result<Vec<RecordBatch>> {
        let sorted = SortedRows::new(schema, event_time, files, 2, max_bytes, group_rows)?;
        (0..sorted.groups())
            .map(|g| {
                let columns = (0..schema.fields().len())
                    .map(|c| sorted.column(g, c))
                    .collect::<parquet::errors::Result<Vec<_>>>()
                    .unwrap();
                Ok(RecordBatch::try_new(schema.clone(), columns)?)
            })
            .collect()
    }

    /// The sorted rows, which fit one batch.
    fn sorted_batch(schema: &SchemaRef, event_time: usize, files: &[RecordBatch]) -> Result<RecordBatch> {
        let mut sorted = sorted_groups(schema, event_time, files, MAX_COLUMN_BYTES, usize::MAX)?;
        if sorted.is_empty() {
            return Ok(RecordBatch::new_empty(schema.clone()));
        }
        assert_eq!(sorted.len(), 1);
        Ok(sorted.remove(0))
    }

    /// What a stable sort by time of all the files' rows gives, in the files' order.
    fn expected(files: &[RecordBatch]) -> Vec<(i64, Option<String>)> {
        let mut rows = rows_of(&arrow::compute::concat_batches(&schema(), files).unwrap());
        rows.sort_by_key(|r| r.0);
        rows
    }

    fn rows_of(batch: &RecordBatch) -> Vec<(i64, Option<String>)> {
        let times = batch.column(0).as_primitive::<TimestampMicrosecondType>();
        let ids = batch.column(1).as_string::<i32>();
        (0..batch.num_rows())
            .map(|i| (times.value(i), ids.is_valid(i).then(|| ids.value(i).to_string())))
            .collect()
    }

    #[test]
    fn files_in_arrival_order_are_merged_by_event_time_stably() {
        // Each file: 40 rows in time order, two of them late (of the file before's time),
        // the last time equal to the next file's first one.
        // Every seventh id is null.
        let ids: Vec<Vec<String>> = (0..3)
            .map(|f| {
                (0..40)
                    .map(|i| if i % 7 == 3 { String::new() } else { format!("f{f}-{i}") })
                    .collect()
            })
            .collect();
        let files: Vec<RecordBatch> = (0..3)
            .map(|f| {
                let rows: Vec<(i64, &str)> = (0..40)
                    .map(|i| {
                        let time = match i {
                            10 | 25 => f * 39 - 20 + i,
                            _ => f * 39 + i,
                        };
                        (time, ids[f as usize][i as usize].as_str())
                    })
                    .collect();
                file(&rows)
            })
            .collect();
        let sorted = sorted_batch(&schema(), 0, &files).unwrap();
        assert_eq!(sorted.schema(), schema());
        assert_eq!(rows_of(&sorted), expected(&files));
        // Listed latest first, the files are taken in the order of their latest events: the
        // same rows, equal times in the same order.
        let listed: Vec<RecordBatch> = files.iter().rev().cloned().collect();
        let sorted = sorted_batch(&schema(), 0, &listed).unwrap();
        assert_eq!(rows_of(&sorted), expected(&files));
    }

    #[test]
    fn rows_too_wide_for_one_batch_are_cut_into_several_in_order() {
        // Ids of 4 bytes, 120 rows: 480 bytes, cut at 100 bytes a batch.
        let ids: Vec<String> = (0..120).map(|i| format!("{i:04}")).collect();
        let files: Vec<RecordBatch> = (0..3)
            .map(|f| {
                let rows: Vec<(i64, &str)> = (0..40)
                    .map(|i| ((f * 40 + i) as i64 % 50, ids[f * 40 + i].as_str()))
                    .collect();
                file(&rows)
            })
            .collect();
        let sorted = sorted_groups(&schema(), 0, &files, 100, usize::MAX).unwrap();
        assert_eq!(sorted.len(), 5, "480 bytes in batches of at most 100");
        for batch in &sorted {
            assert!(batch.column(1).as_string::<i32>().values().len() <= 100);
        }
        let rows: Vec<(i64, Option<String>)> = sorted.iter().flat_map(rows_of).collect();
        assert_eq!(rows, expected(&files));

        // Row groups of at most 50 rows, cut again where the bytes run out.
        let sorted = sorted_groups(&schema(), 0, &files, 100, 50).unwrap();
        let sizes: Vec<usize> = sorted.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(
            sizes,
            [25, 25, 25, 25, 20],
            "each batch of 25 rows of 4 bytes is under 50 rows"
        );
        let sorted = sorted_groups(&schema(), 0, &files, MAX_COLUMN_BYTES, 50).unwrap();
        let sizes: Vec<usize> = sorted.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, [50, 50, 20]);
        let rows: Vec<(i64, Option<String>)> = sorted.iter().flat_map(rows_of).collect();
        assert_eq!(rows, expected(&files));
    }

    #[test]
    fn a_sort_split_among_threads_is_the_stable_sort() {
        // Times with many ties, in runs broken by late rows, as files hold them.
        let keyed: Vec<(i64, u32, u32)> = (0..1000u32)
            .map(|i| (((i * 37) % 101) as i64 / 3, i / 100, i % 100))
            .collect();
        let mut expected = keyed.clone();
        expected.sort_by_key(|k| k.0);
        for threads in 1..=5 {
            assert_eq!(
                compared_by_time(keyed.clone(), threads, 10),
                expected,
                "{threads} threads"
            );
        }
        // Too few rows to split: one sort.
        assert_eq!(compared_by_time(keyed.clone(), 4, 600), expected);
        assert!(compared_by_time(Vec::new(), 2, 1).is_empty());
    }

    /// Rows in time order with late ones among them sort as the stable sort does: a day's
    /// events in arrival order, late ones as early as others (ties between the two), times
    /// before 1970; and those too often late to keep, sorted by comparisons: scrambled,
    /// files interleaved in time, the extremes of i64. One row, none.
    #[test]
    fn rows_in_order_and_late_ones_sort_as_the_stable_sort() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let day = 86_400_000_000i64;
        let start = 1_795_219_200_000_000i64;
        let cases: Vec<Vec<i64>> = vec![
            // A day's events in arrival order, one in twenty late by up to an hour, ties.
            (0..50_000)
                .map(|i| {
                    let on_time = start + i * (day / 50_000) / 1000 * 1000;
                    if next() % 20 == 0 {
                        on_time - (next() % 3_600_000_000) as i64
                    } else {
                        on_time
                    }
                })
                .collect(),
            // Ten rows a time, one in fifteen late by up to three, as early as rows in order.
            (0..30_000)
                .map(|i| start + i / 10 - if i % 15 == 0 { (next() % 4) as i64 } else { 0 })
                .collect(),
            // Two files interleaved in time: half the rows late.
            (0..20_000).map(|i| start + (i % 10_000) * 1000 + i / 10_000).collect(),
            // Scrambled, few distinct values.
            (0..10_000).map(|_| start + (next() % 7) as i64).collect(),
            // Before 1970, in arrival order, one in ten late by up to 50 ms.
            (0..10_000)
                .map(|i| -start + i * 1000 - if next() % 10 == 0 { (next() % 50_000) as i64 } else { 0 })
                .collect(),
            // Before 1970, scrambled across a day.
            (0..10_000).map(|_| -start + (next() % day as u64) as i64).collect(),
            // All equal; one row; none.
            vec![start; 1000],
            vec![start],
            Vec::new(),
            // The extremes of i64.
            (0..5_000)
                .map(|i| match i % 3 {
                    0 => i64::MIN + (next() % 4) as i64,
                    1 => i64::MAX - (next() % 4) as i64,
                    _ => next() as i64,
                })
                .collect(),
        ];
        for (case, times) in cases.iter().enumerate() {
            let keyed: Vec<(i64, u32, u32)> = times
                .iter()
                .enumerate()
                .map(|(i, &t)| (t, (i / 1000) as u32, (i % 1000) as u32))
                .collect();
            let mut expected = keyed.clone();
            expected.sort_by_key(|k| k.0);
            assert_eq!(sorted_by_time(keyed, 2, 100), expected, "case {case}");
        }
    }

    #[test]
    fn files_without_rows_make_an_empty_batch() {
        assert_eq!(sorted_batch(&schema(), 0, &[]).unwrap().num_rows(), 0);
        let empty = RecordBatch::new_empty(schema());
        let sorted = sorted_batch(&schema(), 0, &[empty.clone(), empty]).unwrap();
        assert_eq!((sorted.num_rows(), sorted.schema()), (0, schema()));
    }

    #[test]
    fn files_in_no_order_are_sorted_row_by_row() {
        let ids: Vec<String> = (0..64).map(|i| format!("r{i}")).collect();
        // Times scrambled: every slice of consecutive rows is a single row.
        let rows: Vec<(i64, &str)> = (0..64).map(|i| ((i * 37 % 64) as i64, ids[i].as_str())).collect();
        let files = [file(&rows[..40]), file(&rows[40..])];
        let sorted = sorted_batch(&schema(), 0, &files).unwrap();
        assert_eq!(rows_of(&sorted), expected(&files));
    }

    /// Sorted rows encoded as a file read back in event-time order across its row groups, for
    /// files in time order (gathered in slices) and in none (row by row), nulls among them.
    #[test]
    fn sorted_rows_encode_as_row_groups_in_event_time_order() {
        let ids: Vec<String> = (0..300)
            .map(|i| if i % 7 == 0 { String::new() } else { format!("r{i}") })
            .collect();
        for scrambled in [false, true] {
            let rows: Vec<(i64, &str)> = (0..300)
                .map(|i| {
                    (
                        if scrambled { (i * 37 % 300) as i64 } else { i as i64 / 2 },
                        ids[i].as_str(),
                    )
                })
                .collect();
            let files = [file(&rows[..120]), file(&rows[120..])];
            let sorted = SortedRows::new(&schema(), 0, &files, 2, MAX_COLUMN_BYTES, 50).unwrap();
            assert_eq!(sorted.groups(), 6);
            assert!(
                sorted.groups.iter().all(|g| matches!(g, Group::Rows(_)) == scrambled),
                "scrambled: {scrambled}"
            );
            let (bytes, metadata) = encode(&schema(), &sorted, writer_properties(), 2, &Slots::new(1), 0).unwrap();
            assert_eq!(metadata.num_row_groups(), 6);
            let back: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap())
                .collect();
            let rows: Vec<(i64, Option<String>)> = back.iter().flat_map(rows_of).collect();
            assert_eq!(rows, expected(&files), "scrambled: {scrambled}");
        }
    }

    /// A file larger than a part is uploaded in parts, and reads back whole; a small one at
    /// once.
    #[tokio::test]
    async fn a_large_file_is_uploaded_in_parts_and_reads_back_whole() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        for size in [1000, 2 * PART_BYTES + 12_345] {
            let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            upload(&store, "event_date=2026-11-20/f.parquet", bytes.clone())
                .await
                .unwrap();
            let read = store
                .get(&StorePath::from("event_date=2026-11-20/f.parquet"))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert!(read == bytes, "{size} bytes uploaded, {} read", read.len());
        }
    }

    #[test]
    fn a_column_added_to_the_table_after_a_file_is_null_in_it() {
        let times = TimestampMicrosecondArray::from(vec![2, 1]).with_timezone(strata_core::schema::TIMESTAMP_TZ);
        let old = Arc::new(Schema::new(vec![schema().field(0).clone()]));
        let old = RecordBatch::try_new(old, vec![Arc::new(times)]).unwrap();
        let sorted = sorted_batch(&schema(), 0, std::slice::from_ref(&old)).unwrap();
        assert_eq!(rows_of(&sorted), vec![(1, None), (2, None)]);
        // Unless the column cannot hold a null.
        let strict = Arc::new(Schema::new(vec![
            schema().field(0).clone(),
            Field::new("id", DataType::Utf8, false),
        ]));
        let e = sorted_batch(&strict, 0, &[old]).unwrap_err().to_string();
        assert!(e.contains("without column `id`"), "{e}");
    }

    #[test]
    fn another_encoding_of_a_column_is_cast_to_the_table_type() {
        let times = TimestampMicrosecondArray::from(vec![2, 1]).with_timezone(strata_core::schema::TIMESTAMP_TZ);
        let ids = arrow::array::LargeStringArray::from(vec!["x", "y"]);
        let large = Arc::new(Schema::new(vec![
            Field::new("ts", strata_core::schema::timestamp_type(), false),
            Field::new("id", DataType::LargeUtf8, true),
        ]));
        let odd = RecordBatch::try_new(large, vec![Arc::new(times), Arc::new(ids)]).unwrap();
        let sorted = sorted_batch(&schema(), 0, &[odd]).unwrap();
        assert_eq!(
            rows_of(&sorted),
            vec![(1, Some("y".to_string())), (2, Some("x".to_string()))]
        );
    }
}
