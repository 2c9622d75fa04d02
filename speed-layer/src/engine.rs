//! Computing view states in the speed layer with the view's own SQL: the same
//! [`ViewPlan::state_sql`] the batch layer runs over the lake, run by DataFusion over each
//! micro-batch of consumed events (one definition, two executions).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use arrow::array::{ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{Int32Type, Int64Type, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result as DFResult, internal_err};
use datafusion::datasource::MemTable;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::{DataSource, DataSourceExec};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::coop::cooperative;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, execute_stream};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use strata_core::schema::{PARTITION, TOPIC};
use strata_core::session::{new_context, session_config};
use strata_core::speed::TopicPartition;
use strata_core::view::ViewPlan;
use strata_core::{Error, Result};

use crate::live::Live;

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
    /// The states of raw events keyed by partition, planned once and kept open between
    /// micro-batches until they are published.
    live: Live,
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
        let keyed = plan.state_sql_keyed(source, &keys);
        let (by_partition, input) = plan_over(&ctx, source, raw_schema.clone(), &keyed).await?;
        let live = Live::new(by_partition, input, ctx.task_ctx(), &format!("view `{}`", plan.name))?;
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
            live,
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

    /// Adds batches of raw events to the view's open states (the `live` module).
    pub async fn add(&self, events: Vec<RecordBatch>) -> Result<()> {
        if events.iter().all(|e| e.num_rows() == 0) {
            return Ok(());
        }
        self.live.add(events).await
    }

    /// The open states of every event added since the last call, per Kafka partition
    /// (`topic/partition` key); the view's states are then open again with none.
    pub async fn publish(&self) -> Result<BTreeMap<TopicPartition, Vec<RecordBatch>>> {
        let keyed = self.live.emit().await?;
        let mut out: BTreeMap<TopicPartition, Vec<RecordBatch>> = BTreeMap::new();
        for batch in keyed {
            let t = key_column(&batch, KEY_TOPIC)?.as_string::<i32>();
            let p = key_column(&batch, KEY_PARTITION)?.as_primitive::<Int32Type>();
            let parts = self.split(
                &batch,
                |row| (t.value(row), p.value(row)),
                |(t, p)| TopicPartition::new(t, p),
            )?;
            for (key, part) in parts {
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
            let t = key_column(&batch, KEY_TOPIC)?.as_string::<i32>();
            let p = key_column(&batch, KEY_PARTITION)?.as_primitive::<Int32Type>();
            let s = key_column(&batch, KEY_SEGMENT)?.as_primitive::<Int64Type>();
            let parts = self.split(
                &batch,
                |row| (t.value(row), p.value(row), s.value(row)),
                |(t, p, s)| (TopicPartition::new(t, p), s),
            )?;
            for (key, part) in parts {
                out.entry(key).or_default().push(part);
            }
        }
        Ok(out)
    }

    /// Splits keyed state rows by key and projects them to the state schema. `raw(row)` is a
    /// row's key as borrowed from the batch (compared without allocating), `key` its owned
    /// form, made once per key.
    fn split<R: Copy + Eq + std::hash::Hash, K>(
        &self,
        batch: &RecordBatch,
        raw: impl Fn(usize) -> R,
        key: impl Fn(R) -> K,
    ) -> Result<Vec<(K, RecordBatch)>> {
        let mut index: HashMap<R, usize> = HashMap::new();
        let mut rows: Vec<(R, Vec<u32>)> = Vec::new();
        let mut last: Option<usize> = None;
        for row in 0..batch.num_rows() {
            let r = raw(row);
            // States come in runs of a key: compare with the last row's key before hashing.
            let i = match last {
                Some(i) if rows[i].0 == r => i,
                _ => *index.entry(r).or_insert_with(|| {
                    rows.push((r, Vec::new()));
                    rows.len() - 1
                }),
            };
            last = Some(i);
            rows[i].1.push(u32::try_from(row).expect("a batch's rows fit in u32"));
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
        for (r, indices) in rows {
            let part = if indices.len() == batch.num_rows() {
                projected.clone()
            } else {
                take_record_batch(&projected, &UInt32Array::from(indices))?
            };
            out.push((key(r), part));
        }
        Ok(out)
    }

    /// Merges state rows into one row per (window, group).
    pub async fn fold(&self, states: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        if states.len() <= 1 {
            return Ok(states);
        }
        let merged = self.merge.run(states).await?;
        merged
            .into_iter()
            .map(|b| RecordBatch::try_new(self.state_schema.clone(), b.columns().to_vec()).map_err(Error::from))
            .filter(|b| b.as_ref().map_or(true, |b| b.num_rows() > 0))
            .collect()
    }
}

/// A query over one in-memory table, planned and optimized once and run over new batches
/// each time: over a micro-batch of a few hundred events, parsing and planning a view's SQL
/// costs more than computing its states. Its one leaf, an [`Input`], reads the batches a run
/// places in the slot they share, so a run copies the plan's nodes but keeps their properties
/// (rebuilding the nodes around new batches recomputed every node's properties, 13% of the
/// speed layer's CPU under a steady load).
pub(crate) struct Prepared {
    plan: Arc<dyn ExecutionPlan>,
    /// Where a run places its batches for the plan's [`Input`].
    input: Slot,
    /// Held by a run from placing its batches until the plan has taken them.
    running: Mutex<()>,
    task: Arc<TaskContext>,
}

pub(crate) type Slot = Arc<Mutex<Option<Vec<RecordBatch>>>>;

/// The physical plan of `sql` over `table` (of `schema`), its in-memory table replaced by
/// an [`Input`] reading the batches placed in the slot returned with it.
async fn plan_over(
    ctx: &SessionContext,
    table: &str,
    schema: SchemaRef,
    sql: &str,
) -> Result<(Arc<dyn ExecutionPlan>, Slot)> {
    ctx.register_table(table, Arc::new(MemTable::try_new(schema, vec![vec![]])?))?;
    let planned = match ctx.sql(sql).await {
        Ok(df) => df.create_physical_plan().await,
        Err(e) => Err(e),
    };
    ctx.deregister_table(table)?;
    let input = Slot::default();
    let mut inputs = 0;
    let plan = planned?
        .transform_down(|node| {
            let Some(source) = memory_source(&node) else {
                return Ok(Transformed::no(node));
            };
            inputs += 1;
            let leaf = Input {
                projection: source.projection().clone(),
                fetch: source.fetch(),
                properties: Arc::clone(node.properties()),
                slot: Arc::clone(&input),
            };
            Ok(Transformed::yes(Arc::new(leaf) as Arc<dyn ExecutionPlan>))
        })
        .map_err(|e: DataFusionError| Error::from(e))?
        .data;
    if inputs != 1 {
        return Err(Error::Internal(format!(
            "a prepared query reads its table {inputs} times (once expected): {sql}"
        )));
    }
    Ok((plan, input))
}

/// A leaf reading the batches placed in `slot`, in place of a node with `properties`.
pub(crate) fn input_leaf(properties: Arc<PlanProperties>, slot: Slot) -> Arc<dyn ExecutionPlan> {
    Arc::new(Input {
        projection: None,
        fetch: None,
        properties,
        slot,
    })
}

/// The name of a prepared plan's leaf.
pub(crate) const INPUT_NODE: &str = "PreparedInput";

impl Prepared {
    async fn new(ctx: &SessionContext, table: &str, schema: SchemaRef, sql: &str) -> Result<Self> {
        let (plan, input) = plan_over(ctx, table, schema, sql).await?;
        Ok(Prepared::from_plan(plan, input, ctx.task_ctx()))
    }

    /// `plan`, whose one leaf is an [`Input`] reading `input`, run by `task`.
    pub(crate) fn from_plan(plan: Arc<dyn ExecutionPlan>, input: Slot, task: Arc<TaskContext>) -> Self {
        Prepared {
            plan,
            input,
            running: Mutex::new(()),
            task,
        }
    }

    /// Runs the plan over `batches` in place of its (empty) table.
    pub(crate) async fn run(&self, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        // The nodes copied, their properties kept: a node registers its metrics in its own
        // set on each execution, which would grow run after run.
        let plan = reset_plan_states(Arc::clone(&self.plan))?;
        let stream = {
            let _running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            *self.input.lock().unwrap_or_else(PoisonError::into_inner) = Some(batches);
            // Every node executes its input here, before the first poll: the plan's leaf has
            // taken this run's batches when it returns.
            let stream = execute_stream(plan, Arc::clone(&self.task));
            let unread = self
                .input
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .is_some();
            let stream = stream?;
            if unread {
                return Err(Error::Internal(
                    "a prepared plan did not take its input when it was executed".to_string(),
                ));
            }
            stream
        };
        Ok(stream.try_collect().await?)
    }
}

/// The leaf of a [`Prepared`] plan, in place of the empty in-memory table it was planned
/// over: it streams the batches of the run executing it, taken from the slot.
#[derive(Debug)]
struct Input {
    projection: Option<Vec<usize>>,
    fetch: Option<usize>,
    /// The table's: the plan above was optimized for them.
    properties: Arc<PlanProperties>,
    slot: Slot,
}

impl DisplayAs for Input {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "PreparedInput: projection={:?}", self.projection)
    }
}

