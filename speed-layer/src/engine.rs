//! Computing view states in the speed layer with the view's own SQL: the same
//! [`ViewPlan::state_sql`] the batch layer runs over the lake, run by DataFusion over each
//! micro-batch of consumed events (one definition, two executions).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int32Type, Int64Type, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use strata_core::schema::{PARTITION, TOPIC};
use strata_core::session::{new_context, session_config};
use strata_core::speed::partition_key;
use strata_core::view::ViewPlan;
use strata_core::{Error, Result};

const KEY_TOPIC: &str = "__topic";
const KEY_PARTITION: &str = "__partition";
/// Key of a recovery segment (see [`ViewEngine::states_by_segment`]).
pub const KEY_SEGMENT: &str = "__segment";

/// Computes the states of one view.
pub struct ViewEngine {
    pub plan: ViewPlan,
    source: String,
    raw_schema: SchemaRef,
    /// Schema of the state rows (the view table's).
    pub state_schema: SchemaRef,
    ctx: SessionContext,
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
        Ok(ViewEngine {
            plan,
            source: source.to_string(),
            raw_schema,
            state_schema,
            ctx,
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
    pub async fn states_by_partition(&self, events: RecordBatch) -> Result<BTreeMap<String, Vec<RecordBatch>>> {
        if events.num_rows() == 0 {
            return Ok(BTreeMap::new());
        }
        let sql = self.plan.state_sql_keyed(
            &self.source,
            &[(&quote(TOPIC), KEY_TOPIC), (&quote(PARTITION), KEY_PARTITION)],
        );
        let keyed = self
            .run(&self.source, vec![events], self.raw_schema.clone(), &sql)
            .await?;
        let mut out: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
        for batch in keyed {
            for (key, part) in self.split(&batch, |b, row| {
                let t = b.column_by_name(KEY_TOPIC).expect("topic key").as_string::<i32>();
                let p = b
                    .column_by_name(KEY_PARTITION)
                    .expect("partition key")
                    .as_primitive::<Int32Type>();
                partition_key(t.value(row), p.value(row))
            })? {
                out.entry(key).or_default().push(part);
            }
        }
        Ok(out)
    }

    /// The states of `events` grouped by the segment number `segment` (SQL over the raw
    /// table's columns) assigns each event: states per recovery segment.
    pub async fn states_by_segment(
        &self,
        events: Vec<RecordBatch>,
        segment: &str,
    ) -> Result<BTreeMap<(String, i64), Vec<RecordBatch>>> {
        let sql = self.plan.state_sql_keyed(
            &self.source,
            &[
                (&quote(TOPIC), KEY_TOPIC),
                (&quote(PARTITION), KEY_PARTITION),
                (segment, KEY_SEGMENT),
            ],
        );
        let keyed = self.run(&self.source, events, self.raw_schema.clone(), &sql).await?;
        let mut out: BTreeMap<(String, i64), Vec<RecordBatch>> = BTreeMap::new();
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
                (partition_key(t.value(row), p.value(row)), s.value(row))
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
        let merged = self
            .run(
                "__states",
                states,
                self.state_schema.clone(),
                &self.plan.merge_states_sql("__states"),
            )
            .await?;
        merged
            .into_iter()
            .map(|b| RecordBatch::try_new(self.state_schema.clone(), b.columns().to_vec()).map_err(Error::from))
            .filter(|b| b.as_ref().map_or(true, |b| b.num_rows() > 0))
            .collect()
    }
}

fn rows_all(mask: &[bool]) -> bool {
    mask.iter().all(|m| *m)
}

fn quote(name: &str) -> String {
    strata_core::view::quote(name)
}
