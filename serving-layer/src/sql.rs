//! SQL over Flight is read-only: queries, EXPLAIN and SHOW. Anything that writes or reads
//! outside the catalog (DDL, DML, COPY, CREATE EXTERNAL TABLE, SET) is refused before
//! planning with a message that says so; DataFusion's own SQL options refuse them again.
//! (Errors become `tonic::Status` in one place, `strata_core::status`.)

use std::borrow::Cow;
use std::fmt::Write;

use datafusion::execution::context::SQLOptions;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};
use tonic::Status;

/// DataFusion's options for every statement Strata plans.
pub fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Refuses what is not a read-only query, naming it.
pub fn check_read_only(sql: &str) -> Result<(), Status> {
    let statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {})
        .map_err(|e| Status::invalid_argument(e.strip_backtrace()))?;
    if statements.len() != 1 {
        return Err(Status::invalid_argument(format!(
            "expected exactly one SQL statement, got {}",
            statements.len()
        )));
    }
    let refuse = |what: &str, why: &str| Err(Status::permission_denied(format!("{what} is not allowed: {why}")));
    const READ_ONLY: &str = "Strata's SQL is read-only (views are defined in strata.toml)";
    match &statements[0] {
        DFStatement::CreateExternalTable(_) => refuse(
            "CREATE EXTERNAL TABLE",
            "it would let a client read any file the server can reach; Strata's SQL is read-only",
        ),
        DFStatement::CopyTo(_) => refuse("COPY", "it writes files on the server; Strata's SQL is read-only"),
        DFStatement::Reset(_) => refuse("RESET", READ_ONLY),
        DFStatement::Explain(explain) => match explain.statement.as_ref() {
            DFStatement::Statement(s) => check_statement(s),
            other => check_read_only(&other.to_string()),
        },
        DFStatement::Statement(s) => check_statement(s),
    }
}

fn check_statement(s: &Statement) -> Result<(), Status> {
    let what = match s {
        Statement::Query(_)
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowSchemas { .. } => return Ok(()),
        Statement::Explain { statement, .. } => return check_statement(statement),
        Statement::Insert(_) => "INSERT",
        Statement::Update { .. } => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Merge { .. } => "MERGE",
        Statement::Truncate { .. } => "TRUNCATE",
        Statement::Copy { .. } => "COPY",
        Statement::CreateTable(_) => "CREATE TABLE",
        Statement::CreateView { .. } => "CREATE VIEW",
        Statement::CreateSchema { .. } => "CREATE SCHEMA",
        Statement::CreateDatabase { .. } => "CREATE DATABASE",
        Statement::CreateFunction(_) => "CREATE FUNCTION",
        Statement::CreateIndex(_) => "CREATE INDEX",
        Statement::Drop { .. } => "DROP",
        Statement::AlterTable { .. } => "ALTER TABLE",
        Statement::Set(_) => "SET",
        Statement::StartTransaction { .. } | Statement::Commit { .. } | Statement::Rollback { .. } => "a transaction",
        Statement::Prepare { .. } | Statement::Execute { .. } | Statement::Deallocate { .. } => {
            return Err(Status::permission_denied(
                "PREPARE/EXECUTE in SQL is not allowed: use Flight SQL prepared statements",
            ));
        }
        _ => "this statement",
    };
    Err(Status::permission_denied(format!(
        "{what} is not allowed: Strata's SQL is read-only (views are defined in strata.toml)"
    )))
}

/// JDBC and ODBC clients (DBeaver, Tableau) write parameters as `?`; DataFusion numbers
/// them `$1, $2, …`. Rewrites each `?` placeholder, outside strings, quoted names and
/// comments, to its position; SQL without one is returned as it is.
pub fn number_placeholders(sql: &str) -> Result<Cow<'_, str>, Status> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let is_mark = |t: &Token| matches!(t, Token::Placeholder(p) if p == "?");
    let marks: Vec<Location> = tokens
        .iter()
        .filter(|t| is_mark(&t.token))
        .map(|t| t.span.start)
        .collect();
    if marks.is_empty() {
        return Ok(Cow::Borrowed(sql));
    }
    if let Some(other) = tokens
        .iter()
        .find(|t| matches!(&t.token, Token::Placeholder(_)) && !is_mark(&t.token))
    {
        return Err(Status::invalid_argument(format!(
            "parameters are written either as `?` or as `$1, $2, …`, not both: `{}` at line {}, column {} beside `?`",
            other.token, other.span.start.line, other.span.start.column
        )));
    }
    // The tokenizer's locations count characters from 1 and start a line after each '\n'.
    let mut out = String::with_capacity(sql.len() + 2 * marks.len());
    let mut at = Location { line: 1, column: 1 };
    let mut next = marks.iter().peekable();
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' && next.next_if(|m| **m == at).is_some() {
            n += 1;
            write!(out, "${n}").expect("writing to a String");
        } else {
            out.push(ch);
        }
        at = if ch == '\n' {
            Location {
                line: at.line + 1,
                column: 1,
            }
        } else {
            Location {
                column: at.column + 1,
                ..at
            }
        };
    }
    if n != marks.len() {
        // The tokenizer re-reads MySQL-style hint comments (/*! ... */) with locations of
        // their own: such a `?` cannot be placed.
        return Err(Status::invalid_argument(
            "cannot number the `?` parameters of this statement (is one inside a /*! */ comment?): write them as $1, $2, …",
        ));
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn only_reads_pass() {
        for ok in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
            "select * from raw.page_views where x = $1",
        ] {
            assert!(check_read_only(ok).is_ok(), "{ok}");
        }
        for (bad, what) in [
            ("CREATE TABLE t (a INT)", "CREATE TABLE"),
            (
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
                "CREATE EXTERNAL TABLE",
            ),
            ("COPY (SELECT 1) TO '/tmp/x.parquet'", "COPY"),
            ("INSERT INTO t VALUES (1)", "INSERT"),
            ("DELETE FROM t", "DELETE"),
            ("UPDATE t SET a = 1", "UPDATE"),
            ("DROP TABLE t", "DROP"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("EXPLAIN INSERT INTO t VALUES (1)", "INSERT"),
        ] {
            let e = check_read_only(bad).unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{bad}");
            assert!(
                e.message().starts_with(&format!("{what} is not allowed")),
                "{bad}: {}",
                e.message()
            );
        }
        let e = check_read_only("SELEC 1").unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = check_read_only("SELECT 1; SELECT 2").unwrap_err();
        assert!(e.message().contains("exactly one"));
    }

    #[test]
    fn question_marks_become_numbered_placeholders() {
        let sql = "SELECT '?', \"a?\" FROM t -- why?\nWHERE a = ? AND\n  b IN (?,?) /* ? */ LIMIT ?";
        assert_eq!(
            number_placeholders(sql).unwrap(),
            "SELECT '?', \"a?\" FROM t -- why?\nWHERE a = $1 AND\n  b IN ($2,$3) /* ? */ LIMIT $4"
        );
        assert_eq!(number_placeholders("SELECT 'é', ? + 1").unwrap(), "SELECT 'é', $1 + 1");
        let untouched = "SELECT * FROM t WHERE a = $1";
        assert!(matches!(number_placeholders(untouched).unwrap(), Cow::Borrowed(s) if s == untouched));
        let e = number_placeholders("SELECT ? + $1").unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("not both: `$1` at line 1, column 12"),
            "{}",
            e.message()
        );
        let e = number_placeholders("SELECT /*!? */ 1").unwrap_err();
        assert!(e.message().contains("cannot number"), "{}", e.message());
    }
}
