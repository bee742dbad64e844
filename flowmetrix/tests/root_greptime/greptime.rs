//! The GreptimeDB output end to end: frames over veth → the real binary (default output) →
//! the GreptimeDB test endpoint (greptime-proto's own server trait; not a database).

use crate::common;

use std::{
    collections::HashSet,
    time::{Duration, Instant, SystemTime},
};

use common::{
    Finished, Ran, Summary,
    endpoint::{Endpoint, Forwarder, TestPki},
    frames::{assert_each_case_once, cases, send_cases, without_ts},
    live::Live,
    wait_for_rows,
};
use greptime_proto::v1::{ColumnDataType, SemanticType};
use serde_json::Value;
use tonic::Code;

/// Every sample became a row at the endpoint, a spooled row, or a counted loss, exactly.
fn assert_accounted(s: &Summary, rows_at_endpoint: usize) {
    assert_eq!(s.written + s.replayed, rows_at_endpoint as u64, "{s:?}");
    assert_eq!(
        s.sampled,
        s.ring_drops + s.decode_errors + s.queue_drops + s.write_errors + s.written + s.spooled,
        "{s:?}"
    );
}

/// No row arrived twice (each frame has its own capture timestamp).
fn assert_no_duplicates(rows: &[Value]) {
    let mut seen = HashSet::new();
    for r in rows {
        let key = (r["ts"].to_string(), r["src_port"].to_string());
        assert!(seen.insert(key), "duplicate row {r}");
    }
}

fn error_lines(done: &Finished) -> Vec<&str> {
    done.stderr
        .lines()
        .filter(|l| l.contains("ERROR"))
        .collect()
}

#[test]
fn rows_arrive_with_every_column_typed_and_the_table_append_only() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    endpoint.add_database("flows");
    // The row insert's own request (its hints and declared columns): `--write-path rows`.
    let collector = net
        .collector()
        .greptime(&endpoint)
        .args(&[
            "--write-path",
            "rows",
            "--database",
            "flows",
            "--table",
            "fm_packets",
            "--ttl",
            "7d",
        ])
        .start();
    let sender = net.sender();
    let cases = cases();
    let window = send_cases(&sender, &cases);
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stdout, "", "rows go to GreptimeDB, not stdout");

    let rows = endpoint.rows("fm_packets");
    assert_each_case_once(&rows, &cases, window, &net.if_a);
    assert_eq!(rows.len(), cases.len());

    use ColumnDataType as T;
    use SemanticType::{Field, Tag, Timestamp};
    let declared = [
        ("ts", T::TimestampNanosecond, Timestamp),
        ("host", T::String, Tag),
        ("interface", T::String, Tag),
        ("direction", T::String, Tag),
        ("application", T::String, Tag),
        ("packet_type", T::String, Tag),
        ("packet_size", T::Uint16, Field),
        ("ether_type", T::Uint16, Field),
        ("src_mac", T::String, Field),
        ("dst_mac", T::String, Field),
        ("vlan_id", T::Uint16, Field),
        ("protocol", T::Uint8, Field),
        ("src_ip", T::String, Field),
        ("dst_ip", T::String, Field),
        ("src_port", T::Uint16, Field),
        ("dst_port", T::Uint16, Field),
        ("tcp_flags", T::Uint8, Field),
        ("tunnel", T::String, Field),
        ("inner_src_ip", T::String, Field),
        ("inner_dst_ip", T::String, Field),
        ("inner_protocol", T::Uint8, Field),
        ("inner_src_port", T::Uint16, Field),
        ("inner_dst_port", T::Uint16, Field),
        ("mpls_labels", T::String, Field),
        ("sample_rate", T::Uint32, Field),
        ("cgroup_id", T::Uint64, Field),
        ("container_id", T::String, Field),
        ("pod_uid", T::String, Field),
        ("pod", T::String, Field),
        ("namespace", T::String, Field),
    ];
    let received = endpoint.received();
    assert!(!received.is_empty());
    for r in &received {
        assert_eq!(r.database, "flows");
        assert_eq!(r.table, "fm_packets");
        let hints = r.hints.as_deref().unwrap_or("");
        assert!(hints.split(',').any(|h| h == "append_mode=true"), "{hints}");
        assert!(hints.split(',').any(|h| h == "ttl=7d"), "{hints}");
        let schema: Vec<(String, i32, i32)> = r
            .schema
            .iter()
            .map(|c| (c.column_name.clone(), c.datatype, c.semantic_type))
            .collect();
        let want: Vec<(String, i32, i32)> = declared
            .iter()
            .map(|(n, t, s)| ((*n).to_owned(), *t as i32, *s as i32))
            .collect();
        assert_eq!(schema, want);
    }
    let s = done.summary();
    assert_accounted(&s, rows.len());
    assert_eq!(s.write_errors, 0);
}

