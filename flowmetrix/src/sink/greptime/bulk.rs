//! The bulk write path: batches as Arrow record batches over Arrow Flight `DoPut`, the
//! ingester's bulk protocol (`greptimedb-ingester` `src/bulk.rs`), into a table that exists.
//!
//! One stream per endpoint, opened on first use and kept open: the schema message (request
//! id 0, with the table in its descriptor) is acknowledged at once, then every batch is
//! sent with its own request id and the server answers `{request_id, affected_rows}` per
//! batch, in order. A batch counts as written only when its answer came. The first error
//! ends the stream: the error belongs to the oldest unanswered batch (the server applies
//! batches in order and stops there), every later one was not applied and is sent again on
//! a new stream. The batch the error belongs to — and any batch the bulk path cannot place
//! (no stream, timeouts, resent too often) — goes back to the caller, which writes it by row
//! insert with the row path's retries, spool and accounting; so a row is written once,
//! counted once, and the bulk path never needs its own spool.
//!
//! The ingester's own `BulkStreamWriter` is not used as a whole: its response stream is not
//! `Send` (so it cannot live in a spawned write task), it hides which requests are
//! unanswered when a stream fails, and it converts rows through its dynamic `Row` values. Its
//! pieces are: `Client` channels, `FlightEncoder` (Arrow IPC), `DoPutMetadata` and
//! `DoPutResponse`, and the same Arrow field metadata (`greptime:semantic_type`).
//!
//! The table must exist (the open-source server does not create tables on this path): bulk
//! starts only once the table is known to exist — the start-up check found it, the DDL step
//! created it, or a row insert into it succeeded ([`Bulk::table_exists`]) — so the first
//! batches of a run on a new table go by row insert. A bulk refusal that can mean a missing
//! table (GreptimeDB ≤ 1.1.1: `Unknown` without a code; ≥ 1.1.2: 4001) switches back to row
//! inserts until one succeeds; after [`MAX_REFUSALS`] refusals the run stays on row inserts.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use arrow_flight::{
    FlightData, FlightDescriptor, PutResult, flight_descriptor::DescriptorType,
    flight_service_client::FlightServiceClient,
};
use base64::Engine as _;
use greptimedb_ingester::{
    api::v1::{ColumnDataType, ColumnSchema, Row, SemanticType, value::ValueData},
    arrow_array::{
        ArrayRef, RecordBatch,
        builder::{
            StringBuilder, TimestampNanosecondBuilder, UInt8Builder, UInt16Builder, UInt32Builder,
            UInt64Builder,
        },
    },
    arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit},
    bulk::{CompressionType, GREPTIME_SEMANTIC_TYPE_KEY},
    client::Client,
    flight::{
        FlightEncoder, FlightMessage,
        do_put::{DoPutMetadata, DoPutResponse},
    },
};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::{Code, Status, metadata::MetadataValue};
use tracing::{info, warn};

use super::{
    client::connect_all,
    endpoints::Endpoints,
    retry::{REQUEST_TIMEOUT, classify_status, code, greptime_code},
    settings::{Compression, GreptimeConfig},
    tables::Table,
};
use crate::{metrics::Counters, record::PacketRecord, sink::SinkError};

/// Batches one stream has in flight at most: the server's reply channel holds 32.
pub const MAX_STREAM_IN_FLIGHT: usize = 8;
/// How often one batch is sent again on a new stream before it goes to the row path.
const MAX_RESENDS: usize = 3;
/// Refusals (errors that belong to a batch) after which the run stays on row inserts.
pub const MAX_REFUSALS: u32 = 3;
/// The window the ingester splits rows by (one request per hour of timestamps).
const WINDOW_NANOS: i64 = 3_600_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("bulk path: column type {0} has no Arrow form here")]
    Unsupported(i32),
    #[error("bulk path: row encoding does not follow the column list ({0})")]
    Mismatch(String),
    #[error("bulk path: {0}")]
    Arrow(String),
}

