//! Computing view states in the speed layer with the view's own SQL: the same
//! [`ViewPlan::state_sql`] the batch layer runs over the lake, run by DataFusion over each
//! micro-batch of consumed events (one definition, two executions).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int32Type, Int64Type, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::MemTable;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use strata_core::schema::{PARTITION, TOPIC};
use strata_core::session::{new_context, session_config};
use strata_core::speed::TopicPartition;
use strata_core::view::ViewPlan;
use strata_core::{Error, Result};

const KEY_TOPIC: &str = "__topic";
const KEY_PARTITION: &str = "__partition";
/// Key of a recovery segment (see [`ViewEngine::states_by_segment`]).
pub const KEY_SEGMENT: &str = "__segment";
/// The column of recovered raw events that names their segment (the state SQL's key
/// [`KEY_SEGMENT`] is computed from it).
pub const SEGMENT_COLUMN: &str = "__recovery_segment";

/// Computes the states of one view.
pub struct ViewEngine {
    pub plan: ViewPlan,
    source: String,
    /// Schema of the state rows (the view table's).
    pub state_schema: SchemaRef,
    ctx: SessionContext,
    /// The states of raw events keyed by partition, planned once.
    by_partition: Prepared,
    /// The merge of state rows, planned once.
    merge: Prepared,
}

impl std::fmt::Debug for ViewEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewEngine")
            .field("view", &self.plan.name)
            .finish_non_exhaustive()
    }
}

impl ViewEngine {
    pub async fn new(plan: ViewPlan, source: &str, raw_schema: SchemaRef) -> Result<Self> {
        let ctx = new_context(session_config().with_target_partitions(1))?;
        ctx.register_table(source, Arc::new(MemTable::try_new(raw_schema.clone(), vec![vec![]])?))?;
        let df = ctx.sql(&plan.state_sql(source)).await.map_err(|e| {
            Error::view(
                &plan.name,
                "SQL",
                format!("does not plan over source `{source}`: {}", e.strip_backtrace()),
            )
        })?;
        let state_schema = Arc::new(df.schema().as_arrow().clone());
        ctx.deregister_table(source)?;
        let keys = [(quote(TOPIC), KEY_TOPIC), (quote(PARTITION), KEY_PARTITION)];
        let keys: Vec<(&str, &str)> = keys.iter().map(|(e, a)| (e.as_str(), *a)).collect();
        let by_partition =
            Prepared::new(&ctx, source, raw_schema.clone(), &plan.state_sql_keyed(source, &keys)).await?;
        let merge = Prepared::new(
            &ctx,
            "__states",
            state_schema.clone(),
            &plan.merge_states_sql("__states"),
        )
        .await?;
        Ok(ViewEngine {
            plan,
            source: source.to_string(),
            state_schema,
            ctx,
            by_partition,
            merge,
        })
    }

    async fn run(
        &self,
        table: &str,
        batches: Vec<RecordBatch>,
        schema: SchemaRef,
        sql: &str,
    ) -> Result<Vec<RecordBatch>> {
        let _ = self.ctx.deregister_table(table)?;
        self.ctx
            .register_table(table, Arc::new(MemTable::try_new(schema, vec![batches])?))?;
        let out = self.ctx.sql(sql).await?.collect().await;
        self.ctx.deregister_table(table)?;
        Ok(out?)
    }

    /// The states of a batch of raw events, per Kafka partition (`topic/partition` key).
    pub async fn states_by_partition(&self, events: RecordBatch) -> Result<BTreeMap<TopicPartition, Vec<RecordBatch>>> {
        if events.num_rows() == 0 {
            return Ok(BTreeMap::new());
        }
        let keyed = self.by_partition.run(&self.ctx, vec![events]).await?;
        let mut out: BTreeMap<TopicPartition, Vec<RecordBatch>> = BTreeMap::new();
        for batch in keyed {
            for (key, part) in self.split(&batch, |b, row| {
                let t = b.column_by_name(KEY_TOPIC).expect("topic key").as_string::<i32>();
                let p = b
                    .column_by_name(KEY_PARTITION)
                    .expect("partition key")
                    .as_primitive::<Int32Type>();
                TopicPartition::new(t.value(row), p.value(row))
            })? {
                out.entry(key).or_default().push(part);
            }
        }
        Ok(out)
    }