#[test]
fn a_hundred_thousand_frames_rows_plus_counted_drops_equal_sampled() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    let collector = net
        .collector()
        .greptime(&endpoint)
        .args(&["--sample-rate", "1"])
        .start();
    net.send_udp(0..100_000);
    std::thread::sleep(Duration::from_millis(500));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let s = done.summary();
    let rows = endpoint.rows("packet_data");
    assert_eq!(s.seen, 100_000, "{s:?}");
    assert_accounted(&s, rows.len());
    assert_no_duplicates(&rows);
}

#[test]
fn five_second_outage_is_logged_once_retried_and_nothing_is_lost_or_doubled() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    let collector = net.collector().greptime(&endpoint).start();
    net.send_udp(0..3_000);
    // Let the first rows land, so no request is in flight when the connections are cut
    // (a request cut after the server applied it would be retried: at-least-once).
    wait_for_rows(&endpoint, "packet_data", 3_000, Duration::from_secs(10));
    endpoint.refuse_for(Duration::from_secs(5));
    let outage = Instant::now();
    // Traffic goes on during the outage and after it.
    let mut i = 3_000;
    while outage.elapsed() < Duration::from_secs(7) {
        net.send_udp(i..i + 200);
        i += 200;
        std::thread::sleep(Duration::from_millis(100));
    }
    // Retries back off to at most 5 s: give them time to land before stopping.
    wait_for_rows(
        &endpoint,
        "packet_data",
        i as usize,
        Duration::from_secs(15),
    );
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let s = done.summary();
    let rows = endpoint.rows("packet_data");
    assert_accounted(&s, rows.len());
    assert_no_duplicates(&rows);
    assert_eq!((s.queue_drops, s.write_errors), (0, 0), "{s:?}");
    assert_eq!(rows.len(), i as usize, "every frame arrived");
    let warned: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("retrying"))
        .collect();
    assert_eq!(warned.len(), 1, "one line per outage:\n{}", done.stderr);
    let recovered = done
        .stderr
        .lines()
        .filter(|l| l.contains("writable again"))
        .count();
    assert_eq!(recovered, 1, "{}", done.stderr);
}

#[test]
fn schema_conflict_is_one_clear_error_naming_table_and_column() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    endpoint.create_table(
        "public",
        "packet_data",
        &[("protocol", ColumnDataType::String)],
    );
    let collector = net.collector().greptime(&endpoint).start();
    net.send_udp(0..2_500);
    std::thread::sleep(Duration::from_millis(500));
    let done = collector.interrupt();
    // Rows were lost: exit 3 (the last line says how many).
    assert_eq!(done.status.code(), Some(3), "{}", done.stderr);
    let errors = error_lines(&done);
    assert_eq!(errors.len(), 1, "{}", done.stderr);
    assert!(
        errors[0].contains("packet_data") && errors[0].contains("column protocol"),
        "{}",
        errors[0]
    );
    let s = done.summary();
    assert_eq!(s.written, 0);
    assert_eq!(s.write_errors, s.sampled, "{s:?}");
    assert!(endpoint.rows("packet_data").is_empty());
}

