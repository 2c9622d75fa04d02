//! Views: defined once, in SQL; compiled into partial states both layers compute the same way.
//!
//! A view is a windowed aggregation over one source:
//!
//! ```sql
//! SELECT window_start, country, count(*) AS views, sum(amount) AS revenue,
//!        avg(latency_ms) AS avg_latency, approx_distinct(user_id) AS users,
//!        approx_percentile(latency_ms, 0.95) AS p95_latency
//! FROM page_views
//! WHERE country IS NOT NULL
//! GROUP BY tumble(ts, INTERVAL '1 minute'), country
//! ```
//!
//! `tumble(<event time>, <size>)` or `hop(<event time>, <slide>, <size>)` in the GROUP BY
//! names the window; `window_start` and `window_end` in the SELECT refer to it.
//!
//! [`ViewPlan::compile`] (in `view/compile.rs`, one function per clause) checks the
//! definition and turns each aggregate into mergeable *state* columns and a *finalizer*, as
//! the aggregate's own implementation in [`crate::aggregate`] says. The SQL both layers run
//! is generated in `view/sql.rs`: [`ViewPlan::state_sql`] computes the states of a set of
//! events (the batch layer runs it over the raw table; the speed layer over what it
//! consumes); [`ViewPlan::merge_sql`] merges state rows of any number of partial results and
//! finalizes them. Because every state merges associatively, a window split across batch
//! and speed merges exactly.

mod compile;
mod sql;

use crate::aggregate::{Call, MergeableAggregate};
use crate::config::{SourceConfig, ViewConfig};
use crate::error::Result;

pub use sql::quote;

pub const WINDOW_START: &str = "window_start";
pub const WINDOW_END: &str = "window_end";

/// Names of the functions that compute and finalize states (registered by [`crate::functions`]).
pub mod fn_names {
    pub const TUMBLE: &str = "strata_tumble";
    pub const HOP: &str = "strata_hop";
    pub const HLL_SKETCH: &str = "strata_hll_sketch";
    /// [`HLL_SKETCH`] for a hopping window's panes (see `aggregate::sketch`).
    pub const HLL_PANE_SKETCH: &str = "strata_hll_pane_sketch";
    pub const HLL_UNION: &str = "strata_hll_union";
    pub const HLL_ESTIMATE: &str = "strata_hll_estimate";
    pub const KLL_SKETCH: &str = "strata_kll_sketch";
    pub const KLL_MERGE: &str = "strata_kll_merge";
    pub const KLL_QUANTILE: &str = "strata_kll_quantile";
    pub const MOMENTS: &str = "strata_moments";
    pub const MOMENTS_MERGE: &str = "strata_moments_merge";
    pub const MOMENTS_VARIANCE: &str = "strata_moments_variance";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumble,
    Hop,
}

/// The window of a view, in microseconds. For a tumbling window `slide == size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    pub kind: WindowKind,
    pub time_column: String,
    pub size_us: i64,
    pub slide_us: i64,
}

impl WindowSpec {
    /// Start of the last window containing `t` (the only one for a tumbling window).
    pub fn last_start(&self, t: i64) -> i64 {
        t.div_euclid(self.slide_us) * self.slide_us
    }

    /// Starts of every window containing `t`, earliest first.
    pub fn starts(&self, t: i64) -> impl Iterator<Item = i64> + use<> {
        let last = self.last_start(t);
        let n = self.size_us / self.slide_us;
        let slide = self.slide_us;
        (0..n).rev().map(move |k| last - k * slide)
    }
}

/// One aggregate of a view.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// Output column name.
    pub name: String,
    /// What it computes: its states, merge and finalizer.
    pub function: &'static dyn MergeableAggregate,
    /// How the view calls it.
    pub call: Call,
    /// `FILTER (WHERE ...)`, as SQL.
    pub filter: Option<String>,
}

/// One column of a view's state table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateColumn {
    pub name: String,
    /// The aggregate function merging the column with itself.
    pub merge: &'static str,
    /// SQL computing the state from events.
    pub compute: String,
    /// See [`State::empty`](crate::aggregate::State::empty).
    pub empty: Option<&'static str>,
    /// SQL computing a hopping window's pane state from events (see
    /// [`State::pane`](crate::aggregate::State::pane)).
    pub pane: String,
}

/// One output column of a view, in SELECT order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    WindowStart { name: String },
    WindowEnd { name: String },
    Group { column: String, name: String },
    Aggregate { index: usize },
}

