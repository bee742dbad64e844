//! Tables and rollups by DDL, and several endpoints, through the library against the
//! in-process test endpoint on loopback (no root needed): the exact DDL on an empty
//! database, a second run that changes nothing, a table of the Go original used as it is and
//! extended, a type clash counted with one error line, and an endpoint stopped mid-stream
//! and restarted without a row lost or doubled.

mod common;

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use common::endpoint::{Endpoint, Event};
use common::logs::Logs;
use flowmetrix::{
    metrics::Counters,
    queue,
    record::{PacketRecord, UnixNanos},
    sink::greptime::{
        Endpoints, FLOW_SCHEMA, GreptimeConfig, SCHEMA, SpoolConfig,
        ddl::{self, STATEMENT_TIMEOUT},
        encode, prepare,
        retry::REQUEST_TIMEOUT,
    },
};
use greptime_proto::v1::{ColumnDataType, SemanticType};

fn cfg(endpoints: &[&Endpoint]) -> GreptimeConfig {
    GreptimeConfig {
        batch_size: 10,
        flush_interval: Duration::from_millis(20),
        ttl: Some("7d".into()),
        max_in_flight: 2,
        shutdown_timeout: Duration::from_secs(3),
        ..GreptimeConfig::new(
            endpoints.iter().map(|e| e.addr.to_string()).collect(),
            "packet_data",
        )
    }
}

fn row(i: u32) -> PacketRecord {
    PacketRecord {
        ts: UnixNanos(1_700_000_000_000_000_000 + i64::from(i)),
        packet_size: 100,
        protocol: Some(17),
        src_ip: Some("10.0.0.1".parse().unwrap()),
        src_port: Some((i % 60_000) as u16),
        dst_port: Some(53),
        sample_rate: 1,
        host: "node-1".into(),
        ..PacketRecord::default()
    }
}

/// On this thread, so that its log lines are captured by [`Logs`].
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs the whole writer over `rows` (sent in chunks of 10, `pause` apart, with `during`
/// called after chunk `at`), then shuts it down; returns its counters.
fn run_writer(
    c: &GreptimeConfig,
    n: u32,
    pause: Duration,
    at: u32,
    during: impl FnOnce(),
) -> Arc<Counters> {
    let counters = Arc::new(Counters::default());
    runtime().block_on(async {
        let (tx, rx) = queue::bounded(100_000);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let sink = tokio::spawn(flowmetrix::sink::greptime::run(
            c.clone(),
            rx,
            Arc::clone(&counters),
            stop_rx,
            None,
        ));
        let mut during = Some(during);
        for chunk in 0..n.div_ceil(10) {
            let rows: Vec<_> = (chunk * 10..(chunk * 10 + 10).min(n)).map(row).collect();
            tx.try_send(rows).unwrap();
            if chunk == at
                && let Some(f) = during.take()
            {
                // Blocks this runtime a moment (the endpoint's own runs on).
                f();
            }
            tokio::time::sleep(pause).await;
        }
        drop(tx);
        stop.send_replace(true);
        sink.await.unwrap().unwrap();
    });
    counters
}

#[test]
fn an_empty_database_gets_both_tables_and_the_rollups_and_a_second_run_changes_nothing() {
    let endpoint = Endpoint::start(None);
    let c = cfg(&[&endpoint]);
    let rt = runtime();
    let done = rt.block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        prepare(&pool, &c, true).await
    });
    assert_eq!(done.tables, ["packet_data", "flow_data"]);
    assert_eq!(
        done.rollups,
        [
            "packet_data_1m",
            "packet_data_talkers_1m",
            "flow_data_1m",
            "flow_data_talkers_1m"
        ]
    );
    assert!(
        done.failed.is_empty() && done.pending.is_empty(),
        "{done:?}"
    );
    // Exactly the documented statements, in order, each once.
    let mut expected: Vec<String> = ddl::tables(&c, true).into_iter().map(|(_, s)| s).collect();
    expected.extend(
        ddl::rollups("packet_data", Some("flow_data"))
            .into_iter()
            .map(|r| r.sql),
    );
    assert_eq!(endpoint.sql(), expected);
    assert!(expected[0].contains("WITH(append_mode = 'true', ttl = '7d')"));

    // The tables have the rows' column types and roles: the primary key is the tags.
    let types = endpoint.column_types("public", "packet_data");
    let want: Vec<(String, ColumnDataType)> = SCHEMA
        .iter()
        .map(|c| (c.name.to_owned(), c.data_type))
        .collect();
    assert_eq!(types, want);
    let roles = endpoint.roles("public", "packet_data");
    let tags: BTreeSet<&str> = roles
        .iter()
        .filter(|(_, r)| **r == SemanticType::Tag)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        tags,
        BTreeSet::from([
            "host",
            "interface",
            "direction",
            "application",
            "packet_type"
        ])
    );
    assert_eq!(roles["src_ip"], SemanticType::Field);
    assert_eq!(roles["ts"], SemanticType::Timestamp);
    assert!(endpoint.append_only("public", "packet_data"));
    assert!(endpoint.append_only("public", "flow_data"));
    assert_eq!(endpoint.column_types("public", "flow_data").len(), 18);
    let flows = endpoint.flows("public");
    assert_eq!(flows.len(), 4);
    // The flow engine made the sink tables.
    assert_eq!(
        endpoint.tables("public"),
        [
            "flow_data",
            "flow_data_1m",
            "flow_data_talkers_1m",
            "packet_data",
            "packet_data_1m",
            "packet_data_talkers_1m"
        ]
    );

    // A second run: the same IF NOT EXISTS statements, and nothing changes.
    let before = (
        endpoint.tables("public"),
        endpoint.column_types("public", "packet_data"),
        endpoint.roles("public", "packet_data"),
        endpoint.flows("public"),
    );
    let again = rt.block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        let again = prepare(&pool, &c, true).await;
        // And rows fit the table as created.
        let res = pool
            .insert(
                None,
                &encode("packet_data", &[row(1), row(2)]),
                &[],
                REQUEST_TIMEOUT,
            )
            .await;
        assert_eq!(res, Ok(2));
        again
    });
    assert_eq!(again, done);
    assert_eq!(endpoint.sql()[expected.len()..], expected[..]);
    let after = (
        endpoint.tables("public"),
        endpoint.column_types("public", "packet_data"),
        endpoint.roles("public", "packet_data"),
        endpoint.flows("public"),
    );
    assert_eq!(before, after);
}

