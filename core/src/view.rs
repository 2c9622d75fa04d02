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
//! Compilation turns each aggregate into a mergeable *state* and a *finalizer*:
//!
//! ```text
//!  aggregate                 state columns                     merge            finalize
//!  count(*), count(x)        <name>__count  (int64)            sum              as is
//!  sum(x)                    <name>__sum                       sum              as is
//!  min(x) / max(x)           <name>__min / <name>__max         min / max        as is
//!  avg(x)                    <name>__sum, <name>__count        sum, sum         sum / count
//!  approx_distinct(x)        <name>__hll  (HLL sketch bytes)   sketch union     estimate
//!  approx_percentile(x, q)   <name>__kll  (KLL sketch bytes)   sketch merge     quantile q
//! ```
//!
//! [`ViewPlan::state_sql`] computes the states of a set of events (the batch layer runs it
//! over the raw table; the speed layer over what it consumes); [`ViewPlan::merge_sql`]
//! merges state rows of any number of partial results and finalizes them. Because every
//! state merges associatively, a window split across batch and speed merges exactly.

use std::fmt::Write as _;

use datafusion::sql::sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, SelectItem, SetExpr, Statement,
    TableFactor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::config::{SourceConfig, ViewConfig};
use crate::error::{Error, Result};

pub const WINDOW_START: &str = "window_start";
pub const WINDOW_END: &str = "window_end";

/// Names of the functions that compute and finalize states (registered by [`crate::functions`]).
pub mod fn_names {
    pub const TUMBLE: &str = "strata_tumble";
    pub const HOP: &str = "strata_hop";
    pub const HLL_SKETCH: &str = "strata_hll_sketch";
    pub const HLL_UNION: &str = "strata_hll_union";
    pub const HLL_ESTIMATE: &str = "strata_hll_estimate";
    pub const KLL_SKETCH: &str = "strata_kll_sketch";
    pub const KLL_MERGE: &str = "strata_kll_merge";
    pub const KLL_QUANTILE: &str = "strata_kll_quantile";
}

/// The aggregates a view may use: each has a state that merges associatively.
pub const MERGEABLE_AGGREGATES: &str = "count, sum, min, max, avg, approx_distinct, approx_percentile";

/// Functions whose value depends on when or where they run: batch and speed would disagree.
const NON_DETERMINISTIC: &[&str] = &[
    "now",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtime",
    "localtimestamp",
    "random",
    "uuid",
];

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

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggKind {
    CountStar,
    Count,
    Sum,
    Min,
    Max,
    Avg,
    ApproxDistinct,
    ApproxPercentile(f64),
}

/// One aggregate of a view.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// Output column name.
    pub name: String,
    pub kind: AggKind,
    /// The argument, as SQL (none for `count(*)`).
    pub arg: Option<String>,
    /// `FILTER (WHERE ...)`, as SQL.
    pub filter: Option<String>,
}

/// How a state column merges with itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    Sum,
    Min,
    Max,
    HllUnion,
    KllMerge,
}

