//! `strata scheduler`: a Ballista scheduler that plans with Strata's functions, for the
//! batch layer's recomputes on a cluster (`[batch] engine = "ballista"`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use ballista_core::config::TaskSchedulingPolicy;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

use crate::ops::shutdown_signal;

/// How long an executor may go without a heartbeat before its tasks run elsewhere (its
/// heartbeat comes every [`super::executor::HEARTBEAT_SECONDS`]).
pub const EXECUTOR_TIMEOUT_SECONDS: u64 = 20;

/// A Ballista scheduler for the batch layer's recomputes. Executors (`strata executor`)
/// register with it; `strata batch` submits each view's recompute to it. It reads the
/// config for the lake's location and credentials.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to listen (port 0: any free port; the address is printed).
    #[arg(long, env = "STRATA_SCHEDULER_ADDRESS", default_value = "127.0.0.1:50050")]
    address: SocketAddr,
}

pub async fn run(config: &Path, args: Args) -> Result<()> {
    // Plans are made here, file listings included: the scheduler reads the lake too.
    let store = strata_batch::engine::lake_store(&*super::load_config(config)?)?;
    let listener = tokio::net::TcpListener::bind(args.address)
        .await
        .with_context(|| format!("bind the scheduler to {}", args.address))?;
    let bound = listener.local_addr().context("the scheduler's address")?;
    let mut config = SchedulerConfig::default()
        .with_hostname(bound.ip().to_string())
        .with_port(bound.port())
        .with_scheduler_policy(TaskSchedulingPolicy::PushStaged)
        .with_override_session_builder(Arc::new(strata_batch::engine::scheduler_session(store)))
        .with_no_executors_grace_period_seconds(EXECUTOR_TIMEOUT_SECONDS);
    config.bind_host = bound.ip().to_string();
    config.executor_timeout_seconds = EXECUTOR_TIMEOUT_SECONDS;
    config.expire_dead_executor_interval_seconds = 2;
    config.validate().context("the scheduler's settings")?;
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .context("the scheduler's cluster state")?;
    let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
        .await
        .context("start the scheduler")?;
    println!("strata scheduler listening on df://{bound}");
    let stop = shutdown_signal();
    tokio::select! {
        served = start_grpc_service_with_listener(listener, scheduler) => {
            served.context("the scheduler's gRPC service")?;
        }
        () = stop.cancelled() => {}
    }
    println!("strata scheduler stopped");
    Ok(())
}