    /// The states of raw `events` grouped by the segment number of their column
    /// [`SEGMENT_COLUMN`]: states per recovery segment.
    pub async fn states_by_segment(
        &self,
        events: Vec<RecordBatch>,
    ) -> Result<BTreeMap<(TopicPartition, i64), Vec<RecordBatch>>> {
        let Some(schema) = events.first().map(RecordBatch::schema) else {
            return Ok(BTreeMap::new());
        };
        let sql = self.plan.state_sql_keyed(
            &self.source,
            &[
                (&quote(TOPIC), KEY_TOPIC),
                (&quote(PARTITION), KEY_PARTITION),
                (&quote(SEGMENT_COLUMN), KEY_SEGMENT),
            ],
        );
        let keyed = self.run(&self.source, events, schema, &sql).await?;
        let mut out: BTreeMap<(TopicPartition, i64), Vec<RecordBatch>> = BTreeMap::new();
        for batch in keyed {
            for (key, part) in self.split(&batch, |b, row| {
                let t = b.column_by_name(KEY_TOPIC).expect("topic key").as_string::<i32>();
                let p = b
                    .column_by_name(KEY_PARTITION)
                    .expect("partition key")
                    .as_primitive::<Int32Type>();
                let s = b
                    .column_by_name(KEY_SEGMENT)
                    .expect("segment key")
                    .as_primitive::<Int64Type>();
                (TopicPartition::new(t.value(row), p.value(row)), s.value(row))
            })? {
                out.entry(key).or_default().push(part);
            }
        }
        Ok(out)
    }

    /// Splits keyed state rows by key and projects them to the state schema.
    fn split<K: Ord + Clone>(
        &self,
        batch: &RecordBatch,
        key: impl Fn(&RecordBatch, usize) -> K,
    ) -> Result<Vec<(K, RecordBatch)>> {
        let mut rows: BTreeMap<K, Vec<bool>> = BTreeMap::new();
        for row in 0..batch.num_rows() {
            let k = key(batch, row);
            rows.entry(k).or_insert_with(|| vec![false; batch.num_rows()])[row] = true;
        }
        let projection: Vec<usize> = self
            .state_schema
            .fields()
            .iter()
            .map(|f| batch.schema().index_of(f.name()))
            .collect::<std::result::Result<_, _>>()?;
        let projected = batch.project(&projection)?;
        let projected = RecordBatch::try_new(self.state_schema.clone(), projected.columns().to_vec())?;
        let mut out = Vec::with_capacity(rows.len());
        for (k, mask) in rows {
            let part = if rows_all(&mask) {
                projected.clone()
            } else {
                filter_record_batch(&projected, &arrow::array::BooleanArray::from(mask))?
            };
            out.push((k, part));
        }
        Ok(out)
    }

    /// Merges state rows into one row per (window, group).
    pub async fn fold(&self, states: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        if states.len() <= 1 {
            return Ok(states);
        }
        let merged = self.merge.run(&self.ctx, states).await?;
        merged
            .into_iter()
            .map(|b| RecordBatch::try_new(self.state_schema.clone(), b.columns().to_vec()).map_err(Error::from))
            .filter(|b| b.as_ref().map_or(true, |b| b.num_rows() > 0))
            .collect()
    }
}

/// A query over one in-memory table, planned and optimized once and run over new batches
/// each time: over a micro-batch of a few hundred events, parsing and planning a view's SQL
/// costs more than computing its states.
struct Prepared {
    plan: Arc<dyn ExecutionPlan>,
}

impl Prepared {
    async fn new(ctx: &SessionContext, table: &str, schema: SchemaRef, sql: &str) -> Result<Self> {
        ctx.register_table(table, Arc::new(MemTable::try_new(schema, vec![vec![]])?))?;
        let planned = match ctx.sql(sql).await {
            Ok(df) => df.create_physical_plan().await,
            Err(e) => Err(e),
        };
        ctx.deregister_table(table)?;
        let plan = planned?;
        let mut inputs = 0;
        plan.apply(|node| {
            inputs += usize::from(memory_source(node).is_some());
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })?;
        if inputs != 1 {
            return Err(Error::Internal(format!(
                "a prepared query reads its table {inputs} times (once expected): {sql}"
            )));
        }
        Ok(Prepared { plan })
    }

