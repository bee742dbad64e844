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
    api::v1::{ColumnDataType, SemanticType},
    arrow_array::{
        ArrayRef, RecordBatch,
        builder::{
            StringBuilder, TimestampNanosecondBuilder, UInt8Builder, UInt16Builder, UInt32Builder,
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
    retry::{REQUEST_TIMEOUT, code, greptime_code},
    schema::{Column, SCHEMA},
    settings::{Compression, GreptimeConfig},
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

/// Rows of one table, as Arrow columns: the table's column list (the one `schema.rs`
/// declares) and how one row fills it. A second table implements this for its row type.
pub trait ArrowRows: Send + Sync + 'static {
    /// The table's columns, in order.
    fn columns() -> &'static [Column];
    /// The time index value, in nanoseconds.
    fn ts(&self) -> i64;
    /// Appends this row's values, one per column in [`columns`](Self::columns) order.
    fn append(&self, row: &mut Appender);
}

impl ArrowRows for PacketRecord {
    fn columns() -> &'static [Column] {
        &SCHEMA
    }

    fn ts(&self) -> i64 {
        self.ts.0
    }

    fn append(&self, a: &mut Appender) {
        let r = self;
        a.ts(r.ts.0);
        a.u16(Some(r.packet_size));
        a.u16(Some(r.ether_type));
        a.str(r.src_mac.map(|m| m.to_string()).as_deref());
        a.str(r.dst_mac.map(|m| m.to_string()).as_deref());
        a.u16(r.vlan_id);
        a.u8(r.protocol);
        a.str(r.src_ip.map(|v| v.to_string()).as_deref());
        a.str(r.dst_ip.map(|v| v.to_string()).as_deref());
        a.u16(r.src_port);
        a.u16(r.dst_port);
        a.u8(r.tcp_flags);
        a.str(Some(r.packet_type.as_str()));
        a.str(Some(r.application));
        a.str(r.tunnel.map(|t| t.as_str()));
        a.str(r.inner_src_ip.map(|v| v.to_string()).as_deref());
        a.str(r.inner_dst_ip.map(|v| v.to_string()).as_deref());
        a.u8(r.inner_protocol);
        a.u16(r.inner_src_port);
        a.u16(r.inner_dst_port);
        a.str(r.mpls_labels.as_ref().map(|l| l.to_string()).as_deref());
        a.u32(Some(r.sample_rate));
        a.str(Some(&r.host));
        a.str(Some(&r.interface));
        a.str(Some(r.direction.as_str()));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("bulk path: column type {0:?} has no Arrow form here")]
    Unsupported(ColumnDataType),
    #[error("bulk path: row encoding does not follow the column list ({0})")]
    Mismatch(String),
    #[error("bulk path: {0}")]
    Arrow(String),
}

