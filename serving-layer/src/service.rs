//! The Flight SQL service.
//!
//! ```text
//!  GetFlightInfo(CommandStatementQuery{sql})      plan (read-only check, DataFusion) -> schema,
//!                                                 keep the plan a moment (Plans);
//!                                                 ticket = TicketStatementQuery{handle: sql, plan id}
//!  DoGet(ticket)                                  take the kept plan (or plan again), execute on
//!                                                 the CPU runtime, stream batches as they come
//!                                                 (never collected)
//!  DoAction(CreatePreparedStatement{sql})         handle = {sql}; dataset and parameter schemas
//!  DoPut(CommandPreparedStatementQuery, params)   handle = {sql, params}
//!  GetFlightInfo/DoGet(CommandPreparedStatementQuery{handle})
//! ```
//!
//! Handles carry everything needed to run (the SQL and bound parameters), so any replica
//! can answer any ticket; the plan id in a ticket only spares the replica that planned it a
//! second planning.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginTransactionRequest, ActionBeginTransactionResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, CommandGetCatalogs,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use bytes::Bytes;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::DataFrame;
use futures::{Stream, StreamExt, TryStreamExt, stream};
use prost::Message;
use serde::{Deserialize, Serialize};
use strata_core::executor::CpuRuntime;
use strata_core::metrics::{Counter, Histogram, ResultLabel, metrics};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Authenticator;
use crate::catalog::{Catalog, SCHEMAS};
use crate::metadata::{SQL_INFO, XDBC_TYPES, foreign_keys_schema, primary_keys_schema};
use strata_core::status::df_status;

use crate::sql::{check_read_only, number_placeholders, read_only_options};

type DoGetStream = <StrataFlightSql as FlightService>::DoGetStream;

/// What a statement handle and a ticket carry.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Handle {
    sql: String,
    /// Bound parameters: an Arrow IPC stream, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<String>,
    /// In a ticket: the plan GetFlightInfo kept for it (see [`Plans`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plan: Option<String>,
}

impl Handle {
    fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a handle serializes"))
    }

    fn decode(bytes: &[u8]) -> Result<Handle, Status> {
        serde_json::from_slice(bytes)
            .map_err(|_| Status::invalid_argument("unknown statement handle: prepare the statement again"))
    }

    fn params(&self) -> Result<Option<Vec<ScalarValue>>, Status> {
        let Some(encoded) = &self.params else {
            return Ok(None);
        };
        let bytes = BASE64_STANDARD
            .decode(encoded)
            .map_err(|_| Status::invalid_argument("corrupt parameters in the statement handle"))?;
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| Status::invalid_argument(format!("corrupt parameters: {e}")))?;
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(format!("corrupt parameters: {e}")))?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let Some(batch) = batches.into_iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        if rows > 1 {
            return Err(Status::invalid_argument(format!(
                "a query takes one row of parameters, got {rows}"
            )));
        }
        let values = batch
            .columns()
            .iter()
            .map(|c| ScalarValue::try_from_array(c, 0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| df_status(&e))?;
        Ok(Some(values))
    }
}

/// Bound values read as the types the planner gave their parameters: a client binds what
/// its setter makes (JDBC's `setLong` for an INT parameter, `setTimestamp` in milliseconds
/// for a microsecond column), the plan compares in the column's type.
fn as_parameter_types(df: &DataFrame, values: Vec<ScalarValue>) -> Result<Vec<ScalarValue>, Status> {
    let types = df.logical_plan().get_parameter_types().map_err(|e| df_status(&e))?;
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| match types.get(&format!("${}", i + 1)) {
            Some(Some(want)) if value.data_type() != *want => {
                let cast = value.cast_to(want).map_err(|e| {
                    Status::invalid_argument(format!(
                        "parameter {} is {} and cannot be read as {want}: {}",
                        i + 1,
                        value.data_type(),
                        e.strip_backtrace()
                    ))
                })?;
                // Only where the parameter's type holds the value exactly (1.5 bound for an
                // integer stays 1.5, and compares as a float).
                let exact = cast.cast_to(&value.data_type()).is_ok_and(|back| back == value);
                Ok(if exact { cast } else { value })
            }
            _ => Ok(value),
        })
        .collect()
}

