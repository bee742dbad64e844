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

#[path = "ddl.rs"]
mod ddl;
#[path = "flight.rs"]
mod flight;

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

/// A GreptimeDB-style error: gRPC code, with the server's status code and message in the
/// metadata, as GreptimeDB's `define_into_tonic_status!` builds them.
fn gt_error(code: Code, gt_code: u32, msg: String) -> Status {
    let mut status = Status::new(code, msg.clone());
    status
        .metadata_mut()
        .insert("x-greptime-err-code", MetadataValue::from(gt_code));
    if let Ok(v) = msg.parse() {
        status.metadata_mut().insert("x-greptime-err-msg", v);
    }
    status
}

/// A column type as the server's region names it (`ConcreteDataType`'s Debug form).
fn region_type_name(t: i32) -> String {
    use ColumnDataType as T;
    match ColumnDataType::try_from(t) {
        Ok(T::Uint8) => "UInt8(UInt8Type)".into(),
        Ok(T::Uint16) => "UInt16(UInt16Type)".into(),
        Ok(T::Uint32) => "UInt32(UInt32Type)".into(),
        Ok(T::Uint64) => "UInt64(UInt64Type)".into(),
        Ok(T::String) => "String(StringType)".into(),
        Ok(T::TimestampNanosecond) => "Timestamp(Nanosecond(TimestampNanosecondType))".into(),
        Ok(other) => format!("{other:?}"),
        Err(_) => format!("type {t}"),
    }
}

/// A column type as the request gave it (the proto enum's name and number).
fn request_type_name(t: i32) -> String {
    ColumnDataType::try_from(t).map_or_else(
        |_| format!("type {t}"),
        |c| format!("{}({t})", c.as_str_name()),
    )
}

/// The greptime code GreptimeDB pairs with a gRPC code for the failures tests inject.
fn greptime_code_for(code: Code) -> u32 {
    match code {
        Code::Unavailable => 5000,       // StorageUnavailable
        Code::ResourceExhausted => 6001, // RateLimited
        Code::Internal => 1003,          // Internal
        Code::DeadlineExceeded => 1008,  // DeadlineExceeded
        Code::InvalidArgument => 1004,   // InvalidArguments
        Code::Unauthenticated => 7002,   // UserPasswordMismatch
        Code::PermissionDenied => 7005,  // AccessDenied
        Code::NotFound => 4001,          // TableNotFound
        _ => 1000,                       // Unknown
    }
}

/// `ALTER TABLE "t" SET 'append_mode' = 'true'` → t.
fn alter_append_mode(sql: &str) -> Option<String> {
    let words: Vec<&str> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .collect();
    match words[..] {
        [alter, table, name, set, "'append_mode'", "=", "'true'"]
            if alter.eq_ignore_ascii_case("alter")
                && table.eq_ignore_ascii_case("table")
                && set.eq_ignore_ascii_case("set") =>
        {
            Some(name.trim_matches('"').replace("\"\"", "\""))
        }
        _ => None,
    }
}

/// `USE x`, `USE "x"` or ``USE `x` `` → x.
fn use_target(sql: &str) -> Option<String> {
    let sql = sql.trim().trim_end_matches(';').trim();
    let (kw, rest) = sql.split_once(char::is_whitespace)?;
    if !kw.eq_ignore_ascii_case("use") {
        return None;
    }
    let rest = rest.trim();
    for q in ['"', '`'] {
        if let Some(inner) = rest.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return Some(inner.replace(&format!("{q}{q}"), &q.to_string()));
        }
    }
    Some(rest.to_lowercase())
}

/// A semantic type as the region prints it (`SemanticType`'s Debug form).
fn role_debug(role: i32) -> &'static str {
    match SemanticType::try_from(role) {
        Ok(SemanticType::Tag) => "Tag",
        Ok(SemanticType::Field) => "Field",
        Ok(SemanticType::Timestamp) => "Timestamp",
        Err(_) => "Unknown",
    }
}

type Answer = Result<Response<GreptimeResponse>, Status>;

