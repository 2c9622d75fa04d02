//! `strata.toml`: the one configuration file, documented key by key in
//! `strata.example.toml` at the repository root.
//!
//! Loading is strict: an unknown key, a wrong type or a bad value is an error naming the
//! file, the dotted key and what is expected. Environment variables override addresses and
//! secrets (see [`ENV_OVERRIDES`]), so one file serves every environment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer};

use crate::duration::parse_duration;
use crate::error::{Error, Result};
use crate::lake::LakeUrl;
use crate::tls::FlightEndpoint;

/// A certificate chain and its private key, PEM, as read from the files the config names.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsFiles { .. }")
    }
}

/// An environment variable that overrides a key of the file: the one layer of overrides
/// (command-line flags of a subcommand then override the result).
pub struct EnvOverride {
    pub var: &'static str,
    /// The dotted key it overrides.
    pub key: &'static str,
    set: fn(&mut Config, &str) -> std::result::Result<(), String>,
}

/// Environment variables that override keys of the file. They are read here and nowhere
/// else: a command takes these keys from the loaded [`Config`] (or from [`env_override`]
/// when it can run without one), never from a flag's own `env`.
pub const ENV_OVERRIDES: &[EnvOverride] = &[
    EnvOverride {
        var: "STRATA_LAKE_URL",
        key: "lake.url",
        set: |c, v| {
            c.lake.url = v.to_string();
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_S3_ENDPOINT",
        key: "lake.s3.endpoint",
        set: |c, v| {
            c.lake.s3.endpoint = Some(v.to_string());
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_S3_REGION",
        key: "lake.s3.region",
        set: |c, v| {
            c.lake.s3.region = Some(v.to_string());
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_S3_ACCESS_KEY_ID",
        key: "lake.s3.access_key_id",
        set: |c, v| {
            c.lake.s3.access_key_id = Some(v.to_string());
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_S3_SECRET_ACCESS_KEY",
        key: "lake.s3.secret_access_key",
        set: |c, v| {
            c.lake.s3.secret_access_key = Some(v.to_string());
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_SERVE_ADDRESS",
        key: "serve.address",
        set: |c, v| {
            c.serve.address = parse_address(v)?;
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_AUTH_TOKEN",
        key: "serve.auth.token",
        set: |c, v| {
            c.serve.auth.token = Some(v.to_string());
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_KAFKA_BROKERS",
        key: "kafka.brokers",
        set: |c, v| {
            c.kafka.brokers = v.to_string();
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_SPEED_ADDRESS",
        key: "speed.address",
        set: |c, v| {
            c.speed.address = parse_address(v)?;
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_SPEED_ENDPOINTS",
        key: "serve.speed_endpoints",
        set: |c, v| {
            c.serve.speed_endpoints = v
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(|e| FlightEndpoint::parse(e).map_err(|m| format!("`{e}`: {m}")))
                .collect::<std::result::Result<Vec<_>, String>>()?;
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_BATCH_ENGINE",
        key: "batch.engine",
        set: |c, v| {
            c.batch.engine = v.parse()?;
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_BATCH_SCHEDULER",
        key: "batch.scheduler",
        set: |c, v| {
            c.batch.scheduler = Some(v.to_string());
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_METRICS_ADDRESS",
        key: "ops.metrics_address",
        set: |c, v| {
            c.ops.metrics_address = Some(parse_address(v)?);
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_TLS_CERT",
        key: "serve.tls_cert",
        set: |c, v| {
            c.serve.tls_cert = Some(PathBuf::from(v));
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_TLS_KEY",
        key: "serve.tls_key",
        set: |c, v| {
            c.serve.tls_key = Some(PathBuf::from(v));
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_SPEED_TLS_CERT",
        key: "speed.tls_cert",
        set: |c, v| {
            c.speed.tls_cert = Some(PathBuf::from(v));
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_SPEED_TLS_KEY",
        key: "speed.tls_key",
        set: |c, v| {
            c.speed.tls_key = Some(PathBuf::from(v));
            Ok(())
        },
    },
    EnvOverride {
        var: "STRATA_SPEED_TLS_CA",
        key: "serve.speed_tls_ca",
        set: |c, v| {
            c.serve.speed_tls_ca = Some(PathBuf::from(v));
            Ok(())
        },
    },
];

/// The value the process's environment gives the dotted `key` through [`ENV_OVERRIDES`],
/// read as [`Config::load`] reads it (an unset or empty variable gives none): for a command
/// that also runs without a config file when the environment says enough.
pub fn env_override(key: &str) -> Option<String> {
    let o = ENV_OVERRIDES.iter().find(|o| o.key == key)?;
    std::env::var(o.var).ok().filter(|v| !v.is_empty())
}

/// An address to listen on: `IP:PORT`.
pub fn parse_address(text: &str) -> std::result::Result<SocketAddr, String> {
    text.trim().parse().map_err(|e| {
        format!("`{text}` is not host:port ({e}): expected an IP address and a port, e.g. 127.0.0.1:50051")
    })
}

fn de_address<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<SocketAddr, D::Error> {
    parse_address(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_opt_address<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<SocketAddr>, D::Error> {
    de_address(d).map(Some)
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file this configuration was read from (for error messages and relative paths).
    #[serde(skip)]
    pub file: PathBuf,
    pub lake: LakeConfig,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub views: Vec<ViewConfig>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub serve: ServeConfig,
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub speed: SpeedConfig,
    #[serde(default)]
    pub ops: OpsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, host:port[,host:port].
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// The consumer group of the speed layer.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Any librdkafka property, passed as it is (e.g. security.protocol, sasl.*).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_brokers() -> String {
    "127.0.0.1:9092".to_string()
}
fn default_group() -> String {
    "strata".to_string()
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: default_brokers(),
            group_id: default_group(),
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeedConfig {
    /// Archive consumed events to the lake at least this often.
    #[serde(default = "default_flush_interval", deserialize_with = "de_duration")]
    pub flush_interval: Duration,
    /// ... or when this many events are buffered.
    #[serde(default = "default_flush_rows")]
    pub flush_rows: usize,
    /// A micro-batch is cut once the consumer has taken every record Kafka fetched and no
    /// earlier batch waits for the aggregator; while records keep coming, this long after its
    /// first record (later while the aggregator is busy).
    #[serde(default = "default_batch_interval", deserialize_with = "de_duration")]
    pub batch_interval: Duration,
    /// Micro-batches are added to the views' open states together once this many events
    /// wait (or before the states are published: when a query asks, when they are archived,
    /// or before partitions are assigned): a bound on what a query waits to have added.
    #[serde(default = "default_aggregate_rows")]
    pub aggregate_rows: usize,
    /// Where `strata speed` serves its states over Arrow Flight.
    #[serde(default = "default_speed_address", deserialize_with = "de_address")]
    pub address: SocketAddr,
    /// How often to look for new batch view versions (to drop covered states).
    #[serde(default = "default_coverage_refresh", deserialize_with = "de_duration")]
    pub coverage_refresh: Duration,
    /// States covered by a batch version are kept this long after it is seen, for queries
    /// that started on the previous version.
    #[serde(default = "default_retention_grace", deserialize_with = "de_duration")]
    pub retention_grace: Duration,
    /// Serve the speed states over TLS with this certificate (PEM, the chain) ...
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// ... and its private key (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_flush_rows() -> usize {
    200_000
}
fn default_batch_interval() -> Duration {
    Duration::from_millis(10)
}
fn default_aggregate_rows() -> usize {
    4096
}
fn default_speed_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50052))
}
fn default_coverage_refresh() -> Duration {
    Duration::from_secs(1)
}
fn default_retention_grace() -> Duration {
    Duration::from_secs(10)
}

impl Default for SpeedConfig {
    fn default() -> Self {
        SpeedConfig {
            flush_interval: default_flush_interval(),
            flush_rows: default_flush_rows(),
            batch_interval: default_batch_interval(),
            aggregate_rows: default_aggregate_rows(),
            address: default_speed_address(),
            coverage_refresh: default_coverage_refresh(),
            retention_grace: default_retention_grace(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    /// Where to serve Prometheus /metrics and /health (off when unset).
    #[serde(default, deserialize_with = "de_opt_address")]
    pub metrics_address: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// `file:///abs/path`, a plain path (relative to the config file), `s3://bucket/prefix`
    /// or `hdfs://namenode:port/path`, as written; [`LakeConfig::root`] is its parsed form.
    pub url: String,
    /// `url` parsed when the configuration is loaded.
    #[serde(skip)]
    root: Option<LakeUrl>,
    #[serde(default)]
    pub s3: S3Config,
    /// Extra storage options passed to the object store as they are.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl LakeConfig {
    /// A lake at `url` (a relative path is taken from `base`), without S3 settings or
    /// options; the error says what is wrong with `url`.
    pub fn new(url: &str, base: &Path) -> std::result::Result<Self, String> {
        let mut lake = LakeConfig {
            url: url.to_string(),
            root: None,
            s3: S3Config::default(),
            options: BTreeMap::new(),
        };
        lake.resolve(base)?;
        Ok(lake)
    }

    /// Parses `url` into the lake's root, a relative path taken from `base`.
    fn resolve(&mut self, base: &Path) -> std::result::Result<(), String> {
        if self.url.trim().is_empty() {
            let expected = "expected file:///path, s3://bucket/prefix or hdfs://host:port/path";
            return Err(format!("must not be empty: {expected}"));
        }
        self.root = Some(LakeUrl::parse(&self.url, base)?);
        Ok(())
    }

    /// The lake's location: `url` as parsed when the configuration was loaded.
    pub fn root(&self) -> Result<&LakeUrl> {
        self.root.as_ref().ok_or_else(|| {
            Error::Internal(format!(
                "lake.url `{}` was not parsed: a LakeConfig comes from Config::load, Config::parse or LakeConfig::new",
                self.url
            ))
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    /// Kafka topics this source reads (used by the speed layer).
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default)]
    pub format: SourceFormat,
    pub event_time: EventTimeConfig,
    /// Column name -> type, in the order the columns are stored.
    pub schema: IndexMap<String, ColumnType>,
    /// Records larger than this are rejected as too large.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
}

fn default_max_record_bytes() -> usize {
    1024 * 1024
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// One JSON object per line (files) or per message (Kafka).
    #[default]
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTimeConfig {
    /// The column holding each event's time; it must be in `schema` with type `timestamp`.
    pub column: String,
    #[serde(default)]
    pub format: TimeFormat,
}

/// How an event time is written in the input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TimeFormat {
    /// `2026-11-21T10:00:00.123Z` or with an offset.
    #[default]
    Rfc3339,
    EpochSeconds,
    EpochMillis,
    EpochMicros,
    /// A chrono strftime pattern, read as UTC, e.g. `%Y-%m-%d %H:%M:%S%.f`.
    Pattern(String),
}

impl<'de> Deserialize<'de> for TimeFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "rfc3339" => TimeFormat::Rfc3339,
            "epoch_seconds" => TimeFormat::EpochSeconds,
            "epoch_millis" => TimeFormat::EpochMillis,
            "epoch_micros" => TimeFormat::EpochMicros,
            p if p.contains('%') => TimeFormat::Pattern(p.to_string()),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "unknown time format `{other}`: expected rfc3339, epoch_seconds, epoch_millis, \
                     epoch_micros or a strftime pattern such as \"%Y-%m-%d %H:%M:%S\""
                )));
            }
        })
    }
}

/// The type of a source column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    String,
    Int32,
    Int64,
    Float64,
    Boolean,
    /// Microseconds since the epoch, UTC.
    Timestamp,
    Date,
}

impl ColumnType {
    pub const NAMES: &'static str = "string, int32, int64, float64, boolean, timestamp, date";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "string" | "utf8" | "varchar" | "text" => ColumnType::String,
            "int32" | "int" | "integer" => ColumnType::Int32,
            "int64" | "bigint" | "long" => ColumnType::Int64,
            "float64" | "double" | "float" => ColumnType::Float64,
            "boolean" | "bool" => ColumnType::Boolean,
            "timestamp" => ColumnType::Timestamp,
            "date" => ColumnType::Date,
            _ => return None,
        })
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnType::String => "string",
            ColumnType::Int32 => "int32",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Date => "date",
        })
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ColumnType::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown column type `{s}`: expected one of {}",
                ColumnType::NAMES
            ))
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewConfig {
    pub name: String,
    /// `SELECT window_start, ... FROM <source> [WHERE ...] GROUP BY tumble(...)|hop(...), ...`
    pub sql: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Run every this long, e.g. "5m", "1h" (exclusive with `cron`).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub interval: Option<Duration>,
    /// Run on a cron schedule in UTC: "sec min hour day-of-month month day-of-week [year]".
    pub cron: Option<String>,
    /// Raw files smaller than this are compacted.
    #[serde(default = "default_small_file_mb")]
    pub small_file_mb: u64,
    /// Compaction writes files of about this size.
    #[serde(default = "default_target_file_mb")]
    pub target_file_mb: u64,
    /// Memory a view's recompute may use (DataFusion's memory pool, e.g. "4GiB"); past it,
    /// it spills where it can, else the run fails naming the view and publishes nothing.
    /// Default: half of the machine's memory.
    #[serde(default, deserialize_with = "de_opt_bytes")]
    pub memory: Option<u64>,
    /// Where views are recomputed: in this process, or on a Ballista cluster.
    #[serde(default)]
    pub engine: BatchEngine,
    /// The Ballista scheduler, `df://host:port` (with `engine = "ballista"`).
    pub scheduler: Option<String>,
}

/// Where the batch layer recomputes views. Compaction and the publication (the atomic
/// Delta commit with its coverage) stay with the batch process either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchEngine {
    /// DataFusion in the batch process.
    #[default]
    Local,
    /// A Ballista cluster (`strata scheduler` and `strata executor` processes).
    Ballista,
}

impl std::str::FromStr for BatchEngine {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "local" => Ok(BatchEngine::Local),
            "ballista" => Ok(BatchEngine::Ballista),
            other => Err(format!(
                "`{other}` is not an engine: expected \"local\" or \"ballista\""
            )),
        }
    }
}

/// A Ballista scheduler's address, `df://host:port`: (host, port).
pub fn parse_scheduler(text: &str) -> std::result::Result<(String, u16), String> {
    let rest = text
        .trim()
        .strip_prefix("df://")
        .ok_or_else(|| format!("`{text}` is not a scheduler address: expected df://host:port"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("`{text}` has no port: expected df://host:port"))?;
    let port = port
        .trim_end_matches('/')
        .parse::<u16>()
        .map_err(|e| format!("`{text}`: the port is not a number ({e}): expected df://host:port"))?;
    if host.is_empty() {
        return Err(format!("`{text}` has no host: expected df://host:port"));
    }
    Ok((host.to_string(), port))
}

fn default_small_file_mb() -> u64 {
    32
}
fn default_target_file_mb() -> u64 {
    128
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            interval: None,
            cron: None,
            small_file_mb: default_small_file_mb(),
            target_file_mb: default_target_file_mb(),
            memory: None,
            engine: BatchEngine::Local,
            scheduler: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    #[serde(default = "default_address", deserialize_with = "de_address")]
    pub address: SocketAddr,
    #[serde(default)]
    pub auth: AuthConfig,
    /// Serve without authentication on an address beyond loopback. Off by default: a
    /// server reachable from the network refuses to start without auth.
    #[serde(default)]
    pub allow_unauthenticated_remote: bool,
    /// Serve Flight SQL over TLS with this certificate (PEM, the chain) ...
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// ... and its private key (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Send a bearer token (or a password) over plaintext on an address beyond loopback. Off
    /// by default: with auth and no TLS, such a server refuses to start.
    #[serde(default)]
    pub allow_plaintext_remote: bool,
    /// The certificate authority (PEM) that signed the speed endpoints' certificates, for
    /// `https://` speed endpoints; the system's roots when unset.
    #[serde(default)]
    pub speed_tls_ca: Option<PathBuf>,
    /// Speed layers to merge with (Flight endpoints of `strata speed`, e.g.
    /// "http://127.0.0.1:50052"), parsed when the file is read. `strata run` merges with its
    /// own speed layer.
    #[serde(default)]
    pub speed_endpoints: Vec<FlightEndpoint>,
    /// How long a speed layer may take to hand over its states for a query; past it, its
    /// partitions are answered from the lake's archived events.
    #[serde(default = "default_speed_timeout", deserialize_with = "de_duration")]
    pub speed_timeout: Duration,
    /// Before a query reads a speed layer's states, that speed layer asks Kafka for the end of
    /// each partition it owns and waits until it has consumed up to it: the answer counts
    /// every event Kafka had made readable (up to the last stable offset) when the query
    /// arrived. Off by default (a
    /// query then counts what was consumed before it arrived, a few milliseconds behind).
    #[serde(default)]
    pub real_time_recency: bool,
    /// How long a query waits for that at most; past it, it reads what was consumed.
    #[serde(default = "default_recency_timeout", deserialize_with = "de_duration")]
    pub real_time_recency_timeout: Duration,
    /// A Kafka partition of a source that no live speed process has owned for this long is
    /// an alarm (metric, /health degraded, system.partitions).
    #[serde(default = "default_unowned_grace", deserialize_with = "de_duration")]
    pub unowned_partition_grace: Duration,
    /// How often the serving layer reads the topics' partitions from Kafka and the speed
    /// layers' ownership, for that alarm.
    #[serde(default = "default_partition_check", deserialize_with = "de_duration")]
    pub partition_check_interval: Duration,
    /// Memory all queries of the process may use at once (DataFusion's memory pool, e.g.
    /// "2GiB"); a query that needs more spills where it can, else fails alone with
    /// RESOURCE_EXHAUSTED. Default: a quarter of the machine's memory.
    #[serde(default, deserialize_with = "de_opt_bytes")]
    pub query_memory: Option<u64>,
    /// A query running longer fails with DEADLINE_EXCEEDED.
    #[serde(default = "default_query_timeout", deserialize_with = "de_duration")]
    pub query_timeout: Duration,
}

fn default_speed_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_recency_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_unowned_grace() -> Duration {
    Duration::from_secs(60)
}
fn default_partition_check() -> Duration {
    Duration::from_secs(5)
}
fn default_query_timeout() -> Duration {
    Duration::from_secs(300)
}

pub const DEFAULT_ADDRESS: &str = "127.0.0.1:50051";

fn default_address() -> SocketAddr {
    DEFAULT_ADDRESS.parse().expect("the default address parses")
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            address: default_address(),
            auth: AuthConfig::default(),
            allow_unauthenticated_remote: false,
            tls_cert: None,
            tls_key: None,
            allow_plaintext_remote: false,
            speed_tls_ca: None,
            speed_endpoints: Vec::new(),
            speed_timeout: default_speed_timeout(),
            real_time_recency: false,
            real_time_recency_timeout: default_recency_timeout(),
            unowned_partition_grace: default_unowned_grace(),
            partition_check_interval: default_partition_check(),
            query_memory: None,
            query_timeout: default_query_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A static bearer token clients send as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Users who may log in with the Flight handshake (Basic) and get a bearer token.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// How long a token from the handshake stays valid.
    #[serde(default = "default_token_ttl", deserialize_with = "de_duration")]
    pub token_ttl: Duration,
}

fn default_token_ttl() -> Duration {
    Duration::from_secs(3600)
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token: None,
            users: Vec::new(),
            token_ttl: default_token_ttl(),
        }
    }
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        self.token.is_some() || !self.users.is_empty()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub username: String,
    /// The password, or use `password_env` to read it from an environment variable.
    pub password: Option<String>,
    pub password_env: Option<String>,
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_opt_bytes<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    let s = String::deserialize(d)?;
    parse_bytes(&s).map(Some).map_err(serde::de::Error::custom)
}

/// Parses "512MiB", "2GiB", "1.5GB", "1048576".
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "`{s}` is not a size: expected e.g. \"512MiB\", \"2GiB\", \"1GB\""
            ));
        }
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a size: expected e.g. \"512MiB\", \"2GiB\", \"1GB\""))?;
    if n.is_nan() || n <= 0.0 {
        return Err(format!("`{s}`: a size must be more than zero"));
    }
    Ok((n * factor as f64) as u64)
}

