//! The SQL functions behind view states, registered in every DataFusion session Strata makes.
//!
//! The window functions live here; each aggregate's own functions (sketches, moments) live
//! with the aggregate in [`crate::aggregate`], which registers them.
//!
//! | function                            | kind      | what                                        |
//! |-------------------------------------|-----------|---------------------------------------------|
//! | `strata_tumble(ts, size_us)`        | scalar    | start of the tumbling window holding `ts`   |
//! | `strata_hop(ts, slide_us, size_us)` | scalar    | starts of every hopping window holding `ts` |
//! | `date_trunc(unit, ts)`              | scalar    | DataFusion's, hours and days of UTC by arithmetic |

use std::sync::Arc;

use arrow::array::{AsArray, ListBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::execution::FunctionRegistry;
use datafusion::functions::datetime::date_trunc::DateTruncFunc;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::schema::{TIMESTAMP_TZ, timestamp_type};
use crate::view::fn_names;

/// Registers every Strata function in a DataFusion session: the windows, and the functions
/// of every mergeable aggregate.
pub fn register(registry: &mut dyn FunctionRegistry) -> Result<()> {
    registry.register_udf(Arc::new(ScalarUDF::from(Tumble::new())))?;
    registry.register_udf(Arc::new(ScalarUDF::from(Hop::new())))?;
    registry.register_udf(Arc::new(ScalarUDF::from(DateTrunc(DateTruncFunc::new()))))?;
    crate::aggregate::register(registry)
}

fn timestamps(arg: &ColumnarValue, rows: usize, name: &str) -> Result<TimestampMicrosecondArray> {
    let array = arg.to_array(rows)?;
    match array.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => Ok(array
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .clone()),
        other => exec_err!("{name}: expected a timestamp in microseconds, got {other}"),
    }
}

fn int_scalar(arg: &ColumnarValue, name: &str, what: &str) -> Result<i64> {
    match arg {
        ColumnarValue::Scalar(ScalarValue::Int64(Some(v))) if *v > 0 => Ok(*v),
        _ => exec_err!("{name}: {what} must be a positive constant number of microseconds"),
    }
}

fn coerce_window_args(name: &str, args: &[DataType], n: usize) -> Result<Vec<DataType>> {
    if args.len() != n {
        return plan_err!("{name} takes {n} arguments");
    }
    match &args[0] {
        DataType::Timestamp(..) => {}
        other => return plan_err!("{name}: the first argument must be a timestamp, got {other}"),
    }
    let mut out = vec![timestamp_type()];
    out.extend(std::iter::repeat_n(DataType::Int64, n - 1));
    Ok(out)
}
/// `date_trunc` as DataFusion's, but hours and days of UTC timestamps are truncated by
/// arithmetic. DataFusion 55 converts each value through the time-zone database whenever
/// the column names a zone, UTC too, which made a dashboard's `date_trunc('hour',
/// window_start)` over a day of windows the slowest step of its query.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DateTrunc(DateTruncFunc);

impl DateTrunc {
    /// The unit in microseconds, where arithmetic truncates exactly: an hour or a day, of
    /// microsecond timestamps in UTC.
    fn utc_unit(args: &ScalarFunctionArgs) -> Option<i64> {
        let ColumnarValue::Scalar(ScalarValue::Utf8(Some(unit)) | ScalarValue::Utf8View(Some(unit))) = &args.args[0]
        else {
            return None;
        };
        let DataType::Timestamp(TimeUnit::Microsecond, Some(zone)) = args.args[1].data_type() else {
            return None;
        };
        if !matches!(&*zone, "UTC" | "+00:00" | "Z") {
            return None;
        }
        match unit.to_ascii_lowercase().as_str() {
            "hour" => Some(3_600_000_000),
            "day" => Some(86_400_000_000),
            _ => None,
        }
    }
}

