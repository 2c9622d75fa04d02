//! The SQL a compiled view runs: states from events, states merged, states finalized.

use std::fmt::Write as _;

use super::{Output, ViewPlan, WINDOW_START, WindowKind, fn_names, state_column};

/// Quotes an identifier for DataFusion SQL.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl ViewPlan {
    /// SQL computing the view's states from `table`, a table with the source's schema.
    /// Produces one row per (window_start, group columns...) with the state columns.
    pub fn state_sql(&self, table: &str) -> String {
        self.state_sql_keyed(table, &[])
    }

    /// [`state_sql`](Self::state_sql) with `extra` key expressions (as `(sql, alias)`) grouped
    /// and selected after the view's keys: states kept apart per Kafka partition, or per
    /// archive segment.
    ///
    /// A hopping window's events are aggregated once, per slide (a pane), and each pane's
    /// states merged into the windows that hold it: the same states as
    /// [`per_event_state_sql`](Self::per_event_state_sql) (windows start at whole slides and
    /// span whole slides, so a pane lies in exactly the windows its events do), for the cost of
    /// one pass over the events instead of one per window an event falls in.
    pub fn state_sql_keyed(&self, table: &str, extra: &[(&str, &str)]) -> String {
        if self.window.kind == WindowKind::Tumble {
            return self.per_event_state_sql(table, extra);
        }
        let panes = self.events_to_states_sql(
            table,
            extra,
            true,
            &format!(
                "{}({}, {})",
                fn_names::TUMBLE,
                quote(&self.window.time_column),
                self.window.slide_us
            ),
        );
        let window = quote(WINDOW_START);
        let mut keys = self.quoted_keys();
        keys.extend(extra.iter().map(|(_, alias)| quote(alias)));
        let mut spread = vec![format!(
            "unnest({}({window}, {}, {})) AS {window}",
            fn_names::HOP,
            self.window.slide_us,
            self.window.size_us
        )];
        spread.extend(keys.iter().skip(1).cloned());
        let mut select = keys.clone();
        for s in self.state_columns() {
            let name = quote(&s.name);
            spread.push(name.clone());
            select.push(match s.empty {
                Some(empty) => format!("coalesce({}({name}), {empty}) AS {name}", s.merge),
                None => format!("{}({name}) AS {name}", s.merge),
            });
        }
        format!(
            "SELECT {} FROM (SELECT {} FROM ({panes}) AS panes) AS windows GROUP BY {}",
            select.join(", "),
            spread.join(", "),
            keys.join(", ")
        )
    }

    /// [`state_sql_keyed`](Self::state_sql_keyed) as the definition reads: each event
    /// aggregated into every window it falls in (what the view's fingerprint names).
    pub fn per_event_state_sql(&self, table: &str, extra: &[(&str, &str)]) -> String {
        self.events_to_states_sql(table, extra, false, &self.window_sql())
    }

    /// States of the events of `table` grouped by `window` (an expression of an event giving
    /// a window start, or several `unnest`ed), the group columns and `extra`; with `panes`,
    /// in the form a hopping window's panes take.
    fn events_to_states_sql(&self, table: &str, extra: &[(&str, &str)], panes: bool, window: &str) -> String {
        let mut keys = self.quoted_keys();
        let mut inner = format!("{window} AS {}", quote(WINDOW_START));
        for (expr, alias) in extra {
            keys.push(quote(alias));
            write!(inner, ", {expr} AS {}", quote(alias)).expect("write to string");
        }
        let mut select = keys.clone();
        for s in self.state_columns() {
            let compute = if panes { &s.pane } else { &s.compute };
            select.push(format!("{compute} AS {}", quote(&s.name)));
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
        format!(
            "{} GROUP BY {}",
            self.outputs_sql(table, true),
            self.quoted_keys().join(", ")
        )
    }

    /// SQL finalizing the state rows in `table` one by one into the view's columns, for a
    /// table holding at most one row per window and group (a published batch version), whose
    /// rows then need no grouping: a state row finalizes as its merge would (a KLL quantile
    /// within the sketch's rank error: merging one sketch compacts it again, at random).
    pub fn finalize_sql(&self, table: &str) -> String {
        self.outputs_sql(table, false)
    }

    /// `SELECT` of the view's columns from the state rows in `table`, merging each state
    /// column with its merge aggregate or taking it as it is.
    fn outputs_sql(&self, table: &str, merge: bool) -> String {
        let select: Vec<String> = self.outputs.iter().map(|out| self.output_sql(out, merge)).collect();
        format!("SELECT {} FROM {}", select.join(", "), quote(table))
    }

    /// SQL merging state rows into state rows (no finalizing): to fold partial states.
    pub fn merge_states_sql(&self, table: &str) -> String {
        let keys = self.quoted_keys();
        let mut select = keys.clone();
        for s in self.state_columns() {
            select.push(format!("{}({1}) AS {1}", s.merge, quote(&s.name)));
        }
        format!(
            "SELECT {} FROM {} GROUP BY {}",
            select.join(", "),
            quote(table),
            keys.join(", ")
        )
    }

    /// The window start of each event (`unnest`ed: several rows per event for a hopping window).
    fn window_sql(&self) -> String {
        let time = quote(&self.window.time_column);
        match self.window.kind {
            WindowKind::Tumble => format!("{}({time}, {})", fn_names::TUMBLE, self.window.size_us),
            WindowKind::Hop => format!(
                "unnest({}({time}, {}, {}))",
                fn_names::HOP,
                self.window.slide_us,
                self.window.size_us
            ),
        }
    }

    /// One output column of [`merge_sql`](Self::merge_sql) (`merge`) or of
    /// [`finalize_sql`](Self::finalize_sql).
    fn output_sql(&self, out: &Output, merge: bool) -> String {
        match out {
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
                let states = a.function.states(&a.call);
                let merged = |suffix: &str| {
                    let state = states
                        .iter()
                        .find(|s| s.suffix == suffix)
                        .unwrap_or_else(|| panic!("{:?} has no state `{suffix}`", a.function));
                    let column = quote(&state_column(&a.name, suffix));
                    if merge {
                        format!("{}({column})", state.merge)
                    } else {
                        column
                    }
                };
                format!("{} AS {}", a.function.finalize(&a.call, &merged), quote(&a.name))
            }
        }
    }

    /// `window_start` and the group columns, quoted.
    fn quoted_keys(&self) -> Vec<String> {
        self.key_columns().iter().map(|c| quote(c)).collect()
    }
}