#[test]
fn flows_off_makes_no_flow_table_and_no_create_table_sends_no_ddl() {
    let endpoint = Endpoint::start(None);
    let c = cfg(&[&endpoint]);
    let rt = runtime();
    rt.block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        prepare(&pool, &c, false).await
    });
    assert_eq!(
        endpoint.tables("public"),
        ["packet_data", "packet_data_1m", "packet_data_talkers_1m"]
    );

    let endpoint = Endpoint::start(None);
    let mut c = cfg(&[&endpoint]);
    c.ddl.create_tables = false;
    c.ddl.rollups = false;
    let counters = run_writer(&c, 20, Duration::ZERO, u32::MAX, || {});
    assert_eq!(Counters::get(&counters.written), 20);
    // Today's behaviour: the start-up check, then the first insert creates the table.
    assert_eq!(
        endpoint.sql(),
        [
            "USE \"public\"",
            "ALTER TABLE \"packet_data\" SET 'append_mode' = 'true'"
        ]
    );
    assert!(endpoint.append_only("public", "packet_data"));
    assert!(endpoint.flows("public").is_empty());
}

#[test]
fn the_partitioned_table_of_a_fleet_is_created_with_its_split_points() {
    let endpoint = Endpoint::start(None);
    let mut c = cfg(&[&endpoint]);
    c.ddl.partition_hosts = vec!["node-3".into(), "node-6".into()];
    let rt = runtime();
    let done = rt.block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        prepare(&pool, &c, false).await
    });
    assert!(done.failed.is_empty(), "{done:?}");
    let sql = &endpoint.sql()[0];
    assert!(
        sql.contains(
            ")\nPARTITION ON COLUMNS (\"host\") (\n  \"host\" < 'node-3',\n  \"host\" >= 'node-3' AND \"host\" < 'node-6',\n  \"host\" >= 'node-6'\n)\nENGINE=mito\nWITH(append_mode = 'true', ttl = '7d')"
        ),
        "{sql}"
    );
    assert_eq!(
        endpoint.column_types("public", "packet_data").len(),
        SCHEMA.len()
    );
}

