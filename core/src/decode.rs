//! Decoding JSON records (file lines, Kafka messages) into Arrow, row by row, so that one bad
//! record is rejected with a precise reason while the records around it are kept.
//!
//! ```text
//!  bytes ──► serde_json, driven by the source schema ──► column buffers ──► RecordBatch
//!               │ a field of the wrong type, no event time,                (raw table schema)
//!               │ invalid JSON, too large
//!               └──────────────► Err(reason) ──► [`Rejects`] ──► RecordBatch (rejected table)
//! ```
//!
//! Values go straight from the parser into growable column buffers; a record that fails
//! half way is rolled back by truncating them. No allocation per record. A record of the
//! shape producers write (a flat object, no escapes) is read by [`flat`] without serde_json's
//! machinery, into the same visitors; any other goes to serde_json.

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanArray, Date32Array, Float64Array, Int32Array, Int32Builder,
    Int64Array, Int64Builder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};

use crate::config::{ColumnType, TimeFormat};
use crate::schema::{SourceSchema, TIMESTAMP_TZ, rejected_schema};

use crate::schema::MICROS_PER_DAY;

mod flat;

/// Where a record in Kafka came from.
#[derive(Debug, Clone, Copy)]
pub struct KafkaPosition<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// Decodes JSON records of one source into batches of its raw table.
pub struct JsonDecoder {
    schema: Arc<SourceSchema>,
    columns: Vec<ColumnBuf>,
    seen: Vec<bool>,
    /// The column matched by the previous key: JSON producers keep keys in order, so the
    /// next key is usually the next column.
    last_key: usize,
    /// Whether records of the common shape are read by [`flat`] (false only in the tests that
    /// compare it with serde_json).
    flat: bool,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    event_dates: Vec<i32>,
    rows: usize,
    bytes: usize,
}

impl fmt::Debug for JsonDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonDecoder")
            .field("source", &self.schema.name)
            .field("rows", &self.rows)
            .finish()
    }
}

impl JsonDecoder {
    pub fn new(schema: Arc<SourceSchema>) -> Self {
        let columns = schema.columns.iter().map(|(_, t)| ColumnBuf::new(*t)).collect();
        let n = schema.columns.len();
        JsonDecoder {
            schema,
            columns,
            seen: vec![false; n],
            last_key: 0,
            flat: true,
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            event_dates: Vec::new(),
            rows: 0,
            bytes: 0,
        }
    }

    pub fn schema(&self) -> &Arc<SourceSchema> {
        &self.schema
    }

    /// Rows decoded since the last [`finish`](Self::finish).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximate bytes buffered since the last [`finish`](Self::finish).
    pub fn buffered_bytes(&self) -> usize {
        self.bytes
    }

    /// Decodes one record into a row, or says why it cannot be used (nothing is kept then).
    pub fn decode(&mut self, record: &[u8], kafka: Option<KafkaPosition<'_>>) -> Result<(), String> {
        if record.len() > self.schema.max_record_bytes {
            return Err(format!(
                "record too large: {} bytes, more than max_record_bytes = {}",
                record.len(),
                self.schema.max_record_bytes
            ));
        }
        self.seen.fill(false);
        let result = self.decode_row(record);
        if let Err(e) = result {
            self.roll_back();
            return Err(e);
        }
        let micros = self.columns[self.schema.event_time].last_timestamp();
        let Some(micros) = micros else {
            self.roll_back();
            return Err(format!(
                "no event time: field `{}` is missing or null",
                self.schema.event_time_column()
            ));
        };
        if let Err(reason) = crate::schema::check_event_time(micros) {
            self.roll_back();
            return Err(format!("field `{}`: {reason}", self.schema.event_time_column()));
        }
        self.event_dates.push(micros.div_euclid(MICROS_PER_DAY) as i32);
        match kafka {
            Some(k) => {
                self.topic.append_value(k.topic);
                self.partition.append_value(k.partition);
                self.offset.append_value(k.offset);
            }
            None => {
                self.topic.append_null();
                self.partition.append_null();
                self.offset.append_null();
            }
        }
        self.rows += 1;
        self.bytes += record.len();
        Ok(())
    }

    /// Drops what the current record pushed.
    fn roll_back(&mut self) {
        for c in &mut self.columns {
            c.truncate(self.rows);
        }
        self.seen.fill(false);
    }

    fn decode_row(&mut self, record: &[u8]) -> Result<(), String> {
        // One check that the whole record is UTF-8 costs less than serde_json's check of each
        // string it reads from bytes; a record that fails it is parsed from its bytes, which
        // says where (or accepts it as before: an ignored field's string is not checked).
        match std::str::from_utf8(record) {
            Ok(text) if self.flat && flat::decode(self, text).is_some() => {}
            Ok(text) => {
                self.roll_back();
                self.parse(serde_json::Deserializer::from_str(text))?;
            }
            Err(_) => self.parse(serde_json::Deserializer::from_slice(record))?,
        }
        for (i, seen) in self.seen.iter().enumerate() {
            if !seen {
                self.columns[i].push_null();
            }
        }
        Ok(())
    }

