//! The speed layer over Arrow Flight: `strata speed` serves its states so that `strata serve`
//! can run in other processes; [`RemoteSpeed`] is the serving side's client.
//!
//! ```text
//!  DoGet(ticket = {"view": V, "coverage": {"topic/partition": offset, ...}, "recency_ms": W})
//!      (W, present with serve.real_time_recency: catch up with Kafka first, W ms at most,
//!      60 s at most)
//!      -> schema message, app_metadata = [{topic, partition, generation, from, until, rows}]
//!         (one entry per owned partition), then the state rows of V, partition after
//!         partition in that order
//!  DoAction("status") -> SpeedStatus as JSON
//! ```

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse,
    PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};
use strata_core::config::Config;
use strata_core::speed::{Offsets, PartRange, SpeedPart, SpeedSource, SpeedStatus};
use strata_core::tls::FlightEndpoint;
use strata_core::{Error, Result};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::SpeedLayer;

const STATUS_ACTION: &str = "status";

#[derive(Debug, Serialize, Deserialize)]
struct StatesTicket {
    view: String,
    coverage: Offsets,
    /// `serve.real_time_recency`: how many milliseconds the speed layer may wait to catch
    /// up with Kafka (absent from the tickets of a serving layer without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recency_ms: Option<u64>,
}

/// The longest a ticket may ask a speed layer to wait to catch up with Kafka.
const MAX_RECENCY_WAIT: Duration = Duration::from_secs(60);

/// A ticket's recency wait, bounded by [`MAX_RECENCY_WAIT`].
fn recency_wait(ms: u64) -> Duration {
    Duration::from_millis(ms).min(MAX_RECENCY_WAIT)
}

/// One partition's part of an answer, as announced in the schema message.
#[derive(Debug, Serialize, Deserialize)]
struct PartHeader {
    #[serde(flatten)]
    range: PartRange,
    /// State rows that follow for it.
    rows: usize,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send + 'static>>;

/// The Flight service of a speed layer.
pub struct SpeedFlight {
    speed: Arc<SpeedLayer>,
}

/// The interceptor in front of a speed layer's Flight service: with a serving token
/// configured, every call must carry it.
#[derive(Debug, Clone)]
struct TokenCheck(Option<Arc<str>>);

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> std::result::Result<Request<()>, Status> {
        let Some(token) = &self.0 else { return Ok(request) };
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        if header.and_then(|h| h.strip_prefix("Bearer ")) == Some(&**token) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "the speed layer needs the serving token (serve.auth.token)",
            ))
        }
    }
}

#[tonic::async_trait]
impl FlightService for SpeedFlight {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> std::result::Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "the speed layer takes a bearer token, no handshake",
        ))
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> std::result::Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("list_flights"))
    }

    async fn get_flight_info(&self, _: Request<FlightDescriptor>) -> std::result::Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented(
            "get_flight_info: use do_get with a states ticket",
        ))
    }

    async fn poll_flight_info(&self, _: Request<FlightDescriptor>) -> std::result::Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("poll_flight_info"))
    }

    async fn get_schema(&self, _: Request<FlightDescriptor>) -> std::result::Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("get_schema"))
    }

    async fn do_get(&self, request: Request<Ticket>) -> std::result::Result<Response<Self::DoGetStream>, Status> {
        let ticket: StatesTicket = serde_json::from_slice(&request.into_inner().ticket)
            .map_err(|e| Status::invalid_argument(format!("not a states ticket: {e}")))?;
        let schema = self
            .speed
            .state_schema(&ticket.view)
            .ok_or_else(|| Status::not_found(format!("no view named `{}`", ticket.view)))?;
        let parts = self
            .speed
            .states(&ticket.view, &ticket.coverage, ticket.recency_ms.map(recency_wait))
            .await
            .map_err(|e| strata_core::status::status(&e))?;
        let headers: Vec<PartHeader> = parts
            .iter()
            .map(|p| PartHeader {
                range: p.range.clone(),
                rows: p.batches.iter().map(RecordBatch::num_rows).sum(),
            })
            .collect();
        let headers = serde_json::to_vec(&headers).map_err(|e| Status::internal(e.to_string()))?;
        let batches = parts.into_iter().flat_map(|p| p.batches).map(Ok);
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_metadata(headers.into())
            .build(stream::iter(batches))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("do_put"))
    }

    async fn do_action(&self, request: Request<Action>) -> std::result::Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        if action.r#type != STATUS_ACTION {
            return Err(Status::invalid_argument(format!("unknown action `{}`", action.r#type)));
        }
        let status = self.speed.status().await.map_err(|e| strata_core::status::status(&e))?;
        let body = serde_json::to_vec(&status).map_err(|e| Status::internal(e.to_string()))?;
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(stream::iter(vec![Ok(result)]))))
    }

    async fn list_actions(&self, _: Request<Empty>) -> std::result::Result<Response<Self::ListActionsStream>, Status> {
        let action = ActionType {
            r#type: STATUS_ACTION.into(),
            description: "positions, lateness and memory of the speed layer (JSON)".into(),
        };
        Ok(Response::new(Box::pin(stream::iter(vec![Ok(action)]))))
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange"))
    }
}

