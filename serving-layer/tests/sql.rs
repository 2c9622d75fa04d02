//! SQL behaviour as data: each `.slt` file of `tests/sql/` runs, with sqllogictest, against
//! the serving catalog over a lake whose views hold batch states, merged with an in-memory
//! speed layer holding the rest of the events: windows at their edges, hopping windows,
//! FILTER, NULL group keys and measures, a window split between batch and speed, every
//! aggregate, refused views and refused statements with their messages. No broker, no
//! Python: `cargo test -p strata-serving --test sql`.
//!
//! The events are [`BATCH`] (imported into the lake, then a batch run publishes the views)
//! and [`SPEED`] (what the speed layer holds). The expected values in the files were
//! computed by DuckDB over the same nine events; each file quotes the DuckDB query.
//!
//! Besides SQL, the files may use `DEFINE VIEW <name> AS <SELECT ...>`: the view compiler
//! checks the definition (as at startup) and the statement fails with its message.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Float64Type, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use strata_core::config::{Config, ViewConfig};
use strata_core::executor::CpuRuntime;
use strata_core::schema::{SourceSchema, TIMESTAMP_TZ, complete_raw_batch};
use strata_core::session::{new_context, session_config};
use strata_core::speed::{
    OffsetRange, PartRange, PartitionStatus, SpeedPart, SpeedSource, SpeedStatus, TopicPartition,
};
use strata_core::status::df_status;
use strata_core::view::ViewPlan;
use strata_serving::Catalog;
use strata_serving::sql::{check_read_only, read_only_options};

const CONFIG: &str = r#"
[lake]
url = "lake"

[[sources]]
name = "events"
topics = ["events"]
event_time = { column = "ts", format = "epoch_millis" }
[sources.schema]
ts = "timestamp"
k = "string"
x = "int64"
u = "string"

[[views]]
name = "tumbling"
sql = """SELECT window_start, window_end, k, count(*) AS n, count(x) AS nx, sum(x) AS s, min(x) AS lo,
  max(x) AS hi, avg(x) AS mean, stddev(x) AS sd, var_pop(x) AS vp, approx_distinct(u) AS users,
  approx_percentile(x, 0.5) AS median, count(*) FILTER (WHERE x > 50) AS big
  FROM events GROUP BY tumble(ts, INTERVAL '10 seconds'), k"""

[[views]]
name = "hopping"
sql = """SELECT window_start, window_end, count(*) AS n, sum(x) AS s FROM events WHERE k IS NOT NULL
  GROUP BY hop(ts, INTERVAL '5 seconds', INTERVAL '15 seconds')"""
"#;

/// 2026-01-01T00:00:00Z in epoch milliseconds.
const T0: i64 = 1_767_225_600_000;

/// One event: milliseconds after [`T0`], group key, measure, user.
type Event = (i64, Option<&'static str>, Option<i64>, Option<&'static str>);

/// The events the batch layer publishes: a window's first and last millisecond, the first of
/// the next, a NULL group key, a NULL measure.
const BATCH: &[Event] = &[
    (0, Some("a"), Some(10), Some("u1")),
    (9_999, Some("a"), Some(20), Some("u2")),
    (10_000, Some("a"), Some(60), Some("u1")),
    (3_000, None, Some(5), Some("u3")),
    (4_000, Some("b"), None, Some("u4")),
];

/// The events only the speed layer holds: one in a window the batch layer holds part of,
/// one with every column NULL but its time.
const SPEED: &[Event] = &[
    (5_000, Some("a"), Some(30), Some("u3")),
    (12_000, Some("b"), Some(70), Some("u5")),
    (19_999, None, None, None),
    (21_000, Some("a"), Some(40), Some("u1")),
];

/// A speed layer holding [`SPEED`] as offsets `[0, n)` of partition 0, under generation 1.
#[derive(Debug)]
struct MemorySpeed {
    plans: Vec<ViewPlan>,
    events: RecordBatch,
}

#[async_trait::async_trait]
impl SpeedSource for MemorySpeed {
    fn name(&self) -> String {
        "memory".into()
    }