    /// The column a key names: usually the one after the previous key's (JSON producers keep
    /// keys in order).
    fn column_of(&self, key: &str) -> Option<usize> {
        let columns = &self.schema.columns;
        if let Some((name, _)) = columns.get(self.last_key)
            && name == key
        {
            return Some(self.last_key);
        }
        columns.iter().position(|(name, _)| name == key)
    }

    /// The visitor of a value of column `i`. A repeated key's earlier value is dropped: the
    /// last value wins, as in most JSON readers.
    fn field(&mut self, i: usize) -> ValueSeed<'_> {
        self.last_key = i + 1;
        if self.seen[i] {
            self.columns[i].pop();
        }
        self.seen[i] = true;
        let (name, ty) = &self.schema.columns[i];
        ValueSeed {
            column: &mut self.columns[i],
            name,
            ty: *ty,
            time_format: &self.schema.time_format,
        }
    }

    /// Parses one JSON object into the column buffers.
    fn parse<'de, R: serde_json::de::Read<'de>>(&mut self, mut de: serde_json::Deserializer<R>) -> Result<(), String> {
        RowSeed { decoder: self }
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| describe_json_error(&e))
    }

    /// The decoded rows as a batch of the raw table's schema; the decoder starts afresh.
    pub fn finish(&mut self) -> RecordBatch {
        let mut arrays: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnBuf::finish).collect();
        arrays.push(Arc::new(self.topic.finish()));
        arrays.push(Arc::new(self.partition.finish()));
        arrays.push(Arc::new(self.offset.finish()));
        arrays.push(Arc::new(Date32Array::from(std::mem::take(&mut self.event_dates))));
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.raw.clone(), arrays).expect("decoder columns match the raw schema")
    }
}

fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    // A record is one line: its position is a column (byte offset), not a line.
    let text = e.to_string();
    let message = text.rsplit_once(" at line ").map_or(text.as_str(), |(m, _)| m);
    let position = format!(" (at byte {})", e.column());
    match e.classify() {
        Category::Syntax | Category::Eof => format!("invalid JSON: {message}{position}"),
        Category::Data => format!("{message}{position}"),
        Category::Io => format!("I/O error: {message}"),
    }
}

struct RowSeed<'d> {
    decoder: &'d mut JsonDecoder,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let d = self.decoder;
        while let Some(index) = map.next_key_seed(KeySeed { decoder: d })? {
            match index {
                Some(i) => map.next_value_seed(d.field(i))?,
                None => map.next_value::<serde::de::IgnoredAny>().map(drop)?,
            }
        }
        Ok(())
    }
}

/// Maps a key to its column without allocating.
struct KeySeed<'s> {
    decoder: &'s JsonDecoder,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.decoder.column_of(key))
    }
}

/// Parses one value straight into its column buffer.
struct ValueSeed<'s> {
    column: &'s mut ColumnBuf,
    name: &'s str,
    ty: ColumnType,
    time_format: &'s TimeFormat,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl ValueSeed<'_> {
    fn wrong<E: serde::de::Error>(&self, got: fmt::Arguments<'_>) -> E {
        let expected = match (self.ty, self.time_format) {
            (ColumnType::Timestamp, TimeFormat::Rfc3339) => "an RFC 3339 timestamp string",
            (ColumnType::Timestamp, TimeFormat::Pattern(_)) => "a timestamp string",
            (ColumnType::Timestamp, _) => "a number (epoch time)",
            (ColumnType::String, _) => "a string",
            (ColumnType::Int32 | ColumnType::Int64, _) => "an integer",
            (ColumnType::Float64, _) => "a number",
            (ColumnType::Boolean, _) => "true or false",
            (ColumnType::Date, _) => "a date string YYYY-MM-DD",
        };
        E::custom(format_args!("field `{}`: expected {expected}, got {got}", self.name))
    }

    fn epoch_factor(&self) -> Option<i64> {
        match self.time_format {
            TimeFormat::EpochSeconds => Some(1_000_000),
            TimeFormat::EpochMillis => Some(1_000),
            TimeFormat::EpochMicros => Some(1),
            _ => None,
        }
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} value for field `{}`", self.ty, self.name)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.column.push_null();
        Ok(())
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        match self.column {
            ColumnBuf::Bool(b) => {
                b.push(v);
                Ok(())
            }
            _ => Err(self.wrong(format_args!("{v}"))),
        }
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        match self.column {
            ColumnBuf::I64(b) => b.push(v),
            ColumnBuf::I32(b) => match i32::try_from(v) {
                Ok(v) => b.push(v),
                Err(_) => {
                    return Err(E::custom(format_args!(
                        "field `{}`: {v} does not fit in int32",
                        self.name
                    )));
                }
            },
            ColumnBuf::F64(b) => b.push(v as f64),
            ColumnBuf::Ts(_) => {
                let factor = self
                    .epoch_factor()
                    .ok_or_else(|| self.wrong(format_args!("the number {v}")))?;
                let micros = v
                    .checked_mul(factor)
                    .ok_or_else(|| E::custom(format_args!("field `{}`: epoch time {v} is out of range", self.name)))?;
                let ColumnBuf::Ts(b) = self.column else { unreachable!() };
                b.push(micros);
            }
            _ => return Err(self.wrong(format_args!("the number {v}"))),
        }
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(E::custom(format_args!("field `{}`: {v} is out of range", self.name))),
        }
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        match self.column {
            ColumnBuf::F64(b) => {
                b.push(v);
                Ok(())
            }
            ColumnBuf::I64(_) | ColumnBuf::I32(_) if v.fract() == 0.0 && v.abs() < 9.0e15 => self.visit_i64(v as i64),
            ColumnBuf::Ts(_) => {
                let factor = self
                    .epoch_factor()
                    .ok_or_else(|| self.wrong(format_args!("the number {v}")))?;
                let micros = (v * factor as f64).round();
                if !micros.is_finite() || micros.abs() > 9.0e18 {
                    return Err(E::custom(format_args!(
                        "field `{}`: epoch time {v} is out of range",
                        self.name
                    )));
                }
                let ColumnBuf::Ts(b) = self.column else { unreachable!() };
                b.push(micros as i64);
                Ok(())
            }
            _ => Err(self.wrong(format_args!("the number {v}"))),
        }
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        match self.column {
            ColumnBuf::Utf8(b) => {
                b.push(v);
                Ok(())
            }
            ColumnBuf::Ts(_) => {
                let micros = match self.time_format {
                    TimeFormat::Rfc3339 => rfc3339_micros(v),
                    TimeFormat::Pattern(p) => parse_with_pattern(v, p),
                    _ => return Err(self.wrong(format_args!("the string {v:?}"))),
                }
                .map_err(|e| {
                    E::custom(format_args!(
                        "field `{}`: {v:?} is not a valid timestamp ({e})",
                        self.name
                    ))
                })?;
                let ColumnBuf::Ts(b) = self.column else { unreachable!() };
                b.push(micros);
                Ok(())
            }
            ColumnBuf::Date(_) => {
                let date = NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|e| {
                    E::custom(format_args!(
                        "field `{}`: {v:?} is not a date YYYY-MM-DD ({e})",
                        self.name
                    ))
                })?;
                let days = date
                    .signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch"))
                    .num_days();
                let ColumnBuf::Date(b) = self.column else {
                    unreachable!()
                };
                b.push(days as i32);
                Ok(())
            }
            _ => Err(self.wrong(format_args!("the string {v:?}"))),
        }
    }
}

