//! `strata-serving`: the serving layer, an Arrow Flight SQL server over the lake.
//!
//! ```text
//!  SQL clients (ADBC, JDBC/DBeaver, pyarrow.flight, strata query)
//!        │  Flight SQL over gRPC (auth: handshake Basic -> Bearer, or a static token)
//!        ▼
//!  service: read-only check ─► DataFusion plan over the catalog ─► stream from do_get
//!        ▼
//!  catalog: views (finalize(merge(states))), raw and rejected tables, system tables,
//!           each resolved to its newest committed Delta version when a query plans
//! ```

pub mod auth;
pub mod catalog;
pub mod compose;
pub mod metadata;
pub mod partitions;
pub mod service;
pub mod sql;
mod state_rows;

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use strata_core::config::Config;
use strata_core::executor::CpuRuntime;
use strata_core::{Error, Result};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

pub use catalog::Catalog;
pub use service::StrataFlightSql;

/// Largest message a client may send (parameters) or receive.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A running Flight SQL server; stopped when `stop` is cancelled (or the handle dropped).
#[derive(Debug)]
pub struct RunningServer {
    pub address: SocketAddr,
    pub catalog: Arc<Catalog>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>>,
    /// The watch of unowned partitions (aborted with the server).
    watch: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting calls, lets the calls in flight finish, and waits.
    pub async fn shutdown(mut self) -> Result<()> {
        self.stop.cancel();
        self.wait().await
    }

    /// Waits until the server stops (after `stop` is cancelled).
    pub async fn wait(&mut self) -> Result<()> {
        if let Some(task) = self.task.take() {
            task.await
                .map_err(|e| Error::Internal(format!("the Flight server task failed: {e}")))?
                .map_err(|e| Error::Internal(format!("the Flight server failed: {e}")))?;
        }
        self.watch.abort();
        Ok(())
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop.cancel();
        self.watch.abort();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Refuses to serve beyond loopback without authentication, or with authentication over
/// plaintext, unless told to.
pub fn check_exposure(config: &Config, address: &SocketAddr) -> Result<()> {
    if !address.ip().is_loopback() && !config.serve.auth.enabled() && !config.serve.allow_unauthenticated_remote {
        return Err(Error::config(
            &config.file,
            "serve.auth",
            format!(
                "refusing to serve on {address} without authentication: anyone who can reach it could read the lake. \
                 Set serve.auth.token (or STRATA_AUTH_TOKEN) or serve.auth.users, bind to 127.0.0.1, \
                 or set serve.allow_unauthenticated_remote = true to accept the risk"
            ),
        ));
    }
    // Validation lets the certificate and key be set only together.
    let tls = config.serve.tls_cert.is_some();
    if !address.ip().is_loopback() && config.serve.auth.enabled() && !tls && !config.serve.allow_plaintext_remote {
        return Err(Error::config(
            &config.file,
            "serve.tls_cert",
            format!(
                "refusing to take bearer tokens and passwords in plaintext on {address}: anyone on the way could \
                 read them. Set serve.tls_cert and serve.tls_key (or STRATA_TLS_CERT and STRATA_TLS_KEY), \
                 bind to 127.0.0.1, or set serve.allow_plaintext_remote = true to accept the risk"
            ),
        ));
    }
    Ok(())
}

/// The serving layer's health for /health: "serving", or "degraded" with the partitions no
/// live speed process has consumed for longer than the grace (answers stay exact but miss
/// their newest events).
pub fn health(catalog: &Catalog) -> std::result::Result<String, String> {
    let alarms = catalog.watch().alarms(std::time::Instant::now());
    if alarms.is_empty() {
        return Ok(serde_json::json!({ "status": "serving" }).to_string());
    }
    let unowned: Vec<serde_json::Value> = alarms
        .iter()
        .map(|(tp, since)| {
            serde_json::json!({ "topic": tp.topic, "partition": tp.partition, "unowned_seconds": since.as_secs() })
        })
        .collect();
    Ok(serde_json::json!({ "status": "degraded", "unowned_partitions": unowned }).to_string())
}

/// Binds `address` (port 0 picks a free port) and serves the catalog, merging views with
/// the `speed` layers' states, until `stop`.
pub async fn start(
    config: &Config,
    address: SocketAddr,
    speed: Vec<Arc<dyn strata_core::speed::SpeedSource>>,
    cpu: CpuRuntime,
    stop: CancellationToken,
) -> Result<RunningServer> {
    check_exposure(config, &address)?;
    let catalog = Catalog::new(config, speed).await?;
    let watch = tokio::spawn(partitions::run(
        catalog.watch().clone(),
        Arc::new(config.clone()),
        catalog.speed().to_vec(),
        config.serve.partition_check_interval,
        config.serve.speed_timeout,
        stop.clone(),
    ));
    let auth = Arc::new(auth::Authenticator::new(&config.serve.auth));
    let service = StrataFlightSql::new(catalog.clone(), auth.clone(), cpu, config.serve.query_timeout);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {address}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("read the bound address", e))?;
    let svc = FlightServiceServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let svc = InterceptedService::new(svc, auth::Interceptor(auth));
    let tls = strata_core::tls::acceptor_of(config, "serve")?;
    let router = Server::builder().add_service(svc);
    let task = tokio::spawn(strata_core::tls::serve(router, listener, tls, stop.clone()));
    Ok(RunningServer {
        address: bound,
        catalog,
        stop,
        task: Some(task),
        watch,
    })
}