#[test]
fn wrong_password_is_one_clear_error_and_the_password_is_never_shown() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    endpoint.require_user("flow", "right-secret");
    let env = [
        ("FLOWMETRIX_GREPTIME_USERNAME", "flow"),
        ("FLOWMETRIX_GREPTIME_PASSWORD", "wrong-secret"),
    ];
    let collector = net
        .collector()
        .greptime(&endpoint)
        .args(&["-d"])
        .env(&env)
        .start();
    net.send_udp(0..50);
    std::thread::sleep(Duration::from_millis(500));
    let done = collector.interrupt();
    let errors = error_lines(&done);
    assert_eq!(errors.len(), 1, "{}", done.stderr);
    assert!(
        errors[0].contains("Username and password does not match"),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains("FLOWMETRIX_GREPTIME_PASSWORD"),
        "{}",
        errors[0]
    );
    assert!(
        !done.stderr.contains("wrong-secret"),
        "password leaked:\n{}",
        done.stderr
    );
    let s = done.summary();
    assert_eq!((s.written, s.write_errors), (0, s.sampled), "{s:?}");

    // The right password: rows arrive, with the credentials in the request header.
    let env = [
        ("FLOWMETRIX_GREPTIME_USERNAME", "flow"),
        ("FLOWMETRIX_GREPTIME_PASSWORD", "right-secret"),
    ];
    // The credentials in the row insert's header: `--write-path rows`.
    let collector = net
        .collector()
        .greptime(&endpoint)
        .args(&["--write-path", "rows"])
        .env(&env)
        .start();
    net.send_udp(0..50);
    std::thread::sleep(Duration::from_millis(500));
    let done = collector.interrupt();
    assert!(error_lines(&done).is_empty(), "{}", done.stderr);
    assert_eq!(endpoint.rows("packet_data").len(), 50);
    let auth = endpoint.received().last().and_then(|r| r.auth.clone());
    assert_eq!(auth, Some(("flow".into(), "right-secret".into())));
}

#[test]
fn unknown_database_is_reported_at_start() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    let collector = net
        .collector()
        .greptime(&endpoint)
        .args(&["--database", "nosuchdb"])
        .start();
    // Reported by the start-up check, before any traffic.
    std::thread::sleep(Duration::from_millis(500));
    let done = collector.interrupt();
    let errors = error_lines(&done);
    assert_eq!(errors.len(), 1, "{}", done.stderr);
    assert!(
        errors[0].contains("Failed to find schema, schema info: nosuchdb"),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains("CREATE DATABASE nosuchdb"),
        "{}",
        errors[0]
    );
}

/// Issue 16 item 6: with the first of two endpoints dead, every row goes to the live one,
/// nothing is spooled, the dead one is named once, and it is no outage.
#[test]
fn a_dead_endpoint_of_two_is_named_once_and_rows_go_to_the_other() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    // Nothing listens on port 1 inside the collector's namespace.
    let endpoints = format!("127.0.0.1:1,{}", endpoint.addr);
    let spool = net.spool_dir();
    let collector = net
        .collector()
        .args(&[
            "--greptime-endpoint",
            &endpoints,
            "--flush-interval",
            "100ms",
            "--spool-dir",
            spool.to_str().unwrap(),
        ])
        .start();
    net.send_udp(0..3_000);
    wait_for_rows(&endpoint, "packet_data", 3_000, Duration::from_secs(10));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let s = done.summary();
    let rows = endpoint.rows("packet_data");
    assert_eq!(rows.len(), 3_000, "{s:?}\n{}", done.stderr);
    assert_eq!((s.spooled, s.write_errors), (0, 0), "{s:?}");
    assert_accounted(&s, rows.len());
    assert_no_duplicates(&rows);
    let down: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| l.contains("endpoint 127.0.0.1:1 is down"))
        .collect();
    assert_eq!(down.len(), 1, "{}", done.stderr);
    assert!(
        !done.stderr.contains("retrying") && !done.stderr.contains("writable again"),
        "one live endpoint is no outage:\n{}",
        done.stderr
    );
}

#[test]
fn ctrl_c_with_fifty_thousand_queued_rows_writes_them_all() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    // A slow server: rows pile up in the queue, which holds all 50 000 (the default, 32 768,
    // would send the rest to the spool, replayed at the next start).
    endpoint.stall(Some(Duration::from_secs(2)));
    let collector = net
        .collector()
        .greptime(&endpoint)
        .args(&["--shutdown-timeout", "20s", "--queue-size", "65536"])
        .start();
    net.send_udp(0..50_000);
    std::thread::sleep(Duration::from_millis(300));
    let handled_before = endpoint.handled();
    // Ctrl+C while nearly all rows are still queued, then let the server catch up.
    let stopper = std::thread::spawn(move || collector.interrupt());
    std::thread::sleep(Duration::from_millis(200));
    endpoint.stall(None);
    let done = stopper.join().unwrap();
    assert!(done.status.success(), "{}", done.stderr);
    let s = done.summary();
    let rows = endpoint.rows("packet_data");
    assert!(
        handled_before <= 5,
        "the queue was not holding rows: {handled_before} requests"
    );
    assert_accounted(&s, rows.len());
    assert_eq!(s.seen, 50_000);
    assert_eq!(rows.len(), 50_000, "{s:?}");
    assert_no_duplicates(&rows);
}

