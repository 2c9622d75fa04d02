//! The subcommands, one file each: its flags and what it runs.

pub mod batch;
pub mod executor;
pub mod generate;
pub mod import;
pub mod produce;
pub mod query;
pub mod run;
pub mod scheduler;
pub mod serve;
pub mod speed;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, bail};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use strata_core::config::Config;

/// Loads the config file, saying how to get one when there is none.
pub fn load_config(path: &Path) -> Result<Arc<Config>> {
    if !path.exists() {
        bail!(
            "no config file at {}: pass --config FILE (or STRATA_CONFIG), or start from strata.example.toml",
            path.display()
        );
    }
    Ok(Arc::new(Config::load(path)?))
}

/// `2026-11-21T10:00:00Z`, `2026-11-21T10:00:00` (UTC) or `2026-11-21`.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        return Ok(t.and_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    bail!("`{s}` is not a time: expected RFC 3339 (2026-11-21T10:00:00Z) or a date (2026-11-21)")
}
