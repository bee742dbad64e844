//! The test endpoint's Arrow Flight side: `DoPut` as GreptimeDB answers it
//! (/work/shared/GREPTIMEDB.md, "Bulk writes"), served by the same tonic server as the gRPC
//! `GreptimeDatabase` and storing decoded rows where it keeps inserted ones, so `rows()` and
//! `row_keys()` see both paths.
//!
//! The first message (schema, request id 0, the table in the descriptor path) is answered at
//! once; then each batch is applied in order and answered `{request_id, affected_rows}`. The
//! first error ends the stream: later batches are not applied. Errors as 1.0 gives them by
//! default (`Unknown` without a code, "Execute gRPC request error"), or with their code as
//! 1.1.2+ does ([`Endpoint::bulk_errors_with_codes`]); a wrong password is
//! `Unauthenticated("auth failed")` without a code on every version. Faults: fail the N-th
//! batch, drop the stream at the N-th batch; `stall`, `fail_next` and `refuse_for` of the
//! endpoint apply to batches too.

use std::{collections::HashMap, pin::Pin, sync::Arc};

use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
    flight_service_server::{FlightService, FlightServiceServer},
    utils::flight_data_to_arrow_batch,
};
use base64::Engine as _;
use greptime_proto::v1::{ColumnSchema, Row, SemanticType, Value as GtValue, value::ValueData};
use greptimedb_ingester::{
    arrow_array::{
        Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt8Array, UInt16Array,
        UInt32Array, UInt64Array,
    },
    arrow_schema::{DataType, Schema},
};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Code, Request, Response, Status, Streaming};

use super::{Received, State, gt_error};

/// Bulk faults and the server version's error form.
#[derive(Default)]
pub(super) struct BulkState {
    /// Errors carry their greptime code (1.1.2+); default: 1.0's `Unknown` without one.
    with_codes: bool,
    /// Batches received (on every stream), and the fault set for a batch number.
    batches: usize,
    fail_at: Option<(usize, Code, u32, String)>,
    drop_at: Option<usize>,
    /// Batches applied (answered).
    pub(super) applied: usize,
    /// Streams opened.
    pub(super) streams: usize,
}

#[derive(Clone)]
pub(super) struct Flight(pub(super) Arc<std::sync::Mutex<State>>);