    async fn states(
        &self,
        view: &str,
        coverage: &strata_core::speed::Offsets,
        _recency: Option<std::time::Duration>,
    ) -> strata_core::Result<Vec<SpeedPart>> {
        let plan = self
            .plans
            .iter()
            .find(|p| p.name == view)
            .expect("a view of the config");
        let ctx = new_context(session_config())?;
        ctx.register_batch("events", self.events.clone())?;
        let batches = ctx.sql(&plan.state_sql("events")).await?.collect().await?;
        let from = coverage.get(&TopicPartition::new("events", 0)).copied().unwrap_or(0);
        Ok(vec![SpeedPart {
            range: PartRange {
                generation: 1,
                offsets: OffsetRange {
                    partition: TopicPartition::new("events", 0),
                    start: from,
                    end: self.events.num_rows() as i64,
                },
            },
            batches,
        }])
    }

    async fn status(&self) -> strata_core::Result<SpeedStatus> {
        Ok(SpeedStatus {
            instance: self.name(),
            partitions: vec![PartitionStatus {
                source: "events".into(),
                partition: TopicPartition::new("events", 0),
                generation: 1,
                consumed: self.events.num_rows() as i64,
                ..Default::default()
            }],
            ..Default::default()
        })
    }
}

/// The source's raw rows for `events`.
fn raw_batch(source: &SourceSchema, events: &[Event]) -> RecordBatch {
    let ts: Vec<i64> = events.iter().map(|e| (T0 + e.0) * 1000).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone(TIMESTAMP_TZ)),
        Arc::new(StringArray::from(events.iter().map(|e| e.1).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(events.iter().map(|e| e.2).collect::<Vec<_>>())),
        Arc::new(StringArray::from(events.iter().map(|e| e.3).collect::<Vec<_>>())),
    ];
    complete_raw_batch(source, columns).expect("raw rows of the test events")
}

/// [`BATCH`] as JSON lines, for `strata import`.
fn jsonl(events: &[Event]) -> String {
    events
        .iter()
        .map(|(t, k, x, u)| serde_json::json!({ "ts": T0 + t, "k": k, "x": x, "u": u }).to_string() + "\n")
        .collect()
}

/// A failed statement, as the client would read it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SqlError(String);

/// The serving catalog as a sqllogictest database.
#[derive(Clone)]
struct Strata {
    catalog: Arc<Catalog>,
    config: Arc<Config>,
}

#[async_trait::async_trait]
impl AsyncDB for Strata {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        if let Some(definition) = sql.trim().strip_prefix("DEFINE VIEW ") {
            let (name, sql) = definition
                .split_once(" AS ")
                .ok_or_else(|| SqlError("DEFINE VIEW <name> AS <SELECT ...>".into()))?;
            let view = ViewConfig {
                name: name.trim().into(),
                sql: sql.into(),
            };
            ViewPlan::compile(&view, &self.config.sources).map_err(|e| SqlError(e.to_string()))?;
            return Ok(DBOutput::StatementComplete(0));
        }
        check_read_only(sql).map_err(|s| SqlError(s.message().into()))?;
        let fail = |e: datafusion::error::DataFusionError| SqlError(df_status(&e).message().into());
        let df = self
            .catalog
            .session()
            .sql_with_options(sql, read_only_options())
            .await
            .map_err(fail)?;
        let types = df
            .schema()
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        let batches = df.collect().await.map_err(fail)?;
        let mut rows = Vec::new();
        for batch in &batches {
            for row in 0..batch.num_rows() {
                rows.push(batch.columns().iter().map(|c| cell(c, row)).collect());
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}
}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating() => DefaultColumnType::FloatingPoint,
        _ => DefaultColumnType::Text,
    }
}

/// A value as the files write it: NULL; floats to six decimals without trailing zeros;
/// timestamps as `2026-01-01T00:00:10` (UTC).
fn cell(column: &ArrayRef, row: usize) -> String {
    if column.is_null(row) {
        return "NULL".into();
    }
    match column.data_type() {
        DataType::Float64 => {
            let v = column.as_primitive::<Float64Type>().value(row);
            let text = format!("{v:.6}");
            let text = text.trim_end_matches('0').trim_end_matches('.');
            if text == "-0" { "0".into() } else { text.into() }
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let micros = column
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .value(row);
            let t = chrono::DateTime::from_timestamp_micros(micros).expect("a timestamp in range");
            t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
        }
        _ => ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())
            .expect("a displayable column")
            .value(row)
            .to_string(),
    }
}

