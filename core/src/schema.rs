//! Arrow schemas of a source's raw table and of the rejected table.
//!
//! A raw table holds the source's columns as configured, then where each event came from
//! (`_topic`, `_partition`, `_offset`, null for imported files), then `event_date`, the UTC
//! date of the event time, by which the table is partitioned Hive-style
//! (`event_date=2026-11-21/part-….parquet`).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::config::{ColumnType, SourceConfig, TimeFormat};

/// Column names Strata adds to raw tables or uses in views; sources may not use them.
pub const RESERVED_COLUMNS: &[&str] = &[
    EVENT_DATE,
    TOPIC,
    PARTITION,
    OFFSET,
    crate::view::WINDOW_START,
    crate::view::WINDOW_END,
];

pub const EVENT_DATE: &str = "event_date";
pub const TOPIC: &str = "_topic";
pub const PARTITION: &str = "_partition";
pub const OFFSET: &str = "_offset";

/// Timestamps are microseconds since the epoch, UTC.
pub const TIMESTAMP_TZ: &str = "UTC";

/// The event times the lake can hold: 0001-01-01T00:00:00Z up to 9999-12-31T23:59:59.999999Z,
/// the dates Parquet readers (Spark, DuckDB, Trino) and the Delta writer's `event_date`
/// partition values handle. An event outside is rejected.
pub const EVENT_TIME_RANGE: std::ops::RangeInclusive<i64> = -62_135_596_800_000_000..=253_402_300_799_999_999;

/// Why an event time cannot be stored, if it cannot.
pub fn check_event_time(micros: i64) -> Result<(), String> {
    if EVENT_TIME_RANGE.contains(&micros) {
        return Ok(());
    }
    let shown = chrono::DateTime::from_timestamp_micros(micros)
        .map_or_else(|| format!("{micros} microseconds since the epoch"), |t| t.to_rfc3339());
    Err(format!(
        "event time {shown} is outside the range the lake stores (0001-01-01 to 9999-12-31, UTC)"
    ))
}

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(TIMESTAMP_TZ.into()))
}

pub fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::String => DataType::Utf8,
        ColumnType::Int32 => DataType::Int32,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Timestamp => timestamp_type(),
        ColumnType::Date => DataType::Date32,
    }
}

/// A source as the decoders and the lake see it.
#[derive(Debug, Clone)]
pub struct SourceSchema {
    pub name: String,
    pub columns: Vec<(String, ColumnType)>,
    /// Index of the event-time column in `columns`.
    pub event_time: usize,
    pub time_format: TimeFormat,
    pub max_record_bytes: usize,
    pub topics: Vec<String>,
    /// The raw table's schema: the columns, the origin columns, `event_date`.
    pub raw: SchemaRef,
}

impl SourceSchema {
    pub fn new(config: &SourceConfig) -> Arc<Self> {
        let columns: Vec<(String, ColumnType)> = config.schema.iter().map(|(n, t)| (n.clone(), *t)).collect();
        let event_time = columns
            .iter()
            .position(|(n, _)| *n == config.event_time.column)
            .expect("validated: the event-time column is in the schema");
        let mut fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, (n, t))| Field::new(n, arrow_type(*t), i != event_time))
            .collect();
        fields.push(Field::new(TOPIC, DataType::Utf8, true));
        fields.push(Field::new(PARTITION, DataType::Int32, true));
        fields.push(Field::new(OFFSET, DataType::Int64, true));
        fields.push(Field::new(EVENT_DATE, DataType::Date32, false));
        Arc::new(SourceSchema {
            name: config.name.clone(),
            columns,
            event_time,
            time_format: config.event_time.format.clone(),
            max_record_bytes: config.max_record_bytes,
            topics: config.topics.clone(),
            raw: Arc::new(Schema::new(fields)),
        })
    }

    pub fn event_time_column(&self) -> &str {
        &self.columns[self.event_time].0
    }
}

/// Columns of the rejected table.
pub mod rejected {
    pub const SOURCE: &str = "source";
    pub const FILE: &str = "file";
    pub const LINE: &str = "line";
    pub const TOPIC: &str = "topic";
    pub const PARTITION: &str = "kafka_partition";
    pub const OFFSET: &str = "kafka_offset";
    pub const RAW: &str = "raw";
    pub const REASON: &str = "reason";
    pub const REJECTED_AT: &str = "rejected_at";
}

/// The rejected table: every record that could not be used, with its raw bytes, where it
/// came from (a file and line, or a topic, partition and offset) and why.
pub fn rejected_schema() -> SchemaRef {
    use rejected::*;
    // Built once: the consumer asks for it with each micro-batch that holds a rejected record.
    static SCHEMA: std::sync::LazyLock<SchemaRef> = std::sync::LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new(SOURCE, DataType::Utf8, false),
            Field::new(FILE, DataType::Utf8, true),
            Field::new(LINE, DataType::Int64, true),
            Field::new(TOPIC, DataType::Utf8, true),
            Field::new(PARTITION, DataType::Int32, true),
            Field::new(OFFSET, DataType::Int64, true),
            Field::new(RAW, DataType::Binary, false),
            Field::new(REASON, DataType::Utf8, false),
            Field::new(REJECTED_AT, timestamp_type(), false),
        ]))
    });
    Arc::clone(&SCHEMA)
}

/// Completes the source columns of valid events (no NULL event time) into a raw-table batch:
/// the origin columns are NULL (imported, not from Kafka), `event_date` is derived.
pub fn complete_raw_batch(
    source: &SourceSchema,
    mut columns: Vec<arrow::array::ArrayRef>,
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{AsArray, Date32Array, new_null_array};
    use arrow::datatypes::TimestampMicrosecondType;
    let rows = columns.first().map_or(0, |c| c.len());
    let dates: Date32Array = columns[source.event_time]
        .as_primitive::<TimestampMicrosecondType>()
        .unary(|t| t.div_euclid(MICROS_PER_DAY) as i32);
    columns.push(new_null_array(&DataType::Utf8, rows));
    columns.push(new_null_array(&DataType::Int32, rows));
    columns.push(new_null_array(&DataType::Int64, rows));
    columns.push(Arc::new(dates));
    arrow::array::RecordBatch::try_new(source.raw.clone(), columns)
}

pub const MICROS_PER_DAY: i64 = 86_400_000_000;
