//! `approx_percentile(x, q)`: a KLL sketch per state row, merged, queried for `q` at the end.

use datafusion::common::Result;
use datafusion::execution::FunctionRegistry;

use super::{Call, MergeableAggregate, State, sketch};
use crate::view::fn_names;

pub struct ApproxPercentile;

impl MergeableAggregate for ApproxPercentile {
    fn names(&self) -> &'static [&'static str] {
        &["approx_percentile", "approx_percentile_cont", "approx_quantile"]
    }

    fn check(&self, call: &Call) -> Result<(), String> {
        match (&call.arg, call.params.as_slice()) {
            (Some(_), [q]) if (0.0..=1.0).contains(q) => Ok(()),
            (Some(arg), [_]) => Err(format!(
                "the percentile must be a number between 0 and 1, e.g. {}({arg}, 0.95)",
                call.name
            )),
            _ => Err(format!(
                "expected {}(<expression>, <percentile between 0 and 1>)",
                call.name
            )),
        }
    }

    fn states(&self, call: &Call) -> Vec<State> {
        vec![State {
            suffix: "kll",
            merge: fn_names::KLL_MERGE,
            compute: format!("{}({})", fn_names::KLL_SKETCH, call.arg_sql()),
            empty: None,
            pane: None,
        }]
    }

    fn finalize(&self, call: &Call, merged: &dyn Fn(&str) -> String) -> String {
        format!("{}({}, {:?})", fn_names::KLL_QUANTILE, merged("kll"), call.params[0])
    }

    fn register(&self, registry: &mut dyn FunctionRegistry) -> Result<()> {
        sketch::register_kll(registry)
    }
}
