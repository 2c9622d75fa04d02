//! Where a view's recompute runs: DataFusion in the batch process, or a Ballista cluster.
//!
//! ```text
//!  local:     raw snapshot ──► Delta scan ──► DataFusion (this process) ──► state rows
//!  ballista:  raw snapshot ──► its Parquet files, per date ──► plan sent to the scheduler
//!                              (a listing of exactly them)      executors compute ──► state rows
//! ```
//!
//! Either way the batch process pins the raw table's snapshot, records its coverage, and
//! publishes the state rows in one Delta commit: a cluster changes where the states are
//! computed, not what they cover or how they are published.
//!
//! On Ballista the executors read the snapshot's files themselves. The Delta scan does not
//! travel in a plan (no codec carries it), and a listing of the table's directory would read
//! files outside the snapshot (compacted away, or committed since), so the plan lists
//! exactly the snapshot's files: one listing per `event_date` partition, the date added as
//! a constant column (a listing of explicit files cannot read partition values from paths).

use std::collections::BTreeMap;
use std::sync::Arc;

use ballista::prelude::SessionContextExt;
use ballista_core::extension::SessionConfigExt;
use ballista_core::registry::BallistaFunctionRegistry;
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext, ident, lit};
use deltalake::DeltaTable;
use strata_core::config::{BatchEngine, Config, parse_scheduler};
use strata_core::schema::{EVENT_DATE, SourceSchema};
use strata_core::session::{new_context_with_runtime, session_config};
use strata_core::{Error, Result};

/// The engine of a batch layer's recomputes.
#[derive(Debug, Clone)]
pub enum Engine {
    /// DataFusion in this process, under the memory pool of `runtime` (batch.memory).
    Local { runtime: Arc<RuntimeEnv> },
    /// A Ballista cluster behind the scheduler at `scheduler` (`df://host:port`).
    Ballista { scheduler: String },
}

impl Engine {
    /// The engine `[batch]` configures; `runtime` is the local engine's.
    pub fn new(config: &Config, runtime: Arc<RuntimeEnv>) -> Result<Engine> {
        match (config.batch.engine, &config.batch.scheduler) {
            (BatchEngine::Local, _) => Ok(Engine::Local { runtime }),
            (BatchEngine::Ballista, Some(scheduler)) => {
                parse_scheduler(scheduler).map_err(|m| Error::config(&config.file, "batch.scheduler", m))?;
                // Executors open the lake's files with the object stores they have: the
                // local file system's.
                let lake =
                    strata_core::lake::LakeUrl::parse(&config.lake.url, config.base_dir()).map_err(Error::Input)?;
                if !lake.is_local() {
                    return Err(Error::config(
                        &config.file,
                        "batch.engine",
                        format!(
                            "\"ballista\" reads the lake from its executors, which open local paths only (a file system every executor mounts at the same path); the lake is at {}: use engine = \"local\" for it",
                            strata_core::lake::redact(lake.url())
                        ),
                    ));
                }
                Ok(Engine::Ballista {
                    scheduler: scheduler.clone(),
                })
            }
            (BatchEngine::Ballista, None) => Err(Error::config(
                &config.file,
                "batch.scheduler",
                "is missing: engine = \"ballista\" needs the scheduler's address, df://host:port",
            )),
        }
    }

    /// A session whose queries run on this engine, with Strata's functions.
    pub async fn context(&self) -> Result<SessionContext> {
        match self {
            Engine::Local { runtime } => new_context_with_runtime(session_config(), runtime.clone()),
            Engine::Ballista { scheduler } => {
                let state = SessionStateBuilder::new()
                    .with_config(session_config().upgrade_for_ballista())
                    .with_default_features()
                    .build();
                let mut ctx = SessionContext::remote_with_state(scheduler, state).await?;
                // Making the state Ballista's replaces its aggregate functions: add Strata's
                // again, for the SQL of the views to resolve (executors have their own).
                strata_core::functions::register(&mut ctx)?;
                Ok(ctx)
            }
        }
    }