#[test]
fn the_endpoint_answers_ddl_mistakes_as_the_server_does() {
    let endpoint = Endpoint::start(None);
    let c = cfg(&[&endpoint]);
    runtime().block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        let e = pool
            .execute(
                "CREATE TABLE IF NOT EXISTS t (ts TIMESTAMP(9) NOT NULL, application STRING NULL, TIME INDEX (ts))",
                STATEMENT_TIMEOUT,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, Some(2000));
        assert_eq!(
            e.message,
            "Invalid SQL syntax: sql parser error: Cannot use keyword 'application' as column name. Hint: add quotes to the name."
        );
        // A rollup over a table that is not there, or a column it lacks: a plan error.
        let flow = &ddl::rollups("packet_data", None)[0].sql;
        let e = pool.execute(flow, STATEMENT_TIMEOUT).await.unwrap_err();
        assert_eq!(e.code, Some(3000));
        assert_eq!(
            e.message,
            "Failed to plan SQL: Table not found: greptime.public.packet_data"
        );
        pool.execute(
            "CREATE TABLE \"packet_data\" (\"ts\" TIMESTAMP(9) NOT NULL, TIME INDEX (\"ts\"))",
            STATEMENT_TIMEOUT,
        )
        .await
        .unwrap();
        let e = pool.execute(flow, STATEMENT_TIMEOUT).await.unwrap_err();
        assert_eq!(e.code, Some(3000));
        assert!(
            e.message
                .starts_with("Failed to plan SQL: No field named host. Valid fields are packet_data.ts"),
            "{}",
            e.message
        );
        pool.execute(
            "ALTER TABLE \"packet_data\" ADD COLUMN \"host\" STRING",
            STATEMENT_TIMEOUT,
        )
        .await
        .unwrap();
    });
    assert_eq!(endpoint.columns("public", "packet_data"), ["ts", "host"]);
}

/// The Go original's table: src_ip, dst_port, packet_type and application as tags, fewer
/// columns, no append mode.
fn go_original(endpoint: &Endpoint) {
    use ColumnDataType as T;
    use SemanticType::{Field, Tag, Timestamp};
    endpoint.create_table_with_roles(
        "public",
        "packet_data",
        &[
            ("ts", T::TimestampNanosecond, Timestamp),
            ("packet_size", T::Uint16, Field),
            ("ether_type", T::Uint16, Field),
            ("src_mac", T::String, Field),
            ("dst_mac", T::String, Field),
            ("protocol", T::Uint8, Field),
            ("src_ip", T::String, Tag),
            ("dst_ip", T::String, Field),
            ("src_port", T::Uint16, Field),
            ("dst_port", T::Uint16, Tag),
            ("tcp_flags", T::Uint8, Field),
            ("packet_type", T::String, Tag),
            ("application", T::String, Tag),
        ],
    );
}

#[test]
fn a_table_of_the_go_original_is_used_as_it_is_and_gains_the_new_columns() {
    let endpoint = Endpoint::start(None);
    go_original(&endpoint);
    let mut c = cfg(&[&endpoint]);
    c.ttl = None;
    let (logs, _guard) = Logs::capture();
    let counters = run_writer(&c, 100, Duration::from_millis(5), u32::MAX, || {});
    assert_eq!(Counters::get(&counters.written), 100, "{}", logs.text());
    assert_eq!(Counters::get(&counters.write_errors), 0);
    let keys: BTreeSet<_> = endpoint.row_keys("packet_data").into_iter().collect();
    assert_eq!(keys.len(), 100);
    assert_eq!(endpoint.row_keys("packet_data").len(), 100, "none twice");
    // Its roles are kept; the rows were declared to fit them, learned once per column.
    let roles = endpoint.roles("public", "packet_data");
    assert_eq!(roles["src_ip"], SemanticType::Tag);
    assert_eq!(roles["dst_port"], SemanticType::Tag);
    for col in ["src_ip", "dst_port"] {
        assert_eq!(
            logs.lines_with(&format!("has column {col} as a tag")).len(),
            1,
            "{}",
            logs.text()
        );
    }
    // The columns it lacked were added (by the insert), after its own.
    let cols = endpoint.columns("public", "packet_data");
    assert_eq!(cols.len(), SCHEMA.len());
    assert_eq!(
        &cols[13..],
        [
            "vlan_id",
            "tunnel",
            "inner_src_ip",
            "inner_dst_ip",
            "inner_protocol",
            "inner_src_port",
            "inner_dst_port",
            "mpls_labels",
            "sample_rate",
            "host",
            "interface",
            "direction"
        ]
    );
    assert!(
        endpoint.append_only("public", "packet_data"),
        "made append-only"
    );
    // Its rollups wait for the columns it lacked at start, and are made once they exist.
    assert_eq!(
        logs.lines_with("wait for columns").len(),
        1,
        "{}",
        logs.text()
    );
    assert!(logs.lines_with("ERROR").is_empty(), "{}", logs.text());
}

