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

/// A session with Strata's settings and functions.
pub fn new_context(config: SessionConfig) -> Result<SessionContext> {
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(Arc::new(RuntimeEnv::default()))
        .with_default_features()
        .build();
    crate::functions::register(&mut state)?;
    Ok(SessionContext::new_with_state(state))
}
