//! `strata import`: a backfill of history from JSON-lines or Parquet files into a source's raw
//! table, exactly once and resumable.
//!
//! ```text
//!  reader thread: lines -> JsonDecoder -> chunk (sorted by event time) + rejects
//!        │ bounded channel (2 chunks)
//!        ▼
//!  writer: rejected table commit (txn import:<file> = next line)
//!          raw table commit      (txn import:<file> = next line)
//! ```
//!
//! Each commit records, as a Delta `txn` action, how many lines of the file it has consumed.
//! Importing the same file again resumes after the last committed line (nothing is written
//! twice); a crash in the middle of an import loses nothing either.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array as _, ArrayRef, AsArray as _, RecordBatch, new_null_array};
use arrow::compute::{SortOptions, cast_with_options, sort_to_indices, take_record_batch};
use arrow::datatypes::DataType;
use arrow::util::display::FormatOptions;
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use strata_core::decode::{JsonDecoder, Origin, Rejects};
use strata_core::lake::{Lake, raw_writer_properties, writer_properties};
use strata_core::schema::{SourceSchema, rejected_schema};
use strata_core::{Error, Result};
use tokio::sync::mpsc;

/// Rows per raw-table commit.
pub const DEFAULT_CHUNK_ROWS: usize = 1_000_000;
const CHUNK_BYTES: usize = 256 << 20;

/// Progress of an import, reported after each commit.
#[derive(Debug, Clone, Default)]
pub struct ImportProgress {
    pub file: String,
    /// Bytes of the file read so far, and its size.
    pub bytes_read: u64,
    pub file_bytes: u64,
    pub imported: u64,
    pub rejected: u64,
}

/// What an import did, per file and in total.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub files: usize,
    /// Events written to the raw table.
    pub imported: u64,
    /// Records written to the rejected table.
    pub rejected: u64,
    /// Blank lines, skipped.
    pub blank: u64,
    /// Lines skipped because an earlier import of the same file committed them.
    pub already_imported: u64,
    pub commits: u64,
}

/// A decoded chunk on its way to the lake.
struct Chunk {
    raw: Option<RecordBatch>,
    rejects: Option<RecordBatch>,
    /// Lines (or rows) of the file consumed up to the end of this chunk.
    next_line: u64,
    bytes_read: u64,
    blank: u64,
}

/// Imports `files` into the raw table of `source`.
pub async fn import(
    lake: &Lake,
    source: &Arc<SourceSchema>,
    files: &[PathBuf],
    chunk_rows: usize,
    progress: &(dyn Fn(&ImportProgress) + Sync),
) -> Result<ImportReport> {
    let mut raw = lake
        .open_or_create(
            &lake.raw_url(&source.name),
            &source.raw,
            &[strata_core::schema::EVENT_DATE],
            &format!("raw_{}", source.name),
        )
        .await?;
    check_schema(&raw, &source.raw, &format!("raw table of source `{}`", source.name))?;
    let mut rejected = lake
        .open_or_create(
            &lake.rejected_url(&source.name),
            &rejected_schema(),
            &[],
            &format!("rejected_{}", source.name),
        )
        .await?;
    let mut report = ImportReport::default();
    for file in files {
        import_file(&mut raw, &mut rejected, source, file, chunk_rows, progress, &mut report).await?;
        report.files += 1;
    }
    Ok(report)
}

/// The table's schema must be the one the config describes: a changed schema would mix
/// columns silently.
pub fn check_schema(table: &DeltaTable, expected: &arrow::datatypes::SchemaRef, what: &str) -> Result<()> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoArrow as _;
    let snapshot = table.snapshot().map_err(|e| Error::lake(what.to_string(), e))?;
    let actual: arrow::datatypes::Schema = (&snapshot
        .metadata()
        .parse_schema()
        .map_err(|e| Error::lake(what.to_string(), e))?)
        .try_into_arrow()
        .map_err(|e| Error::lake(what.to_string(), e))?;
    let describe = |s: &arrow::datatypes::Schema| {
        s.fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let same = actual.fields().len() == expected.fields().len()
        && actual
            .fields()
            .iter()
            .zip(expected.fields())
            .all(|(a, e)| a.name() == e.name() && a.data_type() == e.data_type());
    if same {
        Ok(())
    } else {
        Err(Error::Input(format!(
            "the {what} in the lake has columns ({}) but the config describes ({}); \
             Strata does not change the schema of existing tables: use a new source name or a new lake",
            describe(&actual),
            describe(expected)
        )))
    }
}

