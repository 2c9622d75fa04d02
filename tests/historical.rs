//! The historical half: import files, run the batch layer, serve, compare with DuckDB.

use std::path::Path;

use crate::common::{Process, Scratch, StrataServer, free_port, run_ok, run_python, strata, wait_for_port};

/// Events of the big end-to-end runs (STRATA_E2E_EVENTS overrides).
pub fn events() -> u64 {
    std::env::var("STRATA_E2E_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// strata.example.toml with the lake moved and small records (so that "too large"
/// records are cheap to generate): the tests check the documented configuration.
pub fn example_config(dir: &Path, lake_url: &str, extra: &str) -> std::path::PathBuf {
    let example = std::fs::read_to_string(crate::common::repo().join("strata.example.toml")).expect("example config");
    let text = example
        .replace("url = \"./lake\"", &format!("url = \"{lake_url}\""))
        .replace("max_record_bytes = 1048576", "max_record_bytes = 4096");
    assert!(
        text.contains(lake_url) && text.contains("max_record_bytes = 4096"),
        "the example config changed shape"
    );
    let path = dir.join("strata.toml");
    std::fs::write(&path, format!("{text}\n{extra}")).expect("write config");
    path
}

pub fn generate(config: &Path, out: &Path, events: u64, seed: u64) {
    run_ok(
        strata(config)
            .args([
                "generate",
                "--events",
                &events.to_string(),
                "--max-record-bytes",
                "4096",
                "--seed",
                &seed.to_string(),
                "--out",
            ])
            .arg(out),
    );
}

pub fn manifest(data: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(format!("{}.manifest.json", data.display())).expect("manifest");
    serde_json::from_str(&text).expect("manifest json")
}

/// Import, batch, serve and compare with DuckDB, on a lake at `lake_url`. The caller holds
/// `heavy()` (it may start the lake's store first).
pub fn historical_round_trip(scratch: &Scratch, lake_url: &str, extra_config: &str, env: &[(&str, &str)], events: u64) {
    let config = example_config(&scratch.0, lake_url, extra_config);
    let data = scratch.path("events.jsonl");
    generate(&config, &data, events, 7);
    let m = manifest(&data);
    let valid = m["valid"].as_u64().unwrap();
    let malformed = m["malformed"].as_array().unwrap().len();
    assert!(
        malformed as f64 >= events as f64 * 0.005,
        "the generator made too few malformed lines"
    );

    // Import in chunks: many small files for the compaction to merge.
    let mut import = strata(&config);
    import
        .args(["import", "page_views"])
        .arg(&data)
        .args(["--chunk-rows", "100000"])
        .envs(env.iter().copied());
    let out = run_ok(&mut import);
    assert!(
        out.contains(&format!(
            "imported {valid} events into raw.page_views, rejected {malformed} records"
        )),
        "{out}"
    );

    let mut batch = strata(&config);
    batch.args(["batch", "run"]).envs(env.iter().copied());
    let out = run_ok(&mut batch);
    assert!(out.contains("compacted raw.page_views:"), "{out}");
    assert!(out.contains("published view page_stats version"), "{out}");
    assert!(out.contains("published view device_5m version"), "{out}");

    // A second run with no new data changes nothing.
    let out = run_ok(&mut batch);
    assert!(out.contains("raw.page_views: nothing to compact"), "{out}");
    assert!(out.contains("view page_stats: up to date"), "{out}");
    assert!(out.contains("view device_5m: up to date"), "{out}");

    // Importing the same file again imports nothing.
    let out = run_ok(&mut import);
    assert!(out.contains("imported 0 events"), "{out}");
    assert!(
        out.contains(&format!("skipped {} lines imported before", m["lines"])),
        "{out}"
    );

    let log = scratch.path("serve.log");
    let mut server = StrataServer::start_logging(&config, env, &log);
    let endpoint = server.endpoint();
    let out = run_python(
        "oracle.py",
        &[
            "--endpoint",
            &endpoint,
            "--scratch",
            scratch.0.to_str().unwrap(),
            data.to_str().unwrap(),
        ],
    );
    println!("{out}");
    assert!(out.contains("oracle: every view equals DuckDB"), "{out}");

    // strata query, in every format.
    let query = |sql: &str, format: &str| {
        run_ok(strata(&config).args(["query", sql, "--endpoint", &endpoint, "--format", format]))
    };
    let csv = query("SELECT count(*) AS n FROM raw.page_views", "csv");
    assert_eq!(csv, format!("n\n{valid}\n"));
    let json = query(
        "SELECT view, current FROM system.view_versions WHERE current ORDER BY view",
        "json",
    );
    assert_eq!(
        json.trim(),
        r#"[{"view":"device_5m","current":true},{"view":"page_stats","current":true}]"#
    );
    let table = query(
        "SELECT country, sum(views) AS views FROM page_stats GROUP BY country ORDER BY views DESC LIMIT 3",
        "table",
    );
    assert!(
        table.contains("| country | views") && table.contains("3 rows"),
        "{table}"
    );
    let parquet = scratch.path("out.parquet");
    run_ok(
        strata(&config)
            .args([
                "query",
                "SELECT * FROM page_stats",
                "--endpoint",
                &endpoint,
                "--format",
                "parquet",
                "--output",
            ])
            .arg(&parquet),
    );
    assert!(std::fs::metadata(&parquet).unwrap().len() > 0);

    assert!(
        server.process.terminate(),
        "strata serve did not stop cleanly on SIGTERM"
    );
    // Every query above was answered, and none of them had to work around a fault: on a
    // lake it can read, the server warns of nothing (the footers of the view tables' files
    // were cached with their page indexes, which on S3 once failed on the first query).
    // Nothing but that Kafka is not there: this test runs no broker, and a server that
    // cannot read the topics' partitions says so once its metadata lookup times out.
    let log = std::fs::read_to_string(&log).expect("the server's log");
    let faults: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .filter(|l| !l.contains("cannot read the topics' partitions from Kafka"))
        .collect();
    assert!(faults.is_empty(), "strata serve warned:\n{log}");
}

#[test]
fn import_batch_and_serve_equal_duckdb_on_a_local_lake() {
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("local");
    let lake = scratch.path("lake");
    historical_round_trip(&scratch, lake.to_str().unwrap(), "", &[], events());
}

#[test]
fn import_batch_and_serve_equal_duckdb_on_s3() {
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("s3");
    let port = free_port();
    let moto = crate::common::python().parent().unwrap().join("moto_server");
    let child = std::process::Command::new(&moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(scratch.path("moto.log")).expect("moto log"))
        .spawn()
        .expect("start moto_server");
    let mut moto = Process {
        child,
        name: "moto_server".into(),
    };
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_port(address, &mut moto.child, "moto_server");
    let endpoint = format!("http://127.0.0.1:{port}");
    run_python("s3_bucket.py", &[&endpoint, "strata-e2e"]);
    // Credentials through the environment, as in production.
    let env = [
        ("STRATA_S3_ENDPOINT", endpoint.as_str()),
        ("STRATA_S3_ACCESS_KEY_ID", "test"),
        ("STRATA_S3_SECRET_ACCESS_KEY", "test"),
        ("STRATA_S3_REGION", "us-east-1"),
    ];
    historical_round_trip(&scratch, "s3://strata-e2e/lake", "", &env, events());
    drop(moto);
}
