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
use futures::StreamExt as _;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result as ObjectResult,
};
use strata_core::config::{BatchEngine, Config};
use strata_core::schema::{EVENT_DATE, SourceSchema};
use strata_core::session::{new_context_with_runtime, session_config};
use strata_core::{Error, Result};

/// The engine of a batch layer's recomputes.
#[derive(Debug, Clone)]
pub enum Engine {
    /// DataFusion in this process, under the memory pool of `runtime` (batch.memory).
    Local { runtime: Arc<RuntimeEnv> },
    /// A Ballista cluster behind the scheduler at `scheduler` (`df://host:port`); `store`
    /// is the lake's object store when the lake is not local (see [`LakeStore`]).
    Ballista {
        scheduler: String,
        store: LakeStore,
        /// The local engine's, for a snapshot without files (an empty plan does not travel:
        /// Ballista's plan encoding drops an empty relation's schema).
        runtime: Arc<RuntimeEnv>,
    },
}

/// The lake's object store and the URL it is registered under, for the sessions of a
/// Ballista client, scheduler and executors to read a remote lake's files (`None`: a
/// local lake, read as files).
pub type LakeStore = Option<(url::Url, Arc<dyn ObjectStore>)>;

/// The object store of the lake of `config`, for a Ballista process.
pub fn lake_store(config: &Config) -> Result<LakeStore> {
    strata_core::lake::Lake::new(&config.lake)?.authority_store()
}

/// Registers the lake's store (if any) with `runtime`.
fn register_store(runtime: &RuntimeEnv, store: &LakeStore) {
    if let Some((url, store)) = store {
        runtime.register_object_store(url, store.clone());
    }
}

impl Engine {
    /// The engine `[batch]` configures; `runtime` is the local engine's.
    pub fn new(config: &Config, runtime: Arc<RuntimeEnv>) -> Result<Engine> {
        match (config.batch.engine, &config.batch.scheduler) {
            (BatchEngine::Local, _) => Ok(Engine::Local { runtime }),
            (BatchEngine::Ballista, Some(scheduler)) => {
                // The address was checked when the config loaded (check_batch).
                let lake = config.lake.root()?;
                if lake.url().scheme() == "memory" {
                    return Err(Error::config(
                        &config.file,
                        "batch.engine",
                        "\"ballista\" reads the lake from other processes, which cannot see this process's memory:// lake; use engine = \"local\"",
                    ));
                }
                Ok(Engine::Ballista {
                    scheduler: scheduler.clone(),
                    store: lake_store(config)?,
                    runtime,
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
            Engine::Ballista { scheduler, store, .. } => {
                let state = SessionStateBuilder::new()
                    .with_config(session_config().upgrade_for_ballista())
                    .with_default_features()
                    .build();
                let mut ctx = SessionContext::remote_with_state(scheduler, state).await?;
                // Making the state Ballista's replaces its aggregate functions: add Strata's
                // again, for the SQL of the views to resolve (executors have their own).
                strata_core::functions::register(&mut ctx)?;
                register_store(&ctx.runtime_env(), store);
                Ok(ctx)
            }
        }
    }

    /// The engine for a recompute of the snapshot `raw`: this one, except that a snapshot
    /// without files is recomputed locally (no rows: nothing to distribute).
    pub fn for_snapshot(&self, raw: &DeltaTable) -> Result<Engine> {
        match self {
            Engine::Ballista { runtime, .. } => {
                let snapshot = raw.snapshot().map_err(|e| Error::lake("read the raw table state", e))?;
                if snapshot.log_data().num_files() == 0 {
                    return Ok(Engine::Local {
                        runtime: runtime.clone(),
                    });
                }
                Ok(self.clone())
            }
            Engine::Local { .. } => Ok(self.clone()),
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
            Engine::Ballista { scheduler, .. } => format!(" on the Ballista cluster at {scheduler}"),
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

/// The sessions a Ballista scheduler of Strata's plans with: Ballista's, with Strata's
/// functions and the lake's object store.
pub fn scheduler_session(
    store: LakeStore,
) -> impl Fn(SessionConfig) -> datafusion::common::Result<SessionState> + Send + Sync + 'static {
    move |config| {
        let mut state = ballista_core::utils::default_session_builder(config)?;
        strata_core::functions::register(&mut state)?;
        // The scheduler lists the snapshot's files while planning: a file gone must fail
        // the job, not read as no rows.
        let runtime = state.runtime_env();
        let local: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new());
        let file = url::Url::parse("file:///").expect("a valid URL");
        runtime.register_object_store(&file, Arc::new(FilesMustExist(local)));
        if let Some((url, store)) = &store {
            runtime.register_object_store(url, Arc::new(FilesMustExist(store.clone())));
        }
        Ok(state)
    }
}

/// A store that refuses to list under a Parquet file's path. DataFusion reads a listed path
/// it cannot find as a directory: a snapshot's file deleted behind the lake's back (an
/// outside VACUUM, a shared file system out of date on the scheduler) would be read as no
/// rows while the coverage recorded says it was read. Here it is an error naming the file.
#[derive(Debug)]
struct FilesMustExist(Arc<dyn ObjectStore>);

impl std::fmt::Display for FilesMustExist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FilesMustExist({})", self.0)
    }
}

#[async_trait::async_trait]
impl ObjectStore for FilesMustExist {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> ObjectResult<PutResult> {
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> ObjectResult<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> ObjectResult<GetResult> {
        self.0.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, ObjectResult<Path>>,
    ) -> BoxStream<'static, ObjectResult<Path>> {
        self.0.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, ObjectResult<ObjectMeta>> {
        match prefix {
            Some(p) if p.as_ref().ends_with(".parquet") => {
                let path = p.to_string();
                futures::stream::once(async move {
                    Err(object_store::Error::NotFound {
                        source: format!("{path}, a file of the raw table's snapshot, is gone").into(),
                        path,
                    })
                })
                .boxed()
            }
            _ => self.0.list(prefix),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> ObjectResult<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> ObjectResult<()> {
        self.0.copy_opts(from, to, options).await
    }
}

/// The functions a Ballista executor of Strata's resolves plans' functions in: Ballista's
/// and Strata's, by name.
pub fn executor_functions() -> datafusion::common::Result<BallistaFunctionRegistry> {
    let state = scheduler_session(None)(SessionConfig::new_with_ballista())?;
    Ok(BallistaFunctionRegistry::from(&state))
}

/// The runtimes a Ballista executor of Strata's runs tasks in: Ballista's default (spill
/// files under `work_dir`), with the lake's object store.
pub fn executor_runtime(
    work_dir: String,
    store: LakeStore,
) -> impl Fn(&SessionConfig) -> datafusion::common::Result<Arc<RuntimeEnv>> + Send + Sync + 'static {
    move |_| {
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_temp_file_path(work_dir.clone())
            .build()?;
        register_store(&runtime, &store);
        Ok(Arc::new(runtime))
    }
}
