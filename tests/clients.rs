//! SQL clients beyond ADBC: the Arrow Flight SQL JDBC driver driven as DBeaver drives it
//! (tests/java/FlightSqlJdbc.java), SQLAlchemy with the Flight SQL dialect as Superset uses
//! it, and Apache Superset itself, over a lake whose events the test made.

use std::path::{Path, PathBuf};

use crate::common::{Scratch, StrataServer, run_ok, run_python, strata, tools};
use crate::historical::{example_config, generate, manifest};

const TOKEN: &str = "clients-token";

/// A lake of `events` generated events, imported and batched; (config, data, valid events).
fn batched_lake(scratch: &Scratch, events: u64, seed: u64) -> (PathBuf, PathBuf, u64) {
    let lake = scratch.path("lake");
    let config = example_config(&scratch.0, lake.to_str().unwrap(), "");
    let data = scratch.path("events.jsonl");
    generate(&config, &data, events, seed);
    let valid = manifest(&data)["valid"].as_u64().expect("valid events in the manifest");
    run_ok(strata(&config).args(["import", "page_views"]).arg(&data));
    run_ok(strata(&config).args(["batch", "run"]));
    (config, data, valid)
}

/// Runs a BI client's script against `server` with the events of `data` as its truth.
fn bi_client(script: &str, server: &StrataServer, scratch: &Scratch, data: &Path, extra: &[&str]) -> String {
    let endpoint = server.endpoint();
    let mut args = vec![
        "--endpoint",
        &endpoint,
        "--token",
        TOKEN,
        "--scratch",
        scratch.0.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(data.to_str().unwrap());
    let out = run_python(script, &args);
    println!("{out}");
    out
}

#[test]
fn the_jdbc_driver_browses_and_queries_as_adbc_answers_with_the_token_in_its_url() {
    // A JVM beside the server: one at a time with the other heavy tests.
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("jdbc");
    let (config, _, valid) = batched_lake(&scratch, 5_000, 11);
    let server = StrataServer::start(&config, &[("STRATA_AUTH_TOKEN", TOKEN)]);
    let out = run_python("jdbc.py", &["--endpoint", &server.endpoint(), "--token", TOKEN]);
    println!("{out}");
    // Every event the generator made valid, counted through the driver.
    assert!(out.contains(&format!("jdbc: raw rows {valid}\n")), "{out}");
    for name in [
        "view",
        "raw",
        "system",
        "view_prepared",
        "raw_prepared",
        "system_prepared",
    ] {
        assert!(out.contains(&format!("jdbc: {name}: ")), "{out}");
    }
    assert!(out.contains("jdbc: a wrong token is refused"), "{out}");
    assert!(out.contains("jdbc: every answer equals ADBC"), "{out}");
}

#[test]
fn sqlalchemy_reflects_the_catalog_and_a_charts_query_equals_duckdb() {
    let scratch = Scratch::new("sqlalchemy");
    let (config, data, _) = batched_lake(&scratch, 20_000, 12);
    let server = StrataServer::start(&config, &[("STRATA_AUTH_TOKEN", TOKEN)]);
    let out = bi_client("bi_sqlalchemy.py", &server, &scratch, &data, &[]);
    assert!(out.contains("sqlalchemy: reflected 4 schemas"), "{out}");
    assert!(out.contains("equals DuckDB"), "{out}");
    assert!(
        out.contains("sqlalchemy: reflection and the chart's query answer as they should"),
        "{out}"
    );
}

#[test]
fn superset_sql_lab_and_a_chart_equal_duckdb_and_the_chart_renders() {
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("superset");
    let (config, data, _) = batched_lake(&scratch, 20_000, 12);
    let server = StrataServer::start(&config, &[("STRATA_AUTH_TOKEN", TOKEN)]);
    let venv = tools().join("superset-6.1.0");
    assert!(
        venv.join("bin/superset").exists(),
        "Apache Superset is not in {}: run scripts/setup.sh",
        venv.display()
    );
    let out = bi_client(
        "superset.py",
        &server,
        &scratch,
        &data,
        &["--superset-venv", venv.to_str().unwrap()],
    );
    assert!(out.contains("superset: SQL Lab answered"), "{out}");
    assert!(out.contains("equal to DuckDB"), "{out}");
    assert!(out.contains("superset: the chart's data equals DuckDB"), "{out}");
    assert!(out.contains("superset: chart screenshot"), "{out}");
    let png = std::fs::read(scratch.path("superset-chart.png")).expect("the chart's screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
}
