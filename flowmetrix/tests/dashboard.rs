//! The Grafana dashboard against what it reads (`packet_data`, `flow_data`, `dns_data` and
//! their rollups): every column a SQL query names exists in its table with a type that fits its use (the column lists are the library's: the tables'
//! own, and the rollups' from their `CREATE FLOW` text), every SQL panel filters by the
//! `host`, `interface` and `direction` variables where its table has the column, every
//! Prometheus query names metrics the `/metrics` page has, and every query is documented.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use flowmetrix::{
    metrics::{FlowCounters, Registry},
    schema::{
        FLOW_SCHEMA, SCHEMA,
        columns::DNS_SCHEMA,
        ddl::{DNS_TABLE, FLOW_TABLE, SAMPLED_SUMS, dns_rollup, rollups},
    },
};
use greptimedb_ingester::api::v1::ColumnDataType;
use serde_json::Value;

/// The packet table the dashboard reads (the default of `--table`).
const PACKET_TABLE: &str = "packet_data";

fn deploy(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(deploy("grafana/flowmetrix-dashboard.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The panels with queries (not the rows).
fn panels(dash: &Value) -> Vec<&Value> {
    dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .collect()
}

/// `(title, SQL)` of every SQL target, and of every query variable.
fn sql_queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().unwrap() {
            if let Some(sql) = t["rawSql"].as_str() {
                let title = p["title"].as_str().unwrap();
                out.push((format!("panel {title:?}"), sql.to_owned()));
            }
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let name = v["name"].as_str().unwrap();
            out.push((
                format!("variable {name}"),
                v["query"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

type Columns = BTreeMap<String, ColumnDataType>;

/// Every table the dashboard may read, with its columns: the two tables' column lists, and
/// each rollup's sink columns read from its `CREATE FLOW … AS SELECT` list.
fn tables() -> BTreeMap<String, Columns> {
    let mut out = BTreeMap::new();
    out.insert(
        PACKET_TABLE.to_owned(),
        SCHEMA
            .iter()
            .map(|c| (c.name.to_owned(), c.data_type))
            .collect(),
    );
    out.insert(
        FLOW_TABLE.to_owned(),
        FLOW_SCHEMA
            .iter()
            .map(|c| (c.name.to_owned(), c.data_type))
            .collect(),
    );
    out.insert(
        DNS_TABLE.to_owned(),
        DNS_SCHEMA
            .iter()
            .map(|c| (c.name.to_owned(), c.data_type))
            .collect(),
    );
    let all = rollups(PACKET_TABLE, Some(FLOW_TABLE));
    for r in all.into_iter().chain([dns_rollup(DNS_TABLE)]) {
        let columns = rollup_columns(&r.sql, &out);
        out.insert(r.sink, columns);
    }
    out
}

fn unquote(s: &str) -> String {
    s.trim().trim_matches('"').replace("\"\"", "\"")
}

/// The sink columns of a `CREATE FLOW … AS SELECT <list> FROM "source" …`: a key keeps its
/// source column's type, `date_bin(…)` the time index's, a `sum(…)` of unsigned integers is
/// a UInt64 (and of a `CASE … THEN 1 ELSE 0` an Int64, as `count(*)` is), a `max(…)` its
/// column's.
fn rollup_columns(sql: &str, tables: &BTreeMap<String, Columns>) -> Columns {
    let body = &sql[sql.find(" AS SELECT ").expect(sql) + " AS SELECT ".len()..];
    let from = body.find(" FROM ").expect(sql);
    let source_name = unquote(body[from + " FROM ".len()..].split(' ').next().unwrap());
    let source = &tables[&source_name];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    let list = &body[..from];
    for (i, ch) in list.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&list[start..]);
    items
        .into_iter()
        .map(|item| {
            let (expr, alias) = match item.rfind(" AS ") {
                Some(at) => (item[..at].trim(), unquote(&item[at + 4..])),
                None => (item.trim(), unquote(item)),
            };
            let t = if let Some(&t) = source.get(&unquote(expr)) {
                t
            } else if expr.starts_with("date_bin(") {
                let ts = expr.rsplit('"').nth(1).expect(expr);
                source[ts]
            } else if expr.starts_with("count(") || expr.starts_with("sum(CASE") {
                ColumnDataType::Int64
            } else if expr.starts_with("sum(") {
                ColumnDataType::Uint64
            } else if let Some(inner) = expr.strip_prefix("max(").and_then(|e| e.strip_suffix(')'))
            {
                source[&unquote(inner)]
            } else {
                panic!("a rollup column this test cannot type: {item} in {sql}")
            };
            (alias, t)
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str,
    Num,
    Var,
    Op(String),
}

fn tokens(sql: &str) -> Vec<Tok> {
    let s: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let take = |i: &mut usize, f: &dyn Fn(char) -> bool| {
            let from = *i;
            while *i < s.len() && f(s[*i]) {
                *i += 1;
            }
            s[from..*i].iter().collect::<String>()
        };
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let w = take(&mut i, &|c| c.is_ascii_alphanumeric() || c == '_');
            out.push(Tok::Ident(w.to_ascii_lowercase()));
        } else if c == '"' || c == '`' {
            i += 1;
            let w = take(&mut i, &|x| x != c);
            i += 1;
            out.push(Tok::Ident(w));
        } else if c == '\'' {
            i += 1;
            take(&mut i, &|x| x != '\'');
            i += 1;
            out.push(Tok::Str);
        } else if c.is_ascii_digit() {
            take(&mut i, &|c| c.is_ascii_digit() || c == '.');
            out.push(Tok::Num);
        } else if c == '$' {
            i += 1;
            if s.get(i) == Some(&'{') {
                take(&mut i, &|c| c != '}');
                i += 1;
            } else {
                take(&mut i, &|c| c.is_ascii_alphanumeric() || c == '_');
            }
            out.push(Tok::Var);
        } else if "<>=!".contains(c) {
            let w = take(&mut i, &|c| "<>=!".contains(c));
            out.push(Tok::Op(w));
        } else {
            i += 1;
            out.push(Tok::Op(c.to_string()));
        }
    }
    out
}

const KEYWORDS: &[&str] = &[
    "select", "distinct", "from", "where", "and", "or", "not", "in", "as", "group", "by", "order",
    "desc", "asc", "limit", "interval", "cast", "bigint", "unsigned", "int", "null", "is", "like",
    "between", "having", "true", "false",
];

/// How a query uses a column: the types that fit.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Use {
    Time,
    Number,
    Text,
    Any,
}

impl Use {
    fn fits(self, t: ColumnDataType) -> bool {
        use ColumnDataType as T;
        match self {
            Use::Time => matches!(
                t,
                T::TimestampSecond
                    | T::TimestampMillisecond
                    | T::TimestampMicrosecond
                    | T::TimestampNanosecond
            ),
            Use::Number => matches!(
                t,
                T::Uint8
                    | T::Uint16
                    | T::Uint32
                    | T::Uint64
                    | T::Int8
                    | T::Int16
                    | T::Int32
                    | T::Int64
                    | T::Float32
                    | T::Float64
            ),
            Use::Text => t == T::String,
            Use::Any => true,
        }
    }
}

/// The table a query reads and each column it names, with how it uses it.
fn columns_used(sql: &str) -> (Option<String>, Vec<(String, Use)>) {
    let toks = tokens(sql);
    let ident = |i: usize| match toks.get(i) {
        Some(Tok::Ident(w)) => Some(w.as_str()),
        _ => None,
    };
    let op = |i: usize| match toks.get(i) {
        Some(Tok::Op(o)) => Some(o.as_str()),
        _ => None,
    };
    let aliases: Vec<&str> = (1..toks.len())
        .filter(|&i| ident(i - 1) == Some("as"))
        .filter_map(ident)
        .collect();
    let mut table = None;
    let mut used = Vec::new();
    // The functions the parentheses open, innermost last (`None`: a plain parenthesis).
    let mut calls: Vec<Option<&str>> = Vec::new();
    let mut after_group_or_order = false;
    for i in 0..toks.len() {
        match &toks[i] {
            Tok::Op(o) if o == "(" => calls.push(i.checked_sub(1).and_then(ident)),
            Tok::Op(o) if o == ")" => {
                calls.pop();
            }
            Tok::Ident(w) => {
                let w = w.as_str();
                if w == "group" || w == "order" {
                    after_group_or_order = true;
                }
                if KEYWORDS.contains(&w)
                    || op(i + 1) == Some("(")
                    || (i > 0 && ident(i - 1) == Some("as"))
                    || (after_group_or_order && aliases.contains(&w))
                {
                    continue;
                }
                if i > 0 && ident(i - 1) == Some("from") {
                    table = Some(w.to_owned());
                    continue;
                }
                let is_cmp = |o: Option<&str>| {
                    matches!(o, Some("=" | "<" | ">" | "<=" | ">=" | "<>" | "!="))
                };
                let is_arith = |o: Option<&str>| matches!(o, Some("*" | "/" | "+" | "-" | "&"));
                let inner = calls.last().copied().flatten();
                let u = if inner == Some("date_bin")
                    || (is_cmp(op(i + 1)) && ident(i + 2) == Some("to_timestamp_millis"))
                {
                    Use::Time
                } else if (is_cmp(op(i + 1)) && toks.get(i + 2) == Some(&Tok::Str))
                    || (ident(i + 1) == Some("in") && toks.get(i + 3) == Some(&Tok::Var))
                {
                    Use::Text
                } else if calls
                    .iter()
                    .flatten()
                    .any(|f| ["sum", "avg", "cast"].contains(f))
                    || is_arith(op(i + 1))
                    || (i > 0 && is_arith(op(i - 1)))
                    || (is_cmp(op(i + 1)) && toks.get(i + 2) == Some(&Tok::Num))
                {
                    Use::Number
                } else {
                    Use::Any
                };
                used.push((w.to_owned(), u));
            }
            _ => {}
        }
    }
    (table, used)
}

/// What is wrong with one query: a table or column that does not exist, a column whose
/// type does not fit its use, a variable its table could be filtered by but is not.
fn problems(what: &str, sql: &str, tables: &BTreeMap<String, Columns>) -> Vec<String> {
    let (table, used) = columns_used(sql);
    let Some(table) = table else {
        return vec![format!("{what}: no FROM table in {sql}")];
    };
    let Some(columns) = tables.get(&table) else {
        return vec![format!("{what}: no table {table}")];
    };
    let mut out = Vec::new();
    for (name, u) in &used {
        match columns.get(name) {
            None => out.push(format!("{what}: {table} has no column {name}")),
            Some(&t) if !u.fits(t) => out.push(format!(
                "{what}: column {name} of {table} is {t:?}, used as {u:?}"
            )),
            Some(_) => {}
        }
    }
    if what.starts_with("panel") {
        for var in ["host", "interface", "direction"] {
            let filter = format!("{var} IN (${{{var}}})");
            if columns.contains_key(var) && !sql.contains(&filter) {
                out.push(format!("{what}: not filtered by ${{{var}}} ({filter})"));
            }
        }
    }
    out
}

#[test]
fn every_column_a_query_names_is_in_its_table_with_a_fitting_type() {
    let dash = dashboard();
    let tables = tables();
    let mut wrong = Vec::new();
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (what, sql) in sql_queries(&dash) {
        wrong.extend(problems(&what, &sql, &tables));
        let (table, used) = columns_used(&sql);
        seen.entry(table.unwrap_or_default())
            .or_default()
            .extend(used.into_iter().map(|(c, _)| c));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Every table is read, and the reading of the queries found their columns.
    for (table, want) in [
        (
            PACKET_TABLE,
            &["ts", "sample_rate", "packet_size", "host"][..],
        ),
        (
            FLOW_TABLE,
            &[
                "ts",
                "packets",
                "bytes",
                "dst_port",
                "interface",
                "tcp_handshake_us",
                "tcp_syn_retransmits",
                "tcp_retransmits",
                "tcp_rtt_us",
                "drop_packets",
                "drop_reason",
            ],
        ),
        ("packet_data_1m", &["minute", "bytes", "direction"]),
        ("packet_data_talkers_1m", &["src_ip", "dst_ip", "bytes"]),
        ("flow_data_1m", &["minute", "application", "bytes"]),
        ("flow_data_talkers_1m", &["src_ip", "packets", "host"]),
    ] {
        for c in want {
            assert!(
                seen.get(table).is_some_and(|s| s.iter().any(|x| x == c)),
                "{table}.{c} not read: {seen:?}"
            );
        }
    }
}

#[test]
fn a_query_naming_a_missing_or_mistyped_column_is_found() {
    let tables = tables();
    let sql = "SELECT date_bin(INTERVAL '1 minutes', minute) AS time, sum(bytes) AS bytes FROM packet_data_talkers_1m WHERE interface IN (${interface}) AND host IN (${host}) AND direction IN (${direction}) GROUP BY time ORDER BY bytes";
    assert_eq!(
        problems("panel \"x\"", sql, &tables),
        ["panel \"x\": packet_data_talkers_1m has no column interface"]
    );
    let sql = "SELECT sum(host) AS bytes FROM flow_data WHERE ts >= to_timestamp_millis(${__from}) AND src_port = 'x'";
    assert_eq!(
        problems("panel \"y\"", sql, &tables),
        [
            "panel \"y\": column host of flow_data is String, used as Number",
            "panel \"y\": column src_port of flow_data is Uint16, used as Text",
            "panel \"y\": not filtered by ${host} (host IN (${host}))",
            "panel \"y\": not filtered by ${interface} (interface IN (${interface}))",
            "panel \"y\": not filtered by ${direction} (direction IN (${direction}))",
        ]
    );
    // An alias in ORDER BY is not a column; the same name in sum() over the raw table is.
    let sql = "SELECT sum(bytes) AS bytes FROM packet_data WHERE host IN (${host}) AND interface IN (${interface}) AND direction IN (${direction}) ORDER BY bytes";
    assert_eq!(
        problems("panel \"z\"", sql, &tables),
        ["panel \"z\": packet_data has no column bytes"]
    );
}

#[test]
fn every_prometheus_query_names_metrics_of_the_page() {
    // Flows mode with the drop program running: its per-reason counter is on the page.
    let flows = FlowCounters::default();
    flows
        .drops
        .on
        .store(true, std::sync::atomic::Ordering::Relaxed);
    flows.drops.set_totals([("NO_SOCKET".to_owned(), 1)]);
    let registry = Arc::new(Registry {
        flows: Some(Arc::new(flows)),
        ..Default::default()
    });
    let page = registry.render();
    let names: Vec<&str> = page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let dash = dashboard();
    let mut checked = Vec::new();
    for p in panels(&dash) {
        for t in p["targets"].as_array().unwrap() {
            let Some(expr) = t["expr"].as_str() else {
                continue;
            };
            assert_eq!(p["datasource"]["uid"], "${prometheus}", "{}", p["title"]);
            for (at, _) in expr.match_indices("flowmetrix_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    names.contains(&name.as_str()),
                    "panel {}: no metric {name} on /metrics:\n{page}",
                    p["title"]
                );
                checked.push(name);
            }
        }
    }
    for want in [
        "flowmetrix_ring_drops_total",
        "flowmetrix_queue_drops_total",
        "flowmetrix_write_errors_total",
        "flowmetrix_spool_lost_rows_total",
        "flowmetrix_decode_errors_total",
        "flowmetrix_flow_overflow_packets_total",
        "flowmetrix_flow_unkeyed_packets_total",
        "flowmetrix_kernel_drops_total",
    ] {
        assert!(checked.iter().any(|c| c == want), "no panel of {want}");
    }
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["name"] == "prometheus"
        && v["type"] == "datasource"
        && v["query"] == "prometheus"));
    for name in ["host", "interface", "direction"] {
        let v = vars.iter().find(|v| v["name"] == name).expect(name);
        assert_eq!(
            (&v["multi"], &v["includeAll"]),
            (&true.into(), &true.into())
        );
    }
}

#[test]
fn dashboard_is_valid_json_with_the_documented_queries() {
    let dash = dashboard();
    let readme = std::fs::read_to_string(deploy("README.md")).unwrap();
    let panels = panels(&dash);
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Packets per second",
        "Bytes per second",
        "Top talkers",
        "Top applications",
        "TCP SYN without ACK",
        "Exact packets per second",
        "Exact bytes per second",
        "Top flows by bytes",
        "DNS queries, errors and timeouts",
        "Failing DNS names",
        "Slowest DNS names",
        "Handshake latency",
        "Slowest handshakes",
        "TCP retransmits",
        "Highest smoothed RTT",
        "Dropped packets per second by reason",
        "Kernel drops per second by reason",
    ] {
        assert!(
            titles.iter().any(|t| t.starts_with(want)),
            "no {want} panel: {titles:?}"
        );
    }
    let tables = tables();
    let sql = |p: &Value| p["targets"][0]["rawSql"].as_str().map(str::to_owned);
    for p in &panels {
        let title = p["title"].as_str().unwrap();
        assert!(readme.contains(&format!("**{title}**")), "{title}");
        for t in p["targets"].as_array().unwrap() {
            let query = t["rawSql"].as_str().or(t["expr"].as_str()).unwrap();
            assert!(
                readme.contains(query),
                "query not documented in deploy/README.md:\n{query}"
            );
        }
        if let Some(sql) = sql(p) {
            let (table, _) = columns_used(&sql);
            assert!(
                table.is_some_and(|t| tables.contains_key(&t)),
                "{title}: {sql}"
            );
        }
    }
    // Counts of sampled rows are scaled back by the sample rate: in the query over the raw
    // table, or by the rollup's flow (whose sums are scaled, see the ddl module's tests).
    let sampled: Vec<String> = panels
        .iter()
        .filter_map(|p| sql(p))
        .filter(|s| s.contains("FROM packet_data"))
        .collect();
    assert!(sampled.len() >= 7);
    for s in &sampled {
        assert!(
            s.contains("sample_rate")
                || ((s.contains("FROM packet_data_1m ")
                    || s.contains("FROM packet_data_talkers_1m "))
                    && SAMPLED_SUMS.contains("AS \"bytes\"")),
            "{s}"
        );
    }
    // Long ranges read the rollups, of both tables.
    for rollup in ["FROM packet_data_1m ", "FROM flow_data_1m "] {
        assert!(
            panels
                .iter()
                .filter_map(|p| sql(p))
                .any(|s| s.contains(rollup))
        );
    }
}

#[test]
fn no_two_panels_share_a_cell_of_the_grid() {
    let dash = dashboard();
    let mut taken: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for p in dash["panels"].as_array().unwrap() {
        let g = &p["gridPos"];
        let n = |k: &str| g[k].as_u64().unwrap();
        let title = p["title"].as_str().unwrap().to_owned();
        for x in n("x")..n("x") + n("w") {
            for y in n("y")..n("y") + n("h") {
                if let Some(other) = taken.insert((x, y), title.clone()) {
                    panic!("{title:?} overlaps {other:?} at x {x}, y {y}");
                }
            }
        }
    }
}