/// A compiled view.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewPlan {
    pub name: String,
    pub source: String,
    pub sql: String,
    pub window: WindowSpec,
    pub filter: Option<String>,
    /// GROUP BY columns besides the window, as source column names.
    pub group_columns: Vec<String>,
    pub aggregates: Vec<Aggregate>,
    pub outputs: Vec<Output>,
}

impl ViewPlan {
    /// Compiles a view definition, refusing what the incremental engine cannot maintain
    /// with a message naming the part and why.
    pub fn compile(view: &ViewConfig, sources: &[SourceConfig]) -> Result<ViewPlan> {
        compile::Compiler::new(&view.name, sources).compile(&view.sql)
    }

    /// The state columns, in the order of the state table (after the keys).
    pub fn state_columns(&self) -> Vec<StateColumn> {
        let mut out = Vec::new();
        for a in &self.aggregates {
            let filter = a
                .filter
                .as_ref()
                .map(|f| format!(" FILTER (WHERE {f})"))
                .unwrap_or_default();
            for state in a.function.states(&a.call) {
                out.push(StateColumn {
                    name: state_column(&a.name, state.suffix),
                    merge: state.merge,
                    compute: format!("{}{filter}", state.compute),
                    pane: format!("{}{filter}", state.pane.as_ref().unwrap_or(&state.compute)),
                    empty: state.empty,
                });
            }
        }
        out
    }

    /// The key columns of the state table: `window_start`, then the group columns.
    pub fn key_columns(&self) -> Vec<String> {
        let mut keys = vec![WINDOW_START.to_string()];
        keys.extend(self.group_columns.iter().cloned());
        keys
    }

    /// A fingerprint of what the view computes: a published version computed under another
    /// definition is recomputed.
    pub fn fingerprint(&self) -> String {
        let text = format!(
            "v1|{}|{}",
            self.per_event_state_sql(&self.source, &[]),
            self.merge_sql("states")
        );
        format!("{:016x}", crate::fnv64(text.as_bytes()))
    }
}

