//! The lake: Delta Lake tables on a local directory, S3 or HDFS.
//!
//! ```text
//! <lake>/raw/<source>/        every valid event: Parquet, Hive partitions event_date=YYYY-MM-DD,
//!                             a Delta log whose commits carry the position of what they hold
//!                             (txn actions: kafka:<topic>/<partition> -> next offset,
//!                             import:<file>@<size>:<mtime> -> next line)
//! <lake>/rejected/<source>/   every record that could not be used, with its raw bytes and why
//! <lake>/views/<view>/        partial states of a view, replaced atomically by each batch run;
//!                             the commit says what the states cover ([`ViewCommit`])
//! <lake>/_strata/             Strata's own objects (the batch layer's lease)
//! ```
//!
//! Spark, DuckDB and Trino read the tables as they are (Delta, or plain Parquet with Hive
//! partitions).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::{Action, StructType};
use deltalake::logstore::get_actions;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::LakeConfig;
use crate::error::{Error, Result};
use crate::speed::{Offsets, TopicPartition};

/// The key under which Strata records what a commit means, in the commit's `commitInfo`.
pub const COMMIT_INFO_KEY: &str = "strata";

/// A lake location: the parsed form of `lake.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeUrl(Url);

impl LakeUrl {
    /// Accepts `file://`, `s3://`, `s3a://`, `hdfs://`, `viewfs://`, `memory://`, or a plain
    /// path (relative paths are taken from `base`).
    pub fn parse(text: &str, base: &Path) -> std::result::Result<Self, String> {
        let text = text.trim();
        let url = match Url::parse(text) {
            Ok(url) if url.scheme().len() > 1 => url,
            // No scheme (or a Windows drive letter): a local path.
            _ => {
                let path = Path::new(text);
                let path = if path.is_absolute() {
                    path.to_path_buf()
                } else {
                    base.join(path)
                };
                let path = if path.is_absolute() {
                    path
                } else {
                    std::env::current_dir()
                        .map_err(|e| format!("cannot resolve `{text}`: {e}"))?
                        .join(path)
                };
                let path = normalize_path(&path);
                Url::from_directory_path(&path).map_err(|()| format!("`{text}` is not a usable local path"))?
            }
        };
        match url.scheme() {
            "file" | "s3" | "s3a" | "hdfs" | "viewfs" | "memory" => {}
            other => {
                return Err(format!(
                    "unsupported scheme `{other}://`: expected file:///path, s3://bucket/prefix, hdfs://host:port/path or a local path"
                ));
            }
        }
        if matches!(url.scheme(), "s3" | "s3a") && url.host_str().is_none_or(str::is_empty) {
            return Err(format!("`{text}` has no bucket: expected s3://bucket/prefix"));
        }
        let mut url = url;
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        Ok(LakeUrl(url))
    }

    pub fn url(&self) -> &Url {
        &self.0
    }

    pub fn is_local(&self) -> bool {
        self.0.scheme() == "file"
    }

    /// A location under the lake root, as a directory URL.
    pub fn join(&self, parts: &[&str]) -> Url {
        let mut url = self.0.clone();
        let path = format!("{}{}/", url.path(), parts.join("/"));
        url.set_path(&path);
        url
    }
}

fn normalize_path(path: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// What a view table's commit covers: written by the batch layer with each published
/// version, read by the serving layer to merge exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ViewCommit {
    /// The view definition the states were computed with ([`crate::view::ViewPlan::fingerprint`]).
    pub fingerprint: String,
    /// The raw table version the states were computed from. A partial (range) recompute
    /// keeps the version of the states it patches: outside its range they reflect that one.
    pub raw_version: u64,
    /// Kafka positions covered: per partition, the next offset (events below it are in the
    /// states). Stored as `{"topic/partition": offset}`.
    #[serde(default)]
    pub offsets: Offsets,
    /// For a partial recompute, the window-start range `[from, to)` in microseconds.
    pub range: Option<(i64, i64)>,
    /// When the run started (microseconds since the epoch).
    pub started_at: i64,
    pub duration_ms: u64,
    /// Raw events read and state rows written.
    pub events: u64,
    pub rows: u64,
}

/// One published version of a view, as recorded in its table's log.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewVersion {
    pub version: u64,
    pub commit: ViewCommit,
}

/// Access to the lake's tables.
#[derive(Debug, Clone)]
pub struct Lake {
    root: LakeUrl,
    options: HashMap<String, String>,
}

