//! The catalog served over Flight SQL, resolved against the lake each time a query plans.
//!
//! ```text
//!  strata (catalog)
//!  ├── public     one table per view: finalize(merge(batch states, speed     VIEW
//!  │              states beyond the batch version's Kafka offsets))
//!  ├── raw        one table per source: every valid event                    TABLE
//!  ├── rejected   one table per source: every rejected record and why        TABLE
//!  └── system     views, view_versions, partitions, freshness, lateness      SYSTEM TABLE
//! ```
//!
//! A table is resolved to the newest committed version of its Delta table when a query
//! plans, and the query reads that version to the end: a batch run publishing meanwhile is
//! seen wholly by the next query, never partly by this one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{CatalogProvider, MemTable, SchemaProvider, TableProvider};
use datafusion::common::{ScalarValue, TableReference};
use datafusion::datasource::{empty::EmptyTable, provider_as_source};
use datafusion::error::DataFusionError;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, UNNAMED_TABLE};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::filter_pushdown::FilterPushdown;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::{SessionContext, col, lit};
use deltalake::DeltaTable;
use strata_core::config::Config;
use strata_core::lake::{AppTransactions, Lake, ViewVersion, has_newer_version};
use strata_core::schema::{SourceSchema, TIMESTAMP_TZ, rejected_schema, timestamp_type};
use strata_core::session::{CATALOG, DEFAULT_SCHEMA, new_context, session_config};
use strata_core::speed::{Offsets, PartitionStatus, SpeedPart, SpeedSource, SpeedStatus, TopicPartition};
use strata_core::view::{ViewPlan, WINDOW_START, WindowKind};

use crate::compose::{Composition, LakeRange, compose};
use crate::state_rows::StateRows;
use strata_core::{Error, Result};
use url::Url;

pub const RAW_SCHEMA: &str = "raw";
pub const REJECTED_SCHEMA: &str = "rejected";
pub const SYSTEM_SCHEMA: &str = "system";
pub const SYSTEM_VIEWS: &str = "views";
pub const SYSTEM_VIEW_VERSIONS: &str = "view_versions";
pub const SYSTEM_PARTITIONS: &str = "partitions";
pub const SYSTEM_FRESHNESS: &str = "freshness";
pub const SYSTEM_LATENESS: &str = "lateness";

/// The share of the machine's memory queries may use together, unless serve.query_memory
/// says otherwise.
const QUERY_MEMORY_SHARE: f64 = 0.25;

/// How long a query may find a table unchanged by looking for its next commit alone, before
/// the table is updated in full: a commit file cleaned up from the log (long after it was
/// made, behind a checkpoint) would otherwise hide every version after it.
const FULL_UPDATE: Duration = Duration::from_secs(10);

/// At most this many batch rows of the windows a query merges with live states are kept in
/// memory between queries (see [`Catalog::recent_batch_rows`]); beyond it every query reads
/// them from the view table.
const RECENT_ROWS_KEPT: usize = 100_000;

/// The schemas of the catalog, in listing order.
pub const SCHEMAS: &[&str] = &[DEFAULT_SCHEMA, RAW_SCHEMA, REJECTED_SCHEMA, SYSTEM_SCHEMA];

/// A view as served: its plan and schemas, known at startup.
#[derive(Debug)]
pub struct ServedView {
    pub plan: ViewPlan,
    /// Schema of the state rows (the view table in the lake).
    pub state_schema: SchemaRef,
    /// Schema of the finalized view.
    pub schema: SchemaRef,
    /// Its definition's fingerprint ([`ViewPlan::fingerprint`]).
    pub fingerprint: String,
}

/// Everything the serving layer knows about the lake's tables.
#[derive(Debug)]
pub struct Catalog {
    lake: Lake,
    sources: Vec<Arc<SourceSchema>>,
    views: Vec<ServedView>,
    /// The session every query starts from (settings, functions, this catalog), built once:
    /// building one registers every DataFusion function anew. Queries clone it and share its
    /// catalog list, which holds this catalog alone (read-only SQL registers nothing).
    base: SessionState,
    /// Where the view templates, the lake's states of raw events and the batch rows merged
    /// with live states are planned and read, built once (see `templates`, `lake_states`,
    /// `recent_batch_rows`).
    scratch: Scratch,
    scratch_names: AtomicU64,
    /// Delta tables already opened, kept to update incrementally, with when each was last
    /// updated in full.
    tables: Mutex<HashMap<Url, (DeltaTable, Instant)>>,
    /// What each view version covers (read once per version): None for a version computed
    /// under another definition of the view.
    coverage: Mutex<HashMap<(Url, u64), Option<Offsets>>>,
    /// The version of each view table whose files' page indexes are cached.
    page_indexes: Mutex<HashMap<Url, u64>>,
    /// Each raw table's Kafka positions, kept up to date version by version.
    positions: Mutex<HashMap<Url, AppTransactions>>,
    /// Per view, the states of the raw events the lake last filled in: the same until the
    /// raw table or the ranges read from it change (a `strata serve` without speed layers
    /// fills every query's live windows from the lake).
    lake_states: Mutex<HashMap<String, LakeStates>>,
    /// Per view, the batch rows of the windows the live states reach back to, as of one view
    /// version (None: more than `recent_rows_kept`).
    recent_rows: Mutex<HashMap<String, RecentRows>>,
    /// At most this many are kept ([`RECENT_ROWS_KEPT`] unless a test says otherwise).
    recent_rows_kept: AtomicUsize,
    /// Per Delta table, a provider of the version a query last made one of (see
    /// `delta_provider`).
    providers: Mutex<HashMap<Url, VersionProvider>>,
    /// Per view, its finalize and merge SQL planned over a placeholder input.
    templates: Mutex<HashMap<String, Arc<ViewTemplates>>>,
    /// Speed layers whose states complete the batch views.
    speed: Vec<Arc<dyn SpeedSource>>,
    /// How long a speed layer may take to answer before its partitions come from the lake.
    speed_timeout: Duration,
    /// `serve.real_time_recency`: how long a speed layer may wait to catch up with Kafka.
    recency: Option<Duration>,
    speed_unavailable: strata_core::metrics::Counter,
    /// Which partitions exist and who owns them, over time.
    watch: Arc<crate::partitions::PartitionWatch>,
}

