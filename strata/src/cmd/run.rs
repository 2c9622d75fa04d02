//! `strata run`: the speed layer, the batch schedule and Flight SQL in one process.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Result;

use super::load_config;
use crate::node::{Node, wait_or_fail};
use crate::ops::{Ops, shutdown_signal};

/// Everything in one process: the speed layer, the batch layer on its schedule, and
/// Flight SQL serving both merged.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of Flight SQL (overrides serve.address and STRATA_SERVE_ADDRESS).
    #[arg(long)]
    address: Option<SocketAddr>,
    #[command(flatten)]
    ops: Ops,
}

pub async fn run(config: &Path, args: Args) -> Result<()> {
    let config = load_config(config)?;
    let address = args.address.unwrap_or(config.serve.address);
    let metrics = args.ops.address(&config);
    let stop = shutdown_signal();
    let node = Node::start(&config, address, metrics, true).await?;
    println!("strata serving Flight SQL on {}", node.server.address);
    std::io::stdout().flush()?;
    wait_or_fail(&stop, &node.speed).await;
    node.shutdown().await?;
    eprintln!("strata run stopped: everything consumed is archived");
    Ok(())
}
