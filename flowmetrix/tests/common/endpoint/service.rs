//! The gRPC services: `GreptimeDatabase` (`Handle`: inserts, SQL) and `HealthCheck`, with
//! the errors they answer as GreptimeDB builds them.

use super::{statements::*, *};

/// A GreptimeDB-style error: gRPC code, with the server's status code and message in the
/// metadata, as GreptimeDB's `define_into_tonic_status!` builds them.
pub(super) fn gt_error(code: Code, gt_code: u32, msg: String) -> Status {
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
pub(super) fn greptime_code_for(code: Code) -> u32 {
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
