//! `stddev(x)`, `variance(x)` and their `_samp`/`_pop` forms: mergeable moments.
//!
//! A state is the count, mean and M2 (sum of squared deviations from the mean) of the values,
//! kept as Welford does and merged with Chan et al.'s parallel formula, so that states of
//! any split of the events merge to the moments of the whole without the cancellation a
//! sum of squares suffers when the mean is large next to the spread.
//!
//! | function                               | kind      | what                                     |
//! |----------------------------------------|-----------|------------------------------------------|
//! | `strata_moments(x)`                    | aggregate | moments of numeric values (24 bytes)     |
//! | `strata_moments_merge(moments)`        | aggregate | merge of moments                         |
//! | `strata_moments_variance(moments, d)`  | scalar    | M2 / (count - d); NULL if count <= d     |
//!
//! The state's bytes are the count (u64), the mean (f64) and M2 (f64), little-endian; NULL
//! for a cell without values.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, EmitTo, GroupsAccumulator, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::sketch::{coerce_binary, row_filter};
use super::{Call, MergeableAggregate, State};
use crate::view::fn_names;

pub struct Variance;

impl MergeableAggregate for Variance {
    fn names(&self) -> &'static [&'static str] {
        &[
            "stddev",
            "stddev_samp",
            "stddev_pop",
            "variance",
            "var",
            "var_samp",
            "var_pop",
        ]
    }

    fn listed(&self) -> &'static str {
        "stddev, variance"
    }

    fn states(&self, call: &Call) -> Vec<State> {
        vec![State {
            suffix: "moments",
            merge: fn_names::MOMENTS_MERGE,
            compute: format!("{}({})", fn_names::MOMENTS, call.arg_sql()),
            empty: None,
            pane: None,
        }]
    }

    fn finalize(&self, call: &Call, merged: &dyn Fn(&str) -> String) -> String {
        // The sample forms divide by n - 1 (as DuckDB, Postgres and DataFusion do), the
        // population forms by n.
        let population = call.name.ends_with("_pop");
        let variance = format!(
            "{}({}, {})",
            fn_names::MOMENTS_VARIANCE,
            merged("moments"),
            if population { 0 } else { 1 }
        );
        if call.name.starts_with("stddev") {
            format!("sqrt({variance})")
        } else {
            variance
        }
    }

    fn register(&self, registry: &mut dyn FunctionRegistry) -> Result<()> {
        registry.register_udaf(Arc::new(AggregateUDF::from(MomentsAgg::new(false))))?;
        registry.register_udaf(Arc::new(AggregateUDF::from(MomentsAgg::new(true))))?;
        registry.register_udf(Arc::new(ScalarUDF::from(MomentsVariance::new())))?;
        Ok(())
    }
}