/// Binds the address speed states will be served on (port 0 picks a free port). Beyond
/// loopback a token is required (the serving layer's `serve.auth.token`), and TLS
/// (`speed.tls_cert`, `speed.tls_key`) unless `serve.allow_plaintext_remote`.
pub async fn bind(config: &Config, address: SocketAddr) -> Result<tokio::net::TcpListener> {
    if !address.ip().is_loopback() && config.serve.auth.token.is_none() {
        return Err(Error::Input(format!(
            "refusing to serve speed states on {address} without a token: set serve.auth.token (or STRATA_AUTH_TOKEN), \
             which `strata serve` also uses to call the speed layer, or bind to 127.0.0.1"
        )));
    }
    // Validation lets the certificate and key be set only together.
    let tls = config.speed.tls_cert.is_some();
    if !address.ip().is_loopback() && !tls && !config.serve.allow_plaintext_remote {
        return Err(Error::config(
            &config.file,
            "speed.tls_cert",
            format!(
                "refusing to take the speed layer's token in plaintext on {address}: set speed.tls_cert and \
                 speed.tls_key (or STRATA_SPEED_TLS_CERT and STRATA_SPEED_TLS_KEY), bind to 127.0.0.1, or set \
                 serve.allow_plaintext_remote = true to accept the risk"
            ),
        ));
    }
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {address}"), e))
}

/// Serves a speed layer's states on `listener` (see [`bind`]) until `stop`.
pub async fn serve(
    speed: Arc<SpeedLayer>,
    listener: tokio::net::TcpListener,
    config: &Config,
    stop: CancellationToken,
) -> Result<(
    SocketAddr,
    tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>,
)> {
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("read the bound address", e))?;
    let service = FlightServiceServer::new(SpeedFlight { speed })
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    let token = config.serve.auth.token.as_deref().map(Arc::from);
    let service = tonic::service::interceptor::InterceptedService::new(service, TokenCheck(token));
    let tls = strata_core::tls::acceptor_of(config, "speed")?;
    let router = tonic::transport::Server::builder().add_service(service);
    let task = tokio::spawn(strata_core::tls::serve(router, listener, tls, stop));
    Ok((bound, task))
}

/// Cuts a stream's batches into its partitions' parts by their announced row counts (the
/// encoder may have split batches); None if the rows do not add up.
fn split_parts(headers: Vec<PartHeader>, batches: Vec<RecordBatch>) -> Option<Vec<SpeedPart>> {
    let mut batches = std::collections::VecDeque::from(batches);
    let mut parts = Vec::with_capacity(headers.len());
    for header in headers {
        let mut want = header.rows;
        let mut mine = Vec::new();
        while want > 0 {
            let batch = batches.pop_front()?;
            if batch.num_rows() <= want {
                want -= batch.num_rows();
                mine.push(batch);
            } else {
                mine.push(batch.slice(0, want));
                batches.push_front(batch.slice(want, batch.num_rows() - want));
                want = 0;
            }
        }
        parts.push(SpeedPart {
            range: header.range,
            batches: mine,
        });
    }
    batches.iter().all(|b| b.num_rows() == 0).then_some(parts)
}

/// A speed layer in another process, reached over Flight.
#[derive(Debug, Clone)]
pub struct RemoteSpeed {
    endpoint: String,
    channel: Channel,
    token: Option<String>,
}

impl RemoteSpeed {
    /// A speed endpoint of `serve.speed_endpoints`, called with `serve.auth.token`; over TLS
    /// (`https://`, `grpc+tls://`) trusting `serve.speed_tls_ca`, else the system's roots.
    pub fn new(endpoint: &FlightEndpoint, config: &Config) -> Result<RemoteSpeed> {
        let ca = if endpoint.is_tls() {
            config.speed_tls_ca()?
        } else {
            None
        };
        let written = endpoint.as_written();
        let channel = strata_core::tls::channel(endpoint, ca.as_deref(), Duration::from_secs(5))
            .map_err(|m| Error::config(&config.file, "serve.speed_endpoints", format!("`{written}`: {m}")))?;
        Ok(RemoteSpeed {
            endpoint: endpoint.url().to_string(),
            channel,
            token: config.serve.auth.token.clone(),
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = &self.token
            && let Ok(v) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", v);
        }
        request
    }

    fn error(&self, status: Status) -> Error {
        Error::Speed {
            endpoint: self.endpoint.clone(),
            message: format!("{:?}: {}", status.code(), status.message()),
        }
    }
}

#[async_trait::async_trait]
impl SpeedSource for RemoteSpeed {
    fn name(&self) -> String {
        self.endpoint.clone()
    }