#[test]
fn pending_rollups_are_made_once_the_insert_added_their_columns() {
    let endpoint = Endpoint::start(None);
    go_original(&endpoint);
    let c = cfg(&[&endpoint]);
    let (logs, _guard) = Logs::capture();
    runtime().block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        let done = prepare(&pool, &c, false).await;
        assert_eq!(done.pending, ["packet_data_1m", "packet_data_talkers_1m"]);
        assert!(endpoint.flows("public").is_empty());
        let res = pool
            .insert(
                None,
                &encode("packet_data", &[row(1)]),
                &[],
                REQUEST_TIMEOUT,
            )
            .await;
        assert_eq!(res, Ok(1));
        let deadline = Instant::now() + ddl::PENDING_RETRY * 2;
        while endpoint.flows("public").len() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(endpoint.flows("public").len(), 2, "{}", logs.text());
    assert_eq!(logs.lines_with("is in place").len(), 2, "{}", logs.text());
}

#[test]
fn a_type_clash_is_one_clear_error_line_and_counted() {
    let endpoint = Endpoint::start(None);
    endpoint.create_table(
        "public",
        "packet_data",
        &[("dst_port", ColumnDataType::String)],
    );
    let c = cfg(&[&endpoint]);
    let (logs, _guard) = Logs::capture();
    let counters = run_writer(&c, 100, Duration::ZERO, u32::MAX, || {});
    assert_eq!(Counters::get(&counters.written), 0);
    assert_eq!(Counters::get(&counters.write_errors), 100);
    let errors = logs.lines_with("ERROR");
    assert_eq!(errors.len(), 1, "{}", logs.text());
    assert!(
        errors[0]
            .contains("table packet_data has column dst_port as String, flowmetrix writes UINT16"),
        "{}",
        errors[0]
    );
}

