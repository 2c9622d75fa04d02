//! Recomputing a view's partial states from one snapshot of its source's raw table, and
//! publishing them atomically.
//!
//! ```text
//!  raw table @ version S ──► DataFusion: ViewPlan::state_sql ──► state rows
//!                                                                   │ one commit (overwrite,
//!                                                                   ▼ or replaceWhere for a range)
//!  view table: version N+1, commitInfo.strata = { fingerprint, raw_version: S, offsets, ... }
//! ```
//!
//! Readers see the previous version or the new one, never a mix. A full run with no new data
//! since the published version (only compactions in between) publishes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::prelude::{Expr, SessionContext, ident, lit};
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::logstore::get_actions;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use strata_core::executor::CpuRuntime;
use strata_core::lake::{
    COMMIT_INFO_KEY, Lake, ViewCommit, ViewVersion, app_transactions, kafka_offsets, view_writer_properties,
};
use strata_core::schema::{OFFSET, PARTITION, SourceSchema, TIMESTAMP_TZ, TOPIC};
use strata_core::view::{ViewPlan, WINDOW_START};
use strata_core::{Error, Result};

use crate::engine::Engine;

/// A window-start range `[from, to)` in microseconds.
pub type Range = (i64, i64);

#[derive(Debug, Clone, PartialEq)]
pub enum ViewOutcome {
    /// A new version was published.
    Published { version: u64, commit: ViewCommit },
    /// The published version already covers the raw table's data.
    UpToDate { version: u64 },
    /// The source has no data yet.
    NoData,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ViewReport {
    pub view: String,
    pub outcome: ViewOutcome,
    pub elapsed: Duration,
}

fn ts_lit(micros: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(micros),
        Some(TIMESTAMP_TZ.into()),
    ))
}

/// The window starts to recompute for an event-time range `[from, to)`: every window that
/// overlaps it (for a hopping window, also those starting before `from`), aligned to the slide.
pub fn align_range(plan: &ViewPlan, (from, to): Range) -> Range {
    let (slide, size) = (plan.window.slide_us, plan.window.size_us);
    let first = from.div_euclid(slide) * slide - size + slide;
    let end = (to + slide - 1).div_euclid(slide) * slide;
    (first, end.max(first + slide))
}