    /// The events of the raw table's snapshot `raw`, as a table of `ctx` (made by
    /// [`Engine::context`]).
    pub async fn raw_events(
        &self,
        ctx: &SessionContext,
        raw: &DeltaTable,
        source: &SourceSchema,
    ) -> Result<Arc<dyn TableProvider>> {
        match self {
            Engine::Local { .. } => strata_core::lake::table_provider(ctx, raw).await,
            Engine::Ballista { .. } => Ok(snapshot_files(ctx, raw, source)?.into_view()),
        }
    }

    /// Where a recompute ran, for errors: nothing for this process, " on the Ballista
    /// cluster at df://…" for a cluster.
    pub fn location(&self) -> String {
        match self {
            Engine::Local { .. } => String::new(),
            Engine::Ballista { scheduler } => format!(" on the Ballista cluster at {scheduler}"),
        }
    }
}

/// The snapshot's Parquet files, read as the raw table: per date partition, a listing of
/// exactly that partition's files with the date as a constant column, all of them in one
/// UNION ALL (an empty table when the snapshot has no files).
fn snapshot_files(ctx: &SessionContext, raw: &DeltaTable, source: &SourceSchema) -> Result<DataFrame> {
    let snapshot = raw.snapshot().map_err(|e| Error::lake("read the raw table state", e))?;
    let root = raw.table_url();
    let mut by_date: BTreeMap<String, Vec<ListingTableUrl>> = BTreeMap::new();
    for file in snapshot.log_data().iter() {
        let date = file
            .partition_values_map()
            .get(EVENT_DATE)
            .cloned()
            .flatten()
            .ok_or_else(|| Error::Internal(format!("raw file {} has no {EVENT_DATE}", file.path())))?;
        let url = root
            .join(&file.path())
            .map_err(|e| Error::Internal(format!("raw file {} in {root}: {e}", file.path())))?;
        let url = ListingTableUrl::parse(url.as_str())?;
        by_date.entry(date).or_default().push(url);
    }
    // The files hold every column but the partition column.
    let file_schema = Arc::new(arrow::datatypes::Schema::new(
        source
            .raw
            .fields()
            .iter()
            .filter(|f| f.name() != EVENT_DATE)
            .cloned()
            .collect::<Vec<_>>(),
    ));
    let mut union: Option<DataFrame> = None;
    for (date, urls) in by_date {
        let day = ScalarValue::try_from_string(date.clone(), &arrow::datatypes::DataType::Date32)
            .map_err(|e| Error::Internal(format!("{EVENT_DATE} `{date}` of the raw table: {e}")))?;
        let listing = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(ListingOptions::new(Arc::new(ParquetFormat::default())))
            .with_schema(file_schema.clone());
        let files = ctx.read_table(Arc::new(ListingTable::try_new(listing)?))?;
        let mut columns: Vec<_> = file_schema.fields().iter().map(|f| ident(f.name())).collect();
        columns.push(lit(day).alias(EVENT_DATE));
        let partition = files.select(columns)?;
        union = Some(match union {
            None => partition,
            Some(u) => u.union(partition)?,
        });
    }
    match union {
        Some(u) => Ok(u),
        // No files: no rows, of the raw table's columns.
        None => Ok(ctx.read_empty()?.limit(0, Some(0))?.select(
            source
                .raw
                .fields()
                .iter()
                .map(|f| lit(ScalarValue::try_from(f.data_type()).unwrap_or(ScalarValue::Null)).alias(f.name()))
                .collect::<Vec<_>>(),
        )?),
    }
}

/// The session every Ballista scheduler of Strata's plans with: Ballista's, with Strata's
/// functions.
pub fn scheduler_session(config: SessionConfig) -> datafusion::common::Result<SessionState> {
    let mut state = ballista_core::utils::default_session_builder(config)?;
    strata_core::functions::register(&mut state)?;
    Ok(state)
}

/// The functions a Ballista executor of Strata's resolves plans' functions in: Ballista's
/// and Strata's, by name.
pub fn executor_functions() -> datafusion::common::Result<BallistaFunctionRegistry> {
    let state = scheduler_session(SessionConfig::new_with_ballista())?;
    Ok(BallistaFunctionRegistry::from(&state))
}