/// One column of a view's state table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateColumn {
    pub name: String,
    pub merge: Merge,
    /// SQL computing the state from events.
    pub compute: String,
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
        Compiler {
            view: &view.name,
            sources,
        }
        .compile(&view.sql)
    }

    /// SQL computing the view's states from `table`, a table with the source's schema.
    /// Produces one row per (window_start, group columns...) with the state columns.
    pub fn state_sql(&self, table: &str) -> String {
        self.state_sql_keyed(table, &[])
    }

    /// [`state_sql`](Self::state_sql) with `extra` key expressions (as `(sql, alias)`) grouped
    /// and selected after the view's keys: states kept apart per Kafka partition, or per
    /// archive segment.
    pub fn state_sql_keyed(&self, table: &str, extra: &[(&str, &str)]) -> String {
        let window = match self.window.kind {
            WindowKind::Tumble => format!(
                "{}({}, {})",
                fn_names::TUMBLE,
                quote(&self.window.time_column),
                self.window.size_us
            ),
            WindowKind::Hop => format!(
                "unnest({}({}, {}, {}))",
                fn_names::HOP,
                quote(&self.window.time_column),
                self.window.slide_us,
                self.window.size_us
            ),
        };
        let mut keys = vec![quote(WINDOW_START)];
        keys.extend(self.group_columns.iter().map(|c| quote(c)));
        let mut inner = format!("{window} AS {}", quote(WINDOW_START));
        for (expr, alias) in extra {
            keys.push(quote(alias));
            inner.push_str(&format!(", {expr} AS {}", quote(alias)));
        }
        let mut select = keys.clone();
        for s in self.state_columns() {
            select.push(format!("{} AS {}", s.compute, quote(&s.name)));
        }
        let mut sql = format!(
            "SELECT {} FROM (SELECT {inner}, * FROM {}",
            select.join(", "),
            quote(table)
        );
        if let Some(filter) = &self.filter {
            write!(sql, " WHERE {filter}").expect("write to string");
        }
        write!(sql, ") AS events GROUP BY {}", keys.join(", ")).expect("write to string");
        sql
    }

    /// SQL merging the state rows in `table` (any number per window and group) and
    /// finalizing them into the view's columns.
    pub fn merge_sql(&self, table: &str) -> String {
        let mut select = Vec::new();
        for out in &self.outputs {
            select.push(match out {
                Output::WindowStart { name } => format!("{} AS {}", quote(WINDOW_START), quote(name)),
                Output::WindowEnd { name } => format!(
                    "{} + arrow_cast({}, 'Duration(Microsecond)') AS {}",
                    quote(WINDOW_START),
                    self.window.size_us,
                    quote(name)
                ),
                Output::Group { column, name } => format!("{} AS {}", quote(column), quote(name)),
                Output::Aggregate { index } => {
                    let a = &self.aggregates[*index];
                    let col = |suffix: &str| quote(&format!("{}__{suffix}", a.name));
                    let expr = match a.kind {
                        AggKind::CountStar | AggKind::Count => format!("sum({})", col("count")),
                        AggKind::Sum => format!("sum({})", col("sum")),
                        AggKind::Min => format!("min({})", col("min")),
                        AggKind::Max => format!("max({})", col("max")),
                        AggKind::Avg => format!(
                            "CAST(sum({}) AS DOUBLE) / CAST(nullif(sum({}), 0) AS DOUBLE)",
                            col("sum"),
                            col("count")
                        ),
                        AggKind::ApproxDistinct => {
                            format!("{}({}({}))", fn_names::HLL_ESTIMATE, fn_names::HLL_UNION, col("hll"))
                        }
                        AggKind::ApproxPercentile(q) => format!(
                            "{}({}({}), {q:?})",
                            fn_names::KLL_QUANTILE,
                            fn_names::KLL_MERGE,
                            col("kll")
                        ),
                    };
                    format!("{expr} AS {}", quote(&a.name))
                }
            });
        }
        let mut keys = vec![quote(WINDOW_START)];
        keys.extend(self.group_columns.iter().map(|c| quote(c)));
        format!(
            "SELECT {} FROM {} GROUP BY {}",
            select.join(", "),
            quote(table),
            keys.join(", ")
        )
    }

    /// SQL merging state rows into state rows (no finalizing): to fold partial states.
    pub fn merge_states_sql(&self, table: &str) -> String {
        let mut keys = vec![quote(WINDOW_START)];
        keys.extend(self.group_columns.iter().map(|c| quote(c)));
        let mut select = keys.clone();
        for s in self.state_columns() {
            let f = match s.merge {
                Merge::Sum => "sum",
                Merge::Min => "min",
                Merge::Max => "max",
                Merge::HllUnion => fn_names::HLL_UNION,
                Merge::KllMerge => fn_names::KLL_MERGE,
            };
            select.push(format!("{f}({0}) AS {0}", quote(&s.name)));
        }
        format!(
            "SELECT {} FROM {} GROUP BY {}",
            select.join(", "),
            quote(table),
            keys.join(", ")
        )
    }

    /// The state columns, in the order of the state table (after the keys).
    pub fn state_columns(&self) -> Vec<StateColumn> {
        let mut out = Vec::new();
        for a in &self.aggregates {
            let arg = a.arg.as_deref().unwrap_or("*");
            let filter = a
                .filter
                .as_ref()
                .map(|f| format!(" FILTER (WHERE {f})"))
                .unwrap_or_default();
            let mut push = |suffix: &str, merge: Merge, compute: String| {
                out.push(StateColumn {
                    name: format!("{}__{suffix}", a.name),
                    merge,
                    compute: format!("{compute}{filter}"),
                })
            };
            match a.kind {
                AggKind::CountStar | AggKind::Count => push("count", Merge::Sum, format!("count({arg})")),
                AggKind::Sum => push("sum", Merge::Sum, format!("sum({arg})")),
                AggKind::Min => push("min", Merge::Min, format!("min({arg})")),
                AggKind::Max => push("max", Merge::Max, format!("max({arg})")),
                AggKind::Avg => {
                    push("sum", Merge::Sum, format!("sum({arg})"));
                    push("count", Merge::Sum, format!("count({arg})"));
                }
                AggKind::ApproxDistinct => push("hll", Merge::HllUnion, format!("{}({arg})", fn_names::HLL_SKETCH)),
                AggKind::ApproxPercentile(_) => {
                    push("kll", Merge::KllMerge, format!("{}({arg})", fn_names::KLL_SKETCH))
                }
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
        let text = format!("v1|{}|{}", self.state_sql(&self.source), self.merge_sql("states"));
        format!("{:016x}", crate::fnv64(text.as_bytes()))
    }
}

/// Quotes an identifier for DataFusion SQL.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// DataFusion's identifier rule: unquoted names are lower-cased, quoted ones kept.
fn normalize(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    }
}

