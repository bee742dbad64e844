//! DNS transactions (`--mode flows|both`), no-root tier: a pcap of queries and answers over
//! UDP and TCP replayed by the real binary gives one `dns_data` row per transaction — name,
//! type, response code by name, latency from the two packets' times — a `TIMEOUT` row for
//! the query never answered, and counts what it could not match or read. Into the
//! GreptimeDB test endpoint: the table by its DDL, its rollup, and the rows.

mod common;

use std::{path::PathBuf, time::Duration};

use common::{
    MAC_A, MAC_B, Summary,
    endpoint::Endpoint,
    frames::{dns_message as message, eth, udp4, write},
    pcap::{file, json_lines, replay},
};
use serde_json::{Value, json};

const MS: u64 = 1_000_000;
/// 2026-11-18T11:06:40Z.
const T0: u64 = 1_795_000_000_000 * MS;

const CLIENT: [u8; 4] = [10, 1, 0, 1];
const SERVER: [u8; 4] = [10, 1, 0, 2];

const QUERY: u16 = 0x0100;
const NOERROR: u16 = 0x8180;
const NXDOMAIN: u16 = 0x8183;

fn udp_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let m = message(id, QUERY, name, qtype, 0);
    udp4((MAC_A, MAC_B), (CLIENT, 40_000), (SERVER, 53), &m)
}

fn udp_answer(id: u16, flags: u16, name: &str, qtype: u16, answers: u16) -> Vec<u8> {
    let m = message(id, flags, name, qtype, answers);
    udp4((MAC_B, MAC_A), (SERVER, 53), (CLIENT, 40_000), &m)
}

/// A TCP segment carrying `m` with its two-byte length.
fn tcp(from: ([u8; 4], u16), to: ([u8; 4], u16), m: &[u8]) -> Vec<u8> {
    let mut payload = (m.len() as u16).to_be_bytes().to_vec();
    payload.extend_from_slice(m);
    let b = eth()
        .ipv4(from.0, to.0, 64)
        .tcp(from.1, to.1, 1, 1000)
        .ack(1)
        .psh();
    write(|v| b.write(v, &payload).unwrap())
}

/// Three answered transactions (UDP A, UDP AAAA NXDOMAIN, TCP TXT), one query never
/// answered, an answer to no query, a malformed message, and a frame 10 s later that moves
/// the replay's clock past the timeout.
fn trace() -> PathBuf {
    let frames: Vec<(u64, Vec<u8>)> = vec![
        (T0, udp_query(1, "Example.COM", 1)),
        (T0 + 20 * MS, udp_answer(1, NOERROR, "example.com", 1, 2)),
        (T0 + 100 * MS, udp_query(2, "nx.example.com", 28)),
        (
            T0 + 130 * MS,
            udp_answer(2, NXDOMAIN, "nx.example.com", 28, 0),
        ),
        (
            T0 + 200 * MS,
            tcp(
                (CLIENT, 40_001),
                (SERVER, 53),
                &message(3, QUERY, "big.example.com", 16, 0),
            ),
        ),
        (
            T0 + 225 * MS,
            tcp(
                (SERVER, 53),
                (CLIENT, 40_001),
                &message(3, NOERROR, "big.example.com", 16, 1),
            ),
        ),
        (T0 + 300 * MS, udp_query(4, "silent.example.com", 1)),
        (
            T0 + 400 * MS,
            udp_answer(9, NOERROR, "stray.example.com", 1, 1),
        ),
        // A label of 64 bytes.
        (
            T0 + 500 * MS,
            udp4(
                (MAC_A, MAC_B),
                (CLIENT, 40_002),
                (SERVER, 53),
                &message(5, QUERY, &"a".repeat(64), 1, 0),
            ),
        ),
        (
            T0 + 10_000 * MS,
            udp4((MAC_A, MAC_B), (CLIENT, 40_003), (SERVER, 9999), &[0; 8]),
        ),
    ];
    let bytes = common::pcap::ethernet(frames.iter().map(|(t, f)| (Duration::from_nanos(*t), f)));
    file("dns", "trace.pcap", &bytes)
}

fn dns_rows(rows: &[Value]) -> Vec<Value> {
    rows.iter()
        .filter(|r| r.get("dns_qname").is_some())
        .cloned()
        .collect()
}

