//! SQL the endpoint takes over `Handle`: `USE`, `ALTER TABLE … SET 'append_mode'` and the
//! DDL (read by ddl.rs), each answered as the server does.

use super::*;

/// `ALTER TABLE "t" SET 'append_mode' = 'true'` → t.
pub(super) fn alter_append_mode(sql: &str) -> Option<String> {
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
pub(super) fn use_target(sql: &str) -> Option<String> {
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
pub(super) fn role_debug(role: i32) -> &'static str {
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
pub(super) fn ddl_statement(st: &mut State, db: &str, sql: &str) -> Option<Answer> {
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
        let (table, adds) = match parsed {
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
        // All or nothing: a column that exists without IF NOT EXISTS fails the statement
        // (table::error::ColumnExists, TableColumnExists 4002); with it, it is skipped.
        if let Some(c) = adds
            .iter()
            .find(|c| !c.if_not_exists && cols.iter().any(|(n, _)| *n == c.name))
        {
            return Some(Err(gt_error(
                Code::AlreadyExists,
                4002,
                format!("Column {} already exists in table {table}", c.name),
            )));
        }
        for c in adds {
            if !cols.iter().any(|(n, _)| *n == c.name) {
                cols.push((c.name.clone(), c.data_type));
                if let Some(roles) = st.roles.get_mut(&key) {
                    roles.insert(c.name, SemanticType::Field as i32);
                }
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

pub(super) fn affected_rows(value: u32) -> Response<GreptimeResponse> {
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
