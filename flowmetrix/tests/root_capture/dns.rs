//! DNS transactions live (`--mode flows|both`, root tier): the kernel passes every DNS
//! packet to the ring whatever the sample rate, so each query and its answer on the
//! collector's interface is one `dns_data` row, and no DNS packet becomes a packet row unless
//! the sampler chose it.

use serde_json::Value;

use crate::common::{
    self, MAC_A, MAC_B,
    frames::{dns_message, udp4},
};

const QUERY: u16 = 0x0100;
const NOERROR: u16 = 0x8180;
const NXDOMAIN: u16 = 0x8183;

/// Five queries come in on the collector's interface and their answers leave it; twenty
/// other datagrams pass too. In `mode`, at 1 in 1000.
fn five_transactions(mode: &str) -> (Vec<Value>, common::Summary, String) {
    let net = common::NetPair::new();
    let collector = net
        .collector()
        .args(&[
            "--mode",
            mode,
            "--direction",
            "both",
            "--sample-rate",
            "1000",
            "--output",
            "jsonl",
        ])
        .ready("TC attached")
        .start();
    // The answers leave the collector's interface: sent from its side.
    let answers = net.sender_on(&net.ns_a.clone(), &net.if_a.clone());
    let queries = net.sender();
    for id in 1..=5u16 {
        let name = format!("host{id}.example.com");
        let q = dns_message(id, QUERY, &name, 1, 0);
        queries.send(&udp4(
            (MAC_B, MAC_A),
            ([10, 9, 0, 2], 40_000),
            ([10, 9, 0, 1], 53),
            &q,
        ));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (flags, n) = if id == 5 { (NXDOMAIN, 0) } else { (NOERROR, 1) };
        let a = dns_message(id, flags, &name, 1, n);
        answers.send(&udp4(
            (MAC_A, MAC_B),
            ([10, 9, 0, 1], 53),
            ([10, 9, 0, 2], 40_000),
            &a,
        ));
    }
    net.send_udp(0..20);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let rows = done.rows();
    (rows, done.summary(), done.stderr)
}

fn check(rows: &[Value], s: &common::Summary, stderr: &str) {
    let dns: Vec<&Value> = rows
        .iter()
        .filter(|r| r.get("dns_qname").is_some())
        .collect();
    let mut got: Vec<(String, String, bool)> = dns
        .iter()
        .map(|r| {
            (
                r["dns_qname"].as_str().unwrap().to_owned(),
                r["dns_rcode"].as_str().unwrap().to_owned(),
                r["dns_latency_us"].as_u64().is_some_and(|us| us >= 15_000),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, String, bool)> = (1..=5)
        .map(|id| {
            let rcode = if id == 5 { "NXDOMAIN" } else { "NOERROR" };
            (format!("host{id}.example.com"), rcode.to_owned(), true)
        })
        .collect();
    assert_eq!(got, want, "{stderr}");
    for r in &dns {
        assert_eq!(
            (&r["src_ip"], &r["dst_ip"], &r["dst_port"], &r["direction"]),
            (
                &Value::from("10.9.0.2"),
                &Value::from("10.9.0.1"),
                &Value::from(53),
                &Value::from("ingress")
            ),
            "{r}"
        );
    }
    let d = s.dns.as_ref().expect("a dns part");
    assert_eq!(
        (d["rows"], d["written"], d["queries"]),
        (5, 5, 5),
        "{stderr}"
    );
    // Every DNS packet (ten) reached the collector: passed by the kernel, or sampled (each
    // CPU samples its first packet of a direction).
    assert!(d["kernel copies"] + s.sampled >= 10, "{stderr}");
    assert!(d["kernel copies"] <= 10, "{stderr}");
    assert_eq!(d["ring drops"], 0, "{stderr}");
}

#[test]
fn flows_mode_matches_every_dns_transaction_at_any_sample_rate() {
    let (rows, s, stderr) = five_transactions("flows");
    check(&rows, &s, &stderr);
    // Flows mode makes no packet rows, DNS packets included.
    assert!(
        rows.iter().all(|r| r.get("packet_size").is_none()),
        "{stderr}"
    );
}

#[test]
fn both_mode_passes_dns_packets_without_making_them_packet_rows() {
    let (rows, s, stderr) = five_transactions("both");
    check(&rows, &s, &stderr);
    // Packet rows are the sampled ones only: far fewer than the 30 packets sent.
    let packet_rows = rows
        .iter()
        .filter(|r| r.get("packet_size").is_some())
        .count() as u64;
    assert_eq!(packet_rows, s.written, "{stderr}");
    assert!(
        packet_rows <= 4,
        "{packet_rows} packet rows at 1 in 1000: {stderr}"
    );
}