impl Lake {
    /// The lake of `config`, at the root parsed when the configuration was loaded.
    pub fn new(config: &LakeConfig) -> Result<Self> {
        register_object_stores();
        let root = config.root()?.clone();
        let mut options: HashMap<String, String> = config.options.clone().into_iter().collect();
        let s3 = &config.s3;
        let mut set = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                options.insert(k.to_string(), v.clone());
            }
        };
        set("AWS_ENDPOINT_URL", &s3.endpoint);
        set("AWS_REGION", &s3.region);
        set("AWS_ACCESS_KEY_ID", &s3.access_key_id);
        set("AWS_SECRET_ACCESS_KEY", &s3.secret_access_key);
        // An endpoint configured as http:// (a local S3 server) is allowed as such.
        if s3.endpoint.as_deref().is_some_and(|e| e.starts_with("http://")) {
            options.insert("AWS_ALLOW_HTTP".into(), "true".into());
        }
        Ok(Lake { root, options })
    }

    pub fn root(&self) -> &LakeUrl {
        &self.root
    }

    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.options
    }

    pub fn raw_url(&self, source: &str) -> Url {
        self.root.join(&["raw", source])
    }

    pub fn rejected_url(&self, source: &str) -> Url {
        self.root.join(&["rejected", source])
    }

    pub fn view_url(&self, view: &str) -> Url {
        self.root.join(&["views", view])
    }

    /// An object store rooted at `<lake>/_strata/`.
    pub fn strata_store(&self) -> Result<Arc<dyn ObjectStore>> {
        let url = self.root.join(&["_strata"]);
        self.ensure_local_dir(&url)?;
        deltalake::logstore::store_for(&url, self.options.clone()).map_err(|e| Error::lake(format!("open {url}"), e))
    }

    /// The lake's object store at the root of its URL's authority (`hdfs://host:port/`,
    /// `s3://bucket/`), and the URL a DataFusion runtime registers it under, for engines that
    /// read the lake's files by URL (Ballista's executors); `None` for a local lake, whose
    /// files DataFusion reads itself.
    pub fn authority_store(&self) -> Result<Option<(Url, Arc<dyn ObjectStore>)>> {
        if self.root.is_local() {
            return Ok(None);
        }
        let mut url = self.root.url().clone();
        url.set_path("/");
        url.set_query(None);
        url.set_fragment(None);
        let store = deltalake::logstore::store_for(&url, self.options.clone())
            .map_err(|e| Error::lake(format!("open {}", redact(&url)), e))?;
        Ok(Some((url, store)))
    }

    fn ensure_local_dir(&self, url: &Url) -> Result<()> {
        if url.scheme() == "file" {
            let path = url
                .to_file_path()
                .map_err(|()| Error::Input(format!("`{url}` is not a local path")))?;
            std::fs::create_dir_all(&path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Opens a table; `None` when nothing has been written there yet.
    pub async fn open(&self, url: &Url) -> Result<Option<DeltaTable>> {
        if url.scheme() == "file" {
            let path = url
                .to_file_path()
                .map_err(|()| Error::Input(format!("`{url}` is not a local path")))?;
            if !path.join("_delta_log").exists() {
                return Ok(None);
            }
        }
        let table = DeltaTable::try_from_url_with_storage_options(url.clone(), self.options.clone())
            .await
            .map_err(|e| Error::lake(format!("open {}", redact(url)), e))?;
        Ok(table.version().is_some().then_some(table))
    }

    /// Opens a table, creating it with `schema` when it does not exist yet.
    pub async fn open_or_create(
        &self,
        url: &Url,
        schema: &SchemaRef,
        partition_columns: &[&str],
        name: &str,
    ) -> Result<DeltaTable> {
        if let Some(table) = self.open(url).await? {
            return Ok(table);
        }
        self.ensure_local_dir(url)?;
        // Not loaded: we know there is no table there yet (a load would log an error).
        let table = deltalake::DeltaTableBuilder::from_url(url.clone())
            .and_then(|b| b.with_storage_options(self.options.clone()).build())
            .map_err(|e| Error::lake(format!("open {}", redact(url)), e))?;
        let kernel: StructType = schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| Error::Internal(format!("schema of {name} is not a Delta schema: {e}")))?;
        let created = table
            .create()
            .with_columns(kernel.fields().cloned())
            .with_partition_columns(partition_columns.iter().copied())
            .with_table_name(name)
            .with_save_mode(SaveMode::Ignore)
            .await;
        match created {
            Ok(table) => Ok(table),
            // Another process created it at the same moment: use theirs.
            Err(DeltaTableError::VersionAlreadyExists(_)) => self
                .open(url)
                .await?
                .ok_or_else(|| Error::Internal(format!("table {} vanished after creation", redact(url)))),
            Err(e) => Err(Error::lake(format!("create table {name} at {}", redact(url)), e)),
        }
    }

    /// The Strata commit record of one version of a table, if it has one.
    pub async fn commit_info<T: for<'de> Deserialize<'de>>(table: &DeltaTable, version: u64) -> Result<Option<T>> {
        let log_store = table.log_store();
        let Some(bytes) = log_store
            .read_commit_entry(version)
            .await
            .map_err(|e| Error::lake(format!("read commit {version}"), e))?
        else {
            return Ok(None);
        };
        let actions = get_actions(version, &bytes).map_err(|e| Error::lake(format!("parse commit {version}"), e))?;
        for action in actions {
            if let Action::CommitInfo(ci) = action
                && let Some(value) = ci.info.get(COMMIT_INFO_KEY)
            {
                let parsed = serde_json::from_value(value.clone())
                    .map_err(|e| Error::lake(format!("Strata record of commit {version}"), e))?;
                return Ok(Some(parsed));
            }
        }
        Ok(None)
    }

    /// The published versions of a view, newest first (at most `limit`).
    pub async fn view_versions(table: &DeltaTable, limit: usize) -> Result<Vec<ViewVersion>> {
        let Some(latest) = table.version() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for version in (0..=latest).rev() {
            if out.len() >= limit {
                break;
            }
            if let Some(commit) = Self::commit_info::<ViewCommit>(table, version).await? {
                out.push(ViewVersion { version, commit });
            }
        }
        Ok(out)
    }

    /// The newest published version of a view.
    pub async fn latest_view_version(table: &DeltaTable) -> Result<Option<ViewVersion>> {
        Ok(Self::view_versions(table, 1).await?.into_iter().next())
    }
}

/// The application transactions (`txn` actions) of a table as of `version`: app id -> the
/// latest version recorded for it. Reads the newest checkpoint at or before `version` and
/// the commits after it, once (the library only looks ids up one at a time, each a replay).
pub async fn app_transactions(table: &DeltaTable, version: u64) -> Result<BTreeMap<String, i64>> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt as _;
    use object_store::path::Path as StorePath;

    let store = table.log_store().object_store(None);
    let log = StorePath::from("_delta_log");
    let mut checkpoint: Option<(u64, Vec<StorePath>)> = None;
    let listed: Vec<object_store::ObjectMeta> = store
        .list(Some(&log))
        .try_collect()
        .await
        .map_err(|e| Error::lake("list the Delta log", e))?;
    for meta in listed {
        let name = meta.location.filename().unwrap_or_default();
        let Some((v, rest)) = name.split_once('.') else {
            continue;
        };
        let Ok(v) = v.parse::<u64>() else { continue };
        if v > version || !rest.starts_with("checkpoint") || !rest.ends_with("parquet") {
            continue;
        }
        match &mut checkpoint {
            Some((c, parts)) if *c == v => parts.push(meta.location),
            Some((c, _)) if *c > v => {}
            _ => checkpoint = Some((v, vec![meta.location])),
        }
    }
    let mut txns = BTreeMap::new();
    let first_commit = match &checkpoint {
        Some((c, parts)) => {
            for part in parts {
                let bytes = store
                    .get(part)
                    .await
                    .map_err(|e| Error::lake(format!("read checkpoint {part}"), e))?
                    .bytes()
                    .await
                    .map_err(|e| Error::lake(format!("read checkpoint {part}"), e))?;
                read_checkpoint_txns(bytes, &mut txns)
                    .map_err(|e| Error::lake(format!("read checkpoint {part}"), e))?;
            }
            c + 1
        }
        None => 0,
    };
    let log_store = table.log_store();
    for v in first_commit..=version {
        let Some(bytes) = log_store
            .read_commit_entry(v)
            .await
            .map_err(|e| Error::lake(format!("read commit {v}"), e))?
        else {
            continue;
        };
        for action in get_actions(v, &bytes).map_err(|e| Error::lake(format!("parse commit {v}"), e))? {
            if let Action::Txn(t) = action {
                txns.insert(t.app_id, t.version);
            }
        }
    }
    Ok(txns)
}

