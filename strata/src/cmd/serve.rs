//! `strata serve`: Arrow Flight SQL over the lake, merged with speed layers' states.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use strata_core::executor::CpuRuntime;
use strata_core::speed::SpeedSource;
use strata_core::tls::FlightEndpoint;

use super::load_config;
use crate::ops::{Ops, finish_ops, shutdown_signal, start_ops};

/// Serve SQL over Arrow Flight SQL, merging batch views with speed layers' states.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (overrides serve.address and STRATA_SERVE_ADDRESS).
    #[arg(long)]
    address: Option<SocketAddr>,
    /// Flight endpoints of `strata speed` processes (override serve.speed_endpoints and
    /// STRATA_SPEED_ENDPOINTS).
    #[arg(long = "speed-endpoint", value_delimiter = ',')]
    speed_endpoints: Vec<FlightEndpoint>,
    #[command(flatten)]
    ops: Ops,
}

pub async fn run(config: &Path, args: Args) -> Result<()> {
    let config = load_config(config)?;
    let address = args.address.unwrap_or(config.serve.address);
    let endpoints = if args.speed_endpoints.is_empty() {
        config.serve.speed_endpoints.clone()
    } else {
        args.speed_endpoints
    };
    let speed = endpoints
        .iter()
        .map(|e| strata_speed::flight::RemoteSpeed::new(e, &config).map(|r| Arc::new(r) as Arc<dyn SpeedSource>))
        .collect::<strata_core::Result<Vec<_>>>()?;
    let cpu = CpuRuntime::new(None)?;
    let stop = shutdown_signal();
    let mut server = strata_serving::start(&config, address, speed, cpu, stop.clone()).await?;
    let catalog = server.catalog.clone();
    let ops = start_ops(
        args.ops.address(&config),
        Arc::new(move || strata_serving::health(&catalog)),
        stop.clone(),
    )
    .await?;
    // Tests and scripts read this line to learn the port.
    println!("strata serving Flight SQL on {}", server.address);
    std::io::stdout().flush()?;
    server.wait().await?;
    finish_ops(ops).await;
    eprintln!("strata serve stopped");
    Ok(())
}