/// The name of an aggregate's state column: `<output name>__<suffix>`.
fn state_column(aggregate: &str, suffix: &str) -> String {
    format!("{aggregate}__{suffix}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::error::Error;

    fn sources() -> Vec<SourceConfig> {
        let text = r#"
[lake]
url = "file:///tmp/x"
[[sources]]
name = "page_views"
event_time = { column = "ts" }
[sources.schema]
ts = "timestamp"
created = "timestamp"
country = "string"
url = "string"
user_id = "string"
amount = "float64"
latency_ms = "int64"
"#;
        Config::parse(text, Path::new("t.toml"), &BTreeMap::new())
            .unwrap()
            .sources
    }

    fn compile(sql: &str) -> Result<ViewPlan> {
        ViewPlan::compile(
            &ViewConfig {
                name: "v".into(),
                sql: sql.into(),
            },
            &sources(),
        )
    }

    fn refused(sql: &str) -> (String, String) {
        match compile(sql) {
            Err(Error::View { part, message, .. }) => (part, message),
            other => panic!("expected the view to be refused, got {other:?}"),
        }
    }

    const FULL: &str = "SELECT window_start, window_end, country, count(*) AS views, sum(amount) AS revenue, \
        avg(latency_ms) AS avg_latency, approx_distinct(user_id) AS users, \
        approx_percentile(latency_ms, 0.95) AS p95, min(amount), max(amount) AS top, \
        count(url) FILTER (WHERE url LIKE '/checkout%') AS checkouts \
        FROM page_views WHERE country IS NOT NULL GROUP BY tumble(ts, INTERVAL '1 minute'), country";

    #[test]
    fn a_full_view_compiles_to_states() {
        let plan = compile(FULL).unwrap();
        assert_eq!(
            plan.window,
            WindowSpec {
                kind: WindowKind::Tumble,
                time_column: "ts".into(),
                size_us: 60_000_000,
                slide_us: 60_000_000
            }
        );
        assert_eq!(plan.group_columns, ["country"]);
        assert_eq!(plan.filter.as_deref(), Some("country IS NOT NULL"));
        let states: Vec<_> = plan.state_columns().into_iter().map(|s| (s.name, s.compute)).collect();
        assert_eq!(
            states,
            [
                ("views__count", "count(*)"),
                ("revenue__sum", "sum(amount)"),
                ("avg_latency__sum", "sum(latency_ms)"),
                ("avg_latency__count", "count(latency_ms)"),
                ("users__hll", "strata_hll_sketch(user_id)"),
                ("p95__kll", "strata_kll_sketch(latency_ms)"),
                ("min_amount__min", "min(amount)"),
                ("top__max", "max(amount)"),
                ("checkouts__count", "count(url) FILTER (WHERE url LIKE '/checkout%')"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(
            plan.state_sql("page_views"),
            "SELECT \"window_start\", \"country\", count(*) AS \"views__count\", sum(amount) AS \"revenue__sum\", \
             sum(latency_ms) AS \"avg_latency__sum\", count(latency_ms) AS \"avg_latency__count\", \
             strata_hll_sketch(user_id) AS \"users__hll\", strata_kll_sketch(latency_ms) AS \"p95__kll\", \
             min(amount) AS \"min_amount__min\", max(amount) AS \"top__max\", \
             count(url) FILTER (WHERE url LIKE '/checkout%') AS \"checkouts__count\" \
             FROM (SELECT strata_tumble(\"ts\", 60000000) AS \"window_start\", * FROM \"page_views\" \
             WHERE country IS NOT NULL) AS events GROUP BY \"window_start\", \"country\""
        );
        let merge = plan.merge_sql("s");
        assert!(merge.starts_with("SELECT \"window_start\" AS \"window_start\", \"window_start\" + arrow_cast(60000000, 'Duration(Microsecond)') AS \"window_end\", \"country\" AS \"country\", sum(\"views__count\") AS \"views\""), "{merge}");
        assert!(
            merge.contains("strata_hll_estimate(strata_hll_union(\"users__hll\")) AS \"users\""),
            "{merge}"
        );
        assert!(
            merge.contains("strata_kll_quantile(strata_kll_merge(\"p95__kll\"), 0.95) AS \"p95\""),
            "{merge}"
        );
        assert!(
            merge.ends_with("FROM \"s\" GROUP BY \"window_start\", \"country\""),
            "{merge}"
        );
        assert_eq!(plan.fingerprint(), compile(FULL).unwrap().fingerprint());
        assert_ne!(
            plan.fingerprint(),
            compile(&FULL.replace("1 minute", "2 minutes")).unwrap().fingerprint()
        );
    }

    #[test]
    fn stddev_and_variance_keep_mergeable_moments() {
        let plan = compile(
            "SELECT window_start, stddev(latency_ms) AS sd, stddev_pop(latency_ms) AS sdp, var_samp(amount), \
             var_pop(amount) FILTER (WHERE country = 'de') AS vp FROM page_views GROUP BY tumble(ts, INTERVAL '1 minute')",
        )
        .unwrap();
        let states: Vec<_> = plan
            .state_columns()
            .into_iter()
            .map(|s| (s.name, s.merge, s.compute))
            .collect();
        assert_eq!(
            states,
            [
                ("sd__moments", "strata_moments_merge", "strata_moments(latency_ms)"),
                ("sdp__moments", "strata_moments_merge", "strata_moments(latency_ms)"),
                (
                    "var_samp_amount__moments",
                    "strata_moments_merge",
                    "strata_moments(amount)"
                ),
                (
                    "vp__moments",
                    "strata_moments_merge",
                    "strata_moments(amount) FILTER (WHERE country = 'de')"
                ),
            ]
            .map(|(a, b, c)| (a.to_string(), b, c.to_string()))
        );
        let merge = plan.merge_sql("s");
        for part in [
            "sqrt(strata_moments_variance(strata_moments_merge(\"sd__moments\"), 1)) AS \"sd\"",
            "sqrt(strata_moments_variance(strata_moments_merge(\"sdp__moments\"), 0)) AS \"sdp\"",
            "strata_moments_variance(strata_moments_merge(\"var_samp_amount__moments\"), 1) AS \"var_samp_amount\"",
            "strata_moments_variance(strata_moments_merge(\"vp__moments\"), 0) AS \"vp\"",
        ] {
            assert!(merge.contains(part), "{part} not in {merge}");
        }
        let (part, message) =
            refused("SELECT window_start, stddev(*) AS s FROM page_views GROUP BY tumble(ts, INTERVAL '1 minute')");
        assert_eq!(
            (part.as_str(), message.as_str()),
            ("stddev(*)", "expected stddev(<expression>)")
        );
    }

    #[test]
    fn hopping_windows_unnest_every_window_of_an_event() {
        let plan = compile("SELECT window_start, count(*) AS n FROM page_views GROUP BY hop(ts, INTERVAL '1' MINUTE, INTERVAL '5 minutes')").unwrap();
        assert_eq!(plan.window.slide_us, 60_000_000);
        assert_eq!(plan.window.size_us, 300_000_000);
        assert!(
            plan.per_event_state_sql("t", &[])
                .contains("unnest(strata_hop(\"ts\", 60000000, 300000000)) AS \"window_start\"")
        );
        // Computed per pane: events grouped per slide, each pane spread over its windows.
        let panes = plan.state_sql("t");
        assert!(
            panes.contains("strata_tumble(\"ts\", 60000000) AS \"window_start\""),
            "{panes}"
        );
        assert!(
            panes.contains("unnest(strata_hop(\"window_start\", 60000000, 300000000)) AS \"window_start\""),
            "{panes}"
        );
        let starts: Vec<i64> = plan.window.starts(130_000_000).collect();
        assert_eq!(starts, [-120_000_000, -60_000_000, 0, 60_000_000, 120_000_000]);
    }

    #[test]
    fn views_the_engine_cannot_maintain_are_refused_naming_the_part() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "SELECT window_start, count(*) FROM page_views p JOIN users u ON p.user_id = u.id GROUP BY tumble(ts, INTERVAL '1 minute')",
                "users",
                "joins are not supported",
            ),
            (
                "SELECT country, count(*) FROM page_views GROUP BY country",
                "GROUP BY",
                "no window",
            ),
            (
                "SELECT window_start, median(amount) FROM page_views GROUP BY tumble(ts, INTERVAL '1 minute')",
                "median(amount)",
                "not an aggregate with a mergeable state",
            ),
            (
                "SELECT window_start, count(DISTINCT user_id) FROM page_views GROUP BY tumble(ts, INTERVAL '1 minute')",
                "count(DISTINCT user_id)",
                "use approx_distinct(user_id)",
            ),
            (
                "SELECT window_start, count(*) FROM page_views GROUP BY tumble(ts, INTERVAL '1 minute') HAVING count(*) > 1",
                "HAVING count(*) > 1",
                "filter in your query",
            ),
            (
                "SELECT window_start, count(*) FROM page_views GROUP BY tumble(created, INTERVAL '1 minute')",
                "tumble(created, INTERVAL '1 minute')",
                "event-time column",
            ),
            (
                "SELECT window_start, count(*) FROM page_views GROUP BY tumble(ts, INTERVAL '1 month')",
                "INTERVAL '1 month'",
                "not a fixed interval",
            ),
            (
                "SELECT window_start, count(*) FROM page_views GROUP BY hop(ts, INTERVAL '2 minutes', INTERVAL '5 minutes')",
                "hop(ts",
                "whole multiple of the slide",
            ),
            (
                "SELECT window_start, url, count(*) FROM page_views GROUP BY tumble(ts, INTERVAL '1 minute')",
                "url",
                "neither in the GROUP BY",
            ),
            (
                "SELECT window_start, sum(amount) / count(*) FROM page_views GROUP BY tumble(ts, INTERVAL '1 minute')",
                "sum(amount) / count(*)",
                "expressions over aggregates",
            ),
            (
                "SELECT window_start, count(*) FROM page_views WHERE ts > now() GROUP BY tumble(ts, INTERVAL '1 minute')",
                "WHERE: now()",
                "depends on when it runs",
            ),
            (
                "SELECT window_start, count(*) FROM page_views WHERE user_id IN (SELECT id FROM x) GROUP BY tumble(ts, INTERVAL '1 minute')",
                "WHERE",
                "subqueries",
            ),
            (
                "SELECT window_start, count(*) FROM clicks GROUP BY tumble(ts, INTERVAL '1 minute')",
                "FROM clicks",
                "no source named `clicks`",
            ),
            (
                "SELECT count(*) FROM page_views GROUP BY tumble(ts, INTERVAL '1 minute')",
                "SELECT",
                "select window_start",
            ),
            (
                "SELECT window_start, count(*) FROM page_views GROUP BY tumble(ts, INTERVAL '1 minute'), country",
                "SELECT",
                "select the GROUP BY column `country`",
            ),
            (
                "SELECT window_start, count(*) FROM page_views GROUP BY tumble(ts, INTERVAL '1 minute') ORDER BY 1",
                "ORDER BY 1",
                "order them in your query",
            ),
            (
                "SELECT window_start, row_number() OVER () FROM page_views GROUP BY tumble(ts, INTERVAL '1 minute')",
                "row_number() OVER ()",
                "OVER",
            ),
            (
                "SELECT window_start, approx_percentile(amount, 95) FROM page_views GROUP BY tumble(ts, INTERVAL '1 minute')",
                "approx_percentile(amount, 95)",
                "between 0 and 1",
            ),
            (
                "SELECT window_start, count(*) AS n, sum(amount) AS n FROM page_views GROUP BY tumble(ts, INTERVAL '1 minute')",
                "sum(amount) AS n",
                "used twice",
            ),
            (
                "SELECT window_start, count(*) FROM page_views GROUP BY tumble(ts, INTERVAL '1 minute') UNION SELECT 1",
                "UNION",
                "set operations",
            ),
            (
                "SELECT window_start, nosuch FROM page_views GROUP BY tumble(ts, INTERVAL '1 minute')",
                "nosuch",
                "not a column of source `page_views`",
            ),
            (
                "DELETE FROM page_views",
                "DELETE FROM page_views",
                "SELECT ... GROUP BY",
            ),
            ("SELEC window_start FROM page_views", "SQL", "Expected"),
        ];
        for (sql, part, message) in cases {
            let (got_part, got_message) = refused(sql);
            assert!(
                got_part.contains(part),
                "{sql}\n  part {got_part:?} lacks {part:?} ({got_message})"
            );
            assert!(
                got_message.contains(message),
                "{sql}\n  message {got_message:?} lacks {message:?}"
            );
        }
    }
}

/// Property: for every aggregate, the states of any split of the events, merged, finalize to
/// the same answer as the states of all the events (the exactness the speed/batch merge
/// relies on). Runs the views' own SQL with DataFusion.
#[cfg(test)]
mod merge_properties {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
    use datafusion::datasource::MemTable;
    use proptest::prelude::*;

    use super::*;
    use crate::config::Config;
    use crate::schema::SourceSchema;
    use crate::session::{new_context, session_config};

    const CONFIG: &str = r#"
[lake]
url = "file:///tmp/unused"
[[sources]]
name = "events"
event_time = { column = "ts" }
[sources.schema]
ts = "timestamp"
k = "string"
u = "string"
x = "int64"
[[views]]
name = "tumbling"
sql = """SELECT window_start, window_end, k, count(*) AS n, count(x) AS nx, sum(x) AS s, min(x) AS lo, max(x) AS hi,
  avg(x) AS mean, approx_distinct(u) AS users, approx_percentile(x, 0.5) AS median,
  stddev(x) AS sd, var_pop(x) AS vp, stddev_pop(x) FILTER (WHERE x > 20) AS sdp,
  count(*) FILTER (WHERE x > 50) AS big FROM events WHERE k <> 'skip' GROUP BY tumble(ts, INTERVAL '10 seconds'), k"""
[[views]]
name = "hopping"
sql = """SELECT window_start, count(*) AS n, sum(x) AS s, avg(x) AS mean, approx_distinct(u) AS users, variance(x) AS var
  FROM events GROUP BY hop(ts, INTERVAL '5 seconds', INTERVAL '15 seconds')"""
"#;

    #[derive(Debug, Clone)]
    struct Event {
        t: i64,
        k: &'static str,
        u: u32,
        x: Option<i64>,
    }

    fn event() -> impl Strategy<Value = Event> {
        (
            0i64..60_000_000,
            prop::sample::select(vec!["a", "b", "c", "skip"]),
            0u32..256,
            prop::option::of(0i64..100),
        )
            .prop_map(|(t, k, u, x)| Event { t, k, u, x })
    }

    fn batch(source: &SourceSchema, events: &[Event]) -> RecordBatch {
        let columns: Vec<arrow::array::ArrayRef> = vec![
            Arc::new(
                TimestampMicrosecondArray::from(events.iter().map(|e| e.t).collect::<Vec<_>>()).with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(events.iter().map(|e| Some(e.k)).collect::<Vec<_>>())),
            Arc::new(StringArray::from(
                events.iter().map(|e| Some(format!("u{}", e.u))).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(events.iter().map(|e| e.x).collect::<Vec<_>>())),
        ];
        crate::schema::complete_raw_batch(source, columns).unwrap()
    }

    /// A value of a finalized row: floats compared within a relative 1e-9 (merging moments
    /// in another order may change the last bits), everything else exactly.
    #[derive(Debug, Clone)]
    enum Cell {
        Exact(String),
        Float(f64),
    }

    impl PartialEq for Cell {
        fn eq(&self, other: &Cell) -> bool {
            match (self, other) {
                (Cell::Exact(a), Cell::Exact(b)) => a == b,
                (Cell::Float(a), Cell::Float(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
                _ => false,
            }
        }
    }

    /// Finalized view rows keyed by their key columns, values by column name: the states of
    /// each part, finalized by `sql` (merge_sql, or finalize_sql for one part).
    async fn finalized(
        plan: &ViewPlan,
        source: &Arc<SourceSchema>,
        parts: &[&[Event]],
        sql: fn(&ViewPlan, &str) -> String,
    ) -> BTreeMap<String, Vec<(String, Cell)>> {
        finalized_from(plan, source, parts, ViewPlan::state_sql, sql).await
    }

    /// [`finalized`] with the states of each part computed by `state_sql`.
    async fn finalized_from(
        plan: &ViewPlan,
        source: &Arc<SourceSchema>,
        parts: &[&[Event]],
        state_sql: fn(&ViewPlan, &str) -> String,
        sql: fn(&ViewPlan, &str) -> String,
    ) -> BTreeMap<String, Vec<(String, Cell)>> {
        let ctx = new_context(session_config()).unwrap();
        let mut states = Vec::new();
        for part in parts {
            let table = MemTable::try_new(source.raw.clone(), vec![vec![batch(source, part)]]).unwrap();
            let _ = ctx.deregister_table("events");
            ctx.register_table("events", Arc::new(table)).unwrap();
            states.extend(
                ctx.sql(&state_sql(plan, "events"))
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap(),
            );
        }
        let schema = states.first().map(|b| b.schema());
        let Some(schema) = schema else { return BTreeMap::new() };
        ctx.register_table("states", Arc::new(MemTable::try_new(schema, vec![states]).unwrap()))
            .unwrap();
        let rows = ctx.sql(&sql(plan, "states")).await.unwrap().collect().await.unwrap();
        let mut out = BTreeMap::new();
        for b in rows {
            for r in 0..b.num_rows() {
                let mut key = String::new();
                let mut values = Vec::new();
                for (i, f) in b.schema().fields().iter().enumerate() {
                    let c = b.column(i);
                    let v = if c.is_null(r) {
                        Cell::Exact("NULL".to_string())
                    } else if let Some(a) = c.as_primitive_opt::<Float64Type>() {
                        Cell::Float(a.value(r))
                    } else if let Some(a) = c.as_primitive_opt::<Int64Type>() {
                        Cell::Exact(a.value(r).to_string())
                    } else if let Some(a) = c.as_primitive_opt::<TimestampMicrosecondType>() {
                        Cell::Exact(a.value(r).to_string())
                    } else {
                        Cell::Exact(c.as_string::<i32>().value(r).to_string())
                    };
                    match v {
                        Cell::Exact(v) if f.name() == WINDOW_START || f.name() == "k" => {
                            key.push_str(&v);
                            key.push('|');
                        }
                        v => values.push((f.name().clone(), v)),
                    }
                }
                out.insert(key, values);
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
        #[test]
        fn states_of_any_split_merge_to_the_states_of_the_whole(
            events in proptest::collection::vec(event(), 0..400),
            cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            let config = Config::parse(CONFIG, Path::new("t.toml"), &Default::default()).unwrap();
            let source = SourceSchema::new(&config.sources[0]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(events.len())).collect();
            cuts.sort();
            let mut parts: Vec<&[Event]> = Vec::new();
            let mut start = 0;
            for c in cuts {
                parts.push(&events[start..c]);
                start = c;
            }
            parts.push(&events[start..]);
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            for plan in config.view_plans().unwrap() {
                let whole = rt.block_on(finalized(&plan, &source, &[&events], ViewPlan::merge_sql));
                let split = rt.block_on(finalized(&plan, &source, &parts, ViewPlan::merge_sql));
                // Cells have fewer than 256 distinct users and 200 values: the sketches are
                // exact, so every aggregate must agree exactly.
                prop_assert_eq!(&whole, &split, "view {}", plan.name);
                // The whole's states hold one row per window and group: finalized row by row
                // (as the serving layer finalizes a batch version's rows) they are the same.
                let rows = rt.block_on(finalized(&plan, &source, &[&events], ViewPlan::finalize_sql));
                prop_assert_eq!(&whole, &rows, "view {} finalized row by row", plan.name);
                // A hopping window's states, computed per pane and spread over the windows,
                // are those of each event aggregated into every window it falls in.
                let per_event = |p: &ViewPlan, t: &str| p.per_event_state_sql(t, &[]);
                let by_event = rt.block_on(finalized_from(&plan, &source, &parts, per_event, ViewPlan::merge_sql));
                prop_assert_eq!(&split, &by_event, "view {} per event", plan.name);
            }
        }
    }
    /// Finalizing a state row as it is gives what merging it gives, also where the sketches
    /// estimate: 30,000 distinct users (HyperLogLog past its exact range) and 30,000 values
    /// (KLL past its k of 200) in one window. Exactly, but for the KLL quantile: merging a
    /// KLL sketch compacts it again at random, so both are held to the sketch's rank error
    /// against the true quantile instead.
    #[tokio::test]
    async fn a_state_row_finalizes_as_its_merge_where_the_sketches_estimate() {
        let config = Config::parse(CONFIG, Path::new("t.toml"), &Default::default()).unwrap();
        let source = SourceSchema::new(&config.sources[0]);
        let xs: Vec<i64> = (0..30_000i64).map(|i| (i * 7919) % 10_007).collect();
        let events: Vec<Event> = xs
            .iter()
            .enumerate()
            .map(|(i, &x)| Event {
                t: i as i64 * 100,
                k: "a",
                u: i as u32,
                x: Some(x),
            })
            .collect();
        let mut sorted = xs.clone();
        sorted.sort();
        // The share of values below `v`: a quantile's rank.
        let rank = |v: f64| sorted.partition_point(|&x| (x as f64) < v) as f64 / sorted.len() as f64;
        for plan in config.view_plans().unwrap() {
            let mut merged = finalized(&plan, &source, &[&events], ViewPlan::merge_sql).await;
            let mut rows = finalized(&plan, &source, &[&events], ViewPlan::finalize_sql).await;
            if plan.name == "tumbling" {
                let (_, values) = merged.first_key_value().unwrap();
                let users = &values.iter().find(|(c, _)| c == "users").unwrap().1;
                assert_ne!(users, &Cell::Exact("30000".into()), "the HyperLogLog estimates here");
                for answer in [&mut merged, &mut rows] {
                    let values = answer.values_mut().next().unwrap();
                    let at = values.iter().position(|(c, _)| c == "median").unwrap();
                    let Cell::Float(median) = values.remove(at).1 else {
                        panic!("a float median")
                    };
                    assert!(
                        (rank(median) - 0.5).abs() <= 0.02,
                        "median {median} at rank {}",
                        rank(median)
                    );
                }
            }
            assert_eq!(merged, rows, "view {}", plan.name);
        }
    }

    /// The states of a hopping window computed per pane have the schema (types and
    /// nullability) of those computed per event: one view table, whichever computed it.
    #[tokio::test]
    async fn pane_states_have_the_schema_of_per_event_states() {
        let config = Config::parse(CONFIG, Path::new("t.toml"), &Default::default()).unwrap();
        let source = SourceSchema::new(&config.sources[0]);
        let ctx = new_context(session_config()).unwrap();
        ctx.register_table(
            "events",
            Arc::new(MemTable::try_new(source.raw.clone(), vec![vec![]]).unwrap()),
        )
        .unwrap();
        let mut hopping = 0;
        for plan in config.view_plans().unwrap() {
            let partition = quote(crate::schema::PARTITION);
            let keyed = [(partition.as_str(), "__p")];
            let panes = ctx.sql(&plan.state_sql_keyed("events", &keyed)).await.unwrap();
            let events = ctx.sql(&plan.per_event_state_sql("events", &keyed)).await.unwrap();
            assert_eq!(
                panes.schema().as_arrow(),
                events.schema().as_arrow(),
                "view {}",
                plan.name
            );
            hopping += usize::from(plan.window.kind == WindowKind::Hop);
        }
        assert_eq!(hopping, 1);
    }
}
