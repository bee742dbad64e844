//! A protocol-faithful GreptimeDB test endpoint — not a database.
//!
//! A tonic server built on `greptime_proto`'s own `GreptimeDatabase` (and `HealthCheck`)
//! server traits, the gRPC the ingester speaks. It answers `Handle` with affected rows and
//! keeps every `RowInsertRequests` with its metadata (database, hints, auth). It enforces
//! what the real server enforces that matters here, answering each case with the gRPC
//! code, `x-greptime-err-code`/`-msg` metadata and message GreptimeDB 1.0/1.1 gives
//! (/work/shared/GREPTIMEDB.md): credentials first (no header 7003, unknown user NotFound
//! 7000, wrong password 7002), then the database (unknown: InvalidArgument 1004 "Failed to
//! find schema, schema info: …"; an insert without rows does not look it up), then the table
//! (column types fixed by the insert that created it: 1004 "Invalid request to region …,
//! reason: column x expect type …, given: …"; missing with `auto_create_table=false`: 1004).
//! SQL over `Handle`: `USE db` answers 1004 for an unknown database, else Unimplemented
//! "GreptimeDatabase::Handle for query" without a code, as the server does for any
//! statement with a result; other statements are kept and answer AffectedRows(0). It can
//! be told to fail (with any code), stall, or refuse connections for a while.
//!
//! The server listens on the host's loopback; a small TCP front, whose listener is created
//! inside the collector's network namespace, forwards to it. Refusing connections closes
//! that front (listener and open connections) and reopens it on the same port later.

mod ddl;
mod flight;
mod front;
mod pki;
mod service;
mod statements;

pub use front::Forwarder;
use front::listen_in;
pub use pki::TestPki;
use service::{greptime_code_for, gt_error};

use std::{
    collections::HashMap,
    ffi::CString,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use greptime_proto::v1::{
    AffectedRows, ColumnDataType, ColumnSchema, GreptimeRequest, GreptimeResponse,
    HealthCheckRequest, HealthCheckResponse, QueryRequest, ResponseHeader, Row, SemanticType,
    Status as GtStatus,
    auth_header::AuthScheme,
    greptime_database_server::{GreptimeDatabase, GreptimeDatabaseServer},
    greptime_request::Request as GtRequest,
    greptime_response,
    health_check_server::{HealthCheck, HealthCheckServer},
    query_request::Query,
    value::ValueData,
};
use serde_json::{Map, Value, json};
use tokio::{net::TcpStream, runtime::Runtime, sync::watch, task::JoinHandle};
use tonic::{Code, Request, Response, Status, codec::CompressionEncoding, metadata::MetadataValue};

/// One accepted (or rejected) `Handle` call, as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub database: String,
    /// The `x-greptime-hints` metadata, e.g. `append_mode=true,ttl=7d`.
    pub hints: Option<String>,
    pub auth: Option<(String, String)>,
    pub table: String,
    pub schema: Vec<ColumnSchema>,
    pub rows: Vec<Row>,
}

/// What reached the server proper, in order: SQL statements and the inserts it applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Sql(String),
    Insert { table: String, rows: usize },
}

#[derive(Default)]
struct State {
    databases: Vec<String>,
    /// Required credentials, if any.
    user: Option<(String, String)>,
    /// (database, table) → column name → type, fixed when first seen.
    tables: HashMap<(String, String), Vec<(String, i32)>>,
    /// Tables that keep every row (created with the `append_mode=true` hint, or altered).
    append_only: std::collections::HashSet<(String, String)>,
    received: Vec<Received>,
    /// Fail this many coming requests with this gRPC code, greptime code and message.
    fail: Option<(usize, Code, u32, String)>,
    /// SQL statements received, in order.
    sql: Vec<String>,
    /// SQL statements and applied inserts, in order.
    events: Vec<Event>,
    stall: Option<Duration>,
    handled: usize,
    /// Keep only (table, ts, src_port) of each row, for long runs.
    keys_only: bool,
    /// Going away: every request is refused before it is applied.
    down: bool,
    keys: Vec<(String, i64, u32)>,
    /// (database, table) → column → semantic type, for tables whose roles are known (made
    /// by DDL or by an insert here; [`Endpoint::create_table`] leaves them unchecked).
    roles: HashMap<(String, String), HashMap<String, i32>>,
    /// (database, flow) → its CREATE FLOW statement.
    flows: HashMap<(String, String), String>,
    /// Arrow Flight `DoPut` (bulk writes): faults and counts.
    bulk: flight::BulkState,
}

#[derive(Clone)]
struct Service(Arc<Mutex<State>>);

pub struct Endpoint {
    /// Where the collector connects (inside its namespace).
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    front: Forwarder,
    _runtime: Runtime,
}

impl Endpoint {
    /// Starts the endpoint, reachable at 127.0.0.1 inside `netns` (whose loopback must be
    /// up), knowing the database `public`.
    pub fn start(netns: Option<&str>) -> Self {
        Self::start_with(netns, None)
    }