pub(super) fn server(state: Arc<std::sync::Mutex<State>>) -> FlightServiceServer<Flight> {
    FlightServiceServer::new(Flight(state))
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn put_result(request_id: i64, affected_rows: usize) -> PutResult {
    PutResult {
        app_metadata: serde_json::to_vec(&serde_json::json!({
            "request_id": request_id,
            "affected_rows": affected_rows,
        }))
        .unwrap()
        .into(),
    }
}

fn request_id(d: &FlightData) -> i64 {
    serde_json::from_slice::<serde_json::Value>(&d.app_metadata)
        .ok()
        .and_then(|v| v["request_id"].as_i64())
        .unwrap_or(-1)
}

/// An error in the form the configured server version answers bulk errors.
fn bulk_error(with_codes: bool, code: Code, gt: u32, msg: String) -> Status {
    if with_codes {
        gt_error(code, gt, msg)
    } else {
        // GreptimeDB ≤ 1.1.1: the code is lost on the Flight path.
        Status::new(Code::Unknown, "Execute gRPC request error")
    }
}

fn column_type(t: &DataType) -> Option<i32> {
    use greptime_proto::v1::ColumnDataType as T;
    Some(match t {
        DataType::Timestamp(_, _) => T::TimestampNanosecond,
        DataType::UInt8 => T::Uint8,
        DataType::UInt16 => T::Uint16,
        DataType::UInt32 => T::Uint32,
        DataType::UInt64 => T::Uint64,
        DataType::Utf8 => T::String,
        _ => return None,
    } as i32)
}

/// A record batch as proto rows, the form the endpoint keeps inserts in.
fn to_rows(b: &RecordBatch) -> (Vec<ColumnSchema>, Vec<Row>) {
    let schema = b
        .schema()
        .fields()
        .iter()
        .map(|f| ColumnSchema {
            column_name: f.name().clone(),
            datatype: column_type(f.data_type()).unwrap_or(0),
            semantic_type: match f
                .metadata()
                .get("greptime:semantic_type")
                .map(String::as_str)
            {
                Some("timestamp") => SemanticType::Timestamp,
                Some("tag") => SemanticType::Tag,
                _ => SemanticType::Field,
            } as i32,
            ..Default::default()
        })
        .collect();
    let rows = (0..b.num_rows())
        .map(|r| Row {
            values: b
                .columns()
                .iter()
                .map(|c| {
                    let any = c.as_any();
                    let v = if c.is_null(r) {
                        None
                    } else if let Some(a) = any.downcast_ref::<TimestampNanosecondArray>() {
                        Some(ValueData::TimestampNanosecondValue(a.value(r)))
                    } else if let Some(a) = any.downcast_ref::<UInt8Array>() {
                        Some(ValueData::U8Value(a.value(r).into()))
                    } else if let Some(a) = any.downcast_ref::<UInt16Array>() {
                        Some(ValueData::U16Value(a.value(r).into()))
                    } else if let Some(a) = any.downcast_ref::<UInt32Array>() {
                        Some(ValueData::U32Value(a.value(r)))
                    } else if let Some(a) = any.downcast_ref::<UInt64Array>() {
                        Some(ValueData::U64Value(a.value(r)))
                    } else {
                        any.downcast_ref::<StringArray>()
                            .map(|a| ValueData::StringValue(a.value(r).to_owned()))
                    };
                    GtValue { value_data: v }
                })
                .collect(),
        })
        .collect();
    (schema, rows)
}

impl Flight {
    /// Checks credentials and database, as the server does before it reads the stream.
    fn admit(&self, auth: Option<&str>, db: &str) -> Result<bool, Status> {
        let st = self.0.lock().unwrap();
        if st.down {
            return Err(Status::unavailable("the server is shutting down"));
        }
        if let Some((user, password)) = &st.user {
            let given = auth
                .and_then(|a| a.strip_prefix("Basic "))
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok());
            if given.as_deref() != Some(&format!("{user}:{password}")) {
                return Err(Status::unauthenticated("auth failed"));
            }
        }
        if !st.databases.iter().any(|d| d == db) {
            return Err(bulk_error(
                st.bulk.with_codes,
                Code::InvalidArgument,
                1004,
                format!("Failed to find schema, schema info: {db}"),
            ));
        }
        Ok(st.bulk.with_codes)
    }

    /// Applies one batch, or says why not (which ends the stream).
    fn apply(&self, db: &str, table: &str, batch: &RecordBatch) -> Result<usize, Status> {
        let mut st = self.0.lock().unwrap();
        st.handled += 1;
        st.bulk.batches += 1;
        let n = st.bulk.batches;
        let codes = st.bulk.with_codes;
        if st.down {
            return Err(Status::unavailable("the server is shutting down"));
        }
        if st.bulk.drop_at == Some(n) {
            st.bulk.drop_at = None;
            return Err(Status::unavailable("error reading a body from connection"));
        }
        if let Some((at, code, gt, msg)) = st.bulk.fail_at.clone()
            && at == n
        {
            st.bulk.fail_at = None;
            return Err(bulk_error(codes, code, gt, msg));
        }
        if let Some((left, code, gt, msg)) = st.fail.clone() {
            st.fail = (left > 1).then(|| (left - 1, code, gt, msg.clone()));
            return Err(bulk_error(codes, code, gt, msg));
        }
        let key = (db.to_owned(), table.to_owned());
        let Some(cols) = st.tables.get(&key) else {
            return Err(bulk_error(
                codes,
                Code::NotFound,
                4001,
                format!("Table not found: greptime.{db}.{table}"),
            ));
        };
        for f in batch.schema().fields() {
            let t = column_type(f.data_type()).unwrap_or(-1);
            match cols.iter().find(|(c, _)| c == f.name()) {
                Some((_, want)) if *want == t => {}
                Some(_) | None => {
                    return Err(bulk_error(
                        codes,
                        Code::InvalidArgument,
                        1004,
                        format!("column {} does not match table {table}", f.name()),
                    ));
                }
            }
        }
        let (schema, rows) = to_rows(batch);
        let affected = rows.len();
        st.bulk.applied += 1;
        if st.keys_only {
            let col = |name: &str| schema.iter().position(|c| c.column_name == name);
            let (ts_i, port_i) = (col("ts"), col("src_port"));
            for row in &rows {
                let ts = match ts_i.and_then(|i| row.values[i].value_data.as_ref()) {
                    Some(ValueData::TimestampNanosecondValue(v)) => *v,
                    _ => 0,
                };
                let port = match port_i.and_then(|i| row.values[i].value_data.as_ref()) {
                    Some(ValueData::U16Value(v)) => *v,
                    _ => 0,
                };
                st.keys.push((table.to_owned(), ts, port));
            }
        } else {
            st.received.push(Received {
                database: db.to_owned(),
                hints: Some("bulk".into()),
                auth: None,
                table: table.to_owned(),
                schema,
                rows,
            });
        }
        Ok(affected)
    }
}

