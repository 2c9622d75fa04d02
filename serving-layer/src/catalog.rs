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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, MemTable, SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use strata_core::config::Config;
use strata_core::lake::{Lake, ViewVersion};
use strata_core::schema::{SourceSchema, TIMESTAMP_TZ, rejected_schema, timestamp_type};
use strata_core::session::{CATALOG, DEFAULT_SCHEMA, new_context, session_config};
use strata_core::speed::{Offsets, PartitionStatus, SpeedSource};
use strata_core::view::{ViewPlan, WindowKind};
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
    /// Where views are planned over their states, built once (see `view_table`).
    scratch: Scratch,
    scratch_names: AtomicU64,
    /// Delta tables already opened, kept to update incrementally.
    tables: Mutex<HashMap<Url, DeltaTable>>,
    /// What each view version covers (read once per version).
    coverage: Mutex<HashMap<(Url, u64), Offsets>>,
    /// Speed layers whose states complete the batch views.
    speed: Vec<Arc<dyn SpeedSource>>,
}

impl Catalog {
    /// Builds the catalog and checks that every view plans with DataFusion. Views merge
    /// their batch states with the states of `speed` layers.
    pub async fn new(config: &Config, speed: Vec<Arc<dyn SpeedSource>>) -> Result<Arc<Self>> {
        let lake = Lake::new(&config.lake, config.base_dir())?;
        let sources: Vec<Arc<SourceSchema>> = config.sources.iter().map(SourceSchema::new).collect();
        let mut views = Vec::new();
        for plan in config.view_plans()? {
            let source = sources
                .iter()
                .find(|s| s.name == plan.source)
                .ok_or_else(|| Error::Internal(format!("view {} without its source", plan.name)))?;
            let (state_schema, schema) = view_schemas(&plan, source).await?;
            views.push(ServedView {
                plan,
                state_schema,
                schema,
            });
        }
        let mut base = SessionStateBuilder::new()
            .with_config(session_config())
            .with_runtime_env(Arc::new(RuntimeEnv::default()))
            .with_default_features()
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
                speed,
            }
        }))
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
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

    /// The newest version of a Delta table, or `None` if nothing was written there yet.
    async fn latest(&self, url: &Url) -> Result<Option<DeltaTable>> {
        let cached = self.tables.lock().expect("table cache lock").get(url).cloned();
        let table = match cached {
            Some(mut table) => {
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
            .insert(url.clone(), table.clone());
        Ok(Some(table))
    }

    async fn delta_provider(&self, table: &DeltaTable) -> Result<Arc<dyn TableProvider>> {
        // On the base session's runtime: the lake's object store is registered there once.
        strata_core::lake::table_provider(&self.session(), table).await
    }

    /// The published states of a view (empty before its first batch run), pinned to the
    /// newest version, with the version and the Kafka offsets it covers.
    pub async fn view_states(&self, view: &ServedView) -> Result<(Arc<dyn TableProvider>, Option<u64>, Offsets)> {
        let url = self.lake.view_url(&view.plan.name);
        match self.latest(&url).await? {
            Some(table) => {
                let version = table.version();
                let coverage = match version {
                    Some(v) => self.coverage_of(&url, &table, v).await?,
                    None => Offsets::new(),
                };
                Ok((self.delta_provider(&table).await?, version, coverage))
            }
            None => Ok((empty(&view.state_schema)?, None, Offsets::new())),
        }
    }

    async fn coverage_of(&self, url: &Url, table: &DeltaTable, version: u64) -> Result<Offsets> {
        if let Some(c) = self
            .coverage
            .lock()
            .expect("coverage lock")
            .get(&(url.clone(), version))
        {
            return Ok(c.clone());
        }
        // The newest version carrying a Strata record (every publication does).
        let commit = Lake::latest_view_version(table)
            .await?
            .map(|v| v.commit.offsets)
            .unwrap_or_default();
        self.coverage
            .lock()
            .expect("coverage lock")
            .insert((url.clone(), version), commit.clone());
        Ok(commit)
    }

    /// A view: `finalize(merge(batch states, speed states beyond the batch coverage))`.
    async fn view_table(&self, view: &ServedView) -> Result<Arc<dyn TableProvider>> {
        let mut attempt = 0;
        loop {
            let (batch, _, coverage) = self.view_states(view).await?;
            let mut speed = Vec::new();
            let mut stale = None;
            for s in &self.speed {
                match s.states(&view.plan.name, &coverage).await {
                    Ok(b) => speed.extend(b),
                    Err(Error::Stale(m)) => {
                        stale = Some(m);
                        break;
                    }
                    Err(e) => {
                        return Err(Error::Lake {
                            context: format!("speed layer {} (recent events would be missing)", s.name()),
                            source: Box::new(e),
                        });
                    }
                }
            }
            if let Some(m) = stale {
                // A newer batch version covers what the speed layer dropped: plan on it.
                attempt += 1;
                if attempt >= 5 {
                    return Err(Error::Stale(m));
                }
                continue;
            }
            let ctx = &self.scratch.0;
            let schema = batch.schema();
            let states = if self.speed.is_empty() {
                batch
            } else {
                let speed = speed
                    .iter()
                    .map(|b| Ok(crate::service::cast_to(b, &schema)?))
                    .collect::<Result<Vec<_>>>()?;
                let speed = Arc::new(MemTable::try_new(schema.clone(), vec![speed])?);
                ctx.read_table(batch)?.union(ctx.read_table(speed)?)?.into_view()
            };
            // The merge SQL names its input: a name of this call's own in the shared scratch
            // session, dropped once planned (the plan holds the table itself).
            let name = format!("__states_{}", self.scratch_names.fetch_add(1, Ordering::Relaxed));
            ctx.register_table(name.as_str(), states)?;
            let df = ctx.sql(&view.plan.merge_sql(&name)).await;
            ctx.deregister_table(name.as_str())?;
            return Ok(df?.into_view());
        }
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
            Arc::new(StringArray::from_iter_values(v.iter().map(|v| v.plan.fingerprint()))),
            Arc::new(StringArray::from_iter_values(v.iter().map(|v| v.plan.sql.as_str()))),
        ];
        table_of(schema, columns)
    }

    /// The speed layers' positions, memory and lateness.
    async fn system_speed(&self, table: &str) -> Result<Arc<dyn TableProvider>> {
        let mut statuses = Vec::new();
        for s in &self.speed {
            statuses.push(s.status().await?);
        }
        match table {
            SYSTEM_PARTITIONS => {
                let rows: Vec<(&str, &PartitionStatus)> = statuses
                    .iter()
                    .flat_map(|s| s.partitions.iter().map(move |p| (s.instance.as_str(), p)))
                    .collect();
                table_of(
                    system_partitions_schema(),
                    vec![
                        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.source.as_str()))),
                        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.topic.as_str()))),
                        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.1.partition))),
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1.consumed))),
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1.archived))),
                        Arc::new(Int64Array::from(
                            rows.iter().map(|r| r.1.high_watermark).collect::<Vec<_>>(),
                        )),
                        Arc::new(Int64Array::from(
                            rows.iter()
                                .map(|r| r.1.high_watermark.map(|h| (h - r.1.consumed).max(0)))
                                .collect::<Vec<_>>(),
                        )),
                        Arc::new(
                            TimestampMicrosecondArray::from(
                                rows.iter().map(|r| r.1.max_event_time).collect::<Vec<_>>(),
                            )
                            .with_timezone(TIMESTAMP_TZ),
                        ),
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1.events as i64))),
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1.rejected as i64))),
                        Arc::new(Int64Array::from_iter_values(
                            rows.iter().map(|r| r.1.late_events as i64),
                        )),
                    ],
                )
            }
            SYSTEM_LATENESS => {
                let rows: Vec<(&str, &strata_core::speed::LatenessBucket)> = statuses
                    .iter()
                    .flat_map(|s| s.lateness.iter().map(move |l| (s.instance.as_str(), l)))
                    .collect();
                table_of(
                    system_lateness_schema(),
                    vec![
                        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.source.as_str()))),
                        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.le.as_str()))),
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1.events as i64))),
                    ],
                )
            }
            _ => {
                let mut rows = Vec::new();
                for view in &self.views {
                    let url = self.lake.view_url(&view.plan.name);
                    let (version, ran_at, coverage) = match self.latest(&url).await? {
                        Some(t) => match Lake::latest_view_version(&t).await? {
                            Some(v) => (Some(v.version as i64), Some(v.commit.started_at), v.commit.offsets),
                            None => (None, None, Offsets::new()),
                        },
                        None => (None, None, Offsets::new()),
                    };
                    let mut position = Offsets::new();
                    let (mut generations, mut states, mut bytes, mut late) = (0, 0, 0, 0);
                    let mut max_event_time: Option<i64> = None;
                    for s in &statuses {
                        for p in s.partitions.iter().filter(|p| p.source == view.plan.source) {
                            position.insert(strata_core::speed::partition_key(&p.topic, p.partition), p.consumed);
                            max_event_time = max_event_time.max(p.max_event_time);
                            late += p.late_events;
                        }
                        for v in s.views.iter().filter(|v| v.view == view.plan.name) {
                            generations += v.generations;
                            states += v.state_rows;
                            bytes += v.state_bytes;
                        }
                    }
                    rows.push((
                        view.plan.name.clone(),
                        version,
                        ran_at,
                        coverage,
                        position,
                        generations,
                        states,
                        bytes,
                        max_event_time,
                        late,
                    ));
                }
                table_of(
                    system_freshness_schema(),
                    vec![
                        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str()))),
                        Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                        Arc::new(
                            TimestampMicrosecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())
                                .with_timezone(TIMESTAMP_TZ),
                        ),
                        Arc::new(StringArray::from_iter_values(
                            rows.iter().map(|r| serde_json::to_string(&r.3).unwrap_or_default()),
                        )),
                        Arc::new(StringArray::from_iter_values(
                            rows.iter().map(|r| serde_json::to_string(&r.4).unwrap_or_default()),
                        )),
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.5 as i64))),
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.6 as i64))),
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.7 as i64))),
                        Arc::new(Float64Array::from(
                            rows.iter()
                                .map(|r| (r.6 > 0).then(|| r.7 as f64 / r.6 as f64))
                                .collect::<Vec<_>>(),
                        )),
                        Arc::new(
                            TimestampMicrosecondArray::from(rows.iter().map(|r| r.8).collect::<Vec<_>>())
                                .with_timezone(TIMESTAMP_TZ),
                        ),
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.9 as i64))),
                    ],
                )
            }
        }
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
        Field::new("instance", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("consumed_offset", DataType::Int64, false),
        Field::new("archived_offset", DataType::Int64, false),
        Field::new("high_watermark", DataType::Int64, true),
        Field::new("lag", DataType::Int64, true),
        Field::new("max_event_time", timestamp_type(), true),
        Field::new("events", DataType::Int64, false),
        Field::new("rejected", DataType::Int64, false),
        Field::new("late_events", DataType::Int64, false),
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
    ]))
}

fn system_lateness_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("instance", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
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