impl ExecutionPlan for Input {
    fn name(&self) -> &str {
        INPUT_NODE
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DFResult<TreeNodeRecursion>,
    ) -> DFResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DFResult<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("a prepared plan's input has no children");
        }
        Ok(self)
    }

    fn execute(&self, partition: usize, _: Arc<TaskContext>) -> DFResult<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("a prepared plan's input has one partition, not {partition}");
        }
        let Some(batches) = self.slot.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return internal_err!("a prepared plan's input was executed without batches to read");
        };
        let stream = MemoryStream::try_new(batches, self.schema(), self.projection.clone())?.with_fetch(self.fetch);
        Ok(Box::pin(cooperative(stream)))
    }
}

fn memory_source(node: &Arc<dyn ExecutionPlan>) -> Option<&MemorySourceConfig> {
    node.downcast_ref::<DataSourceExec>()
        .and_then(|exec| exec.data_source().downcast_ref::<MemorySourceConfig>())
}

/// A key column of a keyed state batch.
fn key_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("keyed states without their key column {name}")))
}

fn quote(name: &str) -> String {
    strata_core::view::quote(name)
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use arrow::datatypes::DataType;
    use arrow::util::pretty::pretty_format_batches;
    use strata_core::decode::{JsonDecoder, KafkaPosition};
    use strata_core::schema::SourceSchema;

    use super::*;

    /// The metrics a plan's nodes hold (a node registers its own on each execution).
    fn metrics_kept(plan: &Arc<dyn ExecutionPlan>) -> usize {
        let mut kept = 0;
        plan.apply(|node| {
            kept += node.metrics().map_or(0, |m| m.iter().count());
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        kept
    }

    /// A click record whose fields are drawn from `k`: ten minutes of times, 37 users, 5 pages.
    fn click_record(k: i64) -> String {
        format!(
            r#"{{"ts":{},"user":"u{}","page":"/p{}","ms":{}}}"#,
            1_795_219_200_000 + k % 600_000,
            k % 37,
            k % 5,
            k % 100
        )
    }

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

    /// A view's open states, added to in pieces and published, run after run, are what
    /// planning its SQL afresh gives over the same events at once; the fold prepared once
    /// gives, run after run and in runs at the same time, what the fold's SQL planned afresh
    /// gives.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn open_states_and_folds_equal_fresh_plans_run_after_run() {
        let config = crate::fixtures::clicks_config(std::path::Path::new("/tmp/strata.toml"));
        let source = SourceSchema::new(&config.sources[0]);
        for plan in config.view_plans().unwrap() {
            let engine = ViewEngine::new(plan, "clicks", source.raw.clone()).await.unwrap();
            let mut all_states = Vec::new();
            for round in 0..4i64 {
                let mut decoder = JsonDecoder::new(source.clone());
                for i in 0..300i64 {
                    let k = i * 7919 + round * 104_729;
                    let record = click_record(k);
                    let position = KafkaPosition {
                        topic: "clicks",
                        partition: (i % 3) as i32,
                        offset: round * 1000 + i,
                    };
                    decoder.decode(record.as_bytes(), Some(position)).unwrap();
                }
                let events = decoder.finish();
                let live = crate::fixtures::states_of(&engine, &events, 1 + round as usize * 2).await;
                let fresh = fresh_states(&engine, "clicks", &source, &events).await;
                assert_eq!(live.len(), 3, "{}: one entry per partition", engine.plan.name);
                let live_all: Vec<RecordBatch> = live.values().flatten().cloned().collect();
                let fresh_all: Vec<RecordBatch> = fresh.values().flatten().cloned().collect();
                assert_eq!(
                    sorted_rows(&live_all),
                    sorted_rows(&fresh_all),
                    "{} round {round}",
                    engine.plan.name
                );
                assert_same_states(&engine.plan.name, &live, &fresh, 0);
                all_states.extend(live_all);
            }
            // Published: open again with nothing.
            assert!(engine.publish().await.unwrap().is_empty(), "{}", engine.plan.name);
            let fresh_fold = engine
                .run(
                    "__states",
                    all_states.clone(),
                    engine.state_schema.clone(),
                    &engine.plan.merge_states_sql("__states"),
                )
                .await
                .unwrap();
            let name = engine.plan.name.clone();
            let engine = Arc::new(engine);
            let (all_states, fresh_fold) = (Arc::new(all_states), Arc::new(sorted_rows(&fresh_fold)));
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let engine = Arc::clone(&engine);
                    let (all_states, fresh_fold) = (Arc::clone(&all_states), Arc::clone(&fresh_fold));
                    tokio::spawn(async move {
                        for _ in 0..25 {
                            let folded = engine.fold(all_states.to_vec()).await.unwrap();
                            assert_eq!(sorted_rows(&folded), *fresh_fold);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await
                    .unwrap_or_else(|e| panic!("{name}: runs at the same time: {e}"));
            }
            let mut prepared = vec![&engine.live.below, &engine.merge];
            prepared.extend(&engine.live.above);
            for prepared in prepared {
                assert_eq!(metrics_kept(&prepared.plan), 0, "{name}: a run leaves its metrics");
            }
        }
    }

    /// The example config's views (a FILTER clause, sketches of both kinds, a hopping window
    /// over a filtered source) keep their states open, and their states added in pieces are
    /// those their SQL gives over the events at once, NULL values included.
    #[tokio::test]
    async fn the_example_views_open_states_equal_a_fresh_plans() {
        let text = include_str!("../../strata.example.toml");
        let config =
            strata_core::config::Config::parse(text, std::path::Path::new("strata.example.toml"), &BTreeMap::new())
                .unwrap();
        let source = SourceSchema::new(&config.sources[0]);
        let mut decoder = JsonDecoder::new(source.clone());
        for i in 0..2_000i64 {
            let k = i * 7919;
            let device = ["\"mobile\"", "\"desktop\"", "null"][(k % 3) as usize];
            let url = if k % 4 == 0 { "/checkout/1" } else { "/home" };
            let record = format!(
                r#"{{"ts":"2026-12-05T10:{:02}:{:02}Z","user_id":"u{}","country":"C{}","url":"{url}","device":{device},"latency_ms":{},"amount":{}}}"#,
                (k / 60) % 60,
                k % 60,
                k % 150,
                k % 4,
                k % 97,
                (k % 13) as f64 * 0.5
            );
            let position = KafkaPosition {
                topic: "page_views",
                partition: (i % 2) as i32,
                offset: i,
            };
            decoder.decode(record.as_bytes(), Some(position)).unwrap();
        }
        let events = decoder.finish();
        assert_eq!(events.num_rows(), 2_000);
        for plan in config.view_plans().unwrap() {
            let engine = ViewEngine::new(plan, "page_views", source.raw.clone()).await.unwrap();
            let live = crate::fixtures::states_of(&engine, &events, 7).await;
            let fresh = fresh_states(&engine, "page_views", &source, &events).await;
            assert_eq!(live.len(), 2, "{}", engine.plan.name);
            assert_same_states(&engine.plan.name, &live, &fresh, 10);
        }
    }

    /// Each partition's open states hold more than `rows` rows, and the rows its fresh
    /// states hold.
    fn assert_same_states(
        view: &str,
        live: &BTreeMap<TopicPartition, Vec<RecordBatch>>,
        fresh: &BTreeMap<TopicPartition, Vec<RecordBatch>>,
        rows: usize,
    ) {
        for (key, parts) in live {
            assert!(
                parts.iter().map(RecordBatch::num_rows).sum::<usize>() > rows,
                "{view} {key}"
            );
            assert_eq!(sorted_rows(parts), sorted_rows(&fresh[key]), "{view} {key}");
        }
    }

    /// The states of `events` per partition, from the view's keyed state SQL planned afresh
    /// and run over them at once.
    async fn fresh_states(
        engine: &ViewEngine,
        table: &str,
        source: &SourceSchema,
        events: &RecordBatch,
    ) -> BTreeMap<TopicPartition, Vec<RecordBatch>> {
        let sql = engine
            .plan
            .state_sql_keyed(table, &[(&quote(TOPIC), KEY_TOPIC), (&quote(PARTITION), KEY_PARTITION)]);
        let fresh = engine
            .run(table, vec![events.clone()], source.raw.clone(), &sql)
            .await
            .unwrap();
        let mut out: BTreeMap<TopicPartition, Vec<RecordBatch>> = BTreeMap::new();
        for keyed in &fresh {
            let t = keyed.column_by_name(KEY_TOPIC).unwrap().as_string::<i32>();
            let p = keyed.column_by_name(KEY_PARTITION).unwrap().as_primitive::<Int32Type>();
            let keys: std::collections::BTreeSet<TopicPartition> = (0..keyed.num_rows())
                .map(|row| TopicPartition::new(t.value(row), p.value(row)))
                .collect();
            let columns = engine
                .state_schema
                .fields()
                .iter()
                .map(|f| keyed.column_by_name(f.name()).unwrap().clone())
                .collect();
            let projected = RecordBatch::try_new(engine.state_schema.clone(), columns).unwrap();
            for key in keys {
                let mask: arrow::array::BooleanArray = (0..keyed.num_rows())
                    .map(|row| Some(t.value(row) == key.topic && p.value(row) == key.partition))
                    .collect();
                let own = arrow::compute::filter_record_batch(&projected, &mask).unwrap();
                out.entry(key).or_default().push(own);
            }
        }
        out
    }

    /// States per recovery segment, over several partitions and segments, are per (partition,
    /// segment) the states of exactly that partition's events in that segment.
    #[tokio::test]
    async fn states_by_segment_are_the_states_of_each_segments_events() {
        let config = crate::fixtures::clicks_config(std::path::Path::new("/tmp/strata.toml"));
        let source = SourceSchema::new(&config.sources[0]);
        let mut decoder = JsonDecoder::new(source.clone());
        for i in 0..600i64 {
            let k = i * 7919;
            let record = click_record(k);
            let position = KafkaPosition {
                topic: "clicks",
                partition: (i % 3) as i32,
                offset: i / 3,
            };
            decoder.decode(record.as_bytes(), Some(position)).unwrap();
        }
        let events = decoder.finish();
        // Segments end at offsets 50, 120 and 200 (an event's segment is the first end above
        // its offset).
        let offsets = events
            .column_by_name(strata_core::schema::OFFSET)
            .unwrap()
            .as_primitive::<Int64Type>();
        let segment_of = |o: i64| [50i64, 120, 200].into_iter().find(|end| o < *end).unwrap();
        let segments: Int64Array = offsets.iter().map(|o| o.map(segment_of)).collect();
        let mut fields = events.schema().fields().to_vec();
        fields.push(Arc::new(arrow::datatypes::Field::new(
            SEGMENT_COLUMN,
            DataType::Int64,
            true,
        )));
        let mut columns = events.columns().to_vec();
        columns.push(Arc::new(segments.clone()));
        let with_segments = RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns).unwrap();
        let partitions = events
            .column_by_name(PARTITION)
            .unwrap()
            .as_primitive::<Int32Type>()
            .clone();
        for plan in config.view_plans().unwrap() {
            let engine = ViewEngine::new(plan, "clicks", source.raw.clone()).await.unwrap();
            let by_segment = engine.states_by_segment(vec![with_segments.clone()]).await.unwrap();
            assert_eq!(by_segment.len(), 9, "{}: 3 partitions x 3 segments", engine.plan.name);
            for ((key, end), parts) in &by_segment {
                let mask: arrow::array::BooleanArray = (0..events.num_rows())
                    .map(|row| Some(partitions.value(row) == key.partition && segments.value(row) == *end))
                    .collect();
                let own = arrow::compute::filter_record_batch(&events, &mask).unwrap();
                assert!(own.num_rows() > 0, "{key} {end}");
                let alone = crate::fixtures::states_of(&engine, &own, 1).await;
                assert_eq!(alone.len(), 1, "{key} {end}");
                assert_eq!(
                    sorted_rows(parts),
                    sorted_rows(&alone[key]),
                    "{} {key} segment ending at {end}",
                    engine.plan.name
                );
            }
        }
    }
}