/// The type a prepared statement's parameter schema gives a parameter. Timestamps are named
/// in milliseconds whatever the column's unit: the Flight SQL JDBC driver (through 18.x)
/// writes `setTimestamp`'s epoch milliseconds into a vector of the unit the server names,
/// unconverted, so a microsecond parameter would receive a time a thousand times too early.
/// Named in milliseconds it arrives right, and [`as_parameter_types`] reads it exactly in
/// the column's unit; clients that bind their own types (ADBC) are unaffected.
fn advertised_parameter_type(planned: Option<DataType>) -> DataType {
    match planned {
        Some(DataType::Timestamp(_, zone)) => DataType::Timestamp(TimeUnit::Millisecond, zone),
        Some(t) => t,
        None => DataType::Null,
    }
}

/// How long a plan made by GetFlightInfo waits for the DoGet of its ticket. A client asks
/// for the data right after the schema; a later DoGet plans again, on fresher states.
const PLAN_REUSE: Duration = Duration::from_secs(1);
/// At most this many plans wait (each holds the speed states it gathered).
const PLANS_KEPT: usize = 256;

/// Plans made by GetFlightInfo, kept for the DoGet of their ticket: a query is planned once,
/// not twice (planning a view resolves its batch version and gathers its speed states).
/// Its physical plan is made on the CPU runtime from the moment GetFlightInfo answers, while
/// the client turns the answer into a DoGet. A ticket whose plan is gone (taken, expired, or
/// made by another replica) plans again.
#[derive(Debug, Default)]
struct Plans {
    kept: Mutex<VecDeque<Kept>>,
}

#[derive(Debug)]
struct Kept {
    id: String,
    /// When its planning started.
    started: Instant,
    sql: String,
    params: Option<String>,
    schema: SchemaRef,
    physical: Physical,
}

/// A statement's physical plan, being made on the CPU runtime (dropped: its planning stops).
struct Physical(Pin<Box<dyn Future<Output = Result<Planned, DataFusionError>> + Send>>);

impl std::fmt::Debug for Physical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Physical")
    }
}

/// A physical plan, with the task context it runs in and how long planning took.
struct Planned {
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    took: Duration,
}

impl Physical {
    /// Starts planning `df` physically on `cpu`.
    fn start(cpu: &CpuRuntime, df: DataFrame) -> Self {
        let planning = cpu.spawn(async move {
            let started = Instant::now();
            let task = Arc::new(df.task_ctx());
            let plan = df.create_physical_plan().await?;
            Ok(Planned {
                plan,
                task,
                took: started.elapsed(),
            })
        });
        Physical(Box::pin(async move { planning.await? }))
    }
}

/// What a kept plan gives its DoGet: when its planning started, its output schema, its
/// physical plan.
type Taken = (Instant, SchemaRef, Physical);

impl Plans {
    /// Keeps a plan of `handle`; returns its id.
    fn keep(&self, handle: &Handle, started: Instant, schema: SchemaRef, physical: Physical) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut kept = self.kept.lock().expect("plans lock");
        Self::expire(&mut kept);
        if kept.len() >= PLANS_KEPT {
            kept.pop_front();
        }
        kept.push_back(Kept {
            id: id.clone(),
            started,
            sql: handle.sql.clone(),
            params: handle.params.clone(),
            schema,
            physical,
        });
        id
    }

    /// The plan a ticket's handle names, if it is still kept and is a plan of that handle.
    fn take(&self, handle: &Handle) -> Option<Taken> {
        let id = handle.plan.as_deref()?;
        let mut kept = self.kept.lock().expect("plans lock");
        Self::expire(&mut kept);
        let i = kept
            .iter()
            .position(|k| k.id == id && k.sql == handle.sql && k.params == handle.params)?;
        kept.remove(i).map(|k| (k.started, k.schema, k.physical))
    }

    fn expire(kept: &mut VecDeque<Kept>) {
        while kept.front().is_some_and(|k| k.started.elapsed() > PLAN_REUSE) {
            kept.pop_front();
        }
    }
}