/// The id under which a file's progress is recorded: its path, size and modification time,
/// so that a file rewritten in place is imported anew.
fn file_app_id(path: &Path) -> Result<(String, u64)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(Error::Input(format!("{} is not a file", path.display())));
    }
    let canonical = path
        .canonicalize()
        .map_err(|e| Error::io(format!("cannot resolve {}", path.display()), e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Ok((
        format!("import:{}@{}:{mtime}", canonical.display(), meta.len()),
        meta.len(),
    ))
}

async fn txn_version(table: &DeltaTable, app_id: &str) -> Result<u64> {
    let snapshot = table.snapshot().map_err(|e| Error::lake("read table state", e))?;
    let v = snapshot
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(|e| Error::lake("read import progress", e))?;
    Ok(v.map_or(0, |v| v.max(0) as u64))
}

async fn import_file(
    raw: &mut DeltaTable,
    rejected: &mut DeltaTable,
    source: &Arc<SourceSchema>,
    file: &Path,
    chunk_rows: usize,
    progress: &(dyn Fn(&ImportProgress) + Sync),
    report: &mut ImportReport,
) -> Result<()> {
    let (app_id, file_bytes) = file_app_id(file)?;
    let raw_done = txn_version(raw, &app_id).await?;
    let rejects_done = txn_version(rejected, &app_id).await?;
    report.already_imported += raw_done;
    let display = file.display().to_string();
    let parquet = is_parquet(file)?;

    let (tx, mut rx) = mpsc::channel::<Result<Chunk>>(2);
    let reader = {
        let source = source.clone();
        let file = file.to_path_buf();
        let display = display.clone();
        std::thread::Builder::new()
            .name("strata-import".into())
            .spawn(move || {
                let result = if parquet {
                    read_parquet(&file, &display, &source, raw_done, rejects_done, chunk_rows, &tx)
                } else {
                    read_json_lines(&file, &display, &source, raw_done, rejects_done, chunk_rows, &tx)
                };
                if let Err(e) = result {
                    let _ = tx.blocking_send(Err(e));
                }
            })
            .map_err(|e| Error::io("start the import reader", e))?
    };

    let started = Instant::now();
    let mut state = ImportProgress {
        file: display.clone(),
        file_bytes,
        ..Default::default()
    };
    let raw_properties = raw_writer_properties(source);
    let mut result = Ok(());
    while let Some(chunk) = rx.recv().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        report.blank += chunk.blank;
        let txn = Transaction::new(&app_id, chunk.next_line as i64);
        let info = serde_json::json!({ "import": { "file": display, "next_line": chunk.next_line } });
        // Rejects first: if the raw commit then fails, the resumed import skips the rejects
        // already recorded (their lines are below the rejected table's txn version).
        if let Some(rejects) = chunk.rejects {
            report.rejected += rejects.num_rows() as u64;
            state.rejected += rejects.num_rows() as u64;
            append(rejected, rejects, txn.clone(), info.clone(), writer_properties()).await?;
            report.commits += 1;
        }
        if let Some(batch) = chunk.raw {
            report.imported += batch.num_rows() as u64;
            state.imported += batch.num_rows() as u64;
            append(raw, batch, txn, info, raw_properties.clone()).await?;
            report.commits += 1;
        }
        state.bytes_read = chunk.bytes_read;
        progress(&state);
    }
    drop(rx);
    reader
        .join()
        .map_err(|_| Error::Internal(format!("the import reader of {display} panicked")))?;
    tracing::debug!(file = %state.file, elapsed = ?started.elapsed(), "imported");
    result
}

/// Appends one batch to a table in one commit carrying `txn`.
async fn append(
    table: &mut DeltaTable,
    batch: RecordBatch,
    txn: Transaction,
    info: serde_json::Value,
    properties: WriterProperties,
) -> Result<()> {
    strata_core::lake::append_with(table, vec![batch], vec![txn], info, properties)
        .await
        .map(|_| ())
}

fn is_parquet(file: &Path) -> Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut f = File::open(file).map_err(|e| Error::io(format!("cannot open {}", file.display()), e))?;
    let n = f
        .read(&mut magic)
        .map_err(|e| Error::io(format!("cannot read {}", file.display()), e))?;
    Ok(n == 4 && &magic == b"PAR1")
}

