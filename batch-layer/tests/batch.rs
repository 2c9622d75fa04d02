//! The batch layer against a lake in a scratch directory: compaction never changes an
//! answer (not even for a query already running), a run with no new data publishes nothing,
//! a range recompute equals a full recompute, and the schedule runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::util::pretty::pretty_format_batches;
use futures::StreamExt;
use strata_batch::import::import;
use strata_batch::{BatchLayer, CompactionSizes, RunOptions, ViewOutcome};
use strata_core::clock::{Schedule, SystemClock};
use strata_core::config::Config;
use strata_core::executor::CpuRuntime;
use strata_core::lake::Lake;
use strata_core::schema::SourceSchema;
use strata_core::session::{new_context, session_config};

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("strata-batch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const VIEWS: &str = r#"
[[views]]
name = "per_page"
sql = "SELECT window_start, page, count(*) AS n, sum(ms) AS total, avg(ms) AS mean, approx_distinct(user) AS users FROM clicks GROUP BY tumble(ts, INTERVAL '1 hour'), page"
[[views]]
name = "sliding"
sql = "SELECT window_start, count(*) AS n, max(ms) AS worst FROM clicks GROUP BY hop(ts, INTERVAL '1 hour', INTERVAL '3 hours')"
"#;

fn config(dir: &Path) -> Arc<Config> {
    config_with_views(dir, VIEWS)
}

/// The clicks source and these `[[views]]`.
fn config_with_views(dir: &Path, views: &str) -> Arc<Config> {
    let text = format!(
        r#"
[lake]
url = "{}/lake"
[[sources]]
name = "clicks"
event_time = {{ column = "ts", format = "epoch_millis" }}
[sources.schema]
ts = "timestamp"
user = "string"
page = "string"
ms = "int64"
{views}
[batch]
interval = "1s"
"#,
        dir.display()
    );
    let path = dir.join("strata.toml");
    std::fs::write(&path, &text).unwrap();
    Arc::new(Config::load(&path).unwrap())
}

/// Writes `n` events from `start_ms`, one every `step_ms`, to a JSON-lines file.
fn events_file(dir: &Path, name: &str, start_ms: i64, step_ms: i64, n: usize, seed: usize) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for i in 0..n {
        let k = i * 7919 + seed * 104_729;
        writeln!(
            f,
            r#"{{"ts":{},"user":"u{}","page":"/p{}","ms":{}}}"#,
            start_ms + i as i64 * step_ms,
            k % 97,
            k % 5,
            k % 1000
        )
        .unwrap();
    }
    path
}

const START_MS: i64 = 1_795_219_200_000; // 2026-11-21T00:00:00Z

async fn import_files(config: &Config, files: &[PathBuf]) {
    let lake = Lake::new(&config.lake).unwrap();
    let source = SourceSchema::new(&config.sources[0]);
    for f in files {
        import(&lake, &source, std::slice::from_ref(f), 1_000_000, &|_| {})
            .await
            .unwrap();
    }
}

