//! Apache DataSketches states shared by `approx_distinct` (HLL) and `approx_percentile` (KLL).
//!
//! | function                            | kind      | what                                        |
//! |-------------------------------------|-----------|---------------------------------------------|
//! | `strata_hll_sketch(x)`              | aggregate | HLL sketch of the values (bytes)            |
//! | `strata_hll_pane_sketch(x)`         | aggregate | the same, for a hopping window's panes      |
//! | `strata_hll_union(sketch)`          | aggregate | union of HLL sketches                       |
//! | `strata_hll_estimate(sketch)`       | scalar    | distinct-count estimate (0 for NULL)        |
//! | `strata_kll_sketch(x)`              | aggregate | KLL quantile sketch of numeric values       |
//! | `strata_kll_merge(sketch)`          | aggregate | merge of KLL sketches                       |
//! | `strata_kll_quantile(sketch, q)`    | scalar    | the q-quantile (NULL for no values)         |
//!
//! Sketches are Apache DataSketches' binary formats, readable by its Java and C++ libraries
//! (and so by Druid and Spark users): HLL with lg_k = [`HLL_LG_K`] stored as HLL_4, KLL of
//! doubles with k = [`KLL_K`]. Cells with few values stay small (HLL list and set modes
//! store 4 bytes per distinct value; a KLL with one value is 16 bytes).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanArray, Float64Array, Int64Array};
use arrow::datatypes::{
    DataType, Date32Type, Field, FieldRef, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, EmitTo, GroupsAccumulator, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datasketches::common::SearchCriteria;
use datasketches::hash::value::{canonical_float, raw_bytes};
use datasketches::hll::{HllSketch, HllType, HllUnion};
use datasketches::kll::{KllFloat, KllSketch};

use crate::view::fn_names;

/// log2 of the HLL sketch's number of buckets: relative standard error ≈ 1.04/√4096 ≈ 1.6%.
pub const HLL_LG_K: u8 = 12;
/// Relative standard error of an HLL estimate in full (estimation) mode; below about
/// 384 distinct values per cell the sketch is in list/set mode and nearly exact.
pub const HLL_RSE: f64 = 1.04 / 64.0;
/// KLL accuracy parameter: normalized rank error ≈ 1.33% (99% confidence).
pub const KLL_K: u16 = 200;
/// Registers the HLL functions: `strata_hll_sketch`, `strata_hll_pane_sketch`,
/// `strata_hll_union`, `strata_hll_estimate`.
pub fn register_hll(registry: &mut dyn FunctionRegistry) -> Result<()> {
    registry.register_udf(Arc::new(ScalarUDF::from(HllEstimate::new())))?;
    registry.register_udaf(Arc::new(AggregateUDF::from(SketchAgg::new(
        SketchKind::Hll,
        Input::Values,
    ))))?;
    registry.register_udaf(Arc::new(AggregateUDF::from(SketchAgg::new(
        SketchKind::Hll,
        Input::PaneValues,
    ))))?;
    registry.register_udaf(Arc::new(AggregateUDF::from(SketchAgg::new(
        SketchKind::Hll,
        Input::Sketches,
    ))))?;
    Ok(())
}

/// Registers the KLL functions: `strata_kll_sketch`, `strata_kll_merge`, `strata_kll_quantile`.
pub fn register_kll(registry: &mut dyn FunctionRegistry) -> Result<()> {
    registry.register_udf(Arc::new(ScalarUDF::from(KllQuantile::new())))?;
    registry.register_udaf(Arc::new(AggregateUDF::from(SketchAgg::new(
        SketchKind::Kll,
        Input::Values,
    ))))?;
    registry.register_udaf(Arc::new(AggregateUDF::from(SketchAgg::new(
        SketchKind::Kll,
        Input::Sketches,
    ))))?;
    Ok(())
}

fn sketch_err(e: datasketches::error::Error) -> DataFusionError {
    DataFusionError::Execution(format!("corrupt or incompatible sketch: {e}"))
}
/// `strata_hll_estimate(sketch)`: the distinct count of an HLL sketch, rounded; 0 for NULL
/// (a cell whose values were all NULL).
#[derive(Debug, PartialEq, Eq, Hash)]
struct HllEstimate {
    signature: Signature,
}

impl HllEstimate {
    fn new() -> Self {
        HllEstimate {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for HllEstimate {
    fn name(&self) -> &str {
        fn_names::HLL_ESTIMATE
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce_binary(self.name(), args, &[])
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let sketches = args.args[0].to_array(args.number_rows)?;
        let sketches = sketches.as_binary::<i32>();
        let out = sketches
            .iter()
            .map(|b| match b {
                Some(b) => Ok(HllSketch::deserialize(b).map_err(sketch_err)?.estimate().round() as i64),
                None => Ok(0),
            })
            .collect::<Result<Int64Array>>()?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `strata_kll_quantile(sketch, q)`: the q-quantile of a KLL sketch; NULL without values.
#[derive(Debug, PartialEq, Eq, Hash)]
struct KllQuantile {
    signature: Signature,
}

impl KllQuantile {
    fn new() -> Self {
        KllQuantile {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for KllQuantile {
    fn name(&self) -> &str {
        fn_names::KLL_QUANTILE
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce_binary(self.name(), args, &[DataType::Float64])
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let q = match &args.args[1] {
            ColumnarValue::Scalar(ScalarValue::Float64(Some(q))) if (0.0..=1.0).contains(q) => *q,
            _ => return exec_err!("{}: the quantile must be a constant between 0 and 1", self.name()),
        };
        let sketches = args.args[0].to_array(args.number_rows)?;
        let sketches = sketches.as_binary::<i32>();
        let out = sketches
            .iter()
            .map(|b| match b {
                Some(b) => {
                    let s = KllSketch::<KllFloat<f64>>::deserialize(b).map_err(sketch_err)?;
                    Ok(s.quantile(q, SearchCriteria::Inclusive)
                        .map_err(sketch_err)?
                        .map(|v| v.into_inner()))
                }
                None => Ok(None),
            })
            .collect::<Result<Float64Array>>()?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

pub(crate) fn coerce_binary(name: &str, args: &[DataType], rest: &[DataType]) -> Result<Vec<DataType>> {
    if args.len() != 1 + rest.len() {
        return plan_err!("{name} takes {} arguments", 1 + rest.len());
    }
    match &args[0] {
        DataType::Binary | DataType::BinaryView | DataType::LargeBinary | DataType::Null => {}
        other => return plan_err!("{name}: expected sketch bytes (binary), got {other}"),
    }
    let mut out = vec![DataType::Binary];
    out.extend_from_slice(rest);
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SketchKind {
    Hll,
    Kll,
}

/// What an aggregate consumes: raw values, or sketches to merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Input {
    Values,
    /// Values of a hopping window's pane, whose sketch the same plan merges into its
    /// windows' and never stores: one in HLL's array mode is written as HLL_8 (its registers
    /// a byte each, as in a union), which a union merges by taking the larger of two bytes
    /// where an HLL_4's registers are unpacked one by one, and which the pane's emission
    /// writes without converting. The windows' sketches come out the same.
    PaneValues,
    Sketches,
}

/// One sketch state.
#[derive(Debug, Clone)]
enum Sketch {
    Hll(Box<HllUnion>),
    Kll(Box<KllSketch<KllFloat<f64>>>),
    /// A group's only sketch so far, kept as it came: one that a merge of it alone would
    /// leave holding the same values ([`merges_unchanged`]), so it is written out again
    /// without being parsed, merged and serialized. A second sketch makes it a live one.
    Received(SketchKind, Box<[u8]>),
}

impl Sketch {
    fn new(kind: SketchKind) -> Self {
        match kind {
            SketchKind::Hll => Sketch::Hll(Box::new(HllUnion::new(HLL_LG_K).expect("valid lg_k"))),
            SketchKind::Kll => Sketch::Kll(Box::new(KllSketch::new(KLL_K).expect("valid k"))),
        }
    }

    /// The live sketch of serialized `bytes`: parsed, and merged into an empty one.
    fn from_bytes(kind: SketchKind, bytes: &[u8]) -> Result<Self> {
        let mut live = Sketch::new(kind);
        live.merge_bytes(bytes)?;
        Ok(live)
    }

    fn merge_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Sketch::Hll(u) => u.update(&HllSketch::deserialize(bytes).map_err(sketch_err)?),
            Sketch::Kll(s) => s
                .merge(&KllSketch::<KllFloat<f64>>::deserialize(bytes).map_err(sketch_err)?)
                .map_err(sketch_err)?,
            Sketch::Received(kind, first) => {
                let mut live = Sketch::from_bytes(*kind, first)?;
                live.merge_bytes(bytes)?;
                *self = live;
            }
        }
        Ok(())
    }

    /// The sketch's bytes, as an aggregate of `input` writes them.
    fn to_bytes(&self, input: Input) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Sketch::Hll(u) if input == Input::PaneValues => {
                // Byte 7, bits 0-1: the mode (2: array). A list or set stays HLL_4: it holds
                // the same coupons either way, and arrives as [`Sketch::Received`] where it is
                // a window's only one.
                let dense = u.to_sketch(HllType::Hll8).serialize();
                if dense.get(7).is_some_and(|m| m & 3 == 2) {
                    dense.into()
                } else {
                    u.to_sketch(HllType::Hll4).serialize().into()
                }
            }
            Sketch::Hll(u) => u.to_sketch(HllType::Hll4).serialize().into(),
            Sketch::Kll(s) => s.serialize().into(),
            Sketch::Received(_, bytes) => bytes.as_ref().into(),
        }
    }

    fn size(&self) -> usize {
        match self {
            Sketch::Hll(u) => size_of::<HllUnion>() + u.estimated_size(),
            Sketch::Kll(s) => size_of::<KllSketch<KllFloat<f64>>>() + s.num_retained() * 8,
            Sketch::Received(_, bytes) => bytes.len(),
        }
    }
}

/// The live sketch of a slot, made when it has none, and parsed from the bytes it holds
/// when it holds a received one.
fn live(slot: &mut Option<Sketch>, kind: SketchKind) -> Result<&mut Sketch> {
    if let Some(Sketch::Received(kind, first)) = slot {
        *slot = Some(Sketch::from_bytes(*kind, first)?);
    }
    Ok(slot.get_or_insert_with(|| Sketch::new(kind)))
}

/// Merges the sketch `bytes` into a slot; an empty slot keeps it as it came when merging
/// it alone would not change what it holds.
fn merge_into(slot: &mut Option<Sketch>, kind: SketchKind, bytes: &[u8]) -> Result<()> {
    match slot {
        Some(sketch) => sketch.merge_bytes(bytes),
        None => {
            *slot = Some(if merges_unchanged(kind, bytes) {
                Sketch::Received(kind, bytes.into())
            } else {
                Sketch::from_bytes(kind, bytes)?
            });
            Ok(())
        }
    }
}

/// Whether a merge of the serialized sketch `b` alone holds what `b` holds, read from its
/// header: an HLL of lg_k [`HLL_LG_K`] stored as HLL_4 (a union into an empty one copies its
/// coupons, or its registers with its estimator's state), or a KLL of k [`KLL_K`] that never
/// compacted (the merge copies its items, each of weight one), empty or not. A compacted KLL
/// is left to the merge, which compacts it again. The header's layout and the length it
/// gives are checked, so a truncated sketch is still parsed, and rejected, by the merge; the
/// body is taken as it is, and checked when it is next parsed (merged with a second sketch,
/// or estimated).
fn merges_unchanged(kind: SketchKind, b: &[u8]) -> bool {
    // DataSketches' family ids; the layouts below are its serialization version 1 (version
    // 2: a KLL of one item).
    const HLL_FAMILY: u8 = 7;
    const KLL_FAMILY: u8 = 15;
    if b.len() < 8 {
        return false;
    }
    match kind {
        SketchKind::Hll => {
            if b[1] != 1 || b[2] != HLL_FAMILY || b[3] != HLL_LG_K {
                return false;
            }
            // Byte 0: preamble ints (2 list, 3 set, 10 array); byte 7: the current mode (bits
            // 0-1: 0 list, 1 set, 2 array) and the target type (bits 2-3: 0 HLL_4).
            let count_at = |at: usize| {
                b.get(at..at + 4)
                    .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            };
            // Byte 4: the coupon table's lg size (list 3, set 5 to lg_k - 3, array 0).
            match (b[0], b[7], b[4]) {
                // The coupons, as many as byte 6 says.
                (2, 0, 3) => b.len() == 8 + 4 * b[6] as usize,
                // A coupon count, then the coupons.
                (3, 1, 5..) if b[4] <= HLL_LG_K - 3 => count_at(8).is_some_and(|n| b.len() as u64 == 12 + 4 * n),
                // The estimator's state, the auxiliary count at 36, the 4-bit registers, then
                // the auxiliary coupons.
                (10, 2, 0) => count_at(36).is_some_and(|n| b.len() as u64 == 40 + (1 << (HLL_LG_K - 1)) + 4 * n),
                _ => false,
            }
        }
        SketchKind::Kll => {
            // Bytes 4-5: k; byte 6: m (8, the only one DataSketches writes); byte 3: flags
            // (1 empty, 4 a single item).
            if b[2] != KLL_FAMILY || u16::from_le_bytes([b[4], b[5]]) != KLL_K || b[6] != 8 {
                return false;
            }
            match (b[0], b[1]) {
                (2, 1) => b[3] & 1 != 0 && b.len() == 8,
                (2, 2) => b[3] & 4 != 0 && b.len() == 16,
                // Bytes 8-15: n; byte 18: the levels (one: never compacted); then one level
                // offset, the minimum and maximum, and the n items.
                (5, 1) => {
                    b.len() >= 20 && b[18] == 1 && {
                        let n = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
                        n.checked_mul(8).and_then(|items| items.checked_add(40)) == Some(b.len() as u64)
                    }
                }
                _ => false,
            }
        }
    }
}

/// Feeds the values of `array` into the sketches of their groups.
///
/// `group(row)` gives the sketch slot of a row, or `None` to skip it (filtered out).
fn feed_values(
    kind: SketchKind,
    array: &ArrayRef,
    slots: &mut [Option<Sketch>],
    group: impl Fn(usize) -> Option<usize>,
) -> Result<()> {
    macro_rules! each {
        ($iter:expr, $update:expr) => {
            for (row, v) in $iter.enumerate() {
                if let (Some(v), Some(g)) = (v, group(row)) {
                    let slot = live(&mut slots[g], kind)?;
                    #[allow(clippy::redundant_closure_call)]
                    ($update)(slot, v);
                }
            }
        };
    }
    fn hll(s: &mut Sketch) -> &mut HllUnion {
        match s {
            Sketch::Hll(u) => u,
            Sketch::Kll(_) | Sketch::Received(..) => unreachable!("a live HLL slot"),
        }
    }
    let kll = |s: &mut Sketch, v: f64| match s {
        Sketch::Kll(k) => {
            if let Ok(v) = KllFloat::<f64>::new(v) {
                k.update(v)
            }
        }
        Sketch::Hll(_) | Sketch::Received(..) => unreachable!("a live KLL slot"),
    };
    match (kind, array.data_type()) {
        (SketchKind::Hll, DataType::Utf8) => each!(array.as_string::<i32>().iter(), |s: &mut Sketch, v: &str| hll(s)
            .update_value(raw_bytes::from_str(v))),
        (SketchKind::Hll, DataType::LargeUtf8) => {
            each!(array.as_string::<i64>().iter(), |s: &mut Sketch, v: &str| hll(s)
                .update_value(raw_bytes::from_str(v)))
        }
        (SketchKind::Hll, DataType::Utf8View) => each!(array.as_string_view().iter(), |s: &mut Sketch, v: &str| hll(s)
            .update_value(raw_bytes::from_str(v))),
        (SketchKind::Hll, DataType::Binary) => {
            each!(array.as_binary::<i32>().iter(), |s: &mut Sketch, v: &[u8]| hll(s)
                .update_value(raw_bytes::from_slice(v)))
        }
        (SketchKind::Hll, DataType::Float64) => {
            each!(array.as_primitive::<Float64Type>().iter(), |s: &mut Sketch, v: f64| {
                hll(s).update_value(canonical_float::from_f64(v))
            })
        }
        (SketchKind::Hll, DataType::Float32) => {
            each!(array.as_primitive::<Float32Type>().iter(), |s: &mut Sketch, v: f32| {
                hll(s).update_value(canonical_float::from_f64(v as f64))
            })
        }
        (SketchKind::Hll, DataType::Boolean) => each!(array.as_boolean().iter(), |s: &mut Sketch, v: bool| hll(s)
            .update_value(v as i64)),
        (SketchKind::Hll, t) if t.is_integer() || t.is_temporal() => {
            let ints = arrow::compute::cast(array, &DataType::Int64)?;
            each!(ints.as_primitive::<Int64Type>().iter(), |s: &mut Sketch, v: i64| hll(s)
                .update_value(v))
        }
        (SketchKind::Kll, DataType::Float64) => {
            each!(
                array.as_primitive::<Float64Type>().iter(),
                |s: &mut Sketch, v: f64| kll(s, v)
            )
        }
        (SketchKind::Kll, t) if t.is_numeric() => {
            let floats = arrow::compute::cast(array, &DataType::Float64)?;
            each!(floats.as_primitive::<Float64Type>().iter(), |s: &mut Sketch, v: f64| {
                kll(s, v)
            })
        }
        (_, t) => return exec_err!("cannot sketch values of type {t}"),
    }
    Ok(())
}

fn feed_sketches(
    array: &ArrayRef,
    slots: &mut [Option<Sketch>],
    kind: SketchKind,
    group: impl Fn(usize) -> usize,
) -> Result<()> {
    let bytes: &BinaryArray = array.as_binary::<i32>();
    for (row, b) in bytes.iter().enumerate() {
        if let Some(b) = b {
            merge_into(&mut slots[group(row)], kind, b)?;
        }
    }
    Ok(())
}

/// The sketch aggregates: build from values, or merge sketches; the result is sketch bytes
/// (NULL for a group that saw no value).
#[derive(Debug, PartialEq, Eq, Hash)]
struct SketchAgg {
    kind: SketchKind,
    input: Input,
    signature: Signature,
}

impl SketchAgg {
    fn new(kind: SketchKind, input: Input) -> Self {
        SketchAgg {
            kind,
            input,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for SketchAgg {
    fn name(&self) -> &str {
        match (self.kind, self.input) {
            (SketchKind::Hll, Input::Values) => fn_names::HLL_SKETCH,
            (SketchKind::Hll, Input::PaneValues) => fn_names::HLL_PANE_SKETCH,
            (SketchKind::Hll, Input::Sketches) => fn_names::HLL_UNION,
            (SketchKind::Kll, Input::Values | Input::PaneValues) => fn_names::KLL_SKETCH,
            (SketchKind::Kll, Input::Sketches) => fn_names::KLL_MERGE,
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        let [t] = args else {
            return plan_err!("{name} takes one argument");
        };
        match (self.kind, self.input) {
            (_, Input::Sketches) => coerce_binary(name, args, &[]),
            (SketchKind::Kll, Input::Values | Input::PaneValues) if t.is_numeric() || *t == DataType::Null => {
                Ok(vec![DataType::Float64])
            }
            (SketchKind::Kll, Input::Values | Input::PaneValues) => {
                plan_err!("approx_percentile needs a numeric argument, got {t}")
            }
            (SketchKind::Hll, Input::Values | Input::PaneValues) => match t {
                DataType::Utf8View | DataType::LargeUtf8 => Ok(vec![DataType::Utf8]),
                DataType::BinaryView | DataType::LargeBinary => Ok(vec![DataType::Binary]),
                DataType::Null => Ok(vec![DataType::Int64]),
                t if t.is_primitive() || matches!(t, DataType::Utf8 | DataType::Binary | DataType::Boolean) => {
                    Ok(vec![t.clone()])
                }
                t => plan_err!("approx_distinct cannot count values of type {t}"),
            },
        }
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            datafusion::logical_expr::utils::format_state_name(args.name, "sketch"),
            DataType::Binary,
            true,
        ))])
    }

    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SketchAccumulator {
            kind: self.kind,
            input: self.input,
            slot: [None],
        }))
    }

    fn groups_accumulator_supported(&self, _: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(SketchGroups::new(self.kind, self.input)))
    }

    fn default_value(&self, _: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(None))
    }
}

#[derive(Debug)]
struct SketchAccumulator {
    kind: SketchKind,
    input: Input,
    slot: [Option<Sketch>; 1],
}

impl Accumulator for SketchAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        match self.input {
            Input::Values | Input::PaneValues => feed_values(self.kind, &values[0], &mut self.slot, |_| Some(0)),
            Input::Sketches => feed_sketches(&values[0], &mut self.slot, self.kind, |_| 0),
        }
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        feed_sketches(&states[0], &mut self.slot, self.kind, |_| 0)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(
            self.slot[0].as_ref().map(|s| s.to_bytes(self.input).into_owned()),
        ))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.slot[0].as_ref().map_or(0, Sketch::size)
    }
}

