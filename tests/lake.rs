//! The master dataset stays open: DuckDB (its Delta extension) and Spark (delta-spark) read
//! the lake's raw, rejected and view tables straight from their Delta logs and get what
//! Strata serves, before and after a compaction and across a view's republication.

use std::collections::BTreeMap;

use crate::common::{Scratch, StrataServer, run_ok, run_python, strata};
use crate::historical::{example_config, generate, manifest};

/// Runs tests/python/lake_readers.py against a server on the lake; its digest lines by table.
pub fn read_lake(config: &std::path::Path, lake: &std::path::Path, views: bool) -> (String, BTreeMap<String, String>) {
    let server = StrataServer::start(config, &[]);
    let endpoint = server.endpoint();
    let mut args = vec!["--lake", lake.to_str().unwrap(), "--endpoint", &endpoint];
    if views {
        args.push("--views");
    }
    let out = run_python("lake_readers.py", &args);
    println!("{out}");
    assert!(out.contains("lake: every engine reads what Strata serves"), "{out}");
    let digests = out
        .lines()
        .filter_map(|l| l.strip_prefix("lake: "))
        .filter(|l| l.contains(" digest "))
        .filter_map(|l| {
            let (table, rest) = l.split_once(' ')?;
            Some((table.to_string(), rest.to_string()))
        })
        .collect();
    (out, digests)
}

#[test]
fn duckdb_and_spark_read_the_lake_as_strata_serves_it_through_compaction_and_republication() {
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("lake-readers");
    let lake = scratch.path("lake");
    let config = example_config(&scratch.0, lake.to_str().unwrap(), "");
    let data = scratch.path("events.jsonl");
    generate(&config, &data, 5_000, 13);
    let m = manifest(&data);
    let (valid, malformed) = (m["valid"].as_u64().unwrap(), m["malformed"].as_array().unwrap().len());
    // Small commits: many files for the compaction to merge.
    run_ok(
        strata(&config)
            .args(["import", "page_views"])
            .arg(&data)
            .args(["--chunk-rows", "1000"]),
    );
    let (out, before) = read_lake(&config, &lake, false);
    // The engines count what the generator made: every valid event, every malformed record.
    assert!(out.contains(&format!("lake: raw.page_views {valid} rows")), "{out}");
    assert!(
        out.contains(&format!("lake: rejected.page_views {malformed} rows")),
        "{out}"
    );

    let batch = run_ok(strata(&config).args(["batch", "run"]));
    assert!(batch.contains("compacted raw.page_views:"), "{batch}");
    assert!(batch.contains("published view page_stats version"), "{batch}");
    let (_, compacted) = read_lake(&config, &lake, true);
    for table in ["raw.page_views", "rejected.page_views"] {
        assert_eq!(compacted[table], before[table], "{table} changed with the compaction");
    }
    assert!(compacted.contains_key("views/page_stats"), "{compacted:?}");
    assert!(compacted.contains_key("views/device_5m"), "{compacted:?}");

    // A forced run publishes new versions of the views, computed from the same events.
    let batch = run_ok(strata(&config).args(["batch", "run", "--force"]));
    assert!(batch.contains("published view page_stats version"), "{batch}");
    let (_, republished) = read_lake(&config, &lake, true);
    assert_eq!(
        republished, compacted,
        "a new version of the same events reads differently"
    );
}
