//! `min(x)` and `max(x)`: the extreme of the extremes.

use super::{Call, MergeableAggregate, State, simple};

pub struct Min;

impl MergeableAggregate for Min {
    fn names(&self) -> &'static [&'static str] {
        &["min"]
    }

    fn states(&self, call: &Call) -> Vec<State> {
        simple(call, "min", "min", "min")
    }

    fn finalize(&self, _: &Call, merged: &dyn Fn(&str) -> String) -> String {
        merged("min")
    }
}

pub struct Max;

impl MergeableAggregate for Max {
    fn names(&self) -> &'static [&'static str] {
        &["max"]
    }

    fn states(&self, call: &Call) -> Vec<State> {
        simple(call, "max", "max", "max")
    }

    fn finalize(&self, _: &Call, merged: &dyn Fn(&str) -> String) -> String {
        merged("max")
    }
}
