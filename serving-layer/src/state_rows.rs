//! The state rows a view query merges besides the view table's scan: the speed layers'
//! states, the lake's, and the batch rows they reach back to, held in memory.
//!
//! A speed layer holds a batch of states per partition and second of events since the batch
//! layer last covered them, so a query can be given thousands of small batches. DataFusion
//! pays for each batch in planning (the statistics of an in-memory scan are recomputed over
//! every batch and column by each rule that asks) and in running (a filter and an
//! aggregation step per batch), which made a point query's cost grow with the batches held
//! rather than the rows it needs. The query's filters on these rows (those the optimizer
//! pushes below the merge: on the window and group columns) are applied here once, over the
//! filtered columns of all batches at once, and the rows that pass are read as one batch.
//! The filters are inexact to DataFusion, which applies them again above: a filter this
//! cannot evaluate leaves the rows as they are.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{concat_batches, interleave};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DFSchema;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

/// State rows in memory, filtered as they are scanned.
#[derive(Debug)]
pub struct StateRows {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

impl StateRows {
    /// `batches` of `schema` (the caller casts them to it).
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        StateRows { schema, batches }
    }

    /// The rows of every batch that pass `filters`, as one batch; `None` when the filters
    /// keep every row (the batches are read as they are) or cannot be evaluated here.
    fn filtered(&self, state: &dyn Session, filters: &[Expr]) -> Option<RecordBatch> {
        // The filters name the scan's columns, qualified by its table; these rows are not.
        let predicate = unnormalize_col(conjunction(filters.iter().cloned())?);
        // Only the columns the filters read are put together to evaluate them.
        let mut columns: Vec<usize> = predicate
            .column_refs()
            .iter()
            .map(|c| self.schema.index_of(&c.name).ok())
            .collect::<Option<_>>()?;
        columns.sort_unstable();
        columns.dedup();
        let read = Arc::new(self.schema.project(&columns).ok()?);
        let parts: Vec<RecordBatch> = self
            .batches
            .iter()
            .map(|b| b.project(&columns))
            .collect::<std::result::Result<_, _>>()
            .ok()?;
        let together = concat_batches(&read, &parts).ok()?;
        let evaluated = state
            .create_physical_expr(predicate, &DFSchema::try_from(read).ok()?)
            .ok()?
            .evaluate(&together)
            .ok()?
            .into_array(together.num_rows())
            .ok()?;
        let keep = evaluated.as_boolean_opt()?;
        // A row the filters make NULL is not kept.
        let keep = match keep.nulls() {
            Some(nulls) => keep.values() & nulls.inner(),
            None => keep.values().clone(),
        };
        let kept = keep.count_set_bits();
        if kept == together.num_rows() {
            return None;
        }
        // (batch, row) of each row kept, in order.
        let mut rows = Vec::with_capacity(kept);
        let (mut batch, mut first) = (0, 0);
        for at in keep.set_indices() {
            while at >= first + self.batches[batch].num_rows() {
                first += self.batches[batch].num_rows();
                batch += 1;
            }
            rows.push((batch, at - first));
        }
        let columns = (0..self.schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> = self.batches.iter().map(|b| b.column(c).as_ref()).collect();
                interleave(&arrays, &rows)
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .ok()?;
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )
        .ok()
    }
}

#[async_trait]
impl TableProvider for StateRows {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batches = match self.filtered(state, filters) {
            Some(kept) => vec![kept],
            None => self.batches.clone(),
        };
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::{SessionContext, col, lit};

    use super::*;

    fn rows() -> StateRows {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        // Every tenth batch is empty.
        let batches = (0..50)
            .map(|b| if b % 10 == 9 { (b, 0) } else { (b, 20) })
            .map(|(b, len)| {
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(StringArray::from_iter(
                            (0..len).map(|r| (r % 7 != 6).then(|| format!("k{}", (b + r) % 5))),
                        )),
                        Arc::new(Int64Array::from_iter_values((0..len).map(|r| b * 100 + r))),
                    ],
                )
                .unwrap()
            })
            .collect();
        StateRows::new(schema, batches)
    }

    /// The (k, n) of every row of `batches`, in order.
    fn pairs(batches: &[RecordBatch]) -> Vec<(Option<String>, i64)> {
        batches
            .iter()
            .flat_map(|b| {
                let k = b.column(0).as_string::<i32>().clone();
                let n = b.column(1).as_primitive::<arrow::datatypes::Int64Type>().clone();
                (0..b.num_rows()).map(move |r| (k.is_valid(r).then(|| k.value(r).to_string()), n.value(r)))
            })
            .collect()
    }

    /// The rows a scan reads are those of the batches that pass its filters (NULLs do not),
    /// in their order, as one batch; without filters, or with filters every row passes, the
    /// batches as they are; a filter that cannot be evaluated here keeps every row.
    #[tokio::test]
    async fn a_scan_reads_the_rows_its_filters_keep_as_one_batch() {
        let table = rows();
        let ctx = SessionContext::new();
        let state = ctx.state();
        let all = pairs(&table.batches);
        let read = |filters: Vec<Expr>| {
            let (table, state, ctx) = (&table, &state, &ctx);
            async move {
                let plan = table.scan(state, None, &filters, None).await.unwrap();
                let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await.unwrap();
                assert!(batches.iter().all(|b| b.schema() == table.schema()));
                (batches.len(), pairs(&batches))
            }
        };
        let qualified = |name: &str| Expr::Column(datafusion::common::Column::new(Some("?table?"), name));
        let filters = vec![qualified("k").eq(lit("k3")), qualified("n").gt_eq(lit(1_000i64))];
        let expected: Vec<_> = all
            .iter()
            .filter(|(k, n)| k.as_deref() == Some("k3") && *n >= 1_000)
            .cloned()
            .collect();
        assert!(!expected.is_empty() && expected.len() < all.len() / 5);
        assert_eq!(read(filters).await, (1, expected));
        // A row whose key is NULL makes `NOT (k = 'k3')` NULL: it is not kept.
        let not_k3: Vec<_> = all
            .iter()
            .filter(|(k, _)| k.is_some() && k.as_deref() != Some("k3"))
            .cloned()
            .collect();
        assert!(all.iter().any(|(k, _)| k.is_none()));
        assert_eq!(read(vec![!qualified("k").eq(lit("k3"))]).await, (1, not_k3));
        let batches = table.batches.len();
        assert_eq!(read(vec![]).await, (batches, all.clone()));
        assert_eq!(read(vec![col("n").gt_eq(lit(0i64))]).await, (batches, all.clone()));
        assert_eq!(read(vec![col("missing").eq(lit(1i64))]).await, (batches, all.clone()));
        assert_eq!(read(vec![col("n").lt(lit(0i64))]).await, (1, vec![]));
        // A projection reads its columns of the rows kept.
        let plan = table
            .scan(&state, Some(&vec![1]), &[col("k").eq(lit("k3"))], None)
            .await
            .unwrap();
        let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await.unwrap();
        let n: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        let expected: Vec<i64> = all
            .iter()
            .filter(|(k, _)| k.as_deref() == Some("k3"))
            .map(|(_, n)| *n)
            .collect();
        assert_eq!((batches.len(), batches[0].num_columns(), n), (1, 1, expected));
    }
}