fn read_checkpoint_txns(
    bytes: bytes::Bytes,
    txns: &mut BTreeMap<String, i64>,
) -> std::result::Result<(), parquet::errors::ParquetError> {
    use arrow::array::{Array, AsArray};
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let Some(index) = builder.schema().fields().iter().position(|f| f.name() == "txn") else {
        return Ok(());
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    for batch in builder.with_projection(mask).build()? {
        let batch = batch?;
        let txn = batch.column(0).as_struct();
        let (Some(app), Some(ver)) = (txn.column_by_name("appId"), txn.column_by_name("version")) else {
            continue;
        };
        let app = arrow::compute::cast(app, &arrow::datatypes::DataType::Utf8)?;
        let app = app.as_string::<i32>();
        let ver = arrow::compute::cast(ver, &arrow::datatypes::DataType::Int64)?;
        let ver = ver.as_primitive::<arrow::datatypes::Int64Type>();
        for row in 0..batch.num_rows() {
            if txn.is_valid(row) && app.is_valid(row) && ver.is_valid(row) {
                txns.insert(app.value(row).to_string(), ver.value(row));
            }
        }
    }
    Ok(())
}

/// The `txn` actions of each commit after `after` (exclusive) up to `until` (inclusive), in
/// commit order; commits without any are left out. `None` if some of those commits are no
/// longer in the log (cleaned up).
pub async fn txn_history(
    table: &DeltaTable,
    after: Option<u64>,
    until: u64,
) -> Result<Option<Vec<(u64, BTreeMap<String, i64>)>>> {
    let log_store = table.log_store();
    let mut out = Vec::new();
    let first = after.map_or(0, |a| a + 1);
    for v in first..=until {
        let Some(bytes) = log_store
            .read_commit_entry(v)
            .await
            .map_err(|e| Error::lake(format!("read commit {v}"), e))?
        else {
            return Ok(None);
        };
        let mut txns = BTreeMap::new();
        for action in get_actions(v, &bytes).map_err(|e| Error::lake(format!("parse commit {v}"), e))? {
            if let Action::Txn(t) = action {
                txns.insert(t.app_id, t.version);
            }
        }
        if !txns.is_empty() {
            out.push((v, txns));
        }
    }
    Ok(Some(out))
}

/// The app id under which the archive records the next offset of a Kafka partition.
pub fn kafka_app_id(partition: &TopicPartition) -> String {
    format!("kafka:{partition}")
}

/// The app id under which the raw table records a Kafka partition's owner generation: each
/// speed process that starts owning the partition raises it by one in a commit of its own
/// (a claim), and archives the partition only while the table still holds its generation.
pub fn owner_app_id(partition: &TopicPartition) -> String {
    format!("owner:{partition}")
}

/// A table's application transactions (`txn` actions: app id -> version) as of a version,
/// kept up to date by reading only the commits after the one it was read at.
#[derive(Debug, Clone, Default)]
pub struct AppTransactions {
    version: Option<u64>,
    txns: BTreeMap<String, i64>,
}

impl AppTransactions {
    /// Brings the positions to `table`'s loaded version (the commit's own snapshot when the
    /// table was just updated).
    pub async fn refresh(&mut self, table: &DeltaTable) -> Result<()> {
        let Some(version) = table.version() else {
            *self = AppTransactions::default();
            return Ok(());
        };
        match self.version {
            Some(v) if v == version => return Ok(()),
            Some(v) if v < version => {
                if let Some(history) = txn_history(table, Some(v), version).await? {
                    for (_, txns) in history {
                        self.txns.extend(txns);
                    }
                    self.version = Some(version);
                    return Ok(());
                }
            }
            _ => {}
        }
        // First read, an older version, or commits cleaned up from the log: read it whole.
        self.txns = app_transactions(table, version).await?;
        self.version = Some(version);
        Ok(())
    }

    /// The version these transactions are of.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    pub fn get(&self, app_id: &str) -> Option<i64> {
        self.txns.get(app_id).copied()
    }

    pub fn all(&self) -> &BTreeMap<String, i64> {
        &self.txns
    }
}

/// Whether `table` has a version after the one it holds: whether the next commit's file is in
/// its log. One look at one file, where updating the table lists its log and builds a new
/// snapshot even when nothing was committed. Commits are numbered without gaps and a commit's
/// file appears whole, so a missing next file means no newer version, unless the log was
/// cleaned up past it: a caller updates in full now and then.
pub async fn has_newer_version(table: &DeltaTable) -> Result<bool> {
    use object_store::ObjectStoreExt as _;
    let Some(version) = table.version() else {
        return Ok(true);
    };
    let next = deltalake::logstore::commit_uri_from_version(Some(version + 1));
    match table.log_store().object_store(None).head(&next).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(Error::lake(
            format!("look for version {} of {}", version + 1, redact(table.table_url())),
            e,
        )),
    }
}

/// Kafka coverage from app transactions: per partition, the next offset. App ids of other
/// writers (not `kafka:topic/partition`) are not positions, and are left out.
pub fn kafka_offsets(txns: &BTreeMap<String, i64>) -> Offsets {
    txns.iter()
        .filter_map(|(app, v)| Some((app.strip_prefix("kafka:")?.parse().ok()?, *v)))
        .collect()
}

/// Parquet settings of every file Strata writes: zstd level 1 (fast to write, compact).
pub fn writer_properties() -> parquet::file::properties::WriterProperties {
    writer_properties_builder().build()
}

/// Parquet settings of a raw table's files (of `source`): those of every file, without a
/// dictionary for the event time and the Kafka offset. Their values are mostly distinct (an
/// offset's always are), so a dictionary of them is as large as the values it replaces, and
/// building it interns every value: in the speed layer's archive, that was about 15% of its
/// thread's time.
pub fn raw_writer_properties(source: &crate::schema::SourceSchema) -> parquet::file::properties::WriterProperties {
    [
        source.raw.field(source.event_time).name().as_str(),
        crate::schema::OFFSET,
    ]
    .into_iter()
    .fold(writer_properties_builder(), |props, column| {
        props.set_column_dictionary_enabled(column.into(), false)
    })
    .build()
}

