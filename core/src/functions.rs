//! The SQL functions behind view states, registered in every DataFusion session Strata makes.
//!
//! The window functions live here; each aggregate's own functions (sketches, moments) live
//! with the aggregate in [`crate::aggregate`], which registers them.
//!
//! | function                            | kind      | what                                        |
//! |-------------------------------------|-----------|---------------------------------------------|
//! | `strata_tumble(ts, size_us)`        | scalar    | start of the tumbling window holding `ts`   |
//! | `strata_hop(ts, slide_us, size_us)` | scalar    | starts of every hopping window holding `ts` |

use std::sync::Arc;

use arrow::array::{AsArray, ListBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

use crate::schema::{TIMESTAMP_TZ, timestamp_type};
use crate::view::fn_names;

/// Registers every Strata function in a DataFusion session: the windows, and the functions
/// of every mergeable aggregate.
pub fn register(registry: &mut dyn FunctionRegistry) -> Result<()> {
    registry.register_udf(Arc::new(ScalarUDF::from(Tumble::new())))?;
    registry.register_udf(Arc::new(ScalarUDF::from(Hop::new())))?;
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