struct Compiler<'a> {
    view: &'a str,
    sources: &'a [SourceConfig],
}

impl Compiler<'_> {
    fn err(&self, part: impl std::fmt::Display, message: impl Into<String>) -> Error {
        Error::view(self.view, part.to_string(), message)
    }

    fn compile(&self, sql: &str) -> Result<ViewPlan> {
        let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| self.err("SQL", e.to_string()))?;
        let [statement] = statements.as_slice() else {
            return Err(self.err(
                "SQL",
                format!("expected one SELECT statement, found {}", statements.len()),
            ));
        };
        let Statement::Query(query) = statement else {
            return Err(self.err(statement, "a view is a SELECT ... GROUP BY query"));
        };
        if query.with.is_some() {
            return Err(self.err(
                "WITH",
                "common table expressions are not supported in a view; select from the source directly",
            ));
        }
        if let Some(order_by) = &query.order_by {
            return Err(self.err(
                order_by,
                "a view is a set of rows: order them in your query over the view",
            ));
        }
        if let Some(limit) = &query.limit_clause {
            return Err(self.err(limit, "a view is a set of rows: limit them in your query over the view"));
        }
        let select = match query.body.as_ref() {
            SetExpr::Select(select) => select,
            SetExpr::SetOperation { op, .. } => {
                return Err(self.err(
                    op,
                    "a view reads one source with one SELECT; set operations cannot be maintained incrementally",
                ));
            }
            other => return Err(self.err(other, "a view is a SELECT ... GROUP BY query")),
        };
        if let Some(distinct) = &select.distinct {
            return Err(self.err(
                format!("SELECT {distinct}"),
                "not supported: a view's rows are already distinct per window and group",
            ));
        }
        if let Some(having) = &select.having {
            return Err(self.err(
                format!("HAVING {having}"),
                "a HAVING filter depends on the final value, which changes as events arrive; filter in your query over the view",
            ));
        }
        if let Some(qualify) = &select.qualify {
            return Err(self.err(format!("QUALIFY {qualify}"), "not supported in a view"));
        }

        let source = self.source(select)?;
        let source_columns: Vec<&str> = source.schema.keys().map(String::as_str).collect();
        let column = |ident: &Ident, part: &dyn std::fmt::Display| -> Result<String> {
            let name = normalize(ident);
            if source_columns.contains(&name.as_str()) {
                Ok(name)
            } else {
                Err(self.err(
                    part,
                    format!(
                        "`{name}` is not a column of source `{}` (columns: {})",
                        source.name,
                        source_columns.join(", ")
                    ),
                ))
            }
        };

        // GROUP BY: one window, and columns.
        let GroupByExpr::Expressions(group_exprs, modifiers) = &select.group_by else {
            return Err(self.err("GROUP BY ALL", "name the window and the columns to group by"));
        };
        if !modifiers.is_empty() {
            return Err(self.err(
                &select.group_by,
                "ROLLUP, CUBE and GROUPING SETS are not supported in a view",
            ));
        }
        let mut window = None;
        let mut group_columns = Vec::new();
        for g in group_exprs {
            match g {
                Expr::Function(f) if is_window_fn(f) => {
                    if window.is_some() {
                        return Err(self.err(g, "a view has exactly one window in its GROUP BY"));
                    }
                    window = Some(self.window(f, source)?);
                }
                Expr::Identifier(ident) => group_columns.push(column(ident, g)?),
                Expr::CompoundIdentifier(parts) if parts.len() == 2 => group_columns.push(column(&parts[1], g)?),
                other => {
                    return Err(self.err(
                        other,
                        "GROUP BY takes the window and source columns; compute derived keys in your query over the view",
                    ));
                }
            }
        }
        let Some(window) = window else {
            return Err(self.err(
                "GROUP BY",
                format!(
                    "no window: group by tumble({0}, INTERVAL '1 minute') or hop({0}, INTERVAL '1 minute', INTERVAL '5 minutes'); \
                     without a window the state of a view would grow without bound",
                    source.event_time.column
                ),
            ));
        };
        if let Some(dup) = group_columns
            .iter()
            .enumerate()
            .find(|(i, c)| group_columns[..*i].contains(c))
        {
            return Err(self.err("GROUP BY", format!("column `{}` is listed twice", dup.1)));
        }

        // WHERE: any deterministic expression over the source's columns.
        let filter = match &select.selection {
            Some(expr) => {
                self.check_row_expr(expr, "WHERE")?;
                Some(expr.to_string())
            }
            None => None,
        };

        // SELECT: window bounds, group columns, aggregates.
        let mut outputs = Vec::new();
        let mut aggregates = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for item in &select.projection {
            let (expr, alias) = match item {
                SelectItem::UnnamedExpr(e) => (e, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(normalize(alias))),
                other => {
                    return Err(self.err(
                        other,
                        "list the view's columns: the window bounds, the GROUP BY columns and aggregates",
                    ));
                }
            };
            let output = match expr {
                Expr::Identifier(ident) if normalize(ident) == WINDOW_START => Output::WindowStart {
                    name: alias.unwrap_or_else(|| WINDOW_START.to_string()),
                },
                Expr::Identifier(ident) if normalize(ident) == WINDOW_END => Output::WindowEnd {
                    name: alias.unwrap_or_else(|| WINDOW_END.to_string()),
                },
                Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
                    let ident = match expr {
                        Expr::Identifier(i) => i,
                        Expr::CompoundIdentifier(parts) => parts.last().expect("non-empty"),
                        _ => unreachable!(),
                    };
                    let col = column(ident, expr)?;
                    if !group_columns.contains(&col) {
                        return Err(self.err(
                            expr,
                            format!("`{col}` is neither in the GROUP BY nor inside an aggregate"),
                        ));
                    }
                    Output::Group {
                        name: alias.unwrap_or_else(|| col.clone()),
                        column: col,
                    }
                }
                Expr::Function(f) => {
                    let agg = self.aggregate(f, alias)?;
                    aggregates.push(agg);
                    Output::Aggregate {
                        index: aggregates.len() - 1,
                    }
                }
                Expr::Nested(inner) if matches!(inner.as_ref(), Expr::Function(_)) => {
                    let Expr::Function(f) = inner.as_ref() else {
                        unreachable!()
                    };
                    aggregates.push(self.aggregate(f, alias)?);
                    Output::Aggregate {
                        index: aggregates.len() - 1,
                    }
                }
                other if contains_function(other) => {
                    return Err(self.err(
                        other,
                        "expressions over aggregates are not stored in a view; select the aggregates and compute this in your query over the view",
                    ));
                }
                other => {
                    return Err(self.err(
                        other,
                        "a view selects the window bounds, GROUP BY columns and aggregates",
                    ));
                }
            };
            let name = match &output {
                Output::WindowStart { name } | Output::WindowEnd { name } | Output::Group { name, .. } => name.clone(),
                Output::Aggregate { index } => aggregates[*index].name.clone(),
            };
            if names.contains(&name) {
                return Err(self.err(
                    item,
                    format!("the column name `{name}` is used twice; give each column its own alias"),
                ));
            }
            if name.contains("__") {
                return Err(self.err(
                    item,
                    format!("`{name}`: names with `__` are reserved for state columns"),
                ));
            }
            names.push(name);
            outputs.push(output);
        }
        if !outputs.iter().any(|o| matches!(o, Output::WindowStart { .. })) {
            return Err(self.err(
                "SELECT",
                "select window_start, so that each row says which window it is",
            ));
        }
        for c in &group_columns {
            if !outputs
                .iter()
                .any(|o| matches!(o, Output::Group { column, .. } if column == c))
            {
                return Err(self.err(
                    "SELECT",
                    format!("select the GROUP BY column `{c}`, so that rows of different groups stay apart"),
                ));
            }
        }
        if aggregates.is_empty() {
            return Err(self.err(
                "SELECT",
                format!("a view computes at least one aggregate: {MERGEABLE_AGGREGATES}"),
            ));
        }
        Ok(ViewPlan {
            name: self.view.to_string(),
            source: source.name.clone(),
            sql: statement.to_string(),
            window,
            filter,
            group_columns,
            aggregates,
            outputs,
        })
    }

    fn source(&self, select: &ast::Select) -> Result<&SourceConfig> {
        let [from] = select.from.as_slice() else {
            let what = if select.from.is_empty() {
                "no FROM"
            } else {
                "several tables in FROM"
            };
            return Err(self.err("FROM", format!("{what}: a view reads exactly one source")));
        };
        if let Some(join) = from.joins.first() {
            return Err(self.err(
                &join.relation,
                "joins are not supported: a view reads one source, and a join cannot be maintained incrementally from partial states",
            ));
        }
        let TableFactor::Table { name, args: None, .. } = &from.relation else {
            return Err(self.err(
                &from.relation,
                "a view reads a source by name, not a subquery or a table function",
            ));
        };
        let wanted = match name.0.last() {
            Some(ast::ObjectNamePart::Identifier(ident)) => ident.value.clone(),
            _ => name.to_string(),
        };
        self.sources
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(&wanted))
            .ok_or_else(|| {
                let known: Vec<_> = self.sources.iter().map(|s| s.name.as_str()).collect();
                self.err(
                    format!("FROM {name}"),
                    format!(
                        "no source named `{wanted}` (sources: {})",
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
            })
    }

    fn window(&self, f: &ast::Function, source: &SourceConfig) -> Result<WindowSpec> {
        let kind = match fn_name(f).as_str() {
            "tumble" => WindowKind::Tumble,
            "hop" => WindowKind::Hop,
            _ => unreachable!("is_window_fn"),
        };
        let args = self.plain_args(f)?;
        let expected = match kind {
            WindowKind::Tumble => 2,
            WindowKind::Hop => 3,
        };
        let usage = match kind {
            WindowKind::Tumble => "tumble(<event time>, INTERVAL '<size>')",
            WindowKind::Hop => "hop(<event time>, INTERVAL '<slide>', INTERVAL '<size>')",
        };
        if args.len() != expected {
            return Err(self.err(f, format!("expected {usage}")));
        }
        let time_column = match args[0] {
            Expr::Identifier(ident) => normalize(ident),
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => normalize(&parts[1]),
            other => return Err(self.err(other, format!("expected the event-time column: {usage}"))),
        };
        if time_column != source.event_time.column {
            return Err(self.err(
                f,
                format!(
                    "windows are on the event-time column of source `{}`, which is `{}` (not `{time_column}`)",
                    source.name, source.event_time.column
                ),
            ));
        }
        let durations = args[1..]
            .iter()
            .map(|a| self.interval(a, f))
            .collect::<Result<Vec<_>>>()?;
        let (slide_us, size_us) = match kind {
            WindowKind::Tumble => (durations[0], durations[0]),
            WindowKind::Hop => (durations[0], durations[1]),
        };
        if size_us % slide_us != 0 {
            return Err(self.err(f, "the window size must be a whole multiple of the slide"));
        }
        if size_us / slide_us > 1000 {
            return Err(self.err(
                f,
                "a hopping window may overlap at most 1000 slides: use a larger slide",
            ));
        }
        Ok(WindowSpec {
            kind,
            time_column,
            size_us,
            slide_us,
        })
    }

    fn interval(&self, e: &Expr, f: &ast::Function) -> Result<i64> {
        let Expr::Interval(interval) = e else {
            return Err(self.err(e, format!("expected an interval such as INTERVAL '1 minute' in {f}")));
        };
        let text = match interval.value.as_ref() {
            Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) | ast::Value::Number(s, _) => s.clone(),
                _ => return Err(self.err(e, "expected INTERVAL '<number> <unit>'")),
            },
            _ => return Err(self.err(e, "expected INTERVAL '<number> <unit>'")),
        };
        let text = match &interval.leading_field {
            Some(unit) => format!("{text} {unit}"),
            None => text,
        };
        parse_interval(&text).map_err(|m| self.err(e, m))
    }

    fn plain_args<'f>(&self, f: &'f ast::Function) -> Result<Vec<&'f Expr>> {
        if f.over.is_some() {
            return Err(self.err(f, "window functions (OVER) cannot be maintained incrementally"));
        }
        let FunctionArguments::List(list) = &f.args else {
            return Err(self.err(f, "expected arguments in parentheses"));
        };
        list.args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
                other => Err(self.err(other, format!("unexpected argument in {f}"))),
            })
            .collect()
    }

    fn aggregate(&self, f: &ast::Function, alias: Option<String>) -> Result<Aggregate> {
        let name = fn_name(f);
        if f.over.is_some() {
            return Err(self.err(f, "window functions (OVER) cannot be maintained incrementally"));
        }
        let FunctionArguments::List(list) = &f.args else {
            return Err(self.err(f, "expected an aggregate call"));
        };
        if let Some(ast::DuplicateTreatment::Distinct) = list.duplicate_treatment {
            return Err(self.err(
                f,
                format!(
                    "exact distinct counts cannot be merged across partial results (a window split between batch and \
                     speed would count a value twice); use approx_distinct({}) instead",
                    list.args.first().map(|a| a.to_string()).unwrap_or_default()
                ),
            ));
        }
        if !list.clauses.is_empty() {
            return Err(self.err(
                f,
                "ORDER BY, LIMIT and other clauses inside an aggregate are not supported",
            ));
        }
        let kind_for = |n: &str| -> Option<AggKind> {
            Some(match n {
                "count" => AggKind::Count,
                "sum" => AggKind::Sum,
                "min" => AggKind::Min,
                "max" => AggKind::Max,
                "avg" | "mean" => AggKind::Avg,
                "approx_distinct" | "approx_count_distinct" => AggKind::ApproxDistinct,
                "approx_percentile" | "approx_percentile_cont" | "approx_quantile" => AggKind::ApproxPercentile(0.0),
                _ => return None,
            })
        };
        let Some(mut kind) = kind_for(&name) else {
            return Err(self.err(
                f,
                format!(
                    "`{name}` is not an aggregate with a mergeable state, so the speed and batch layers could not \
                     combine partial results; mergeable aggregates: {MERGEABLE_AGGREGATES}"
                ),
            ));
        };
        let args = &list.args;
        let arg = match (kind, args.as_slice()) {
            (AggKind::Count, [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]) => {
                kind = AggKind::CountStar;
                None
            }
            (
                AggKind::ApproxPercentile(_),
                [
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)),
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(q)),
                ],
            ) => {
                let q = literal_f64(q).filter(|q| (0.0..=1.0).contains(q)).ok_or_else(|| {
                    self.err(
                        f,
                        format!("the percentile must be a number between 0 and 1, e.g. {name}({e}, 0.95)"),
                    )
                })?;
                kind = AggKind::ApproxPercentile(q);
                self.check_row_expr(e, f)?;
                Some(e.to_string())
            }
            (AggKind::ApproxPercentile(_), _) => {
                return Err(self.err(
                    f,
                    format!("expected {name}(<expression>, <percentile between 0 and 1>)"),
                ));
            }
            (_, [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))]) => {
                self.check_row_expr(e, f)?;
                Some(e.to_string())
            }
            _ => return Err(self.err(f, format!("expected {name}(<expression>)"))),
        };
        let filter = match &f.filter {
            Some(filter) => {
                self.check_row_expr(filter, f)?;
                Some(filter.to_string())
            }
            None => None,
        };
        let name = alias.unwrap_or_else(|| match (&kind, &arg) {
            (AggKind::CountStar, _) => "count".to_string(),
            (_, Some(arg)) => {
                let arg: String = arg
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_lowercase()
                        } else {
                            '_'
                        }
                    })
                    .collect();
                format!("{name}_{}", arg.trim_matches('_'))
            }
            (_, None) => name.clone(),
        });
        Ok(Aggregate {
            name,
            kind,
            arg,
            filter,
        })
    }

    /// Row-level expressions (WHERE, aggregate arguments): no aggregates, no subqueries,
    /// nothing that depends on when it runs.
    fn check_row_expr(&self, expr: &Expr, part: impl std::fmt::Display) -> Result<()> {
        let mut problem = None;
        let _ = ast::visit_expressions(expr, |e: &Expr| {
            let found = match e {
                Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. } => Some((
                    e.to_string(),
                    "subqueries cannot be maintained incrementally".to_string(),
                )),
                Expr::Function(f) => {
                    let n = fn_name(f);
                    if NON_DETERMINISTIC.contains(&n.as_str()) {
                        Some((
                            f.to_string(),
                            format!(
                                "`{n}` depends on when it runs, so the batch and speed layers would disagree; use the event time"
                            ),
                        ))
                    } else if n == "tumble" || n == "hop" {
                        Some((f.to_string(), "windows go in the GROUP BY".to_string()))
                    } else {
                        None
                    }
                }
                _ => None,
            };
            match found {
                Some(p) => {
                    problem = Some(p);
                    std::ops::ControlFlow::Break(())
                }
                None => std::ops::ControlFlow::Continue(()),
            }
        });
        match problem {
            Some((what, why)) => Err(self.err(format!("{part}: {what}"), why)),
            None => Ok(()),
        }
    }
}