impl Catalog {
    /// Builds the catalog and checks that every view plans with DataFusion. Views merge
    /// their batch states with the states of `speed` layers.
    pub async fn new(config: &Config, speed: Vec<Arc<dyn SpeedSource>>) -> Result<Arc<Self>> {
        let lake = Lake::new(&config.lake)?;
        let sources: Vec<Arc<SourceSchema>> = config.sources.iter().map(SourceSchema::new).collect();
        let mut views = Vec::new();
        for plan in config.view_plans()? {
            let source = sources
                .iter()
                .find(|s| s.name == plan.source)
                .ok_or_else(|| Error::Internal(format!("view {} without its source", plan.name)))?;
            let (state_schema, schema) = view_schemas(&plan, source).await?;
            views.push(ServedView {
                fingerprint: plan.fingerprint(),
                plan,
                state_schema,
                schema,
            });
        }
        let mut session = session_config();
        // One pass of the logical optimizer, not three: a second pass over a composed view
        // finds the plan as the first left it (its rules run in an order made for one pass)
        // and costs every query about a millisecond to find that out.
        session.options_mut().optimizer.max_passes = 1;
        let mut base = SessionStateBuilder::new()
            .with_config(session)
            .with_runtime_env(strata_core::session::runtime_with_memory(
                config.serve.query_memory,
                QUERY_MEMORY_SHARE,
            )?)
            .with_default_features()
            .with_physical_optimizer_rules(physical_optimizer_rules())
            .build();
        strata_core::functions::register(&mut base)?;
        let scratch = Scratch(new_context(session_config())?);
        Ok(Arc::new_cyclic(|me| {
            base.catalog_list()
                .register_catalog(CATALOG.to_string(), Arc::new(StrataCatalog { catalog: me.clone() }));
            Catalog {
                lake,
                sources,
                views,
                base,
                scratch,
                scratch_names: AtomicU64::new(0),
                tables: Mutex::new(HashMap::new()),
                coverage: Mutex::new(HashMap::new()),
                positions: Mutex::new(HashMap::new()),
                page_indexes: Mutex::new(HashMap::new()),
                lake_states: Mutex::new(HashMap::new()),
                recent_rows: Mutex::new(HashMap::new()),
                recent_rows_kept: AtomicUsize::new(RECENT_ROWS_KEPT),
                templates: Mutex::new(HashMap::new()),
                providers: Mutex::new(HashMap::new()),
                speed,
                watch: Arc::new(crate::partitions::PartitionWatch::new(
                    config.serve.unowned_partition_grace,
                )),
                speed_timeout: config.serve.speed_timeout,
                recency: config
                    .serve
                    .real_time_recency
                    .then_some(config.serve.real_time_recency_timeout),
                speed_unavailable: strata_core::metrics::metrics().speed_unavailable.clone(),
            }
        }))
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// The watch of the sources' partitions and their owners.
    pub fn watch(&self) -> &Arc<crate::partitions::PartitionWatch> {
        &self.watch
    }

    pub fn speed(&self) -> &[Arc<dyn SpeedSource>] {
        &self.speed
    }

    pub fn views(&self) -> &[ServedView] {
        &self.views
    }

    pub fn sources(&self) -> &[Arc<SourceSchema>] {
        &self.sources
    }

    /// A session for one query, with this catalog as its default.
    pub fn session(&self) -> SessionContext {
        SessionContext::new_with_state(self.base.clone())
    }

    /// The newest version of a table; `None` while nothing has been written there. A table
    /// already open is updated only when its next commit is there (a query looks for one
    /// file rather than list the log), and in full at least every [`FULL_UPDATE`].
    async fn latest(&self, url: &Url) -> Result<Option<DeltaTable>> {
        let cached = self.tables.lock().expect("table cache lock").get(url).cloned();
        let table = match cached {
            Some((table, updated)) if updated.elapsed() < FULL_UPDATE && !has_newer_version(&table).await? => {
                return Ok(Some(table));
            }
            Some((mut table, _)) => {
                table
                    .update_incremental(None)
                    .await
                    .map_err(|e| Error::lake(format!("refresh {}", strata_core::lake::redact(url)), e))?;
                table
            }
            None => match self.lake.open(url).await? {
                Some(table) => table,
                None => return Ok(None),
            },
        };
        self.tables
            .lock()
            .expect("table cache lock")
            .insert(url.clone(), (table.clone(), Instant::now()));
        Ok(Some(table))
    }

    /// A provider of `table` as of its version, made once per table and version (a version's
    /// files never change; a query gives the provider its own session when it scans).
    async fn delta_provider(&self, table: &DeltaTable) -> Result<Arc<dyn TableProvider>> {
        let url = table.table_url();
        let version = table.version();
        if let Some(kept) = self.providers.lock().expect("providers lock").get(url)
            && version == Some(kept.version)
        {
            return Ok(kept.provider.clone());
        }
        // On the base session's runtime: the lake's object store is registered there once.
        // A version Strata wrote is read as its Parquet files, without the Delta kernel on
        // each query; any other through the Delta scan.
        let delta = strata_core::lake::table_provider(&self.session(), table).await?;
        let provider = strata_core::lake::parquet_provider(table, &delta)?.unwrap_or(delta);
        if let Some(version) = version {
            self.providers.lock().expect("providers lock").insert(
                url.clone(),
                VersionProvider {
                    version,
                    provider: provider.clone(),
                },
            );
        }
        Ok(provider)
    }

    /// The published states of a view, pinned to the newest version, with the version and
    /// the Kafka offsets it covers; empty before the first batch run, and while the newest
    /// version was computed under another definition of the view (until a recompute).
    pub async fn view_states(&self, view: &ServedView) -> Result<(Arc<dyn TableProvider>, Option<u64>, Offsets)> {
        let url = self.lake.view_url(&view.plan.name);
        if let Some(table) = self.latest(&url).await?
            && let Some(version) = table.version()
            && let Some(coverage) = self.coverage_of(&url, &table, version, &view.fingerprint).await?
        {
            self.cache_page_indexes(&url, &table, version).await;
            return Ok((self.delta_provider(&table).await?, Some(version), coverage));
        }
        Ok((empty(&view.state_schema)?, None, Offsets::new()))
    }

    /// Caches the footers of a view version's files with their page indexes, once per
    /// version (see [`strata_core::lake::cache_page_indexes`]). Queries answer without them
    /// (reading the page indexes themselves), so a failure is only logged.
    async fn cache_page_indexes(&self, url: &Url, table: &DeltaTable, version: u64) {
        if self.page_indexes.lock().expect("page indexes lock").get(url) == Some(&version) {
            return;
        }
        match strata_core::lake::cache_page_indexes(&self.session(), table).await {
            Ok(()) => {
                self.page_indexes
                    .lock()
                    .expect("page indexes lock")
                    .insert(url.clone(), version);
            }
            Err(e) => tracing::warn!(
                table = %strata_core::lake::redact(url),
                version,
                error = %e,
                "could not cache the page indexes of a view table's files: its queries read them from the files"
            ),
        }
    }

    /// What a view version covers, if it was computed under the definition `fingerprint`.
    async fn coverage_of(
        &self,
        url: &Url,
        table: &DeltaTable,
        version: u64,
        fingerprint: &str,
    ) -> Result<Option<Offsets>> {
        let key = (url.clone(), version);
        if let Some(c) = self.coverage.lock().expect("coverage lock").get(&key) {
            return Ok(c.clone());
        }
        // The newest version carrying a Strata record (every publication does).
        let coverage = Lake::latest_view_version(table)
            .await?
            .filter(|v| v.commit.fingerprint == fingerprint)
            .map(|v| v.commit.offsets);
        self.coverage
            .lock()
            .expect("coverage lock")
            .insert(key, coverage.clone());
        Ok(coverage)
    }

    /// The next offset the lake holds of each Kafka partition of a source, as of the raw
    /// table's newest version (loaded as `raw`).
    async fn archived(&self, raw: &DeltaTable) -> Result<Offsets> {
        let url = raw.table_url().clone();
        let mut txns = self
            .positions
            .lock()
            .expect("positions lock")
            .get(&url)
            .cloned()
            .unwrap_or_default();
        txns.refresh(raw).await?;
        let out = strata_core::lake::kafka_offsets(txns.all());
        self.positions.lock().expect("positions lock").insert(url, txns);
        Ok(out)
    }

    /// Every speed layer's states of a view beyond `coverage`, asked at once. One that fails
    /// or does not answer in time owns nothing for this query: its partitions come from the
    /// lake.
    async fn speed_parts(&self, view: &str, coverage: &Offsets) -> Vec<SpeedPart> {
        let asks = self
            .speed
            .iter()
            .map(|s| tokio::time::timeout(self.speed_timeout, s.states(view, coverage, self.recency)));
        let mut parts = Vec::new();
        for (s, answer) in self.speed.iter().zip(futures::future::join_all(asks).await) {
            match answer {
                Ok(Ok(p)) => parts.extend(p),
                Ok(Err(e)) => {
                    self.speed_unavailable.inc();
                    tracing::debug!(speed = %s.name(), error = %e, "a speed layer did not answer: its partitions come from the lake");
                }
                Err(_) => {
                    self.speed_unavailable.inc();
                    tracing::debug!(speed = %s.name(), timeout = ?self.speed_timeout, "a speed layer did not answer in time: its partitions come from the lake");
                }
            }
        }
        parts
    }

    /// A view: `finalize(merge(batch states, lake states, speed states))`, every Kafka
    /// partition counted once (see [`crate::compose`]).
    async fn view_table(&self, view: &ServedView) -> Result<Arc<dyn TableProvider>> {
        let source = self
            .source(&view.plan.source)
            .ok_or_else(|| Error::Internal(format!("view {} without its source", view.plan.name)))?
            .clone();
        let raw_url = self.lake.raw_url(&source.name);
        let mut replanned = false;
        loop {
            let started = Instant::now();
            let (batch, version, coverage) = self.view_states(view).await?;
            let states_at = started.elapsed();
            let parts = self.speed_parts(&view.plan.name, &coverage).await;
            let speed_at = started.elapsed();
            let raw = self.latest(&raw_url).await?;
            let archived = match &raw {
                Some(raw) => self.archived(raw).await?,
                None => BTreeMap::new(),
            };
            let raw_at = started.elapsed();
            let composition = compose(&source.topics, &coverage, &archived, parts);
            if composition.has_gaps() && !replanned {
                // A speed layer dropped states a newer batch version covers: plan on it if
                // there is one, rather than read the gap from the lake.
                replanned = true;
                let newest = self.latest(&self.lake.view_url(&view.plan.name)).await?;
                if newest.and_then(|t| t.version()) != version {
                    continue;
                }
            }
            let merged = self.merged(view, batch, version, raw.as_ref(), composition).await;
            tracing::debug!(
                view = %view.plan.name,
                batch_states = ?states_at,
                speed_states = ?speed_at - states_at,
                raw_positions = ?raw_at - speed_at,
                planned = ?started.elapsed() - raw_at,
                "view resolved"
            );
            return merged;
        }
    }

    /// Plans a view over its batch states, the chosen speed states and the states of the raw
    /// events the lake fills in.
    ///
    /// A batch version holds one state row per window and group, so its rows finalize as
    /// they are; only the windows the speed and lake states reach back to (usually the last
    /// minutes) are merged. A query over months of windows then groups none of them:
    ///
    /// ```text
    ///  finalize(batch rows of windows before the earliest other state)
    ///  UNION ALL
    ///  finalize(merge(batch rows from that window on, speed states, lake states))
    /// ```
    ///
    /// The batch rows from that window on are read once per view version and window (see
    /// [`Self::recent_batch_rows`]), so a query plans one scan of the view table, not two.
    async fn merged(
        &self,
        view: &ServedView,
        batch: Arc<dyn TableProvider>,
        version: Option<u64>,
        raw: Option<&DeltaTable>,
        composition: Composition,
    ) -> Result<Arc<dyn TableProvider>> {
        let schema = batch.schema();
        let mut others: Vec<RecordBatch> = composition
            .speed
            .iter()
            .flat_map(|p| &p.batches)
            .map(|b| Ok(crate::service::cast_to(b, &schema)?))
            .collect::<Result<_>>()?;
        if let (Some(raw), false) = (raw, composition.lake.is_empty()) {
            // Computed now: where they start decides which batch rows need merging.
            for b in &self.lake_states(view, raw, &composition.lake).await? {
                others.push(crate::service::cast_to(b, &schema)?);
            }
        }
        let templates = self.templates(view, &schema).await?;
        let batch = scan_of(batch)?;
        let (alone, merged) = match earliest_window(&others)? {
            None => (batch, None),
            Some(earliest) => {
                let recent = batch.clone().filter(col(WINDOW_START).gt_eq(lit(earliest.clone())))?;
                let recent = match self
                    .recent_batch_rows(view, version, &earliest, recent.clone().build()?, &schema)
                    .await?
                {
                    Some(rows) => {
                        others.extend(rows);
                        None
                    }
                    None => Some(recent),
                };
                (batch.filter(col(WINDOW_START).lt(lit(earliest)))?, Some(recent))
            }
        };
        let mut plan = LogicalPlanBuilder::from(templates.finalize.over(alone.build()?)?);
        if let Some(recent) = merged {
            // The query's filters on the window and group columns reach these rows (see
            // `StateRows`): a query reads its groups' rows, not the speed layer's batches.
            let others = scan_of(Arc::new(StateRows::new(schema.clone(), others)))?;
            let states = match recent {
                Some(recent) => recent.union(others.build()?)?,
                None => others,
            };
            plan = plan.union(templates.merge.over(states.build()?)?)?;
        }
        Ok(Arc::new(ViewTable::new(plan.build()?, None)))
    }

    /// The view's finalize and merge SQL planned over a placeholder of the view table's
    /// `schema`, kept per view until that schema changes (a view without a published version
    /// has the schema of its states, one with a version the Delta table's): a query puts its
    /// own state rows in the placeholder's place (parsing and planning that SQL on every query
    /// cost a point query about 0.8 ms).
    async fn templates(&self, view: &ServedView, schema: &SchemaRef) -> Result<Arc<ViewTemplates>> {
        if let Some(kept) = self.templates.lock().expect("templates lock").get(&view.plan.name)
            && &kept.finalize.schema == schema
        {
            return Ok(kept.clone());
        }
        let ctx = &self.scratch.0;
        // Names of this call's own in the shared scratch session, dropped once planned.
        let id = self.scratch_names.fetch_add(1, Ordering::Relaxed);
        let names = [format!("__alone_{id}"), format!("__states_{id}")];
        let template = async |name: &str, sql: String| {
            ctx.register_table(name, Arc::new(EmptyTable::new(schema.clone())))?;
            Ok::<_, Error>(Template {
                plan: ctx.sql(&sql).await?.into_unoptimized_plan(),
                input: TableReference::bare(name),
                schema: schema.clone(),
            })
        };
        let planned = async {
            Ok::<_, Error>(ViewTemplates {
                finalize: template(&names[0], view.plan.finalize_sql(&names[0])).await?,
                merge: template(&names[1], view.plan.merge_sql(&names[1])).await?,
            })
        }
        .await;
        deregister(ctx, &names);
        let templates = Arc::new(planned?);
        self.templates
            .lock()
            .expect("templates lock")
            .insert(view.plan.name.clone(), templates.clone());
        Ok(templates)
    }

    /// The states of the raw events of `ranges` (the lake's share of a view's answer), kept
    /// while the raw table's version and the ranges stay the same.
    async fn lake_states(&self, view: &ServedView, raw: &DeltaTable, ranges: &[LakeRange]) -> Result<Vec<RecordBatch>> {
        if let Some(states) = self.kept_lake_states(view, raw, ranges) {
            return Ok(states);
        }
        let ctx = &self.scratch.0;
        let name = format!("__raw_{}", self.scratch_names.fetch_add(1, Ordering::Relaxed));
        let states = async {
            let events = ctx
                .read_table(self.delta_provider(raw).await?)?
                .filter(lake_predicate(ranges))?;
            ctx.register_table(name.as_str(), events.into_view())?;
            Ok::<_, Error>(ctx.sql(&view.plan.state_sql(&name)).await?.collect().await?)
        }
        .await;
        deregister(ctx, std::slice::from_ref(&name));
        let states = states?;
        self.lake_states.lock().expect("lake states lock").insert(
            view.plan.name.clone(),
            LakeStates {
                raw_version: raw.version(),
                ranges: ranges.to_vec(),
                states: states.clone(),
            },
        );
        Ok(states)
    }

    /// The rows of `version` of a view's batch states from the window `earliest` on (read by
    /// `rows`): the windows the live states reach back to, usually the last minutes. They are
    /// the same until the view gets a new version or the earliest live window moves, and are
    /// kept until then, so a query merges them from memory instead of planning and running a
    /// second scan of the view table. None when there are more than `recent_rows_kept`: the
    /// query reads them itself, as part of its plan.
    async fn recent_batch_rows(
        &self,
        view: &ServedView,
        version: Option<u64>,
        earliest: &ScalarValue,
        rows: LogicalPlan,
        schema: &SchemaRef,
    ) -> Result<Option<Vec<RecordBatch>>> {
        use futures::StreamExt;
        if let Some(kept) = self.recent_rows.lock().expect("recent rows lock").get(&view.plan.name)
            && kept.version == version
            && &kept.earliest == earliest
        {
            return Ok(kept.rows.clone());
        }
        let most = self.recent_rows_kept.load(Ordering::Relaxed);
        let rows = datafusion::dataframe::DataFrame::new(self.scratch.0.state(), rows);
        let mut stream = rows.execute_stream().await?;
        let mut read = Vec::new();
        let mut count = 0;
        while let Some(b) = stream.next().await {
            let b = b?;
            count += b.num_rows();
            if count > most {
                read.clear();
                break;
            }
            read.push(crate::service::cast_to(&b, schema)?);
        }
        let rows = (count <= most).then_some(read);
        self.recent_rows.lock().expect("recent rows lock").insert(
            view.plan.name.clone(),
            RecentRows {
                version,
                earliest: earliest.clone(),
                rows: rows.clone(),
            },
        );
        Ok(rows)
    }

    /// Keeps at most `rows` batch rows of the windows queries merge with live states, for the
    /// views resolved from now on (tests reach the path where there are more).
    #[doc(hidden)]
    pub fn keep_recent_rows(&self, rows: usize) {
        self.recent_rows_kept.store(rows, Ordering::Relaxed);
        self.recent_rows.lock().expect("recent rows lock").clear();
    }

    /// The states the lake filled in last for `view`, if they were of the same `ranges` of the
    /// same version of `raw`.
    fn kept_lake_states(&self, view: &ServedView, raw: &DeltaTable, ranges: &[LakeRange]) -> Option<Vec<RecordBatch>> {
        let kept = self.lake_states.lock().expect("lake states lock");
        let kept = kept.get(&view.plan.name)?;
        (raw.version().is_some() && kept.raw_version == raw.version() && kept.ranges == ranges)
            .then(|| kept.states.clone())
    }

    async fn source_table(&self, url: &Url, schema: &SchemaRef) -> Result<Arc<dyn TableProvider>> {
        match self.latest(url).await? {
            Some(table) => self.delta_provider(&table).await,
            None => empty(schema),
        }
    }

    fn source(&self, name: &str) -> Option<&Arc<SourceSchema>> {
        self.sources.iter().find(|s| s.name.eq_ignore_ascii_case(name))
    }

    fn view(&self, name: &str) -> Option<&ServedView> {
        self.views.iter().find(|v| v.plan.name.eq_ignore_ascii_case(name))
    }

    /// The names of the tables of a schema.
    pub fn table_names(&self, schema: &str) -> Vec<String> {
        match schema {
            DEFAULT_SCHEMA => self.views.iter().map(|v| v.plan.name.clone()).collect(),
            RAW_SCHEMA | REJECTED_SCHEMA => self.sources.iter().map(|s| s.name.clone()).collect(),
            SYSTEM_SCHEMA => [
                SYSTEM_VIEWS,
                SYSTEM_VIEW_VERSIONS,
                SYSTEM_PARTITIONS,
                SYSTEM_FRESHNESS,
                SYSTEM_LATENESS,
            ]
            .map(String::from)
            .to_vec(),
            _ => Vec::new(),
        }
    }

    /// The table type shown to SQL clients.
    pub fn table_type(schema: &str) -> &'static str {
        match schema {
            DEFAULT_SCHEMA => "VIEW",
            SYSTEM_SCHEMA => "SYSTEM TABLE",
            RAW_SCHEMA | REJECTED_SCHEMA => "TABLE",
            _ => "VIEW",
        }
    }