struct SketchGroups {
    kind: SketchKind,
    input: Input,
    slots: Vec<Option<Sketch>>,
    /// Per slot, its sketch's memory as last measured, and their sum, for DataFusion's
    /// memory accounting: an update measures only the slots its rows touched (measuring
    /// every slot per batch grew with the groups held, and a speed layer holds its open
    /// states' groups across many batches).
    sizes: Vec<usize>,
    bytes: usize,
    /// Per slot, whether the batch being added touched it (reset by [`Self::track`]).
    touched: Vec<bool>,
}

impl SketchGroups {
    fn new(kind: SketchKind, input: Input) -> Self {
        SketchGroups {
            kind,
            input,
            slots: Vec::new(),
            sizes: Vec::new(),
            bytes: 0,
            touched: Vec::new(),
        }
    }

    fn emit(&mut self, emit_to: EmitTo) -> ArrayRef {
        let taken = emit_to.take_needed(&mut self.slots);
        self.bytes -= emit_to.take_needed(&mut self.sizes).iter().sum::<usize>();
        emit_to.take_needed(&mut self.touched);
        sketches_array(taken.iter().map(|s| s.as_ref().map(|s| s.to_bytes(self.input))))
    }

    fn resize(&mut self, n: usize) {
        if self.slots.len() < n {
            self.slots.resize_with(n, || None);
            self.sizes.resize(n, 0);
            self.touched.resize(n, false);
        }
    }

