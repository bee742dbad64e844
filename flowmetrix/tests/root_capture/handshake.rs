//! TCP handshake latency and SYN retransmits live (`--mode flows --direction both`, root
//! tier): real connections between two namespaces, one way delayed 50 ms by a TUN delay
//! line ([`crate::common::delay`]), measured on the server's host (SYN-ACK out → ACK in),
//! on the client's (SYN out → SYN-ACK in), and on a host that forwards a container's
//! traffic, watched on the container's veth where the container's SYNs are *ingress*
//! (SYN → ACK); SYNs dropped by nft show as retransmits.

use std::{
    io::Write as _,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use serde_json::Value;

use crate::common::{
    self, MAC_A, MAC_B, NetPair,
    delay::{DelayLine, Line},
    in_netns,
};

const A: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
const PORT: u16 = 7_000;
const DELAY: Duration = Duration::from_millis(50);

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pair with addresses (`A` on the collector's side, `B` on the other) and static
/// neighbours (ARP is off), and a delay line in `ns_b` for packets to `A`.
fn addressed(delayed: bool) -> (NetPair, Option<DelayLine>) {
    let net = NetPair::new();
    for (ns, ifname, addr, peer, mac) in [
        (&net.ns_a, &net.if_a, A, B, MAC_B),
        (&net.ns_b, &net.if_b, B, A, MAC_A),
    ] {
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            ifname,
        ]);
        let mac = common::mac_str(mac);
        ip(&[
            "-n",
            ns,
            "neigh",
            "add",
            &peer.to_string(),
            "lladdr",
            &mac,
            "dev",
            ifname,
        ]);
    }
    let line = delayed.then(|| {
        DelayLine::start(&Line {
            ns: &net.ns_b,
            tun: &format!("{}t", net.if_b),
            to: A,
            from: B,
            out: &net.if_b,
            macs: (MAC_B, MAC_A),
            delay: DELAY,
        })
    });
    (net, line)
}

/// A listener on `addr` in namespace `ns` that accepts and keeps connections until the
/// test ends.
fn listen(ns: &str, addr: SocketAddr) {
    let listener = in_netns(ns, move || TcpListener::bind(addr).expect("bind"));
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for s in listener.incoming().flatten() {
            open.push(s);
        }
    });
}

/// `n` connections from namespace `ns` to `to`, one after the other, each sending a byte;
/// their source ports.
fn connect(ns: &str, to: SocketAddr, n: usize) -> Vec<u16> {
    in_netns(ns, move || {
        let mut streams = Vec::new();
        for _ in 0..n {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
            s.write_all(b"x").expect("write");
            streams.push(s);
        }
        std::thread::sleep(Duration::from_millis(200));
        streams
            .iter()
            .map(|s| s.local_addr().expect("local address").port())
            .collect()
    })
}

fn collector_rows(net: &NetPair, traffic: impl FnOnce()) -> (Vec<Value>, String) {
    let collector = net
        .collector()
        .args(&[
            "--mode",
            "flows",
            "--direction",
            "both",
            "--flow-interval",
            "1s",
            "--output",
            "jsonl",
        ])
        .ready("TC attached")
        .start();
    traffic();
    // Two more intervals: every figure has reached its row.
    std::thread::sleep(Duration::from_millis(2_200));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    (done.rows(), done.stderr)
}

/// The TCP rows of `direction` from `src` to `dst`.
fn rows_of<'a>(
    rows: &'a [Value],
    direction: &str,
    src: (Ipv4Addr, Option<u16>),
    dst: (Ipv4Addr, u16),
) -> Vec<&'a Value> {
    rows.iter()
        .filter(|r| {
            r["protocol"] == 6
                && r["direction"] == direction
                && r["src_ip"] == src.0.to_string()
                && src.1.is_none_or(|p| r["src_port"] == p)
                && r["dst_ip"] == dst.0.to_string()
                && r["dst_port"] == dst.1
        })
        .collect()
}

/// Each connection's initiating rows (`direction`, client → server) carry one latency, in
/// 45–90 ms, and no SYN retransmit; the answering rows carry no latency.
fn check_five(
    rows: &[Value],
    stderr: &str,
    ports: &[u16],
    direction: &str,
    c: Ipv4Addr,
    s: Ipv4Addr,
) {
    assert_eq!(ports.len(), 5);
    let back = if direction == "ingress" {
        "egress"
    } else {
        "ingress"
    };
    for &port in ports {
        let mine = rows_of(rows, direction, (c, Some(port)), (s, PORT));
        assert!(!mine.is_empty(), "no row for port {port}: {stderr}");
        let us: Vec<u64> = mine
            .iter()
            .filter_map(|r| r["tcp_handshake_us"].as_u64())
            .collect();
        assert_eq!(us.len(), 1, "port {port}: {mine:?}");
        assert!((45_000..=90_000).contains(&us[0]), "port {port}: {us:?}");
        for r in &mine {
            assert_eq!(r["tcp_syn_retransmits"], 0, "{r}");
        }
        // SYN, ACK, a byte.
        let packets: u64 = mine.iter().map(|r| r["packets"].as_u64().unwrap()).sum();
        assert!(packets >= 3, "port {port}: {mine:?}");
        let answers = rows
            .iter()
            .filter(|r| r["direction"] == back && r["src_port"] == PORT && r["dst_port"] == port);
        let mut n = 0;
        for r in answers {
            assert_eq!(r["tcp_handshake_us"], Value::Null, "{r}");
            assert_eq!(r["tcp_syn_retransmits"], 0, "{r}");
            n += 1;
        }
        assert!(n >= 1, "no answering row for port {port}: {stderr}");
    }
}

