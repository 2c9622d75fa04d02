//! `strata speed`: consume Kafka, keep views live in memory, archive to the lake exactly once.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Result;
use strata_core::executor::CpuRuntime;
use strata_speed::SpeedLayer;
use tokio_util::sync::CancellationToken;

use super::load_config;
use crate::node::{speed_health, wait_or_fail};
use crate::ops::{Ops, finish_ops, shutdown_signal, start_ops};

/// The speed layer: consume Kafka, keep views live in memory, archive to the lake.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to serve states to `strata serve` (overrides speed.address and
    /// STRATA_SPEED_ADDRESS).
    #[arg(long)]
    address: Option<SocketAddr>,
    #[command(flatten)]
    ops: Ops,
}

pub async fn run(config: &Path, args: Args) -> Result<()> {
    let config = load_config(config)?;
    let address = args.address.unwrap_or(config.speed.address);
    let cpu = CpuRuntime::new(None)?;
    let stop = shutdown_signal();
    // Bound first: the speed layer is known to the serving layer by that address.
    let listener = strata_speed::flight::bind(&config, address).await?;
    let mut named = (*config).clone();
    named.speed.address = listener.local_addr()?;
    let speed = SpeedLayer::start(&named, cpu).await?;
    let flight_stop = CancellationToken::new();
    let (bound, flight) = strata_speed::flight::serve(speed.clone(), listener, &config, flight_stop.clone()).await?;
    let ops = start_ops(args.ops.address(&config), speed_health(&speed), flight_stop.clone()).await?;
    println!("strata speed serving states on {bound}");
    std::io::stdout().flush()?;
    wait_or_fail(&stop, &speed).await;
    // Ordered: archive everything consumed, then stop answering.
    let archived = speed.shutdown().await;
    flight_stop.cancel();
    let _ = flight.await;
    finish_ops(ops).await;
    archived?;
    eprintln!("strata speed stopped");
    Ok(())
}