    /// Measures again the slots of `groups` (the groups of a batch's rows).
    fn track(&mut self, groups: &[usize]) {
        let mut measure = Vec::new();
        for &g in groups {
            if !self.touched[g] {
                self.touched[g] = true;
                measure.push(g);
            }
        }
        for g in measure {
            self.touched[g] = false;
            let size = self.slots[g].as_ref().map_or(0, Sketch::size);
            self.bytes = self.bytes - self.sizes[g] + size;
            self.sizes[g] = size;
        }
    }
}

/// The serialized sketches (NULL for a group without one) as one array, its buffer sized
/// once: grown from a guess, a publication's buffer of dense sketches (about 2 KiB each)
/// was copied and its new pages zeroed at each doubling.
fn sketches_array<'a>(sketches: impl Iterator<Item = Option<std::borrow::Cow<'a, [u8]>>>) -> ArrayRef {
    let sketches: Vec<_> = sketches.collect();
    let bytes = sketches.iter().flatten().map(|b| b.len()).sum();
    let mut b = BinaryBuilder::with_capacity(sketches.len(), bytes);
    for s in sketches {
        match s {
            Some(s) => b.append_value(s),
            None => b.append_null(),
        }
    }
    Arc::new(b.finish())
}

/// The group of each row, or `None` where the aggregate's FILTER drops it.
pub(crate) fn row_filter<'a>(
    filter: Option<&'a BooleanArray>,
    groups: &'a [usize],
) -> impl Fn(usize) -> Option<usize> + 'a {
    move |row| match filter {
        Some(f) if !(f.is_valid(row) && f.value(row)) => None,
        _ => Some(groups[row]),
    }
}