impl Config {
    /// Reads, parses, applies environment overrides and validates a config file.
    pub fn load(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::config(file, "(file)", format!("cannot read the config file: {e}")))?;
        Self::parse(&text, file, &std::env::vars().collect())
    }

    /// Parses `text` as if read from `file`, with `env` as the environment.
    pub fn parse(text: &str, file: &Path, env: &BTreeMap<String, String>) -> Result<Self> {
        let de = toml::Deserializer::parse(text).map_err(|e| toml_error(file, text, "(syntax)", e))?;
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = match e.path().to_string() {
                p if p == "." => "(top level)".to_string(),
                p => p,
            };
            toml_error(file, text, &key, e.into_inner())
        })?;
        config.file = file.to_path_buf();
        config.apply_env(env)?;
        // Parsed once, here: the lake's root, a relative path taken from the file's directory.
        let base = config.base_dir().to_path_buf();
        config.lake.resolve(&base).map_err(|m| config.err("lake.url", m))?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: &BTreeMap<String, String>) -> Result<()> {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty());
        for o in ENV_OVERRIDES {
            if let Some(v) = get(o.var) {
                (o.set)(self, v).map_err(|m| self.err(format!("{} (set by {})", o.key, o.var), m))?;
            }
        }
        for user in &mut self.serve.auth.users {
            if let Some(var) = &user.password_env
                && let Some(v) = get(var)
            {
                user.password = Some(v.clone());
            }
        }
        Ok(())
    }

    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> Error {
        Error::config(&self.file, key, message)
    }

    /// Checks what serde cannot: names, references between keys, schemas, schedules. The
    /// first mistake found is reported, in the order of the checks here.
    fn validate(&self) -> Result<()> {
        self.tls_paths("serve")?;
        self.tls_paths("speed")?;
        self.check_sources()?;
        self.check_views()?;
        self.check_batch()?;
        self.check_speed()?;
        self.check_serve()?;
        self.check_kafka()?;
        self.check_topics()?;
        self.check_users()?;
        Ok(())
    }

    /// Each source: a valid name not used by another, its schema and its event time.
    fn check_sources(&self) -> Result<()> {
        let mut names = std::collections::HashSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            let key = |k: &str| format!("sources[{i}].{k}");
            check_identifier(&source.name).map_err(|m| self.err(key("name"), m))?;
            if !names.insert(source.name.to_ascii_lowercase()) {
                return Err(self.err(
                    key("name"),
                    format!("a source named `{}` is already defined", source.name),
                ));
            }
            self.check_schema(i, source)?;
            self.check_event_time(i, source)?;
            if source.max_record_bytes == 0 {
                return Err(self.err(key("max_record_bytes"), "must be greater than 0"));
            }
        }
        Ok(())
    }

    /// A source's schema (`sources[i]`): at least one column, each a valid name that Strata
    /// does not reserve.
    fn check_schema(&self, i: usize, source: &SourceConfig) -> Result<()> {
        let key = |k: &str| format!("sources[{i}].{k}");
        if source.schema.is_empty() {
            return Err(self.err(key("schema"), "must list at least one column: name = \"type\""));
        }
        for column in source.schema.keys() {
            check_identifier(column).map_err(|m| self.err(key(&format!("schema.{column}")), m))?;
            if crate::schema::RESERVED_COLUMNS.contains(&column.as_str()) {
                return Err(self.err(
                    key(&format!("schema.{column}")),
                    format!(
                        "`{column}` is reserved by Strata (reserved: {}); rename the column",
                        crate::schema::RESERVED_COLUMNS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A source's event-time column (`sources[i]`): a column of its schema, of type timestamp.
    fn check_event_time(&self, i: usize, source: &SourceConfig) -> Result<()> {
        let key = |k: &str| format!("sources[{i}].{k}");
        match source.schema.get(&source.event_time.column) {
            Some(ColumnType::Timestamp) => Ok(()),
            Some(other) => Err(self.err(
                key("event_time.column"),
                format!(
                    "column `{}` has type {other}; the event-time column must have type timestamp",
                    source.event_time.column
                ),
            )),
            None => Err(self.err(
                key("event_time.column"),
                format!(
                    "`{}` is not a column of the schema (columns: {})",
                    source.event_time.column,
                    source.schema.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// Each view: a valid name not used by another, and SQL the engine can maintain.
    fn check_views(&self) -> Result<()> {
        let mut view_names = std::collections::HashSet::new();
        for (i, view) in self.views.iter().enumerate() {
            check_identifier(&view.name).map_err(|m| self.err(format!("views[{i}].name"), m))?;
            if !view_names.insert(view.name.to_ascii_lowercase()) {
                return Err(self.err(
                    format!("views[{i}].name"),
                    format!("a view named `{}` is already defined", view.name),
                ));
            }
            // Each view must compile: the engine must be able to maintain it.
            crate::view::ViewPlan::compile(view, &self.sources)
                .map_err(|e| self.err(format!("views[{i}].sql"), e.to_string()))?;
        }
        Ok(())
    }

    /// `[batch]`: one schedule at most (a positive interval or a cron expression), and a
    /// target file size, and with the Ballista engine a scheduler address.
    fn check_batch(&self) -> Result<()> {
        match (self.batch.engine, &self.batch.scheduler) {
            (BatchEngine::Ballista, None) => {
                return Err(self.err(
                    "batch.scheduler",
                    "is missing: engine = \"ballista\" needs the scheduler's address, df://host:port",
                ));
            }
            (_, Some(scheduler)) => {
                parse_scheduler(scheduler).map_err(|m| self.err("batch.scheduler", m))?;
            }
            (BatchEngine::Local, None) => {}
        }
        match (&self.batch.interval, &self.batch.cron) {
            (Some(_), Some(_)) => {
                return Err(self.err("batch", "set either `interval` or `cron`, not both"));
            }
            (Some(d), None) if d.is_zero() => {
                return Err(self.err("batch.interval", "must be greater than 0"));
            }
            (None, Some(expr)) => {
                crate::clock::CronSchedule::parse(expr).map_err(|m| self.err("batch.cron", m))?;
            }
            _ => {}
        }
        if self.batch.target_file_mb == 0 {
            return Err(self.err("batch.target_file_mb", "must be greater than 0"));
        }
        Ok(())
    }

    /// `[speed]`: a flush size.
    fn check_speed(&self) -> Result<()> {
        if self.speed.flush_rows == 0 {
            return Err(self.err("speed.flush_rows", "must be greater than 0"));
        }
        if self.speed.aggregate_rows == 0 {
            return Err(self.err("speed.aggregate_rows", "must be greater than 0"));
        }
        Ok(())
    }

    /// `[serve]`: a query's wait for a speed layer to catch up with Kafka is positive and at
    /// most half of what the speed layer is given to answer (it must still compute and send
    /// its states, else its partitions would be answered from the lake: staler).
    fn check_serve(&self) -> Result<()> {
        let serve = &self.serve;
        if !serve.real_time_recency {
            return Ok(());
        }
        if serve.real_time_recency_timeout.is_zero() {
            return Err(self.err("serve.real_time_recency_timeout", "must be greater than 0"));
        }
        if serve.real_time_recency_timeout > serve.speed_timeout / 2 {
            return Err(self.err(
                "serve.real_time_recency_timeout",
                format!(
                    "must be at most half of serve.speed_timeout ({:?}): a speed layer still catching up when that ends would be answered from the lake",
                    serve.speed_timeout
                ),
            ));
        }
        Ok(())
    }

    /// `[kafka]`: brokers and a group, and no property that Strata sets itself.
    fn check_kafka(&self) -> Result<()> {
        if self.kafka.brokers.trim().is_empty() {
            return Err(self.err("kafka.brokers", "must list at least one host:port"));
        }
        if self.kafka.group_id.trim().is_empty() {
            return Err(self.err("kafka.group_id", "must not be empty"));
        }
        for key in ["enable.auto.commit", "group.id", "bootstrap.servers"] {
            if self.kafka.properties.contains_key(key) {
                return Err(self.err(
                    format!("kafka.properties.\"{key}\""),
                    match key {
                        "enable.auto.commit" => {
                            "Strata manages offsets itself (in the lake, exactly once); remove this property"
                        }
                        "group.id" => "set kafka.group_id instead",
                        _ => "set kafka.brokers instead",
                    },
                ));
            }
        }
        Ok(())
    }

    /// A Kafka topic is read by one source only.
    fn check_topics(&self) -> Result<()> {
        let mut topics = std::collections::HashMap::new();
        for (i, source) in self.sources.iter().enumerate() {
            for t in &source.topics {
                if let Some(other) = topics.insert(t.clone(), source.name.clone()) {
                    return Err(self.err(
                        format!("sources[{i}].topics"),
                        format!("topic `{t}` is already read by source `{other}`"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every user of `serve.auth.users` has a password (set, or read from its variable).
    fn check_users(&self) -> Result<()> {
        for (i, user) in self.serve.auth.users.iter().enumerate() {
            if user.password.is_none() {
                let why = match &user.password_env {
                    Some(var) => format!("the environment variable {var} (from `password_env`) is not set"),
                    None => "set `password` or `password_env`".to_string(),
                };
                return Err(self.err(
                    format!("serve.auth.users[{i}].password"),
                    format!("user `{}` has no password: {why}", user.username),
                ));
            }
        }
        Ok(())
    }

    /// The certificate and key files `section` (`serve` or `speed`) serves TLS with, as set
    /// by `<section>.tls_cert` and `<section>.tls_key`: none when neither is, an error naming
    /// the key that is missing when only one is.
    fn tls_paths(&self, section: &str) -> Result<Option<(&Path, &Path)>> {
        let (cert, key) = match section {
            "serve" => (&self.serve.tls_cert, &self.serve.tls_key),
            "speed" => (&self.speed.tls_cert, &self.speed.tls_key),
            other => return Err(Error::Internal(format!("no TLS settings in [{other}]"))),
        };
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (Some(_), None) => Err(self.err(
                format!("{section}.tls_key"),
                format!("is missing: {section}.tls_cert is set, and TLS needs the certificate's private key too"),
            )),
            (None, Some(_)) => Err(self.err(
                format!("{section}.tls_cert"),
                format!("is missing: {section}.tls_key is set, and TLS needs the certificate too"),
            )),
        }
    }

    /// The certificate and key `section` serves TLS with, read from their files (relative to
    /// the config file's directory) when the server starts; an error naming the key whose
    /// file cannot be read.
    pub fn tls(&self, section: &str) -> Result<Option<TlsFiles>> {
        let Some((cert, key)) = self.tls_paths(section)? else {
            return Ok(None);
        };
        let read = |name: &str, path: &Path| -> Result<Vec<u8>> {
            let path = self.base_dir().join(path);
            std::fs::read(&path).map_err(|e| {
                self.err(
                    format!("{section}.{name}"),
                    format!("cannot read `{}`: {e}", path.display()),
                )
            })
        };
        Ok(Some(TlsFiles {
            cert: read("tls_cert", cert)?,
            key: read("tls_key", key)?,
        }))
    }

    /// The PEM of `serve.speed_tls_ca` (relative to the config file's directory), if set.
    pub fn speed_tls_ca(&self) -> Result<Option<Vec<u8>>> {
        let Some(path) = &self.serve.speed_tls_ca else {
            return Ok(None);
        };
        let path = self.base_dir().join(path);
        std::fs::read(&path)
            .map(Some)
            .map_err(|e| self.err("serve.speed_tls_ca", format!("cannot read `{}`: {e}", path.display())))
    }

    /// The directory relative paths (the lake's, TLS files) are resolved against: the config
    /// file's.
    pub fn base_dir(&self) -> &Path {
        self.file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    pub fn source(&self, name: &str) -> Result<&SourceConfig> {
        self.sources
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let known: Vec<_> = self.sources.iter().map(|s| s.name.as_str()).collect();
                Error::Input(format!(
                    "no source named `{name}` in {} (sources: {})",
                    self.file.display(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })
    }

    /// The compiled plans of every view.
    pub fn view_plans(&self) -> Result<Vec<crate::view::ViewPlan>> {
        self.views
            .iter()
            .map(|v| crate::view::ViewPlan::compile(v, &self.sources))
            .collect()
    }
}

/// Names of sources, views and columns: letters, digits and `_`, not starting with a digit.
/// They become table and column names in SQL and directory names in the lake.
pub fn check_identifier(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => chars.all(|c| c.is_ascii_alphanumeric() || c == '_'),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid name: use letters, digits and _, starting with a letter"
        ))
    }
}

fn toml_error(file: &Path, text: &str, key: &str, e: toml::de::Error) -> Error {
    let position = e
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" (line {line}, column {column})")
        })
        .unwrap_or_default();
    Error::config(file, format!("{key}{position}"), e.message().trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_their_units_and_refuse_the_rest() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        for bad in ["lots", "12 parsecs", "0", "-1GiB", ""] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        let text = format!("{GOOD}\n[batch]\nmemory = \"loads\"\n");
        let e = Config::parse(&text, Path::new("s.toml"), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch.memory") && e.contains("`loads` is not a size"), "{e}");
    }

    const GOOD: &str = r#"
[lake]
url = "file:///tmp/lake"

[[sources]]
name = "page_views"
topics = ["page_views"]
event_time = { column = "ts" }
[sources.schema]
ts = "timestamp"
country = "string"
amount = "float64"
user_id = "string"

[[views]]
name = "per_country"
sql = "SELECT window_start, country, count(*) AS views FROM page_views GROUP BY tumble(ts, INTERVAL '1 minute'), country"

[serve]
address = "127.0.0.1:50051"
"#;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/strata/strata.toml"), &BTreeMap::new())
    }

    fn parse_err(text: &str) -> String {
        parse(text).expect_err("the config should be refused").to_string()
    }

    #[test]
    fn a_good_config_loads() {
        let c = parse(GOOD).unwrap();
        assert_eq!(
            c.sources[0].schema.keys().collect::<Vec<_>>(),
            ["ts", "country", "amount", "user_id"]
        );
        assert_eq!(c.sources[0].event_time.format, TimeFormat::Rfc3339);
        assert_eq!(c.serve.address.to_string(), "127.0.0.1:50051");
    }

    #[test]
    fn a_wrong_column_type_names_file_key_and_choices() {
        let msg = parse_err(&GOOD.replace("amount = \"float64\"", "amount = \"dubble\""));
        assert!(
            msg.starts_with("/etc/strata/strata.toml: sources[0].schema.amount"),
            "{msg}"
        );
        assert!(msg.contains("unknown column type `dubble`"), "{msg}");
        assert!(msg.contains("expected one of string, int32"), "{msg}");
        assert!(msg.contains("line "), "{msg}");
    }

    #[test]
    fn an_unknown_key_is_named() {
        let msg = parse_err(&GOOD.replace("[serve]", "[serve]\nadress = \"x\""));
        assert!(msg.contains("serve"), "{msg}");
        assert!(msg.contains("unknown field `adress`"), "{msg}");
    }

    /// Real-time recency is off unless asked for, and its wait must end well before the speed
    /// layer's: a speed layer still waiting when the serving layer gives up on it would be
    /// answered from the lake, staler than without the wait.
    #[test]
    fn real_time_recency_waits_less_than_a_speed_layer_is_given() {
        let c = parse(GOOD).unwrap();
        assert!(!c.serve.real_time_recency);
        assert_eq!(c.serve.real_time_recency_timeout, Duration::from_secs(1));
        let on = GOOD.replace("[serve]", "[serve]\nreal_time_recency = true");
        assert!(parse(&on).unwrap().serve.real_time_recency);
        let msg = parse_err(&on.replace("[serve]", "[serve]\nreal_time_recency_timeout = \"2600ms\""));
        assert!(
            msg.starts_with(
                "/etc/strata/strata.toml: serve.real_time_recency_timeout: must be at most half of serve.speed_timeout (5s)"
            ),
            "{msg}"
        );
        let msg = parse_err(&on.replace("[serve]", "[serve]\nreal_time_recency_timeout = \"0s\""));
        assert!(
            msg.contains("serve.real_time_recency_timeout: must be greater than 0"),
            "{msg}"
        );
        let longer = on.replace(
            "[serve]",
            "[serve]\nreal_time_recency_timeout = \"5s\"\nspeed_timeout = \"10s\"",
        );
        assert_eq!(
            parse(&longer).unwrap().serve.real_time_recency_timeout,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn a_missing_key_is_named() {
        let msg = parse_err(&GOOD.replace("url = \"file:///tmp/lake\"", ""));
        assert!(msg.contains("lake"), "{msg}");
        assert!(msg.contains("missing field `url`"), "{msg}");
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let msg = parse_err("[lake\nurl = 1");
        assert!(msg.starts_with("/etc/strata/strata.toml: (syntax) (line 1"), "{msg}");
    }

    #[test]
    fn the_event_time_column_must_be_a_timestamp_in_the_schema() {
        let msg = parse_err(&GOOD.replace("column = \"ts\"", "column = \"time\""));
        assert!(
            msg.contains("sources[0].event_time.column: `time` is not a column of the schema"),
            "{msg}"
        );
        let msg = parse_err(&GOOD.replace("column = \"ts\"", "column = \"country\""));
        assert!(msg.contains("must have type timestamp"), "{msg}");
    }

    #[test]
    fn a_bad_time_format_lists_the_choices() {
        let msg = parse_err(&GOOD.replace("{ column = \"ts\" }", "{ column = \"ts\", format = \"iso\" }"));
        assert!(msg.contains("sources[0].event_time.format"), "{msg}");
        assert!(msg.contains("rfc3339, epoch_seconds"), "{msg}");
    }

    #[test]
    fn reserved_and_invalid_names_are_refused() {
        let msg = parse_err(&GOOD.replace("country = \"string\"", "event_date = \"string\""));
        assert!(
            msg.contains("sources[0].schema.event_date: `event_date` is reserved"),
            "{msg}"
        );
        let msg = parse_err(&GOOD.replace("name = \"page_views\"", "name = \"page views\""));
        assert!(
            msg.contains("sources[0].name: `page views` is not a valid name"),
            "{msg}"
        );
    }

    #[test]
    fn a_bad_view_names_the_view_key() {
        let msg = parse_err(&GOOD.replace("count(*) AS views", "median(amount) AS m"));
        assert!(msg.contains("views[0].sql"), "{msg}");
        assert!(msg.contains("median"), "{msg}");
    }

    #[test]
    fn schedule_and_address_are_checked() {
        let msg = parse_err(&format!("{GOOD}\n[batch]\ninterval = \"5 parsecs\"\n"));
        assert!(msg.contains("batch.interval"), "{msg}");
        let msg = parse_err(&format!("{GOOD}\n[batch]\ninterval = \"5m\"\ncron = \"0 * * * * *\"\n"));
        assert!(msg.contains("batch: set either `interval` or `cron`"), "{msg}");
        let msg = parse_err(&format!("{GOOD}\n[batch]\ncron = \"every tuesday\"\n"));
        assert!(msg.contains("batch.cron"), "{msg}");
        let msg = parse_err(&GOOD.replace("address = \"127.0.0.1:50051\"", "address = \"localhost\""));
        assert!(msg.contains("serve.address"), "{msg}");
        assert!(msg.contains("`localhost` is not host:port"), "{msg}");
    }

    #[test]
    fn environment_overrides_addresses_and_secrets() {
        let env: BTreeMap<String, String> = [
            ("STRATA_LAKE_URL", "s3://bucket/lake"),
            ("STRATA_S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("STRATA_SERVE_ADDRESS", "0.0.0.0:6000"),
            ("STRATA_AUTH_TOKEN", "secret"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = Config::parse(GOOD, Path::new("strata.toml"), &env).unwrap();
        assert_eq!(c.lake.url, "s3://bucket/lake");
        assert_eq!(c.lake.s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.serve.address.to_string(), "0.0.0.0:6000");
        assert_eq!(c.serve.auth.token.as_deref(), Some("secret"));
        // A bad value names the variable as well as the key.
        let bad: BTreeMap<String, String> = [("STRATA_METRICS_ADDRESS".to_string(), "9464".to_string())].into();
        let msg = Config::parse(GOOD, Path::new("strata.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("ops.metrics_address (set by STRATA_METRICS_ADDRESS): `9464` is not host:port"),
            "{msg}"
        );
    }

    #[test]
    fn the_ballista_engine_needs_a_scheduler_address() {
        let msg = parse_err(&format!("{GOOD}\n[batch]\nengine = \"ballista\"\n"));
        assert!(msg.contains("batch.scheduler: is missing"), "{msg}");
        let msg = parse_err(&format!(
            "{GOOD}\n[batch]\nengine = \"ballista\"\nscheduler = \"127.0.0.1:50050\"\n"
        ));
        assert!(
            msg.contains("batch.scheduler: `127.0.0.1:50050` is not a scheduler address"),
            "{msg}"
        );
        let msg = parse_err(&format!("{GOOD}\n[batch]\nengine = \"spark\"\n"));
        assert!(msg.contains("batch.engine"), "{msg}");
        let env: BTreeMap<String, String> = [
            ("STRATA_BATCH_ENGINE", "ballista"),
            ("STRATA_BATCH_SCHEDULER", "df://sched:50050"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = Config::parse(GOOD, Path::new("strata.toml"), &env).unwrap();
        assert_eq!(c.batch.engine, BatchEngine::Ballista);
        assert_eq!(
            parse_scheduler(c.batch.scheduler.as_deref().unwrap()).unwrap(),
            ("sched".to_string(), 50050)
        );
        let bad: BTreeMap<String, String> = [("STRATA_BATCH_ENGINE".to_string(), "spark".to_string())].into();
        let msg = Config::parse(GOOD, Path::new("strata.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("batch.engine (set by STRATA_BATCH_ENGINE): `spark` is not an engine"),
            "{msg}"
        );
    }

    #[test]
    fn the_lake_and_the_speed_endpoints_are_parsed_at_load() {
        let c = parse(&GOOD.replace("file:///tmp/lake", "lake")).unwrap();
        assert_eq!(c.lake.root().unwrap().url().as_str(), "file:///etc/strata/lake/");
        let msg = parse_err(&GOOD.replace("file:///tmp/lake", "ftp://x/y"));
        assert!(msg.contains("lake.url: unsupported scheme `ftp://`"), "{msg}");

        let endpoints = "speed_endpoints = [\"grpc+tls://speed:50052\", \"10.0.0.2:50052\"]";
        let text = GOOD.replace("[serve]\n", &format!("[serve]\n{endpoints}\n"));
        let c = parse(&text).unwrap();
        let endpoints = &c.serve.speed_endpoints;
        assert_eq!(endpoints.len(), 2);
        assert!(endpoints[0].is_tls() && !endpoints[1].is_tls());
        assert_eq!(endpoints[0].url(), "https://speed:50052");
        assert_eq!(endpoints[1].url(), "http://10.0.0.2:50052");
        let msg = parse_err(&GOOD.replace("[serve]\n", "[serve]\nspeed_endpoints = [\"speed one:50052\"]\n"));
        assert!(msg.contains("serve.speed_endpoints"), "{msg}");
        assert!(
            msg.contains("`speed one:50052`: `http://speed one:50052` is not an endpoint URL"),
            "{msg}"
        );
        let env: BTreeMap<String, String> = [(
            "STRATA_SPEED_ENDPOINTS".to_string(),
            "speed:50052, speed two:50052".to_string(),
        )]
        .into();
        let msg = Config::parse(GOOD, Path::new("strata.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("serve.speed_endpoints (set by STRATA_SPEED_ENDPOINTS): `speed two:50052`: "),
            "{msg}"
        );
    }

    #[test]
    fn a_user_without_password_is_refused() {
        let text = format!("{GOOD}\n[[serve.auth.users]]\nusername = \"ana\"\npassword_env = \"ANA_PASSWORD\"\n");
        let msg = parse_err(&text);
        assert!(msg.contains("serve.auth.users[0].password"), "{msg}");
        assert!(msg.contains("ANA_PASSWORD"), "{msg}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The documented example is a valid configuration, and documents every key there is.
    #[test]
    fn the_example_config_loads_and_documents_every_key() {
        let text = include_str!("../../strata.example.toml");
        let c = Config::parse(text, Path::new("strata.example.toml"), &BTreeMap::new()).unwrap();
        assert_eq!(c.views.len(), 2);
        assert_eq!(c.batch.interval, Some(Duration::from_secs(300)));
        for key in [
            "url",
            "endpoint",
            "region",
            "access_key_id",
            "secret_access_key",
            "[lake.options]",
            "name",
            "topics",
            "format",
            "max_record_bytes",
            "event_time",
            "[sources.schema]",
            "[[views]]",
            "sql",
            "interval",
            "cron",
            "small_file_mb",
            "target_file_mb",
            "engine",
            "scheduler",
            "address",
            "allow_unauthenticated_remote",
            "tls_cert",
            "tls_key",
            "allow_plaintext_remote",
            "speed_tls_ca",
            "real_time_recency",
            "real_time_recency_timeout",
            "token",
            "token_ttl",
            "[[serve.auth.users]]",
            "username",
            "password_env",
        ] {
            assert!(text.contains(key), "strata.example.toml does not document `{key}`");
        }
        for o in ENV_OVERRIDES {
            assert!(
                text.contains(o.var),
                "strata.example.toml does not mention {} (for {})",
                o.var,
                o.key
            );
        }
    }

    /// docker-compose.yml's configuration loads: the lake on HDFS, recomputes on its
    /// Ballista scheduler.
    #[test]
    fn the_deployment_config_loads() {
        let text = include_str!("../../deploy/strata.toml");
        let env = BTreeMap::from([("STRATA_AUTH_TOKEN".to_string(), "t".to_string())]);
        let c = Config::parse(text, Path::new("deploy/strata.toml"), &env).unwrap();
        assert_eq!(c.lake.root().unwrap().url().as_str(), "hdfs://namenode:8020/strata/");
        assert_eq!(c.batch.engine, BatchEngine::Ballista);
        assert_eq!(c.batch.scheduler.as_deref(), Some("df://scheduler:50050"));
    }
}
