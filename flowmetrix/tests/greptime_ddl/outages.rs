//! An endpoint stopped mid-stream, or down when the collector starts: the tables' DDL comes
//! first, and no row is lost or doubled.

use super::*;

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
    assert_eq!(creates(&a) + creates(&b), 4, "{:?} {:?}", a.sql(), b.sql());
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
            Default::default(),
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
            .flat_map(|t| [Event::Sql(t.create), Event::Sql(t.add_columns)]),
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
        [
            "packet_data_1m_flow",
            "packet_data_talkers_1m_flow",
            "packet_data_workloads_1m_flow"
        ]
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