    /// Resolves a table of one of Strata's schemas.
    pub async fn table(&self, schema: &str, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(match schema {
            DEFAULT_SCHEMA => match self.view(name) {
                Some(v) => Some(self.view_table(v).await?),
                None => None,
            },
            RAW_SCHEMA => match self.source(name) {
                Some(s) => Some(self.source_table(&self.lake.raw_url(&s.name), &s.raw).await?),
                None => None,
            },
            REJECTED_SCHEMA => match self.source(name) {
                Some(s) => Some(
                    self.source_table(&self.lake.rejected_url(&s.name), &rejected_schema())
                        .await?,
                ),
                None => None,
            },
            SYSTEM_SCHEMA => match name {
                SYSTEM_VIEWS => Some(self.system_views()?),
                SYSTEM_VIEW_VERSIONS => Some(self.system_view_versions().await?),
                SYSTEM_PARTITIONS | SYSTEM_FRESHNESS | SYSTEM_LATENESS => Some(self.system_speed(name).await?),
                _ => None,
            },
            _ => None,
        })
    }

    /// The schema of a table, known without reading the lake.
    pub fn table_schema(&self, schema: &str, name: &str) -> Option<SchemaRef> {
        match schema {
            DEFAULT_SCHEMA => self.view(name).map(|v| v.schema.clone()),
            RAW_SCHEMA => self.source(name).map(|s| s.raw.clone()),
            REJECTED_SCHEMA => self.source(name).map(|_| rejected_schema()),
            SYSTEM_SCHEMA => match name {
                SYSTEM_VIEWS => Some(system_views_schema()),
                SYSTEM_VIEW_VERSIONS => Some(system_view_versions_schema()),
                SYSTEM_PARTITIONS => Some(system_partitions_schema()),
                SYSTEM_FRESHNESS => Some(system_freshness_schema()),
                SYSTEM_LATENESS => Some(system_lateness_schema()),
                _ => None,
            },
            _ => None,
        }
    }