impl GroupsAccumulator for SketchGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        match self.input {
            Input::Values | Input::PaneValues => feed_values(
                self.kind,
                &values[0],
                &mut self.slots,
                row_filter(opt_filter, group_indices),
            )?,
            Input::Sketches => {
                let groups = row_filter(opt_filter, group_indices);
                let bytes = values[0].as_binary::<i32>();
                for row in 0..bytes.len() {
                    if let (true, Some(g)) = (bytes.is_valid(row), groups(row)) {
                        merge_into(&mut self.slots[g], self.kind, bytes.value(row))?;
                    }
                }
            }
        }
        self.track(group_indices);
        Ok(())
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.resize(total_num_groups);
        feed_sketches(&values[0], &mut self.slots, self.kind, |row| group_indices[row])?;
        self.track(group_indices);
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(self.emit(emit_to))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.emit(emit_to)])
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let rows = values[0].len();
        let mut slots: Vec<Option<Sketch>> = (0..rows).map(|_| None).collect();
        let identity: Vec<usize> = (0..rows).collect();
        match self.input {
            Input::Values | Input::PaneValues => {
                feed_values(self.kind, &values[0], &mut slots, row_filter(opt_filter, &identity))?
            }
            Input::Sketches => feed_sketches(&values[0], &mut slots, self.kind, |row| row)?,
        }
        Ok(vec![sketches_array(
            slots.iter().map(|s| s.as_ref().map(|s| s.to_bytes(self.input))),
        )])
    }

    fn size(&self) -> usize {
        self.bytes + self.slots.capacity() * (size_of::<Option<Sketch>>() + size_of::<usize>() + 1)
    }
}

