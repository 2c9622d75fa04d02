//! A compacted data file: Parquet whose row groups have their columns encoded on several
//! threads at once, and the Delta add action that records it, with the statistics the Delta
//! writer gives its files.
//!
//! The Delta writer encodes a file's columns one after the other on one core; over one
//! partition, one output file, that was most of a compaction's time.
//!
//! ```text
//!  sorted rows ──► row groups ──► (row group, column) jobs on N threads ──► chunks, in order
//!                                                                          ──► file + stats
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use deltalake::kernel::Add;
use deltalake::protocol::{ColumnCountStat, ColumnValueStat, Stats};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowColumnWriter, compute_leaves};
use parquet::basic::Compression;
use parquet::errors::{ParquetError, Result as ParquetResult};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;
use strata_core::{Error, Result};

/// Which columns of a table's files get statistics: the table's
/// `delta.dataSkippingStatsColumns`, else its first `delta.dataSkippingNumIndexedCols`
/// (default 32, -1 for all), as the Delta writer reads them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StatsColumns {
    All,
    First(usize),
    Named(Vec<String>),
}

const STATS_COLUMNS: &str = "delta.dataSkippingStatsColumns";
const NUM_INDEXED_COLS: &str = "delta.dataSkippingNumIndexedCols";

impl StatsColumns {
    /// From a table's configuration; `table` names it in an error.
    pub(crate) fn of(configuration: &HashMap<String, String>, table: &str) -> Result<Self> {
        if let Some(names) = configuration.get(STATS_COLUMNS) {
            return Ok(Self::Named(
                names
                    .split(',')
                    .map(|n| n.trim().trim_matches('`').to_string())
                    .filter(|n| !n.is_empty())
                    .collect(),
            ));
        }
        match configuration.get(NUM_INDEXED_COLS).map(|n| n.trim().parse::<i64>()) {
            None => Ok(Self::First(32)),
            Some(Ok(-1)) => Ok(Self::All),
            Some(Ok(n)) if n >= 0 => Ok(Self::First(n as usize)),
            Some(_) => Err(Error::Internal(format!(
                "table {table}: `{NUM_INDEXED_COLS}` is {:?}; it must be -1 or a count of columns",
                configuration[NUM_INDEXED_COLS]
            ))),
        }
    }

    fn includes(&self, index: usize, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::First(n) => index < *n,
            Self::Named(names) => names.iter().any(|n| n == name),
        }
    }
}

/// A limit on the encoding jobs running at once, shared by the files encoded at the same
/// time: each file may use every core (the last one still running has them all), and
/// together they run no more jobs than there are slots (each holds a column of a row group).
#[derive(Clone)]
pub(crate) struct Slots(Arc<(Mutex<usize>, Condvar)>);

impl Slots {
    pub(crate) fn new(slots: usize) -> Self {
        Self(Arc::new((Mutex::new(slots.max(1)), Condvar::new())))
    }

    /// Waits for a free slot; it is given back when the guard drops.
    fn take(&self) -> Slot<'_> {
        let (free, freed) = &*self.0;
        let mut free = free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

struct Slot<'a>(&'a Slots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let (free, freed) = &*self.0.0;
        *free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        freed.notify_one();
    }
}

/// A file's rows, row group by row group: how many groups, and one column of one group.
pub(crate) trait RowGroups: Sync {
    fn groups(&self) -> usize;
    /// Column `column` of row group `group`, made when its job runs (so that a gathered
    /// column is encoded while it is in the cache, then dropped).
    fn column(&self, group: usize, column: usize) -> ParquetResult<ArrayRef>;
}

/// The row count of a row group the properties allow (unbounded without one, as for
/// `ArrowWriter`). Row groups are cut by rows only: a byte limit in the properties is not
/// applied.
pub(crate) fn group_rows(properties: &WriterProperties) -> usize {
    properties.max_row_group_row_count().unwrap_or(usize::MAX).max(1)
}