    fn system_views(&self) -> Result<Arc<dyn TableProvider>> {
        let schema = system_views_schema();
        let v = &self.views;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(v.iter().map(|v| v.plan.name.as_str()))),
            Arc::new(StringArray::from_iter_values(v.iter().map(|v| v.plan.source.as_str()))),
            Arc::new(StringArray::from_iter_values(v.iter().map(
                |v| match v.plan.window.kind {
                    WindowKind::Tumble => "tumble",
                    WindowKind::Hop => "hop",
                },
            ))),
            Arc::new(Int64Array::from_iter_values(v.iter().map(|v| v.plan.window.size_us))),
            Arc::new(Int64Array::from_iter_values(v.iter().map(|v| v.plan.window.slide_us))),
            Arc::new(StringArray::from_iter_values(v.iter().map(|v| v.fingerprint.as_str()))),
            Arc::new(StringArray::from_iter_values(v.iter().map(|v| v.plan.sql.as_str()))),
        ];
        table_of(schema, columns)
    }

    /// What every speed layer says of itself; one that does not answer in time says nothing.
    async fn statuses(&self) -> Vec<SpeedStatus> {
        let asks = self
            .speed
            .iter()
            .map(|s| tokio::time::timeout(self.speed_timeout, s.status()));
        let mut out = Vec::new();
        for (s, answer) in self.speed.iter().zip(futures::future::join_all(asks).await) {
            match answer {
                Ok(Ok(status)) => out.push(status),
                Ok(Err(e)) => tracing::debug!(speed = %s.name(), error = %e, "a speed layer did not say where it is"),
                Err(_) => tracing::debug!(speed = %s.name(), "a speed layer did not say where it is in time"),
            }
        }
        out
    }

    /// One row per Kafka partition of every source: who owns it (the newest generation of
    /// the speed layers reporting it), how far it is consumed and archived, where queries take
    /// its events beyond the batch coverage from and up to which offset, and the alarm for a
    /// partition nobody has consumed for too long.
    async fn system_partitions(&self, statuses: &[SpeedStatus]) -> Result<Arc<dyn TableProvider>> {
        partitions_table(&self.partition_rows(statuses).await?)
    }

    /// Every partition of the sources' topics that the lake, a speed layer or Kafka knows,
    /// with what each says of it.
    async fn partition_rows<'a>(&self, statuses: &'a [SpeedStatus]) -> Result<Vec<(TopicPartition, PartitionRow<'a>)>> {
        let mut rows: BTreeMap<TopicPartition, PartitionRow<'a>> = BTreeMap::new();
        for source in &self.sources {
            if let Some(raw) = self.latest(&self.lake.raw_url(&source.name)).await? {
                for (tp, next) in self.archived(&raw).await? {
                    if source.topics.contains(&tp.topic) {
                        let row = rows.entry(tp).or_default();
                        row.archived = Some(next);
                    }
                }
            }
        }
        for status in statuses {
            for p in &status.partitions {
                let row = rows.entry(p.partition.clone()).or_default();
                row.owners += 1;
                if row
                    .owner
                    .is_none_or(|(_, held)| (held.generation, held.consumed) < (p.generation, p.consumed))
                {
                    row.owner = Some((status.instance.as_str(), p));
                }
            }
        }
        for (tp, ownership) in self.watch.partitions(Instant::now()) {
            rows.entry(tp).or_default().ownership = Some(ownership);
        }
        for (tp, row) in rows.iter_mut() {
            if let Some(s) = self.sources.iter().find(|s| s.topics.contains(&tp.topic)) {
                row.source = s.name.clone();
            }
        }
        Ok(rows.into_iter().filter(|(_, r)| !r.source.is_empty()).collect())
    }

    /// The speed layers' positions, memory and lateness.
    async fn system_speed(&self, table: &str) -> Result<Arc<dyn TableProvider>> {
        let statuses = self.statuses().await;
        match table {
            SYSTEM_PARTITIONS => self.system_partitions(&statuses).await,
            SYSTEM_LATENESS => lateness_table(&statuses),
            _ => self.system_freshness(&statuses).await,
        }
    }

    /// One row per view: the batch version it is answered from, and how far the speed
    /// layers are beyond it.
    async fn system_freshness(&self, statuses: &[SpeedStatus]) -> Result<Arc<dyn TableProvider>> {
        let mut rows = Vec::new();
        for view in &self.views {
            rows.push(self.freshness_row(view, statuses).await?);
        }
        freshness_table(&rows)
    }

    /// What the lake's newest batch version and every speed layer say of a view.
    async fn freshness_row(&self, view: &ServedView, statuses: &[SpeedStatus]) -> Result<FreshnessRow> {
        let url = self.lake.view_url(&view.plan.name);
        let (batch_version, batch_ran_at, batch_coverage, batch_current) = match self.latest(&url).await? {
            Some(t) => match Lake::latest_view_version(&t).await? {
                Some(v) => (
                    Some(v.version as i64),
                    Some(v.commit.started_at),
                    v.commit.offsets,
                    Some(v.commit.fingerprint == view.fingerprint),
                ),
                None => (None, None, Offsets::new(), None),
            },
            None => (None, None, Offsets::new(), None),
        };
        let mut row = FreshnessRow {
            view: view.plan.name.clone(),
            batch_version,
            batch_ran_at,
            batch_coverage,
            speed_position: Offsets::new(),
            speed_generations: 0,
            speed_states: 0,
            speed_state_bytes: 0,
            max_event_time: None,
            late_events: 0,
            batch_current,
        };
        for s in statuses {
            for p in s.partitions.iter().filter(|p| p.source == view.plan.source) {
                row.speed_position.insert(p.partition.clone(), p.consumed);
                row.max_event_time = row.max_event_time.max(p.max_event_time);
                row.late_events += p.late_events;
            }
            for v in s.views.iter().filter(|v| v.view == view.plan.name) {
                row.speed_generations += v.generations;
                row.speed_states += v.state_rows;
                row.speed_state_bytes += v.state_bytes;
            }
        }
        Ok(row)
    }

    async fn system_view_versions(&self) -> Result<Arc<dyn TableProvider>> {
        let schema = system_view_versions_schema();
        let mut rows: Vec<(String, ViewVersion, bool)> = Vec::new();
        for view in &self.views {
            if let Some(table) = self.latest(&self.lake.view_url(&view.plan.name)).await? {
                for (i, v) in Lake::view_versions(&table, 100).await?.into_iter().enumerate() {
                    rows.push((view.plan.name.clone(), v, i == 0));
                }
            }
        }
        let ts_col = |f: &dyn Fn(&ViewVersion) -> Option<i64>| -> ArrayRef {
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|(_, v, _)| f(v)).collect::<Vec<_>>())
                    .with_timezone(TIMESTAMP_TZ),
            )
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|(n, _, _)| n.as_str()))),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|(_, v, _)| v.version as i64),
            )),
            Arc::new(BooleanArray::from(rows.iter().map(|(_, _, c)| *c).collect::<Vec<_>>())),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, v, _)| v.commit.fingerprint.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|(_, v, _)| v.commit.raw_version as i64),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, v, _)| {
                serde_json::to_string(&v.commit.offsets).unwrap_or_default()
            }))),
            ts_col(&|v| v.commit.range.map(|r| r.0)),
            ts_col(&|v| v.commit.range.map(|r| r.1)),
            ts_col(&|v| Some(v.commit.started_at)),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|(_, v, _)| v.commit.duration_ms as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|(_, v, _)| v.commit.events as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|(_, v, _)| v.commit.rows as i64),
            )),
        ];
        table_of(schema, columns)
    }
}