impl ScalarUDFImpl for DateTrunc {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn aliases(&self) -> &[String] {
        self.0.aliases()
    }
    fn signature(&self) -> &Signature {
        self.0.signature()
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.0.return_type(args)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<arrow::datatypes::FieldRef> {
        self.0.return_field_from_args(args)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(unit) = Self::utc_unit(&args) else {
            return self.0.invoke_with_args(args);
        };
        let truncate = |t: i64| t.div_euclid(unit) * unit;
        Ok(match &args.args[1] {
            ColumnarValue::Scalar(ScalarValue::TimestampMicrosecond(t, zone)) => {
                ColumnarValue::Scalar(ScalarValue::TimestampMicrosecond(t.map(truncate), zone.clone()))
            }
            ColumnarValue::Array(array) => {
                let times = array.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
                let zone = times.timezone().map(str::to_string);
                ColumnarValue::Array(Arc::new(
                    times
                        .unary::<_, arrow::datatypes::TimestampMicrosecondType>(truncate)
                        .with_timezone_opt(zone),
                ))
            }
            _ => return self.0.invoke_with_args(args),
        })
    }
    fn output_ordering(&self, input: &[ExprProperties]) -> Result<SortProperties> {
        self.0.output_ordering(input)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.0.documentation()
    }
}

/// `strata_tumble(ts, size_us)`: the start of the tumbling window holding `ts`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Tumble {
    signature: Signature,
}

impl Tumble {
    fn new() -> Self {
        Tumble {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Tumble {
    fn name(&self) -> &str {
        fn_names::TUMBLE
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce_window_args(self.name(), args, 2)
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(timestamp_type())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let size = int_scalar(&args.args[1], self.name(), "the window size")?;
        let ts = timestamps(&args.args[0], args.number_rows, self.name())?;
        let out: TimestampMicrosecondArray = ts.unary(|t| t.div_euclid(size) * size);
        Ok(ColumnarValue::Array(Arc::new(out.with_timezone(TIMESTAMP_TZ))))
    }
}

/// `strata_hop(ts, slide_us, size_us)`: the starts of every hopping window holding `ts`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Hop {
    signature: Signature,
}

impl Hop {
    fn new() -> Self {
        Hop {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Hop {
    fn name(&self) -> &str {
        fn_names::HOP
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce_window_args(self.name(), args, 3)
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new_list_field(timestamp_type(), true))))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let slide = int_scalar(&args.args[1], self.name(), "the slide")?;
        let size = int_scalar(&args.args[2], self.name(), "the window size")?;
        let ts = timestamps(&args.args[0], args.number_rows, self.name())?;
        let spec = crate::view::WindowSpec {
            kind: crate::view::WindowKind::Hop,
            time_column: String::new(),
            size_us: size,
            slide_us: slide,
        };
        let per_row = (size / slide) as usize;
        let mut b = ListBuilder::with_capacity(
            TimestampMicrosecondBuilder::with_capacity(ts.len() * per_row).with_timezone(TIMESTAMP_TZ),
            ts.len(),
        );
        for t in ts.iter() {
            match t {
                Some(t) => {
                    for start in spec.starts(t) {
                        b.values().append_value(start);
                    }
                    b.append(true);
                }
                None => b.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(b.finish())))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use crate::session::{new_context, session_config};

    /// Strata's date_trunc answers as DataFusion's own: hours and days of UTC timestamps
    /// (arithmetic, before 1970 too), and what it hands to DataFusion (minutes, zones).
    #[tokio::test]
    async fn date_trunc_answers_as_datafusions() {
        let sql = r#"SELECT date_trunc('hour', t), date_trunc('DAY', t), datetrunc('hour', t), date_trunc('minute', t),
                date_trunc('hour', arrow_cast(t, 'Timestamp(Microsecond, Some("Asia/Kathmandu"))')),
                date_trunc('day', arrow_cast(t, 'Timestamp(Microsecond, Some("Europe/Paris"))')),
                date_trunc('hour', arrow_cast(t, 'Timestamp(Microsecond, None)')),
                date_trunc('hour', arrow_cast(NULL, 'Timestamp(Microsecond, Some("UTC"))')),
                date_trunc('hour', arrow_cast(1764762600123456, 'Timestamp(Microsecond, Some("UTC"))'))
            FROM (SELECT arrow_cast(column1, 'Timestamp(Microsecond, Some("UTC"))') AS t FROM (VALUES
                (0), (1), (-1), (3599999999), (3600000000), (-3600000001), (86399999999), (-86400000000),
                (1764762600123456), (-2208988800000000), (NULL)))"#;
        let ours = new_context(session_config())
            .unwrap()
            .sql(sql)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let theirs = SessionContext::new().sql(sql).await.unwrap().collect().await.unwrap();
        let text = |b: &[arrow::array::RecordBatch]| arrow::util::pretty::pretty_format_batches(b).unwrap().to_string();
        assert_eq!(text(&ours), text(&theirs));
        assert_eq!(ours[0].schema(), theirs[0].schema());
        assert!(text(&ours).contains("1969-12-31T23:00:00Z"), "{}", text(&ours));
    }
}
