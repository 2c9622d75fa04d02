//! `approx_distinct(x)`: an HLL sketch per state row, unioned, estimated at the end.

use datafusion::common::Result;
use datafusion::execution::FunctionRegistry;

use super::{Call, MergeableAggregate, State, sketch};
use crate::view::fn_names;

pub struct ApproxDistinct;

impl MergeableAggregate for ApproxDistinct {
    fn names(&self) -> &'static [&'static str] {
        &["approx_distinct", "approx_count_distinct"]
    }

    fn states(&self, call: &Call) -> Vec<State> {
        vec![State {
            suffix: "hll",
            merge: fn_names::HLL_UNION,
            compute: format!("{}({})", fn_names::HLL_SKETCH, call.arg_sql()),
            empty: None,
            pane: Some(format!("{}({})", fn_names::HLL_PANE_SKETCH, call.arg_sql())),
        }]
    }

    fn finalize(&self, _: &Call, merged: &dyn Fn(&str) -> String) -> String {
        format!("{}({})", fn_names::HLL_ESTIMATE, merged("hll"))
    }

    fn register(&self, registry: &mut dyn FunctionRegistry) -> Result<()> {
        sketch::register_hll(registry)
    }
}