fn writer_properties_builder() -> parquet::file::properties::WriterPropertiesBuilder {
    use parquet::basic::{Compression, ZstdLevel};
    parquet::file::properties::WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
}

/// The data page size of a view table's sketch columns.
const SKETCH_PAGE_BYTES: usize = 64 * 1024;

/// Parquet settings of a view table's files (of `schema`): those of every file, and for the
/// sketches' bytes no dictionary and small pages. Every sketch differs, so their dictionary
/// only grew to its limit (1 MiB) before the writer gave it up, and a query reading one page
/// of such a column read and decompressed it first. A query of one group over a few hours
/// selects a few consecutive rows (the batch layer publishes a group's windows together);
/// it decompresses the sketch pages that hold them, 64 KiB instead of up to 1 MiB each.
pub fn view_writer_properties(schema: &arrow::datatypes::Schema) -> parquet::file::properties::WriterProperties {
    use arrow::datatypes::DataType;
    schema
        .fields()
        .iter()
        .filter(|f| {
            matches!(
                f.data_type(),
                DataType::Binary | DataType::LargeBinary | DataType::BinaryView
            )
        })
        .fold(writer_properties_builder(), |props, f| {
            props
                .set_column_dictionary_enabled(f.name().as_str().into(), false)
                .set_column_data_page_size_limit(f.name().as_str().into(), SKETCH_PAGE_BYTES)
        })
        .build()
}

/// Appends batches to a table in one commit that also records `txns` (the position of what
/// it holds) and Strata's `info`. The commit is made even without rows: positions advance
/// when every record of a range was rejected. Returns the committed version.
pub async fn append(
    table: &mut DeltaTable,
    batches: Vec<arrow::array::RecordBatch>,
    txns: Vec<deltalake::kernel::Transaction>,
    info: serde_json::Value,
) -> Result<u64> {
    append_with(table, batches, txns, info, writer_properties()).await
}

/// [`append`], the files written with `properties`.
pub async fn append_with(
    table: &mut DeltaTable,
    batches: Vec<arrow::array::RecordBatch>,
    txns: Vec<deltalake::kernel::Transaction>,
    info: serde_json::Value,
    properties: parquet::file::properties::WriterProperties,
) -> Result<u64> {
    use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
    use deltalake::protocol::DeltaOperation;
    use deltalake::writer::{DeltaWriter as _, RecordBatchWriter};

    let partition_by = table
        .snapshot()
        .map_err(|e| Error::lake("read the table state", e))?
        .metadata()
        .partition_columns()
        .to_vec();
    let mut writer = RecordBatchWriter::for_table(table)
        .map_err(|e| Error::lake("open a writer", e))?
        .with_writer_properties(properties);
    for batch in batches {
        if batch.num_rows() == 0 {
            continue;
        }
        // A batch of one partition (the common case: one day's events) goes straight to
        // its file; the writer would hash and copy every row to split it. Only a batch of
        // the table's very schema: the writer casts and checks any other one first.
        let one = if batch.schema() == writer.arrow_schema() {
            one_partition(&batch, &partition_by)
        } else {
            None
        };
        let written = match one {
            Some(values) => writer
                .write_partition(batch, &values, deltalake::writer::WriteMode::Default)
                .await
                .map(drop),
            None => writer.write(batch).await,
        };
        written.map_err(|e| Error::lake("write a data file", e))?;
    }
    let adds = writer.flush().await.map_err(|e| Error::lake("write a data file", e))?;
    let snapshot = table.snapshot().map_err(|e| Error::lake("read the table state", e))?;
    let properties = CommitProperties::default()
        .with_application_transactions(txns)
        .with_metadata([(COMMIT_INFO_KEY.to_string(), info)]);
    let committed = CommitBuilder::from(properties)
        .with_actions(adds.into_iter().map(Action::Add).collect())
        .build(
            Some(snapshot as &dyn TableReference),
            table.log_store(),
            DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: (!partition_by.is_empty()).then_some(partition_by),
                predicate: None,
            },
        )
        .await
        .map_err(commit_error)?;
    let version = committed.version();
    if committed.metrics.new_checkpoint_created {
        // The commit's state was read before its checkpoint was written: reloaded, the
        // table starts from the checkpoint, and later commits replay the log from there.
        table
            .update_incremental(Some(version))
            .await
            .map_err(|e| Error::lake("reload the table", e))?;
    } else {
        // The commit brought its own state to its version already: reloading it would
        // replay the log a second time.
        table.state = Some(committed.snapshot);
    }
    Ok(version)
}

/// The values of the partition columns `partition_by` when every row of `batch` has the
/// same ones (NULL included), as the Delta writer reads a row's; `None` when the rows
/// differ, when the table has no partition columns, or when a column is missing from the
/// batch or cannot be compared (the writer's own split then takes the batch, or names the
/// error).
fn one_partition<S: deltalake::kernel::scalars::ScalarExt>(
    batch: &arrow::array::RecordBatch,
    partition_by: &[String],
) -> Option<indexmap::IndexMap<String, S>> {
    use arrow::array::{Array, Scalar};
    if partition_by.is_empty() || batch.num_rows() == 0 {
        return None;
    }
    let mut values = indexmap::IndexMap::with_capacity(partition_by.len());
    for name in partition_by {
        let column = batch.column_by_name(name)?;
        let first = Scalar::new(column.slice(0, 1));
        let same = arrow::compute::kernels::cmp::not_distinct(column, &first).ok()?;
        if same.true_count() != column.len() {
            return None;
        }
        values.insert(name.clone(), S::from_array(column.as_ref(), 0)?);
    }
    Some(values)
}

/// A failed commit: a conflict with another writer's commit (to decide anew on a fresh
/// snapshot), or a failure of the lake.
pub fn commit_error(e: DeltaTableError) -> Error {
    use deltalake::kernel::transaction::TransactionError;
    match e {
        DeltaTableError::VersionAlreadyExists(v) => {
            Error::Conflict(format!("version {v} was written by another commit"))
        }
        DeltaTableError::Transaction {
            source: source @ (TransactionError::CommitConflict(_) | TransactionError::MaxCommitAttempts(_)),
        } => Error::Conflict(source.to_string()),
        e => Error::lake("commit to the lake", e),
    }
}

/// Registers the S3 and HDFS object stores with the Delta library (idempotent).
pub fn register_object_stores() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        deltalake::aws::register_handlers(None);
        deltalake::hdfs::register_handlers(None);
    });
}