/// CREATE TABLE, ALTER TABLE … ADD COLUMN and CREATE FLOW, answered as GreptimeDB does;
/// None for any other statement.
fn ddl_statement(st: &mut State, db: &str, sql: &str) -> Option<Answer> {
    let syntax = |m: String| {
        gt_error(
            Code::InvalidArgument,
            2000,
            format!("Invalid SQL syntax: sql parser error: {m}"),
        )
    };
    let known_db = st.databases.iter().any(|d| d == db);
    let schema_not_found = || {
        gt_error(
            Code::InvalidArgument,
            1004,
            format!("Failed to find schema, schema info: {db}"),
        )
    };
    if let Some(parsed) = ddl::create_table(sql) {
        let t = match parsed {
            Ok(t) => t,
            Err(m) => return Some(Err(syntax(m))),
        };
        if !known_db {
            return Some(Err(schema_not_found()));
        }
        let key = (db.to_owned(), t.name.clone());
        if st.tables.contains_key(&key) {
            return Some(if t.if_not_exists {
                Ok(affected_rows(0))
            } else {
                Err(gt_error(
                    Code::AlreadyExists,
                    4000,
                    format!("Table already exists: `greptime.{db}.{}`", t.name),
                ))
            });
        }
        st.tables.insert(
            key.clone(),
            t.columns
                .iter()
                .map(|(n, ty, _)| (n.clone(), *ty))
                .collect(),
        );
        st.roles.insert(
            key.clone(),
            t.columns.iter().map(|(n, _, r)| (n.clone(), *r)).collect(),
        );
        if t.append_mode {
            st.append_only.insert(key);
        }
        return Some(Ok(affected_rows(0)));
    }
    if let Some(parsed) = ddl::alter_add_column(sql) {
        let (table, column, ty) = match parsed {
            Ok(a) => a,
            Err(m) => return Some(Err(syntax(m))),
        };
        let key = (db.to_owned(), table.clone());
        let Some(cols) = st.tables.get_mut(&key) else {
            return Some(Err(gt_error(
                Code::NotFound,
                4001,
                format!("Table not found: greptime.{db}.{table}"),
            )));
        };
        if !cols.iter().any(|(n, _)| *n == column) {
            cols.push((column.clone(), ty));
            if let Some(roles) = st.roles.get_mut(&key) {
                roles.insert(column, SemanticType::Field as i32);
            }
        }
        return Some(Ok(affected_rows(0)));
    }
    let parsed = ddl::create_flow(sql)?;
    let f = match parsed {
        Ok(f) => f,
        Err(m) => return Some(Err(syntax(m))),
    };
    if !known_db {
        return Some(Err(schema_not_found()));
    }
    let plan = |m: String| gt_error(Code::Internal, 3000, format!("Failed to plan SQL: {m}"));
    let Some(source) = st.tables.get(&(db.to_owned(), f.source.clone())).cloned() else {
        return Some(Err(plan(format!(
            "Table not found: greptime.{db}.{}",
            f.source
        ))));
    };
    let valid: Vec<String> = source
        .iter()
        .map(|(n, _)| format!("{}.{n}", f.source))
        .collect();
    for c in f.columns.iter().chain(&f.group_by) {
        let alias = f.outputs.iter().any(|(a, _, named)| *named && a == c);
        if !alias && !source.iter().any(|(n, _)| n == c) {
            return Some(Err(plan(format!(
                "No field named {c}. Valid fields are {}.",
                valid.join(", ")
            ))));
        }
    }
    let key = (db.to_owned(), f.name.clone());
    if st.flows.contains_key(&key) {
        return Some(if f.if_not_exists {
            Ok(affected_rows(0))
        } else {
            Err(gt_error(
                Code::AlreadyExists,
                8000,
                format!("Flow already exists: greptime.{}", f.name),
            ))
        });
    }
    st.flows.insert(key, sql.to_owned());
    // The flow engine creates a missing sink table: group-by columns as tags, the window
    // as the time index, the sums as BIGINT UNSIGNED, plus update_at.
    let sink = (db.to_owned(), f.sink.clone());
    if !st.tables.contains_key(&sink) {
        let mut cols = Vec::new();
        let mut roles = HashMap::new();
        for (name, aggregate, _) in &f.outputs {
            let (ty, role) = if *aggregate {
                (ColumnDataType::Uint64 as i32, SemanticType::Field)
            } else if let Some((_, ty)) = source.iter().find(|(n, _)| n == name) {
                (*ty, SemanticType::Tag)
            } else {
                (
                    ColumnDataType::TimestampNanosecond as i32,
                    SemanticType::Timestamp,
                )
            };
            cols.push((name.clone(), ty));
            roles.insert(name.clone(), role as i32);
        }
        cols.push((
            "update_at".to_owned(),
            ColumnDataType::TimestampMillisecond as i32,
        ));
        roles.insert("update_at".to_owned(), SemanticType::Field as i32);
        st.tables.insert(sink.clone(), cols);
        st.roles.insert(sink, roles);
    }
    Some(Ok(affected_rows(0)))
}