/// A lake with [`BATCH`] imported and the views published, and a catalog over it with the
/// in-memory speed layer.
async fn strata(dir: &Path) -> Strata {
    let (config, source) = published(dir).await;
    let speed = MemorySpeed {
        plans: config.view_plans().expect("the views plan"),
        events: raw_batch(&source, SPEED),
    };
    let catalog = Catalog::new(&config, vec![Arc::new(speed)]).await.expect("the catalog");
    Strata { catalog, config }
}

/// A lake in `dir` with [`BATCH`] imported and the views published.
async fn published(dir: &Path) -> (Arc<Config>, Arc<SourceSchema>) {
    let file = dir.join("strata.toml");
    let config = Arc::new(Config::parse(CONFIG, &file, &Default::default()).expect("the test config"));
    let source = SourceSchema::new(&config.sources[0]);
    let lake = strata_core::lake::Lake::new(&config.lake).expect("the lake");
    let input = dir.join("batch.jsonl");
    std::fs::write(&input, jsonl(BATCH)).expect("write the batch events");
    let imported = strata_batch::import::import(&lake, &source, &[input], 1000, &|_| {})
        .await
        .expect("import");
    assert_eq!(imported.imported, BATCH.len() as u64);
    let cpu = CpuRuntime::new(Some(1)).expect("a CPU runtime");
    let batch = strata_batch::BatchLayer::new(config.clone(), cpu).expect("the batch layer");
    batch.run_once(Default::default()).await.expect("a batch run");
    (config, source)
}

/// Archives `events` into the raw table as offsets `from..` of partition 0 of `events`, with
/// the partition's Kafka position, as the speed layer does.
async fn archive(config: &Config, source: &SourceSchema, events: &[Event], from: i64) {
    use strata_core::schema::{OFFSET, PARTITION, TOPIC};
    let lake = strata_core::lake::Lake::new(&config.lake).expect("the lake");
    let mut raw = lake
        .open(&lake.raw_url("events"))
        .await
        .expect("the raw table")
        .expect("imported");
    let chunk = raw_batch(source, events);
    let mut columns = chunk.columns().to_vec();
    let schema = chunk.schema();
    let at = |name: &str| schema.index_of(name).expect("a raw column");
    let until = from + events.len() as i64;
    columns[at(TOPIC)] = Arc::new(StringArray::from(vec!["events"; events.len()]));
    columns[at(PARTITION)] = Arc::new(arrow::array::Int32Array::from(vec![0; events.len()]));
    columns[at(OFFSET)] = Arc::new(Int64Array::from_iter_values(from..until));
    let chunk = RecordBatch::try_new(schema.clone(), columns).expect("a raw batch");
    let partition = TopicPartition::new("events", 0);
    let txn = deltalake::kernel::Transaction::new(strata_core::lake::kafka_app_id(&partition), until);
    strata_core::lake::append(&mut raw, vec![chunk], vec![txn], serde_json::json!({}))
        .await
        .expect("archived");
}

/// `sum(n), sum(s)` of the tumbling view: the events counted and the sum of their `x`.
async fn totals(catalog: &Catalog) -> (i64, i64) {
    let batches = collected(catalog, TOTALS).await;
    let column = |i: usize| {
        batches[0]
            .column(i)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
    };
    (column(0), column(1))
}

const TOTALS: &str = "SELECT sum(n) AS n, sum(s) AS s FROM tumbling";

/// The answer to `sql`.
async fn collected(catalog: &Catalog, sql: &str) -> Vec<RecordBatch> {
    catalog
        .session()
        .sql(sql)
        .await
        .expect("plans")
        .collect()
        .await
        .expect("runs")
}

/// The answer to `sql` as a printed table.
async fn printed(catalog: &Catalog, sql: &str) -> String {
    arrow::util::pretty::pretty_format_batches(&collected(catalog, sql).await)
        .expect("printable")
        .to_string()
}