/// A URL without credentials, for messages.
pub fn redact(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_password(None);
    let _ = url.set_username("");
    url.to_string()
}

/// Registers `table`'s object store in `ctx`'s runtime, under the name its scans use.
fn register_store(ctx: &datafusion::prelude::SessionContext, table: &DeltaTable) -> Result<()> {
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| Error::lake("register the lake's store", e))
}

/// A DataFusion provider of `table` for queries in `ctx` (whose runtime learns the table's
/// object store).
pub async fn table_provider(
    ctx: &datafusion::prelude::SessionContext,
    table: &DeltaTable,
) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
    register_store(ctx, table)?;
    let delta = table
        .table_provider()
        .with_session(Arc::new(ctx.state()))
        .await
        .map_err(|e| Error::lake("read a table", e))?;
    Ok(Arc::new(LimitKept(delta)))
}

/// Puts the Parquet metadata of every data file of `table`, page index included, in the file
/// metadata cache of `ctx`'s runtime, where its scans look for it (the Delta scan's and those
/// of [`parquet_provider`]).
///
/// DataFusion's Parquet scan asks the cache for a file's footer without its page index, and
/// on a miss caches the footer alone; it then reads the page index from the file on every
/// scan that prunes pages by it (an extra ranged read per file and scan partition, on S3 a
/// request each). Cached with the index, the footer serves every later scan whole. The
/// entries are keyed as the Delta scan keys its files (the path in the file's store, its size
/// from the log, no modification time); a file the cache already holds with its page index
/// is not read again.
pub async fn cache_page_indexes(ctx: &datafusion::prelude::SessionContext, table: &DeltaTable) -> Result<()> {
    use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
    use futures::{StreamExt, TryStreamExt};
    use parquet::file::metadata::PageIndexPolicy;
    // The table's store may not be in the runtime yet (a query registers it when it first
    // makes the table's provider): on S3 or HDFS the footers could not be read.
    register_store(ctx, table)?;
    let runtime = ctx.runtime_env();
    let cache = runtime.cache_manager.get_file_metadata_cache();
    let root = table.table_url();
    let snapshot = table
        .snapshot()
        .map_err(|e| Error::lake(format!("list the files of {}", redact(root)), e))?;
    // (path, size) of each file, collected first: the log's iterator is not Send.
    let files: Vec<(String, u64)> = snapshot
        .log_data()
        .into_iter()
        .map(|f| (f.path().into_owned(), f.size() as u64))
        .collect();
    let fetches = files.into_iter().map(|(path, size)| {
        let cache = cache.clone();
        let runtime = runtime.clone();
        async move {
            let (store, meta) = file_meta(root, &path, size)?;
            let store = runtime.object_store(store)?;
            DFParquetMetadata::new(&store, &meta)
                .with_file_metadata_cache(Some(cache))
                .with_page_index_policy(Some(PageIndexPolicy::Optional))
                .fetch_metadata()
                .await?;
            Ok::<_, Error>(())
        }
    });
    // A few files at a time: on an object store each is a request or two.
    futures::stream::iter(fetches)
        .buffer_unordered(PAGE_INDEX_FETCHES)
        .try_collect::<()>()
        .await
}

/// The store of a file of the table at `root` (`path` as its log gives it) and the object
/// in it, keyed as the Delta scan keys its files: the path in the store, the size from the
/// log, no modification time.
fn file_meta(
    root: &Url,
    path: &str,
    size: u64,
) -> Result<(
    datafusion::execution::object_store::ObjectStoreUrl,
    object_store::ObjectMeta,
)> {
    use deltalake::delta_datafusion::engine::AsObjectStoreUrl;
    let url = Url::parse(path)
        .or_else(|_| root.join(path))
        .map_err(|e| Error::Internal(format!("the path {path} of a file of {}: {e}", redact(root))))?;
    let location = object_store::path::Path::from_url_path(url.path())
        .map_err(|e| Error::Internal(format!("the path of {}: {e}", redact(&url))))?;
    let meta = object_store::ObjectMeta {
        location,
        size,
        last_modified: chrono::DateTime::UNIX_EPOCH,
        e_tag: None,
        version: None,
    };
    Ok((url.as_object_store_url(), meta))
}

/// How many files' footers [`cache_page_indexes`] reads at once.
const PAGE_INDEX_FETCHES: usize = 16;

/// A Delta table's provider whose scans keep their `LIMIT`. The Delta scan of a query that
/// reads only partition columns (`SELECT event_date FROM raw.x LIMIT 3`) answers from the
/// log, ignores the limit it is given, and yet says limits may be pushed through it, so
/// DataFusion's physical limit pushdown drops the query's limit and every row comes back.
/// Such a scan is capped here, where the limit is known.
#[derive(Debug)]
struct LimitKept(Arc<dyn datafusion::catalog::TableProvider>);

#[async_trait::async_trait]
impl datafusion::catalog::TableProvider for LimitKept {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> datafusion::datasource::TableType {
        self.0.table_type()
    }

    fn constraints(&self) -> Option<&datafusion::common::Constraints> {
        self.0.constraints()
    }

    fn statistics(&self) -> Option<datafusion::common::Statistics> {
        self.0.statistics()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&datafusion::prelude::Expr],
    ) -> datafusion::error::Result<Vec<datafusion::logical_expr::TableProviderFilterPushDown>> {
        self.0.supports_filters_pushdown(filters)
    }

    async fn insert_into(
        &self,
        session: &dyn datafusion::catalog::Session,
        input: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        op: datafusion::logical_expr::dml::InsertOp,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        self.0.insert_into(session, input, op).await
    }

    async fn scan(
        &self,
        session: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[datafusion::prelude::Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        let plan = self.0.scan(session, projection, filters, limit).await?;
        match limit {
            Some(fetch) if plan.children().is_empty() && plan.supports_limit_pushdown() && plan.fetch().is_none() => {
                // A leaf that lets limits through to children it does not have: cap it.
                Ok(Arc::new(
                    datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec::new(plan)
                        .with_fetch(Some(fetch)),
                ))
            }
            _ => Ok(plan),
        }
    }
}

/// Whether a table's configuration turns on Delta column mapping (its files then name
/// columns by physical names, which Strata's own readers and writers do not translate).
pub fn column_mapped(configuration: &HashMap<String, String>) -> bool {
    configuration
        .get("delta.columnMapping.mode")
        .is_some_and(|mode| mode != "none")
}

