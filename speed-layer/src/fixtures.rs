//! What the unit tests of this crate share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use strata_core::config::Config;
use strata_core::schema::SourceSchema;
use strata_core::speed::TopicPartition;

use crate::engine::ViewEngine;

/// A config with one source, `clicks` (topic `clicks`, event time in epoch millis), a
/// tumbling view with approx_distinct and a filtered hopping view; the lake is `lake` beside
/// `file`.
pub fn clicks_config(file: &Path) -> Config {
    let text = r#"
[lake]
url = "lake"
[[sources]]
name = "clicks"
topics = ["clicks"]
event_time = { column = "ts", format = "epoch_millis" }
[sources.schema]
ts = "timestamp"
user = "string"
page = "string"
ms = "int64"
[[views]]
name = "per_page"
sql = "SELECT window_start, page, count(*) AS n, sum(ms) AS total, avg(ms) AS mean, approx_distinct(user) AS users FROM clicks GROUP BY tumble(ts, INTERVAL '1 minute'), page"
[[views]]
name = "sliding"
sql = "SELECT window_start, count(*) AS n, max(ms) AS worst FROM clicks WHERE ms > 10 GROUP BY hop(ts, INTERVAL '1 minute', INTERVAL '3 minutes')"
"#;
    Config::parse(text, file, &BTreeMap::new()).expect("the test config parses")
}

/// The source of [`clicks_config`] and an engine for each of its views.
pub async fn clicks_engines(config: &Config) -> (Arc<SourceSchema>, Vec<Arc<ViewEngine>>) {
    let source = SourceSchema::new(&config.sources[0]);
    let mut engines = Vec::new();
    for plan in config.view_plans().expect("the test views plan") {
        let engine = ViewEngine::new(plan, "clicks", source.raw.clone()).await;
        engines.push(Arc::new(engine.expect("an engine of a test view")));
    }
    (source, engines)
}

/// The states of `events` alone, per partition: added to the engine's open states in
/// `pieces` slices of about equal size, then published.
pub async fn states_of(
    engine: &ViewEngine,
    events: &RecordBatch,
    pieces: usize,
) -> BTreeMap<TopicPartition, Vec<RecordBatch>> {
    let size = events.num_rows().div_ceil(pieces.max(1)).max(1);
    for start in (0..events.num_rows()).step_by(size) {
        let piece = events.slice(start, size.min(events.num_rows() - start));
        engine
            .add(vec![piece])
            .await
            .expect("events added to a view's open states");
    }
    engine.publish().await.expect("a view's open states published")
}

/// A batch of one Int64 column `n` (a stand-in for state rows).
pub fn int64_batch(values: impl IntoIterator<Item = i64>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(values))]).expect("a batch")
}

/// The values of the first (Int64) column of batches, in order.
pub fn int64_values<'a>(batches: impl IntoIterator<Item = &'a RecordBatch>) -> Vec<i64> {
    batches
        .into_iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

/// A mock cluster with the topic `clicks` of `partitions`, and the clicks config on it, its
/// lake in a directory of its own (`name` and the process id), emptied first: a lake left by
/// an earlier process of the same id would start the partitions above 0.
pub fn on_mock_cluster(name: &str, partitions: i32) -> (MockCluster<'static, DefaultProducerContext>, PathBuf, Config) {
    let cluster = MockCluster::new(1).expect("a mock cluster");
    cluster
        .create_topic("clicks", partitions, 1)
        .expect("the topic created");
    let dir = std::env::temp_dir().join(format!("strata-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = clicks_config(&dir.join("strata.toml"));
    config.kafka.brokers = cluster.bootstrap_servers();
    (cluster, dir, config)
}