/// What [`totals`] should answer over `events`, computed from them.
fn sums(events: &[Event]) -> (i64, i64) {
    (events.len() as i64, events.iter().filter_map(|e| e.2).sum::<i64>())
}

/// Without a speed layer, the events archived beyond the batch version come from the raw
/// table, and the states the catalog keeps of them between queries follow each new version of
/// it: every query counts each event once, before and after more are archived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_speed_layer_the_archived_events_count_once_as_the_raw_table_grows() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let (config, source) = published(dir.path()).await;
    let catalog = Catalog::new(&config, vec![]).await.expect("the catalog");
    // Nothing archived yet: the batch states alone.
    assert_eq!(totals(&catalog).await, sums(BATCH));
    // SPEED archived as offsets [0, 2), then [2, 4) of partition 0, as the speed layer does.
    for (from, until) in [(0, 2), (2, 4)] {
        archive(&config, &source, &SPEED[from..until], from as i64).await;
        let expected = sums(&[BATCH, &SPEED[..until]].concat());
        // Twice: the second from the states kept of the first.
        assert_eq!(
            totals(&catalog).await,
            expected,
            "after offsets [{from}, {until}) archived"
        );
        assert_eq!(totals(&catalog).await, expected, "asked again");
    }
}

/// The batch rows a query merges with live states (the windows those reach back to) are kept
/// between queries for one view version: a new version is read anew even when the live states
/// start in the same window, and past the number kept every query reads them itself. Each
/// answer counts every event once; the plans show which way they were read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_rows_merged_with_live_states_follow_the_view_version() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let (config, source) = published(dir.path()).await;
    // The answer, and how many scans of the view table its plan has.
    let query = async |catalog: &Catalog| {
        let plans = printed(catalog, &format!("EXPLAIN {TOTALS}")).await;
        (totals(catalog).await, plans.matches("file_type=parquet").count())
    };
    let catalog = Catalog::new(&config, vec![]).await.expect("the catalog");
    // Archived beyond the first version: an event of the first window, which the batch
    // version holds rows of. Asked twice, the second time from the rows kept.
    let first: &[Event] = &[(5_000, Some("a"), Some(30), Some("u3"))];
    archive(&config, &source, first, 0).await;
    for _ in 0..2 {
        assert_eq!(
            query(&catalog).await,
            (sums(&[BATCH, first].concat()), 1),
            "one scan of the view table"
        );
    }
    // A batch run publishes a version covering it; the next archived event is of the same
    // first window, so the live states start where they did, but the batch rows changed.
    let cpu = CpuRuntime::new(Some(1)).expect("a CPU runtime");
    let batch = strata_batch::BatchLayer::new(config.clone(), cpu).expect("the batch layer");
    batch.run_once(Default::default()).await.expect("a batch run");
    let second: &[Event] = &[(1_000, Some("b"), Some(7), Some("u9"))];
    archive(&config, &source, second, 1).await;
    for _ in 0..2 {
        assert_eq!(
            query(&catalog).await,
            (sums(&[BATCH, first, second].concat()), 1),
            "the new version's rows"
        );
    }
    // More rows than are kept: every query reads them in its own plan, a second scan.
    let catalog = Catalog::new(&config, vec![]).await.expect("the catalog");
    catalog.keep_recent_rows(1);
    for _ in 0..2 {
        assert_eq!(
            query(&catalog).await,
            (sums(&[BATCH, first, second].concat()), 2),
            "read by the query"
        );
    }
}