/// A provider of one version of a table as the Parquet files its log lists, planned without
/// the Delta kernel; `None` for a table that needs the kernel to be read (partition columns,
/// deletion vectors or column mapping: Strata's view tables have none of them).
///
/// The Delta scan replays the version's list of files through the kernel on every query (a
/// point query's largest cost in physical planning), while a version's files never change.
/// These scans read what the Delta scan of `delta` (the same version's provider) reads, with
/// its schema: the query's filters in the Parquet predicate, where they prune row groups and
/// pages and filter rows as they are read, and the files' footers from the runtime's metadata
/// cache, under the keys [`cache_page_indexes`] fills.
pub fn parquet_provider(
    table: &DeltaTable,
    delta: &Arc<dyn datafusion::catalog::TableProvider>,
) -> Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
    use deltalake::delta_datafusion::engine::AsObjectStoreUrl;
    let root = table.table_url();
    let snapshot = table
        .snapshot()
        .map_err(|e| Error::lake(format!("list the files of {}", redact(root)), e))?;
    if column_mapped(snapshot.metadata().configuration()) || !snapshot.metadata().partition_columns().is_empty() {
        return Ok(None);
    }
    let log_store = table.log_store();
    let store = log_store.root_url().as_object_store_url();
    let mut files = Vec::new();
    for file in snapshot.log_data() {
        let path = file.path();
        // A path whose decoded form would not parse back to itself is left to the kernel, as
        // is a file with deleted rows.
        if file.deletion_vector_descriptor().is_some() || path.contains(['%', '#', '?']) {
            return Ok(None);
        }
        let (file_store, meta) = file_meta(root, &path, file.size() as u64)?;
        if file_store != store {
            // Outside the table's store (a shallow clone): the Delta scan plans a scan per store.
            return Ok(None);
        }
        files.push(datafusion::datasource::listing::PartitionedFile::new_from_meta(meta));
    }
    if files.is_empty() {
        // The Delta scan answers an empty version as well.
        return Ok(None);
    }
    Ok(Some(Arc::new(ParquetVersion {
        schema: delta.schema(),
        log_store,
        store,
        files,
    })))
}

/// See [`parquet_provider`].
#[derive(Debug)]
struct ParquetVersion {
    schema: SchemaRef,
    /// Registers the lake's store in the runtime of a session that has not read the table yet.
    log_store: deltalake::logstore::LogStoreRef,
    store: datafusion::execution::object_store::ObjectStoreUrl,
    /// Keyed as [`file_meta`] keys them, as the Delta scan and [`cache_page_indexes`] do.
    files: Vec<datafusion::datasource::listing::PartitionedFile>,
}

#[async_trait::async_trait]
impl datafusion::catalog::TableProvider for ParquetVersion {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> datafusion::datasource::TableType {
        datafusion::datasource::TableType::Base
    }

