//! What every long-running subcommand shares: its /metrics and /health endpoint, and the
//! signals that stop it.

use std::net::SocketAddr;

use anyhow::Result;
use strata_core::config::Config;
use strata_core::metrics::HealthCheck;
use tokio_util::sync::CancellationToken;

/// Operations endpoints.
#[derive(Debug, Clone, clap::Args)]
pub struct Ops {
    /// Serve Prometheus /metrics and /health here (overrides ops.metrics_address, itself
    /// overridden by STRATA_METRICS_ADDRESS).
    #[arg(long)]
    pub metrics_address: Option<SocketAddr>,
}

impl Ops {
    /// The flag, else the config's `ops.metrics_address`, else none.
    pub fn address(&self, config: &Config) -> Option<SocketAddr> {
        self.metrics_address.or(config.ops.metrics_address)
    }
}

/// A running /metrics and /health endpoint.
pub type OpsTask = Option<(SocketAddr, tokio::task::JoinHandle<()>)>;

/// Serves /metrics and /health at `address` (if any) until `stop`.
pub async fn start_ops(address: Option<SocketAddr>, health: HealthCheck, stop: CancellationToken) -> Result<OpsTask> {
    let Some(address) = address else { return Ok(None) };
    let (bound, task) = strata_core::metrics::serve_ops(address, health, stop).await?;
    eprintln!("metrics on http://{bound}/metrics, health on http://{bound}/health");
    Ok(Some((bound, task)))
}

/// Waits for the endpoint of [`start_ops`] to stop.
pub async fn finish_ops(task: OpsTask) {
    if let Some((_, task)) = task {
        let _ = task.await;
    }
}

/// Cancelled on SIGINT or SIGTERM.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        eprintln!("shutting down");
        t.cancel();
    });
    token
}