#[tonic::async_trait]
impl FlightService for Flight {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoExchangeStream = Boxed<FlightData>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let header = |k: &str| {
            request
                .metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let db = header("x-greptime-db-name").unwrap_or_else(|| "public".into());
        let auth = header("x-greptime-auth");
        self.admit(auth.as_deref(), &db)?;
        let mut input = request.into_inner();
        let this = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<PutResult, Status>>(32);
        self.0.lock().unwrap().bulk.streams += 1;
        tokio::spawn(async move {
            let first = match input.next().await {
                Some(Ok(d)) => d,
                _ => return,
            };
            let table = first
                .flight_descriptor
                .as_ref()
                .and_then(|d| d.path.first().cloned())
                .unwrap_or_default();
            let schema = match Schema::try_from(&first) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                    return;
                }
            };
            if tx.send(Ok(put_result(0, 0))).await.is_err() {
                return;
            }
            while let Some(Ok(data)) = input.next().await {
                let id = request_id(&data);
                let stall = this.0.lock().unwrap().stall;
                if let Some(d) = stall {
                    tokio::time::sleep(d).await;
                }
                let result =
                    flight_data_to_arrow_batch(&data, Arc::clone(&schema), &HashMap::new())
                        .map_err(|e| Status::invalid_argument(e.to_string()))
                        .and_then(|b| this.apply(&db, &table, &b));
                match result {
                    Ok(n) => {
                        if tx.send(Ok(put_result(id, n))).await.is_err() {
                            return;
                        }
                    }
                    Err(status) => {
                        // The first error ends the stream.
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("handshake"))
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("list_flights"))
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("get_flight_info"))
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("poll_flight_info"))
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("get_schema"))
    }
    async fn do_get(&self, _: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        Err(Status::unimplemented("do_get"))
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange"))
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("do_action"))
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("list_actions"))
    }
}

impl super::Endpoint {
    /// Bulk errors carry their greptime code, as GreptimeDB 1.1.2+ sends them.
    pub fn bulk_errors_with_codes(&self) {
        self.state.lock().unwrap().bulk.with_codes = true;
    }

    /// The `n`-th bulk batch from now fails with this answer (which ends its stream).
    pub fn fail_bulk_batch(&self, n: usize, code: Code, greptime_code: u32, msg: &str) {
        let mut st = self.state.lock().unwrap();
        let at = st.bulk.batches + n;
        st.bulk.fail_at = Some((at, code, greptime_code, msg.into()));
    }

    /// The stream carrying the `n`-th bulk batch from now breaks there, unanswered.
    pub fn drop_bulk_stream_at(&self, n: usize) {
        let mut st = self.state.lock().unwrap();
        st.bulk.drop_at = Some(st.bulk.batches + n);
    }

    /// (bulk batches applied, bulk streams opened).
    pub fn bulk_counts(&self) -> (usize, usize) {
        let st = self.state.lock().unwrap();
        (st.bulk.applied, st.bulk.streams)
    }
}

impl super::Endpoint {
    /// Rows received by bulk writes (the rest came by row insert).
    pub fn bulk_rows(&self, table: &str) -> usize {
        let st = self.state.lock().unwrap();
        st.received
            .iter()
            .filter(|r| r.table == table && r.hints.as_deref() == Some("bulk"))
            .map(|r| r.rows.len())
            .sum()
    }
}
