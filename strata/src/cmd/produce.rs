//! `strata produce`: a live clickstream (with late and malformed records) to a Kafka topic.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use chrono::Utc;
use strata_core::config::env_override;

use super::load_config;
use crate::generate::Spec;
use crate::ops::shutdown_signal;
use crate::produce::{Produced, produce};

/// Produce a live clickstream (with late and malformed records) to a Kafka topic.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bootstrap servers (overrides kafka.brokers of the config, itself overridden by
    /// STRATA_KAFKA_BROKERS; with the flag or the variable, no config file is needed).
    #[arg(long)]
    brokers: Option<String>,
    #[arg(long, env = "STRATA_PRODUCE_TOPIC", default_value = "page_views")]
    topic: String,
    /// Records per second.
    #[arg(long, env = "STRATA_PRODUCE_RATE", default_value_t = 1000.0)]
    rate: f64,
    /// Stop after this many records (default: until Ctrl-C).
    #[arg(long, env = "STRATA_PRODUCE_RECORDS")]
    records: Option<u64>,
}

pub async fn run(config: &Path, args: Args) -> Result<()> {
    let brokers = match args.brokers.or_else(|| env_override("kafka.brokers")) {
        Some(b) => b,
        None => load_config(config)?.kafka.brokers.clone(),
    };
    let stop = shutdown_signal();
    let counts = Arc::new(Produced::default());
    let spec = Spec {
        events: u64::MAX,
        start: Utc::now(),
        span: std::time::Duration::from_secs(1),
        malformed_ratio: 0.01,
        late_ratio: 0.05,
        seed: rand::random(),
        max_record_bytes: 0,
        users: 100_000,
        pages: 500,
    };
    let c = counts.clone();
    let (topic, rate, records) = (args.topic, args.rate, args.records);
    tokio::task::spawn_blocking(move || produce(&brokers, &topic, rate, records, spec, &stop, &c))
        .await
        .context("the producer")??;
    eprintln!("produced {} records", counts.records.load(Ordering::Relaxed));
    Ok(())
}
