//! GreptimeDB: rows into `packet_data` through the official `greptimedb-ingester` (gRPC).
//!
//! The table schema is declared once, here ([`SCHEMA`]); the insert creates the table with
//! it, append-only (request hint), so rows with equal tags and timestamp are all kept.
//! Rows are batched by size and by time, a bounded number of requests is in flight, and
//! retriable failures (unavailable, timeout, reset) are retried with capped exponential
//! backoff and jitter until they succeed or the shutdown deadline passes. Failures that a
//! retry cannot fix (authentication, unknown database, schema conflict) are reported once
//! with what to do, and their rows counted as write errors.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use greptimedb_ingester::{
    api::v1::{
        Basic, ColumnDataType, ColumnSchema, Row, RowInsertRequest, RowInsertRequests, Rows,
        SemanticType, Value, auth_header::AuthScheme, value::ValueData,
    },
    channel_manager::{ChannelConfig, ChannelManager, ClientTlsOption, GrpcCompression},
    client::Client,
    database::Database,
};
use rand::Rng as _;
use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
};
use tonic::Code;
use tracing::{error, info, warn};

use super::{
    SinkError,
    spool::{Contents, Segment, Spool},
};
use crate::{
    metrics::Counters,
    queue::Receiver,
    record::{MacAddr, PacketRecord},
};

/// One column of `packet_data`.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub data_type: ColumnDataType,
    pub semantic: SemanticType,
}

const fn col(name: &'static str, data_type: ColumnDataType, semantic: SemanticType) -> Column {
    Column {
        name,
        data_type,
        semantic,
    }
}

/// The `packet_data` table, in [`PacketRecord`] field order. `ts` is the time index, in
/// nanoseconds; `src_ip`, `dst_port`, `packet_type` and `application` are tags. Columns
/// added later (`vlan_id`, `tunnel`, `inner_*`) are added to an existing table by
/// GreptimeDB's insert.
pub const SCHEMA: [Column; 21] = {
    use ColumnDataType as T;
    use SemanticType::{Field, Tag, Timestamp};
    [
        col("ts", T::TimestampNanosecond, Timestamp),
        col("packet_size", T::Uint16, Field),
        col("ether_type", T::Uint16, Field),
        col("src_mac", T::String, Field),
        col("dst_mac", T::String, Field),
        col("vlan_id", T::Uint16, Field),
        col("protocol", T::Uint8, Field),
        col("src_ip", T::String, Tag),
        col("dst_ip", T::String, Field),
        col("src_port", T::Uint16, Field),
        col("dst_port", T::Uint16, Tag),
        col("tcp_flags", T::Uint8, Field),
        col("packet_type", T::String, Tag),
        col("application", T::String, Tag),
        col("tunnel", T::String, Field),
        col("inner_src_ip", T::String, Field),
        col("inner_dst_ip", T::String, Field),
        col("inner_protocol", T::Uint8, Field),
        col("inner_src_port", T::Uint16, Field),
        col("inner_dst_port", T::Uint16, Field),
        col("sample_rate", T::Uint32, Field),
    ]
};

pub fn column_schemas() -> Vec<ColumnSchema> {
    SCHEMA
        .iter()
        .map(|c| ColumnSchema {
            column_name: c.name.to_owned(),
            datatype: c.data_type as i32,
            semantic_type: c.semantic as i32,
            ..Default::default()
        })
        .collect()
}

fn value(v: Option<ValueData>) -> Value {
    Value { value_data: v }
}

fn string(s: impl ToString) -> Option<ValueData> {
    Some(ValueData::StringValue(s.to_string()))
}

fn mac(m: MacAddr) -> Option<ValueData> {
    string(m)
}

