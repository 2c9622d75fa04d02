//! Mergeable aggregates: what a view may compute, one implementation per aggregate.
//!
//! A view keeps, per window and group, the *states* of its aggregates rather than their
//! values: states of any two sets of events merge into the states of their union, so a
//! window split between the batch and the speed layer (or between Kafka partitions, or
//! archive segments) merges exactly. Each aggregate says, in its own file:
//!
//! - how it is called ([`MergeableAggregate::check`]): `count(*)`, one expression, constants;
//! - its state columns, each with the SQL computing it from events and the aggregate that
//!   merges it with itself ([`MergeableAggregate::states`]);
//! - how merged states finalize into the value a client sees ([`MergeableAggregate::finalize`]);
//! - the DataFusion functions those need ([`MergeableAggregate::register`]).
//!
//! ```text
//!  aggregate                 state columns                     merge            finalize
//!  count(*), count(x)        <name>__count  (int64)            sum              as is
//!  sum(x)                    <name>__sum                       sum              as is
//!  min(x) / max(x)           <name>__min / <name>__max         min / max        as is
//!  avg(x)                    <name>__sum, <name>__count        sum, sum         sum / count
//!  stddev(x), variance(x)    <name>__moments (count, mean, M2) moments merge    √(M2/(n-1)) ...
//!  approx_distinct(x)        <name>__hll  (HLL sketch bytes)   sketch union     estimate
//!  approx_percentile(x, q)   <name>__kll  (KLL sketch bytes)   sketch merge     quantile q
//! ```
//!
//! The view compiler ([`crate::view`]) finds an aggregate by the name a view calls it with
//! ([`lookup`]); adding an aggregate is one file here and one line in [`AGGREGATES`].

mod approx_distinct;
mod approx_percentile;
mod avg;
mod count;
mod min_max;
pub mod sketch;
mod sum;
pub mod variance;

use datafusion::common::Result;
use datafusion::execution::FunctionRegistry;

/// One call of an aggregate in a view, as the compiler parsed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The name the view called it by, lower-case (`stddev_pop`, `mean`, ...).
    pub name: String,
    /// The row expression it aggregates, as SQL; `None` for `count(*)`.
    pub arg: Option<String>,
    /// Constant numeric arguments after the expression (the `q` of `approx_percentile`).
    pub params: Vec<f64>,
}

impl Call {
    /// The argument as SQL, `*` for `count(*)`.
    pub fn arg_sql(&self) -> &str {
        self.arg.as_deref().unwrap_or("*")
    }

    /// The check of the aggregates that take one expression and nothing else.
    pub fn expect_one_expression(&self) -> std::result::Result<(), String> {
        if self.arg.is_none() || !self.params.is_empty() {
            return Err(format!("expected {}(<expression>)", self.name));
        }
        Ok(())
    }
}

/// One state column of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The column is named `<output name>__<suffix>`.
    pub suffix: &'static str,
    /// The aggregate function merging the column with itself (`sum`, `strata_hll_union`, ...).
    pub merge: &'static str,
    /// SQL computing the state from events (the view's FILTER is appended by the compiler).
    pub compute: String,
    /// The state of no events where `compute` is never null (a count's `0`): a merge of
    /// states is then never null either (it is coalesced to this).
    pub empty: Option<&'static str>,
    /// SQL computing a hopping window's pane state from events where it differs from
    /// `compute`: a pane's state is merged into its windows' within the same plan, never
    /// stored, so it may take a form that merges faster (the same states result).
    pub pane: Option<String>,
}

/// An aggregate whose partial results merge associatively.
pub trait MergeableAggregate: Send + Sync + 'static {
    /// The names a view may call it by.
    fn names(&self) -> &'static [&'static str];

    /// How error messages list it among the aggregates a view may use.
    fn listed(&self) -> &'static str {
        self.names()[0]
    }

    /// Refuses a call with the wrong arguments, saying what is expected.
    fn check(&self, call: &Call) -> std::result::Result<(), String> {
        call.expect_one_expression()
    }

    /// The state columns of a call, in the order they are stored.
    fn states(&self, call: &Call) -> Vec<State>;

    /// SQL finalizing the merged states into the aggregate's value; `merged(suffix)` is SQL
    /// for the merge of state column `suffix` over every state row of the window and group.
    fn finalize(&self, call: &Call, merged: &dyn Fn(&str) -> String) -> String;

    /// Registers the DataFusion functions its states and finalizer use.
    fn register(&self, _registry: &mut dyn FunctionRegistry) -> Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for dyn MergeableAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.names()[0])
    }
}

impl PartialEq for dyn MergeableAggregate {
    fn eq(&self, other: &Self) -> bool {
        self.names()[0] == other.names()[0]
    }
}

/// Every aggregate a view may use.
pub static AGGREGATES: &[&dyn MergeableAggregate] = &[
    &count::Count,
    &sum::Sum,
    &min_max::Min,
    &min_max::Max,
    &avg::Avg,
    &variance::Variance,
    &approx_distinct::ApproxDistinct,
    &approx_percentile::ApproxPercentile,
];

/// The aggregate a view calls by `name` (lower-case).
pub fn lookup(name: &str) -> Option<&'static dyn MergeableAggregate> {
    AGGREGATES.iter().copied().find(|a| a.names().contains(&name))
}

/// The aggregates a view may use, for error messages: `count, sum, ...`.
pub fn names() -> String {
    let names: Vec<&str> = AGGREGATES.iter().map(|a| a.listed()).collect();
    names.join(", ")
}

/// Registers the functions of every aggregate.
pub fn register(registry: &mut dyn FunctionRegistry) -> Result<()> {
    for a in AGGREGATES {
        a.register(registry)?;
    }
    Ok(())
}

/// One state column merged with `merge`, the aggregate's value being the merge itself: the
/// shape of count, sum, min and max.
fn simple(call: &Call, suffix: &'static str, compute: &str, merge: &'static str) -> Vec<State> {
    vec![State {
        suffix,
        merge,
        compute: format!("{compute}({})", call.arg_sql()),
        empty: (compute == "count").then_some("0"),
        pane: None,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_finds_one_aggregate() {
        let mut seen = std::collections::BTreeSet::new();
        for a in AGGREGATES {
            for n in a.names() {
                assert!(seen.insert(*n), "`{n}` names two aggregates");
                assert_eq!(lookup(n).map(|f| f.names()[0]), Some(a.names()[0]));
            }
        }
        assert!(lookup("median").is_none());
        assert_eq!(
            names(),
            "count, sum, min, max, avg, stddev, variance, approx_distinct, approx_percentile"
        );
    }
}