#[test]
fn ctrl_c_with_the_server_down_gives_up_at_the_deadline_and_counts_every_row() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    endpoint.fail_next(usize::MAX, Code::Unavailable);
    let collector = net
        .collector()
        .greptime(&endpoint)
        .args(&["--shutdown-timeout", "2s", "--no-spool"])
        .start();
    net.send_udp(0..5_000);
    std::thread::sleep(Duration::from_millis(300));
    let done = collector.interrupt();
    // Rows were lost: exit 3 (the last line says how many).
    assert_eq!(done.status.code(), Some(3), "{}", done.stderr);
    assert!(
        done.exit_time < Duration::from_secs(4),
        "took {:?}",
        done.exit_time
    );
    let s = done.summary();
    assert_eq!(s.written, 0);
    assert_accounted(&s, 0);
    assert_eq!(s.write_errors + s.queue_drops, 5_000, "{s:?}");
}

/// Against a real GreptimeDB named by FLOWMETRIX_TEST_GREPTIMEDB (see tests/common/live.rs):
/// the rows are read back over its HTTP SQL API, and the table must be append-only. Without
/// the variable there is nothing to run against, and the test says so and passes.
#[test]
fn live_greptimedb_stores_every_row() {
    // Root first: a root-tier test fails where not root, whatever else it waits for.
    common::require_root();
    let Some(live) = Live::from_env() else {
        eprintln!("live GreptimeDB test not run: FLOWMETRIX_TEST_GREPTIMEDB is not set");
        return;
    };
    let net = common::NetPair::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let forward = Forwarder::start(runtime.handle().clone(), Some(&net.ns_a), live.grpc);
    let table = format!(
        "fm_live_{}_{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let addr = forward.addr.to_string();
    let collector = net
        .collector()
        .args(&["--greptime-endpoint", &addr, "--table", &table])
        .start();
    let sender = net.sender();
    let cases = cases();
    send_cases(&sender, &cases);
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(
        done.summary().written,
        cases.len() as u64,
        "{}",
        done.stderr
    );

    let rows = live.sql("public", &format!("SELECT * FROM {table}"));
    assert_eq!(rows.len(), cases.len(), "{rows:#?}");
    for case in &cases {
        let want = without_ts(&case.row);
        let hits = rows
            .iter()
            .filter(|r| {
                want.as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| r.get(k) == Some(v))
            })
            .count();
        assert_eq!(hits, 1, "{}: {want} in {rows:#?}", case.name);
    }
    let create = live.sql("public", &format!("SHOW CREATE TABLE {table}"));
    let text = format!("{create:?}");
    assert!(text.contains("append_mode"), "{text}");
    live.sql("public", &format!("DROP TABLE {table}"));
}

#[test]
fn tls_with_client_certificate() {
    let net = common::NetPair::new();
    let pki = TestPki::new();
    let endpoint = Endpoint::start_tls(Some(&net.ns_a), &pki);
    let (ca, cert, key) = (
        pki.ca.to_string_lossy().into_owned(),
        pki.client_cert.to_string_lossy().into_owned(),
        pki.client_key.to_string_lossy().into_owned(),
    );
    let tls = [
        "--tls-ca-file",
        &ca,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
    ];
    let collector = net.collector().greptime(&endpoint).args(&tls).start();
    net.send_udp(0..100);
    std::thread::sleep(Duration::from_millis(500));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    assert!(!done.stderr.contains("WARN"), "{}", done.stderr);
    let s = done.summary();
    assert_eq!(
        endpoint.rows("packet_data").len(),
        100,
        "{s:?}\n{}",
        done.stderr
    );
    assert_accounted(&s, 100);

    // A missing file is a usage error naming it, before anything is attached.
    let Ran {
        code, stderr: err, ..
    } = net.run_in(
        &[],
        &[
            "-i",
            &net.if_a,
            "--tls-ca-file",
            "/nonexistent/ca.pem",
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
        ],
    );
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with("error: --tls-ca-file /nonexistent/ca.pem: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
