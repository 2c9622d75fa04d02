//! The view compiler: one function per clause, each refusing what the incremental engine
//! cannot maintain with a message naming the part and why.

use datafusion::sql::sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, Query, Select, SelectItem,
    SetExpr, Statement, TableFactor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::{Aggregate, Output, ViewPlan, WINDOW_END, WINDOW_START, WindowKind, WindowSpec};
use crate::aggregate::{self, Call};
use crate::config::SourceConfig;
use crate::error::{Error, Result};

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

pub(super) struct Compiler<'a> {
    view: &'a str,
    sources: &'a [SourceConfig],
}

/// The GROUP BY of a view: its window and its group columns.
struct Grouping {
    window: WindowSpec,
    columns: Vec<String>,
}

impl<'a> Compiler<'a> {
    pub(super) fn new(view: &'a str, sources: &'a [SourceConfig]) -> Self {
        Compiler { view, sources }
    }

    fn err(&self, part: impl std::fmt::Display, message: impl Into<String>) -> Error {
        Error::view(self.view, part.to_string(), message)
    }

    pub(super) fn compile(&self, sql: &str) -> Result<ViewPlan> {
        let statement = self.statement(sql)?;
        let Statement::Query(query) = &statement else {
            return Err(self.err(&statement, "a view is a SELECT ... GROUP BY query"));
        };
        let select = self.select(query)?;
        let source = self.source(select)?;
        let grouping = self.group_by(select, source)?;
        let filter = self.where_clause(select)?;
        let (outputs, aggregates) = self.projection(select, source, &grouping.columns)?;
        Ok(ViewPlan {
            name: self.view.to_string(),
            source: source.name.clone(),
            sql: statement.to_string(),
            window: grouping.window,
            filter,
            group_columns: grouping.columns,
            aggregates,
            outputs,
        })
    }

