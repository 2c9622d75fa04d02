//! A view's states kept open between micro-batches: the aggregation of the view's state SQL
//! held as DataFusion's own group values and accumulators, added to by each batch of events
//! and emitted only when the states are published.
//!
//! Running the whole plan per aggregation emitted every group it touched (its sketches
//! serialized), and a segment's emissions were merged again when it closed (sketches parsed
//! and merged); under a steady load, about twenty emissions a second and a fold of each. Kept
//! open, a group's sketch is built in place until a query or the archive asks for the states,
//! and a segment no query asked about closes with one batch per partition, nothing to fold.
//!
//! The plan is split at its lowest aggregate: the nodes below it (projections, the view's
//! filter, a hopping window's panes) run over each batch of events, the aggregate's
//! accumulators take their rows, and the nodes above it (a hopping view's panes spread into
//! their windows and merged) run over what the aggregate emits. For the order-insensitive
//! aggregates a view compiles to, that is what the plan gives over all the events at once.

use std::sync::{Arc, Mutex, PoisonError};

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{
    AggregateExec, AggregateInputMode, AggregateOutputMode, aggregate_expressions, evaluate_group_by, evaluate_many,
};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use strata_core::{Error, Result};

use crate::engine::{Prepared, Slot};

/// The nodes a plan may hold below the aggregate kept live, without a limit (`fetch`): each
/// maps a batch's rows on their own, so running them batch by batch gives the rows running
/// them once would.
const ROW_WISE: &[&str] = &[
    "ProjectionExec",
    "FilterExec",
    "UnnestExec",
    "CoalesceBatchesExec",
    "CooperativeExec",
    crate::engine::INPUT_NODE,
];

/// A prepared plan split at its lowest aggregate, whose groups live between runs.
pub(crate) struct Live {
    pub below: Prepared,
    /// What runs over the aggregate's emitted groups; `None` where the aggregate is the root.
    pub above: Option<Prepared>,
    /// The aggregate (an [`AggregateExec`]).
    node: Arc<dyn ExecutionPlan>,
    /// Per aggregate function, the expressions of its arguments over a row below.
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    groups: Mutex<Option<Groups>>,
}

/// The open groups: their key values and an accumulator per aggregate function.
struct Groups {
    values: Box<dyn GroupValues>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// The group of each row of the batch being added (reused).
    indices: Vec<usize>,
}