/// Whether the raw table's data changed between two versions: compactions do not count,
/// nor commits without data (a speed process claiming partitions, a flush of rejects only).
async fn data_changed(raw: &DeltaTable, from: u64, to: u64) -> Result<bool> {
    let log_store = raw.log_store();
    for version in from + 1..=to {
        let Some(bytes) = log_store
            .read_commit_entry(version)
            .await
            .map_err(|e| Error::lake(format!("read raw commit {version}"), e))?
        else {
            return Ok(true); // cleaned up: assume it changed
        };
        let actions =
            get_actions(version, &bytes).map_err(|e| Error::lake(format!("parse raw commit {version}"), e))?;
        let only_rewrites = actions.iter().all(|a| match a {
            Action::Add(add) => !add.data_change,
            Action::Remove(remove) => !remove.data_change,
            Action::CommitInfo(_) | Action::Txn(_) => true,
            _ => false,
        });
        if !only_rewrites {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Recomputes one view from the raw table as loaded in `raw`.
///
/// ```text
///  current? ──► the events (the snapshot, or a range of windows) ──► states ──► publish
/// ```
pub async fn recompute(
    lake: &Lake,
    raw: Option<&DeltaTable>,
    source: &SourceSchema,
    plan: &ViewPlan,
    options: crate::RunOptions,
    cpu: &CpuRuntime,
    engine: &Engine,
) -> Result<ViewReport> {
    let started = Instant::now();
    let done = |outcome| ViewReport {
        view: plan.name.clone(),
        outcome,
        elapsed: started.elapsed(),
    };
    let view_url = lake.view_url(&plan.name);
    let existing = lake.open(&view_url).await?;
    let latest = match &existing {
        Some(t) => Lake::latest_view_version(t).await?,
        None => None,
    };
    let Some(raw) = raw else {
        return Ok(done(ViewOutcome::NoData));
    };
    let raw_version = raw
        .version()
        .ok_or_else(|| Error::Internal("raw table without a version".into()))?;
    let fingerprint = plan.fingerprint();
    let same_definition = latest.as_ref().is_some_and(|l| l.commit.fingerprint == fingerprint);
    if let Some(version) = published_is_current(plan, raw, latest.as_ref(), same_definition, &options).await? {
        return Ok(done(ViewOutcome::UpToDate { version }));
    }

    let engine = &engine.for_snapshot(raw)?;
    let ctx = engine.context().await?;
    let mut commit = ViewCommit {
        fingerprint,
        raw_version,
        started_at: chrono::Utc::now().timestamp_micros(),
        ..Default::default()
    };
    let range = options.range.map(|r| align_range(plan, r));
    match (range, &latest) {
        (None, _) => register_snapshot(&ctx, engine, raw, source, &mut commit).await?,
        (Some(range), Some(previous)) => {
            register_range(&ctx, engine, raw, source, plan, range, previous, &mut commit).await?
        }
        (Some(_), None) => return Err(Error::Internal("a range recompute without a published version".into())),
    }
    let (schema, batches) = compute_states(&ctx, engine, source, plan, range, cpu).await?;
    commit.rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    let table = match existing {
        Some(t) => t,
        None => {
            lake.open_or_create(&view_url, &schema, &[], &format!("view_{}", plan.name))
                .await?
        }
    };
    commit.duration_ms = started.elapsed().as_millis() as u64;
    let version = publish(table, plan, schema, batches, &commit, same_definition, range).await?;
    Ok(done(ViewOutcome::Published { version, commit }))
}

/// The published version, if it is current: a full run over a raw table without new data
/// since (only compactions) has nothing to do. A range is recomputed only into a version of
/// the view's current definition.
async fn published_is_current(
    plan: &ViewPlan,
    raw: &DeltaTable,
    latest: Option<&ViewVersion>,
    same_definition: bool,
    options: &crate::RunOptions,
) -> Result<Option<u64>> {
    if options.range.is_some() {
        if !same_definition {
            return Err(Error::Input(format!(
                "view `{}` has no published version of its current definition: run a full `strata batch run` before recomputing a range",
                plan.name
            )));
        }
        return Ok(None);
    }
    let Some(latest) = latest else { return Ok(None) };
    if options.force || !same_definition {
        return Ok(None);
    }
    let raw_version = raw.version().unwrap_or_default();
    let current =
        latest.commit.raw_version == raw_version || !data_changed(raw, latest.commit.raw_version, raw_version).await?;
    Ok(current.then_some(latest.version))
}

/// Every event of the raw table's snapshot, as the source's table; the commit records the
/// exact count (from the log's statistics) and the archive's Kafka positions at this version.
async fn register_snapshot(
    ctx: &SessionContext,
    engine: &Engine,
    raw: &DeltaTable,
    source: &SourceSchema,
    commit: &mut ViewCommit,
) -> Result<()> {
    let provider = engine.raw_events(ctx, raw, source).await?;
    ctx.register_table(&source.name, provider)?;
    let snapshot = raw.snapshot().map_err(|e| Error::lake("read the raw table state", e))?;
    commit.events = snapshot
        .log_data()
        .iter()
        .map(|f| f.num_records().unwrap_or(0) as u64)
        .sum();
    commit.offsets = kafka_offsets(&app_transactions(raw, commit.raw_version).await?);
    Ok(())
}

/// Only the events of the windows in `range`, and of Kafka only what the published version
/// already covers: windows outside the range still reflect the published version's snapshot,
/// so the coverage stays that version's and the next full run sees the new data.
#[allow(clippy::too_many_arguments)]
async fn register_range(
    ctx: &SessionContext,
    engine: &Engine,
    raw: &DeltaTable,
    source: &SourceSchema,
    plan: &ViewPlan,
    (from, to): Range,
    previous: &ViewVersion,
    commit: &mut ViewCommit,
) -> Result<()> {
    let provider = engine.raw_events(ctx, raw, source).await?;
    let mut covered = ident(TOPIC).is_null();
    for (tp, next) in &previous.commit.offsets {
        covered = covered.or(ident(TOPIC)
            .eq(lit(tp.topic.as_str()))
            .and(ident(PARTITION).eq(lit(tp.partition)))
            .and(ident(OFFSET).lt(lit(*next))));
    }
    let time = ident(&plan.window.time_column);
    let until = to + plan.window.size_us - plan.window.slide_us;
    let events = ctx.read_table(provider)?.filter(
        time.clone()
            .gt_eq(ts_lit(from))
            .and(time.lt(ts_lit(until)))
            .and(covered),
    )?;
    ctx.register_table(&source.name, events.into_view())?;
    commit.raw_version = previous.commit.raw_version;
    commit.offsets = previous.commit.offsets.clone();
    commit.range = Some((from, to));
    commit.events = 0; // not counted for a partial run
    Ok(())
}

/// The view's states over the registered events (only the windows of `range`, if any).
async fn compute_states(
    ctx: &SessionContext,
    engine: &Engine,
    source: &SourceSchema,
    plan: &ViewPlan,
    range: Option<Range>,
    cpu: &CpuRuntime,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut states = ctx.sql(&plan.state_sql(&source.name)).await.map_err(|e| {
        Error::view(
            &plan.name,
            "SQL",
            format!("the view does not plan over source `{}`: {e}", source.name),
        )
    })?;
    if let Some(range) = range {
        states = states.filter(in_range(range))?;
    }
    states = states.sort(publication_order(plan))?;
    let schema = Arc::new(states.schema().as_arrow().clone());
    let batches = cpu.spawn(states.collect()).await?.map_err(|e| match e.find_root() {
        datafusion::error::DataFusionError::ResourcesExhausted(why) => Error::view(
            &plan.name,
            "recompute",
            format!("needs more memory than the batch layer gives it (batch.memory): {why}; nothing was published"),
        ),
        _ => Error::view(
            &plan.name,
            "recompute",
            format!("failed{}: {e}; nothing was published", engine.location()),
        ),
    })?;
    Ok((schema, batches))
}

/// How many consecutive windows of a group lie together in the published states.
const WINDOWS_TOGETHER: i64 = 60;

/// The order of the published states: runs of [`WINDOWS_TOGETHER`] slides in time order,
/// within a run by group, then by window. A query over a few hours of a long history reads
/// only the files, row groups and pages of those runs (the statistics of `window_start` say
/// where), and one of a few groups over them decodes only those groups' rows of the sketch
/// columns, which lie together in small pages (`view_writer_properties`; the session
/// applies the filter while reading).
fn publication_order(plan: &ViewPlan) -> Vec<datafusion::logical_expr::SortExpr> {
    let run = datafusion::logical_expr::cast(ident(WINDOW_START), arrow::datatypes::DataType::Int64)
        / lit(plan.window.slide_us * WINDOWS_TOGETHER);
    std::iter::once(run)
        .chain(plan.group_columns.iter().map(ident))
        .chain(std::iter::once(ident(WINDOW_START)))
        .map(|e| e.sort(true, false))
        .collect()
}

/// One commit: the whole view (overwrite), or the windows of `range` (replaceWhere), with
/// what it was computed from in the commit's info. Returns the published version.
async fn publish(
    table: DeltaTable,
    plan: &ViewPlan,
    schema: SchemaRef,
    mut batches: Vec<RecordBatch>,
    commit: &ViewCommit,
    same_definition: bool,
    range: Option<Range>,
) -> Result<u64> {
    let properties = view_writer_properties(&schema);
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema));
    }
    let info = serde_json::to_value(commit).map_err(|e| Error::Internal(e.to_string()))?;
    // One stream into the writer: in more, the writer interleaves their batches and the
    // files lose the order compute_states gave them.
    let ordered = deltalake::delta_datafusion::DeltaSessionContext::new_with_session_overrides(
        &[("datafusion.execution.target_partitions".to_string(), "1".to_string())].into(),
    )
    .map_err(|e| Error::lake("a session for the publication", e))?;
    let mut write = table
        .write(batches)
        .with_session_state(Arc::new(ordered.into_inner().state()))
        .with_save_mode(SaveMode::Overwrite)
        .with_writer_properties(properties)
        .with_commit_properties(CommitProperties::default().with_metadata([(COMMIT_INFO_KEY.to_string(), info)]));
    if !same_definition {
        // A new definition may have other state columns.
        write = write.with_schema_mode(SchemaMode::Overwrite);
    }
    if let Some(range) = range {
        write = write.with_replace_where(in_range(range));
    }
    let table = write
        .await
        .map_err(|e| Error::lake(format!("publish view `{}`", plan.name), e))?;
    table
        .version()
        .ok_or_else(|| Error::Internal("published table without a version".into()))
}

/// `window_start` in `[from, to)`.
fn in_range((from, to): Range) -> Expr {
    ident(WINDOW_START)
        .gt_eq(ts_lit(from))
        .and(ident(WINDOW_START).lt(ts_lit(to)))
}