/// Count, mean and M2 of a set of values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    pub count: u64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    const BYTES: usize = 24;

    /// Adds one value (Welford).
    pub fn push(&mut self, x: f64) {
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Adds the values another state holds (Chan et al.).
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta = other.mean - self.mean;
        self.mean += delta * nb / n;
        self.m2 += other.m2 + delta * delta * na * nb / n;
        self.count += other.count;
    }

    /// M2 / (count - ddof), or `None` with too few values.
    pub fn variance(&self, ddof: u64) -> Option<f64> {
        (self.count > ddof).then(|| self.m2 / (self.count - ddof) as f64)
    }

    pub fn to_bytes(self) -> [u8; Self::BYTES] {
        let mut out = [0; Self::BYTES];
        out[..8].copy_from_slice(&self.count.to_le_bytes());
        out[8..16].copy_from_slice(&self.mean.to_le_bytes());
        out[16..].copy_from_slice(&self.m2.to_le_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Moments> {
        let Ok(bytes) = <[u8; Self::BYTES]>::try_from(bytes) else {
            return Err(DataFusionError::Execution(format!(
                "corrupt moments state: {} bytes, expected {}",
                bytes.len(),
                Self::BYTES
            )));
        };
        let word = |i: usize| <[u8; 8]>::try_from(&bytes[i..i + 8]).expect("8 bytes");
        Ok(Moments {
            count: u64::from_le_bytes(word(0)),
            mean: f64::from_le_bytes(word(8)),
            m2: f64::from_le_bytes(word(16)),
        })
    }

    /// The state as a value: NULL for a cell without values.
    fn scalar(self) -> ScalarValue {
        ScalarValue::Binary((self.count > 0).then(|| self.to_bytes().to_vec()))
    }
}

/// Feeds rows of `array` (values, or states when `merge`) into the slots `slot(row)` names;
/// `None` skips the row (filtered out).
fn feed(merge: bool, array: &ArrayRef, slots: &mut [Moments], slot: impl Fn(usize) -> Option<usize>) -> Result<()> {
    if merge {
        let states = array.as_binary::<i32>();
        for (row, b) in states.iter().enumerate() {
            if let (Some(b), Some(s)) = (b, slot(row)) {
                slots[s].merge(&Moments::from_bytes(b)?);
            }
        }
    } else {
        let values = array.as_primitive::<Float64Type>();
        for (row, v) in values.iter().enumerate() {
            if let (Some(v), Some(s)) = (v, slot(row)) {
                slots[s].push(v);
            }
        }
    }
    Ok(())
}

fn states_array(slots: &[Moments]) -> ArrayRef {
    let bytes: Vec<Option<[u8; Moments::BYTES]>> = slots.iter().map(|m| (m.count > 0).then(|| m.to_bytes())).collect();
    Arc::new(BinaryArray::from_iter(bytes))
}

/// `strata_moments(x)` (`merge` false) and `strata_moments_merge(moments)` (true).
#[derive(Debug, PartialEq, Eq, Hash)]
struct MomentsAgg {
    merge: bool,
    signature: Signature,
}

impl MomentsAgg {
    fn new(merge: bool) -> Self {
        MomentsAgg {
            merge,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for MomentsAgg {
    fn name(&self) -> &str {
        if self.merge {
            fn_names::MOMENTS_MERGE
        } else {
            fn_names::MOMENTS
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let [t] = args else {
            return plan_err!("{} takes one argument", self.name());
        };
        match (self.merge, t) {
            (true, DataType::Binary | DataType::BinaryView | DataType::LargeBinary | DataType::Null) => {
                Ok(vec![DataType::Binary])
            }
            (true, t) => plan_err!("{}: expected moments (binary), got {t}", self.name()),
            (false, t) if t.is_numeric() || *t == DataType::Null => Ok(vec![DataType::Float64]),
            (false, t) => plan_err!("stddev and variance need a numeric argument, got {t}"),
        }
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            datafusion::logical_expr::utils::format_state_name(args.name, "moments"),
            DataType::Binary,
            true,
        ))])
    }

    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(MomentsAccumulator {
            merge: self.merge,
            slot: [Moments::default()],
        }))
    }

    fn groups_accumulator_supported(&self, _: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(MomentsGroups {
            merge: self.merge,
            slots: Vec::new(),
        }))
    }

    fn default_value(&self, _: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(None))
    }
}

#[derive(Debug)]
struct MomentsAccumulator {
    merge: bool,
    slot: [Moments; 1],
}

impl Accumulator for MomentsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        feed(self.merge, &values[0], &mut self.slot, |_| Some(0))
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        feed(true, &states[0], &mut self.slot, |_| Some(0))
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.slot[0].scalar())
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }
}

struct MomentsGroups {
    merge: bool,
    slots: Vec<Moments>,
}