/// Sorts a raw batch by event time: compaction then only merges sorted runs.
fn sort_by_event_time(batch: RecordBatch, source: &SourceSchema) -> Result<RecordBatch> {
    let indices = sort_to_indices(batch.column(source.event_time), Some(SortOptions::default()), None)?;
    Ok(take_record_batch(&batch, &indices)?)
}

#[allow(clippy::too_many_arguments)]
fn read_json_lines(
    file: &Path,
    display: &str,
    source: &Arc<SourceSchema>,
    raw_done: u64,
    rejects_done: u64,
    chunk_rows: usize,
    tx: &mpsc::Sender<Result<Chunk>>,
) -> Result<()> {
    let f = File::open(file).map_err(|e| Error::io(format!("cannot open {display}"), e))?;
    let mut reader = BufReader::with_capacity(1 << 20, f);
    let mut decoder = JsonDecoder::new(source.clone());
    let mut rejects = Rejects::new(&source.name, chrono::Utc::now().timestamp_micros());
    let mut line = Vec::with_capacity(4096);
    let (mut n, mut bytes_read, mut blank) = (0u64, 0u64, 0u64);
    let flush = |decoder: &mut JsonDecoder, rejects: &mut Rejects, n: u64, bytes_read: u64, blank: &mut u64| -> bool {
        let raw = (decoder.rows() > 0).then(|| sort_by_event_time(decoder.finish(), source));
        let raw = match raw.transpose() {
            Ok(r) => r,
            Err(e) => return tx.blocking_send(Err(e)).is_ok(),
        };
        let chunk = Chunk {
            raw,
            rejects: (!rejects.is_empty()).then(|| rejects.finish()),
            next_line: n,
            bytes_read,
            blank: std::mem::take(blank),
        };
        tx.blocking_send(Ok(chunk)).is_ok()
    };
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(format!("cannot read {display} after line {n}"), e))?;
        if read == 0 {
            break;
        }
        n += 1;
        bytes_read += read as u64;
        if n <= raw_done {
            continue; // committed by an earlier import of this file
        }
        let mut record = line.as_slice();
        while let [rest @ .., b'\n' | b'\r'] = record {
            record = rest;
        }
        if n == 1 && record.starts_with(&[0xEF, 0xBB, 0xBF]) {
            record = &record[3..]; // a UTF-8 byte order mark
        }
        if record.iter().all(u8::is_ascii_whitespace) {
            blank += 1;
            continue;
        }
        if let Err(reason) = decoder.decode(record, None)
            && n > rejects_done
        {
            rejects.push(Origin::Line { file: display, line: n }, record, &reason);
        }
        if (decoder.rows() >= chunk_rows || decoder.buffered_bytes() >= CHUNK_BYTES)
            && !flush(&mut decoder, &mut rejects, n, bytes_read, &mut blank)
        {
            return Ok(()); // the writer stopped
        }
    }
    if n > raw_done && (decoder.rows() > 0 || !rejects.is_empty() || blank > 0) {
        flush(&mut decoder, &mut rejects, n, bytes_read, &mut blank);
    }
    Ok(())
}

/// Reads a Parquet file's columns by name into the source's schema. A row without an event
/// time is rejected (its raw form is the row as JSON).
#[allow(clippy::too_many_arguments)]
fn read_parquet(
    file: &Path,
    display: &str,
    source: &Arc<SourceSchema>,
    raw_done: u64,
    rejects_done: u64,
    chunk_rows: usize,
    tx: &mpsc::Sender<Result<Chunk>>,
) -> Result<()> {
    let f = File::open(file).map_err(|e| Error::io(format!("cannot open {display}"), e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| Error::Input(format!("{display} is not a readable Parquet file: {e}")))?;
    let file_schema = builder.schema().clone();
    let total_rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let file_bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let event_time = source.event_time_column();
    if file_schema.field_with_name(event_time).is_err() {
        return Err(Error::Input(format!(
            "{display} has no column `{event_time}` (the event-time column of source `{}`)",
            source.name
        )));
    }
    let reader = builder
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| Error::Input(format!("{display}: {e}")))?;
    let mut row = 0u64;
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0usize;
    let mut rejects = Rejects::new(&source.name, chrono::Utc::now().timestamp_micros());
    for batch in reader {
        let batch = batch.map_err(|e| Error::Input(format!("{display}: cannot read row {}: {e}", row + 1)))?;
        let first_row = row;
        row += batch.num_rows() as u64;
        if row <= raw_done {
            continue;
        }
        let columns = project(&batch, source, display)?;
        // Rows of this batch already committed by an earlier import are skipped too.
        let skip = raw_done.saturating_sub(first_row) as usize;
        let rows = Rows {
            file: display,
            first: first_row,
            skip,
            rejects_done,
        };
        let keep = rows.keep(&batch, &columns, source, &mut rejects)?;
        let kept_columns = columns
            .iter()
            .map(|c| arrow::compute::filter(c, &keep))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let kept = strata_core::schema::complete_raw_batch(source, kept_columns)?;
        pending_rows += kept.num_rows();
        pending.push(kept);
        if pending_rows >= chunk_rows {
            let chunk = parquet_chunk(
                &mut pending,
                &mut rejects,
                source,
                row,
                file_bytes * row / total_rows.max(1),
            )?;
            pending_rows = 0;
            if tx.blocking_send(Ok(chunk)).is_err() {
                return Ok(());
            }
        }
    }
    if row > raw_done && (pending_rows > 0 || !rejects.is_empty()) {
        let chunk = parquet_chunk(&mut pending, &mut rejects, source, row, file_bytes)?;
        let _ = tx.blocking_send(Ok(chunk));
    }
    Ok(())
}

