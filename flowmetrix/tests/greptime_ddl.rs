//! Tables and rollups by DDL, and several endpoints, through the library against the
//! in-process test endpoint on loopback (no root needed): the exact DDL on an empty
//! database, a second run that changes nothing, a table of the Go original used as it is and
//! extended, a type clash counted with one error line, and an endpoint stopped mid-stream
//! and restarted without a row lost or doubled.

mod common;

use std::{
    collections::BTreeSet,
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::endpoint::Endpoint;
use flowmetrix::{
    metrics::Counters,
    queue,
    record::{PacketRecord, UnixNanos},
    sink::greptime::{
        Compression, Endpoints, GreptimeConfig, SCHEMA,
        ddl::{self, STATEMENT_TIMEOUT},
        encode, prepare,
        retry::REQUEST_TIMEOUT,
    },
};
use greptime_proto::v1::{ColumnDataType, SemanticType};

fn cfg(endpoints: &[&Endpoint]) -> GreptimeConfig {
    GreptimeConfig {
        endpoints: endpoints.iter().map(|e| e.addr.to_string()).collect(),
        database: "public".into(),
        table: "packet_data".into(),
        username: None,
        password: None,
        compression: Compression::None,
        batch_size: 10,
        flush_interval: Duration::from_millis(20),
        ttl: Some("7d".into()),
        max_in_flight: 2,
        shutdown_timeout: Duration::from_secs(3),
        tls: None,
        spool: None,
        ddl: Default::default(),
        write_path: flowmetrix::sink::greptime::WritePath::Rows,
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

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Every log line of the process, while the guard lives (runtimes' threads included).
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let dispatch = tracing::Dispatch::new(subscriber);
        (logs, tracing::dispatcher::set_default(&dispatch))
    }
    fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
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