#[test]
fn an_endpoint_stopped_mid_stream_and_restarted_loses_and_doubles_no_row() {
    let a = Endpoint::start(None);
    let b = Endpoint::start(None);
    let c = cfg(&[&a, &b]);
    let b_addr = b.addr.to_string();
    let (logs, _guard) = Logs::capture();
    // 2000 rows over about 2 s; b goes away for 1.5 s after the first 300.
    let counters = run_writer(&c, 2_000, Duration::from_millis(10), 30, || {
        b.refuse_for(Duration::from_millis(1500));
    });
    let total = a.row_keys("packet_data").len() + b.row_keys("packet_data").len();
    let mut keys: Vec<_> = a.row_keys("packet_data");
    keys.extend(b.row_keys("packet_data"));
    let distinct: BTreeSet<_> = keys.iter().collect();
    assert_eq!(distinct.len(), 2_000, "no row lost\n{}", logs.text());
    assert_eq!(total, 2_000, "no row twice");
    assert_eq!(Counters::get(&counters.written), 2_000);
    assert_eq!(Counters::get(&counters.write_errors), 0);
    assert_eq!(
        logs.lines_with(&format!("endpoint {b_addr} is down")).len(),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(
        logs.lines_with(&format!("endpoint {b_addr} answers again"))
            .len(),
        1,
        "{}",
        logs.text()
    );
    assert!(
        logs.lines_with("retrying").is_empty(),
        "never all down: no outage"
    );
    // Load is spread: b took rows before it went and after it came back.
    assert!(
        b.row_keys("packet_data").len() > 200,
        "{}",
        b.row_keys("packet_data").len()
    );
    // The DDL ran once, on one endpoint; the start-up check on both.
    let creates = |e: &Endpoint| e.sql().iter().filter(|s| s.starts_with("CREATE")).count();
    assert_eq!(creates(&a) + creates(&b), 3, "{:?} {:?}", a.sql(), b.sql());
    assert!(a.sql().contains(&"USE \"public\"".to_owned()));
    assert!(b.sql().contains(&"USE \"public\"".to_owned()));
}

/// Runs the writer (with a spool in `spool_dir`, if given) over `n` rows sent 10 a chunk,
/// `pause` apart, while the endpoint is away for `down` from the start; waits until every
/// row arrived (or 20 s), then shuts the writer down.
fn run_with_endpoint_down_at_start(
    c: &GreptimeConfig,
    endpoint: &Endpoint,
    down: Duration,
    n: u32,
    pause: Duration,
) -> Arc<Counters> {
    let counters = Arc::new(Counters::default());
    // Refusing from before the writer's first connection.
    endpoint.refuse_for(down);
    runtime().block_on(async {
        let spool = c.spool.as_ref().map(|s| {
            flowmetrix::sink::greptime::open_spool(s, 100_000, &counters)
                .unwrap()
                .unwrap()
        });
        let (tx, rx) = queue::bounded(100_000);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let sink = tokio::spawn(flowmetrix::sink::greptime::run(
            c.clone(),
            rx,
            Arc::clone(&counters),
            stop_rx,
            spool,
        ));
        for chunk in 0..n.div_ceil(10) {
            let rows: Vec<_> = (chunk * 10..(chunk * 10 + 10).min(n)).map(row).collect();
            tx.try_send(rows).unwrap();
            tokio::time::sleep(pause).await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while endpoint.row_keys("packet_data").len() < n as usize && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(tx);
        stop.send_replace(true);
        sink.await.unwrap().unwrap();
    });
    counters
}

fn assert_every_row_once(endpoint: &Endpoint, n: usize, logs: &Logs) {
    let keys = endpoint.row_keys("packet_data");
    let distinct: BTreeSet<_> = keys.iter().collect();
    assert_eq!(distinct.len(), n, "no row lost\n{}", logs.text());
    assert_eq!(keys.len(), n, "no row twice");
}

/// GreptimeDB not reachable when the collector starts: the start-up work runs when it first
/// answers, and no insert reaches it before the tables' DDL and the rollups did.
fn down_at_start_gets_the_tables_by_ddl_first(spool: bool) {
    let endpoint = Endpoint::start(None);
    let mut c = cfg(&[&endpoint]);
    let dir = std::env::temp_dir().join(format!("fmx-ddl-down-{}-{spool}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if spool {
        c.spool = Some(SpoolConfig {
            dir: dir.clone(),
            max_bytes: 64 << 20,
            stall: None,
        });
    }
    let (logs, _guard) = Logs::capture();
    // 1000 rows over about 1.5 s; the endpoint answers after the first 0.8 s.
    let counters = run_with_endpoint_down_at_start(
        &c,
        &endpoint,
        Duration::from_millis(800),
        1_000,
        Duration::from_millis(15),
    );
    assert_every_row_once(&endpoint, 1_000, &logs);
    assert_eq!(Counters::get(&counters.write_errors), 0, "{}", logs.text());
    if spool {
        assert!(
            Counters::get(&counters.spooled) > 0,
            "rows waited in the spool"
        );
        assert_eq!(
            Counters::get(&counters.spooled),
            Counters::get(&counters.spool_replayed)
        );
        assert_eq!(
            Counters::get(&counters.written) + Counters::get(&counters.spooled),
            1_000
        );
    } else {
        assert!(
            Counters::get(&counters.write_retries) > 0,
            "rows were retried"
        );
        assert_eq!(Counters::get(&counters.written), 1_000);
    }

    // What reached the server, in order: the start-up work, the documented DDL exactly,
    // then inserts only.
    let mut want: Vec<Event> = vec![Event::Sql("USE \"public\"".into())];
    want.extend(
        ddl::tables(&c, false)
            .into_iter()
            .map(|(_, sql)| Event::Sql(sql)),
    );
    want.extend(
        ddl::rollups("packet_data", None)
            .into_iter()
            .map(|r| Event::Sql(r.sql)),
    );
    want.push(Event::Sql(
        "ALTER TABLE \"packet_data\" SET 'append_mode' = 'true'".into(),
    ));
    let events = endpoint.events();
    assert_eq!(events[..want.len()], want[..], "{events:#?}");
    assert!(
        events[want.len()..]
            .iter()
            .all(|e| matches!(e, Event::Insert { table, .. } if table == "packet_data")),
        "{events:#?}"
    );
    // Made by the DDL, not by an insert: the designed primary key, and the rollups.
    let roles = endpoint.roles("public", "packet_data");
    assert_eq!(roles["host"], SemanticType::Tag);
    assert_eq!(roles["src_ip"], SemanticType::Field);
    assert!(endpoint.append_only("public", "packet_data"));
    assert_eq!(
        endpoint.flows("public").keys().collect::<Vec<_>>(),
        ["packet_data_1m_flow", "packet_data_talkers_1m_flow"]
    );
    assert_eq!(
        logs.lines_with("created when GreptimeDB first answers")
            .len(),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(logs.lines_with("are in place").len(), 1, "{}", logs.text());
    assert!(
        logs.lines_with("cannot create").is_empty(),
        "{}",
        logs.text()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_server_down_at_start_gets_its_tables_by_ddl_before_any_insert_spooled() {
    down_at_start_gets_the_tables_by_ddl_first(true);
}

#[test]
fn a_server_down_at_start_gets_its_tables_by_ddl_before_any_insert_retried() {
    down_at_start_gets_the_tables_by_ddl_first(false);
}

#[test]
fn no_create_table_with_the_server_down_at_start_leaves_the_table_to_the_first_insert() {
    let endpoint = Endpoint::start(None);
    let mut c = cfg(&[&endpoint]);
    c.ddl.create_tables = false;
    c.ddl.rollups = false;
    let (logs, _guard) = Logs::capture();
    let counters = run_with_endpoint_down_at_start(
        &c,
        &endpoint,
        Duration::from_millis(800),
        500,
        Duration::from_millis(15),
    );
    assert_every_row_once(&endpoint, 500, &logs);
    assert_eq!(Counters::get(&counters.written), 500);
    assert_eq!(Counters::get(&counters.write_errors), 0);
    // No CREATE at all: the first insert made the table, append-only by its hint.
    assert!(
        endpoint.sql().iter().all(|s| !s.starts_with("CREATE")),
        "{:?}",
        endpoint.sql()
    );
    assert!(endpoint.append_only("public", "packet_data"));
    assert!(endpoint.flows("public").is_empty());
    assert!(
        logs.lines_with("created when GreptimeDB first answers")
            .is_empty(),
        "{}",
        logs.text()
    );
}

/// Every column name of both tables and of the rollup sinks, with whether GreptimeDB's
/// parser takes it for a keyword: an unquoted column name in sqlparser's `ALL_KEYWORDS`
/// is refused by `parse_column_def` (greptimedb `src/sql/src/parsers/create_parser.rs`;
/// the list is sqlparser's `src/keywords.rs`, GreptimeTeam's fork). A new column needs its
/// verdict here, checked against that list.
const COLUMN_NAMES: &[(&str, bool)] = &[
    ("application", true),
    ("bytes", true),
    ("dst_ip", false),
    ("dst_mac", false),
    ("dst_port", false),
    ("direction", false),
    ("ether_type", false),
    ("first_seen", false),
    ("host", false),
    ("inner_dst_ip", false),
    ("inner_dst_port", false),
    ("inner_protocol", false),
    ("inner_src_ip", false),
    ("inner_src_port", false),
    ("interface", false),
    ("interval_ms", false),
    ("last_seen", false),
    ("minute", true),
    ("mpls_labels", false),
    ("packet_size", false),
    ("packet_type", false),
    ("packets", false),
    ("protocol", false),
    ("sample_rate", false),
    ("src_ip", false),
    ("src_mac", false),
    ("src_port", false),
    ("tcp_flags", false),
    ("ts", false),
    ("tunnel", false),
    ("update_at", false),
    ("vlan_id", false),
];

#[test]
fn the_endpoint_refuses_unquoted_exactly_the_keywords_among_our_column_names() {
    let endpoint = Endpoint::start(None);
    let c = cfg(&[&endpoint]);
    runtime().block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        let done = prepare(&pool, &c, true).await;
        assert!(done.failed.is_empty(), "{done:?}");
        // Every name we use: both tables and the sinks the flow engine made.
        let mut used: BTreeSet<String> = SCHEMA
            .iter()
            .map(|c| c.name.to_owned())
            .chain(FLOW_SCHEMA.iter().map(|c| c.name.to_owned()))
            .collect();
        for sink in &done.rollups {
            used.extend(endpoint.columns("public", sink));
        }
        let pinned: BTreeSet<String> = COLUMN_NAMES.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(used, pinned, "every column name has its keyword verdict");

        for &(name, keyword) in COLUMN_NAMES {
            for written in [name.to_owned(), name.to_ascii_uppercase()] {
                let table = format!("kw_{name}");
                let create = format!(
                    "CREATE TABLE \"{table}\" (\"t0\" TIMESTAMP(9) NOT NULL, {written} STRING NULL, TIME INDEX (\"t0\"))"
                );
                let alter = format!("ALTER TABLE \"{table}\" ADD COLUMN {written}_2 STRING");
                let res = pool.execute(&create, STATEMENT_TIMEOUT).await;
                if keyword {
                    let e = res.unwrap_err();
                    assert_eq!(e.code, Some(2000), "{written}");
                    assert_eq!(
                        e.message,
                        format!(
                            "Invalid SQL syntax: sql parser error: Cannot use keyword '{written}' as column name. Hint: add quotes to the name."
                        )
                    );
                    // Quoted, it is a name like any other.
                    let quoted = create.replace(&format!(" {written} "), &format!(" \"{written}\" "));
                    pool.execute(&quoted, STATEMENT_TIMEOUT).await.unwrap();
                } else {
                    res.unwrap_or_else(|e| panic!("{written}: {e}"));
                }
                // A suffixed name is no keyword; ALTER ADD COLUMN parses its column alike.
                pool.execute(&alter, STATEMENT_TIMEOUT).await.unwrap();
                let e = pool
                    .execute(
                        &format!("ALTER TABLE \"{table}\" ADD COLUMN {written} STRING"),
                        STATEMENT_TIMEOUT,
                    )
                    .await;
                assert_eq!(e.is_err(), keyword, "{written}: {e:?}");
                endpoint.drop_table("public", &table);
            }
        }
    });
}

/// The live check of the rollups (issue 14, acceptance 2), against a real GreptimeDB named
/// by FLOWMETRIX_TEST_GREPTIMEDB (and _HTTP; see tests/common/live.rs): sampled rows of
/// known sizes and rates over three minutes go through the writer into a fresh table, whose
/// DDL and rollups the start-up step creates; after `ADMIN FLUSH_FLOW`, the rollup's bytes
/// per minute are the sum of packet_size × sample_rate and its packets the sum of
/// sample_rate — as computed here, and as the server computes them from the raw rows. One
/// row's product (9000 × 1 000 000) does not fit 32 bits. Everything made is dropped.
/// Without the variable, one line says it did not run. No root needed.
#[test]
fn live_rollups_per_minute_are_the_sampled_sums() {
    let Some(live) = common::live::Live::from_env() else {
        common::live::skipped("live_rollups_per_minute_are_the_sampled_sums");
        return;
    };
    let table = common::live::fresh_table("rollup");
    let c = GreptimeConfig {
        endpoints: vec![live.grpc.to_string()],
        username: live.user.as_ref().map(|(u, _)| u.clone()),
        password: live.user.as_ref().map(|(_, p)| p.clone()),
        table: table.clone(),
        ttl: None,
        shutdown_timeout: Duration::from_secs(10),
        ..cfg(&[])
    };
    const MINUTE_NS: i64 = 60_000_000_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let first_minute = now / MINUTE_NS * MINUTE_NS - 5 * MINUTE_NS;
    // (minute, second, packet_size, sample_rate, protocol)
    let cases: &[(i64, i64, u16, u32, u8)] = &[
        (0, 1, 64, 1, 6),
        (0, 20, 1500, 100, 6),
        (0, 59, 9000, 1_000_000, 17),
        (1, 0, 100, 10, 17),
        (1, 30, 60, 1, 1),
        (2, 5, 1514, 512, 6),
        (2, 6, 1514, 512, 6),
        (2, 7, 40, 4096, 17),
    ];
    let rows: Vec<PacketRecord> = cases
        .iter()
        .enumerate()
        .map(|(i, &(m, s, size, rate, proto))| PacketRecord {
            ts: UnixNanos(first_minute + m * MINUTE_NS + s * 1_000_000_000 + i as i64),
            packet_size: size,
            protocol: Some(proto),
            src_port: Some(40_000 + i as u16),
            dst_port: Some(443),
            sample_rate: rate,
            host: "fm-live".into(),
            ..PacketRecord::default()
        })
        .collect();
    let mut want = std::collections::BTreeMap::<i64, (u64, u64)>::new();
    for &(m, _, size, rate, _) in cases {
        let e = want.entry(m).or_default();
        e.0 += u64::from(rate);
        e.1 += u64::from(size) * u64::from(rate);
    }
    let want: Vec<(u64, u64)> = want.into_values().collect();

    let counters = Arc::new(Counters::default());
    runtime().block_on(async {
        let (tx, rx) = queue::bounded(1_000);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let sink = tokio::spawn(flowmetrix::sink::greptime::run(
            c.clone(),
            rx,
            Arc::clone(&counters),
            stop_rx,
            None,
        ));
        tx.try_send(rows.clone()).unwrap();
        drop(tx);
        stop.send_replace(true);
        sink.await.unwrap().unwrap();
    });
    let written = Counters::get(&counters.written);

    let rollups = ddl::rollups(&table, None);
    let (flow, sink) = (&rollups[0].flow, &rollups[0].sink);
    let per_minute =
        |rows: Vec<serde_json::Map<String, serde_json::Value>>| -> Vec<(String, u64, u64)> {
            rows.iter()
                .map(|r| {
                    let n = |k: &str| {
                        r.get(k)
                            .and_then(serde_json::Value::as_u64)
                            .unwrap_or(u64::MAX)
                    };
                    (
                        r.get("minute").map(ToString::to_string).unwrap_or_default(),
                        n("packets"),
                        n("bytes"),
                    )
                })
                .collect()
        };
    let raw = per_minute(live.sql(
        "public",
        &format!(
            "SELECT date_bin(INTERVAL '1 minutes', \"ts\") AS \"minute\", {} FROM \"{table}\" GROUP BY \"minute\" ORDER BY \"minute\"",
            ddl::SAMPLED_SUMS
        ),
    ));
    let create = format!(
        "{:?}",
        live.sql("public", &format!("SHOW CREATE TABLE \"{table}\""))
    );
    // Flows compute in batches: flush, then read until the rollup has every minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    let rolled = loop {
        live.sql("public", &format!("ADMIN FLUSH_FLOW('{flow}')"));
        let rolled = per_minute(live.sql(
            "public",
            &format!(
                "SELECT \"minute\", sum(\"packets\") AS \"packets\", sum(\"bytes\") AS \"bytes\" FROM \"{sink}\" GROUP BY \"minute\" ORDER BY \"minute\""
            ),
        ));
        if rolled == raw || Instant::now() > deadline {
            break rolled;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    // Drop what this test made before asserting, so that a failure leaves nothing behind.
    for r in &rollups {
        live.sql("public", &format!("DROP FLOW IF EXISTS \"{}\"", r.flow));
        live.sql("public", &format!("DROP TABLE IF EXISTS \"{}\"", r.sink));
    }
    live.sql("public", &format!("DROP TABLE IF EXISTS \"{table}\""));

    assert_eq!(written, rows.len() as u64);
    assert!(
        create.contains("append_mode") && create.contains("SKIPPING INDEX"),
        "made by our DDL: {create}"
    );
    let sums = |v: &[(String, u64, u64)]| v.iter().map(|(_, p, b)| (*p, *b)).collect::<Vec<_>>();
    assert_eq!(sums(&raw), want, "the server's own sums over the raw rows");
    assert_eq!(rolled, raw, "the rollup, per minute");
}