/// The source's columns of a Parquet batch, cast to the source's types; absent ones are NULL.
fn project(batch: &RecordBatch, source: &SourceSchema, display: &str) -> Result<Vec<ArrayRef>> {
    let cast_options = arrow::compute::CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(source.raw.fields().len());
    for (i, (name, _)) in source.columns.iter().enumerate() {
        let target: &DataType = source.raw.field(i).data_type();
        match batch.column_by_name(name) {
            Some(c) => columns.push(cast_with_options(c, target, &cast_options).map_err(|e| {
                Error::Input(format!(
                    "{display}: column `{name}` ({}) cannot be read as {target}: {e}",
                    c.data_type()
                ))
            })?),
            None => columns.push(new_null_array(target, batch.num_rows())),
        }
    }
    Ok(columns)
}

/// Where a Parquet batch's rows are in their file, and what an earlier import of it did.
struct Rows<'a> {
    file: &'a str,
    /// Rows of the file before this batch.
    first: u64,
    /// Rows at the start of this batch an earlier import committed.
    skip: usize,
    /// Rows of the file an earlier import rejected.
    rejects_done: u64,
}

impl Rows<'_> {
    /// The rows to keep: not committed before, with an event time the lake can hold. The
    /// others, unless rejected before, go to `rejects` with the reason.
    fn keep(
        &self,
        batch: &RecordBatch,
        columns: &[ArrayRef],
        source: &SourceSchema,
        rejects: &mut Rejects,
    ) -> Result<arrow::array::BooleanArray> {
        let event_time = source.event_time_column();
        let times = columns[source.event_time].as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let mut keep = Vec::with_capacity(batch.num_rows());
        for r in 0..batch.num_rows() {
            let unusable = if times.is_null(r) {
                Some(format!("no event time: column `{event_time}` is null"))
            } else {
                strata_core::schema::check_event_time(times.value(r))
                    .err()
                    .map(|reason| format!("column `{event_time}`: {reason}"))
            };
            let line = self.first + r as u64 + 1;
            if let Some(reason) = &unusable
                && r >= self.skip
                && line > self.rejects_done
            {
                let origin = Origin::Row {
                    file: self.file,
                    row: line,
                };
                rejects.push(origin, &row_as_json(batch, r)?, reason);
            }
            keep.push(Some(r >= self.skip && unusable.is_none()));
        }
        Ok(keep.into_iter().collect())
    }
}

fn parquet_chunk(
    pending: &mut Vec<RecordBatch>,
    rejects: &mut Rejects,
    source: &SourceSchema,
    row: u64,
    bytes_read: u64,
) -> Result<Chunk> {
    let batches = std::mem::take(pending);
    let raw = if batches.iter().any(|b| b.num_rows() > 0) {
        let merged = arrow::compute::concat_batches(&source.raw, &batches)?;
        Some(sort_by_event_time(merged, source)?)
    } else {
        None
    };
    Ok(Chunk {
        raw,
        rejects: (!rejects.is_empty()).then(|| rejects.finish()),
        next_line: row,
        bytes_read,
        blank: 0,
    })
}

fn row_as_json(batch: &RecordBatch, row: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
    writer.write(&batch.slice(row, 1))?;
    writer.finish()?;
    drop(writer);
    while out.last() == Some(&b'\n') {
        out.pop();
    }
    Ok(out)
}
