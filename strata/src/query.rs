//! `strata query`: a Flight SQL client that prints a result as a table, CSV, JSON or Parquet.

use std::io::Write;

use anyhow::{Context, Result, bail};
use arrow::array::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use strata_core::tls::FlightEndpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Parquet,
}

/// How to reach and log in to a server.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The Flight SQL endpoint: grpc+tls://host:port (or https://) for TLS, grpc://host:port
    /// (or http://, or host:port) for plaintext.
    #[arg(long, env = "STRATA_ENDPOINT", default_value = "grpc://127.0.0.1:50051")]
    pub endpoint: String,
    /// For TLS: the certificate authority (PEM) that signed the server's certificate; the
    /// system's roots when not given.
    #[arg(long, env = "STRATA_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// A bearer token (the server's serve.auth.token).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Log in with the Flight handshake as this user.
    #[arg(long, env = "STRATA_USER")]
    pub user: Option<String>,
    /// The user's password.
    #[arg(long, env = "STRATA_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

impl Connection {
    pub async fn connect(&self) -> Result<FlightSqlServiceClient<tonic::transport::Channel>> {
        let endpoint = FlightEndpoint::parse(&self.endpoint).map_err(|m| self.unreachable(&m))?;
        let ca = match (&self.tls_ca, endpoint.is_tls()) {
            (Some(path), true) => Some(
                std::fs::read(path).with_context(|| format!("cannot read the CA certificate `{}`", path.display()))?,
            ),
            (Some(_), false) => bail!(
                "--tls-ca is given but `{}` is plaintext: use grpc+tls://host:port",
                self.endpoint
            ),
            (None, _) => None,
        };
        let channel = strata_core::tls::connect(&endpoint, ca.as_deref(), std::time::Duration::from_secs(10))
            .await
            .map_err(|m| self.unreachable(&m))?;
        let inner = FlightServiceClient::new(channel).max_decoding_message_size(64 << 20);
        let mut client = FlightSqlServiceClient::new_from_inner(inner);
        match (&self.token, &self.user) {
            (Some(token), _) => client.set_token(token.clone()),
            (None, Some(user)) => {
                let password = self.password.clone().unwrap_or_default();
                client
                    .handshake(user, &password)
                    .await
                    .map_err(|e| self.failed(&e, &format!("login as {user} failed: ")))?;
            }
            (None, None) => {}
        }
        Ok(client)
    }

    fn unreachable(&self, why: &dyn std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot connect to {}: {why} (is `strata serve` running there, and does it serve TLS exactly when the endpoint says grpc+tls://?)",
            self.endpoint
        )
    }

    /// A failed call: the server's status with its code, or, when the connection failed
    /// under it (see [`never_reached`]), that the server was not reached.
    fn failed(&self, e: &FlightError, context: &str) -> anyhow::Error {
        match e {
            FlightError::Tonic(status) if never_reached(status) => {
                self.unreachable(&format!("{:?}: {}", status.code(), status.message()))
            }
            FlightError::Tonic(status) => anyhow::anyhow!("{context}{:?}: {}", status.code(), status.message()),
            other => anyhow::anyhow!("{context}{other}"),
        }
    }
}

/// Whether a call failed on this side of the connection: an I/O error, an HTTP/2 error this
/// side detected (what a plaintext client makes of a TLS server's answer), or a request the
/// connection closed under before it was sent, in the status's source chain. A status the
/// server sent has no source; a reset or GOAWAY the server sent is the server's answer.
fn never_reached(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<std::io::Error>() {
            return true;
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && (hyper.is_canceled() || hyper.is_closed())
        {
            return true;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return !h2.is_remote();
        }
        source = e.source();
    }
    false
}

/// Runs `sql` and returns every batch.
pub async fn run(connection: &Connection, sql: &str) -> Result<Vec<RecordBatch>> {
    let mut client = connection.connect().await?;
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| connection.failed(&e, ""))?;
    let mut batches = Vec::new();
    for endpoint in &info.endpoint {
        let Some(ticket) = endpoint.ticket.clone() else {
            bail!("the server returned an endpoint without a ticket");
        };
        let stream = client.do_get(ticket).await.map_err(|e| connection.failed(&e, ""))?;
        let mut got: Vec<RecordBatch> = stream.try_collect().await.map_err(|e| connection.failed(&e, ""))?;
        batches.append(&mut got);
    }
    if batches.is_empty() {
        let schema = info.try_decode_schema().context("decode the result schema")?;
        batches.push(RecordBatch::new_empty(std::sync::Arc::new(schema)));
    }
    Ok(batches)
}

/// Writes batches in `format`.
pub fn write(batches: &[RecordBatch], format: Format, out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Table => {
            writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(batches)?)?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" })?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(out);
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Format::Parquet => {
            let schema = batches.first().map(|b| b.schema()).context("no result")?;
            let mut buf = Vec::new();
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, None)?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
            out.write_all(&buf)?;
        }
    }
    Ok(())
}