/// The Arrow schema of a column list, with the field metadata the ingester attaches.
pub fn arrow_schema(columns: &[Column]) -> Result<SchemaRef, BulkError> {
    let fields = columns
        .iter()
        .map(|c| {
            let data_type = match c.data_type {
                ColumnDataType::TimestampNanosecond => {
                    DataType::Timestamp(TimeUnit::Nanosecond, None)
                }
                ColumnDataType::Uint8 => DataType::UInt8,
                ColumnDataType::Uint16 => DataType::UInt16,
                ColumnDataType::Uint32 => DataType::UInt32,
                ColumnDataType::String => DataType::Utf8,
                other => return Err(BulkError::Unsupported(other)),
            };
            let semantic = match c.semantic {
                SemanticType::Timestamp => "timestamp",
                SemanticType::Tag => "tag",
                SemanticType::Field => "field",
            };
            let nullable = c.semantic != SemanticType::Timestamp;
            Ok(
                Field::new(c.name, data_type, nullable).with_metadata(HashMap::from([(
                    GREPTIME_SEMANTIC_TYPE_KEY.to_owned(),
                    semantic.to_owned(),
                )])),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

enum Builder {
    Ts(TimestampNanosecondBuilder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    Str(StringBuilder),
}

/// Column builders for one batch; a row appends its values in column order.
pub struct Appender {
    builders: Vec<Builder>,
    at: usize,
    error: Option<String>,
}

impl Appender {
    fn new(schema: &Schema, rows: usize) -> Self {
        let builders = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Timestamp(..) => {
                    Builder::Ts(TimestampNanosecondBuilder::with_capacity(rows))
                }
                DataType::UInt8 => Builder::U8(UInt8Builder::with_capacity(rows)),
                DataType::UInt16 => Builder::U16(UInt16Builder::with_capacity(rows)),
                DataType::UInt32 => Builder::U32(UInt32Builder::with_capacity(rows)),
                _ => Builder::Str(StringBuilder::with_capacity(rows, rows * 16)),
            })
            .collect();
        Self {
            builders,
            at: 0,
            error: None,
        }
    }

    fn next(&mut self, kind: &str) -> Option<&mut Builder> {
        let i = self.at;
        self.at += 1;
        let b = self.builders.get_mut(i);
        if b.is_none() && self.error.is_none() {
            self.error = Some(format!("value {i} ({kind}) beyond the last column"));
        }
        b
    }

    fn wrong(&mut self, kind: &str) {
        if self.error.is_none() {
            self.error = Some(format!("column {} is not {kind}", self.at - 1));
        }
    }

    pub fn ts(&mut self, v: i64) {
        match self.next("timestamp") {
            Some(Builder::Ts(b)) => b.append_value(v),
            Some(_) => self.wrong("timestamp"),
            None => {}
        }
    }

    pub fn u8(&mut self, v: Option<u8>) {
        match self.next("u8") {
            Some(Builder::U8(b)) => b.append_option(v),
            Some(_) => self.wrong("u8"),
            None => {}
        }
    }

    pub fn u16(&mut self, v: Option<u16>) {
        match self.next("u16") {
            Some(Builder::U16(b)) => b.append_option(v),
            Some(_) => self.wrong("u16"),
            None => {}
        }
    }

    pub fn u32(&mut self, v: Option<u32>) {
        match self.next("u32") {
            Some(Builder::U32(b)) => b.append_option(v),
            Some(_) => self.wrong("u32"),
            None => {}
        }
    }

    pub fn str(&mut self, v: Option<&str>) {
        match self.next("string") {
            Some(Builder::Str(b)) => b.append_option(v),
            Some(_) => self.wrong("string"),
            None => {}
        }
    }

    fn end_row(&mut self) {
        if self.at != self.builders.len() && self.error.is_none() {
            self.error = Some(format!(
                "a row gave {} values for {} columns",
                self.at,
                self.builders.len()
            ));
        }
        self.at = 0;
    }
}

/// `rows` as one record batch of `schema`.
pub fn record_batch<R: ArrowRows>(
    rows: &[&R],
    schema: &SchemaRef,
) -> Result<RecordBatch, BulkError> {
    let mut a = Appender::new(schema, rows.len());
    for r in rows {
        r.append(&mut a);
        a.end_row();
    }
    if let Some(e) = a.error {
        return Err(BulkError::Mismatch(e));
    }
    let arrays: Vec<ArrayRef> = a
        .builders
        .into_iter()
        .map(|b| -> ArrayRef {
            match b {
                Builder::Ts(mut b) => Arc::new(b.finish()),
                Builder::U8(mut b) => Arc::new(b.finish()),
                Builder::U16(mut b) => Arc::new(b.finish()),
                Builder::U32(mut b) => Arc::new(b.finish()),
                Builder::Str(mut b) => Arc::new(b.finish()),
            }
        })
        .collect();
    RecordBatch::try_new(Arc::clone(schema), arrays).map_err(|e| BulkError::Arrow(e.to_string()))
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
pub struct Bulk<R: ArrowRows = PacketRecord> {
    cfg: GreptimeConfig,
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

impl<R: ArrowRows> Bulk<R> {
    /// The bulk writer for `cfg`'s table, with its own connections (a long-lived stream
    /// does not share its HTTP/2 connection with row inserts).
    /// None (logged) when the table's columns have no Arrow form: rows go by row insert.
    pub fn new(cfg: &GreptimeConfig) -> Result<Option<Self>, SinkError> {
        let schema = match arrow_schema(R::columns()) {
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
                self.cfg.table
            );
        }
    }

    /// Whether the next batch goes by bulk.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.off.load(Ordering::Relaxed)
    }

    /// Writes what it can of `rows` by bulk, within `budget`; counts those as written and
    /// returns the rest (none, usually) for the row path.
    pub async fn write(
        &self,
        rows: Vec<R>,
        endpoints: &Endpoints,
        counters: &Counters,
        budget: Duration,
    ) -> Vec<R> {
        if rows.is_empty() || !self.ready() {
            return rows;
        }
        let started = Instant::now();
        // One request per hour window of timestamps, as the ingester sends them.
        let first = rows[0].ts().div_euclid(WINDOW_NANOS);
        let mut windows: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        if rows
            .iter()
            .all(|r| r.ts().div_euclid(WINDOW_NANOS) == first)
        {
            windows.insert(first, (0..rows.len()).collect());
        } else {
            for (i, r) in rows.iter().enumerate() {
                windows
                    .entry(r.ts().div_euclid(WINDOW_NANOS))
                    .or_default()
                    .push(i);
            }
        }
        let mut written = vec![false; rows.len()];
        for idx in windows.into_values() {
            let part: Vec<&R> = idx.iter().map(|&i| &rows[i]).collect();
            let left = budget.saturating_sub(started.elapsed());
            if self.write_window(&part, endpoints, left).await {
                for i in idx {
                    written[i] = true;
                }
            }
        }
        let n = written.iter().filter(|w| **w).count();
        if n > 0 {
            Counters::add(&counters.written, n as u64);
            counters.write_seconds.observe(started.elapsed());
        }
        rows.into_iter()
            .zip(written)
            .filter_map(|(r, w)| (!w).then_some(r))
            .collect()
    }

    /// One request; true once the server answered it.
    async fn write_window(&self, rows: &[&R], endpoints: &Endpoints, budget: Duration) -> bool {
        let (batch, min, max) = match record_batch(rows, &self.schema) {
            Ok(b) => {
                let ts = rows.iter().map(|r| r.ts());
                let (min, max) =
                    ts.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
                (b, min, max)
            }
            Err(e) => {
                // A bug (the row encoding and the column list disagree): rows go by row insert.
                warn!("{e}; writing by row inserts from now on");
                self.off.store(true, Ordering::Relaxed);
                return false;
            }
        };
        let started = Instant::now();
        for _ in 0..MAX_RESENDS {
            let Ok(chosen) = endpoints.pick() else {
                return false; // every endpoint is down: the row path waits and spools
            };
            let Some(index) = self.clients.iter().position(|(a, _)| *a == chosen.addr) else {
                return false;
            };
            let left = budget.saturating_sub(started.elapsed());
            if left.is_zero() {
                return false;
            }
            let stream = match tokio::time::timeout(left, self.stream(index)).await {
                Ok(Ok(s)) => s,
                Ok(Err(status)) => {
                    self.refused(&status);
                    return false;
                }
                Err(_) => return false,
            };
            let left = budget.saturating_sub(started.elapsed());
            match self.send(&stream, batch.clone(), min, max, left).await {
                Sent::Written => {
                    self.refusals.store(0, Ordering::Relaxed);
                    return true;
                }
                Sent::Lost(why) => {
                    tracing::debug!("bulk batch sent again on a new stream: {why}");
                    continue;
                }
                Sent::Refused(status) => {
                    self.refused(&status);
                    return false;
                }
                Sent::TimedOut => {
                    stream.end(None, "a batch was not answered in time");
                    self.forget(index, &stream).await;
                    return false;
                }
            }
        }
        false
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
            path: vec![self.cfg.table.clone()],
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

    /// A batch's own error (or a stream that could not open). Errors that can mean a
    /// missing table send the next batches by row insert until one succeeds; the batch
    /// itself goes to the row path, which reports what a retry cannot fix (auth, …) once.
    fn refused(&self, status: &Status) {
        let gt = greptime_code(status);
        let maybe_no_table =
            (status.code() == Code::Unknown && gt.is_none()) || gt == Some(code::TABLE_NOT_FOUND);
        if maybe_no_table {
            self.ready.store(false, Ordering::Relaxed);
            let n = self.refusals.fetch_add(1, Ordering::Relaxed) + 1;
            if n == MAX_REFUSALS {
                self.off.store(true, Ordering::Relaxed);
                warn!(
                    "bulk writes to table {} refused {n} times ({}): writing by row inserts for the rest of the run",
                    self.cfg.table,
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
                    self.cfg.table,
                    status.message()
                );
            }
        }
        // Anything else: the row path gets the batch. It reports what a retry cannot fix
        // (a wrong password: `Unauthenticated("auth failed")` here, 7002 there) once, and
        // retries or spools the rest.
    }
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
    use greptimedb_ingester::{
        api::v1::value::ValueData,
        arrow_array::{
            Array, StringArray, TimestampNanosecondArray, UInt8Array, UInt16Array, UInt32Array,
        },
    };

    use super::*;
    use crate::record::{MacAddr, MplsLabels, PacketType, Tunnel, UnixNanos};
    use crate::sink::greptime::schema::encode_row;

    fn full() -> PacketRecord {
        PacketRecord {
            ts: UnixNanos(1_795_000_000_123_456_789),
            packet_size: 1514,
            ether_type: 0x0800,
            src_mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
            dst_mac: Some(MacAddr([2, 0, 0, 0, 0, 2])),
            protocol: Some(6),
            src_ip: Some("10.0.0.1".parse().unwrap()),
            dst_ip: Some("10.0.0.2".parse().unwrap()),
            src_port: Some(40_000),
            dst_port: Some(443),
            tcp_flags: Some(0x18),
            packet_type: PacketType::Ipv4,
            application: "HTTPS",
            vlan_id: Some(100),
            tunnel: Some(Tunnel::Vxlan),
            inner_src_ip: Some("fd00::1".parse().unwrap()),
            inner_dst_ip: Some("fd00::2".parse().unwrap()),
            inner_protocol: Some(17),
            inner_src_port: Some(5353),
            inner_dst_port: Some(53),
            mpls_labels: Some(MplsLabels::from([16, 1001])),
            sample_rate: 10,
            host: "node-1".into(),
            interface: "eth0".into(),
            direction: crate::record::Direction::Egress,
        }
    }

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
            } else if let Some(a) = any.downcast_ref::<StringArray>() {
                ValueData::StringValue(a.value(r).to_owned())
            } else {
                panic!("column {i}: {:?}", c.data_type())
            },
        )
    }

    #[test]
    fn the_arrow_batch_holds_exactly_what_the_row_insert_sends() {
        let schema = arrow_schema(&SCHEMA).unwrap();
        let rows = [full(), PacketRecord::default()];
        let refs: Vec<&PacketRecord> = rows.iter().collect();
        let b = record_batch(&refs, &schema).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.num_columns(), SCHEMA.len());
        for (r, rec) in rows.iter().enumerate() {
            let want = encode_row(rec);
            for (i, c) in SCHEMA.iter().enumerate() {
                assert_eq!(cell(&b, i, r), want.values[i].value_data, "{}", c.name);
            }
        }
        for (f, c) in schema.fields().iter().zip(SCHEMA) {
            assert_eq!(f.name(), c.name);
            let semantic = &f.metadata()[GREPTIME_SEMANTIC_TYPE_KEY];
            let want = match c.semantic {
                SemanticType::Timestamp => "timestamp",
                SemanticType::Tag => "tag",
                SemanticType::Field => "field",
            };
            assert_eq!(semantic, want, "{}", c.name);
        }
    }

    struct Short;
    impl ArrowRows for Short {
        fn columns() -> &'static [Column] {
            &SCHEMA
        }
        fn ts(&self) -> i64 {
            0
        }
        fn append(&self, a: &mut Appender) {
            a.ts(0);
            a.str(Some("not a u16"));
        }
    }

    #[test]
    fn a_row_encoding_that_disagrees_with_the_columns_is_an_error_not_a_panic() {
        let schema = arrow_schema(&SCHEMA).unwrap();
        let e = record_batch(&[&Short], &schema).unwrap_err();
        assert!(e.to_string().contains("column 1 is not string"), "{e}");
    }
}