/// A view's finalized rows, sorted, as text.
async fn view_rows(config: &Config, view: &str) -> String {
    let lake = Lake::new(&config.lake).unwrap();
    let plan = config
        .view_plans()
        .unwrap()
        .into_iter()
        .find(|p| p.name == view)
        .unwrap();
    let table = lake.open(&lake.view_url(view)).await.unwrap().unwrap();
    let ctx = states_context(&table).await;
    let sql = format!("SELECT * FROM ({}) ORDER BY 1, 2", plan.merge_sql("states"));
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

/// A session with a view table registered as `states`.
async fn states_context(table: &deltalake::DeltaTable) -> datafusion::prelude::SessionContext {
    let ctx = new_context(session_config()).unwrap();
    table.update_datafusion_session(&ctx.state()).unwrap();
    let provider = table
        .table_provider()
        .with_session(Arc::new(ctx.state()))
        .await
        .unwrap();
    ctx.register_table("states", provider).unwrap();
    ctx
}

fn cpu() -> CpuRuntime {
    CpuRuntime::new(Some(2)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_changes_no_answer_even_for_a_query_already_running() {
    let scratch = Scratch::new("compaction");
    let config = config(&scratch.0);
    // Five imports: five small files in each of two event-date partitions.
    let files: Vec<PathBuf> = (0..5)
        .map(|i| {
            events_file(
                &scratch.0,
                &format!("e{i}.jsonl"),
                START_MS + i * 1000,
                5_000,
                30_000,
                i as usize,
            )
        })
        .collect();
    import_files(&config, &files).await;
    let lake = Lake::new(&config.lake).unwrap();
    let source = SourceSchema::new(&config.sources[0]);
    let mut raw = lake.open(&lake.raw_url("clicks")).await.unwrap().unwrap();
    let files_before = raw.snapshot().unwrap().log_data().num_files();
    assert_eq!(files_before, 10);

    let answer =
        "SELECT count(*) AS n, sum(ms) AS s, count(DISTINCT user) AS u, min(ts) AS lo, max(ts) AS hi FROM clicks";
    let query = |table: deltalake::DeltaTable, sql: &'static str| async move {
        let mut config = session_config();
        config = config.with_batch_size(512);
        let ctx = new_context(config).unwrap();
        table.update_datafusion_session(&ctx.state()).unwrap();
        let provider = table
            .table_provider()
            .with_session(Arc::new(ctx.state()))
            .await
            .unwrap();
        ctx.register_table("clicks", provider).unwrap();
        (ctx.clone(), ctx.sql(sql).await.unwrap())
    };
    let (_, before) = query(raw.clone(), answer).await;
    let before = pretty_format_batches(&before.collect().await.unwrap())
        .unwrap()
        .to_string();

    // A query that started before the compaction and is read to the end after it.
    let (_ctx, running) = query(raw.clone(), "SELECT user, ms FROM clicks").await;
    let mut stream = running.execute_stream().await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let sizes = CompactionSizes {
        small_file_bytes: 32 << 20,
        target_file_bytes: 128 << 20,
    };
    let cpu = cpu();
    let report = strata_batch::compact::compact(&mut raw, &source, sizes, &cpu)
        .await
        .unwrap();
    assert_eq!(
        (report.files_in, report.files_out, report.rows),
        (10, 2, 150_000),
        "{report:?}"
    );
    let mut rows = first.num_rows();
    let mut checksum: i64 = first
        .column(1)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .iter()
        .flatten()
        .sum();
    while let Some(b) = stream.next().await {
        let b = b.unwrap();
        rows += b.num_rows();
        checksum += b
            .column(1)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .iter()
            .flatten()
            .sum::<i64>();
    }
    assert_eq!(rows, 150_000, "the running query saw a different number of rows");
    let expected: i64 = (0..5usize)
        .flat_map(|seed| (0..30_000usize).map(move |i| ((i * 7919 + seed * 104_729) % 1000) as i64))
        .sum();
    assert_eq!(checksum, expected);

    // A new query sees the compacted files and the same answer.
    let raw = lake.open(&lake.raw_url("clicks")).await.unwrap().unwrap();
    assert_eq!(raw.snapshot().unwrap().log_data().num_files(), 2);
    let (_, after) = query(raw.clone(), answer).await;
    assert_eq!(
        before,
        pretty_format_batches(&after.collect().await.unwrap())
            .unwrap()
            .to_string()
    );

    // The compacted files' statistics, as a Delta reader parses them: each file's rows and
    // the bounds of its event times, against what a query of its partition finds.
    let (_, per_date) = query(
        raw.clone(),
        "SELECT CAST(event_date AS VARCHAR), count(*), min(ts), max(ts) FROM clicks GROUP BY 1",
    )
    .await;
    let mut expected = std::collections::HashMap::new();
    for b in per_date.collect().await.unwrap() {
        let (dates, counts) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_primitive::<arrow::datatypes::Int64Type>(),
        );
        let (lo, hi) = (
            b.column(2).as_primitive::<TimestampMicrosecondType>(),
            b.column(3).as_primitive::<TimestampMicrosecondType>(),
        );
        for i in 0..b.num_rows() {
            expected.insert(
                dates.value(i).to_string(),
                (counts.value(i) as usize, lo.value(i), hi.value(i)),
            );
        }
    }
    let snapshot = raw.snapshot().unwrap();
    for file in snapshot.log_data().iter() {
        let date = file.partition_values_map()["event_date"].clone().unwrap();
        let (rows, lo, hi) = expected[&date];
        assert_eq!(file.num_records(), Some(rows), "{date}");
        assert!(file.min_values().is_some() && file.max_values().is_some(), "{date}");
        let stats: serde_json::Value = serde_json::from_str(&file.stats().unwrap()).unwrap();
        let micros = |v: &serde_json::Value| {
            chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
                .unwrap()
                .timestamp_micros()
        };
        // The events' times are whole milliseconds: the bounds are exact.
        assert_eq!(
            (micros(&stats["minValues"]["ts"]), micros(&stats["maxValues"]["ts"])),
            (lo, hi),
            "{date}: {stats}"
        );
        assert_eq!(stats["nullCount"]["ts"], 0, "{date}: {stats}");
    }

    // Compacted files are sorted by event time.
    let (_, files) = query(raw.clone(), "SELECT ts FROM clicks").await;
    let ts: Vec<RecordBatch> = files.collect().await.unwrap();
    let mut sorted_runs = 0;
    for b in &ts {
        let t = b.column(0).as_primitive::<TimestampMicrosecondType>();
        assert!(
            t.values().windows(2).all(|w| w[0] <= w[1]),
            "a compacted file is not sorted by event time"
        );
        sorted_runs += 1;
    }
    assert!(sorted_runs > 0);

    // Nothing left to compact: no commit.
    let mut raw = raw;
    let version = raw.version();
    let report = strata_batch::compact::compact(&mut raw, &source, sizes, &cpu)
        .await
        .unwrap();
    assert_eq!(report.version, None);
    assert_eq!(raw.version(), version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_new_data_publishes_nothing_and_a_range_run_equals_a_full_run() {
    let scratch = Scratch::new("runs");
    let config = config(&scratch.0);
    let batch = BatchLayer::new(config.clone(), cpu()).unwrap();

    // No data at all: nothing to do, nothing published.
    let report = batch.run_once(RunOptions::default()).await.unwrap();
    assert!(!report.changed_anything(), "{report:?}");
    assert!(report.views.iter().all(|v| v.outcome == ViewOutcome::NoData));

    import_files(
        &config,
        &[events_file(&scratch.0, "day.jsonl", START_MS, 10_000, 8_640, 1)],
    )
    .await;
    let report = batch.run_once(RunOptions::default()).await.unwrap();
    assert!(
        report
            .views
            .iter()
            .all(|v| matches!(v.outcome, ViewOutcome::Published { .. })),
        "{report:?}"
    );

    // Again, with nothing new: nothing compacted, nothing published, same versions.
    let again = batch.run_once(RunOptions::default()).await.unwrap();
    assert!(!again.changed_anything(), "{again:?}");
    for v in &again.views {
        assert!(matches!(v.outcome, ViewOutcome::UpToDate { version: 1 }), "{v:?}");
    }

    // A backfill of history for hours 2..5 of the day, then a recompute of just that range.
    let before_per_page = view_rows(&config, "per_page").await;
    import_files(
        &config,
        &[events_file(
            &scratch.0,
            "backfill.jsonl",
            START_MS + 2 * 3_600_000,
            3_000,
            3_600,
            2,
        )],
    )
    .await;
    let from = (START_MS + 2 * 3_600_000) * 1000;
    let to = (START_MS + 5 * 3_600_000) * 1000;
    let ranged = batch
        .run_once(RunOptions {
            range: Some((from, to)),
            force: false,
        })
        .await
        .unwrap();
    for v in &ranged.views {
        let ViewOutcome::Published { commit, .. } = &v.outcome else {
            panic!("{v:?}")
        };
        assert!(commit.range.is_some());
    }
    let ranged_rows: Vec<String> = vec![
        view_rows(&config, "per_page").await,
        view_rows(&config, "sliding").await,
    ];
    assert_ne!(ranged_rows[0], before_per_page, "the backfill did not reach the view");

    // A full recompute gives exactly the same views: the range covered every changed window.
    let full = batch.run_once(RunOptions::default()).await.unwrap();
    assert!(
        full.views
            .iter()
            .all(|v| matches!(v.outcome, ViewOutcome::Published { .. }))
    );
    assert_eq!(ranged_rows[0], view_rows(&config, "per_page").await);
    assert_eq!(ranged_rows[1], view_rows(&config, "sliding").await);

    // The published versions say what they cover.
    let lake = Lake::new(&config.lake).unwrap();
    let table = lake.open(&lake.view_url("per_page")).await.unwrap().unwrap();
    let versions = Lake::view_versions(&table, 10).await.unwrap();
    assert_eq!(versions.len(), 3);
    assert_eq!(versions[0].commit.events, 8_640 + 3_600);
    assert_eq!(versions[1].commit.range, Some((from, to)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_batch_run_at_the_same_time_is_refused() {
    let scratch = Scratch::new("lease");
    let config = config(&scratch.0);
    let lake = Lake::new(&config.lake).unwrap();
    let held = strata_batch::lease::Lease::acquire(&lake).await.unwrap();
    let batch = BatchLayer::new(config.clone(), cpu()).unwrap();
    let err = batch.run_once(RunOptions::default()).await.unwrap_err().to_string();
    assert!(err.contains("another batch run (pid"), "{err}");
    held.release().await.unwrap();
    batch.run_once(RunOptions::default()).await.unwrap();
}

/// A run killed mid-way leaves its lease behind; the next run on the same host sees that
/// its holder is gone and takes it over at once instead of waiting for it to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_of_a_killed_run_on_this_host_is_taken_over() {
    let scratch = Scratch::new("lease-killed");
    let config = config(&scratch.0);
    let lake = Lake::new(&config.lake).unwrap();
    // A child that has exited: its pid names no process any more.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .ok()
        })
        .unwrap();
    let holder = |pid: u32| {
        serde_json::json!({
            "holder": format!("pid {pid} on {host}"),
            "acquired_at": chrono::Utc::now().to_rfc3339(),
            "expires_at": (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc3339(),
        })
        .to_string()
    };
    let lease = lake.root().url().to_file_path().unwrap().join("_strata/batch.lease");
    std::fs::create_dir_all(lease.parent().unwrap()).unwrap();
    // A live holder (this process) is waited for ...
    std::fs::write(&lease, holder(std::process::id())).unwrap();
    let batch = BatchLayer::new(config.clone(), cpu()).unwrap();
    let err = batch.run_once(RunOptions::default()).await.unwrap_err();
    // Waiting for another run is nobody's mistake: not the user's input, not a bug.
    assert_eq!(err.domain(), strata_core::ErrorDomain::External, "{err:?}");
    let err = err.to_string();
    assert!(err.contains("holds the lease"), "{err}");
    // ... a dead one is not.
    std::fs::write(&lease, holder(dead)).unwrap();
    batch.run_once(RunOptions::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_runs_the_batch_layer_until_stopped() {
    let scratch = Scratch::new("schedule");
    let config = config(&scratch.0);
    import_files(&config, &[events_file(&scratch.0, "a.jsonl", START_MS, 60_000, 100, 3)]).await;
    let batch = BatchLayer::new(config.clone(), cpu()).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let runs = AtomicUsize::new(0);
    let published = AtomicUsize::new(0);
    let on_run = |r: &strata_core::Result<strata_batch::RunReport>| {
        let report = r.as_ref().unwrap();
        if report.changed_anything() {
            published.fetch_add(1, Ordering::SeqCst);
        }
        if runs.fetch_add(1, Ordering::SeqCst) + 1 == 2 {
            stop.cancel();
        }
    };
    let schedule = Schedule::Every(Duration::from_millis(200));
    tokio::time::timeout(
        Duration::from_secs(60),
        batch.run_scheduled(&schedule, Arc::new(SystemClock), stop.clone(), &on_run),
    )
    .await
    .expect("two scheduled runs within a minute")
    .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(
        published.load(Ordering::SeqCst),
        1,
        "the second run had nothing new to publish"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_import_by_column_name_and_rows_without_a_usable_event_time_are_rejected() {
    use arrow::array::{Int32Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let scratch = Scratch::new("parquet");
    let config = config(&scratch.0);
    // Other column order, other types (ms timestamps, int32), an extra column, a missing one.
    let schema = Arc::new(Schema::new(vec![
        Field::new("ms", DataType::Int32, true),
        Field::new("extra", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("user", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int32Array::from(vec![Some(5), Some(7), None, Some(9), Some(1)])),
            Arc::new(StringArray::from(vec!["a", "b", "c", "d", "e"])),
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(START_MS),
                Some(START_MS + 1),
                None,
                Some(START_MS + 2),
                // Year 10000: a date the lake cannot partition by.
                Some(253_402_300_800_000),
            ])),
            Arc::new(StringArray::from(vec!["u1", "u2", "u3", "u4", "u5"])),
        ],
    )
    .unwrap();
    let path = scratch.0.join("history.parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let lake = Lake::new(&config.lake).unwrap();
    let source = SourceSchema::new(&config.sources[0]);
    let report = import(&lake, &source, std::slice::from_ref(&path), 1_000_000, &|_| {})
        .await
        .unwrap();
    assert_eq!((report.imported, report.rejected), (3, 2), "{report:?}");
    // Again: nothing new.
    let report = import(&lake, &source, std::slice::from_ref(&path), 1_000_000, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        (report.imported, report.rejected, report.already_imported),
        (0, 0, 5),
        "{report:?}"
    );

    let ctx = new_context(session_config()).unwrap();
    for (name, url) in [
        ("raw", lake.raw_url("clicks")),
        ("rejected", lake.rejected_url("clicks")),
    ] {
        let table = lake.open(&url).await.unwrap().unwrap();
        table.update_datafusion_session(&ctx.state()).unwrap();
        ctx.register_table(
            name,
            table
                .table_provider()
                .with_session(Arc::new(ctx.state()))
                .await
                .unwrap(),
        )
        .unwrap();
    }
    let raw = ctx
        .sql("SELECT user, ms, page, ts FROM raw ORDER BY ts")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        pretty_format_batches(&raw).unwrap().to_string(),
        [
            "+------+----+------+--------------------------+",
            "| user | ms | page | ts                       |",
            "+------+----+------+--------------------------+",
            "| u1   | 5  |      | 2026-11-21T00:00:00Z     |",
            "| u2   | 7  |      | 2026-11-21T00:00:00.001Z |",
            "| u4   | 9  |      | 2026-11-21T00:00:00.002Z |",
            "+------+----+------+--------------------------+",
        ]
        .join("\n")
    );
    let rejected = ctx
        .sql("SELECT line, reason, arrow_cast(raw, 'Utf8') AS raw FROM rejected")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = pretty_format_batches(&rejected).unwrap().to_string();
    assert!(text.contains("| 3    | no event time: column `ts` is null"), "{text}");
    assert!(text.contains(r#"{"extra":"c","user":"u3"}"#), "{text}");
    assert!(
        text.contains(
            "| 5    | column `ts`: event time +10000-01-01T00:00:00+00:00 is outside the range the lake stores"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_source_schema_is_refused_not_mixed() {
    let scratch = Scratch::new("schema");
    let config = config(&scratch.0);
    import_files(&config, &[events_file(&scratch.0, "a.jsonl", START_MS, 1000, 10, 0)]).await;
    let changed = std::fs::read_to_string(scratch.0.join("strata.toml"))
        .unwrap()
        .replace("ms = \"int64\"", "ms = \"float64\"");
    std::fs::write(scratch.0.join("strata.toml"), changed).unwrap();
    let config = Config::load(&scratch.0.join("strata.toml")).unwrap();
    let lake = Lake::new(&config.lake).unwrap();
    let source = SourceSchema::new(&config.sources[0]);
    let file = events_file(&scratch.0, "b.jsonl", START_MS, 1000, 10, 1);
    let err = import(&lake, &source, &[file], 1_000_000, &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the raw table of source `clicks` in the lake has columns"),
        "{err}"
    );
    assert!(err.contains("ms Int64") && err.contains("ms Float64"), "{err}");
}

/// A recompute that needs more memory than `batch.memory` fails alone, naming the view and
/// saying what to change, and publishes nothing; with the default limit the same run
/// publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recompute_over_its_memory_limit_fails_naming_the_view_and_publishes_nothing() {
    let scratch = Scratch::new("recompute-memory");
    let config = config(&scratch.0);
    import_files(
        &config,
        &[events_file(&scratch.0, "a.jsonl", START_MS, 1_000, 20_000, 1)],
    )
    .await;
    let mut tight = (*config).clone();
    tight.batch.memory = Some(16 << 10);
    let batch = BatchLayer::new(Arc::new(tight), cpu()).unwrap();
    let e = batch.run_once(RunOptions::default()).await.unwrap_err().to_string();
    assert!(
        e.starts_with("view `per_page`: recompute: needs more memory than the batch layer gives it (batch.memory)")
            && e.contains("nothing was published"),
        "{e}"
    );
    let lake = Lake::new(&config.lake).unwrap();
    assert!(lake.open(&lake.view_url("per_page")).await.unwrap().is_none());
    let batch = BatchLayer::new(config.clone(), cpu()).unwrap();
    let report = batch.run_once(RunOptions::default()).await.unwrap();
    assert!(
        report
            .views
            .iter()
            .all(|v| matches!(v.outcome, ViewOutcome::Published { .. }))
    );
}

/// The metric `name` of every node of a plan that has it.
fn metric_values(
    plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    name: &str,
) -> Vec<datafusion::physical_plan::metrics::MetricValue> {
    let mut values: Vec<_> = plan.metrics().and_then(|m| m.sum_by_name(name)).into_iter().collect();
    for child in plan.children() {
        values.extend(metric_values(child, name));
    }
    values
}

/// Sums a pruning metric (pages or rows: (pruned, matched)) over every node of a plan.
fn pruning(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>, name: &str) -> (usize, usize) {
    use datafusion::physical_plan::metrics::MetricValue;
    metric_values(plan, name)
        .into_iter()
        .map(|v| match v {
            MetricValue::PruningMetrics { pruning_metrics, .. } => {
                (pruning_metrics.pruned(), pruning_metrics.matched())
            }
            other => panic!("{name} is {other:?}"),
        })
        .fold((0, 0), |(p, m), (vp, vm)| (p + vp, m + vm))
}

/// Sums a counter over every node of a plan.
fn count(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>, name: &str) -> usize {
    metric_values(plan, name).iter().map(|v| v.as_usize()).sum()
}

/// A view table is published in runs of an hour of windows, by group within a run, so a
/// query of one group over the last hour reads only the pages of that hour (their statistics
/// say which), filters them while reading, and decodes only the one or two small pages of the
/// sketch columns that hold the group's rows; the sketches' bytes have no dictionary (every
/// sketch differs: it only grew to its limit, then was given up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_of_one_group_over_the_last_hour_reads_only_its_pages_of_the_view_table() {
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::serialized_reader::ReadOptionsBuilder;

    let scratch = Scratch::new("layout");
    let config = config_with_views(
        &scratch.0,
        r#"
[[views]]
name = "per_minute"
sql = "SELECT window_start, page, count(*) AS n, approx_distinct(user) AS users FROM clicks GROUP BY tumble(ts, INTERVAL '1 minute'), page"
"#,
    );
    // A day of events, one every 500 ms, over 50 pages in turn: every page in every minute,
    // 72,000 state rows, 3,000 of them in the last hour.
    let (events, pages, step_ms) = (172_800usize, 50usize, 500i64);
    let path = scratch.0.join("day.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for i in 0..events {
        writeln!(
            f,
            r#"{{"ts":{},"user":"u{}","page":"/p{:02}","ms":1}}"#,
            START_MS + i as i64 * step_ms,
            i % 7,
            i % pages
        )
        .unwrap();
    }
    drop(f);
    import_files(&config, &[path]).await;
    let batch = BatchLayer::new(config.clone(), cpu()).unwrap();
    batch.run_once(RunOptions::default()).await.unwrap();

    let lake = Lake::new(&config.lake).unwrap();
    let table = lake.open(&lake.view_url("per_minute")).await.unwrap().unwrap();
    let dir = scratch.0.join("lake/views/per_minute");
    // The last hour of the day, one run of windows; the rows of /p07 in it, by position.
    let last_hour_us = (START_MS + 23 * 3_600_000) * 1000;
    let (mut state_rows, mut group_rows, mut group_pages) = (0, Vec::new(), Vec::new());
    let (mut sketch_page_rows, mut time_page_rows) = (0, 0);
    for file in table.snapshot().unwrap().log_data().iter() {
        let path = dir.join(&*file.path());
        let reader = SerializedFileReader::new_with_options(
            std::fs::File::open(&path).unwrap(),
            ReadOptionsBuilder::new().with_page_index().build(),
        )
        .unwrap();
        let metadata = reader.metadata();
        let columns = metadata.file_metadata().schema_descr();
        let column = |name: &str| {
            (0..columns.num_columns())
                .find(|&i| columns.column(i).name() == name)
                .unwrap()
        };
        let (hll, time) = (column("users__hll"), column("window_start"));
        let offsets = metadata.offset_index().expect("no page index");
        let keys = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap()).unwrap();
        let mask = ProjectionMask::columns(keys.parquet_schema(), ["window_start", "page"]);
        let mut positions = Vec::new(); // of the file's rows, whether the group's in the last hour
        for batch in keys.with_projection(mask).build().unwrap() {
            let batch = batch.unwrap();
            let starts = batch.column(0).as_primitive::<TimestampMicrosecondType>();
            let groups = batch.column(1).as_string::<i32>();
            positions
                .extend((0..batch.num_rows()).map(|i| groups.value(i) == "/p07" && starts.value(i) >= last_hour_us));
        }
        let mut first = 0;
        for (r, row_group) in metadata.row_groups().iter().enumerate() {
            assert_eq!(
                row_group.column(hll).dictionary_page_offset(),
                None,
                "the sketch's bytes in a dictionary"
            );
            let page_rows = |c: usize| {
                let pages = offsets[r][c].page_locations();
                (0..pages.len())
                    .map(|p| {
                        pages.get(p + 1).map_or(row_group.num_rows(), |n| n.first_row_index) - pages[p].first_row_index
                    })
                    .max()
                    .unwrap()
            };
            sketch_page_rows = sketch_page_rows.max(page_rows(hll));
            time_page_rows = time_page_rows.max(page_rows(time));
            let pages = offsets[r][hll].page_locations();
            for i in 0..row_group.num_rows() {
                if positions[(first + i) as usize] {
                    group_rows.push(state_rows + first + i);
                    group_pages.push((path.clone(), r, pages.partition_point(|p| p.first_row_index <= i) - 1));
                }
            }
            first += row_group.num_rows();
        }
        state_rows += first;
    }
    assert_eq!(state_rows, 1440 * pages as i64);
    // The group's hour lies together, in at most two pages of the sketch column, and those
    // pages are small: a fraction of the rows of the window_start column's pages.
    assert_eq!(group_rows.len(), 60);
    assert!(
        group_rows.windows(2).all(|w| w[1] == w[0] + 1),
        "the group's windows of one hour are not together: rows {group_rows:?}"
    );
    group_pages.dedup();
    assert!(
        group_pages.len() <= 2,
        "{} pages of the sketch hold the group's hour",
        group_pages.len()
    );
    assert!(
        sketch_page_rows * 4 <= time_page_rows,
        "sketch pages of up to {sketch_page_rows} rows, window_start pages of {time_page_rows}"
    );

    // One page, its last hour: 60 windows of the day's last hour, counted from the input.
    let ctx = states_context(&table).await;
    let plan = ctx
        .sql(&format!(
            "SELECT sum(n__count) AS n, count(*) AS windows FROM states \
             WHERE page = '/p07' AND window_start >= to_timestamp_micros({last_hour_us})"
        ))
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let answer = datafusion::physical_plan::collect(plan.clone(), ctx.task_ctx())
        .await
        .unwrap();
    let expected = (0..events)
        .filter(|i| i % pages == 7 && START_MS + *i as i64 * step_ms >= last_hour_us / 1000)
        .count() as i64;
    let got = &answer[0];
    assert_eq!(
        got.column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0),
        expected
    );
    assert_eq!(got.column(1).as_primitive::<arrow::datatypes::Int64Type>().value(0), 60);
    let (_, rows_read) = pruning(&plan, "page_index_rows_pruned");
    assert!(
        (3_000..state_rows as usize / 2).contains(&rows_read),
        "{rows_read} rows read after page pruning, of {state_rows}"
    );
    // Filtered while read: of the pages' rows, only the group's hour is decoded further.
    assert_eq!(count(&plan, "pushdown_rows_matched"), 60);
}