fn system_partitions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        // The speed process whose states answer for the partition (the newest generation
        // among those reporting it), and how many report it.
        Field::new("owner", DataType::Utf8, true),
        Field::new("generation", DataType::Int64, true),
        Field::new("owners", DataType::Int64, false),
        Field::new("consumed_offset", DataType::Int64, true),
        // The next offset the lake holds.
        Field::new("archived_offset", DataType::Int64, true),
        Field::new("high_watermark", DataType::Int64, true),
        Field::new("lag", DataType::Int64, true),
        // Where queries take its events beyond the batch coverage from ("speed" states, or
        // the "lake"'s archived raw events), and up to which offset.
        Field::new("answered_from", DataType::Utf8, false),
        Field::new("answered_until", DataType::Int64, true),
        Field::new("max_event_time", timestamp_type(), true),
        Field::new("events", DataType::Int64, true),
        Field::new("rejected", DataType::Int64, true),
        Field::new("late_events", DataType::Int64, true),
        // How long no live speed process has owned it, and whether that is an alarm.
        Field::new("unowned_seconds", DataType::Float64, true),
        Field::new("alarm", DataType::Boolean, false),
    ]))
}

fn system_freshness_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, false),
        Field::new("batch_version", DataType::Int64, true),
        Field::new("batch_ran_at", timestamp_type(), true),
        Field::new("batch_coverage", DataType::Utf8, false),
        Field::new("speed_position", DataType::Utf8, false),
        Field::new("speed_generations", DataType::Int64, false),
        Field::new("speed_states", DataType::Int64, false),
        Field::new("speed_state_bytes", DataType::Int64, false),
        Field::new("bytes_per_state", DataType::Float64, true),
        Field::new("max_event_time", timestamp_type(), true),
        Field::new("late_events", DataType::Int64, false),
        // Whether the batch version was computed under the view's current definition (one
        // that was not is not used: answers come from the lake and the speed layers).
        Field::new("batch_current", DataType::Boolean, true),
    ]))
}

