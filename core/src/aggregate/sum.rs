//! `sum(x)`: sums of sums.

use super::{Call, MergeableAggregate, State, simple};

pub struct Sum;

impl MergeableAggregate for Sum {
    fn names(&self) -> &'static [&'static str] {
        &["sum"]
    }

    fn states(&self, call: &Call) -> Vec<State> {
        simple(call, "sum", "sum", "sum")
    }

    fn finalize(&self, _: &Call, merged: &dyn Fn(&str) -> String) -> String {
        merged("sum")
    }
}
