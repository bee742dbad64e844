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
    collections::BTreeMap,
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
    arrow_array::RecordBatch,
    arrow_schema::SchemaRef,
    bulk::CompressionType,
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
    config::{Compression, GreptimeConfig},
    error::GreptimeError,
    retry::{Failure, REQUEST_TIMEOUT, classify_status, code, greptime_code},
    service::{Endpoints, connect::connect_all},
};
use crate::schema::{
    Table,
    arrow::{arrow_schema, record_batch, time_index},
};
use crate::{metrics::Counters, record::PacketRecord};

/// Batches one stream has in flight at most: the server's reply channel holds 32.
pub const MAX_STREAM_IN_FLIGHT: usize = 8;
/// How often one batch is sent again on a new stream before it goes to the row path.
const MAX_RESENDS: usize = 3;
/// Refusals (errors that belong to a batch) after which the run stays on row inserts.
pub const MAX_REFUSALS: u32 = 3;
/// The window the ingester splits rows by (one request per hour of timestamps).
const WINDOW_NANOS: i64 = 3_600_000_000_000;

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
    pub fn new(cfg: &GreptimeConfig, table: &str) -> Result<Option<Self>, GreptimeError> {
        let (schema, Some(ts_at)) = (arrow_schema(R::COLUMNS), time_index(R::COLUMNS)) else {
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
        let time = R::COLUMNS.get(self.ts_at);
        let ts = |r: &R| time.and_then(|c| c.get(r).ts()).unwrap_or(0);
        // One request per hour window of timestamps, as the ingester sends them.
        let first = ts(&rows[0]).div_euclid(WINDOW_NANOS);
        let mut windows: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        if rows.iter().all(|r| ts(r).div_euclid(WINDOW_NANOS) == first) {
            windows.insert(first, (0..rows.len()).collect());
        } else {
            for (i, r) in rows.iter().enumerate() {
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
            let part: Vec<&R> = idx.iter().map(|&i| &rows[i]).collect();
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
        rows: &[&R],
        (min, max): (i64, i64),
        endpoints: &Endpoints,
        budget: Duration,
        whole: bool,
    ) -> Window {
        if endpoints.all_down().is_some() {
            // Every endpoint is down: the row path waits and spools (as below), and the
            // Arrow batch is not built for nothing.
            return Window::Rows;
        }
        let batch = match record_batch(R::COLUMNS, rows, &self.schema) {
            Ok(b) => b,
            Err(e) => {
                // A bug (a getter and its column's type disagree): rows go by row insert.
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
            Failure::Retry {
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
    use super::*;

    #[test]
    fn only_a_server_answer_can_mean_a_missing_table() {
        assert!(may_mean_no_table(&Status::unknown(
            "Execute gRPC request error"
        )));
        let mut with_code = Status::not_found("Table not found: t");
        with_code.metadata_mut().insert(
            crate::sink::greptime::retry::GREPTIME_CODE_KEY,
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
}
