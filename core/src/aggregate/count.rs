//! `count(*)` and `count(x)`: a count per state row, summed.

use super::{Call, MergeableAggregate, State, simple};

pub struct Count;

impl MergeableAggregate for Count {
    fn names(&self) -> &'static [&'static str] {
        &["count"]
    }

    fn check(&self, call: &Call) -> Result<(), String> {
        match (&call.arg, call.params.as_slice()) {
            (_, []) => Ok(()),
            _ => Err("expected count(*) or count(<expression>)".into()),
        }
    }

    fn states(&self, call: &Call) -> Vec<State> {
        simple(call, "count", "count", "sum")
    }

    fn finalize(&self, _: &Call, merged: &dyn Fn(&str) -> String) -> String {
        merged("count")
    }
}