/// The row groups of `rows` (of `schema`) encoded as one Parquet file, each column of each
/// row group made and encoded by whichever of `threads` threads is free, each job in one of
/// the `slots`. The bytes are those
/// `ArrowWriter` writes with the same properties and row groups (the Arrow schema in the
/// footer included). Returns the file and its metadata; `capacity` is room for the file
/// made at once (growing it would copy what it holds).
pub(crate) fn encode(
    schema: &SchemaRef,
    rows: &impl RowGroups,
    properties: WriterProperties,
    threads: usize,
    slots: &Slots,
    capacity: usize,
) -> ParquetResult<(Vec<u8>, ParquetMetaData)> {
    let mut out = Vec::with_capacity(capacity);
    let (mut file, factory) =
        ArrowWriter::try_new(&mut out, schema.clone(), Some(properties))?.into_serialized_writer()?;
    // The Parquet leaf columns of each top-level field, in order.
    let descriptor = file.schema_descr();
    let mut leaves_of = vec![0usize; schema.fields().len()];
    for leaf in 0..descriptor.num_columns() {
        leaves_of[descriptor.get_column_root_idx(leaf)] += 1;
    }
    // Jobs in file order: a row group's columns, then the next row group's.
    let columns = schema.fields().len();
    let mut jobs: Vec<Mutex<Option<Job>>> = Vec::with_capacity(rows.groups() * columns);
    for group in 0..rows.groups() {
        let mut writers = factory.create_column_writers(group)?.into_iter();
        for (column, &leaves) in leaves_of.iter().enumerate() {
            jobs.push(Mutex::new(Some(Job {
                group,
                column,
                writers: writers.by_ref().take(leaves).collect(),
            })));
        }
    }
    let chunks = run_jobs(schema, rows, &jobs, threads, slots)?;
    let mut chunks = chunks.into_iter();
    for _ in 0..rows.groups() {
        let mut row_group = file.next_row_group()?;
        for chunk in chunks.by_ref().take(columns).flatten() {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
    }
    let metadata = file.close()?;
    Ok((out, metadata))
}

/// One column of one row group, and the writers of its Parquet leaf columns.
struct Job {
    group: usize,
    column: usize,
    writers: Vec<ArrowColumnWriter>,
}

impl Job {
    fn encode(self, schema: &SchemaRef, rows: &impl RowGroups) -> ParquetResult<Vec<ArrowColumnChunk>> {
        let field = schema.field(self.column);
        let array = rows.column(self.group, self.column)?;
        let leaves = compute_leaves(field, &array)?;
        drop(array);
        if leaves.len() != self.writers.len() {
            return Err(ParquetError::General(format!(
                "column `{}`: {} Parquet leaves for {} writers",
                field.name(),
                leaves.len(),
                self.writers.len()
            )));
        }
        leaves
            .iter()
            .zip(self.writers)
            .map(|(leaf, mut writer)| {
                writer.write(leaf)?;
                writer.close()
            })
            .collect()
    }
}

/// The jobs' chunks, in the jobs' order, encoded on `threads` threads (this one included),
/// each taking the next job not yet taken. The first failure stops the others at their
/// next job.
fn run_jobs(
    schema: &SchemaRef,
    rows: &impl RowGroups,
    jobs: &[Mutex<Option<Job>>],
    threads: usize,
    slots: &Slots,
) -> ParquetResult<Vec<Vec<ArrowColumnChunk>>> {
    let next = AtomicUsize::new(0);
    let work = || -> ParquetResult<Vec<(usize, Vec<ArrowColumnChunk>)>> {
        let mut done = Vec::new();
        loop {
            let _slot = slots.take();
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = jobs.get(i) else {
                return Ok(done);
            };
            let job = slot
                .lock()
                .map_err(|_| ParquetError::General("a Parquet encoding job was poisoned".into()))?
                .take()
                .ok_or_else(|| ParquetError::General("a Parquet encoding job taken twice".into()))?;
            match job.encode(schema, rows) {
                Ok(chunks) => done.push((i, chunks)),
                Err(e) => {
                    next.store(jobs.len(), Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    };
    let threads = threads.clamp(1, jobs.len().max(1));
    let mut done = std::thread::scope(|scope| {
        let others: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let mut all = work();
        // Every thread joined, whatever the others returned.
        for other in others {
            let theirs = other
                .join()
                .unwrap_or_else(|_| Err(ParquetError::General("a Parquet encoding thread panicked".into())));
            match (&mut all, theirs) {
                (Ok(all), Ok(theirs)) => all.extend(theirs),
                (Ok(_), Err(e)) => all = Err(e),
                (Err(_), _) => {}
            }
        }
        all
    })?;
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, chunks)| chunks).collect())
}

/// The add action of a file written at `path` (relative to the table root) in the partition
/// `partition` (column and value as in the path): its size, and statistics from its
/// metadata for the columns `columns` names. `data_change` is false: a compaction moves
/// rows, it adds none.
pub(crate) fn add_action(
    path: String,
    size: usize,
    partition: (&str, &str),
    schema: &SchemaRef,
    metadata: &ParquetMetaData,
    columns: &StatsColumns,
) -> Result<Add> {
    let stats = serde_json::to_string(&stats(schema, metadata, columns))
        .map_err(|e| Error::Internal(format!("statistics of {path}: {e}")))?;
    Ok(Add {
        path,
        size: size as i64,
        partition_values: [(partition.0.to_string(), Some(partition.1.to_string()))].into(),
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: false,
        stats: Some(stats),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    })
}

/// The file name of a new data file, as the Delta writer names them.
pub(crate) fn file_name(properties: &WriterProperties) -> String {
    let codec = match properties.compression(&ColumnPath::new(Vec::new())) {
        Compression::UNCOMPRESSED => "",
        Compression::SNAPPY => ".snappy",
        Compression::GZIP(_) => ".gz",
        Compression::LZO => ".lzo",
        Compression::BROTLI(_) => ".br",
        Compression::LZ4 => ".lz4",
        Compression::ZSTD(_) => ".zstd",
        Compression::LZ4_RAW => ".lz4raw",
    };
    format!("part-00000-{}-c000{codec}.parquet", uuid::Uuid::new_v4())
}

/// A file's Delta statistics: rows, and per top-level column its null count and, for types
/// with an order Delta readers know, its smallest and largest value, aggregated from the
/// row groups' Parquet statistics. Timestamps are written in milliseconds, as the protocol
/// asks: the minimum rounded down and the maximum rounded up, so both stay bounds (the Delta
/// writer rounds both down, so that its maximum can be below the file's largest value).
pub(crate) fn stats(schema: &SchemaRef, metadata: &ParquetMetaData, columns: &StatsColumns) -> Stats {
    let descriptor = metadata.file_metadata().schema_descr();
    let mut stats = Stats {
        num_records: metadata.file_metadata().num_rows(),
        ..Default::default()
    };
    for (index, field) in schema.fields().iter().enumerate() {
        if !columns.includes(index, field.name()) {
            continue;
        }
        // Only a top-level column that is its own leaf (no nested statistics).
        let Some(leaf) =
            (0..descriptor.num_columns()).find(|&c| descriptor.column(c).path().parts() == [field.name().as_str()])
        else {
            continue;
        };
        let mut nulls = Some(0u64);
        let mut range: Option<(Bound, Bound)> = None;
        let mut every_group = true;
        for group in metadata.row_groups() {
            let statistics = group.column(leaf).statistics();
            nulls = nulls
                .zip(statistics.and_then(Statistics::null_count_opt))
                .map(|(a, b)| a + b);
            match statistics.and_then(bounds) {
                Some((lo, hi)) => {
                    range = Some(match range {
                        None => (lo, hi),
                        Some((l, h)) => (if lo < l { lo } else { l }, if hi > h { hi } else { h }),
                    })
                }
                // A group of nulls only has no bounds, and needs none.
                None if group.column(leaf).num_values() == nulls_in(statistics) => {}
                None => every_group = false,
            }
        }
        if let Some(nulls) = nulls {
            stats
                .null_count
                .insert(field.name().clone(), ColumnCountStat::Value(nulls as i64));
        }
        if let (Some((lo, hi)), true) = (range, every_group)
            && let (Some(lo), Some(hi)) = (lo.json(field.data_type(), false), hi.json(field.data_type(), true))
        {
            stats
                .min_values
                .insert(field.name().clone(), ColumnValueStat::Value(lo));
            stats
                .max_values
                .insert(field.name().clone(), ColumnValueStat::Value(hi));
        }
    }
    stats
}

fn nulls_in(statistics: Option<&Statistics>) -> i64 {
    statistics.and_then(Statistics::null_count_opt).map_or(-1, |n| n as i64)
}

/// A bound of a column chunk, in its physical type; compared within one column only.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Bound {
    Bool(bool),
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
}

/// A chunk's smallest and largest value, when its statistics have both.
fn bounds(statistics: &Statistics) -> Option<(Bound, Bound)> {
    Some(match statistics {
        Statistics::Boolean(s) => (Bound::Bool(*s.min_opt()?), Bound::Bool(*s.max_opt()?)),
        Statistics::Int32(s) => (Bound::Int(*s.min_opt()? as i64), Bound::Int(*s.max_opt()? as i64)),
        Statistics::Int64(s) => (Bound::Int(*s.min_opt()?), Bound::Int(*s.max_opt()?)),
        Statistics::Float(s) => (Bound::Float(*s.min_opt()? as f64), Bound::Float(*s.max_opt()? as f64)),
        Statistics::Double(s) => (Bound::Float(*s.min_opt()?), Bound::Float(*s.max_opt()?)),
        Statistics::ByteArray(s) => (
            Bound::Bytes(s.min_bytes_opt()?.to_vec()),
            Bound::Bytes(s.max_bytes_opt()?.to_vec()),
        ),
        Statistics::Int96(_) | Statistics::FixedLenByteArray(_) => return None,
    })
}

impl Bound {
    /// The bound as Delta statistics write a value of `data_type`; `upper` for a maximum.
    /// None for a type without statistics here (binary, decimal, unsigned, nested).
    fn json(self, data_type: &DataType, upper: bool) -> Option<serde_json::Value> {
        use serde_json::Value;
        match (self, data_type) {
            (Bound::Bool(b), DataType::Boolean) => Some(Value::from(b)),
            (Bound::Int(i), DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64) => {
                Some(Value::from(i))
            }
            (Bound::Int(days), DataType::Date32) => {
                let date =
                    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_signed(chrono::Duration::days(days))?;
                Some(Value::from(date.format("%Y-%m-%d").to_string()))
            }
            (Bound::Int(t), DataType::Timestamp(unit, tz)) => {
                let per_milli = match unit {
                    TimeUnit::Second => return timestamp(t.checked_mul(1000)?, tz.is_some()),
                    TimeUnit::Millisecond => 1,
                    TimeUnit::Microsecond => 1_000,
                    TimeUnit::Nanosecond => 1_000_000,
                };
                let millis = t.div_euclid(per_milli) + i64::from(upper && t.rem_euclid(per_milli) != 0);
                timestamp(millis, tz.is_some())
            }
            (Bound::Float(f), DataType::Float32 | DataType::Float64) => {
                serde_json::Number::from_f64(f).map(Value::Number)
            }
            (Bound::Bytes(b), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
                String::from_utf8(b).ok().map(Value::from)
            }
            _ => None,
        }
    }
}

/// A timestamp statistic: UTC with a `Z`, or without a time zone as a local date and time;
/// milliseconds only when there are some.
fn timestamp(millis: i64, utc: bool) -> Option<serde_json::Value> {
    let t = chrono::DateTime::from_timestamp_millis(millis)?.naive_utc();
    let format = match (utc, millis.rem_euclid(1000) == 0) {
        (true, true) => "%Y-%m-%dT%H:%M:%SZ",
        (true, false) => "%Y-%m-%dT%H:%M:%S%.3fZ",
        (false, true) => "%Y-%m-%d %H:%M:%S",
        (false, false) => "%Y-%m-%d %H:%M:%S%.3f",
    };
    Some(serde_json::Value::from(t.format(format).to_string()))
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        Array as _, BinaryArray, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
        StringArray, TimestampMicrosecondArray,
    };
    use std::sync::Arc;

    use arrow::datatypes::{Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use strata_core::config::LakeConfig;
    use strata_core::lake::{Lake, append, writer_properties};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("ts", strata_core::schema::timestamp_type(), false),
            Field::new("user", DataType::Utf8, true),
            Field::new("ms", DataType::Int64, true),
            Field::new("n", DataType::Int32, false),
            Field::new("price", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("day", DataType::Date32, false),
            Field::new("raw", DataType::Binary, true),
        ]))
    }

    /// `rows` rows: times `step` microseconds apart, every ninth user null and every
    /// thousandth one longer than Parquet keeps in its statistics, a column of nulls only
    /// in the first rows.
    fn batch(rows: usize, step: i64) -> RecordBatch {
        let start = 1_763_600_000_000_000i64; // 2025-11-20T00:53:20Z
        let users: Vec<Option<String>> = (0..rows)
            .map(|i| match i {
                _ if i % 9 == 4 => None,
                _ if i % 1000 == 7 => Some(format!("zz{}", "y".repeat(100 + i % 3))),
                _ => Some(format!("u{:04}", i % 700)),
            })
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampMicrosecondArray::from_iter_values((0..rows).map(|i| start + i as i64 * step))
                    .with_timezone(strata_core::schema::TIMESTAMP_TZ),
            ),
            Arc::new(StringArray::from(users)),
            Arc::new(Int64Array::from_iter(
                (0..rows).map(|i| (i >= 1500).then_some((i as i64 * 7919) % 1000 - 500)),
            )),
            Arc::new(Int32Array::from_iter_values((0..rows).map(|i| i as i32 % 97))),
            Arc::new(Float64Array::from_iter(
                (0..rows).map(|i| (i % 5 != 0).then_some(i as f64 / 8.0 - 3.0)),
            )),
            Arc::new(BooleanArray::from_iter(
                (0..rows).map(|i| (i % 4 != 1).then_some(i % 3 == 0)),
            )),
            Arc::new(Date32Array::from_iter_values(
                (0..rows).map(|i| 20_400 + (i / 4000) as i32),
            )),
            Arc::new(BinaryArray::from_iter(
                (0..rows).map(|i| (i % 6 != 0).then(|| vec![(i % 251) as u8; 3])),
            )),
        ];
        RecordBatch::try_new(schema(), columns).unwrap()
    }

    /// Batches as row groups of at most `rows` rows each, none spanning two batches.
    struct Batches(Vec<RecordBatch>);

    impl Batches {
        fn new(batches: &[RecordBatch], rows: usize) -> Self {
            Self(
                batches
                    .iter()
                    .flat_map(|b| {
                        (0..b.num_rows())
                            .step_by(rows)
                            .map(move |start| b.slice(start, rows.min(b.num_rows() - start)))
                    })
                    .collect(),
            )
        }
    }

    impl RowGroups for Batches {
        fn groups(&self) -> usize {
            self.0.len()
        }

        fn column(&self, group: usize, column: usize) -> ParquetResult<ArrayRef> {
            Ok(self.0[group].column(column).clone())
        }
    }

    /// `batches` encoded in row groups of the test properties' 1,000 rows.
    fn encoded(batches: &[RecordBatch], threads: usize, capacity: usize) -> (Vec<u8>, ParquetMetaData) {
        let rows = Batches::new(batches, group_rows(&properties()));
        encode(&schema(), &rows, properties(), threads, &Slots::new(threads), capacity).unwrap()
    }

    fn properties() -> WriterProperties {
        writer_properties()
            .into_builder()
            .set_max_row_group_row_count(Some(1000))
            .build()
    }

    fn read(bytes: Vec<u8>) -> Vec<RecordBatch> {
        ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    }

    #[test]
    fn a_file_encoded_on_threads_is_the_file_the_arrow_writer_writes() {
        let rows = batch(10_000, 1000);
        let (bytes, metadata) = encoded(std::slice::from_ref(&rows), 3, 0);
        assert_eq!(metadata.num_row_groups(), 10);
        let mut writer = ArrowWriter::try_new(Vec::new(), schema(), Some(properties())).unwrap();
        writer.write(&rows).unwrap();
        let expected = writer.into_inner().unwrap();
        assert!(
            bytes == expected,
            "{} bytes, the Arrow writer's {}",
            bytes.len(),
            expected.len()
        );

        // Several batches: row groups never span two (4,500 rows make five).
        let parts = [rows.slice(0, 4500), rows.slice(4500, 3000), rows.slice(7500, 2500)];
        let (bytes, metadata) = encoded(&parts, 2, 0);
        assert_eq!(metadata.num_row_groups(), 5 + 3 + 3);
        let back = read(bytes);
        assert_eq!(back[0].schema(), schema(), "the Arrow schema is kept in the footer");
        assert_eq!(arrow::compute::concat_batches(&schema(), &back).unwrap(), rows);

        // No rows: a file without row groups.
        let (bytes, metadata) = encoded(&[rows.slice(0, 0)], 2, 1 << 20);
        assert_eq!((metadata.num_row_groups(), metadata.file_metadata().num_rows()), (0, 0));
        assert!(read(bytes).is_empty());
    }

    /// The add action's statistics are those of the Delta writer for the same rows, but for
    /// the binary column's null count, which the Delta writer leaves out.
    #[tokio::test]
    async fn statistics_are_the_delta_writers_and_timestamps_stay_bounds() {
        let dir = std::env::temp_dir().join(format!("strata-data-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let lake = Lake::new(&LakeConfig::new(dir.to_str().unwrap(), &dir).unwrap()).unwrap();
        let mut table_fields = schema().fields().to_vec();
        table_fields.push(Arc::new(Field::new("event_date", DataType::Date32, false)));
        let table_schema = Arc::new(Schema::new(table_fields));
        let mut table = lake
            .open_or_create(&lake.raw_url("t"), &table_schema, &["event_date"], "t")
            .await
            .unwrap();
        let rows = batch(10_000, 1000);
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(Date32Array::from(vec![20_412; rows.num_rows()])));
        let with_date = RecordBatch::try_new(table_schema, columns).unwrap();
        append(&mut table, vec![with_date], vec![], serde_json::json!({}))
            .await
            .unwrap();
        let log = std::fs::read_to_string(dir.join("raw/t/_delta_log/00000000000000000001.json")).unwrap();
        let delta: serde_json::Value = log
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find_map(|a| Some(serde_json::from_str(a.get("add")?.get("stats")?.as_str()?).unwrap()))
            .unwrap();

        let (bytes, metadata) = encoded(std::slice::from_ref(&rows), 2, 0);
        let add = add_action(
            "event_date=2025-11-20/f.parquet".into(),
            bytes.len(),
            ("event_date", "2025-11-20"),
            &schema(),
            &metadata,
            &StatsColumns::First(32),
        )
        .unwrap();
        assert_eq!((add.size, add.data_change), (bytes.len() as i64, false));
        assert_eq!(
            add.partition_values,
            [("event_date".to_string(), Some("2025-11-20".to_string()))].into()
        );
        let mut ours: serde_json::Value = serde_json::from_str(add.stats.as_deref().unwrap()).unwrap();
        let raw_nulls = rows.column(7).null_count();
        assert_eq!(ours["nullCount"]["raw"], raw_nulls);
        ours["nullCount"].as_object_mut().unwrap().remove("raw");
        assert_eq!(ours, delta);
        // And from the rows themselves.
        assert_eq!(ours["numRecords"], 10_000);
        assert_eq!(ours["minValues"]["ts"], "2025-11-20T00:53:20Z");
        assert_eq!(ours["maxValues"]["ts"], "2025-11-20T00:53:29.999Z");
        assert_eq!(ours["nullCount"]["user"], rows.column(1).null_count());
        assert_eq!(ours["nullCount"]["ms"], 1500);
        assert_eq!(ours["minValues"]["ms"], -500);
        assert_eq!(ours["maxValues"]["day"], "2025-11-10");

        // Times between milliseconds: the minimum rounded down, the maximum up.
        let rows = batch(3, 1234);
        let (_, metadata) = encoded(&[rows], 2, 0);
        let stats = serde_json::to_value(stats(&schema(), &metadata, &StatsColumns::First(1))).unwrap();
        assert_eq!(stats["minValues"], serde_json::json!({"ts": "2025-11-20T00:53:20Z"}));
        // The last time is 2,468 microseconds after the first.
        assert_eq!(
            stats["maxValues"],
            serde_json::json!({"ts": "2025-11-20T00:53:20.003Z"})
        );
        assert_eq!(stats["nullCount"], serde_json::json!({"ts": 0}));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_columns_with_statistics_come_from_the_table_configuration() {
        let of = |pairs: &[(&str, &str)]| {
            let configuration: HashMap<String, String> =
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            StatsColumns::of(&configuration, "raw.t")
        };
        assert_eq!(of(&[]).unwrap(), StatsColumns::First(32));
        assert_eq!(of(&[(NUM_INDEXED_COLS, "-1")]).unwrap(), StatsColumns::All);
        assert_eq!(of(&[(NUM_INDEXED_COLS, "3")]).unwrap(), StatsColumns::First(3));
        assert_eq!(
            of(&[(NUM_INDEXED_COLS, "3"), (STATS_COLUMNS, "ts, `user`")]).unwrap(),
            StatsColumns::Named(vec!["ts".into(), "user".into()])
        );
        let e = of(&[(NUM_INDEXED_COLS, "-2")]).unwrap_err().to_string();
        assert!(
            e.contains("raw.t") && e.contains(NUM_INDEXED_COLS) && e.contains("-2"),
            "{e}"
        );

        let (_, metadata) = encoded(&[batch(10, 1000)], 2, 0);
        let columns = |c: &StatsColumns| -> Vec<String> {
            let mut names: Vec<String> = stats(&schema(), &metadata, c).null_count.into_keys().collect();
            names.sort();
            names
        };
        assert_eq!(columns(&StatsColumns::First(2)), ["ts", "user"]);
        assert_eq!(columns(&StatsColumns::Named(vec!["ms".into()])), ["ms"]);
        assert_eq!(columns(&StatsColumns::All).len(), 8);
    }
}