/// One row, values in [`SCHEMA`] order.
pub fn encode_row(r: &PacketRecord) -> Row {
    let u8v = |v: Option<u8>| v.map(|v| ValueData::U8Value(v.into()));
    let u16v = |v: Option<u16>| v.map(|v| ValueData::U16Value(v.into()));
    Row {
        values: vec![
            value(Some(ValueData::TimestampNanosecondValue(r.ts.0))),
            value(u16v(Some(r.packet_size))),
            value(u16v(Some(r.ether_type))),
            value(mac(r.src_mac)),
            value(mac(r.dst_mac)),
            value(u16v(r.vlan_id)),
            value(u8v(r.protocol)),
            value(r.src_ip.and_then(string)),
            value(r.dst_ip.and_then(string)),
            value(u16v(r.src_port)),
            value(u16v(r.dst_port)),
            value(u8v(r.tcp_flags)),
            value(string(r.packet_type.as_str())),
            value(string(r.application)),
            value(r.tunnel.and_then(|t| string(t.as_str()))),
            value(r.inner_src_ip.and_then(string)),
            value(r.inner_dst_ip.and_then(string)),
            value(u8v(r.inner_protocol)),
            value(u16v(r.inner_src_port)),
            value(u16v(r.inner_dst_port)),
            value(Some(ValueData::U32Value(r.sample_rate))),
        ],
    }
}

/// An insert of these rows into `table`.
pub fn encode(table: &str, rows: &[PacketRecord]) -> RowInsertRequests {
    RowInsertRequests {
        inserts: vec![RowInsertRequest {
            table_name: table.to_owned(),
            rows: Some(Rows {
                schema: column_schemas(),
                rows: rows.iter().map(encode_row).collect(),
            }),
        }],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Where and how to write.
#[derive(Clone)]
pub struct GreptimeConfig {
    /// `host:port` of GreptimeDB's gRPC endpoint(s).
    pub endpoints: Vec<String>,
    pub database: String,
    pub table: String,
    pub username: Option<String>,
    /// Never logged.
    pub password: Option<String>,
    pub compression: Compression,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Table TTL (`7d`, …) given to the table when the insert creates it.
    pub ttl: Option<String>,
    pub max_in_flight: usize,
    pub shutdown_timeout: Duration,
    /// TLS to the server, when set.
    pub tls: Option<Tls>,
    /// Where rows wait on disk while GreptimeDB is away or the queue is full.
    pub spool: Option<SpoolConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    pub dir: std::path::PathBuf,
    pub max_bytes: u64,
}

/// PEM files for TLS. The ingester connects with a client certificate, so all three are
/// needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub ca_file: std::path::PathBuf,
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

impl std::fmt::Debug for GreptimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GreptimeConfig")
            .field("endpoints", &self.endpoints)
            .field("database", &self.database)
            .field("table", &self.table)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "******"))
            .field("compression", &self.compression)
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("ttl", &self.ttl)
            .field("max_in_flight", &self.max_in_flight)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("tls", &self.tls)
            .field("spool", &self.spool)
            .finish()
    }
}

impl GreptimeConfig {
    /// Request hints: the table the insert creates is append-only (GreptimeDB would
    /// otherwise keep one row per tags+timestamp) and carries the TTL when one is set.
    pub fn hints(&self) -> Vec<(&'static str, String)> {
        let mut hints = vec![("append_mode", "true".to_owned())];
        if let Some(ttl) = &self.ttl {
            hints.push(("ttl", ttl.clone()));
        }
        hints
    }

    fn describe(&self) -> String {
        format!(
            "GreptimeDB at {} (database {}, table {})",
            self.endpoints.join(","),
            self.database,
            self.table
        )
    }
}

/// How long one gRPC request may take before it counts as a (retriable) timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// What to do about a failed write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Try again later (server unavailable, timeout, connection reset, overloaded).
    Retry(String),
    /// A retry cannot help; the message says what to do.
    Fatal { kind: Code, message: String },
}

/// Sorts an ingester error into retriable or fatal, with advice for the fatal ones.
pub fn classify(e: &greptimedb_ingester::Error, cfg: &GreptimeConfig) -> Failure {
    let greptimedb_ingester::Error::Server { status, .. } = e else {
        return if e.is_retriable() {
            Failure::Retry(e.to_string())
        } else {
            Failure::Fatal {
                kind: Code::InvalidArgument,
                message: e.to_string(),
            }
        };
    };
    let code = status.code();
    let msg = status.message();
    let advice = match code {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Cancelled
        | Code::Internal
        | Code::Unknown => {
            // Transport failures hide their cause (connection refused, reset, …) in the
            // source chain.
            let mut why = msg.to_owned();
            let mut source = std::error::Error::source(status.as_ref());
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !why.contains(&cause_text) {
                    why = format!("{why}: {cause_text}");
                }
                source = cause.source();
            }
            return Failure::Retry(why);
        }
        Code::Unauthenticated => {
            "check FLOWMETRIX_GREPTIME_USERNAME and FLOWMETRIX_GREPTIME_PASSWORD".to_owned()
        }
        Code::PermissionDenied => format!("the user may not write to database {}", cfg.database),
        Code::NotFound => format!(
            "create it first (CREATE DATABASE {}) or pick another with --database",
            cfg.database
        ),
        Code::InvalidArgument | Code::AlreadyExists | Code::FailedPrecondition => format!(
            "table {} exists with another schema: write to another table with --table, or drop it",
            cfg.table
        ),
        _ => "see the GreptimeDB server log".to_owned(),
    };
    Failure::Fatal {
        kind: code,
        message: format!("{msg}; {advice}"),
    }
}

