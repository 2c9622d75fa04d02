//! `strata executor`: a Ballista executor with Strata's functions, which runs the tasks of
//! the batch layer's recomputes that its scheduler (`strata scheduler`) gives it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use ballista_core::config::TaskSchedulingPolicy;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use strata_core::config::parse_scheduler;

/// How often an executor tells its scheduler it is alive.
pub const HEARTBEAT_SECONDS: u64 = 2;

/// A Ballista executor. It reads the lake's Parquet files itself, with the lake's location
/// and credentials from the config (a local lake must be at the same path on every machine:
/// a shared file system).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scheduler, df://host:port (default: batch.scheduler, itself overridden by
    /// STRATA_BATCH_SCHEDULER; else df://127.0.0.1:50050).
    #[arg(long)]
    scheduler: Option<String>,
    /// The address its services bind to.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The name the scheduler, the other executors and `strata batch` reach it by (default:
    /// --host).
    #[arg(long)]
    external_host: Option<String>,
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

pub async fn run(config: &Path, args: Args) -> Result<()> {
    let config = super::load_config(config)?;
    // The tasks read the lake's files: the lake's object store, from the config.
    let store = strata_batch::engine::lake_store(&config)?;
    let scheduler = args
        .scheduler
        .or_else(|| config.batch.scheduler.clone())
        .unwrap_or_else(|| "df://127.0.0.1:50050".into());
    let (scheduler_host, scheduler_port) = parse_scheduler(&scheduler).map_err(|m| anyhow!("--scheduler: {m}"))?;
    let work_dir = args
        .work_dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("strata-executor-{}", std::process::id())));
    std::fs::create_dir_all(&work_dir).with_context(|| format!("create {}", work_dir.display()))?;
    let host = args.host.to_string();
    let process = ExecutorProcessConfig {
        bind_host: host.clone(),
        external_host: Some(args.external_host.clone().unwrap_or_else(|| host.clone())),
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
        override_runtime_producer: Some(Arc::new(strata_batch::engine::executor_runtime(
            work_dir.display().to_string(),
            store,
        ))),
        ..Default::default()
    };
    println!(
        "strata executor: Flight on {host}:{}, tasks on {host}:{}, scheduler {}",
        args.port, args.grpc_port, scheduler
    );
    // It stops on SIGINT or SIGTERM by itself, telling the scheduler first.
    start_executor_process(Arc::new(process))
        .await
        .context("the executor")?;
    println!("strata executor stopped");
    Ok(())
}