impl Live {
    /// Splits `plan` (whose one leaf reads the batches placed in `input`) at its lowest
    /// aggregate; an error names what keeps a plan from being split (`what` names the plan).
    pub fn new(plan: Arc<dyn ExecutionPlan>, input: Slot, task: Arc<TaskContext>, what: &str) -> Result<Self> {
        let unsupported = |why: String| Error::Internal(format!("{what}: its states cannot be kept live: {why}"));
        let mut lowest: Option<Arc<dyn ExecutionPlan>> = None;
        let mut joins = None;
        plan.apply(|node| {
            if node.children().len() > 1 {
                joins = Some(node.name().to_string());
                return Ok(TreeNodeRecursion::Stop);
            }
            if node.downcast_ref::<AggregateExec>().is_some() {
                lowest = Some(Arc::clone(node));
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if let Some(node) = joins {
            return Err(unsupported(format!("{node} joins several inputs")));
        }
        let node = lowest.ok_or_else(|| unsupported("no aggregate".into()))?;
        let aggregate = node
            .downcast_ref::<AggregateExec>()
            .expect("the node was found as an aggregate");
        let mut below = None;
        aggregate.input().apply(|n| {
            if !ROW_WISE.contains(&n.name()) || n.fetch().is_some() {
                below = Some(format!("{} (fetch {:?})", n.name(), n.fetch()));
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if let Some(name) = below {
            return Err(unsupported(format!("{name} below its aggregate")));
        }
        if aggregate.mode().input_mode() != AggregateInputMode::Raw {
            return Err(unsupported(format!("its lowest aggregate is {:?}", aggregate.mode())));
        }
        if !aggregate.group_expr().is_single() {
            return Err(unsupported("grouping sets".into()));
        }
        if aggregate.limit_options().is_some() || aggregate.aggr_expr().iter().any(|a| !a.order_bys().is_empty()) {
            return Err(unsupported("an aggregate with a limit or an order".into()));
        }
        if aggregate.input().output_partitioning().partition_count() != 1 {
            return Err(unsupported("more than one partition below the aggregate".into()));
        }
        let arguments = aggregate_expressions(
            aggregate.aggr_expr(),
            aggregate.mode(),
            aggregate.group_expr().num_group_exprs(),
        )?;
        let below = Prepared::from_plan(Arc::clone(aggregate.input()), input, Arc::clone(&task));
        let above = if Arc::ptr_eq(&node, &plan) {
            None
        } else {
            let slot = Slot::default();
            let replaced = plan
                .transform_down(|n| {
                    Ok(if Arc::ptr_eq(&n, &node) {
                        Transformed::yes(crate::engine::input_leaf(Arc::clone(n.properties()), Arc::clone(&slot)))
                    } else {
                        Transformed::no(n)
                    })
                })
                .map_err(|e: DataFusionError| Error::from(e))?
                .data;
            Some(Prepared::from_plan(replaced, slot, task))
        };
        Ok(Live {
            below,
            above,
            node,
            arguments,
            groups: Mutex::new(None),
        })
    }

    /// Adds `events` to the open groups.
    pub async fn add(&self, events: Vec<RecordBatch>) -> Result<()> {
        let rows = self.below.run(events).await?;
        let mut open = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let groups = match open.as_mut() {
            Some(groups) => groups,
            None => open.insert(self.new_groups()?),
        };
        for batch in rows.iter().filter(|b| b.num_rows() > 0) {
            groups.add(self.aggregate(), &self.arguments, batch)?;
        }
        Ok(())
    }

    /// Emits the open groups (the plan's output over every event added since the last
    /// emission) and starts again with none.
    pub async fn emit(&self) -> Result<Vec<RecordBatch>> {
        let open = self.groups.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(mut groups) = open.filter(|g| !g.values.is_empty()) else {
            return Ok(Vec::new());
        };
        let aggregate = self.aggregate();
        let mut columns = groups.values.emit(EmitTo::All)?;
        for accumulator in &mut groups.accumulators {
            match aggregate.mode().output_mode() {
                AggregateOutputMode::Final => columns.push(accumulator.evaluate(EmitTo::All)?),
                AggregateOutputMode::Partial => columns.extend(accumulator.state(EmitTo::All)?),
            }
        }
        let emitted = RecordBatch::try_new(aggregate.schema(), columns)?;
        match &self.above {
            Some(above) => above.run(vec![emitted]).await,
            None => Ok(vec![emitted]),
        }
    }

    fn aggregate(&self) -> &AggregateExec {
        self.node
            .downcast_ref::<AggregateExec>()
            .expect("a live plan's node is an aggregate")
    }

    fn new_groups(&self) -> Result<Groups> {
        let aggregate = self.aggregate();
        let schema = aggregate.group_expr().group_schema(&aggregate.input().schema())?;
        Ok(Groups {
            values: new_group_values(schema, &GroupOrdering::None)?,
            accumulators: aggregate.aggr_expr().iter().map(accumulator).collect::<Result<_>>()?,
            indices: Vec::new(),
        })
    }
}

impl Groups {
    /// Adds the rows of `batch` (the aggregate's input) to their groups, as DataFusion's
    /// hash aggregation does with each batch of its input.
    fn add(
        &mut self,
        aggregate: &AggregateExec,
        arguments: &[Vec<Arc<dyn PhysicalExpr>>],
        batch: &RecordBatch,
    ) -> Result<()> {
        let keys = evaluate_group_by(aggregate.group_expr(), batch)?;
        let values = evaluate_many(arguments, batch)?;
        let filters = aggregate
            .filter_expr()
            .iter()
            .map(|f| {
                f.as_ref()
                    .map(|f| f.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())))
                    .transpose()
            })
            .collect::<datafusion::common::Result<Vec<Option<ArrayRef>>>>()?;
        let [keys] = keys.as_slice() else {
            return Err(Error::Internal(
                "a live aggregate evaluated several grouping sets".into(),
            ));
        };
        self.values.intern(keys, &mut self.indices)?;
        let groups = self.values.len();
        for ((accumulator, values), filter) in self.accumulators.iter_mut().zip(&values).zip(&filters) {
            let filter = filter.as_ref().map(|f| f.as_boolean());
            accumulator.update_batch(values, &self.indices, filter, groups)?;
        }
        Ok(())
    }
}

/// The accumulator of an aggregate function over groups (an adapter of its single-group
/// accumulator where it has none of its own), as DataFusion makes it.
fn accumulator(function: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn GroupsAccumulator>> {
    if function.groups_accumulator_supported() {
        return Ok(function.create_groups_accumulator()?);
    }
    let function = Arc::clone(function);
    Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
        function.create_accumulator()
    })))
}