/// Shared by the write tasks: the connection, counters, and what was already logged.
struct Writer {
    db: Database,
    hints: Vec<(&'static str, String)>,
    cfg: GreptimeConfig,
    counters: Arc<Counters>,
    /// When the current outage began (None while writes succeed).
    outage: Mutex<Option<Instant>>,
    /// Fatal error kinds already reported (each is logged once).
    reported: Mutex<HashSet<Code>>,
    /// Set when shutdown begins: retries stop at this instant.
    deadline: watch::Sender<Option<Instant>>,
    spool: Option<Arc<Spool>>,
}

impl Writer {
    fn hints(&self) -> Vec<(&str, &str)> {
        self.hints.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    fn time_left(&self) -> Option<Duration> {
        let deadline = *self.deadline.borrow();
        deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    fn outage_began(&self, why: &str) {
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        if outage.is_none() {
            *outage = Some(Instant::now());
            let meanwhile = if self.spool.is_some() {
                "rows go to the disk spool meanwhile"
            } else {
                "rows wait in the queue meanwhile"
            };
            warn!(
                "{} failed: {why}; retrying ({meanwhile})",
                self.cfg.describe()
            );
        }
    }

    fn succeeded(&self) {
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = outage.take() {
            info!(
                "{} is writable again after {:.1}s",
                self.cfg.describe(),
                since.elapsed().as_secs_f64()
            );
        }
    }

    fn fatal(&self, kind: Code, message: &str) {
        let first = self
            .reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind);
        if first {
            error!("{}: {message}", self.cfg.describe());
        }
    }

    /// One attempt at one insert, bounded by the request timeout and the shutdown
    /// deadline.
    async fn attempt(&self, request: &RowInsertRequests, rows: u64) -> Attempt {
        let budget = self
            .time_left()
            .map_or(REQUEST_TIMEOUT, |t| t.min(REQUEST_TIMEOUT));
        let res = tokio::time::timeout(
            budget,
            self.db.insert_with_hints(request.clone(), &self.hints()),
        )
        .await;
        match res {
            Ok(Ok(_affected)) => {
                self.succeeded();
                Attempt::Written
            }
            Ok(Err(e)) => match classify(&e, &self.cfg) {
                Failure::Retry(why) => Attempt::Retry(why),
                Failure::Fatal { kind, message } => {
                    self.fatal(kind, &message);
                    Counters::add(&self.counters.write_errors, rows);
                    Attempt::Fatal
                }
            },
            Err(_) => Attempt::Retry(format!("no answer within {budget:?}")),
        }
    }

    /// Sleeps `backoff` with jitter, cut short when shutdown begins; false when the
    /// shutdown deadline leaves no time for another try.
    async fn back_off(&self, backoff: Duration) -> bool {
        let jittered = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
        if self.time_left().is_some_and(|left| left <= jittered) {
            return false;
        }
        let mut deadline_set = self.deadline.subscribe();
        tokio::select! {
            () = tokio::time::sleep(jittered) => {}
            _ = deadline_set.changed() => {}
        }
        true
    }

    /// Writes one batch. What a retry cannot fix is counted as write errors; retriable
    /// failures go to the spool when there is one, else are retried until the deadline.
    async fn write(&self, rows: Vec<PacketRecord>) {
        let n = rows.len() as u64;
        let started = Instant::now();
        let request = encode(&self.cfg.table, &rows);
        drop(rows);
        let mut backoff = BACKOFF_START;
        loop {
            match self.attempt(&request, n).await {
                Attempt::Written => {
                    Counters::add(&self.counters.written, n);
                    self.counters.write_seconds.observe(started.elapsed());
                    return;
                }
                Attempt::Fatal => return,
                Attempt::Retry(why) => {
                    self.outage_began(&why);
                    if let Some(spool) = &self.spool {
                        spool.append(&request, n);
                        return;
                    }
                    Counters::add(&self.counters.write_retries, 1);
                    if !self.back_off(backoff).await {
                        // Shutting down and out of time: these rows are not written.
                        Counters::add(&self.counters.write_errors, n);
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                }
            }
        }
    }

    /// Replays the spool, oldest first, while live rows keep flowing; a segment is deleted
    /// once all its records are acknowledged. Stops when shutdown begins, keeping on disk
    /// only what was not acknowledged.
    async fn replay(self: Arc<Self>, spool: Arc<Spool>) {
        // The segment being replayed and its next record.
        let mut current: Option<(Segment, Contents, usize)> = None;
        let mut backoff = BACKOFF_START;
        let mut deadline_set = self.deadline.subscribe();
        while self.deadline.borrow().is_none() {
            if current.is_none() {
                current = spool.take_oldest().map(|(seg, c)| (seg, c, 0));
            }
            let Some((seg, contents, next)) = current.as_mut() else {
                tokio::select! {
                    () = tokio::time::sleep(REPLAY_IDLE) => {}
                    _ = deadline_set.changed() => {}
                }
                continue;
            };
            let Some(&(_, rows)) = contents.records.get(*next) else {
                spool.done(seg);
                current = None;
                continue;
            };
            let Some(request) = contents.request(*next) else {
                *next += 1; // checked when the segment was read; cannot happen
                continue;
            };
            match self.attempt(&request, rows).await {
                Attempt::Written => {
                    Counters::add(&self.counters.spool_replayed, rows);
                    *next += 1;
                    backoff = BACKOFF_START;
                }
                Attempt::Fatal => *next += 1,
                Attempt::Retry(why) => {
                    self.outage_began(&why);
                    Counters::add(&self.counters.write_retries, 1);
                    if !self.back_off(backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                }
            }
        }
        if let Some((seg, contents, next)) = current {
            spool.keep_rest(seg, &contents, next);
        }
    }
}

/// How one attempt at an insert went.
enum Attempt {
    Written,
    /// Counted as write errors already.
    Fatal,
    Retry(String),
}

/// How often an idle replayer looks at the spool.
const REPLAY_IDLE: Duration = Duration::from_millis(200);

fn connect(cfg: &GreptimeConfig) -> Result<Database, SinkError> {
    let mut channel = ChannelConfig::default()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let compression = match cfg.compression {
        Compression::None => None,
        Compression::Gzip => Some(GrpcCompression::Gzip),
        Compression::Zstd => Some(GrpcCompression::Zstd),
    };
    if let Some(c) = compression {
        channel = channel.with_send_compression(c).with_accept_compression(c);
    }
    let manager = match &cfg.tls {
        None => ChannelManager::with_config(channel),
        Some(tls) => {
            let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
            let option = ClientTlsOption {
                server_ca_cert_path: path(&tls.ca_file),
                client_cert_path: path(&tls.cert_file),
                client_key_path: path(&tls.key_file),
            };
            ChannelManager::with_tls_config(channel.client_tls_config(option))
                .map_err(|e| SinkError::Tls(e.to_string()))?
        }
    };
    let client = Client::with_manager_and_urls(manager, &cfg.endpoints);
    let mut db = Database::new_with_dbname(cfg.database.clone(), client);
    if let Some(username) = &cfg.username {
        db.set_auth(AuthScheme::Basic(Basic {
            username: username.clone(),
            password: cfg.password.clone().unwrap_or_default(),
        }));
    }
    Ok(db)
}

/// Checks at start-up that the endpoint answers and accepts our database and credentials,
/// and says so; capture goes on either way.
async fn startup_check(writer: Arc<Writer>) {
    let empty = RowInsertRequests { inserts: vec![] };
    let res = tokio::time::timeout(
        Duration::from_secs(3),
        writer.db.insert_with_hints(empty, &writer.hints()),
    )
    .await;
    match res {
        Ok(Ok(_)) => info!("{} is ready", writer.cfg.describe()),
        Ok(Err(e)) => match classify(&e, &writer.cfg) {
            Failure::Retry(why) => writer.outage_began(&why),
            Failure::Fatal { kind, message } => writer.fatal(kind, &message),
        },
        Err(_) => writer.outage_began("no answer within 3s"),
    }
}

/// Writes batches from `rx` until it closes. When `shutdown` fires, retries get
/// `shutdown_timeout` more before the rows they hold count as write errors (or, with a
/// spool, go to it).
pub async fn run(
    cfg: GreptimeConfig,
    mut rx: Receiver,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
    spool: Option<Arc<Spool>>,
) -> Result<(), SinkError> {
    let writer = Arc::new(Writer {
        db: connect(&cfg)?,
        hints: cfg.hints(),
        cfg: cfg.clone(),
        counters,
        outage: Mutex::new(None),
        reported: Mutex::new(HashSet::new()),
        deadline: watch::Sender::new(None),
        spool: spool.clone(),
    });
    tokio::spawn(startup_check(Arc::clone(&writer)));
    let replayer = spool
        .clone()
        .map(|spool| tokio::spawn(Arc::clone(&writer).replay(spool)));
    {
        let writer = Arc::clone(&writer);
        let timeout = cfg.shutdown_timeout;
        tokio::spawn(async move {
            if shutdown.wait_for(|&s| s).await.is_ok() {
                writer.deadline.send_replace(Some(Instant::now() + timeout));
            }
        });
    }

    let in_flight = Arc::new(Semaphore::new(cfg.max_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    let mut pending: Vec<PacketRecord> = Vec::with_capacity(cfg.batch_size);
    let mut flush_at: Option<tokio::time::Instant> = None;

    let submit = |rows: Vec<PacketRecord>, tasks: &mut JoinSet<()>, permit| {
        let writer = Arc::clone(&writer);
        tasks.spawn(async move {
            writer.write(rows).await;
            drop(permit);
        });
    };

    loop {
        let timer = async {
            match flush_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                if pending.is_empty() {
                    flush_at = Some(tokio::time::Instant::now() + cfg.flush_interval);
                }
                pending.extend(batch);
                while pending.len() >= cfg.batch_size {
                    let rest = pending.split_off(cfg.batch_size);
                    let full = std::mem::replace(&mut pending, rest);
                    let permit = Arc::clone(&in_flight).acquire_owned().await;
                    submit(full, &mut tasks, permit);
                }
                if pending.is_empty() {
                    flush_at = None;
                }
            }
            () = timer => {
                flush_at = None;
                let rows = std::mem::take(&mut pending);
                let permit = Arc::clone(&in_flight).acquire_owned().await;
                submit(rows, &mut tasks, permit);
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }

    // The queue is closed: capture has stopped. Write what is left within the deadline.
    if !pending.is_empty() {
        let permit = Arc::clone(&in_flight).acquire_owned().await;
        submit(pending, &mut tasks, permit);
    }
    while tasks.join_next().await.is_some() {}
    if let Some(replayer) = replayer {
        let _ = replayer.await;
    }
    if let Some(spool) = &spool {
        spool.sync();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{COLUMNS, PacketType, Tunnel, UnixNanos};

    fn record() -> PacketRecord {
        PacketRecord {
            ts: UnixNanos(1_795_000_000_123_456_789),
            packet_size: 1514,
            ether_type: 0x0800,
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
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
            sample_rate: 10,
        }
    }

    #[test]
    fn schema_matches_the_record_columns_in_order() {
        let names: Vec<&str> = SCHEMA.iter().map(|c| c.name).collect();
        assert_eq!(names, COLUMNS);
        let tags: Vec<&str> = SCHEMA
            .iter()
            .filter(|c| c.semantic == SemanticType::Tag)
            .map(|c| c.name)
            .collect();
        assert_eq!(tags, ["src_ip", "dst_port", "packet_type", "application"]);
        let ts: Vec<&Column> = SCHEMA
            .iter()
            .filter(|c| c.semantic == SemanticType::Timestamp)
            .collect();
        assert_eq!(ts.len(), 1);
        assert_eq!(ts[0].name, "ts");
    }

    /// Whether a value may be stored in a column of this type.
    fn fits(v: &ValueData, t: ColumnDataType) -> bool {
        matches!(
            (v, t),
            (
                ValueData::TimestampNanosecondValue(_),
                ColumnDataType::TimestampNanosecond
            ) | (ValueData::U8Value(0..=255), ColumnDataType::Uint8)
                | (ValueData::U16Value(0..=65535), ColumnDataType::Uint16)
                | (ValueData::U32Value(_), ColumnDataType::Uint32)
                | (ValueData::StringValue(_), ColumnDataType::String)
        )
    }

    #[test]
    fn every_value_has_its_column_type() {
        let row = encode_row(&record());
        assert_eq!(row.values.len(), SCHEMA.len());
        for (v, c) in row.values.iter().zip(SCHEMA) {
            let v = v.value_data.as_ref().expect("all set in this record");
            assert!(
                fits(v, c.data_type),
                "{}: {v:?} in {:?}",
                c.name,
                c.data_type
            );
        }
        let json = serde_json::to_value(record()).unwrap();
        let text = |i: usize| match &row.values[i].value_data {
            Some(ValueData::StringValue(s)) => s.clone(),
            other => panic!("{other:?}"),
        };
        for (i, c) in SCHEMA.iter().enumerate() {
            if c.data_type == ColumnDataType::String {
                assert_eq!(json[c.name], text(i), "{}", c.name);
            }
        }
    }

    #[test]
    fn absent_values_are_null() {
        let r = PacketRecord {
            ts: record().ts,
            ..PacketRecord::default()
        };
        let row = encode_row(&r);
        for name in [
            "protocol",
            "src_ip",
            "dst_ip",
            "src_port",
            "dst_port",
            "tcp_flags",
        ] {
            let i = SCHEMA.iter().position(|c| c.name == name).unwrap();
            assert_eq!(row.values[i].value_data, None, "{name}");
        }
    }

    fn cfg() -> GreptimeConfig {
        GreptimeConfig {
            endpoints: vec!["127.0.0.1:4001".into()],
            database: "public".into(),
            table: "packet_data".into(),
            username: Some("u".into()),
            password: Some("secret".into()),
            compression: Compression::None,
            batch_size: 10,
            flush_interval: Duration::from_secs(1),
            ttl: Some("7d".into()),
            max_in_flight: 2,
            shutdown_timeout: Duration::from_secs(1),
            tls: None,
            spool: None,
        }
    }

    #[test]
    fn hints_make_the_table_append_only_with_ttl() {
        assert_eq!(
            cfg().hints(),
            vec![("append_mode", "true".to_owned()), ("ttl", "7d".to_owned())]
        );
        let mut c = cfg();
        c.ttl = None;
        assert_eq!(c.hints(), vec![("append_mode", "true".to_owned())]);
    }

    #[test]
    fn password_is_not_in_debug_output() {
        assert!(!format!("{:?}", cfg()).contains("secret"));
    }

    #[test]
    fn errors_are_sorted_by_what_a_retry_can_do() {
        let server =
            |code, msg: &str| greptimedb_ingester::Error::from(tonic::Status::new(code, msg));
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
        ] {
            assert!(
                matches!(classify(&server(code, "x"), &cfg()), Failure::Retry(_)),
                "{code:?}"
            );
        }
        let Failure::Fatal { kind, message } = classify(
            &server(Code::Unauthenticated, "User password mismatch"),
            &cfg(),
        ) else {
            panic!()
        };
        assert_eq!(kind, Code::Unauthenticated);
        assert!(
            message.contains("FLOWMETRIX_GREPTIME_PASSWORD"),
            "{message}"
        );
        let Failure::Fatal { message, .. } = classify(
            &server(Code::NotFound, "Database not found: greptime.nope"),
            &cfg(),
        ) else {
            panic!()
        };
        assert!(message.contains("CREATE DATABASE public"), "{message}");
        let Failure::Fatal { message, .. } = classify(
            &server(Code::InvalidArgument, "column protocol type mismatch"),
            &cfg(),
        ) else {
            panic!()
        };
        assert!(
            message.contains("packet_data") && message.contains("protocol"),
            "{message}"
        );
    }
}
