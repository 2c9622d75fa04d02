//! DataFusion sessions with Strata's settings: no view types in results (Flight SQL JDBC
//! clients cannot read Utf8View/BinaryView), UTC, the Strata functions registered.

use std::sync::{Arc, OnceLock};

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::Result;

pub const CATALOG: &str = "strata";
pub const DEFAULT_SCHEMA: &str = "public";

/// The session configuration every Strata component uses.
pub fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, DEFAULT_SCHEMA)
        .with_information_schema(true)
        .with_target_partitions(parallelism());
    let options = config.options_mut();
    options.execution.parquet.schema_force_view_types = false;
    // Filters applied while Parquet is read: the rows they reject are never decoded, and the
    // pages of the other columns without a selected row are skipped.
    options.execution.parquet.pushdown_filters = true;
    options.execution.parquet.reorder_filters = true;
    options.sql_parser.map_string_types_to_utf8view = false;
    options.execution.time_zone = Some("UTC".to_string());
    config
}

/// The cores available, read once: the standard library reads the cgroup's quota from
/// `/sys` on every call, and every query's session asks.
pub fn parallelism() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// The memory of the machine, or of the container's cgroup if it is limited.
pub fn system_memory() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    match (cgroup, total) {
        (Some(c), Some(t)) => Some(c.min(t)),
        (c, t) => c.or(t),
    }
}

/// A runtime whose queries share a memory pool of `limit` bytes (or `share` of the machine's
/// memory): an operator that would go beyond spills to disk where it can, else its query
/// fails with DataFusion's "resources exhausted" naming the largest consumers, and the
/// process goes on.
pub fn runtime_with_memory(limit: Option<u64>, share: f64) -> Result<Arc<RuntimeEnv>> {
    use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let bytes = limit
        .or_else(|| system_memory().map(|m| (m as f64 * share) as u64))
        .unwrap_or(2 << 30);
    let pool = TrackConsumersPool::new(
        FairSpillPool::new(bytes as usize),
        std::num::NonZeroUsize::new(3).expect("three"),
    );
    Ok(RuntimeEnvBuilder::new().with_memory_pool(Arc::new(pool)).build_arc()?)
}

/// A session with Strata's settings and functions.
pub fn new_context(config: SessionConfig) -> Result<SessionContext> {
    new_context_with_runtime(config, Arc::new(RuntimeEnv::default()))
}

/// A session with Strata's settings and functions on `runtime` (its memory pool).
pub fn new_context_with_runtime(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> Result<SessionContext> {
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .build();
    crate::functions::register(&mut state)?;
    Ok(SessionContext::new_with_state(state))
}