    /// Runs the plan over `batches` in place of its (empty) table.
    async fn run(&self, ctx: &SessionContext, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let data = [batches];
        let plan = Arc::clone(&self.plan)
            .transform_down(|node| match memory_source(&node) {
                Some(source) => Ok(Transformed::yes(MemorySourceConfig::try_new_exec(
                    &data,
                    source.original_schema(),
                    source.projection().clone(),
                )? as Arc<dyn ExecutionPlan>)),
                None => Ok(Transformed::no(node)),
            })
            .map_err(|e: DataFusionError| Error::from(e))?
            .data;
        Ok(datafusion::physical_plan::collect(plan, ctx.task_ctx()).await?)
    }
}

fn memory_source(node: &Arc<dyn ExecutionPlan>) -> Option<&MemorySourceConfig> {
    node.downcast_ref::<DataSourceExec>()
        .and_then(|exec| exec.data_source().downcast_ref::<MemorySourceConfig>())
}

fn rows_all(mask: &[bool]) -> bool {
    mask.iter().all(|m| *m)
}

fn quote(name: &str) -> String {
    strata_core::view::quote(name)
}

#[cfg(test)]
mod tests {
    use arrow::util::pretty::pretty_format_batches;
    use strata_core::decode::{JsonDecoder, KafkaPosition};
    use strata_core::schema::SourceSchema;

    use super::*;

    fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
        let text = pretty_format_batches(batches).unwrap().to_string();
        let mut rows: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("| "))
            .skip(1)
            .map(String::from)
            .collect();
        rows.sort();
        rows
    }

    /// The plans prepared once give, run after run, what planning the same SQL afresh gives.
    #[tokio::test]
    async fn prepared_plans_equal_fresh_plans_run_after_run() {
        let config = crate::fixtures::clicks_config(std::path::Path::new("/tmp/strata.toml"));
        let source = SourceSchema::new(&config.sources[0]);
        for plan in config.view_plans().unwrap() {
            let engine = ViewEngine::new(plan, "clicks", source.raw.clone()).await.unwrap();
            let mut all_states = Vec::new();
            for round in 0..4i64 {
                let mut decoder = JsonDecoder::new(source.clone());
                for i in 0..300i64 {
                    let k = i * 7919 + round * 104_729;
                    let record = format!(
                        r#"{{"ts":{},"user":"u{}","page":"/p{}","ms":{}}}"#,
                        1_795_219_200_000 + k % 600_000,
                        k % 37,
                        k % 5,
                        k % 100
                    );
                    let position = KafkaPosition {
                        topic: "clicks",
                        partition: (i % 3) as i32,
                        offset: round * 1000 + i,
                    };
                    decoder.decode(record.as_bytes(), Some(position)).unwrap();
                }
                let events = decoder.finish();
                let prepared = engine.states_by_partition(events.clone()).await.unwrap();
                let sql = engine.plan.state_sql_keyed(
                    "clicks",
                    &[(&quote(TOPIC), KEY_TOPIC), (&quote(PARTITION), KEY_PARTITION)],
                );
                let fresh = engine
                    .run("clicks", vec![events], source.raw.clone(), &sql)
                    .await
                    .unwrap();
                let prepared_all: Vec<RecordBatch> = prepared.values().flatten().cloned().collect();
                assert_eq!(prepared.len(), 3, "{}: one entry per partition", engine.plan.name);
                let fresh_projected: Vec<RecordBatch> = fresh
                    .iter()
                    .map(|b| {
                        let columns = engine
                            .state_schema
                            .fields()
                            .iter()
                            .map(|f| b.column_by_name(f.name()).unwrap().clone())
                            .collect();
                        RecordBatch::try_new(engine.state_schema.clone(), columns).unwrap()
                    })
                    .collect();
                assert_eq!(
                    sorted_rows(&prepared_all),
                    sorted_rows(&fresh_projected),
                    "{} round {round}",
                    engine.plan.name
                );
                assert!(prepared_all.iter().map(RecordBatch::num_rows).sum::<usize>() > 0);
                all_states.extend(prepared_all);
            }
            let folded = engine.fold(all_states.clone()).await.unwrap();
            let fresh = engine
                .run(
                    "__states",
                    all_states,
                    engine.state_schema.clone(),
                    &engine.plan.merge_states_sql("__states"),
                )
                .await
                .unwrap();
            assert_eq!(sorted_rows(&folded), sorted_rows(&fresh), "{} fold", engine.plan.name);
        }
    }
}
