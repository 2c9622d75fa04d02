//! The one-process node: the speed layer, the batch layer on its schedule and Flight SQL
//! serving both, with its ordered shutdown. `strata run` and `strata demo` start one; tests
//! can start one in-process.
//!
//! ```text
//!  start:     speed layer ─► Flight SQL (speed states + lake) ─► /metrics ─► batch schedule
//!  shutdown:  batch schedule stops ─► speed layer archives all it consumed ─► serving stops
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use strata_batch::BatchLayer;
use strata_core::clock::SystemClock;
use strata_core::config::Config;
use strata_core::executor::CpuRuntime;
use strata_core::metrics::HealthCheck;
use strata_core::speed::SpeedSource;
use strata_speed::SpeedLayer;
use tokio_util::sync::CancellationToken;

use crate::cmd::batch::print_report;
use crate::ops::{OpsTask, finish_ops, start_ops};

/// Every layer in one process: speed, batch on its schedule, Flight SQL, /metrics.
pub struct Node {
    pub speed: Arc<SpeedLayer>,
    pub server: strata_serving::RunningServer,
    /// Where /metrics is served, if it is.
    pub metrics: Option<SocketAddr>,
    batch: Option<tokio::task::JoinHandle<strata_core::Result<()>>>,
    batch_stop: CancellationToken,
    serve_stop: CancellationToken,
    ops: OpsTask,
}

impl Node {
    /// Starts every layer; Flight SQL on `address` (port 0 for any), /metrics on `metrics`.
    /// With `print_batch_runs`, each scheduled batch run's report goes to standard output.
    pub async fn start(
        config: &Arc<Config>,
        address: SocketAddr,
        metrics: Option<SocketAddr>,
        print_batch_runs: bool,
    ) -> Result<Node> {
        let cpu = CpuRuntime::new(None)?;
        let speed = SpeedLayer::start(config, cpu.clone()).await?;
        let serve_stop = CancellationToken::new();
        let speed_source = speed.clone() as Arc<dyn SpeedSource>;
        let server =
            strata_serving::start(config, address, vec![speed_source], cpu.clone(), serve_stop.clone()).await?;
        let ops = start_ops(metrics, node_health(&speed, &server.catalog), serve_stop.clone()).await?;
        let batch_stop = CancellationToken::new();
        let batch = match strata_batch::schedule(config) {
            Some(schedule) => {
                let layer = BatchLayer::new(config.clone(), cpu.clone())?;
                let batch_stop = batch_stop.clone();
                Some(tokio::spawn(async move {
                    layer
                        .run_scheduled(&schedule, Arc::new(SystemClock), batch_stop, &|r| {
                            if let (Ok(report), true) = (r, print_batch_runs) {
                                print_report(report);
                            }
                        })
                        .await
                }))
            }
            None => {
                eprintln!("warning: [batch] has no schedule: the batch layer will not run (use `strata batch run`)");
                None
            }
        };
        Ok(Node {
            speed,
            server,
            metrics: ops.as_ref().map(|(a, _)| *a),
            batch,
            batch_stop,
            serve_stop,
            ops,
        })
    }

    /// Ordered: no new batch run; archive what the speed layer consumed; then stop serving.
    pub async fn shutdown(mut self) -> Result<()> {
        self.batch_stop.cancel();
        if let Some(b) = self.batch.take() {
            let _ = b.await;
        }
        let archived = self.speed.shutdown().await;
        self.serve_stop.cancel();
        self.server.wait().await?;
        finish_ops(self.ops.take()).await;
        archived?;
        Ok(())
    }
}

/// /health of a speed layer: failed once it has failed.
pub fn speed_health(speed: &Arc<SpeedLayer>) -> HealthCheck {
    let speed = speed.clone();
    Arc::new(move || match speed.failure() {
        None => Ok("{\"status\":\"consuming\"}".to_string()),
        Some(f) => Err(serde_json::json!({ "status": "failed", "reason": f }).to_string()),
    })
}

/// /health of a node: failed if its speed layer failed, else the serving layer's health.
fn node_health(speed: &Arc<SpeedLayer>, catalog: &Arc<strata_serving::Catalog>) -> HealthCheck {
    let (speed, catalog) = (speed_health(speed), catalog.clone());
    Arc::new(move || speed().and_then(|_| strata_serving::health(&catalog)))
}

/// Waits for `stop`, or for the speed layer to fail.
pub async fn wait_or_fail(stop: &CancellationToken, speed: &Arc<SpeedLayer>) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                if let Some(f) = speed.failure() {
                    eprintln!("error: the speed layer failed: {f}");
                    return;
                }
            }
        }
    }
}