    /// Exactly one statement.
    fn statement(&self, sql: &str) -> Result<Statement> {
        let mut statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| self.err("SQL", e.to_string()))?;
        if statements.len() != 1 {
            return Err(self.err(
                "SQL",
                format!("expected one SELECT statement, found {}", statements.len()),
            ));
        }
        Ok(statements.remove(0))
    }

    /// The query's one SELECT, without the clauses a set of rows cannot keep (WITH, ORDER BY,
    /// LIMIT, set operations, DISTINCT, HAVING, QUALIFY).
    fn select<'q>(&self, query: &'q Query) -> Result<&'q Select> {
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
        Ok(select)
    }

    /// FROM: exactly one source, by name.
    fn source(&self, select: &Select) -> Result<&'a SourceConfig> {
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
                let known = if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                };
                self.err(
                    format!("FROM {name}"),
                    format!("no source named `{wanted}` (sources: {known})"),
                )
            })
    }

    /// A column of the source, by an identifier as written.
    fn column(&self, source: &SourceConfig, ident: &Ident, part: &dyn std::fmt::Display) -> Result<String> {
        let name = normalize(ident);
        if source.schema.contains_key(&name) {
            return Ok(name);
        }
        let columns: Vec<&str> = source.schema.keys().map(String::as_str).collect();
        Err(self.err(
            part,
            format!(
                "`{name}` is not a column of source `{}` (columns: {})",
                source.name,
                columns.join(", ")
            ),
        ))
    }

    /// GROUP BY: one window, and source columns.
    fn group_by(&self, select: &Select, source: &SourceConfig) -> Result<Grouping> {
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
        let mut columns: Vec<String> = Vec::new();
        for g in group_exprs {
            let column = match g {
                Expr::Function(f) if is_window_fn(f) => {
                    if window.is_some() {
                        return Err(self.err(g, "a view has exactly one window in its GROUP BY"));
                    }
                    window = Some(self.window(f, source)?);
                    continue;
                }
                Expr::Identifier(ident) => self.column(source, ident, g)?,
                Expr::CompoundIdentifier(parts) if parts.len() == 2 => self.column(source, &parts[1], g)?,
                other => {
                    return Err(self.err(
                        other,
                        "GROUP BY takes the window and source columns; compute derived keys in your query over the view",
                    ));
                }
            };
            if columns.contains(&column) {
                return Err(self.err("GROUP BY", format!("column `{column}` is listed twice")));
            }
            columns.push(column);
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
        Ok(Grouping { window, columns })
    }

    /// WHERE: any deterministic expression over the source's columns.
    fn where_clause(&self, select: &Select) -> Result<Option<String>> {
        let Some(expr) = &select.selection else {
            return Ok(None);
        };
        self.check_row_expr(expr, "WHERE")?;
        Ok(Some(expr.to_string()))
    }

    /// SELECT: window bounds, group columns and aggregates, each named once; `window_start`
    /// and every group column among them.
    fn projection(
        &self,
        select: &Select,
        source: &SourceConfig,
        group_columns: &[String],
    ) -> Result<(Vec<Output>, Vec<Aggregate>)> {
        let mut outputs = Vec::new();
        let mut aggregates = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for item in &select.projection {
            let (output, name) = self.output(item, source, group_columns, &mut aggregates)?;
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
        for c in group_columns {
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
                format!("a view computes at least one aggregate: {}", aggregate::names()),
            ));
        }
        Ok((outputs, aggregates))
    }

    /// One item of the SELECT list and its column name; aggregates go to `aggregates`.
    fn output(
        &self,
        item: &SelectItem,
        source: &SourceConfig,
        group_columns: &[String],
        aggregates: &mut Vec<Aggregate>,
    ) -> Result<(Output, String)> {
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
        let ident = match expr {
            Expr::Identifier(ident) => Some(ident),
            Expr::CompoundIdentifier(parts) => parts.last(),
            _ => None,
        };
        let function = match expr {
            Expr::Function(f) => Some(f),
            Expr::Nested(inner) => match inner.as_ref() {
                Expr::Function(f) => Some(f),
                _ => None,
            },
            _ => None,
        };
        let output = match (ident, function) {
            (Some(ident), _) if matches!(expr, Expr::Identifier(_)) && normalize(ident) == WINDOW_START => {
                Output::WindowStart {
                    name: alias.unwrap_or_else(|| WINDOW_START.to_string()),
                }
            }
            (Some(ident), _) if matches!(expr, Expr::Identifier(_)) && normalize(ident) == WINDOW_END => {
                Output::WindowEnd {
                    name: alias.unwrap_or_else(|| WINDOW_END.to_string()),
                }
            }
            (Some(ident), _) => {
                let column = self.column(source, ident, expr)?;
                if !group_columns.contains(&column) {
                    return Err(self.err(
                        expr,
                        format!("`{column}` is neither in the GROUP BY nor inside an aggregate"),
                    ));
                }
                Output::Group {
                    name: alias.unwrap_or_else(|| column.clone()),
                    column,
                }
            }
            (None, Some(f)) => {
                aggregates.push(self.aggregate(f, alias)?);
                Output::Aggregate {
                    index: aggregates.len() - 1,
                }
            }
            (None, None) if contains_function(expr) => {
                return Err(self.err(
                    expr,
                    "expressions over aggregates are not stored in a view; select the aggregates and compute this in your query over the view",
                ));
            }
            (None, None) => {
                return Err(self.err(
                    expr,
                    "a view selects the window bounds, GROUP BY columns and aggregates",
                ));
            }
        };
        let name = match &output {
            Output::WindowStart { name } | Output::WindowEnd { name } | Output::Group { name, .. } => name.clone(),
            Output::Aggregate { index } => aggregates[*index].name.clone(),
        };
        Ok((output, name))
    }

    /// `tumble(ts, size)` or `hop(ts, slide, size)` on the source's event time.
    fn window(&self, f: &ast::Function, source: &SourceConfig) -> Result<WindowSpec> {
        let (kind, usage) = match fn_name(f).as_str() {
            "tumble" => (WindowKind::Tumble, "tumble(<event time>, INTERVAL '<size>')"),
            "hop" => (
                WindowKind::Hop,
                "hop(<event time>, INTERVAL '<slide>', INTERVAL '<size>')",
            ),
            _ => unreachable!("is_window_fn"),
        };
        let args = self.plain_args(f)?;
        let expected = match kind {
            WindowKind::Tumble => 2,
            WindowKind::Hop => 3,
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

    /// `INTERVAL '<n> <unit>'` (or `INTERVAL '<n>' <UNIT>`) in microseconds, more than zero.
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
        match crate::duration::parse_micros(&text) {
            Ok(us) if us > 0 => Ok(us),
            Ok(_) => Err(self.err(e, format!("`{text}`: an interval must be longer than zero"))),
            Err(m) => Err(self.err(e, m)),
        }
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

    /// An aggregate call: a mergeable aggregate of [`crate::aggregate`], its row expression,
    /// constants and FILTER.
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
        let Some(function) = aggregate::lookup(&name) else {
            return Err(self.err(
                f,
                format!(
                    "`{name}` is not an aggregate with a mergeable state, so the speed and batch layers could not \
                     combine partial results; mergeable aggregates: {}",
                    aggregate::names()
                ),
            ));
        };
        let call = self.call(f, &name, &list.args)?;
        function.check(&call).map_err(|m| self.err(f, m))?;
        let filter = match &f.filter {
            Some(filter) => {
                self.check_row_expr(filter, f)?;
                Some(filter.to_string())
            }
            None => None,
        };
        Ok(Aggregate {
            name: alias.unwrap_or_else(|| default_name(&call)),
            function,
            call,
            filter,
        })
    }

    /// The arguments of an aggregate call: `*`, or a row expression followed by constants
    /// (a constant that is not a number becomes NaN, for the aggregate to refuse).
    fn call(&self, f: &ast::Function, name: &str, args: &[FunctionArg]) -> Result<Call> {
        let mut call = Call {
            name: name.to_string(),
            arg: None,
            params: Vec::new(),
        };
        match args {
            [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] => {}
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(e)), rest @ ..] => {
                self.check_row_expr(e, f)?;
                call.arg = Some(e.to_string());
                for p in rest {
                    let FunctionArg::Unnamed(FunctionArgExpr::Expr(p)) = p else {
                        return Err(self.err(p, format!("unexpected argument in {f}")));
                    };
                    call.params.push(literal_f64(p).unwrap_or(f64::NAN));
                }
            }
            _ => return Err(self.err(f, format!("expected {name}(<expression>)"))),
        }
        Ok(call)
    }

    /// Row-level expressions (WHERE, aggregate arguments): no aggregates, no subqueries,
    /// nothing that depends on when it runs.
    fn check_row_expr(&self, expr: &Expr, part: impl std::fmt::Display) -> Result<()> {
        let mut problem = None;
        let _ = ast::visit_expressions(expr, |e: &Expr| {
            problem = row_expr_problem(e);
            if problem.is_some() {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        });
        match problem {
            Some((what, why)) => Err(self.err(format!("{part}: {what}"), why)),
            None => Ok(()),
        }
    }
}

/// What a row-level expression may not contain, as (the part, why).
fn row_expr_problem(e: &Expr) -> Option<(String, String)> {
    match e {
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
    }
}

/// The column name of an aggregate without an alias: `count` for `count(*)`, else the
/// function and its argument (`sum_amount`, `avg_latency_ms`).
fn default_name(call: &Call) -> String {
    let Some(arg) = &call.arg else {
        return call.name.clone();
    };
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
    format!("{}_{}", call.name, arg.trim_matches('_'))
}

/// DataFusion's identifier rule: unquoted names are lower-cased, quoted ones kept.
fn normalize(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
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