/// The Flight SQL service over a [`Catalog`].
#[derive(Debug, Clone)]
pub struct StrataFlightSql {
    catalog: Arc<Catalog>,
    auth: Arc<Authenticator>,
    cpu: CpuRuntime,
    plans: Arc<Plans>,
    /// A query still running this long after it arrived fails with DEADLINE_EXCEEDED.
    timeout: Duration,
    metrics: QueryMetrics,
}

/// The handles a query updates: `strata_queries_total{result}` and `strata_query_seconds`.
#[derive(Debug, Clone)]
struct QueryMetrics {
    ok: Counter,
    error: Counter,
    seconds: Histogram,
}

impl QueryMetrics {
    fn new() -> Self {
        let m = metrics();
        QueryMetrics {
            ok: m.queries.get_or_create_owned(&ResultLabel::OK),
            error: m.queries.get_or_create_owned(&ResultLabel::ERROR),
            seconds: m.query_seconds.clone(),
        }
    }
}

impl StrataFlightSql {
    pub fn new(catalog: Arc<Catalog>, auth: Arc<Authenticator>, cpu: CpuRuntime, timeout: Duration) -> Self {
        StrataFlightSql {
            catalog,
            auth,
            cpu,
            plans: Arc::default(),
            timeout,
            metrics: QueryMetrics::new(),
        }
    }

    fn deadline_exceeded(&self) -> Status {
        Status::deadline_exceeded(format!(
            "the query ran longer than the server allows (serve.query_timeout = {})",
            humantime_secs(self.timeout)
        ))
    }

    /// Plans a statement: refused if it is not read-only, the planner's message if it does
    /// not plan. `?` parameters are numbered; bound values are read as the types the
    /// planner gave their parameters.
    async fn plan(&self, handle: &Handle) -> Result<DataFrame, Status> {
        check_read_only(&handle.sql)?;
        let sql = number_placeholders(&handle.sql)?;
        let ctx = self.catalog.session();
        let df = ctx
            .sql_with_options(&sql, read_only_options())
            .await
            .map_err(|e| df_status(&e))?;
        match handle.params()? {
            Some(values) => {
                let values = as_parameter_types(&df, values)?;
                df.with_param_values(ParamValues::from(values))
                    .map_err(|e| df_status(&e))
            }
            None => Ok(df),
        }
    }

    /// Plans `handle` for its schema and keeps the plan for the DoGet of the ticket that
    /// `ticket` makes of the handle.
    async fn flight_info(
        &self,
        mut handle: Handle,
        ticket: impl FnOnce(&Handle) -> Ticket,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let started = Instant::now();
        handle.plan = None;
        // Planning reads the lake (and asks the speed layers): under the deadline too.
        let df = tokio::time::timeout(self.timeout, self.plan(&handle))
            .await
            .map_err(|_| self.deadline_exceeded())??;
        let schema = output_schema(df.schema().as_arrow());
        let physical = Physical::start(&self.cpu, df);
        handle.plan = Some(self.plans.keep(&handle, started, schema.clone(), physical));
        let ticket = ticket(&handle);
        FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("encode the schema: {e}")))
            .map(|info| {
                info.with_endpoint(FlightEndpoint::new().with_ticket(ticket))
                    .with_descriptor(descriptor)
            })
    }

    /// Runs a statement and streams its batches as they are produced.
    async fn execute(&self, handle: Handle) -> Result<Response<DoGetStream>, Status> {
        let started = Instant::now();
        let result = self.execute_metered(handle, started).await;
        if result.is_err() {
            self.metrics.error.inc();
        }
        result
    }

    async fn execute_metered(&self, handle: Handle, started: Instant) -> Result<Response<DoGetStream>, Status> {
        let (started, schema, physical) = match self.plans.take(&handle) {
            Some(kept) => kept,
            None => {
                let df = self.plan(&handle).await?;
                let schema = output_schema(df.schema().as_arrow());
                (started, schema, Physical::start(&self.cpu, df))
            }
        };
        let deadline = tokio::time::Instant::from_std(
            started
                .checked_add(self.timeout)
                .unwrap_or_else(|| started + Duration::from_secs(86_400 * 365)),
        );
        let planned = tokio::time::timeout_at(deadline, physical.0)
            .await
            .map_err(|_| self.deadline_exceeded())?
            .map_err(|e| df_status(&e))?;
        let physical_in = planned.took;
        // Executing a plan may spawn its tasks: on the CPU runtime.
        let execute = async move { datafusion::physical_plan::execute_stream(planned.plan, planned.task) };
        let stream = tokio::time::timeout_at(deadline, self.cpu.spawn(execute))
            .await
            .map_err(|_| self.deadline_exceeded())?
            .map_err(|e| df_status(&e))?
            .map_err(|e| df_status(&e))?;
        let stream = self.cpu.run_stream(stream);
        let out_schema = schema.clone();
        let mut metered = Metered {
            started,
            ok: true,
            metrics: self.metrics.clone(),
        };
        // Past the deadline the stream ends with DEADLINE_EXCEEDED; dropping the query's
        // stream stops its work on the CPU runtime.
        let batches = Deadline {
            inner: stream,
            at: Box::pin(tokio::time::sleep_until(deadline)),
            expired: Some(self.deadline_exceeded()),
        }
        .map(move |b| {
            if b.is_err() {
                metered.failed();
            }
            b.and_then(|b| cast_to(&b, &out_schema).map_err(FlightError::Arrow))
        });
        tracing::debug!(sql = %handle.sql, planned_in = ?started.elapsed(), physical_plan = ?physical_in, "query started");
        encode(schema, batches)
    }

    fn handle_from_any(bytes: &[u8]) -> Result<Handle, Status> {
        Handle::decode(bytes)
    }
}