fn system_lateness_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("instance", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("view", DataType::Utf8, false),
        Field::new("late_by_at_most", DataType::Utf8, false),
        Field::new("events", DataType::Int64, false),
    ]))
}

fn system_views_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("window", DataType::Utf8, false),
        Field::new("window_size_us", DataType::Int64, false),
        Field::new("window_slide_us", DataType::Int64, false),
        Field::new("fingerprint", DataType::Utf8, false),
        Field::new("definition", DataType::Utf8, false),
    ]))
}

fn system_view_versions_schema() -> SchemaRef {
    let ts = |name: &str, nullable| Field::new(name, timestamp_type(), nullable);
    Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, false),
        Field::new("version", DataType::Int64, false),
        Field::new("current", DataType::Boolean, false),
        Field::new("fingerprint", DataType::Utf8, false),
        Field::new("raw_version", DataType::Int64, false),
        Field::new("kafka_offsets", DataType::Utf8, false),
        ts("range_from", true),
        ts("range_to", true),
        ts("started_at", false),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new("events", DataType::Int64, false),
        Field::new("rows", DataType::Int64, false),
    ]))
}

/// DataFusion's physical optimizer rules without the filter pushdown that runs before the
/// others ([`FilterPushdown::new`]; the one after them, of dynamic filters, stays), for the
/// sessions served queries run in (the scratch session keeps every rule).
///
/// A table's scan (a view table version's Parquet scan, or the Delta scan) is given a
/// query's filters when it is planned, and puts them in its Parquet predicate, where they prune files, row groups and pages and filter rows as they are
/// read. That rule then moved the same filters into the predicate again, from the filter
/// above, so every pruning step and every row read evaluated each condition twice (and the
/// rule itself took a point query about 0.3 ms). Without it the predicate holds each
/// condition once, and the filter stays above the scan: the rows the scan returns, which
/// already passed it, are checked once more.
fn physical_optimizer_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let pre = FilterPushdown::new();
    PhysicalOptimizer::new()
        .rules
        .into_iter()
        .filter(|rule| rule.name() != pre.name())
        .collect()
}