fn affected_rows(value: u32) -> Response<GreptimeResponse> {
    Response::new(GreptimeResponse {
        header: Some(ResponseHeader {
            status: Some(GtStatus {
                status_code: 0,
                err_msg: String::new(),
            }),
        }),
        response: Some(greptime_response::Response::AffectedRows(AffectedRows {
            value,
        })),
    })
}

#[tonic::async_trait]
impl GreptimeDatabase for Service {
    async fn handle(
        &self,
        request: Request<GreptimeRequest>,
    ) -> Result<Response<GreptimeResponse>, Status> {
        let hints = request
            .metadata()
            .get("x-greptime-hints")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let request = request.into_inner();
        let header = request.header.unwrap_or_default();
        let auth = match header.authorization.and_then(|a| a.auth_scheme) {
            Some(AuthScheme::Basic(b)) => Some((b.username, b.password)),
            _ => None,
        };
        let stall = self.0.lock().unwrap().stall;
        if let Some(d) = stall {
            tokio::time::sleep(d).await;
        }
        let mut st = self.0.lock().unwrap();
        st.handled += 1;
        if st.down {
            // A server going away: the transport refuses, GreptimeDB says nothing.
            return Err(Status::unavailable("the server is shutting down"));
        }
        if let Some((n, code, gt, msg)) = st.fail.clone() {
            st.fail = (n > 1).then(|| (n - 1, code, gt, msg.clone()));
            return Err(gt_error(code, gt, msg));
        }
        if let Some((user, password)) = &st.user {
            match &auth {
                None => {
                    return Err(gt_error(
                        Code::Unauthenticated,
                        7003,
                        "Not found http or grpc authorization header".into(),
                    ));
                }
                Some((given, _)) if given != user => {
                    return Err(gt_error(
                        Code::NotFound,
                        7000,
                        format!("User not found, username: {given}"),
                    ));
                }
                Some((given, given_password)) if given_password != password => {
                    return Err(gt_error(
                        Code::Unauthenticated,
                        7002,
                        format!("Username and password does not match, username: {given}"),
                    ));
                }
                Some(_) => {}
            }
        }
        let db = header.dbname;
        let schema_not_found = |name: &str| {
            gt_error(
                Code::InvalidArgument,
                1004,
                format!("Failed to find schema, schema info: {name}"),
            )
        };
        let inserts = match request.request {
            Some(GtRequest::RowInserts(inserts)) => inserts,
            Some(GtRequest::Query(QueryRequest {
                query: Some(Query::Sql(sql)),
            })) => {
                st.sql.push(sql.clone());
                st.events.push(Event::Sql(sql.clone()));
                if let Some(target) = use_target(&sql) {
                    if !st.databases.contains(&target) {
                        return Err(schema_not_found(&target));
                    }
                    // The statement ran; its (empty) result cannot go back over Handle.
                    return Err(Status::unimplemented("GreptimeDatabase::Handle for query"));
                }
                if let Some(table) = alter_append_mode(&sql) {
                    if !st.databases.contains(&db) {
                        return Err(schema_not_found(&db));
                    }
                    let key = (db.clone(), table);
                    if !st.tables.contains_key(&key) {
                        return Err(gt_error(
                            Code::NotFound,
                            4001,
                            format!("Table not found: greptime.{}.{}", key.0, key.1),
                        ));
                    }
                    st.append_only.insert(key);
                    return Ok(affected_rows(0));
                }
                if let Some(answer) = ddl_statement(&mut st, &db, &sql) {
                    return answer;
                }
                let head = sql.trim_start().to_ascii_uppercase();
                if ["SELECT", "SHOW", "DESC", "EXPLAIN", "TQL"]
                    .iter()
                    .any(|k| head.starts_with(k))
                {
                    return Err(Status::unimplemented("GreptimeDatabase::Handle for query"));
                }
                if !st.databases.contains(&db) {
                    return Err(schema_not_found(&db));
                }
                return Ok(affected_rows(0));
            }
            _ => {
                return Err(gt_error(
                    Code::Unimplemented,
                    1001,
                    "only row inserts and SQL here".into(),
                ));
            }
        };
        // Inserts without rows are dropped first: an empty request looks nothing up.
        let mut inserts = inserts;
        inserts
            .inserts
            .retain(|i| i.rows.as_ref().is_some_and(|r| !r.rows.is_empty()));
        if inserts.inserts.is_empty() {
            return Ok(affected_rows(0));
        }
        if !st.databases.contains(&db) {
            return Err(schema_not_found(&db));
        }
        let auto_create = !hints
            .as_deref()
            .unwrap_or("")
            .split(',')
            .any(|h| h.trim() == "auto_create_table=false");
        // Check every insert before keeping any (one request, one outcome).
        for insert in &inserts.inserts {
            let rows = insert.rows.clone().unwrap_or_default();
            let key = (db.clone(), insert.table_name.clone());
            if let Some(cols) = st.tables.get(&key) {
                // Region ids as the server forms them: table id << 32 | region number.
                let table_id = 1024 + st.tables.keys().filter(|k| **k < key).count() as u64;
                for c in &rows.schema {
                    if let Some((_, t)) = cols.iter().find(|(n, _)| *n == c.column_name)
                        && *t != c.datatype
                    {
                        return Err(gt_error(
                            Code::InvalidArgument,
                            1004,
                            format!(
                                "Invalid request to region {}({table_id}, 0), reason: column {} expect type {}, given: {}",
                                table_id << 32,
                                c.column_name,
                                region_type_name(*t),
                                request_type_name(c.datatype)
                            ),
                        ));
                    }
                }
                if let Some(roles) = st.roles.get(&key) {
                    for c in &rows.schema {
                        if let Some(role) = roles.get(&c.column_name)
                            && *role != c.semantic_type
                        {
                            return Err(gt_error(
                                Code::InvalidArgument,
                                1004,
                                format!(
                                    "Invalid request to region {}({table_id}, 0), reason: column {} has semantic type {}, given: {}({})",
                                    table_id << 32,
                                    c.column_name,
                                    role_debug(*role),
                                    SemanticType::try_from(c.semantic_type)
                                        .map_or("Unknown", |r| r.as_str_name()),
                                    c.semantic_type
                                ),
                            ));
                        }
                    }
                }
            } else if !auto_create {
                return Err(gt_error(
                    Code::InvalidArgument,
                    1004,
                    format!(
                        "Invalid InsertRequest, reason: Table `{}` does not exist, and `auto_create_table` hint is disabled",
                        insert.table_name
                    ),
                ));
            }
            for row in &rows.rows {
                if row.values.len() != rows.schema.len() {
                    return Err(gt_error(
                        Code::InvalidArgument,
                        1004,
                        "row and schema lengths differ".into(),
                    ));
                }
            }
        }
        let append_hint = hints
            .as_deref()
            .unwrap_or("")
            .split(',')
            .any(|h| h.trim() == "append_mode=true");
        let mut affected = 0;
        for insert in inserts.inserts {
            let rows = insert.rows.unwrap_or_default();
            let key = (db.clone(), insert.table_name.clone());
            if append_hint && !st.tables.contains_key(&key) {
                // Table options apply only when the insert creates the table.
                st.append_only.insert(key.clone());
            }
            let created = !st.tables.contains_key(&key);
            let checked = created || st.roles.contains_key(&key);
            let cols = st
                .tables
                .entry((db.clone(), insert.table_name.clone()))
                .or_default();
            let mut added = Vec::new();
            for c in &rows.schema {
                if !cols.iter().any(|(n, _)| *n == c.column_name) {
                    cols.push((c.column_name.clone(), c.datatype));
                    added.push((c.column_name.clone(), c.semantic_type));
                }
            }
            if checked {
                st.roles.entry(key.clone()).or_default().extend(added);
            }
            affected += rows.rows.len() as u32;
            st.events.push(Event::Insert {
                table: insert.table_name.clone(),
                rows: rows.rows.len(),
            });
            if st.keys_only {
                let col = |name: &str| rows.schema.iter().position(|c| c.column_name == name);
                let (ts_i, port_i) = (col("ts"), col("src_port"));
                for row in &rows.rows {
                    let ts = match ts_i.and_then(|i| row.values[i].value_data.as_ref()) {
                        Some(ValueData::TimestampNanosecondValue(v)) => *v,
                        _ => 0,
                    };
                    let port = match port_i.and_then(|i| row.values[i].value_data.as_ref()) {
                        Some(ValueData::U16Value(v)) => *v,
                        _ => 0,
                    };
                    st.keys.push((insert.table_name.clone(), ts, port));
                }
                continue;
            }
            st.received.push(Received {
                database: db.clone(),
                hints: hints.clone(),
                auth: auth.clone(),
                table: insert.table_name,
                schema: rows.schema,
                rows: rows.rows,
            });
        }
        Ok(affected_rows(affected))
    }

