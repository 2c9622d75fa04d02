//! `avg(x)` (or `mean(x)`): a sum and a count, merged apart, divided at the end.

use super::{Call, MergeableAggregate, State};

pub struct Avg;

impl MergeableAggregate for Avg {
    fn names(&self) -> &'static [&'static str] {
        &["avg", "mean"]
    }

    fn states(&self, call: &Call) -> Vec<State> {
        let arg = call.arg_sql();
        vec![
            State {
                suffix: "sum",
                merge: "sum",
                compute: format!("sum({arg})"),
                empty: None,
                pane: None,
            },
            State {
                suffix: "count",
                merge: "sum",
                compute: format!("count({arg})"),
                empty: Some("0"),
                pane: None,
            },
        ]
    }

    fn finalize(&self, _: &Call, merged: &dyn Fn(&str) -> String) -> String {
        format!(
            "CAST({} AS DOUBLE) / CAST(nullif({}, 0) AS DOUBLE)",
            merged("sum"),
            merged("count")
        )
    }
}