    /// Every filter reaches the Parquet predicate, and is applied again above the scan: a
    /// predicate the Parquet reader cannot evaluate on a page or row group lets it through.
    fn supports_filters_pushdown(
        &self,
        filters: &[&datafusion::prelude::Expr],
    ) -> datafusion::error::Result<Vec<datafusion::logical_expr::TableProviderFilterPushDown>> {
        Ok(vec![
            datafusion::logical_expr::TableProviderFilterPushDown::Inexact;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        session: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[datafusion::prelude::Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
        use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
        let runtime = session.runtime_env();
        if runtime.object_store(&self.store).is_err() {
            runtime.register_object_store(self.store.as_ref(), self.log_store.root_object_store(None));
        }
        // The footers from the runtime's cache, where `cache_page_indexes` put them with their
        // page indexes (DataFusion's default reader reads every footer from its file).
        let reader = CachedParquetFileReaderFactory::new(
            runtime.object_store(&self.store)?,
            runtime.cache_manager.get_file_metadata_cache(),
        );
        let options = datafusion::config::TableParquetOptions {
            global: session.config_options().execution.parquet.clone(),
            ..Default::default()
        };
        let mut source = ParquetSource::new(self.schema.clone())
            .with_table_parquet_options(options)
            .with_parquet_file_reader_factory(Arc::new(reader));
        // A filter the scan cannot bind is left to the filter above it, as the Delta scan
        // does; the others still prune.
        let schema = datafusion::common::DFSchema::try_from(self.schema.as_ref().clone())?;
        let bound = filters
            .iter()
            .filter_map(|filter| session.create_physical_expr(filter.clone(), &schema).ok());
        if let Some(predicate) = datafusion::physical_expr::conjunction_opt(bound) {
            source = source.with_predicate(predicate);
        }
        // One group: the physical optimizer splits the files' byte ranges over the cores.
        let config = FileScanConfigBuilder::new(self.store.clone(), Arc::new(source))
            .with_file_group(FileGroup::new(self.files.clone()))
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(datafusion::datasource::source::DataSourceExec::from_data_source(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lake_urls() {
        let base = Path::new("/etc/strata");
        assert_eq!(
            LakeUrl::parse("lake", base).unwrap().url().as_str(),
            "file:///etc/strata/lake/"
        );
        assert_eq!(
            LakeUrl::parse("../data/lake/", base).unwrap().url().as_str(),
            "file:///etc/data/lake/"
        );
        assert_eq!(
            LakeUrl::parse("file:///var/lake", base).unwrap().url().as_str(),
            "file:///var/lake/"
        );
        let s3 = LakeUrl::parse("s3://bucket/prefix", base).unwrap();
        assert_eq!(s3.join(&["raw", "clicks"]).as_str(), "s3://bucket/prefix/raw/clicks/");
        assert!(LakeUrl::parse("hdfs://nn:8020/lake", base).is_ok());
        assert!(
            LakeUrl::parse("ftp://x/y", base)
                .unwrap_err()
                .contains("unsupported scheme `ftp://`")
        );
        assert!(
            LakeUrl::parse("s3:///nobucket", base)
                .unwrap_err()
                .contains("no bucket")
        );
    }

    /// An empty lake in a directory of its own under the system's temporary directory.
    fn scratch_lake(name: &str) -> (std::path::PathBuf, Lake) {
        let dir = std::env::temp_dir().join(format!("strata-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = LakeConfig::new(dir.to_str().unwrap(), &dir).unwrap();
        (dir, Lake::new(&config).unwrap())
    }

    /// A query that reads only a partition column is answered from the Delta log; its
    /// `LIMIT` still holds.
    #[tokio::test]
    async fn a_limit_holds_over_a_scan_of_partition_columns_only() {
        use arrow::array::{Int64Array, StringArray};
        use arrow::datatypes::{DataType, Field, Schema};

        let (dir, lake) = scratch_lake("limit-kept");
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("day", DataType::Utf8, false),
        ]));
        let url = lake.raw_url("t");
        let mut table = lake.open_or_create(&url, &schema, &["day"], "t").await.unwrap();
        let batch = arrow::array::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..10)),
                Arc::new(StringArray::from_iter_values((0..10).map(|i| format!("d{}", i % 2)))),
            ],
        )
        .unwrap();
        append(&mut table, vec![batch], vec![], serde_json::json!({}))
            .await
            .unwrap();

        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("t", table_provider(&ctx, &table).await.unwrap())
            .unwrap();
        // The case at hand: the scan answered from the log, capped here.
        let explain = ctx
            .sql("EXPLAIN SELECT day FROM t LIMIT 3")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let plan = arrow::util::pretty::pretty_format_batches(&explain)
            .unwrap()
            .to_string();
        assert!(
            plan.contains("DeltaScanMetaExec") && plan.contains("CoalescePartitionsExec: fetch=3"),
            "{plan}"
        );
        for (sql, rows) in [
            ("SELECT day FROM t LIMIT 3", 3),
            ("SELECT day FROM t LIMIT 30", 10),
            ("SELECT day FROM t OFFSET 8 LIMIT 5", 2),
            ("SELECT n, day FROM t LIMIT 3", 3),
            ("SELECT day FROM t", 10),
        ] {
            let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            let got: usize = batches.iter().map(|b| b.num_rows()).sum();
            assert_eq!(got, rows, "{sql}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A partition value as the test reads it: the row's value shown, "" for NULL.
    struct Shown(String);

    impl deltalake::kernel::scalars::ScalarExt for Shown {
        fn serialize(&self) -> String {
            self.0.clone()
        }
        fn serialize_encoded(&self) -> String {
            self.0.clone()
        }
        fn from_array(array: &dyn arrow::array::Array, index: usize) -> Option<Self> {
            arrow::util::display::array_value_to_string(array, index)
                .ok()
                .map(Shown)
        }
        fn to_json(&self) -> serde_json::Value {
            self.0.clone().into()
        }
    }

    /// Rows land in the partition of their own values, whether their batch holds one
    /// partition (written straight to its file) or several (split by the Delta writer),
    /// NULL partition values included.
    #[tokio::test]
    async fn appended_rows_land_in_their_own_partitions() {
        use arrow::array::{Array, AsArray, Int64Array, StringArray};
        use arrow::datatypes::{DataType, Field, Schema};

        let (dir, lake) = scratch_lake("one-partition");
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("day", DataType::Utf8, true),
        ]));
        let batch = |rows: &[(i64, Option<&str>)]| {
            arrow::array::RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                    Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
                ],
            )
            .unwrap()
        };
        let batches = [
            batch(&[(1, Some("d0")), (2, Some("d0")), (3, Some("d0"))]),
            batch(&[(10, Some("d1")), (20, Some("d1"))]),
            batch(&[(100, Some("d0")), (200, Some("d1")), (300, None), (400, Some("d1"))]),
            batch(&[(1000, None), (2000, None)]),
            batch(&[(5, Some("d0")), (6, None)]),
            batch(&[(7, Some("d2"))]),
        ];
        // The truth, from the input: per day, the rows and their sum.
        let mut truth: BTreeMap<Option<String>, (i64, i64)> = BTreeMap::new();
        for b in &batches {
            let (n, day) = (
                b.column(0).as_primitive::<arrow::datatypes::Int64Type>(),
                b.column(1).as_string::<i32>(),
            );
            for row in 0..b.num_rows() {
                let at = truth
                    .entry(day.is_valid(row).then(|| day.value(row).to_string()))
                    .or_default();
                *at = (at.0 + 1, at.1 + n.value(row));
            }
        }
        // The batches of one partition are found so (and written straight to its file).
        let one: Vec<Option<String>> = batches
            .iter()
            .map(|b| one_partition::<Shown>(b, &["day".to_string()]).map(|values| values["day"].0.clone()))
            .collect();
        let expected = [Some("d0"), Some("d1"), None, Some(""), None, Some("d2")];
        assert_eq!(one, expected.map(|d| d.map(str::to_string)));
        assert_eq!(one_partition::<Shown>(&batches[0], &[]).map(|v| v.len()), None);
        let url = lake.raw_url("t");
        let mut table = lake.open_or_create(&url, &schema, &["day"], "t").await.unwrap();
        // Batches of the table's own schema, which alone take the straight way.
        let writer = deltalake::writer::RecordBatchWriter::for_table(&table).unwrap();
        assert_eq!(writer.arrow_schema(), schema);
        append(&mut table, batches.to_vec(), vec![], serde_json::json!({}))
            .await
            .unwrap();

        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("t", table_provider(&ctx, &table).await.unwrap())
            .unwrap();
        let read = ctx
            .sql("SELECT day, count(*) AS c, sum(n) AS s FROM t GROUP BY day")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut got: BTreeMap<Option<String>, (i64, i64)> = BTreeMap::new();
        for b in &read {
            let day = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
            let day = day.as_string::<i32>();
            let (c, s) = (
                b.column(1).as_primitive::<arrow::datatypes::Int64Type>(),
                b.column(2).as_primitive::<arrow::datatypes::Int64Type>(),
            );
            for row in 0..b.num_rows() {
                got.insert(
                    day.is_valid(row).then(|| day.value(row).to_string()),
                    (c.value(row), s.value(row)),
                );
            }
        }
        assert_eq!(got, truth);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// After each append the table holds the state of the version it committed, as the log
    /// reads from scratch: its files and its positions, through the commits that write a
    /// checkpoint (the table's state is reloaded there, to start from it) and the others
    /// (the commit's own state is kept), and through commits made after another writer's
    /// (a second handle on the table, as another process has, whose commits land later
    /// than the version it last read).
    #[tokio::test]
    async fn an_append_leaves_the_table_at_the_state_it_committed() {
        use arrow::array::{Int64Array, StringArray};
        use arrow::datatypes::{DataType, Field, Schema};
        use deltalake::TableProperty;
        use deltalake::kernel::Transaction;

        let (dir, lake) = scratch_lake("append-state");
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("day", DataType::Utf8, true),
        ]));
        let url = lake.raw_url("t");
        lake.ensure_local_dir(&url).unwrap();
        let kernel: StructType = schema.as_ref().try_into_kernel().unwrap();
        let mut table = deltalake::DeltaTableBuilder::from_url(url.clone())
            .unwrap()
            .build()
            .unwrap()
            .create()
            .with_columns(kernel.fields().cloned())
            .with_partition_columns(["day"])
            .with_configuration_property(TableProperty::CheckpointInterval, Some("3"))
            .await
            .unwrap();
        let mut other = lake.open(&url).await.unwrap().expect("the table");
        for i in 0..8i64 {
            let days = if i % 4 == 1 {
                vec![Some("d0"), Some("d1")]
            } else {
                vec![Some("d0")]
            };
            let batch = arrow::array::RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values((0..days.len() as i64).map(|k| i * 10 + k))),
                    Arc::new(StringArray::from(days)),
                ],
            )
            .unwrap();
            // Every third commit is the other writer's, its handle behind the table's
            // versions since its last one.
            let (writer, app) = if i % 3 == 2 {
                (&mut other, "q".to_string())
            } else {
                (&mut table, format!("p{}", i % 2))
            };
            let behind = writer.version();
            let txns = vec![Transaction::new(app, i)];
            let version = append(writer, vec![batch], txns, serde_json::json!({ "i": i }))
                .await
                .unwrap();
            let table = &*writer;
            if i % 3 == 2 {
                assert!(behind < Some(version - 1), "commit {version} came after another's");
            }
            let fresh = lake.open(&url).await.unwrap().expect("the table");
            assert_eq!((table.version(), fresh.version()), (Some(version), Some(version)));
            let files = |t: &DeltaTable| {
                let mut f: Vec<String> = t.get_file_uris().unwrap().collect();
                f.sort();
                f
            };
            assert_eq!(files(table), files(&fresh), "after commit {version}");
            let (held, read) = (table.snapshot().unwrap(), fresh.snapshot().unwrap());
            assert_eq!(held.metadata(), read.metadata(), "after commit {version}");
            assert_eq!(held.protocol(), read.protocol(), "after commit {version}");
            for app in ["p0", "p1", "q"] {
                let (held_store, read_store) = (table.log_store(), fresh.log_store());
                let held = table.snapshot().unwrap().transaction_version(held_store.as_ref(), app);
                let read = fresh.snapshot().unwrap().transaction_version(read_store.as_ref(), app);
                assert_eq!(held.await.unwrap(), read.await.unwrap(), "{app} after commit {version}");
            }
        }
        // Versions 2, 5 and 8 were checkpointed: both kinds of commit were taken.
        let log = dir.join("raw").join("t").join("_delta_log");
        for v in [2, 5, 8] {
            assert!(
                log.join(format!("{v:020}.checkpoint.parquet")).exists(),
                "checkpoint {v}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A version of an unpartitioned table read as its Parquet files answers as the Delta
    /// scan does, filters in the Parquet predicate, and keeps to its version's files; a
    /// partitioned table is left to the Delta scan.
    #[tokio::test]
    async fn a_version_read_as_its_parquet_files_answers_as_the_delta_scan() {
        use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

        let (dir, lake) = scratch_lake("parquet-version");
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("g", DataType::Utf8, true),
        ]));
        let rows = |from: i64| {
            arrow::array::RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(from..from + 1000)),
                    Arc::new(
                        TimestampMicrosecondArray::from_iter_values((from..from + 1000).map(|i| i * 60_000_000))
                            .with_timezone("UTC"),
                    ),
                    Arc::new(StringArray::from_iter_values(
                        (from..from + 1000).map(|i| format!("g{}", i % 7)),
                    )),
                ],
            )
            .unwrap()
        };
        let ctx = datafusion::prelude::SessionContext::new();
        let mut table = lake
            .open_or_create(&lake.view_url("v"), &schema, &[], "v")
            .await
            .unwrap();
        for from in [0, 1000] {
            append(&mut table, vec![rows(from)], vec![], serde_json::json!({}))
                .await
                .unwrap();
        }
        let delta = table_provider(&ctx, &table).await.unwrap();
        let parquet = parquet_provider(&table, &delta)
            .unwrap()
            .expect("an unpartitioned table");
        assert_eq!(parquet.schema(), delta.schema());
        ctx.register_table("d", delta).unwrap();
        ctx.register_table("p", parquet.clone()).unwrap();
        // A later version: the provider keeps to the files of its own.
        append(&mut table, vec![rows(2000)], vec![], serde_json::json!({}))
            .await
            .unwrap();

        let answer = |sql: String| {
            let ctx = ctx.clone();
            async move {
                let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
                arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string()
            }
        };
        for query in [
            "SELECT count(*) AS c, sum(n) AS s, min(at) AS a, max(g) AS g FROM {t}",
            "SELECT * FROM {t} WHERE g = 'g3' AND at >= TIMESTAMP '1970-01-01 20:00:00' ORDER BY n",
            "SELECT n FROM {t} WHERE n BETWEEN 990 AND 1010 ORDER BY n",
            "SELECT g, count(*) AS c FROM {t} GROUP BY g ORDER BY g",
            "SELECT count(*) AS c FROM (SELECT n FROM {t} LIMIT 5)",
        ] {
            let ours = answer(query.replace("{t}", "p")).await;
            assert_eq!(ours, answer(query.replace("{t}", "d")).await, "{query}");
            // A border, a header, a border, rows, a border: at least one row.
            assert!(ours.lines().count() > 4, "{query}: {ours}");
        }
        assert!(answer("SELECT count(*) AS c FROM p".into()).await.contains("| 2000 |"));
        let plan = answer("EXPLAIN SELECT n FROM p WHERE g = 'g3'".into()).await;
        assert!(
            plan.contains("DataSourceExec") && plan.contains("predicate=g@") && !plan.contains("DeltaScan"),
            "{plan}"
        );

        let mut partitioned = lake
            .open_or_create(&lake.raw_url("r"), &schema, &["g"], "r")
            .await
            .unwrap();
        append(&mut partitioned, vec![rows(0)], vec![], serde_json::json!({}))
            .await
            .unwrap();
        let delta = table_provider(&ctx, &partitioned).await.unwrap();
        assert!(parquet_provider(&partitioned, &delta).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