    async fn handle_requests(
        &self,
        _request: Request<tonic::Streaming<GreptimeRequest>>,
    ) -> Result<Response<GreptimeResponse>, Status> {
        Err(Status::unimplemented(
            "streaming inserts are not used by flowmetrix",
        ))
    }
}

#[tonic::async_trait]
impl HealthCheck for Service {
    async fn health_check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {}))
    }
}

/// Creates a listening socket inside a network namespace (or here, for `None`).
fn listen_in(netns: Option<&str>, addr: SocketAddr) -> std::net::TcpListener {
    let ns = netns.map(str::to_owned);
    std::thread::spawn(move || {
        if let Some(ns) = ns {
            let path = CString::new(format!("/run/netns/{ns}")).unwrap();
            // SAFETY: plain syscalls with checked results, on this thread only.
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                assert!(fd >= 0, "open netns {ns}");
                assert_eq!(libc::setns(fd, libc::CLONE_NEWNET), 0, "setns {ns}");
                libc::close(fd);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match std::net::TcpListener::bind(addr) {
                Ok(l) => {
                    l.set_nonblocking(true).unwrap();
                    return l;
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        }
    })
    .join()
    .unwrap()
}

/// Forwards connections from `listener` to `backend` until `stop` turns true, then closes
/// the listener and every forwarded connection.
async fn front(
    listener: std::net::TcpListener,
    backend: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((mut client, _)) = accepted else { continue };
                // A front that adds no delay of its own: GreptimeDB sets TCP_NODELAY on
                // its connections, as the collector does on its own.
                let _ = client.set_nodelay(true);
                conns.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(backend).await {
                        let _ = server.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }
    }
    conns.abort_all();
}

/// The running front: its stop switch and its task.
type Front = (watch::Sender<bool>, JoinHandle<()>);

/// Forwards TCP connections made to 127.0.0.1:`addr` inside a namespace to a backend
/// address reachable from the test process (the test endpoint, or a live GreptimeDB).
pub struct Forwarder {
    pub addr: SocketAddr,
    netns: Option<String>,
    backend: SocketAddr,
    front: Arc<Mutex<Option<Front>>>,
    runtime: tokio::runtime::Handle,
}

impl Forwarder {
    pub fn start(
        runtime: tokio::runtime::Handle,
        netns: Option<&str>,
        backend: SocketAddr,
    ) -> Self {
        let listener = listen_in(netns, "127.0.0.1:0".parse().unwrap());
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let task = runtime.spawn(front(listener, backend, stopped));
        Self {
            addr,
            netns: netns.map(str::to_owned),
            backend,
            front: Arc::new(Mutex::new(Some((stop, task)))),
            runtime,
        }
    }

    /// Refuses connections (and drops open ones) now, for `d`; returns at once.
    pub fn refuse_for(&self, d: Duration) {
        if let Some((stop, task)) = self.front.lock().unwrap().take() {
            let _ = stop.send(true);
            // Wait (on a plain thread) until the listener and connections are gone.
            let rt = self.runtime.clone();
            std::thread::spawn(move || rt.block_on(task))
                .join()
                .unwrap()
                .unwrap();
        }
        let (front_slot, netns, addr, backend) = (
            Arc::clone(&self.front),
            self.netns.clone(),
            self.addr,
            self.backend,
        );
        let handle = self.runtime.clone();
        std::thread::spawn(move || {
            std::thread::sleep(d);
            let listener = listen_in(netns.as_deref(), addr);
            let (stop, stopped) = watch::channel(false);
            let task = handle.spawn(front(listener, backend, stopped));
            *front_slot.lock().unwrap() = Some((stop, task));
        });
    }
}

pub struct Endpoint {
    /// Where the collector connects (inside its namespace).
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    front: Forwarder,
    _runtime: Runtime,
}

/// PEM files of a throwaway CA, a server certificate for 127.0.0.1 and a client
/// certificate, written to a fresh directory.
pub struct TestPki {
    pub dir: std::path::PathBuf,
    pub ca: std::path::PathBuf,
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
    server_cert: String,
    server_key: String,
    ca_pem: String,
}

impl TestPki {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
        let (client_cert, client_key) = leaf(vec!["flowmetrix".into()]);
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fmx-pki-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, pem: &str| {
            let p = dir.join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        Self {
            ca: write("ca.pem", &ca.pem()),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            dir: dir.clone(),
            server_cert,
            server_key,
            ca_pem: ca.pem(),
        }
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