/// The footers of a view table's files are cached with their page indexes, under the keys its
/// Parquet scans look them up by: after queries, the cache holds one entry per file of the view
/// table, each with its page index, each found by the queries' scans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_footers_of_a_view_tables_files_are_cached_with_their_page_indexes() {
    use datafusion::datasource::physical_plan::parquet::metadata::CachedParquetMetaData;
    let dir = tempfile::tempdir().expect("a scratch directory");
    let (config, _) = published(dir.path()).await;
    let catalog = Catalog::new(&config, vec![]).await.expect("the catalog");
    for _ in 0..2 {
        assert_eq!(totals(&catalog).await, sums(BATCH));
    }
    let lake = strata_core::lake::Lake::new(&config.lake).expect("the lake");
    let table = lake
        .open(&lake.view_url("tumbling"))
        .await
        .expect("the view table")
        .expect("published");
    let files = table.snapshot().expect("a snapshot").log_data().into_iter().count();
    assert!(files > 0);
    let under = table.table_url().path().trim_start_matches('/').to_string();
    let cache = catalog.session().runtime_env().cache_manager.get_file_metadata_cache();
    let entries: Vec<_> = cache
        .list_entries()
        .into_iter()
        .filter(|(path, _)| path.as_ref().starts_with(&under))
        .collect();
    assert_eq!(entries.len(), files, "one entry per file of {under}: {entries:?}");
    for (path, entry) in entries {
        let metadata = entry
            .value
            .file_metadata
            .as_any()
            .downcast_ref::<CachedParquetMetaData>()
            .expect("Parquet metadata")
            .parquet_metadata();
        assert!(
            metadata.column_index().is_some() && metadata.offset_index().is_some(),
            "{path} cached without its page index"
        );
        assert!(entry.hits > 0, "{path}: no scan found it");
    }
}

/// A query's filter on a view reaches the view table's Parquet scan: each of its conditions is
/// in the scan's predicate once (DataFusion's filter pushdown put them there a second time,
/// behind the Delta scan's own copy), and the scan drops the rows that fail it as it reads
/// them. The answer is the one the events give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_on_a_view_reaches_its_parquet_scan_once() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let (config, _) = published(dir.path()).await;
    let catalog = Catalog::new(&config, vec![]).await.expect("the catalog");
    let sql = "SELECT sum(n) AS n FROM tumbling WHERE k = 'a' AND window_start >= TIMESTAMP '2026-01-01 00:00:10Z'";
    let expected = BATCH
        .iter()
        .filter(|(t, k, _, _)| *k == Some("a") && *t >= 10_000)
        .count();
    assert!(expected > 0);
    let answer = printed(&catalog, sql).await;
    assert!(answer.contains(&format!("| {expected} ")), "{answer}");
    let plan = printed(&catalog, &format!("EXPLAIN {sql}")).await;
    let scans: Vec<&str> = plan
        .split("DataSourceExec")
        .skip(1)
        .filter_map(|scan| scan.split("predicate=").nth(1))
        .map(|p| p.split(", pruning_").next().unwrap_or(p))
        .collect();
    assert_eq!(scans.len(), 1, "one Parquet scan with a predicate: {plan}");
    let conditions: Vec<&str> = scans[0].split(" AND ").map(str::trim).collect();
    for column in ["k@", "window_start@"] {
        assert!(
            conditions.iter().any(|c| c.starts_with(column)),
            "{column} not in the scan's predicate {:?}",
            scans[0]
        );
    }
    let distinct: std::collections::HashSet<&str> = conditions.iter().copied().collect();
    assert_eq!(distinct.len(), conditions.len(), "a condition twice in {:?}", scans[0]);
    // And the scan filters the rows it reads by it: the rows of the view table that fail the
    // filter are dropped there, not above it.
    let analyzed = printed(&catalog, &format!("EXPLAIN ANALYZE {sql}")).await;
    let pruned: f64 = analyzed
        .split("pushdown_rows_pruned=")
        .nth(1)
        .and_then(|m| m.split([',', ' ', ']']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rows filtered while read: {analyzed}"));
    assert!(pruned > 0.0, "no rows filtered while read: {analyzed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_behaviour_as_data() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let db = strata(dir.path()).await;
    // Cargo runs tests with the package as the working directory and sets CARGO_MANIFEST_DIR at
    // run time too; the compile-time path is only the fallback (a build directory can be shared
    // by clones at different paths).
    let package =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let files: Vec<PathBuf> = glob_slt(&package.join("tests/sql"));
    assert!(files.len() >= 3, "the .slt files are missing: {files:?}");
    for file in files {
        let db = db.clone();
        let mut runner = sqllogictest::Runner::new(move || std::future::ready(Ok::<_, SqlError>(db.clone())));
        runner.with_column_validator(sqllogictest::strict_column_validator);
        if let Err(e) = runner.run_file_async(&file).await {
            panic!("{}: {}", file.display(), e.display(true));
        }
    }
}

fn glob_slt(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("tests/sql")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}