    async fn states(&self, view: &str, coverage: &Offsets, recency: Option<Duration>) -> Result<Vec<SpeedPart>> {
        let ticket = serde_json::to_vec(&StatesTicket {
            view: view.to_string(),
            coverage: coverage.clone(),
            recency_ms: recency.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        let mut client = FlightServiceClient::new(self.channel.clone()).max_decoding_message_size(64 << 20);
        let response = client
            .do_get(self.request(Ticket::new(ticket)))
            .await
            .map_err(|s| self.error(s))?;
        let mut decoder = FlightDataDecoder::new(response.into_inner().map_err(FlightError::from));
        let mut headers: Option<Vec<PartHeader>> = None;
        let mut batches = Vec::new();
        while let Some(message) = decoder.next().await {
            let message = message.map_err(|e| match e {
                FlightError::Tonic(s) => self.error(*s),
                other => Error::Speed {
                    endpoint: self.endpoint.clone(),
                    message: other.to_string(),
                },
            })?;
            match &message.payload {
                DecodedPayload::Schema(_) if headers.is_none() => {
                    headers = Some(
                        serde_json::from_slice(&message.app_metadata()).map_err(|e| Error::Speed {
                            endpoint: self.endpoint.clone(),
                            message: format!("an answer without its partitions: {e}"),
                        })?,
                    );
                }
                DecodedPayload::RecordBatch(batch) => batches.push(batch.clone()),
                _ => {}
            }
        }
        let headers = headers.ok_or_else(|| Error::Speed {
            endpoint: self.endpoint.clone(),
            message: "an empty answer".into(),
        })?;
        split_parts(headers, batches).ok_or_else(|| Error::Speed {
            endpoint: self.endpoint.clone(),
            message: "its answer's rows do not add up to its partitions' counts".into(),
        })
    }

    async fn status(&self) -> Result<SpeedStatus> {
        let mut client = FlightServiceClient::new(self.channel.clone());
        let action = Action {
            r#type: STATUS_ACTION.into(),
            body: Default::default(),
        };
        let mut results = client
            .do_action(self.request(action))
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        let first = results
            .next()
            .await
            .ok_or_else(|| Error::Internal("empty status answer".into()))?
            .map_err(|s| self.error(s))?;
        serde_json::from_slice(&first.body).map_err(|e| Error::Internal(format!("bad status answer: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use strata_core::speed::{OffsetRange, TopicPartition};

    use super::*;
    use crate::fixtures::{int64_batch as batch, int64_values};

    fn header(partition: i32, rows: usize) -> PartHeader {
        PartHeader {
            range: PartRange {
                generation: 1,
                offsets: OffsetRange {
                    partition: TopicPartition::new("t", partition),
                    start: 0,
                    end: 10,
                },
            },
            rows,
        }
    }

    fn values(part: &SpeedPart) -> Vec<i64> {
        int64_values(&part.batches)
    }

    /// An answer's headers are flat JSON, as speed and serving processes always exchanged
    /// them.
    #[test]
    fn an_answer_header_is_flat() {
        let json = serde_json::to_string(&header(2, 3)).unwrap();
        assert_eq!(
            json,
            r#"{"topic":"t","partition":2,"generation":1,"from":0,"until":10,"rows":3}"#
        );
        let back: PartHeader = serde_json::from_str(&json).unwrap();
        assert_eq!((back.range, back.rows), (header(2, 3).range, 3));
    }

    #[test]
    fn a_speed_layer_with_a_token_refuses_calls_without_it() {
        use tonic::service::Interceptor as _;
        let call = |check: &mut TokenCheck, header: Option<&str>| {
            let mut request = Request::new(());
            if let Some(h) = header {
                request.metadata_mut().insert("authorization", h.parse().unwrap());
            }
            check.call(request).map(|_| ()).map_err(|s| s.code())
        };
        let mut check = TokenCheck(Some(Arc::from("t0k")));
        assert_eq!(call(&mut check, Some("Bearer t0k")), Ok(()));
        assert_eq!(call(&mut check, Some("Bearer nope")), Err(tonic::Code::Unauthenticated));
        assert_eq!(call(&mut check, None), Err(tonic::Code::Unauthenticated));
        assert_eq!(call(&mut TokenCheck(None), None), Ok(()));
    }

    /// The encoder may cut and join batches as it likes: the partitions' parts come back by
    /// their announced row counts, and a stream that does not add up is refused.
    #[test]
    fn an_answer_splits_into_its_partitions_by_row_counts() {
        let parts = split_parts(
            vec![header(0, 3), header(1, 0), header(2, 4)],
            vec![batch(0..2), batch(2..5), batch(5..7)],
        )
        .unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(values(&parts[0]), [0, 1, 2]);
        assert_eq!(values(&parts[1]), Vec::<i64>::new());
        assert_eq!(values(&parts[2]), [3, 4, 5, 6]);
        assert!(
            split_parts(vec![header(0, 3)], vec![batch(0..2)]).is_none(),
            "too few rows"
        );
        assert!(
            split_parts(vec![header(0, 1)], vec![batch(0..2)]).is_none(),
            "too many rows"
        );
    }
}