/// A plan reading all of `table` (as `SessionContext::read_table` plans it).
fn scan_of(table: Arc<dyn TableProvider>) -> Result<LogicalPlanBuilder> {
    Ok(LogicalPlanBuilder::scan(
        UNNAMED_TABLE,
        provider_as_source(table),
        None,
    )?)
}

fn deregister(ctx: &SessionContext, names: &[String]) {
    for name in names {
        let _ = ctx.deregister_table(name.as_str());
    }
}

/// The earliest window of some state rows of a view (their `window_start` as a literal of
/// its type), if they hold any.
fn earliest_window(states: &[RecordBatch]) -> Result<Option<ScalarValue>> {
    use arrow::array::AsArray;
    use arrow::datatypes::{TimeUnit, TimestampMicrosecondType};
    let mut earliest: Option<(i64, Option<Arc<str>>)> = None;
    for b in states {
        let column = b
            .column_by_name(WINDOW_START)
            .ok_or_else(|| Error::Internal(format!("state rows without {WINDOW_START}")))?;
        let DataType::Timestamp(TimeUnit::Microsecond, zone) = column.data_type() else {
            return Err(Error::Internal(format!(
                "{WINDOW_START} of type {}",
                column.data_type()
            )));
        };
        if let Some(first) = arrow::compute::min(column.as_primitive::<TimestampMicrosecondType>())
            && earliest.as_ref().is_none_or(|(e, _)| first < *e)
        {
            earliest = Some((first, zone.clone()));
        }
    }
    Ok(earliest.map(|(t, zone)| ScalarValue::TimestampMicrosecond(Some(t), zone)))
}

/// The raw events of the lake ranges: `(_topic, _partition)` and an `_offset` range each.
fn lake_predicate(ranges: &[LakeRange]) -> datafusion::prelude::Expr {
    use strata_core::schema::{OFFSET, PARTITION, TOPIC};
    ranges
        .iter()
        .map(|r| {
            let mut e = col(TOPIC)
                .eq(lit(r.partition.topic.as_str()))
                .and(col(PARTITION).eq(lit(r.partition.partition)))
                .and(col(OFFSET).gt_eq(lit(r.from)));
            if let Some(until) = r.until {
                e = e.and(col(OFFSET).lt(lit(until)));
            }
            e
        })
        .reduce(datafusion::prelude::Expr::or)
        .unwrap_or_else(|| lit(false))
}

/// A provider of one version of a Delta table.
#[derive(Debug)]
struct VersionProvider {
    version: u64,
    provider: Arc<dyn TableProvider>,
}

/// A view's SQL over state rows, planned once (see [`Catalog::templates`]).
#[derive(Debug)]
struct ViewTemplates {
    /// Finalizes state rows one by one.
    finalize: Template,
    /// Merges state rows per window and group, and finalizes them.
    merge: Template,
}

/// A logical plan over a placeholder table.
#[derive(Debug)]
struct Template {
    plan: LogicalPlan,
    /// The placeholder's name, which qualifies its columns in `plan`.
    input: TableReference,
    /// The placeholder's schema: the nodes of `plan` keep the schemas computed from it.
    schema: SchemaRef,
}

impl Template {
    /// The plan over `input` instead of the placeholder (every scan of it, subqueries
    /// included). `input` must have the placeholder's schema, nullability included: the
    /// plan's nodes keep the schemas they were planned with, and the optimizer trusts them.
    fn over(&self, input: LogicalPlan) -> Result<LogicalPlan> {
        use datafusion::common::tree_node::Transformed;
        if input.schema().as_arrow() != self.schema.as_ref() {
            return Err(Error::Internal(format!(
                "a view template over {} planned for {:?} given {:?}",
                self.input,
                self.schema,
                input.schema().as_arrow()
            )));
        }
        let input = LogicalPlanBuilder::from(input).alias(self.input.clone())?.build()?;
        let plan = self.plan.clone().transform_up_with_subqueries(|p| match p {
            LogicalPlan::TableScan(scan) if scan.table_name == self.input => Ok(Transformed::yes(input.clone())),
            p => Ok(Transformed::no(p)),
        })?;
        if !plan.transformed {
            return Err(Error::Internal(format!(
                "a view template without its input {}",
                self.input
            )));
        }
        Ok(plan.data)
    }
}

/// The batch rows of `version` of a view from the window `earliest` on (None: too many to
/// keep).
#[derive(Debug)]
struct RecentRows {
    version: Option<u64>,
    earliest: ScalarValue,
    rows: Option<Vec<RecordBatch>>,
}

/// The states of a view computed from the raw events of `ranges` in version `raw_version` of
/// the raw table (a version's files never change).
#[derive(Debug)]
struct LakeStates {
    raw_version: Option<deltalake::kernel::Version>,
    ranges: Vec<LakeRange>,
    states: Vec<RecordBatch>,
}

/// What a speed layer, the lake and the partition watch say of a partition.
#[derive(Default)]
struct PartitionRow<'a> {
    source: String,
    owner: Option<(&'a str, &'a PartitionStatus)>,
    owners: i64,
    archived: Option<i64>,
    ownership: Option<crate::partitions::Ownership>,
}