    /// The same, serving TLS with `pki`'s server certificate and requiring a client
    /// certificate signed by its CA.
    pub fn start_tls(netns: Option<&str>, pki: &TestPki) -> Self {
        Self::start_with(netns, Some(pki))
    }

    fn start_with(netns: Option<&str>, pki: Option<&TestPki>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(Mutex::new(State {
            databases: vec!["public".into()],
            ..Default::default()
        }));
        let service = Service(Arc::clone(&state));
        let bulk = flight::server(Arc::clone(&state));
        let backend_listener = listen_in(None, "127.0.0.1:0".parse().unwrap());
        let backend = backend_listener.local_addr().unwrap();
        let tls = pki.map(|p| {
            use tonic::transport::{Certificate, Identity, ServerTlsConfig};
            ServerTlsConfig::new()
                .identity(Identity::from_pem(&p.server_cert, &p.server_key))
                .client_ca_root(Certificate::from_pem(&p.ca_pem))
        });
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(backend_listener).unwrap();
            let db = GreptimeDatabaseServer::new(service.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Zstd);
            let mut server = tonic::transport::Server::builder();
            if let Some(tls) = tls {
                server = server.tls_config(tls).unwrap();
            }
            server
                .add_service(db)
                .add_service(HealthCheckServer::new(service))
                .add_service(bulk)
                // TCP_NODELAY as GreptimeDB's gRPC server sets it (`TcpIncoming … with_nodelay`);
                // tonic applies its own `tcp_nodelay` only to `serve(addr)`. Without it, the
                // small per-batch answers of a bulk stream waited on Nagle and delayed ACKs
                // (~34 ms a batch), which the real server does not do.
                .serve_with_incoming(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                )
                .await
                .unwrap();
        });
        let front = Forwarder::start(runtime.handle().clone(), netns, backend);
        Self {
            addr: front.addr,
            state,
            front,
            _runtime: runtime,
        }
    }

    pub fn add_database(&self, name: &str) {
        self.state.lock().unwrap().databases.push(name.into());
    }

    pub fn require_user(&self, user: &str, password: &str) {
        self.state.lock().unwrap().user = Some((user.into(), password.into()));
    }

    /// A table as if created earlier by someone else, with these column types.
    pub fn create_table(&self, db: &str, table: &str, columns: &[(&str, ColumnDataType)]) {
        let cols = columns
            .iter()
            .map(|(n, t)| ((*n).to_owned(), *t as i32))
            .collect();
        self.state
            .lock()
            .unwrap()
            .tables
            .insert((db.into(), table.into()), cols);
    }

    /// A table as if created earlier by someone else (the Go original, say), with these
    /// column types and roles: inserts declaring another role are refused, as the server's
    /// region does.
    pub fn create_table_with_roles(
        &self,
        db: &str,
        table: &str,
        columns: &[(&str, ColumnDataType, SemanticType)],
    ) {
        let mut st = self.state.lock().unwrap();
        let key = (db.to_owned(), table.to_owned());
        st.tables.insert(
            key.clone(),
            columns
                .iter()
                .map(|(n, t, _)| ((*n).to_owned(), *t as i32))
                .collect(),
        );
        st.roles.insert(
            key,
            columns
                .iter()
                .map(|(n, _, r)| ((*n).to_owned(), *r as i32))
                .collect(),
        );
    }

    /// Drops `db.table` (as `DROP TABLE` would), if it is there.
    pub fn drop_table(&self, db: &str, table: &str) {
        let mut st = self.state.lock().unwrap();
        let key = (db.to_owned(), table.to_owned());
        st.tables.remove(&key);
        st.roles.remove(&key);
        st.append_only.remove(&key);
    }

    /// The role (semantic type) of each column of `db.table`, when known.
    pub fn roles(&self, db: &str, table: &str) -> HashMap<String, SemanticType> {
        self.state
            .lock()
            .unwrap()
            .roles
            .get(&(db.to_owned(), table.to_owned()))
            .map(|r| {
                r.iter()
                    .filter_map(|(n, v)| Some((n.clone(), SemanticType::try_from(*v).ok()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The column types of `db.table`, in order.
    pub fn column_types(&self, db: &str, table: &str) -> Vec<(String, ColumnDataType)> {
        self.state
            .lock()
            .unwrap()
            .tables
            .get(&(db.to_owned(), table.to_owned()))
            .map(|c| {
                c.iter()
                    .filter_map(|(n, t)| Some((n.clone(), ColumnDataType::try_from(*t).ok()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The flows of `db`: name → CREATE FLOW statement.
    pub fn flows(&self, db: &str) -> std::collections::BTreeMap<String, String> {
        self.state
            .lock()
            .unwrap()
            .flows
            .iter()
            .filter(|((d, _), _)| d == db)
            .map(|((_, n), sql)| (n.clone(), sql.clone()))
            .collect()
    }

    /// Table names of `db`, sorted.
    pub fn tables(&self, db: &str) -> Vec<String> {
        let mut t: Vec<String> = self
            .state
            .lock()
            .unwrap()
            .tables
            .keys()
            .filter(|(d, _)| d == db)
            .map(|(_, t)| t.clone())
            .collect();
        t.sort();
        t
    }

    /// The next `n` requests fail with `code` and the greptime code GreptimeDB pairs with
    /// it (Unavailable: 5000 StorageUnavailable, ResourceExhausted: 6001 RateLimited, …).
    pub fn fail_next(&self, n: usize, code: Code) {
        self.fail_next_with(n, code, greptime_code_for(code), "injected failure");
    }

    /// The next `n` requests fail with exactly this answer.
    pub fn fail_next_with(&self, n: usize, code: Code, greptime_code: u32, msg: &str) {
        self.state.lock().unwrap().fail = Some((n, code, greptime_code, msg.into()));
    }

    /// The columns of `db.table`, in the order they were added.
    pub fn columns(&self, db: &str, table: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .tables
            .get(&(db.to_owned(), table.to_owned()))
            .map(|cols| cols.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether `db.table` keeps every row (append mode).
    pub fn append_only(&self, db: &str, table: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .append_only
            .contains(&(db.to_owned(), table.to_owned()))
    }

    /// SQL statements received over `Handle`, in order.
    pub fn sql(&self) -> Vec<String> {
        self.state.lock().unwrap().sql.clone()
    }

    /// SQL statements and applied inserts, in the order they reached the server.
    pub fn events(&self) -> Vec<Event> {
        self.state.lock().unwrap().events.clone()
    }

    /// Every request waits this long before it is answered.
    pub fn stall(&self, d: Option<Duration>) {
        self.state.lock().unwrap().stall = d;
    }

    /// Goes away for `d`, returns at once: first answers every request `Unavailable`
    /// without applying it (as a server shutting down does), so no insert is in flight,
    /// then refuses connections and drops open ones. (A connection cut while the server is
    /// applying an insert makes the client send it again: delivery is at-least-once.)
    pub fn refuse_for(&self, d: Duration) {
        let drain = Duration::from_millis(200);
        self.state.lock().unwrap().down = true;
        std::thread::sleep(drain);
        self.front.refuse_for(d.saturating_sub(drain));
        let state = Arc::clone(&self.state);
        std::thread::spawn(move || {
            std::thread::sleep(d.saturating_sub(drain));
            state.lock().unwrap().down = false;
        });
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Requests answered so far (accepted or rejected).
    pub fn handled(&self) -> usize {
        self.state.lock().unwrap().handled
    }

    /// Keep only each row's (ts, src_port): for long runs, see [`row_keys`](Self::row_keys).
    pub fn keys_only(&self) {
        self.state.lock().unwrap().keys_only = true;
    }

    /// Answer normally again (after [`fail_next`](Self::fail_next)).
    pub fn heal(&self) {
        self.state.lock().unwrap().fail = None;
    }

    /// (ts, src_port) of every row received for `table`: cheap keys for large runs.
    pub fn row_keys(&self, table: &str) -> Vec<(i64, u32)> {
        let st = self.state.lock().unwrap();
        let mut out: Vec<(i64, u32)> = st
            .keys
            .iter()
            .filter(|k| k.0 == table)
            .map(|k| (k.1, k.2))
            .collect();
        for r in st.received.iter().filter(|r| r.table == table) {
            let col = |name: &str| r.schema.iter().position(|c| c.column_name == name);
            let (Some(ts), Some(port)) = (col("ts"), col("src_port")) else {
                continue;
            };
            for row in &r.rows {
                let ts = match row.values[ts].value_data {
                    Some(ValueData::TimestampNanosecondValue(v)) => v,
                    _ => 0,
                };
                let port = match row.values[port].value_data {
                    Some(ValueData::U16Value(v)) => v,
                    _ => 0,
                };
                out.push((ts, port));
            }
        }
        out
    }

    /// Every row received for `table`, as JSON objects keyed by column name, in the forms
    /// the JSON-lines output uses (ts as RFC 3339 with nanoseconds).
    pub fn rows(&self, table: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for r in self.received().iter().filter(|r| r.table == table) {
            for row in &r.rows {
                let mut obj = Map::new();
                for (col, v) in r.schema.iter().zip(&row.values) {
                    obj.insert(col.column_name.clone(), json_value(v.value_data.as_ref()));
                }
                out.push(Value::Object(obj));
            }
        }
        out
    }
}

fn json_value(v: Option<&ValueData>) -> Value {
    match v {
        None => Value::Null,
        Some(ValueData::U8Value(n) | ValueData::U16Value(n) | ValueData::U32Value(n)) => json!(n),
        Some(ValueData::U64Value(n)) => json!(n),
        Some(ValueData::StringValue(s)) => json!(s),
        Some(ValueData::TimestampNanosecondValue(ns)) => json!(
            chrono::DateTime::from_timestamp_nanos(*ns)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        ),
        Some(other) => json!(format!("{other:?}")),
    }
}