fn fn_name(f: &ast::Function) -> String {
    match f.name.0.last() {
        Some(ast::ObjectNamePart::Identifier(ident)) => ident.value.to_ascii_lowercase(),
        _ => f.name.to_string().to_ascii_lowercase(),
    }
}

fn is_window_fn(f: &ast::Function) -> bool {
    matches!(fn_name(f).as_str(), "tumble" | "hop")
}

fn contains_function(e: &Expr) -> bool {
    let mut found = false;
    let _ = ast::visit_expressions(e, |e: &Expr| {
        if matches!(e, Expr::Function(_)) {
            found = true;
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    });
    found
}

fn literal_f64(e: &Expr) -> Option<f64> {
    match e {
        Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Parses `1 minute`, `90 seconds`, `1 hour 30 minutes`, `500ms` into microseconds.
pub fn parse_interval(text: &str) -> std::result::Result<i64, String> {
    let bad = || {
        format!(
            "`{text}` is not a fixed interval: expected e.g. '1 minute', '30 seconds', '1 hour' \
             (microseconds to weeks; months and years vary in length)"
        )
    };
    let mut total: i64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = rest[num_end..].trim_start();
        let unit_end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit = rest[..unit_end].to_ascii_lowercase();
        rest = rest[unit_end..].trim_start().trim_start_matches(',').trim_start();
        let micros_per: f64 = match unit.as_str() {
            "us" | "microsecond" | "microseconds" => 1.0,
            "ms" | "millisecond" | "milliseconds" => 1e3,
            "s" | "sec" | "secs" | "second" | "seconds" => 1e6,
            "m" | "min" | "mins" | "minute" | "minutes" => 60e6,
            "h" | "hour" | "hours" => 3600e6,
            "d" | "day" | "days" => 86_400e6,
            "w" | "week" | "weeks" => 604_800e6,
            _ => return Err(bad()),
        };
        total += (number * micros_per).round() as i64;
    }
    if total <= 0 {
        Err(format!("`{text}`: an interval must be longer than zero"))
    } else {
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::config::Config;

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
    fn hopping_windows_unnest_every_window_of_an_event() {
        let plan = compile("SELECT window_start, count(*) AS n FROM page_views GROUP BY hop(ts, INTERVAL '1' MINUTE, INTERVAL '5 minutes')").unwrap();
        assert_eq!(plan.window.slide_us, 60_000_000);
        assert_eq!(plan.window.size_us, 300_000_000);
        assert!(
            plan.state_sql("t")
                .contains("unnest(strata_hop(\"ts\", 60000000, 300000000)) AS \"window_start\"")
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

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1 minute"), Ok(60_000_000));
        assert_eq!(parse_interval("1 hour 30 minutes"), Ok(5_400_000_000));
        assert_eq!(parse_interval("500ms"), Ok(500_000));
        assert_eq!(parse_interval("1.5 seconds"), Ok(1_500_000));
        assert!(parse_interval("1 month").is_err());
        assert!(parse_interval("0 seconds").is_err());
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
  count(*) FILTER (WHERE x > 50) AS big FROM events WHERE k <> 'skip' GROUP BY tumble(ts, INTERVAL '10 seconds'), k"""
[[views]]
name = "hopping"
sql = """SELECT window_start, count(*) AS n, sum(x) AS s, avg(x) AS mean, approx_distinct(u) AS users
  FROM events GROUP BY hop(ts, INTERVAL '5 seconds', INTERVAL '15 seconds')"""
"#;

    #[derive(Debug, Clone)]
    struct Event {
        t: i64,
        k: &'static str,
        u: u8,
        x: Option<i64>,
    }

    fn event() -> impl Strategy<Value = Event> {
        (
            0i64..60_000_000,
            prop::sample::select(vec!["a", "b", "c", "skip"]),
            any::<u8>(),
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

    /// Finalized view rows keyed by their key columns, values as text (floats rounded).
    async fn finalized(
        plan: &ViewPlan,
        source: &Arc<SourceSchema>,
        parts: &[&[Event]],
    ) -> BTreeMap<String, Vec<String>> {
        let ctx = new_context(session_config()).unwrap();
        let mut states = Vec::new();
        for part in parts {
            let table = MemTable::try_new(source.raw.clone(), vec![vec![batch(source, part)]]).unwrap();
            let _ = ctx.deregister_table("events");
            ctx.register_table("events", Arc::new(table)).unwrap();
            states.extend(
                ctx.sql(&plan.state_sql("events"))
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
        let rows = ctx
            .sql(&plan.merge_sql("states"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut out = BTreeMap::new();
        for b in rows {
            for r in 0..b.num_rows() {
                let mut key = String::new();
                let mut values = Vec::new();
                for (i, f) in b.schema().fields().iter().enumerate() {
                    let c = b.column(i);
                    let v = if c.is_null(r) {
                        "NULL".to_string()
                    } else if let Some(a) = c.as_primitive_opt::<Float64Type>() {
                        format!("{:.9}", a.value(r))
                    } else if let Some(a) = c.as_primitive_opt::<Int64Type>() {
                        a.value(r).to_string()
                    } else if let Some(a) = c.as_primitive_opt::<TimestampMicrosecondType>() {
                        a.value(r).to_string()
                    } else {
                        c.as_string::<i32>().value(r).to_string()
                    };
                    if f.name() == WINDOW_START || f.name() == "k" {
                        key.push_str(&v);
                        key.push('|');
                    } else {
                        values.push(format!("{}={v}", f.name()));
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
                let whole = rt.block_on(finalized(&plan, &source, &[&events]));
                let split = rt.block_on(finalized(&plan, &source, &parts));
                // Cells have fewer than 256 distinct users and 200 values: the sketches are
                // exact, so every aggregate must agree exactly.
                prop_assert_eq!(&whole, &split, "view {}", plan.name);
            }
        }
    }
}