/// `system.partitions` of its rows.
fn partitions_table(rows: &[(TopicPartition, PartitionRow<'_>)]) -> Result<Arc<dyn TableProvider>> {
    let owner = |f: &dyn Fn(&PartitionStatus) -> Option<i64>| -> ArrayRef {
        Arc::new(Int64Array::from(
            rows.iter()
                .map(|(_, r)| r.owner.and_then(|(_, p)| f(p)))
                .collect::<Vec<_>>(),
        ))
    };
    table_of(
        system_partitions_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, r)| r.source.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(tp, _)| tp.topic.as_str()),
            )),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|(tp, _)| tp.partition))),
            Arc::new(StringArray::from(
                rows.iter().map(|(_, r)| r.owner.map(|(i, _)| i)).collect::<Vec<_>>(),
            )),
            owner(&|p| Some(p.generation as i64)),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, r)| r.owners))),
            owner(&|p| Some(p.consumed)),
            Arc::new(Int64Array::from(
                rows.iter().map(|(_, r)| r.archived).collect::<Vec<_>>(),
            )),
            owner(&|p| p.high_watermark),
            owner(&|p| p.high_watermark.map(|h| (h - p.consumed).max(0))),
            Arc::new(StringArray::from_iter_values(
                rows.iter()
                    .map(|(_, r)| if r.owner.is_some() { "speed" } else { "lake" }),
            )),
            Arc::new(Int64Array::from(
                rows.iter()
                    .map(|(_, r)| r.owner.map(|(_, p)| p.consumed).or(r.archived))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(
                    rows.iter()
                        .map(|(_, r)| r.owner.and_then(|(_, p)| p.max_event_time))
                        .collect::<Vec<_>>(),
                )
                .with_timezone(TIMESTAMP_TZ),
            ),
            owner(&|p| Some(p.events as i64)),
            owner(&|p| Some(p.rejected as i64)),
            owner(&|p| Some(p.late_events as i64)),
            Arc::new(Float64Array::from(
                rows.iter()
                    .map(|(_, r)| r.ownership.map(|o| o.unowned_for.as_secs_f64()))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(BooleanArray::from(
                rows.iter()
                    .map(|(_, r)| r.ownership.is_some_and(|o| o.alarm))
                    .collect::<Vec<_>>(),
            )),
        ],
    )
}

/// `system.lateness`: every speed layer's lateness buckets.
fn lateness_table(statuses: &[SpeedStatus]) -> Result<Arc<dyn TableProvider>> {
    let rows: Vec<(&str, &strata_core::speed::LatenessBucket)> = statuses
        .iter()
        .flat_map(|s| s.lateness.iter().map(move |l| (s.instance.as_str(), l)))
        .collect();
    table_of(
        system_lateness_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.source.as_str()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.view.as_str()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.le.as_str()))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1.events as i64))),
        ],
    )
}

/// A view's row of `system.freshness`.
struct FreshnessRow {
    view: String,
    batch_version: Option<i64>,
    batch_ran_at: Option<i64>,
    batch_coverage: Offsets,
    /// Over every speed layer: the next offset to consume of each partition of the view's
    /// source.
    speed_position: Offsets,
    speed_generations: u64,
    speed_states: u64,
    speed_state_bytes: u64,
    max_event_time: Option<i64>,
    late_events: u64,
    batch_current: Option<bool>,
}

/// `system.freshness` of its rows.
fn freshness_table(rows: &[FreshnessRow]) -> Result<Arc<dyn TableProvider>> {
    let count = |f: &dyn Fn(&FreshnessRow) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| f(r) as i64)))
    };
    let timestamps = |f: &dyn Fn(&FreshnessRow) -> Option<i64>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(rows.iter().map(f).collect::<Vec<_>>()).with_timezone(TIMESTAMP_TZ))
    };
    table_of(
        system_freshness_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.view.as_str()))),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.batch_version).collect::<Vec<_>>(),
            )),
            timestamps(&|r| r.batch_ran_at),
            Arc::new(StringArray::from_iter_values(
                rows.iter()
                    .map(|r| serde_json::to_string(&r.batch_coverage).unwrap_or_default()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter()
                    .map(|r| serde_json::to_string(&r.speed_position).unwrap_or_default()),
            )),
            count(&|r| r.speed_generations),
            count(&|r| r.speed_states),
            count(&|r| r.speed_state_bytes),
            Arc::new(Float64Array::from(
                rows.iter()
                    .map(|r| (r.speed_states > 0).then(|| r.speed_state_bytes as f64 / r.speed_states as f64))
                    .collect::<Vec<_>>(),
            )),
            timestamps(&|r| r.max_event_time),
            count(&|r| r.late_events),
            Arc::new(BooleanArray::from(
                rows.iter().map(|r| r.batch_current).collect::<Vec<_>>(),
            )),
        ],
    )
}

fn empty(schema: &SchemaRef) -> Result<Arc<dyn TableProvider>> {
    Ok(Arc::new(MemTable::try_new(schema.clone(), vec![vec![]])?))
}

fn table_of(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<Arc<dyn TableProvider>> {
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// Plans a view over empty tables: the state schema and the finalized schema. A view whose
/// SQL does not type-check against its source fails here, at startup.
pub async fn view_schemas(plan: &ViewPlan, source: &SourceSchema) -> Result<(SchemaRef, SchemaRef)> {
    let ctx = new_context(session_config())?;
    ctx.register_table(&source.name, empty(&source.raw)?)?;
    let states = ctx.sql(&plan.state_sql(&source.name)).await.map_err(|e| {
        Error::view(
            &plan.name,
            "SQL",
            format!("does not plan over source `{}`: {}", source.name, e.strip_backtrace()),
        )
    })?;
    let state_schema: SchemaRef = Arc::new(states.schema().as_arrow().clone());
    ctx.register_table("__states", empty(&state_schema)?)?;
    let merged = ctx
        .sql(&plan.merge_sql("__states"))
        .await
        .map_err(|e| Error::Internal(format!("view `{}`: the merge does not plan: {e}", plan.name)))?;
    Ok((state_schema, Arc::new(merged.schema().as_arrow().clone())))
}

/// The session views are planned in over their states.
struct Scratch(SessionContext);

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scratch")
    }
}

/// The `strata` catalog as DataFusion sees it. It lives in the catalog's base session, so
/// it holds the catalog weakly.
#[derive(Debug)]
struct StrataCatalog {
    catalog: Weak<Catalog>,
}

impl CatalogProvider for StrataCatalog {
    fn schema_names(&self) -> Vec<String> {
        SCHEMAS.iter().map(|s| s.to_string()).collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let catalog = self.catalog.upgrade()?;
        SCHEMAS
            .iter()
            .find(|s| **s == name)
            .map(|s| Arc::new(StrataSchema { catalog, name: s }) as Arc<dyn SchemaProvider>)
    }
}

#[derive(Debug)]
struct StrataSchema {
    catalog: Arc<Catalog>,
    name: &'static str,
}

#[async_trait]
impl SchemaProvider for StrataSchema {
    fn table_names(&self) -> Vec<String> {
        self.catalog.table_names(self.name)
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        self.catalog
            .table(self.name, name)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.table_names().iter().any(|t| t.eq_ignore_ascii_case(name))
    }
}