impl GroupsAccumulator for MomentsGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.slots
            .resize(total_num_groups.max(self.slots.len()), Moments::default());
        feed(
            self.merge,
            &values[0],
            &mut self.slots,
            row_filter(opt_filter, group_indices),
        )
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.slots
            .resize(total_num_groups.max(self.slots.len()), Moments::default());
        feed(true, &values[0], &mut self.slots, |row| Some(group_indices[row]))
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(states_array(&emit_to.take_needed(&mut self.slots)))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(emit_to)?])
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let rows = values[0].len();
        let mut slots = vec![Moments::default(); rows];
        let identity: Vec<usize> = (0..rows).collect();
        feed(self.merge, &values[0], &mut slots, row_filter(opt_filter, &identity))?;
        Ok(vec![states_array(&slots)])
    }

    fn size(&self) -> usize {
        self.slots.capacity() * size_of::<Moments>()
    }
}

/// `strata_moments_variance(moments, ddof)`: M2 / (count - ddof); NULL without more than
/// `ddof` values.
#[derive(Debug, PartialEq, Eq, Hash)]
struct MomentsVariance {
    signature: Signature,
}

impl MomentsVariance {
    fn new() -> Self {
        MomentsVariance {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for MomentsVariance {
    fn name(&self) -> &str {
        fn_names::MOMENTS_VARIANCE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce_binary(self.name(), args, &[DataType::Int64])
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ddof = match &args.args[1] {
            ColumnarValue::Scalar(ScalarValue::Int64(Some(d))) if *d >= 0 => *d as u64,
            _ => return exec_err!("{}: ddof must be a constant >= 0", self.name()),
        };
        let states = args.args[0].to_array(args.number_rows)?;
        let out = states
            .as_binary::<i32>()
            .iter()
            .map(|b| match b {
                Some(b) => Ok(Moments::from_bytes(b)?.variance(ddof)),
                None => Ok(None),
            })
            .collect::<Result<Float64Array>>()?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Two-pass variance, the textbook definition.
    fn two_pass(values: &[f64], ddof: usize) -> Option<f64> {
        if values.len() <= ddof {
            return None;
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        Some(values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (values.len() - ddof) as f64)
    }

    fn moments(values: &[f64]) -> Moments {
        let mut m = Moments::default();
        values.iter().for_each(|v| m.push(*v));
        m
    }

    fn close(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12),
            (a, b) => a == b,
        }
    }

    #[test]
    fn a_large_mean_does_not_cancel_the_spread() {
        // A sum of squares loses these digits entirely (1e18 next to a spread of 1).
        let values: Vec<f64> = (0..1000).map(|i| 1e9 + (i % 3) as f64).collect();
        let halves = {
            let mut m = moments(&values[..500]);
            m.merge(&moments(&values[500..]));
            m
        };
        assert!(close(halves.variance(1), two_pass(&values, 1)), "{halves:?}");
        assert!(close(moments(&values).variance(0), two_pass(&values, 0)));
        assert_eq!(Moments::from_bytes(&halves.to_bytes()).unwrap(), halves);
        assert!(Moments::from_bytes(&[1, 2, 3]).is_err());
        assert_eq!(moments(&[4.0]).variance(1), None);
        assert_eq!(moments(&[4.0]).variance(0), Some(0.0));
    }

    proptest! {
        /// The moments of any split of the values, merged, give the variance of the whole.
        #[test]
        fn moments_of_any_split_merge_to_the_whole(
            values in proptest::collection::vec(-1e6f64..1e6, 0..500),
            cuts in proptest::collection::vec(0usize..500, 0..5),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(values.len())).collect();
            cuts.sort();
            let mut merged = Moments::default();
            let mut start = 0;
            for c in cuts.into_iter().chain([values.len()]) {
                merged.merge(&moments(&values[start..c]));
                start = c;
            }
            prop_assert_eq!(merged.count, values.len() as u64);
            for ddof in [0, 1] {
                prop_assert!(close(merged.variance(ddof as u64), two_pass(&values, ddof)),
                    "ddof {}: {:?} vs {:?}", ddof, merged.variance(ddof as u64), two_pass(&values, ddof));
            }
        }
    }
}
