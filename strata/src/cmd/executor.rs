//! `strata executor`: a Ballista executor with Strata's functions, which runs the tasks of
//! the batch layer's recomputes that its scheduler (`strata scheduler`) gives it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use ballista_core::config::TaskSchedulingPolicy;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use strata_core::config::{env_override, parse_scheduler};

/// How often an executor tells its scheduler it is alive.
pub const HEARTBEAT_SECONDS: u64 = 2;

/// A Ballista executor. It reads the lake's Parquet files itself: the lake's path must be
/// the same on every machine (a shared file system).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scheduler, df://host:port (default: batch.scheduler, itself overridden by
    /// STRATA_BATCH_SCHEDULER; else df://127.0.0.1:50050).
    #[arg(long)]
    scheduler: Option<String>,
    /// The address its services bind to.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The port of its Flight service (other executors and clients fetch results there).
    #[arg(long, default_value_t = 50060)]
    port: u16,
    /// The port of its gRPC service (the scheduler pushes tasks there).
    #[arg(long, default_value_t = 50061)]
    grpc_port: u16,
    /// Tasks it runs at once (default: the machine's cores).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Where it keeps shuffle files (default: a directory of its own under the system's
    /// temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

pub async fn run(args: Args) -> Result<()> {
    let scheduler = args
        .scheduler
        .or_else(|| env_override("batch.scheduler"))
        .unwrap_or_else(|| "df://127.0.0.1:50050".into());
    let (scheduler_host, scheduler_port) = parse_scheduler(&scheduler).map_err(|m| anyhow!("--scheduler: {m}"))?;
    let work_dir = args
        .work_dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("strata-executor-{}", std::process::id())));
    std::fs::create_dir_all(&work_dir).with_context(|| format!("create {}", work_dir.display()))?;
    let host = args.host.to_string();
    let config = ExecutorProcessConfig {
        bind_host: host.clone(),
        external_host: Some(host.clone()),
        port: args.port,
        grpc_port: args.grpc_port,
        scheduler_host,
        scheduler_port,
        // Keep trying while the scheduler starts.
        scheduler_connect_timeout_seconds: 30,
        vcores: args.concurrency.unwrap_or_else(strata_core::session::parallelism),
        task_scheduling_policy: TaskSchedulingPolicy::PushStaged,
        work_dir: Some(work_dir.display().to_string()),
        executor_heartbeat_interval_seconds: HEARTBEAT_SECONDS,
        override_function_registry: Some(Arc::new(strata_batch::engine::executor_functions()?)),
        ..Default::default()
    };
    println!(
        "strata executor: Flight on {host}:{}, tasks on {host}:{}, scheduler {}",
        args.port, args.grpc_port, scheduler
    );
    // It stops on SIGINT or SIGTERM by itself, telling the scheduler first.
    start_executor_process(Arc::new(config)).await.context("the executor")?;
    println!("strata executor stopped");
    Ok(())
}