/// Microseconds since the epoch of an RFC 3339 time, as chrono reads it (fractions beyond
/// the microsecond dropped). The form producers write, `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, is
/// read here; any other (an offset, a leap second, anything odd) by chrono, which also says
/// what is wrong.
fn rfc3339_micros(v: &str) -> Result<i64, String> {
    match utc_micros(v.as_bytes()) {
        Some(micros) => Ok(micros),
        None => DateTime::parse_from_rfc3339(v)
            .map(|t| t.timestamp_micros())
            .map_err(|e| e.to_string()),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f…]Z` (one to nine fraction digits) as microseconds, if `v` is that
/// and a valid time.
fn utc_micros(v: &[u8]) -> Option<i64> {
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        v.get(range)?
            .iter()
            .try_fold(0i64, |n, &d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
    };
    if v.len() < 20 || v[4] != b'-' || v[7] != b'-' || v[10] != b'T' || v[13] != b':' || v[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut micros = 0;
    let zone = match v[19] {
        b'.' => {
            let fraction = v.len().checked_sub(21).filter(|n| (1..=9).contains(n))?;
            let nanos = digits(20..20 + fraction)? * 10i64.pow(9 - fraction as u32);
            micros = nanos / 1_000;
            20 + fraction
        }
        _ => 19,
    };
    if zone + 1 != v.len() || v[zone] != b'Z' || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month as u32, day as u32)?;
    let days = i64::from(date.num_days_from_ce()) - UNIX_EPOCH_DAYS_FROM_CE;
    Some(((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000 + micros)
}

/// Days from 0001-01-01 (day 1) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;

fn parse_with_pattern(v: &str, pattern: &str) -> Result<i64, String> {
    match NaiveDateTime::parse_from_str(v, pattern) {
        Ok(t) => Ok(t.and_utc().timestamp_micros()),
        // A pattern with only a date part.
        Err(e) => NaiveDate::parse_from_str(v, pattern)
            .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_micros())
            .map_err(|_| e.to_string()),
    }
}

/// A growable column that can drop its last rows: a record that fails half way leaves
/// nothing behind.
enum ColumnBuf {
    Utf8(StrBuf),
    I32(PrimBuf<i32>),
    I64(PrimBuf<i64>),
    F64(PrimBuf<f64>),
    Bool(PrimBuf<bool>),
    Ts(PrimBuf<i64>),
    Date(PrimBuf<i32>),
}

impl ColumnBuf {
    fn new(t: ColumnType) -> Self {
        match t {
            ColumnType::String => ColumnBuf::Utf8(StrBuf::default()),
            ColumnType::Int32 => ColumnBuf::I32(PrimBuf::default()),
            ColumnType::Int64 => ColumnBuf::I64(PrimBuf::default()),
            ColumnType::Float64 => ColumnBuf::F64(PrimBuf::default()),
            ColumnType::Boolean => ColumnBuf::Bool(PrimBuf::default()),
            ColumnType::Timestamp => ColumnBuf::Ts(PrimBuf::default()),
            ColumnType::Date => ColumnBuf::Date(PrimBuf::default()),
        }
    }

    fn push_null(&mut self) {
        match self {
            ColumnBuf::Utf8(b) => b.push_null(),
            ColumnBuf::I32(b) | ColumnBuf::Date(b) => b.push_null(),
            ColumnBuf::I64(b) | ColumnBuf::Ts(b) => b.push_null(),
            ColumnBuf::F64(b) => b.push_null(),
            ColumnBuf::Bool(b) => b.push_null(),
        }
    }

    fn pop(&mut self) {
        let len = self.len();
        self.truncate(len - 1);
    }

    fn len(&self) -> usize {
        match self {
            ColumnBuf::Utf8(b) => b.valid.len(),
            ColumnBuf::I32(b) | ColumnBuf::Date(b) => b.valid.len(),
            ColumnBuf::I64(b) | ColumnBuf::Ts(b) => b.valid.len(),
            ColumnBuf::F64(b) => b.valid.len(),
            ColumnBuf::Bool(b) => b.valid.len(),
        }
    }

    fn truncate(&mut self, len: usize) {
        match self {
            ColumnBuf::Utf8(b) => b.truncate(len),
            ColumnBuf::I32(b) | ColumnBuf::Date(b) => b.truncate(len),
            ColumnBuf::I64(b) | ColumnBuf::Ts(b) => b.truncate(len),
            ColumnBuf::F64(b) => b.truncate(len),
            ColumnBuf::Bool(b) => b.truncate(len),
        }
    }

    fn last_timestamp(&self) -> Option<i64> {
        match self {
            ColumnBuf::Ts(b) if b.valid.last() == Some(&true) => b.values.last().copied(),
            _ => None,
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuf::Utf8(b) => {
                let (offsets, values, nulls) = b.take();
                Arc::new(StringArray::new(
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    Buffer::from_vec(values),
                    nulls,
                ))
            }
            ColumnBuf::I32(b) => {
                let (v, n) = b.take();
                Arc::new(Int32Array::new(v.into(), n))
            }
            ColumnBuf::Date(b) => {
                let (v, n) = b.take();
                Arc::new(Date32Array::new(v.into(), n))
            }
            ColumnBuf::I64(b) => {
                let (v, n) = b.take();
                Arc::new(Int64Array::new(v.into(), n))
            }
            ColumnBuf::Ts(b) => {
                let (v, n) = b.take();
                Arc::new(TimestampMicrosecondArray::new(v.into(), n).with_timezone(TIMESTAMP_TZ))
            }
            ColumnBuf::F64(b) => {
                let (v, n) = b.take();
                Arc::new(Float64Array::new(v.into(), n))
            }
            ColumnBuf::Bool(b) => {
                let (v, n) = b.take();
                Arc::new(BooleanArray::new(v.into_iter().collect(), n))
            }
        }
    }
}

#[derive(Default)]
struct PrimBuf<T> {
    values: Vec<T>,
    valid: Vec<bool>,
}

impl<T: Default + Copy> PrimBuf<T> {
    fn push(&mut self, v: T) {
        self.values.push(v);
        self.valid.push(true);
    }
    fn push_null(&mut self) {
        self.values.push(T::default());
        self.valid.push(false);
    }
    fn truncate(&mut self, len: usize) {
        self.values.truncate(len);
        self.valid.truncate(len);
    }
    fn take(&mut self) -> (Vec<T>, Option<NullBuffer>) {
        let valid = std::mem::take(&mut self.valid);
        (std::mem::take(&mut self.values), nulls(valid))
    }
}

struct StrBuf {
    offsets: Vec<i32>,
    values: Vec<u8>,
    valid: Vec<bool>,
}

impl Default for StrBuf {
    fn default() -> Self {
        StrBuf {
            offsets: vec![0],
            values: Vec::new(),
            valid: Vec::new(),
        }
    }
}

impl StrBuf {
    fn push(&mut self, s: &str) {
        self.values.extend_from_slice(s.as_bytes());
        self.offsets.push(self.values.len() as i32);
        self.valid.push(true);
    }
    fn push_null(&mut self) {
        self.offsets.push(self.values.len() as i32);
        self.valid.push(false);
    }
    fn truncate(&mut self, len: usize) {
        self.offsets.truncate(len + 1);
        self.values.truncate(self.offsets[len] as usize);
        self.valid.truncate(len);
    }
    fn take(&mut self) -> (Vec<i32>, Vec<u8>, Option<NullBuffer>) {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let values = std::mem::take(&mut self.values);
        let valid = std::mem::take(&mut self.valid);
        (offsets, values, nulls(valid))
    }
}

fn nulls(valid: Vec<bool>) -> Option<NullBuffer> {
    if valid.iter().all(|v| *v) {
        None
    } else {
        Some(NullBuffer::from(valid))
    }
}

/// Where a rejected record came from.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// A line of an imported file (1-based).
    Line {
        file: &'a str,
        line: u64,
    },
    Kafka(KafkaPosition<'a>),
    /// A row of an imported Parquet file (1-based).
    Row {
        file: &'a str,
        row: u64,
    },
}

/// Accumulates rejected records into batches of the rejected table.
#[derive(Debug)]
pub struct Rejects {
    source: String,
    rejected_at: i64,
    source_col: StringBuilder,
    file: StringBuilder,
    line: Int64Builder,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    raw: BinaryBuilder,
    reason: StringBuilder,
    at: TimestampMicrosecondBuilder,
}

impl Rejects {
    /// `rejected_at` (micros since the epoch) is stamped on every record of this batch.
    pub fn new(source: &str, rejected_at: i64) -> Self {
        Rejects {
            source: source.to_string(),
            rejected_at,
            source_col: StringBuilder::new(),
            file: StringBuilder::new(),
            line: Int64Builder::new(),
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            raw: BinaryBuilder::new(),
            reason: StringBuilder::new(),
            at: TimestampMicrosecondBuilder::new().with_timezone(TIMESTAMP_TZ),
        }
    }

    pub fn len(&self) -> usize {
        self.reason.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, origin: Origin<'_>, raw: &[u8], reason: &str) {
        self.source_col.append_value(&self.source);
        match origin {
            Origin::Line { file, line } | Origin::Row { file, row: line } => {
                self.file.append_value(file);
                self.line.append_value(line as i64);
                self.topic.append_null();
                self.partition.append_null();
                self.offset.append_null();
            }
            Origin::Kafka(k) => {
                self.file.append_null();
                self.line.append_null();
                self.topic.append_value(k.topic);
                self.partition.append_value(k.partition);
                self.offset.append_value(k.offset);
            }
        }
        self.raw.append_value(raw);
        self.reason.append_value(reason);
        self.at.append_value(self.rejected_at);
    }

    pub fn finish(&mut self) -> RecordBatch {
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(self.source_col.finish()),
            Arc::new(self.file.finish()),
            Arc::new(self.line.finish()),
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.raw.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.at.finish()),
        ];
        RecordBatch::try_new(rejected_schema(), arrays).expect("rejects match the rejected schema")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use arrow::util::pretty::pretty_format_batches;

    use super::*;
    use crate::config::Config;

    fn source(time_format: &str) -> Arc<SourceSchema> {
        let text = format!(
            r#"
[lake]
url = "file:///tmp/x"
[[sources]]
name = "clicks"
event_time = {{ column = "ts", format = "{time_format}" }}
max_record_bytes = 200
[sources.schema]
ts = "timestamp"
user = "string"
n = "int64"
small = "int32"
amount = "float64"
ok = "boolean"
day = "date"
"#
        );
        let c = Config::parse(&text, Path::new("t.toml"), &BTreeMap::new()).unwrap();
        SourceSchema::new(&c.sources[0])
    }

    #[test]
    fn good_records_become_rows_and_bad_ones_say_why() {
        let mut d = JsonDecoder::new(source("rfc3339"));
        let cases: &[(&str, Option<&str>)] = &[
            (
                r#"{"ts":"2026-11-21T10:00:00Z","user":"a","n":1,"amount":2.5,"ok":true,"day":"2026-11-20","extra":[1]}"#,
                None,
            ),
            (r#"{"n":2, "user":"b\u00e9", "ts":"2026-11-21T10:00:01.5+01:00"}"#, None),
            (r#"{"ts":"2026-11-21T10:00:02Z","n":3.0,"user":null}"#, None),
            (r#"{"ts":"2026-11-21T10:00:02Z","user":"x","user":"y"}"#, None),
            (
                r#"{"ts":"2026-11-21T10:00:00Z","n":"abc"}"#,
                Some("field `n`: expected an integer, got the string \"abc\""),
            ),
            (
                r#"{"ts":"2026-11-21T10:00:00Z","n":1.5}"#,
                Some("field `n`: expected an integer, got the number 1.5"),
            ),
            (
                r#"{"ts":"2026-11-21T10:00:00Z","small":3000000000}"#,
                Some("does not fit in int32"),
            ),
            (r#"{"user":"a"}"#, Some("no event time: field `ts` is missing or null")),
            (r#"{"ts":null,"user":"a"}"#, Some("no event time")),
            (
                r#"{"ts":"yesterday"}"#,
                Some("field `ts`: \"yesterday\" is not a valid timestamp"),
            ),
            (
                r#"{"ts":"2026-11-21T10:00:00Z","user":"a""#,
                Some("invalid JSON: EOF while parsing"),
            ),
            (
                r#"{"ts":"2026-11-21T10:00:00Z"} {"ts":"2026-11-21T10:00:00Z"}"#,
                Some("trailing characters"),
            ),
            (r#"[1,2]"#, Some("expected a JSON object")),
            (
                r#"{"ts":"2026-11-21T10:00:00Z","user":{"a":1}}"#,
                Some("expected a string value for field `user`"),
            ),
            (
                r#"{"ts":"2026-11-21T10:00:00Z","day":"21/11/2026"}"#,
                Some("is not a date YYYY-MM-DD"),
            ),
            ("", Some("invalid JSON")),
        ];
        for (record, expected) in cases {
            let got = d.decode(record.as_bytes(), None);
            match (expected, got) {
                (None, Ok(())) => {}
                (Some(want), Err(reason)) => assert!(reason.contains(want), "{record}: {reason:?} lacks {want:?}"),
                (want, got) => panic!("{record}: expected {want:?}, got {got:?}"),
            }
        }
        let too_large = format!(r#"{{"ts":"2026-11-21T10:00:00Z","user":"{}"}}"#, "x".repeat(300));
        let reason = d.decode(too_large.as_bytes(), None).unwrap_err();
        assert!(
            reason.starts_with(&format!(
                "record too large: {} bytes, more than max_record_bytes = 200",
                too_large.len()
            )),
            "{reason}"
        );
        assert_eq!(d.rows(), 4);
        let batch = d.finish();
        let expected = [
            "+--------------------------+------+---+-------+--------+------+------------+--------+------------+---------+------------+",
            "| ts                       | user | n | small | amount | ok   | day        | _topic | _partition | _offset | event_date |",
            "+--------------------------+------+---+-------+--------+------+------------+--------+------------+---------+------------+",
            "| 2026-11-21T10:00:00Z     | a    | 1 |       | 2.5    | true | 2026-11-20 |        |            |         | 2026-11-21 |",
            "| 2026-11-21T09:00:01.500Z | bé   | 2 |       |        |      |            |        |            |         | 2026-11-21 |",
            "| 2026-11-21T10:00:02Z     |      | 3 |       |        |      |            |        |            |         | 2026-11-21 |",
            "| 2026-11-21T10:00:02Z     | y    |   |       |        |      |            |        |            |         | 2026-11-21 |",
            "+--------------------------+------+---+-------+--------+------+------------+--------+------------+---------+------------+",
        ];
        assert_eq!(
            pretty_format_batches(&[batch]).unwrap().to_string(),
            expected.join("\n")
        );
        assert_eq!(d.rows(), 0);
    }

    #[test]
    fn epoch_and_pattern_time_formats() {
        let mut d = JsonDecoder::new(source("epoch_millis"));
        d.decode(
            br#"{"ts":1795255200123}"#,
            Some(KafkaPosition {
                topic: "t",
                partition: 2,
                offset: 7,
            }),
        )
        .unwrap();
        d.decode(br#"{"ts":1795255200123.6}"#, None).unwrap();
        assert!(
            d.decode(br#"{"ts":"1795255200123"}"#, None)
                .unwrap_err()
                .contains("expected a number (epoch time)")
        );
        let b = d.finish();
        let ts = b
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(ts.values(), &[1_795_255_200_123_000, 1_795_255_200_123_600]);
        assert_eq!(
            b.column_by_name("_offset")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0),
            7
        );

        let mut d = JsonDecoder::new(source("%Y-%m-%d %H:%M:%S"));
        d.decode(br#"{"ts":"2026-11-21 10:00:00"}"#, None).unwrap();
        let b = d.finish();
        let ts = b
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(ts.value(0), 1_795_255_200_000_000);
    }

    /// An event time the lake cannot partition by (its date beyond year 9999, or before year
    /// 1) is a reject with its reason; the records around it are kept.
    #[test]
    fn event_times_beyond_what_the_lake_stores_are_rejected() {
        let mut d = JsonDecoder::new(source("epoch_millis"));
        d.decode(br#"{"ts":1795255200000}"#, None).unwrap();
        for (record, shown) in [
            (
                &br#"{"ts":9000000000000000}"#[..],
                "9000000000000000000 microseconds since the epoch",
            ),
            (br#"{"ts":253402300800000}"#, "+10000-01-01T00:00:00+00:00"),
            (br#"{"ts":-62135596800001}"#, "0000-12-31T23:59:59.999"),
        ] {
            let reason = d.decode(record, None).unwrap_err();
            assert!(
                reason.starts_with("field `ts`: event time ") && reason.contains(shown),
                "{reason}"
            );
            assert!(reason.contains("outside the range the lake stores"), "{reason}");
        }
        d.decode(br#"{"ts":253402300799999}"#, None).unwrap();
        d.decode(br#"{"ts":-62135596800000}"#, None).unwrap();
        let b = d.finish();
        assert_eq!(b.num_rows(), 3);
        let dates = b
            .column_by_name(crate::schema::EVENT_DATE)
            .unwrap()
            .as_any()
            .downcast_ref::<Date32Array>()
            .unwrap();
        assert_eq!(dates.value(1), 2_932_896, "9999-12-31");
        assert_eq!(dates.value(2), -719_162, "0001-01-01");

        let mut d = JsonDecoder::new(source("rfc3339"));
        let reason = d.decode(br#"{"ts":"0000-06-01T00:00:00Z"}"#, None).unwrap_err();
        assert!(reason.contains("outside the range the lake stores"), "{reason}");
    }

    #[test]
    fn strings_are_checked_as_utf8_wherever_they_are_read() {
        let mut d = JsonDecoder::new(source("rfc3339"));
        d.decode(
            r#"{"ts":"2026-11-21T10:00:00Z","user":"Zürich ü\u00fc"}"#.as_bytes(),
            None,
        )
        .unwrap();
        let mut bad = br#"{"ts":"2026-11-21T10:00:00Z","user":"ab"}"#.to_vec();
        let at = bad.len() - 3;
        bad[at] = 0xff;
        let reason = d.decode(&bad, None).unwrap_err();
        assert!(
            reason.starts_with("invalid JSON: invalid unicode code point") && reason.ends_with("(at byte 39)"),
            "{reason}"
        );
        // A field outside the schema is skipped, its bytes unread, as serde_json does.
        let mut ignored = br#"{"ts":"2026-11-21T10:00:01Z","other":"ab"}"#.to_vec();
        let at = ignored.len() - 3;
        ignored[at] = 0xff;
        d.decode(&ignored, None).unwrap();
        let b = d.finish();
        assert_eq!(b.num_rows(), 2);
        let users = b
            .column_by_name("user")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(users.value(0), "Zürich üü");
        assert!(arrow::array::Array::is_null(users, 1));
    }

    /// Records of many shapes, decoded with the flat path where it applies and with
    /// serde_json alone: the same rows, and the same reason for each record rejected.
    #[test]
    fn the_flat_path_decodes_as_serde_json_does() {
        let times: &[&str] = &[
            r#""2026-11-21T10:00:00Z""#,
            r#""2026-11-21T10:00:00.123+01:00""#,
            r#""2026-11-21T10:00:00.5Z""#,
            r#""yesterday""#,
            r#""2026-11-21T10:00:00\u005a""#,
            "1795255200123",
            "1795255200123.6",
            "-5",
            "null",
        ];
        let epoch_times: &[&str] = &[&times[5..], &times[..5]].concat();
        let fields: &[(&str, &[&str])] = &[
            ("ts", times),
            (
                "user",
                &[
                    r#""a""#,
                    r#""Zürich 用户""#,
                    r#""""#,
                    r#""a\"b""#,
                    r#""\u00e9""#,
                    "\"tab\there\"",
                    "null",
                    "1",
                    "true",
                    r#"{"a":1}"#,
                    "[1]",
                ],
            ),
            (
                "n",
                &[
                    "1",
                    "0",
                    "-0",
                    "-5",
                    "01",
                    "1.0",
                    "1.5",
                    "1e3",
                    "1E+2",
                    "123456789012345678",
                    "1234567890123456789",
                    "99999999999999999999",
                    "-9223372036854775808",
                    r#""7""#,
                    "1.",
                    ".5",
                    "+1",
                    "--1",
                    "1e",
                    "null",
                ],
            ),
            ("small", &["7", "-3", "3000000000", "2147483648", "nul", "nullx"]),
            (
                "amount",
                &[
                    "308.46",
                    "0.1",
                    "1e-7",
                    "2",
                    "-0.0",
                    "1.7976931348623157e308",
                    "1e400",
                    "2.2250738585072011e-308",
                    r#""x""#,
                    "null",
                ],
            ),
            ("ok", &["true", "false", "tru", "null", "0"]),
            ("day", &[r#""2026-11-20""#, r#""21/11/2026""#, "null"]),
            (
                "extra",
                &[
                    r#""s""#,
                    "12",
                    r#""e\n""#,
                    "-1.5e3",
                    "01",
                    "null",
                    "true",
                    "{}",
                    r#"[1,{"a":2}]"#,
                    "tru",
                ],
            ),
        ];
        let records = |fields: &[(&str, &[&str])]| {
            let spaces = ["", " ", "\t", "\r\n", "  \n "];
            // A fixed pseudo-random walk through the combinations (a linear congruential step).
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let mut pick = |n: usize| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 33) as usize % n
            };
            let mut records: Vec<String> = Vec::new();
            for k in 0..4_000 {
                let ws = spaces[pick(spaces.len())];
                let mut members = Vec::new();
                for (key, values) in fields {
                    // Mostly the first values (records that decode), sometimes any other.
                    let value = if pick(12) == 0 {
                        values[pick(values.len())]
                    } else {
                        values[pick(2.min(values.len()))]
                    };
                    if pick(10) == 0 {
                        continue;
                    }
                    members.push(format!("{ws}\"{key}\"{ws}:{ws}{value}{ws}"));
                    if pick(40) == 0 {
                        members.push(format!("\"{key}\":{}", values[pick(values.len())]));
                    }
                }
                if k % 2 == 1 {
                    let other = pick(members.len());
                    members.swap(0, other);
                }
                let body = format!("{ws}{{{}}}{ws}", members.join(","));
                records.push(match pick(50) {
                    0 => format!("{body} x"),
                    1 => format!("{body},"),
                    2 => body.replacen("\"user\"", r#""us\u0065r""#, 1),
                    3 => body.replacen(':', ",", 1),
                    4 => body.replacen('}', ",}", 1),
                    _ => body,
                });
            }
            records.extend(["{}", " { } ", "[]", "", "  ", "{", "null", "{\"ts\"}", "\u{feff}{}"].map(String::from));
            records
        };
        let mut taken = 0;
        for (time_format, times) in [("rfc3339", times), ("epoch_millis", epoch_times)] {
            let mut fields = fields.to_vec();
            fields[0].1 = times;
            let records = records(&fields);
            let mut schema = (*source(time_format)).clone();
            schema.max_record_bytes = 1 << 20;
            let schema = Arc::new(schema);
            let mut fast = JsonDecoder::new(schema.clone());
            let mut serde_only = JsonDecoder::new(schema.clone());
            serde_only.flat = false;
            let mut decoded = 0;
            for record in &records {
                let got = fast.decode(record.as_bytes(), None);
                assert_eq!(got, serde_only.decode(record.as_bytes(), None), "{record}");
                decoded += usize::from(got.is_ok());
                let mut alone = JsonDecoder::new(schema.clone());
                taken += usize::from(flat::decode(&mut alone, record).is_some());
            }
            assert!(decoded > 1_000, "{decoded} of {} records decoded", records.len());
            assert_eq!(fast.finish(), serde_only.finish());
        }
        // The walk gives the flat path many records, and serde_json many others.
        assert!(taken > 2_000 && taken < 6_000, "the flat path took {taken} records");
    }

    /// A decoder gives the same batches batch after batch as a new one would: what
    /// [`JsonDecoder::finish`] leaves behind holds no row.
    #[test]
    fn a_decoder_reused_batch_after_batch_gives_what_a_new_one_gives() {
        let records: Vec<String> = (0..40)
            .map(|i| match i % 4 {
                0 => format!(
                    r#"{{"ts":"2026-11-21T10:00:{:02}Z","user":"u{i}","n":{i},"ok":true}}"#,
                    i % 60
                ),
                1 => format!(
                    r#"{{"ts":"2026-11-21T10:01:{:02}Z","user":null,"amount":{i}.5,"day":"2026-11-20"}}"#,
                    i % 60
                ),
                2 => format!(
                    r#"{{"ts":"2026-11-21T10:02:{:02}Z","small":{i},"user":"ü{i}"}}"#,
                    i % 60
                ),
                _ => format!(r#"{{"ts":"bad {i}"}}"#),
            })
            .collect();
        let position = |i: usize| KafkaPosition {
            topic: if i.is_multiple_of(2) { "a" } else { "bb" },
            partition: i as i32 % 3,
            offset: i as i64,
        };
        let mut reused = JsonDecoder::new(source("rfc3339"));
        let mut at = 0;
        // Batches of growing and shrinking sizes, so that the room left is both too much and
        // too little.
        for size in [1, 7, 13, 2, 9, 8] {
            let mut fresh = JsonDecoder::new(source("rfc3339"));
            for (i, record) in records.iter().enumerate().skip(at).take(size) {
                let got = reused.decode(record.as_bytes(), Some(position(i)));
                assert_eq!(got, fresh.decode(record.as_bytes(), Some(position(i))));
            }
            at += size;
            let (batch, expected) = (reused.finish(), fresh.finish());
            assert_eq!(batch, expected);
            assert_eq!(reused.rows(), 0);
        }
        assert_eq!(at, records.len());
    }

    /// The producers' form of RFC 3339 read without chrono gives chrono's microseconds;
    /// every other form, and every invalid time, is left to chrono.
    #[test]
    fn utc_times_read_as_chrono_reads_them() {
        let chrono_micros = |v: &str| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.timestamp_micros())
                .map_err(|e| e.to_string())
        };
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        let mut read_here = 0;
        for _ in 0..20_000 {
            // Mostly valid fields, sometimes one out of range (day 30 of February, hour 24,
            // second 60), with 0 to 10 fraction digits.
            let year = [1, 1600, 1900, 1969, 1970, 2000, 2024, 2026, 2100, 9999][next(10) as usize];
            let fraction: String = (0..next(11)).map(|_| char::from(b'0' + next(10) as u8)).collect();
            let fraction = if fraction.is_empty() {
                fraction
            } else {
                format!(".{fraction}")
            };
            let v = format!(
                "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}Z",
                1 + next(13),
                1 + next(31),
                next(25),
                next(60),
                next(61),
            );
            let here = utc_micros(v.as_bytes());
            read_here += usize::from(here.is_some());
            assert_eq!(rfc3339_micros(&v), chrono_micros(&v), "{v}");
            if let Some(micros) = here {
                assert_eq!(Ok(micros), chrono_micros(&v), "{v}");
            }
        }
        assert!(read_here > 10_000, "{read_here} of 20,000 read without chrono");
        for v in [
            "2026-11-21T10:00:00Z",
            "2026-11-21T10:00:00.123456789Z",
            "2026-11-21t10:00:00Z",
            "2026-11-21 10:00:00Z",
            "2026-11-21T10:00:00z",
            "2026-11-21T10:00:00+01:00",
            "2026-11-21T10:00:00.Z",
            "2026-11-21T10:00:00.1234567890Z",
            "2026-11-21T10:00:00ZZ",
            "2026-11-21T10:00Z",
            "2024-02-29T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-21T23:59:60Z",
            "0000-01-01T00:00:00Z",
            "+2026-11-21T10:00:00Z",
            "2026-1-21T10:00:00Z",
        ] {
            assert_eq!(rfc3339_micros(v), chrono_micros(v), "{v}");
        }
    }

    #[test]
    fn rejects_keep_raw_bytes_and_origin() {
        let mut r = Rejects::new("clicks", 0);
        r.push(
            Origin::Line {
                file: "a.jsonl",
                line: 3,
            },
            b"{oops",
            "invalid JSON",
        );
        r.push(
            Origin::Kafka(KafkaPosition {
                topic: "t",
                partition: 1,
                offset: 9,
            }),
            &[0xff, 0x00],
            "invalid JSON",
        );
        let b = r.finish();
        assert_eq!(b.num_rows(), 2);
        let text = pretty_format_batches(&[b]).unwrap().to_string();
        assert!(text.contains("a.jsonl"), "{text}");
        assert!(text.contains("7b6f6f7073"), "{text}");
        assert!(text.contains("ff00"), "{text}");
    }
}