/// The Arrow schema of an insert's column schemas, with the field metadata the ingester
/// attaches.
pub fn arrow_schema(columns: &[ColumnSchema]) -> Result<SchemaRef, BulkError> {
    let fields = columns
        .iter()
        .map(|c| {
            let data_type = match ColumnDataType::try_from(c.datatype) {
                Ok(ColumnDataType::TimestampNanosecond) => {
                    DataType::Timestamp(TimeUnit::Nanosecond, None)
                }
                Ok(ColumnDataType::Uint8) => DataType::UInt8,
                Ok(ColumnDataType::Uint16) => DataType::UInt16,
                Ok(ColumnDataType::Uint32) => DataType::UInt32,
                Ok(ColumnDataType::Uint64) => DataType::UInt64,
                Ok(ColumnDataType::String) => DataType::Utf8,
                _ => return Err(BulkError::Unsupported(c.datatype)),
            };
            let semantic = SemanticType::try_from(c.semantic_type);
            let semantic = match semantic {
                Ok(SemanticType::Timestamp) => "timestamp",
                Ok(SemanticType::Tag) => "tag",
                _ => "field",
            };
            let nullable = semantic != "timestamp";
            Ok(
                Field::new(&c.column_name, data_type, nullable).with_metadata(HashMap::from([(
                    GREPTIME_SEMANTIC_TYPE_KEY.to_owned(),
                    semantic.to_owned(),
                )])),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// The time index of an insert's rows: its first timestamp column.
fn time_index(columns: &[ColumnSchema]) -> Option<usize> {
    columns
        .iter()
        .position(|c| c.semantic_type == SemanticType::Timestamp as i32)
}

enum Builder {
    Ts(TimestampNanosecondBuilder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    Str(StringBuilder),
}

impl Builder {
    fn new(t: &DataType, rows: usize) -> Self {
        match t {
            DataType::Timestamp(..) => Self::Ts(TimestampNanosecondBuilder::with_capacity(rows)),
            DataType::UInt8 => Self::U8(UInt8Builder::with_capacity(rows)),
            DataType::UInt16 => Self::U16(UInt16Builder::with_capacity(rows)),
            DataType::UInt32 => Self::U32(UInt32Builder::with_capacity(rows)),
            DataType::UInt64 => Self::U64(UInt64Builder::with_capacity(rows)),
            _ => Self::Str(StringBuilder::with_capacity(rows, rows * 16)),
        }
    }

    /// Appends one value of the row insert's encoding; false when it is not of this
    /// column's type (or does not fit it).
    fn push(&mut self, v: Option<&ValueData>) -> bool {
        use ValueData as V;
        match (self, v) {
            (Self::Ts(b), Some(V::TimestampNanosecondValue(x))) => b.append_value(*x),
            (Self::U8(b), Some(V::U8Value(x))) => match u8::try_from(*x) {
                Ok(x) => b.append_value(x),
                Err(_) => return false,
            },
            (Self::U16(b), Some(V::U16Value(x))) => match u16::try_from(*x) {
                Ok(x) => b.append_value(x),
                Err(_) => return false,
            },
            (Self::U32(b), Some(V::U32Value(x))) => b.append_value(*x),
            (Self::U64(b), Some(V::U64Value(x))) => b.append_value(*x),
            (Self::Str(b), Some(V::StringValue(x))) => b.append_value(x),
            (Self::Ts(_), None) => return false,
            (Self::U8(b), None) => b.append_null(),
            (Self::U16(b), None) => b.append_null(),
            (Self::U32(b), None) => b.append_null(),
            (Self::U64(b), None) => b.append_null(),
            (Self::Str(b), None) => b.append_null(),
            _ => return false,
        }
        true
    }

    fn finish(self) -> ArrayRef {
        match self {
            Self::Ts(mut b) => Arc::new(b.finish()),
            Self::U8(mut b) => Arc::new(b.finish()),
            Self::U16(mut b) => Arc::new(b.finish()),
            Self::U32(mut b) => Arc::new(b.finish()),
            Self::U64(mut b) => Arc::new(b.finish()),
            Self::Str(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Rows as the row insert encodes them ([`Table::encode_row`]), as one record batch of
/// `schema` (that insert's columns): one encoding of a row for both paths.
pub fn record_batch(rows: &[&Row], schema: &SchemaRef) -> Result<RecordBatch, BulkError> {
    let mut builders: Vec<Builder> = schema
        .fields()
        .iter()
        .map(|f| Builder::new(f.data_type(), rows.len()))
        .collect();
    for row in rows {
        if row.values.len() != builders.len() {
            return Err(BulkError::Mismatch(format!(
                "a row gave {} values for {} columns",
                row.values.len(),
                builders.len()
            )));
        }
        for (i, (b, v)) in builders.iter_mut().zip(&row.values).enumerate() {
            if !b.push(v.value_data.as_ref()) {
                return Err(BulkError::Mismatch(format!(
                    "value {:?} does not fit column {i} ({})",
                    v.value_data,
                    schema.field(i).data_type()
                )));
            }
        }
    }
    let arrays: Vec<ArrayRef> = builders.into_iter().map(Builder::finish).collect();
    RecordBatch::try_new(Arc::clone(schema), arrays).map_err(|e| BulkError::Arrow(e.to_string()))
}

/// How one window of a batch went.
enum Window {
    Written,
    /// Not written; the row path takes it.
    Rows,
    /// Not written because an endpoint failed it (no answer in time, or gone).
    EndpointFailed,
}

/// How one batch went on a stream.
enum Sent {
    Written,
    /// The error that ended the stream is this batch's own: it was not applied.
    Refused(Status),
    /// The stream ended (another batch's error, a lost connection) before this batch was
    /// answered: send it again.
    Lost(String),
    /// No answer in time: the endpoint is stalled; the row path takes over.
    TimedOut,
}

type Waiters = BTreeMap<i64, oneshot::Sender<Sent>>;

/// One open `DoPut` stream.
struct Stream {
    /// Sender of request messages, and the next request id: taken together, so ids are in
    /// send order.
    tx: tokio::sync::Mutex<(mpsc::Sender<FlightData>, i64)>,
    /// Batches sent and not yet answered; None once the stream has ended.
    waiters: Mutex<Option<Waiters>>,
    permits: Semaphore,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Stream {
    fn ended(&self) -> bool {
        lock(&self.waiters).is_none()
    }

    /// Ends the stream: the oldest unanswered batch gets `first`, the rest are lost.
    fn end(&self, first: Option<Status>, why: &str) {
        let Some(waiters) = lock(&self.waiters).take() else {
            return;
        };
        let mut first = first;
        for (_, w) in waiters {
            let _ = w.send(match first.take() {
                Some(s) => Sent::Refused(s),
                None => Sent::Lost(why.to_owned()),
            });
        }
    }

    fn answered(&self, r: &DoPutResponse) {
        if let Some(w) = lock(&self.waiters)
            .as_mut()
            .and_then(|ws| ws.remove(&r.request_id()))
        {
            let _ = w.send(Sent::Written);
        }
    }
}

/// The bulk writer of one sink and table.
pub struct Bulk<R: Table = PacketRecord> {
    cfg: GreptimeConfig,
    table: String,
    /// The time index's place among the columns.
    ts_at: usize,
    clients: Vec<(String, Client)>,
    streams: Vec<tokio::sync::Mutex<Option<Arc<Stream>>>>,
    schema: SchemaRef,
    compression: CompressionType,
    /// The table is known to exist: bulk may be used.
    ready: AtomicBool,
    refusals: AtomicU32,
    off: AtomicBool,
    _rows: std::marker::PhantomData<fn(&R)>,
}

impl<R: Table> Bulk<R> {
    /// The bulk writer for `table`, with its own connections (a long-lived stream does not
    /// share its HTTP/2 connection with row inserts).
    /// None (logged) when the table's columns have no Arrow form: rows go by row insert.
    pub fn new(cfg: &GreptimeConfig, table: &str) -> Result<Option<Self>, SinkError> {
        let (schema, Some(ts_at)) = (arrow_schema(R::columns()), time_index(R::columns())) else {
            warn!("{table} has no time index; writing by row inserts");
            return Ok(None);
        };
        let schema = match schema {
            Ok(s) => s,
            Err(e) => {
                warn!("{e}; writing by row inserts");
                return Ok(None);
            }
        };
        let clients: Vec<(String, Client)> = connect_all(cfg)?
            .into_iter()
            .map(|(addr, client, _)| (addr, client))
            .collect();
        Ok(Some(Self {
            streams: clients.iter().map(|_| Default::default()).collect(),
            clients,
            schema,
            // Arrow IPC compression instead of gRPC compression (gzip has no IPC form: LZ4).
            compression: match cfg.compression {
                Compression::None => CompressionType::None,
                Compression::Gzip => CompressionType::Lz4,
                Compression::Zstd => CompressionType::Zstd,
            },
            cfg: cfg.clone(),
            table: table.to_owned(),
            ts_at,
            ready: AtomicBool::new(false),
            refusals: AtomicU32::new(0),
            off: AtomicBool::new(false),
            _rows: std::marker::PhantomData,
        }))
    }

    /// The table exists (found at start-up, created by the DDL step, or written by a row
    /// insert): bulk writes may go to it.
    pub fn table_exists(&self) {
        if !self.off.load(Ordering::Relaxed) && !self.ready.swap(true, Ordering::Relaxed) {
            info!(
                "table {} exists: rows go by bulk writes (Arrow Flight)",
                self.table
            );
        }
    }

    /// Whether the next batch goes by bulk.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.off.load(Ordering::Relaxed)
    }

    /// Writes what it can of `rows` by bulk, within `budget`; counts those as written and
    /// returns the rest (none, usually) for the row path, with when the first attempt an
    /// endpoint failed (no answer in time, or gone) was sent: an outage the row path then
    /// finds began there.
    pub async fn write(
        &self,
        rows: Vec<R>,
        endpoints: &Endpoints,
        counters: &Counters,
        budget: Duration,
    ) -> (Vec<R>, Option<Instant>) {
        if rows.is_empty() || !self.ready() {
            return (rows, None);
        }
        let started = Instant::now();
        let encoded: Vec<Row> = rows.iter().map(R::encode_row).collect();
        let ts_at = self.ts_at;
        let ts = |r: &Row| match r.values.get(ts_at).and_then(|v| v.value_data.as_ref()) {
            Some(ValueData::TimestampNanosecondValue(t)) => *t,
            _ => 0,
        };
        // One request per hour window of timestamps, as the ingester sends them.
        let first = ts(&encoded[0]).div_euclid(WINDOW_NANOS);
        let mut windows: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        if encoded
            .iter()
            .all(|r| ts(r).div_euclid(WINDOW_NANOS) == first)
        {
            windows.insert(first, (0..rows.len()).collect());
        } else {
            for (i, r) in encoded.iter().enumerate() {
                windows
                    .entry(ts(r).div_euclid(WINDOW_NANOS))
                    .or_default()
                    .push(i);
            }
        }
        let mut written = vec![false; rows.len()];
        let mut endpoint_failed = None;
        // The whole request timeout, not cut short by the shutdown deadline: no answer in
        // it is the endpoint's fault.
        let whole = budget >= REQUEST_TIMEOUT;
        for idx in windows.into_values() {
            let part: Vec<&Row> = idx.iter().map(|&i| &encoded[i]).collect();
            let (min, max) = part.iter().fold((i64::MAX, i64::MIN), |(lo, hi), r| {
                (lo.min(ts(r)), hi.max(ts(r)))
            });
            let left = budget.saturating_sub(started.elapsed());
            let tried = Instant::now();
            match self
                .write_window(&part, (min, max), endpoints, left, whole)
                .await
            {
                Window::Written => {
                    for i in idx {
                        written[i] = true;
                    }
                }
                Window::EndpointFailed => {
                    endpoint_failed.get_or_insert(tried);
                }
                Window::Rows => {}
            }
        }
        let n = written.iter().filter(|w| **w).count();
        if n > 0 {
            Counters::add(&counters.written, n as u64);
            counters.write_seconds.observe(started.elapsed());
        }
        let rest = rows
            .into_iter()
            .zip(written)
            .filter_map(|(r, w)| (!w).then_some(r))
            .collect();
        (rest, endpoint_failed)
    }

    /// One request, written once the server answered it.
    async fn write_window(
        &self,
        rows: &[&Row],
        (min, max): (i64, i64),
        endpoints: &Endpoints,
        budget: Duration,
        whole: bool,
    ) -> Window {
        let batch = match record_batch(rows, &self.schema) {
            Ok(b) => b,
            Err(e) => {
                // A bug (the row encoding and the column list disagree): rows go by row insert.
                warn!("{e}; writing by row inserts from now on");
                self.off.store(true, Ordering::Relaxed);
                return Window::Rows;
            }
        };
        let started = Instant::now();
        let mut endpoint_failed = false;
        let gave_up = |endpoint_failed: bool| {
            if endpoint_failed {
                Window::EndpointFailed
            } else {
                Window::Rows
            }
        };
        for _ in 0..MAX_RESENDS {
            let Ok(chosen) = endpoints.pick() else {
                // Every endpoint is down: the row path waits and spools.
                return gave_up(endpoint_failed);
            };
            let Some(index) = self.clients.iter().position(|(a, _)| *a == chosen.addr) else {
                return Window::Rows;
            };
            let left = budget.saturating_sub(started.elapsed());
            if left.is_zero() {
                return gave_up(endpoint_failed);
            }
            let stream = match tokio::time::timeout(left, self.stream(index)).await {
                Ok(Ok(s)) => s,
                Ok(Err(status)) => {
                    if let Some(why) = self.endpoint_fault(&status) {
                        // Gone (refused, reset, going away): out of rotation, as the row
                        // path does, and the batch goes to another endpoint.
                        endpoints.mark_down(&chosen, &why);
                        endpoint_failed = true;
                        continue;
                    }
                    self.refused(&status);
                    return Window::Rows;
                }
                Err(_) => return gave_up(endpoint_failed),
            };
            let left = budget.saturating_sub(started.elapsed());
            match self.send(&stream, batch.clone(), min, max, left).await {
                Sent::Written => {
                    self.refusals.store(0, Ordering::Relaxed);
                    return Window::Written;
                }
                Sent::Lost(why) => {
                    tracing::debug!("bulk batch sent again on a new stream: {why}");
                    continue;
                }
                Sent::Refused(status) => {
                    if let Some(why) = self.endpoint_fault(&status) {
                        // The connection broke under the stream: the batch's fate is not
                        // known, so it goes by row insert as any batch the stream failed.
                        endpoints.mark_down(&chosen, &why);
                        return Window::EndpointFailed;
                    }
                    self.refused(&status);
                    return Window::Rows;
                }
                Sent::TimedOut => {
                    stream.end(None, "a batch was not answered in time");
                    self.forget(index, &stream).await;
                    // No answer in the whole request timeout: stalled, out of rotation as on
                    // the row path (a wait the caller's deadline cut short says nothing).
                    if whole {
                        let why = format!("no answer within {REQUEST_TIMEOUT:?}");
                        endpoints.mark_down(&chosen, &why);
                        return Window::EndpointFailed;
                    }
                    return gave_up(endpoint_failed);
                }
            }
        }
        gave_up(endpoint_failed)
    }

    /// The open stream to endpoint `index`, opening one when there is none.
    async fn stream(&self, index: usize) -> Result<Arc<Stream>, Status> {
        let mut slot = self.streams[index].lock().await;
        if let Some(s) = slot.as_ref()
            && !s.ended()
        {
            return Ok(Arc::clone(s));
        }
        *slot = None;
        let s = self.open(index).await?;
        *slot = Some(Arc::clone(&s));
        Ok(s)
    }

    async fn forget(&self, index: usize, stream: &Arc<Stream>) {
        let mut slot = self.streams[index].lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, stream)) {
            *slot = None;
        }
    }

    /// Opens a stream: sends the schema (request 0, the table in the descriptor) and waits
    /// for its answer.
    async fn open(&self, index: usize) -> Result<Arc<Stream>, Status> {
        let (_, client) = &self.clients[index];
        let (_, channel) = client.find_channel().map_err(|e| match e {
            greptimedb_ingester::Error::Server { status, .. } => *status,
            other => Status::unavailable(other.to_string()),
        })?;
        let mut flight = FlightServiceClient::new(channel)
            .max_decoding_message_size(client.max_grpc_recv_message_size())
            .max_encoding_message_size(client.max_grpc_send_message_size());
        let (tx, rx) = mpsc::channel::<FlightData>(MAX_STREAM_IN_FLIGHT * 2);
        let mut schema = FlightEncoder::with_compression(self.compression)
            .encode(FlightMessage::Schema(Arc::clone(&self.schema)));
        schema.app_metadata = metadata(0, None, None)?.into();
        schema.flight_descriptor = Some(FlightDescriptor {
            r#type: DescriptorType::Path as i32,
            path: vec![self.table.clone()],
            ..Default::default()
        });
        tx.send(schema)
            .await
            .map_err(|_| Status::unavailable("bulk stream closed"))?;
        let body =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|d| (d, rx)) },
            );
        let mut request = tonic::Request::new(body);
        let md = request.metadata_mut();
        md.insert("x-greptime-db-name", ascii(&self.cfg.database)?);
        md.insert("x-greptime-hints", ascii("auto_create_table=false")?);
        if let Some(user) = &self.cfg.username {
            let pass = self.cfg.password.as_deref().unwrap_or("");
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            md.insert("x-greptime-auth", ascii(&format!("Basic {basic}"))?);
        }
        let mut answers = flight.do_put(request).await?.into_inner();
        match tokio::time::timeout(REQUEST_TIMEOUT, answers.message()).await {
            Ok(Ok(Some(_schema_ack))) => {}
            Ok(Ok(None)) => return Err(Status::unavailable("bulk stream ended at once")),
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("bulk stream not acknowledged")),
        }
        Ok(Arc::new_cyclic(|weak: &std::sync::Weak<Stream>| {
            let weak = weak.clone();
            let reader = tokio::spawn(async move {
                loop {
                    let next = answers.message().await;
                    let Some(stream) = weak.upgrade() else { return };
                    match next {
                        Ok(Some(PutResult { app_metadata, .. })) => {
                            match serde_json::from_slice::<DoPutResponse>(&app_metadata) {
                                Ok(r) => stream.answered(&r),
                                Err(e) => {
                                    stream.end(None, &format!("unreadable answer: {e}"));
                                    return;
                                }
                            }
                        }
                        Ok(None) => return stream.end(None, "the server ended the stream"),
                        Err(status) => return stream.end(Some(status), "the stream failed"),
                    }
                }
            });
            Stream {
                tx: tokio::sync::Mutex::new((tx, 1)),
                waiters: Mutex::new(Some(BTreeMap::new())),
                permits: Semaphore::new(MAX_STREAM_IN_FLIGHT),
                reader,
            }
        }))
    }

    /// Sends one batch and waits for its answer.
    async fn send(
        &self,
        stream: &Stream,
        batch: RecordBatch,
        min: i64,
        max: i64,
        budget: Duration,
    ) -> Sent {
        let Ok(_permit) = stream.permits.acquire().await else {
            return Sent::Lost("closed".into());
        };
        let mut data = FlightEncoder::with_compression(self.compression)
            .encode(FlightMessage::RecordBatch(batch));
        let (tx_answer, answer) = oneshot::channel();
        {
            let mut tx = stream.tx.lock().await;
            let id = tx.1;
            tx.1 += 1;
            data.app_metadata = match metadata(id, Some(min), Some(max)) {
                Ok(m) => m.into(),
                Err(_) => return Sent::Lost("metadata".into()),
            };
            match lock(&stream.waiters).as_mut() {
                Some(w) => w.insert(id, tx_answer),
                None => return Sent::Lost("the stream has ended".into()),
            };
            if tx.0.send(data).await.is_err() {
                lock(&stream.waiters).as_mut().and_then(|w| w.remove(&id));
                return Sent::Lost("the stream is closed".into());
            }
        }
        match tokio::time::timeout(budget.min(REQUEST_TIMEOUT), answer).await {
            Ok(Ok(sent)) => sent,
            Ok(Err(_)) => Sent::Lost("the stream has ended".into()),
            Err(_) => Sent::TimedOut,
        }
    }

    /// Why the endpoint itself failed, when `status` says so: a transport error the client
    /// made (connection refused or reset: it has a source), or `Unavailable` without a
    /// greptime code (a server going away). A status the server sent otherwise — 1.0's
    /// `Unknown` for every bulk error among them — is about the batch, not the endpoint.
    fn endpoint_fault(&self, status: &Status) -> Option<String> {
        let from_client = std::error::Error::source(status).is_some();
        let going_away = status.code() == Code::Unavailable && greptime_code(status).is_none();
        if !(from_client || going_away) {
            return None;
        }
        match classify_status(status, &self.cfg) {
            super::retry::Failure::Retry {
                why,
                endpoint: true,
            } => Some(why),
            _ => None,
        }
    }

    /// A batch's own error (or a stream that could not open). Errors that can mean a
    /// missing table send the next batches by row insert until one succeeds; the batch
    /// itself goes to the row path, which reports what a retry cannot fix (auth, …) once.
    fn refused(&self, status: &Status) {
        let gt = greptime_code(status);
        if may_mean_no_table(status) {
            self.ready.store(false, Ordering::Relaxed);
            let n = self.refusals.fetch_add(1, Ordering::Relaxed) + 1;
            if n == MAX_REFUSALS {
                self.off.store(true, Ordering::Relaxed);
                warn!(
                    "bulk writes to table {} refused {n} times ({}): writing by row inserts for the rest of the run",
                    self.table,
                    status.message()
                );
            } else if n == 1 {
                let what = if gt == Some(code::TABLE_NOT_FOUND) {
                    "the table does not exist"
                } else {
                    "GreptimeDB up to 1.1.1 answers every bulk error so, a missing table among them"
                };
                warn!(
                    "bulk write to table {} refused: {} ({what}); bulk writes need an existing table (created at start-up, or by the first row insert): writing by row inserts until one succeeds",
                    self.table,
                    status.message()
                );
            }
        }
        // Anything else: the row path gets the batch. It reports what a retry cannot fix
        // (a wrong password: `Unauthenticated("auth failed")` here, 7002 there) once, and
        // retries or spools the rest.
    }
}

/// Whether a bulk refusal can mean the table is missing: `Unknown` without a code (how
/// GreptimeDB up to 1.1.1 answers every bulk error) or 4001 (1.1.2 on). Only a status the
/// server sent: one the client made from a transport error (a connection cut in an outage)
/// has a source, and says nothing of the table.
fn may_mean_no_table(status: &Status) -> bool {
    let gt = greptime_code(status);
    std::error::Error::source(status).is_none()
        && ((status.code() == Code::Unknown && gt.is_none()) || gt == Some(code::TABLE_NOT_FOUND))
}

fn metadata(id: i64, min: Option<i64>, max: Option<i64>) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(&DoPutMetadata::new(id, min, max))
        .map_err(|e| Status::internal(e.to_string()))
}

fn ascii(v: &str) -> Result<MetadataValue<tonic::metadata::Ascii>, Status> {
    v.parse()
        .map_err(|_| Status::invalid_argument(format!("not a header value: {v:?}")))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use greptimedb_ingester::arrow_array::{
        Array, StringArray, TimestampNanosecondArray, UInt8Array, UInt16Array, UInt32Array,
        UInt64Array,
    };

    use super::*;
    use crate::record::UnixNanos;

    /// Column `i` of row `r` as the row insert encodes it.
    fn cell(b: &RecordBatch, i: usize, r: usize) -> Option<ValueData> {
        let c = b.column(i);
        if c.is_null(r) {
            return None;
        }
        let any = c.as_any();
        Some(
            if let Some(a) = any.downcast_ref::<TimestampNanosecondArray>() {
                ValueData::TimestampNanosecondValue(a.value(r))
            } else if let Some(a) = any.downcast_ref::<UInt8Array>() {
                ValueData::U8Value(a.value(r).into())
            } else if let Some(a) = any.downcast_ref::<UInt16Array>() {
                ValueData::U16Value(a.value(r).into())
            } else if let Some(a) = any.downcast_ref::<UInt32Array>() {
                ValueData::U32Value(a.value(r))
            } else if let Some(a) = any.downcast_ref::<UInt64Array>() {
                ValueData::U64Value(a.value(r))
            } else if let Some(a) = any.downcast_ref::<StringArray>() {
                ValueData::StringValue(a.value(r).to_owned())
            } else {
                panic!("column {i}: {:?}", c.data_type())
            },
        )
    }

    /// Every column of `R`'s rows, as the Arrow batch holds them, equals the row insert's
    /// value; the fields carry the roles.
    fn holds_what_the_row_insert_sends<R: Table>(rows: &[R]) {
        let schema = arrow_schema(R::columns()).unwrap();
        let encoded: Vec<Row> = rows.iter().map(R::encode_row).collect();
        let refs: Vec<&Row> = encoded.iter().collect();
        let b = record_batch(&refs, &schema).unwrap();
        assert_eq!(b.num_rows(), rows.len());
        assert_eq!(b.num_columns(), R::columns().len());
        for (r, want) in encoded.iter().enumerate() {
            for (i, c) in R::columns().iter().enumerate() {
                assert_eq!(
                    cell(&b, i, r),
                    want.values[i].value_data,
                    "{}",
                    c.column_name
                );
            }
        }
        for (f, c) in schema.fields().iter().zip(R::columns()) {
            assert_eq!(f.name(), &c.column_name);
            let semantic = &f.metadata()[GREPTIME_SEMANTIC_TYPE_KEY];
            let want = match SemanticType::try_from(c.semantic_type).unwrap() {
                SemanticType::Timestamp => "timestamp",
                SemanticType::Tag => "tag",
                SemanticType::Field => "field",
            };
            assert_eq!(semantic, want, "{}", c.column_name);
        }
    }

    #[test]
    fn the_arrow_batch_holds_exactly_what_the_row_insert_sends() {
        holds_what_the_row_insert_sends(&[
            crate::sink::greptime::schema::tests::record(),
            PacketRecord::default(),
        ]);
        let flow = crate::record::FlowRecord {
            ts: UnixNanos(1_795_000_010_000_000_000),
            host: "h".into(),
            interface: "eth0".into(),
            application: "DNS",
            vlan_id: Some(7),
            ether_type: 0x86dd,
            src_ip: Some("fd00::1".parse().unwrap()),
            dst_ip: Some("fd00::2".parse().unwrap()),
            protocol: 17,
            src_port: 40_000,
            dst_port: 53,
            packets: u64::MAX,
            bytes: 1 << 40,
            first_seen: UnixNanos(1),
            last_seen: UnixNanos(2),
            tcp_flags: 0x12,
            interval_ms: 10_000,
            direction: crate::record::Direction::Egress,
        };
        let non_ip = crate::record::FlowRecord {
            vlan_id: None,
            src_ip: None,
            dst_ip: None,
            ..flow.clone()
        };
        holds_what_the_row_insert_sends(&[flow, non_ip]);
    }

    #[test]
    fn only_a_server_answer_can_mean_a_missing_table() {
        assert!(may_mean_no_table(&Status::unknown(
            "Execute gRPC request error"
        )));
        let mut with_code = Status::not_found("Table not found: t");
        with_code.metadata_mut().insert(
            super::super::retry::GREPTIME_CODE_KEY,
            code::TABLE_NOT_FOUND.to_string().parse().unwrap(),
        );
        assert!(may_mean_no_table(&with_code));
        assert!(!may_mean_no_table(&Status::unavailable("region not ready")));
        // What tonic makes of a connection cut mid-stream: Unknown, no code, but a source.
        let cut = Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert_eq!(cut.code(), Code::Unknown);
        assert!(!may_mean_no_table(&cut));
    }

    #[test]
    fn a_row_encoding_that_disagrees_with_the_columns_is_an_error_not_a_panic() {
        let schema = arrow_schema(PacketRecord::columns()).unwrap();
        let mut row = crate::sink::greptime::schema::tests::record().encode_row();
        row.values[1].value_data = Some(ValueData::StringValue("not a u16".into()));
        let e = record_batch(&[&row], &schema).unwrap_err();
        assert!(e.to_string().contains("does not fit column 1"), "{e}");
        row.values.pop();
        let e = record_batch(&[&row], &schema).unwrap_err();
        assert!(e.to_string().contains("values for"), "{e}");
    }
}