#[test]
fn each_query_and_its_answer_is_one_row_and_an_unanswered_one_times_out() {
    let out = replay(&trace(), &["--mode", "flows", "--output", "jsonl"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows = dns_rows(&json_lines(&out));
    let brief: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!([
                r["dns_id"],
                r["dns_qname"],
                r["dns_qtype"],
                r["dns_rcode"],
                r["dns_latency_us"],
                r["dns_answers"],
                r["protocol"],
                r["src_port"]
            ])
        })
        .collect();
    assert_eq!(
        brief,
        [
            json!([1, "example.com", "A", "NOERROR", 20_000, 2, 17, 40_000]),
            json!([
                2,
                "nx.example.com",
                "AAAA",
                "NXDOMAIN",
                30_000,
                0,
                17,
                40_000
            ]),
            json!([3, "big.example.com", "TXT", "NOERROR", 25_000, 1, 6, 40_001]),
            json!([
                4,
                "silent.example.com",
                "A",
                "TIMEOUT",
                null,
                null,
                17,
                40_000
            ]),
        ],
        "{stderr}"
    );
    // The client is the source; the time is the query's; the keys in the table's order.
    let first = &rows[0];
    assert_eq!(
        (&first["src_ip"], &first["dst_ip"], &first["dst_port"]),
        (&json!("10.1.0.1"), &json!("10.1.0.2"), &json!(53))
    );
    assert_eq!(first["ts"], "2026-11-18T11:06:40.000000000Z");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("\"dns_qname\""))
        .unwrap_or_default();
    let keys = [
        "ts",
        "host",
        "interface",
        "direction",
        "src_ip",
        "dst_ip",
        "protocol",
        "src_port",
        "dst_port",
        "dns_id",
        "dns_qname",
        "dns_qtype",
        "dns_rcode",
        "dns_latency_us",
        "dns_answers",
        "cgroup_id",
        "container_id",
        "pod_uid",
        "pod",
        "namespace",
    ];
    let at: Vec<usize> = keys
        .iter()
        .map(|k| line.find(&format!("\"{k}\":")).unwrap_or(usize::MAX))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{line}");
    // The summary's DNS part: every row written, what could not be matched or read counted.
    let dns = stderr
        .lines()
        .find_map(|l| l.split("; dns: ").nth(1))
        .unwrap_or_else(|| panic!("no dns part in {stderr}"));
    for want in [
        "rows 4,",
        "written 4,",
        "queries 4,",
        "timeouts 1,",
        "unmatched answers 1,",
        "malformed 1,",
        "pending at end 0",
    ] {
        assert!(dns.contains(want), "{want} not in {dns}");
    }
    // Packets mode makes no DNS rows.
    let out = replay(&trace(), &["--output", "jsonl"]);
    assert!(dns_rows(&json_lines(&out)).is_empty());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("; dns:"));
}

#[test]
fn a_timeout_and_more_ports_are_the_user_s() {
    // --dns-timeout 100ms: the answers (20 to 30 ms) still come in time; --dns-port 9999 makes the last frame a (malformed) DNS message.
    let out = replay(
        &trace(),
        &[
            "--mode",
            "flows",
            "--output",
            "jsonl",
            "--dns-timeout",
            "100ms",
            "--dns-port",
            "9999",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(dns_rows(&json_lines(&out)).len(), 4, "{stderr}");
    assert!(stderr.contains("malformed 2,"), "{stderr}");
    let out = replay(&trace(), &["--mode", "flows", "--dns-timeout", "5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'5' has no unit"));
}

#[test]
fn into_greptimedb_the_table_by_its_ddl_the_rollup_and_the_rows() {
    let endpoint = Endpoint::start(None);
    let addr = endpoint.addr.to_string();
    let out = replay(
        &trace(),
        &[
            "--mode",
            "flows",
            "--greptime-endpoint",
            &addr,
            "--no-spool",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let sql = endpoint.sql().join("\n");
    assert!(
        sql.contains("CREATE TABLE IF NOT EXISTS \"dns_data\"")
            && sql.contains("\"dns_rcode\" STRING NULL INVERTED INDEX")
            && sql.contains("CREATE FLOW IF NOT EXISTS \"dns_data_1m_flow\""),
        "{sql}"
    );
    assert!(endpoint.append_only("public", "dns_data"));
    let rows = endpoint.rows("dns_data");
    let mut got: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["dns_qname"].as_str().unwrap_or_default().to_owned(),
                r["dns_rcode"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("big.example.com".into(), "NOERROR".into()),
            ("example.com".into(), "NOERROR".into()),
            ("nx.example.com".into(), "NXDOMAIN".into()),
            ("silent.example.com".into(), "TIMEOUT".into()),
        ],
        "{stderr}"
    );
    let summary = Summary::parse(&stderr).unwrap();
    assert_eq!(summary.written, 0, "flows mode writes no packet rows");
}