/// Ensures all integer types the sketch feeder casts are covered (compile-time use).
#[allow(dead_code)]
type IntegerTypes = (
    Int8Type,
    Int16Type,
    Int32Type,
    UInt8Type,
    UInt16Type,
    UInt32Type,
    UInt64Type,
    Date32Type,
);

#[cfg(test)]
mod tests {
    use arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::Schema;
    use datafusion::prelude::SessionContext;
    use proptest::prelude::*;

    use super::*;
    use crate::schema::{TIMESTAMP_TZ, timestamp_type};

    fn ctx() -> SessionContext {
        let mut state = datafusion::execution::SessionStateBuilder::new()
            .with_default_features()
            .build();
        crate::functions::register(&mut state).unwrap();
        SessionContext::new_with_state(state)
    }

    fn table(ctx: &SessionContext, users: Vec<Option<String>>, values: Vec<Option<f64>>) {
        let ts: Vec<i64> = (0..users.len() as i64).map(|i| i * 7_000_000).collect();
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("ts", timestamp_type(), false),
                Field::new("u", DataType::Utf8, true),
                Field::new("x", DataType::Float64, true),
            ])),
            vec![
                Arc::new(TimestampMicrosecondArray::from(ts).with_timezone(TIMESTAMP_TZ)),
                Arc::new(StringArray::from(users)),
                Arc::new(Float64Array::from(values)),
            ],
        )
        .unwrap();
        ctx.register_batch("t", batch).unwrap();
    }

    async fn scalar_i64(ctx: &SessionContext, sql: &str) -> Option<i64> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let c = batches[0].column(0).as_primitive::<Int64Type>();
        c.is_valid(0).then(|| c.value(0))
    }

    async fn scalar_f64(ctx: &SessionContext, sql: &str) -> Option<f64> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let c = batches[0].column(0).as_primitive::<Float64Type>();
        c.is_valid(0).then(|| c.value(0))
    }

    /// The memory a sketch accumulator reports is its sketches' as they are, measured only
    /// where a batch's rows went, through updates, merges and emissions of some groups.
    #[test]
    fn an_accumulators_memory_follows_the_groups_its_batches_touch() {
        for (kind, values) in [
            (
                SketchKind::Hll,
                Arc::new(StringArray::from_iter_values((0..600).map(|i| format!("u{i}")))) as ArrayRef,
            ),
            (
                SketchKind::Kll,
                Arc::new(Float64Array::from_iter_values((0..600).map(f64::from))) as ArrayRef,
            ),
        ] {
            let mut acc = SketchGroups::new(kind, Input::Values);
            let measured = |acc: &SketchGroups| acc.slots.iter().flatten().map(Sketch::size).sum::<usize>();
            // Batches of 100 values over a growing number of groups; group 0 gets most.
            for batch in 0..6 {
                let groups: Vec<usize> = (0..100)
                    .map(|i| if i % 3 == 0 { 0 } else { 1 + (i + batch) % (2 + batch) })
                    .collect();
                acc.update_batch(&[values.slice(batch * 100, 100)], &groups, None, 3 + batch)
                    .unwrap();
                assert_eq!(acc.bytes, measured(&acc), "{kind:?} batch {batch}");
            }
            let other = {
                let mut b = SketchGroups::new(kind, Input::Values);
                b.update_batch(&[values.slice(0, 300)], &[0; 300], None, 1).unwrap();
                b.state(EmitTo::All).unwrap().remove(0)
            };
            acc.merge_batch(&[other], &[2], 8).unwrap();
            assert_eq!(acc.bytes, measured(&acc), "{kind:?} merged");
            acc.evaluate(EmitTo::First(2)).unwrap();
            assert_eq!(acc.bytes, measured(&acc), "{kind:?} after emitting two groups");
            assert!(acc.bytes > 0);
            acc.evaluate(EmitTo::All).unwrap();
            assert_eq!((acc.bytes, acc.sizes.len()), (0, 0), "{kind:?}");
        }
    }

    #[tokio::test]
    async fn windows_and_sketches_in_sql() {
        let ctx = ctx();
        let users = (0..1000).map(|i| Some(format!("u{}", i % 300))).chain([None]).collect();
        let values = (0..1001).map(|i| Some(i as f64)).collect();
        table(&ctx, users, values);
        let n = scalar_i64(&ctx, "SELECT strata_hll_estimate(strata_hll_sketch(u)) FROM t").await;
        assert_eq!(n, Some(300));
        let n = scalar_i64(&ctx, "SELECT strata_hll_estimate(strata_hll_union(s)) FROM (SELECT strata_hll_sketch(u) AS s FROM t GROUP BY ts)").await;
        assert_eq!(n, Some(300));
        let p = scalar_f64(&ctx, "SELECT strata_kll_quantile(strata_kll_sketch(x), 0.5) FROM t")
            .await
            .unwrap();
        assert!((p - 500.0).abs() <= 1001.0 * 0.0133, "{p}");
        // A cell with no values: an HLL estimate of 0, no quantile.
        assert_eq!(
            scalar_i64(
                &ctx,
                "SELECT strata_hll_estimate(strata_hll_sketch(u)) FROM t WHERE u IS NULL"
            )
            .await,
            Some(0)
        );
        assert_eq!(
            scalar_f64(
                &ctx,
                "SELECT strata_kll_quantile(strata_kll_sketch(x), 0.5) FROM t WHERE x > 1e9"
            )
            .await,
            None
        );
        // Tumbling: 1001 events 7 s apart in 1-minute windows.
        let windows = scalar_i64(&ctx, "SELECT count(DISTINCT strata_tumble(ts, 60000000)) FROM t").await;
        assert_eq!(windows, Some((1000 * 7) / 60 + 1));
        // Hopping: each event in size/slide windows.
        let rows = scalar_i64(
            &ctx,
            "SELECT count(*) FROM (SELECT unnest(strata_hop(ts, 60000000, 300000000)) AS w FROM t)",
        )
        .await;
        assert_eq!(rows, Some(1001 * 5));
    }

    #[tokio::test]
    async fn bad_sketch_bytes_are_an_error_not_a_crash() {
        let ctx = ctx();
        let err = ctx
            .sql("SELECT strata_hll_estimate(X'00010203')")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("corrupt or incompatible sketch"), "{err}");
        let err = ctx.sql("SELECT strata_kll_sketch('a')").await.unwrap_err();
        assert!(
            err.to_string().contains("approx_percentile needs a numeric argument"),
            "{err}"
        );
    }

    fn sketch_of(kind: SketchKind, values: &[i64]) -> Option<Sketch> {
        let mut slots = [None];
        let array: ArrayRef = Arc::new(Int64Array::from(values.to_vec()));
        feed_values(kind, &array, &mut slots, |_| Some(0)).unwrap();
        let [s] = slots;
        s
    }

    fn merged(kind: SketchKind, parts: &[&[i64]]) -> Option<Sketch> {
        let mut slot = [None];
        for p in parts {
            if let Some(s) = sketch_of(kind, p) {
                let bytes: ArrayRef = Arc::new(BinaryArray::from(vec![&*s.to_bytes(Input::Values)]));
                feed_sketches(&bytes, &mut slot, kind, |_| 0).unwrap();
            }
        }
        let [s] = slot;
        s
    }

    fn hll_estimate(s: &Option<Sketch>) -> f64 {
        match s {
            Some(Sketch::Hll(u)) => u.estimate(),
            Some(Sketch::Received(SketchKind::Hll, b)) => HllSketch::deserialize(b).unwrap().estimate(),
            None => 0.0,
            _ => unreachable!(),
        }
    }

    fn kll_quantiles(s: &Option<Sketch>) -> Option<(u64, f64, f64)> {
        match s {
            Some(Sketch::Received(SketchKind::Kll, b)) => {
                kll_quantiles(&Some(Sketch::Kll(Box::new(KllSketch::deserialize(b).unwrap()))))
            }
            Some(Sketch::Kll(k)) => Some((
                k.n(),
                k.quantile(0.0, SearchCriteria::Inclusive)
                    .unwrap()
                    .unwrap()
                    .into_inner(),
                k.quantile(1.0, SearchCriteria::Inclusive)
                    .unwrap()
                    .unwrap()
                    .into_inner(),
            )),
            None => None,
            _ => unreachable!(),
        }
    }

    /// A pane's sketch, written as `strata_hll_pane_sketch` writes it (HLL_8 once in array
    /// mode), merges into the windows' sketches that `strata_hll_sketch`'s HLL_4 gives, byte
    /// for byte, estimator state included: in any order, alone or with others, into an empty
    /// window or one already holding list, set or array sketches.
    #[test]
    fn pane_sketches_merge_into_the_windows_the_stored_form_gives() {
        let panes: Vec<Vec<i64>> = [(0, 5), (100, 300), (1_000, 4_000), (3_000, 60_000), (50_000, 150_000)]
            .iter()
            .map(|&(from, to)| (from..to).map(|v| v * 7_919 % 1_000_003).collect())
            .collect();
        let sketches: Vec<Sketch> = panes.iter().map(|p| sketch_of(SketchKind::Hll, p).unwrap()).collect();
        let dense = sketches
            .iter()
            .filter(|s| s.to_bytes(Input::PaneValues).len() > s.to_bytes(Input::Values).len())
            .count();
        assert_eq!(dense, 3, "the three larger panes are in array mode, written as HLL_8");
        let window = |order: &[usize], input: Input| {
            let mut slot = [None];
            for &i in order {
                let bytes: ArrayRef = Arc::new(BinaryArray::from(vec![&*sketches[i].to_bytes(input)]));
                feed_sketches(&bytes, &mut slot, SketchKind::Hll, |_| 0).unwrap();
            }
            slot[0].as_ref().unwrap().to_bytes(Input::Values).into_owned()
        };
        let orders: [&[usize]; 9] = [
            &[2],
            &[3],
            &[4],
            &[0, 2],
            &[2, 0],
            &[1, 3, 4],
            &[4, 3, 1],
            &[3, 0, 2, 4, 1],
            &[1, 4, 0, 3, 2],
        ];
        for order in orders {
            assert_eq!(
                window(order, Input::PaneValues),
                window(order, Input::Values),
                "panes {order:?}"
            );
        }
    }

    /// A group's only sketch is kept as it came exactly where a merge of it alone holds the
    /// same values: HLLs in every mode (same estimate, alone and merged with another), KLLs
    /// that never compacted (same count, extremes and quantiles); larger KLLs are merged as
    /// before.
    #[test]
    fn a_groups_only_sketch_is_kept_as_it_came_where_a_merge_would_not_change_it() {
        let received = |kind: SketchKind, bytes: &[u8]| {
            let mut slot = [None];
            let array: ArrayRef = Arc::new(BinaryArray::from(vec![bytes]));
            feed_sketches(&array, &mut slot, kind, |_| 0).unwrap();
            let [s] = slot;
            s.unwrap()
        };
        let other = sketch_of(SketchKind::Hll, &(0..400).map(|i| i * 3).collect::<Vec<_>>()).unwrap();
        for n in [1i64, 3, 8, 9, 50, 300, 384, 385, 700, 5000] {
            let values: Vec<i64> = (0..n).map(|i| i * 7 + 1).collect();
            let bytes = sketch_of(SketchKind::Hll, &values)
                .unwrap()
                .to_bytes(Input::Values)
                .into_owned();
            let kept = merges_unchanged(SketchKind::Hll, &bytes);
            assert!(kept, "n {n}");
            let mut slot = Some(received(SketchKind::Hll, &bytes));
            let old = Sketch::from_bytes(SketchKind::Hll, &bytes).unwrap();
            match &slot {
                Some(Sketch::Received(_, b)) => assert!(kept && **b == *bytes, "n {n}"),
                Some(Sketch::Hll(_)) => assert!(!kept, "n {n}"),
                _ => unreachable!(),
            }
            assert_eq!(hll_estimate(&slot), hll_estimate(&Some(old.clone())), "n {n}");
            // Merged with another sketch, as the union of the two is.
            let mut both = Some(old);
            for s in [&mut slot, &mut both] {
                s.as_mut().unwrap().merge_bytes(&other.to_bytes(Input::Values)).unwrap();
            }
            assert!(matches!(slot, Some(Sketch::Hll(_))));
            assert_eq!(hll_estimate(&slot), hll_estimate(&both), "n {n}");
        }
        for n in [1i64, 2, 100, 200, 201, 1000] {
            let values: Vec<i64> = (0..n).map(|i| (i * 37) % 1009).collect();
            let bytes = sketch_of(SketchKind::Kll, &values)
                .unwrap()
                .to_bytes(Input::Values)
                .into_owned();
            let kept = merges_unchanged(SketchKind::Kll, &bytes);
            assert_eq!(kept, n <= 200, "n {n}");
            let slot = received(SketchKind::Kll, &bytes);
            assert_eq!(matches!(&slot, Sketch::Received(_, b) if **b == *bytes), kept, "n {n}");
            let old = Sketch::from_bytes(SketchKind::Kll, &bytes).unwrap();
            assert_eq!(
                kll_quantiles(&Some(slot.clone())),
                kll_quantiles(&Some(old.clone())),
                "n {n}"
            );
            if kept {
                let [a, b] = [&slot, &old].map(|s| match s {
                    Sketch::Received(_, b) => KllSketch::<KllFloat<f64>>::deserialize(b).unwrap(),
                    Sketch::Kll(k) => (**k).clone(),
                    Sketch::Hll(_) => unreachable!(),
                });
                for rank in [0.05, 0.25, 0.5, 0.75, 0.95] {
                    assert_eq!(
                        a.quantile(rank, SearchCriteria::Inclusive).unwrap(),
                        b.quantile(rank, SearchCriteria::Inclusive).unwrap(),
                        "n {n} rank {rank}"
                    );
                }
            }
        }
        // A sketch shorter than its header says is parsed, and rejected, as before.
        let bytes = sketch_of(SketchKind::Hll, &[1, 2, 3])
            .unwrap()
            .to_bytes(Input::Values)
            .into_owned();
        let cut = &bytes[..bytes.len() - 4];
        assert!(!merges_unchanged(SketchKind::Hll, cut));
        let array: ArrayRef = Arc::new(BinaryArray::from(vec![cut]));
        let err = feed_sketches(&array, &mut [None], SketchKind::Hll, |_| 0).unwrap_err();
        assert!(err.to_string().contains("corrupt or incompatible sketch"), "{err}");
    }

    proptest! {
        /// Merging the sketches of any split of the input equals the sketch of the whole.
        #[test]
        fn sketch_states_merge_like_the_whole(values in proptest::collection::vec(0i64..5000, 0..3000), cuts in proptest::collection::vec(0usize..3000, 0..5)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(values.len())).collect();
            cuts.sort();
            let mut parts: Vec<&[i64]> = Vec::new();
            let mut start = 0;
            for c in cuts {
                parts.push(&values[start..c]);
                start = c;
            }
            parts.push(&values[start..]);
            let whole = sketch_of(SketchKind::Hll, &values);
            let split = merged(SketchKind::Hll, &parts);
            let exact = values.iter().collect::<std::collections::HashSet<_>>().len() as f64;
            // The union of sketches of parts is the sketch of the union: same estimate up to
            // the estimator's own noise, and both within the documented error of the truth.
            let (w, s) = (hll_estimate(&whole), hll_estimate(&split));
            prop_assert!((w - exact).abs() <= (5.0 * HLL_RSE * exact).max(1.0), "whole {w} vs exact {exact}");
            prop_assert!((s - exact).abs() <= (5.0 * HLL_RSE * exact).max(1.0), "split {s} vs exact {exact}");
            // KLL: count, min and max are exact under merging.
            let whole = sketch_of(SketchKind::Kll, &values);
            let split = merged(SketchKind::Kll, &parts);
            prop_assert_eq!(kll_quantiles(&whole), kll_quantiles(&split));
        }
    }
}
