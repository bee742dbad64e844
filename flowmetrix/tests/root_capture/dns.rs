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

/// A DNS server in the collector's namespace (10.9.0.1, UDP and TCP port 53) that answers
/// every query 20 ms late: names starting `nx` with NXDOMAIN, `silent.example.com` never, the
/// rest NOERROR with one A record. Queries from a real client in the other namespace, over
/// UDP and TCP.
#[test]
fn a_real_resolver_answering_late_gives_one_row_per_query_and_a_timeout() {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream, UdpSocket},
        thread,
        time::Duration,
    };

    let net = common::NetPair::new();
    for (ns, ifname, addr) in [
        (&net.ns_a, &net.if_a, "10.9.0.1/24"),
        (&net.ns_b, &net.if_b, "10.9.0.2/24"),
    ] {
        common::must(&["ip", "-n", ns, "addr", "add", addr, "dev", ifname]);
        common::must(&["ip", "-n", ns, "link", "set", ifname, "arp", "on"]);
    }
    let collector = net
        .collector()
        .args(&[
            "--mode",
            "flows",
            "--direction",
            "both",
            "--dns-timeout",
            "1s",
            "--output",
            "jsonl",
        ])
        .ready("TC attached")
        .start();

    // The answer to query `q`: None for the name that is never answered.
    fn answer(q: &[u8]) -> Option<Vec<u8>> {
        let id = u16::from_be_bytes([*q.first()?, *q.get(1)?]);
        let mut name = Vec::new();
        let mut at = 12;
        while let Some(&n) = q.get(at).filter(|&&n| n != 0) {
            let label = q.get(at + 1..at + 1 + usize::from(n))?;
            name.push(String::from_utf8_lossy(label).into_owned());
            at += 1 + usize::from(n);
        }
        let name = name.join(".");
        thread::sleep(Duration::from_millis(20));
        match name.as_str() {
            "silent.example.com" => None,
            n if n.starts_with("nx") => Some(dns_message(id, NXDOMAIN, n, 1, 0)),
            n => Some(dns_message(id, NOERROR, n, 1, 1)),
        }
    }
    let (udp, tcp) = common::in_netns(&net.ns_a, || {
        (
            UdpSocket::bind("10.9.0.1:53").unwrap(),
            TcpListener::bind("10.9.0.1:53").unwrap(),
        )
    });
    thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            if let Some(a) = answer(&buf[..n]) {
                let _ = udp.send_to(&a, from);
            }
        }
    });
    thread::spawn(move || {
        for mut s in tcp.incoming().flatten() {
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                continue;
            }
            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if s.read_exact(&mut q).is_err() {
                continue;
            }
            if let Some(a) = answer(&q) {
                let mut m = (a.len() as u16).to_be_bytes().to_vec();
                m.extend_from_slice(&a);
                let _ = s.write_all(&m);
            }
        }
    });

    // The client: three queries over UDP, two over TCP.
    let client_udp = common::in_netns(&net.ns_b, || UdpSocket::bind("10.9.0.2:40053").unwrap());
    client_udp
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    for (id, name) in [
        (1u16, "a.example.com"),
        (2, "nx.example.com"),
        (3, "silent.example.com"),
    ] {
        client_udp
            .send_to(&dns_message(id, QUERY, name, 1, 0), "10.9.0.1:53")
            .unwrap();
        let mut buf = [0u8; 512];
        let got = client_udp.recv_from(&mut buf);
        assert_eq!(got.is_ok(), id != 3, "{name}: {got:?}");
    }
    for (id, name) in [(4u16, "b.example.com"), (5, "nx2.example.com")] {
        let mut s = common::in_netns(&net.ns_b, || {
            TcpStream::connect_timeout(&"10.9.0.1:53".parse().unwrap(), Duration::from_secs(2))
                .unwrap()
        });
        let q = dns_message(id, QUERY, name, 1, 0);
        let mut m = (q.len() as u16).to_be_bytes().to_vec();
        m.extend_from_slice(&q);
        s.write_all(&m).unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut a = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut a).unwrap();
        assert_eq!(a[..2], id.to_be_bytes());
    }
    // The unanswered query times out after 1 s.
    thread::sleep(Duration::from_millis(1_500));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let rows = done.rows();
    let mut dns: Vec<&Value> = rows
        .iter()
        .filter(|r| r.get("dns_qname").is_some())
        .collect();
    dns.sort_by_key(|r| r["dns_id"].as_u64());
    let stderr = &done.stderr;
    assert_eq!(dns.len(), 5, "{dns:#?}\n{stderr}");
    let want = [
        (1, "a.example.com", "NOERROR", 17, Some(1)),
        (2, "nx.example.com", "NXDOMAIN", 17, Some(0)),
        (3, "silent.example.com", "TIMEOUT", 17, None),
        (4, "b.example.com", "NOERROR", 6, Some(1)),
        (5, "nx2.example.com", "NXDOMAIN", 6, Some(0)),
    ];
    for (r, (id, name, rcode, protocol, answers)) in dns.iter().zip(want) {
        assert_eq!(r["dns_id"], id, "{r}");
        assert_eq!(r["dns_qname"], name, "{r}");
        assert_eq!(r["dns_qtype"], "A", "{r}");
        assert_eq!(r["dns_rcode"], rcode, "{r}");
        assert_eq!(r["protocol"], protocol, "{r}");
        assert_eq!(r["dns_answers"].as_u64(), answers, "{r}");
        assert_eq!(r["src_ip"], "10.9.0.2", "{r}");
        assert_eq!(r["dst_ip"], "10.9.0.1", "{r}");
        assert_eq!(r["dst_port"], 53, "{r}");
        assert_eq!(r["direction"], "ingress", "{r}");
        assert_eq!(r["interface"], net.if_a.as_str(), "{r}");
        match answers {
            // At least the responder's 20 ms, and not the timeout.
            Some(_) => {
                let us = r["dns_latency_us"].as_u64().unwrap();
                assert!((20_000..1_000_000).contains(&us), "{r}");
            }
            None => assert!(r["dns_latency_us"].is_null(), "{r}"),
        }
        if protocol == 17 {
            assert_eq!(r["src_port"], 40_053, "{r}");
        }
    }
    let d = done.summary().dns.expect("a dns part");
    assert_eq!(
        (d["rows"], d["queries"], d["timeouts"], d["ring drops"]),
        (5, 5, 1, 0),
        "{stderr}"
    );
}