/// Acceptance: the collector on the server's host (B), the client's packets 50 ms late.
#[test]
fn server_host_measures_synack_out_to_ack_in() {
    let (net, _line) = addressed(true);
    listen(&net.ns_a, SocketAddr::from((A, PORT)));
    let mut ports = Vec::new();
    let (rows, stderr) = collector_rows(&net, || {
        ports = connect(&net.ns_b, SocketAddr::from((A, PORT)), 5);
    });
    check_five(&rows, &stderr, &ports, "ingress", B, A);
}

/// Acceptance: the collector on the client's host (A), the server's answers 50 ms late.
#[test]
fn client_host_measures_syn_out_to_synack_in() {
    let (net, _line) = addressed(true);
    listen(&net.ns_b, SocketAddr::from((B, PORT)));
    let mut ports = Vec::new();
    let (rows, stderr) = collector_rows(&net, || {
        ports = connect(&net.ns_a, SocketAddr::from((B, PORT)), 5);
    });
    check_five(&rows, &stderr, &ports, "egress", A, B);
}

/// Acceptance: the server's host drops SYNs to one port (nft); the client's SYNs show as
/// retransmits on that flow's row, with no latency, and the other port is unaffected.
#[test]
fn syns_dropped_by_nft_show_as_retransmits() {
    let (net, _) = addressed(false);
    let rules = "table inet fmx_hs {\n\
        chain input {\n\
        type filter hook input priority 0; policy accept;\n\
        tcp dport 7001 tcp flags syn drop\n\
        }\n\
        }\n";
    let path = std::env::temp_dir().join(format!("{}-hs.nft", net.ns_a));
    std::fs::write(&path, rules).expect("write rules");
    let path_s = path.to_string_lossy().into_owned();
    ip(&["netns", "exec", &net.ns_a, "nft", "-f", &path_s]);
    let _ = std::fs::remove_file(&path);
    listen(&net.ns_a, SocketAddr::from((A, PORT)));
    let (rows, stderr) = collector_rows(&net, || {
        let refused = in_netns(&net.ns_b, || {
            TcpStream::connect_timeout(&SocketAddr::from((A, 7_001)), Duration::from_millis(3_500))
        });
        assert!(refused.is_err(), "the SYNs were to be dropped");
        connect(&net.ns_b, SocketAddr::from((A, PORT)), 1);
    });
    let dropped = rows_of(&rows, "ingress", (B, None), (A, 7_001));
    assert!(!dropped.is_empty(), "{stderr}");
    let retransmits: u64 = dropped
        .iter()
        .map(|r| r["tcp_syn_retransmits"].as_u64().expect("a count"))
        .sum();
    // SYNs at 0, 1 and 3 s.
    assert!(retransmits >= 2, "{dropped:?}");
    let packets: u64 = dropped.iter().map(|r| r["packets"].as_u64().unwrap()).sum();
    assert_eq!(packets, retransmits + 1, "{dropped:?}");
    assert!(
        dropped.iter().all(|r| r["tcp_handshake_us"].is_null()),
        "{dropped:?}"
    );
    let fine = rows_of(&rows, "ingress", (B, None), (A, PORT));
    assert!(
        fine.iter()
            .any(|r| r["tcp_handshake_us"].as_u64().is_some()),
        "{fine:?}"
    );
    assert!(
        fine.iter().all(|r| r["tcp_syn_retransmits"] == 0),
        "{fine:?}"
    );
}

/// A third namespace, the server behind the collector's host, joined by a veth of its own;
/// removed on drop.
struct Behind {
    ns: String,
}

impl Drop for Behind {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .output();
    }
}

/// veth orientation: the collector's host forwards between a "container" (`ns_b`, the
/// client, its packets 50 ms late) and a server behind it. On the container's veth, seen
/// from the host, the container's SYN and ACK are ingress and no packet has a local socket:
/// SYN → ACK, on the ingress row client → server.
#[test]
fn forwarding_host_on_a_containers_veth_measures_syn_to_ack() {
    let (net, _line) = addressed(true);
    let server = Ipv4Addr::new(10, 79, 0, 2);
    let behind = Behind {
        ns: format!("{}s", net.ns_a),
    };
    let (h_if, s_if) = (format!("{}h", net.if_a), format!("{}s", net.if_a));
    ip(&["netns", "add", &behind.ns]);
    ip(&[
        "link", "add", &h_if, "netns", &net.ns_a, "type", "veth", "peer", "name", &s_if, "netns",
        &behind.ns,
    ]);
    ip(&["-n", &net.ns_a, "addr", "add", "10.79.0.1/24", "dev", &h_if]);
    ip(&["-n", &net.ns_a, "link", "set", &h_if, "up"]);
    ip(&[
        "-n",
        &behind.ns,
        "addr",
        "add",
        "10.79.0.2/24",
        "dev",
        &s_if,
    ]);
    ip(&["-n", &behind.ns, "link", "set", &s_if, "up"]);
    ip(&["-n", &behind.ns, "link", "set", "lo", "up"]);
    ip(&[
        "-n",
        &behind.ns,
        "route",
        "add",
        "default",
        "via",
        "10.79.0.1",
    ]);
    // The container's packets to the server go through the delay line too.
    let tun = format!("{}t", net.if_b);
    ip(&[
        "-n",
        &net.ns_b,
        "route",
        "add",
        "10.79.0.0/24",
        "dev",
        &tun,
        "src",
        &B.to_string(),
    ]);
    ip(&[
        "netns",
        "exec",
        &net.ns_a,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    listen(&behind.ns, SocketAddr::from((server, PORT)));
    let mut ports = Vec::new();
    let (rows, stderr) = collector_rows(&net, || {
        ports = connect(&net.ns_b, SocketAddr::from((server, PORT)), 5);
    });
    check_five(&rows, &stderr, &ports, "ingress", B, server);
    drop(behind);
}