/// A query's batches until its deadline, then DEADLINE_EXCEEDED (and the query dropped).
struct Deadline {
    inner: datafusion::execution::SendableRecordBatchStream,
    at: Pin<Box<tokio::time::Sleep>>,
    /// The error to end with; None once the stream has ended.
    expired: Option<Status>,
}

impl Stream for Deadline {
    type Item = Result<RecordBatch, FlightError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.expired.is_none() {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(b)) => {
                return Poll::Ready(Some(b.map_err(|e| FlightError::Tonic(Box::new(df_status(&e))))));
            }
            Poll::Ready(None) => {
                self.expired = None;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        match self.at.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let status = self.expired.take().expect("checked above");
                // The query stops now, not when the client drops the answer.
                self.inner = Box::pin(datafusion::physical_plan::stream::EmptyRecordBatchStream::new(
                    self.inner.schema(),
                ));
                Poll::Ready(Some(Err(FlightError::Tonic(Box::new(status)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Records a query's duration when its stream ends (or the client goes away).
struct Metered {
    started: Instant,
    ok: bool,
    metrics: QueryMetrics,
}

impl Metered {
    fn failed(&mut self) {
        self.ok = false;
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        let result = if self.ok { &self.metrics.ok } else { &self.metrics.error };
        result.inc();
        self.metrics.seconds.observe(self.started.elapsed().as_secs_f64());
    }
}

/// "30s", "5m", "1h 30m".
fn humantime_secs(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h {m}m {s}s"),
    }
}

/// The schema sent to clients: no view types (the JDBC driver cannot read them).
pub fn output_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Utf8View => DataType::Utf8,
                DataType::BinaryView => DataType::Binary,
                t => t.clone(),
            };
            f.as_ref().clone().with_data_type(t)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A batch cast to `schema` (same columns, possibly other encodings or nullability).
pub(crate) fn cast_to(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, arrow::error::ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

fn encode<S>(schema: SchemaRef, batches: S) -> Result<Response<DoGetStream>, Status>
where
    S: Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
{
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Ok(Response::new(Box::pin(stream)))
}

fn one_batch(schema: SchemaRef, batch: Result<RecordBatch, FlightError>) -> Result<Response<DoGetStream>, Status> {
    encode(schema, stream::once(async move { batch }))
}

fn empty_answer(schema: SchemaRef) -> Result<Response<DoGetStream>, Status> {
    encode(schema, stream::empty())
}

fn info_for(
    schema: &Schema,
    command_ticket: Vec<u8>,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("encode the schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(command_ticket)))
        .with_descriptor(request.into_inner());
    Ok(Response::new(info))
}

fn schema_bytes(schema: &Schema) -> Result<Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(format!("encode a schema: {e}")))?;
    Ok(bytes)
}

const READ_ONLY: &str = "Strata's SQL is read-only: it serves views defined in strata.toml and the lake's tables";

#[tonic::async_trait]
impl FlightSqlService for StrataFlightSql {
    type FlightService = StrataFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        let token = self.auth.handshake(request.metadata())?;
        let bearer: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token is not ASCII"))?;
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::from(token),
        };
        let output: Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>> =
            Box::pin(stream::iter(vec![Ok(response)]));
        let mut response = Response::new(output);
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = Handle {
            sql: query.query,
            params: None,
            plan: None,
        };
        let ticket = |handle: &Handle| {
            Ticket::new(
                TicketStatementQuery {
                    statement_handle: handle.encode(),
                }
                .as_any()
                .encode_to_vec(),
            )
        };
        let info = self.flight_info(handle, ticket, request.into_inner()).await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = Self::handle_from_any(&cmd.prepared_statement_handle)?;
        let ticket = |handle: &Handle| {
            Ticket::new(
                CommandPreparedStatementQuery {
                    prepared_statement_handle: handle.encode(),
                }
                .as_any()
                .encode_to_vec(),
            )
        };
        let info = self.flight_info(handle, ticket, request.into_inner()).await?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.execute(Handle::decode(&ticket.statement_handle)?).await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.execute(Handle::decode(&query.prepared_statement_handle)?).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let handle = Handle {
            sql: query.query,
            params: None,
            plan: None,
        };
        let df = self.plan(&handle).await?;
        let dataset_schema = output_schema(df.schema().as_arrow());
        let mut parameters: Vec<(String, Option<DataType>)> = df
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| df_status(&e))?
            .into_iter()
            .collect();
        parameters.sort_by_key(|(name, _)| name.trim_start_matches('$').parse::<usize>().unwrap_or(usize::MAX));
        let parameter_schema = Schema::new(
            parameters
                .into_iter()
                .map(|(name, t)| Field::new(name, advertised_parameter_type(t), true))
                .collect::<Vec<_>>(),
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.encode(),
            dataset_schema: schema_bytes(&dataset_schema)?,
            parameter_schema: schema_bytes(&parameter_schema)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let mut handle = Handle::decode(&query.prepared_statement_handle)?;
        let batches: Vec<RecordBatch> = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        )
        .try_collect()
        .await?;
        let mut ipc = Vec::new();
        if let Some(first) = batches.first() {
            let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &first.schema())
                .map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
            for b in &batches {
                writer
                    .write(b)
                    .map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
            }
            writer
                .finish()
                .map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
        }
        handle.params = (!ipc.is_empty()).then(|| BASE64_STANDARD.encode(&ipc));
        // Planning now reports a bad binding at bind time.
        self.plan(&handle).await?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.encode()),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        // Handles hold no server state: nothing to free.
        Ok(())
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::permission_denied(READ_ONLY))
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::permission_denied(READ_ONLY))
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::permission_denied(READ_ONLY))
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        Err(Status::unimplemented(
            "Strata has no transactions: its SQL is read-only",
        ))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        info_for(&schema, query.as_any().encode_to_vec(), request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder: GetCatalogsBuilder = query.into_builder();
        builder.append(strata_core::session::CATALOG);
        let schema = builder.schema();
        one_batch(schema, builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        info_for(&schema, query.as_any().encode_to_vec(), request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder: GetDbSchemasBuilder = query.into_builder();
        for schema in SCHEMAS {
            builder.append(strata_core::session::CATALOG, schema);
        }
        let schema = builder.schema();
        one_batch(schema, builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        info_for(&schema, query.as_any().encode_to_vec(), request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder: GetTablesBuilder = query.into_builder();
        for schema in SCHEMAS {
            for table in self.catalog.table_names(schema) {
                let table_schema = self
                    .catalog
                    .table_schema(schema, &table)
                    .map(|s| output_schema(&s))
                    .unwrap_or_else(|| Arc::new(Schema::empty()));
                builder
                    .append(
                        strata_core::session::CATALOG,
                        schema,
                        &table,
                        Catalog::table_type(schema),
                        &table_schema,
                    )
                    .map_err(Status::from)?;
            }
        }
        let schema = builder.schema();
        one_batch(schema, builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        info_for(&schema, query.as_any().encode_to_vec(), request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for t in ["SYSTEM TABLE", "TABLE", "VIEW"] {
            builder.append(t);
        }
        let schema = builder.schema();
        one_batch(schema, builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&SQL_INFO).schema();
        info_for(&schema, query.as_any().encode_to_vec(), request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let builder = query.into_builder(&SQL_INFO);
        let schema = builder.schema();
        one_batch(schema, builder.build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(&XDBC_TYPES).schema();
        info_for(&schema, query.as_any().encode_to_vec(), request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let builder = query.into_builder(&XDBC_TYPES);
        let schema = builder.schema();
        one_batch(schema, builder.build())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info_for(&primary_keys_schema(), query.as_any().encode_to_vec(), request)
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        empty_answer(primary_keys_schema())
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info_for(&foreign_keys_schema(), query.as_any().encode_to_vec(), request)
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        empty_answer(foreign_keys_schema())
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info_for(&foreign_keys_schema(), query.as_any().encode_to_vec(), request)
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        empty_answer(foreign_keys_schema())
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info_for(&foreign_keys_schema(), query.as_any().encode_to_vec(), request)
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        empty_answer(foreign_keys_schema())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    fn handle(sql: &str, plan: Option<String>) -> Handle {
        Handle {
            sql: sql.to_string(),
            params: None,
            plan,
        }
    }

    async fn plan_of(sql: &str) -> DataFrame {
        SessionContext::new().sql(sql).await.unwrap()
    }

    /// Keeps a plan of `sql` as GetFlightInfo does.
    async fn keep(plans: &Plans, cpu: &CpuRuntime, sql: &str, started: Instant) -> String {
        let df = plan_of(sql).await;
        let schema = output_schema(df.schema().as_arrow());
        plans.keep(&handle(sql, None), started, schema, Physical::start(cpu, df))
    }

    #[tokio::test]
    async fn a_kept_plan_is_taken_once_by_a_ticket_of_its_own_statement() {
        let plans = Plans::default();
        let cpu = CpuRuntime::new(Some(1)).unwrap();
        let one = keep(&plans, &cpu, "SELECT 1", Instant::now()).await;
        let two = keep(&plans, &cpu, "SELECT 2", Instant::now()).await;
        assert_ne!(one, two);
        // Another statement naming the plan does not get it.
        assert!(plans.take(&handle("SELECT 2", Some(one.clone()))).is_none());
        assert!(plans.take(&handle("SELECT 1", None)).is_none(), "no plan named");
        let (_, schema, physical) = plans.take(&handle("SELECT 1", Some(one.clone()))).expect("kept");
        assert_eq!(schema.fields().len(), 1);
        let planned = physical.0.await.unwrap();
        let batches = datafusion::physical_plan::collect(planned.plan, planned.task)
            .await
            .unwrap();
        assert_eq!(
            batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .value(0),
            1
        );
        assert!(plans.take(&handle("SELECT 1", Some(one))).is_none(), "taken once");
        // Bound parameters are part of the statement.
        let mut bound = handle("SELECT 2", Some(two.clone()));
        bound.params = Some("other".into());
        assert!(plans.take(&bound).is_none());
        assert!(plans.take(&handle("SELECT 2", Some(two))).is_some());
    }

    #[tokio::test]
    async fn kept_plans_expire_and_are_bounded() {
        let plans = Plans::default();
        let cpu = CpuRuntime::new(Some(1)).unwrap();
        let long_ago = Instant::now()
            .checked_sub(PLAN_REUSE * 2)
            .expect("an instant in the past");
        let stale = keep(&plans, &cpu, "SELECT 1", long_ago).await;
        assert!(plans.take(&handle("SELECT 1", Some(stale))).is_none(), "expired");
        let mut ids = Vec::new();
        for _ in 0..=PLANS_KEPT {
            ids.push(keep(&plans, &cpu, "SELECT 1", Instant::now()).await);
        }
        assert_eq!(plans.kept.lock().unwrap().len(), PLANS_KEPT);
        assert!(
            plans.take(&handle("SELECT 1", Some(ids[0].clone()))).is_none(),
            "the oldest went"
        );
        assert!(plans.take(&handle("SELECT 1", Some(ids[PLANS_KEPT].clone()))).is_some());
    }
}
