//! `--mode flows|both` with real traffic in network namespaces: the kernel's flow maps
//! count every packet exactly, over interval boundaries, per direction, beyond a full map
//! and a full ring, and a live capture gives the rows a replay of the same frames gives.
//! (Pcaps replayed without root: tests/flows.rs.)

use std::{collections::BTreeMap, time::Duration};

use etherparse::PacketBuilder;
use serde_json::Value;

use crate::common::{self, frames::write, pcap};

/// Acceptance 2 (and 1 in part): a steady stream over many short intervals — every packet
/// in exactly one row, the rows' sums equal to what was sent and to the kernel's `seen`
/// less what it could not key.
#[test]
fn live_flows_over_many_interval_boundaries_are_exact() {
    let net = common::NetPair::new();
    let collector = net
        .collector()
        .args(&[
            "--mode",
            "flows",
            "--flow-interval",
            "100ms",
            "--output",
            "jsonl",
        ])
        .start();
    const N: u32 = 6_000;
    // About 6 s of traffic: ~60 intervals.
    for chunk in 0..60 {
        net.send_udp(chunk * 100..chunk * 100 + 100);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let rows = done.rows();
    let ours: Vec<&Value> = rows.iter().filter(|r| r["dst_port"] == 9999).collect();
    let packets: u64 = ours.iter().map(|r| r["packets"].as_u64().unwrap()).sum();
    let bytes: u64 = ours.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
    let sent_bytes: u64 = (0..N)
        .map(|i| common::frames::udp_frame(i).len() as u64)
        .sum();
    assert_eq!(
        (packets, bytes),
        (u64::from(N), sent_bytes),
        "{}",
        done.stderr
    );
    let intervals: std::collections::BTreeSet<&str> =
        ours.iter().map(|r| r["ts"].as_str().unwrap()).collect();
    assert!(intervals.len() >= 20, "{} intervals", intervals.len());
    let s = done.summary();
    let all: u64 = rows.iter().map(|r| r["packets"].as_u64().unwrap()).sum();
    assert_eq!(s.flow("packets"), all, "{}", done.stderr);
    assert_eq!(
        all + s.flow("unkeyed") + s.flow("overflow"),
        s.seen,
        "{s:?}"
    );
    assert_eq!(s.flow("rows"), s.flow("written"));
    assert_eq!(s.flow("rows"), rows.len() as u64);
}

/// A flow's key columns as a row gives them: direction, vlan_id, ether_type, src_ip,
/// dst_ip, protocol, src_port, dst_port.
type Key = (String, Option<u64>, u64, String, String, u64, u64, u64);

fn key_of(r: &Value) -> Key {
    (
        r["direction"].as_str().unwrap().to_owned(),
        r["vlan_id"].as_u64(),
        r["ether_type"].as_u64().unwrap(),
        r["src_ip"].as_str().unwrap_or("").to_owned(),
        r["dst_ip"].as_str().unwrap_or("").to_owned(),
        r["protocol"].as_u64().unwrap(),
        r["src_port"].as_u64().unwrap(),
        r["dst_port"].as_u64().unwrap(),
    )
}

/// The rows summed per flow key over their intervals: (packets, bytes), checking each row's
/// interface on the way.
fn per_key(rows: &[Value], interface: &str) -> BTreeMap<Key, (u64, u64)> {
    let mut got: BTreeMap<Key, (u64, u64)> = BTreeMap::new();
    for r in rows {
        assert_eq!(r["interface"], interface, "{r}");
        let e = got.entry(key_of(r)).or_default();
        e.0 += r["packets"].as_u64().unwrap();
        e.1 += r["bytes"].as_u64().unwrap();
    }
    got
}

/// What the known-traffic test sends: per flow key, the frames (each sent `n` times) from
/// the sender's end (`ingress`) or out of the collector's interface (`egress`).
struct Known {
    ingress: Vec<(Vec<u8>, u32)>,
    egress: Vec<(Vec<u8>, u32)>,
    want: BTreeMap<Key, (u64, u64)>,
}

impl Known {
    fn add(&mut self, dir: &str, key: Key, frame: Vec<u8>, n: u32) {
        assert_eq!(key.0, dir);
        let e = self.want.entry(key).or_default();
        e.0 += u64::from(n);
        e.1 += u64::from(n) * frame.len() as u64;
        match dir {
            "ingress" => self.ingress.push((frame, n)),
            _ => self.egress.push((frame, n)),
        }
    }
}

fn k(
    dir: &str,
    vlan: Option<u16>,
    ether_type: u64,
    src: &str,
    dst: &str,
    proto: u64,
    ports: (u64, u64),
) -> Key {
    (
        dir.into(),
        vlan.map(u64::from),
        ether_type,
        src.into(),
        dst.into(),
        proto,
        ports.0,
        ports.1,
    )
}

/// The IPv4 fragments (MTU 1500) of a UDP datagram with `payload` bytes: the first carries
/// the UDP header, the rest have no ports.
fn udp4_fragments(
    macs: ([u8; 6], [u8; 6]),
    src: [u8; 4],
    dst: [u8; 4],
    ports: (u16, u16),
    payload: usize,
) -> Vec<Vec<u8>> {
    use etherparse::{Ethernet2Header, IpFragOffset, IpNumber, Ipv4Header};
    let mut datagram = Vec::new();
    datagram.extend_from_slice(&ports.0.to_be_bytes());
    datagram.extend_from_slice(&ports.1.to_be_bytes());
    datagram.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend(std::iter::repeat_n(0xab, payload));
    let chunks: Vec<&[u8]> = datagram.chunks(1480).collect();
    let last = chunks.len() - 1;
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut ip = Ipv4Header::new(chunk.len() as u16, 64, IpNumber::UDP, src, dst).unwrap();
            ip.more_fragments = i < last;
            ip.fragment_offset = IpFragOffset::try_new((i * 1480 / 8) as u16).unwrap();
            ip.header_checksum = ip.calc_header_checksum();
            let mut f = Ethernet2Header {
                source: macs.0,
                destination: macs.1,
                ether_type: etherparse::EtherType::IPV4,
            }
            .to_bytes()
            .to_vec();
            f.extend_from_slice(&ip.to_bytes());
            f.extend_from_slice(chunk);
            f
        })
        .collect()
}

/// TCP, UDP and ICMP over IPv4 and IPv6 both ways, a VLAN-tagged flow both ways and a
/// fragmented UDP datagram both ways.
fn known_traffic() -> Known {
    use common::{MAC_A, MAC_B};
    let mut t = Known {
        ingress: Vec::new(),
        egress: Vec::new(),
        want: BTreeMap::new(),
    };
    let (a4, b4) = ([10, 77, 0, 1], [10, 77, 0, 2]);
    let (sa4, sb4) = ("10.77.0.1", "10.77.0.2");
    let a6 = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let b6 = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let (sa6, sb6) = ("fd77::1", "fd77::2");
    let inb = || PacketBuilder::ethernet2(MAC_B, MAC_A);
    let out = || PacketBuilder::ethernet2(MAC_A, MAC_B);
    let w = |b: etherparse::PacketBuilderStep<etherparse::UdpHeader>, n: usize| {
        write(|v| b.write(v, &vec![0x11; n]).unwrap())
    };
    let (i, e) = ("ingress", "egress");
    // UDP over IPv4, 7 requests and 7 answers.
    let f = w(inb().ipv4(b4, a4, 64).udp(5000, 53), 30);
    t.add(i, k(i, None, 0x0800, sb4, sa4, 17, (5000, 53)), f, 7);
    let f = w(out().ipv4(a4, b4, 64).udp(53, 5000), 90);
    t.add(e, k(e, None, 0x0800, sa4, sb4, 17, (53, 5000)), f, 7);
    // TCP over IPv4: a SYN and 4 data segments in, a SYN-ACK and 3 ACKs out.
    let syn = write(|v| {
        inb()
            .ipv4(b4, a4, 64)
            .tcp(40_000, 80, 1, 1000)
            .syn()
            .write(v, &[])
            .unwrap()
    });
    let data = write(|v| {
        inb()
            .ipv4(b4, a4, 64)
            .tcp(40_000, 80, 2, 1000)
            .ack(1)
            .psh()
            .write(v, &[0x22; 100])
            .unwrap()
    });
    let key = k(i, None, 0x0800, sb4, sa4, 6, (40_000, 80));
    t.add(i, key.clone(), syn, 1);
    t.add(i, key, data, 4);
    let synack = write(|v| {
        out()
            .ipv4(a4, b4, 64)
            .tcp(80, 40_000, 1, 1000)
            .syn()
            .ack(2)
            .write(v, &[])
            .unwrap()
    });
    let ack = write(|v| {
        out()
            .ipv4(a4, b4, 64)
            .tcp(80, 40_000, 2, 1000)
            .ack(102)
            .write(v, &[])
            .unwrap()
    });
    let key = k(e, None, 0x0800, sa4, sb4, 6, (80, 40_000));
    t.add(e, key.clone(), synack, 1);
    t.add(e, key, ack, 3);
    // ICMP echo: type 8 in, type 0 out (type and code in the ports).
    let f = write(|v| {
        inb()
            .ipv4(b4, a4, 64)
            .icmpv4_echo_request(1, 1)
            .write(v, &[0x33; 56])
            .unwrap()
    });
    t.add(i, k(i, None, 0x0800, sb4, sa4, 1, (8, 0)), f, 3);
    let f = write(|v| {
        out()
            .ipv4(a4, b4, 64)
            .icmpv4_echo_reply(1, 1)
            .write(v, &[0x33; 56])
            .unwrap()
    });
    t.add(e, k(e, None, 0x0800, sa4, sb4, 1, (0, 0)), f, 3);
    // UDP, TCP and ICMPv6 over IPv6.
    let f = w(inb().ipv6(b6, a6, 64).udp(6000, 123), 48);
    t.add(i, k(i, None, 0x86dd, sb6, sa6, 17, (6000, 123)), f, 5);
    let f = w(out().ipv6(a6, b6, 64).udp(123, 6000), 48);
    t.add(e, k(e, None, 0x86dd, sa6, sb6, 17, (123, 6000)), f, 5);
    let f = write(|v| {
        inb()
            .ipv6(b6, a6, 64)
            .tcp(41_000, 443, 7, 1000)
            .syn()
            .write(v, &[])
            .unwrap()
    });
    t.add(i, k(i, None, 0x86dd, sb6, sa6, 6, (41_000, 443)), f, 2);
    let f = write(|v| {
        inb()
            .ipv6(b6, a6, 64)
            .icmpv6_echo_request(2, 1)
            .write(v, &[0x44; 40])
            .unwrap()
    });
    t.add(i, k(i, None, 0x86dd, sb6, sa6, 58, (128, 0)), f, 4);
    let f = write(|v| {
        out()
            .ipv6(a6, b6, 64)
            .icmpv6_echo_reply(2, 1)
            .write(v, &[0x44; 40])
            .unwrap()
    });
    t.add(e, k(e, None, 0x86dd, sa6, sb6, 58, (129, 0)), f, 4);
    // VLAN 100, the tag in the frame, both ways.
    let tagged = |from: [u8; 6], to: [u8; 6], src: [u8; 4], dst: [u8; 4], ports: (u16, u16)| {
        write(|v| {
            PacketBuilder::ethernet2(from, to)
                .single_vlan(100u16.try_into().unwrap())
                .ipv4(src, dst, 64)
                .udp(ports.0, ports.1)
                .write(v, &[0x55; 64])
                .unwrap()
        })
    };
    let (va, vb) = ([10, 77, 1, 1], [10, 77, 1, 2]);
    let f = tagged(MAC_B, MAC_A, vb, va, (7000, 161));
    let key = k(
        i,
        Some(100),
        0x0800,
        "10.77.1.2",
        "10.77.1.1",
        17,
        (7000, 161),
    );
    t.add(i, key, f, 6);
    let f = tagged(MAC_A, MAC_B, va, vb, (161, 7000));
    let key = k(
        e,
        Some(100),
        0x0800,
        "10.77.1.1",
        "10.77.1.2",
        17,
        (161, 7000),
    );
    t.add(e, key, f, 2);
    // A 3000-byte UDP datagram in three fragments: ports on the first only. Twice in, once
    // out.
    for (dir, macs, src, dst, s, d, n) in [
        (i, (MAC_B, MAC_A), b4, a4, sb4, sa4, 2),
        (e, (MAC_A, MAC_B), a4, b4, sa4, sb4, 1),
    ] {
        let frags = udp4_fragments(macs, src, dst, (8000, 9000), 3000);
        assert_eq!(frags.len(), 3);
        assert!(frags.iter().all(|f| f.len() <= 1514));
        for (j, f) in frags.into_iter().enumerate() {
            let ports = if j == 0 { (8000, 9000) } else { (0, 0) };
            t.add(dir, k(dir, None, 0x0800, s, d, 17, ports), f, n);
        }
    }
    t
}

/// Acceptance 1: known traffic, both directions — every flow's packets and bytes exactly
/// what was sent, no other flow, and the sum over all flows the kernel's `seen` less what it
/// could not key.
#[test]
fn live_known_traffic_gives_each_flow_exactly_per_direction() {
    known_traffic_exact("xdp");
}

/// TC ingress sees the frame after the kernel has moved an 802.1Q tag into the skb's
/// metadata (`skb_vlan_untag` comes before the ingress hook): the tag must still key the
/// flow and count in its bytes.
#[test]
fn live_known_traffic_gives_each_flow_exactly_with_tc_ingress() {
    known_traffic_exact("tc");
}

fn known_traffic_exact(ingress_hook: &str) {
    let net = common::NetPair::new();
    let collector = net
        .collector()
        .args(&[
            "--mode",
            "flows",
            "--ingress-hook",
            ingress_hook,
            "--direction",
            "both",
            "--flow-interval",
            "500ms",
            "--output",
            "jsonl",
        ])
        // Egress is attached last: both hooks are in place.
        .ready(r#"direction="egress""#)
        .start();
    let t = known_traffic();
    let from_b = net.sender();
    let from_a = net.sender_on(&net.ns_a, &net.if_a);
    for (sender, frames) in [(&from_b, &t.ingress), (&from_a, &t.egress)] {
        for (f, n) in frames {
            for _ in 0..*n {
                sender.send(f);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let rows = done.rows();
    let got = per_key(&rows, &net.if_a);
    assert_eq!(got, t.want, "{}", done.stderr);
    let s = done.summary();
    let packets: u64 = t.want.values().map(|v| v.0).sum();
    let bytes: u64 = t.want.values().map(|v| v.1).sum();
    assert_eq!(
        (s.flow("packets"), s.flow("bytes")),
        (packets, bytes),
        "{s:?}"
    );
    assert_eq!(
        (s.flow("unkeyed"), s.flow("overflow"), s.flow("events")),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!(packets, s.seen, "{s:?}");
    let ingress: u64 = t.ingress.iter().map(|(_, n)| u64::from(*n)).sum();
    assert_eq!(
        (s.ingress.seen, s.egress.seen),
        (ingress, packets - ingress),
        "{s:?}"
    );
    assert_eq!(s.flow("rows"), rows.len() as u64);
}

/// Runs a flows collector with `--flow-max-entries 16` (and `env`), sends `n` UDP frames of
/// as many flows (`udp_frame`), each once, and gives its output and the frame length.
fn many_flows_into_16_entries(
    net: &common::NetPair,
    n: u32,
    env: &[(&str, &str)],
) -> (common::Finished, u64) {
    let collector = net
        .collector()
        // The map's and the ring's accounting alone: the kernel drops these frames (no
        // address is theirs), and a dropped packet's flow would have a row of drops.
        .args(&[
            "--mode",
            "flows",
            "--drops",
            "off",
            "--flow-max-entries",
            "16",
            "--output",
            "jsonl",
        ])
        .env(env)
        .start();
    net.send_udp(0..n);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let len = common::frames::udp_frame(0).len() as u64;
    assert!((0..n).all(|i| common::frames::udp_frame(i).len() as u64 == len));
    (done, len)
}

/// Acceptance 3: a map of 16 entries and 600 flows in one interval — the flows the map cannot
/// take come through the ring as events, and every flow's row is exact.
#[test]
fn live_flows_beyond_a_16_entry_map_arrive_as_events_exactly() {
    let net = common::NetPair::new();
    const N: u32 = 600;
    let (done, len) = many_flows_into_16_entries(&net, N, &[]);
    let rows = done.rows();
    let s = done.summary();
    let got = per_key(&rows, &net.if_a);
    assert_eq!(got.len(), N as usize, "one row per flow: {}", done.stderr);
    assert!(
        got.iter().all(|(k, v)| k.7 == 9999 && *v == (1, len)),
        "each flow exactly one packet of {len} bytes"
    );
    assert!(s.flow("events") > 0, "{s:?}");
    assert!(s.flow("map max") == 16, "{s:?}");
    assert_eq!(
        (s.flow("packets"), s.flow("overflow"), s.flow("unkeyed")),
        (u64::from(N), 0, 0),
        "{s:?}"
    );
    assert_eq!(
        s.flow("events") + 16,
        u64::from(N),
        "16 in the map, the rest events: {s:?}"
    );
    assert_eq!(s.seen, u64::from(N));
}

/// Acceptance 3, the ring full too (a one-page event ring through the test hook
/// `FLOWMETRIX_TEST_FLOW_EVENTS_BYTES`): the overflow counters account for every packet
/// neither the map nor the ring took.
#[test]
fn live_flows_beyond_the_map_and_a_full_ring_are_counted_as_overflow_exactly() {
    let net = common::NetPair::new();
    const N: u32 = 600;
    let (done, len) =
        many_flows_into_16_entries(&net, N, &[("FLOWMETRIX_TEST_FLOW_EVENTS_BYTES", "4096")]);
    let rows = done.rows();
    let s = done.summary();
    let got = per_key(&rows, &net.if_a);
    assert!(got.values().all(|v| *v == (1, len)), "{got:?}");
    let kept = got.len() as u64;
    assert_eq!(kept, s.flow("packets"));
    assert!(s.flow("events") > 0 && s.flow("overflow") > 0, "{s:?}");
    assert_eq!(kept, 16 + s.flow("events"), "{s:?}");
    assert_eq!(kept + s.flow("overflow"), u64::from(N), "{s:?}");
    assert_eq!(s.flow("overflow bytes"), s.flow("overflow") * len, "{s:?}");
    assert_eq!(s.flow("unkeyed"), 0);
    assert_eq!(s.seen, u64::from(N));
}

/// A flow row without what depends on when and where it was captured (`ts`, `first_seen`,
/// `last_seen`, `interval_ms`, `interface`).
fn flow_content(r: &Value) -> Value {
    let mut r = r.clone();
    for k in ["ts", "first_seen", "last_seen", "interval_ms", "interface"] {
        r.as_object_mut().unwrap().remove(k);
    }
    // A handshake's latency is a time too (the replayed frames are stamped 1 ms apart):
    // whether there is one.
    let measured = !r["tcp_handshake_us"].is_null();
    r["tcp_handshake_us"] = Value::Bool(measured);
    r
}

/// Acceptance 4: `both` mode, live — packet rows and flow rows of the same traffic at once,
/// each exact.
#[test]
fn live_both_mode_writes_packet_rows_and_flow_rows_at_once() {
    let net = common::NetPair::new();
    let collector = net
        .collector()
        .args(&["--mode", "both", "--sample-rate", "1", "--output", "jsonl"])
        .start();
    let t = known_traffic();
    let sender = net.sender();
    for (f, n) in &t.ingress {
        for _ in 0..*n {
            sender.send(f);
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let (flows, packets): (Vec<Value>, Vec<Value>) = done
        .rows()
        .into_iter()
        .partition(|r| r.get("interval_ms").is_some());
    let want: BTreeMap<Key, (u64, u64)> = t
        .want
        .into_iter()
        .filter(|(k, _)| k.0 == "ingress")
        .collect();
    assert_eq!(per_key(&flows, &net.if_a), want, "{}", done.stderr);
    let sent: u64 = t.ingress.iter().map(|(_, n)| u64::from(*n)).sum();
    let s = done.summary();
    // Every packet sampled (1 in 1) gives a packet row; every packet is in a flow row.
    assert_eq!(packets.len() as u64, sent, "{s:?}");
    assert_eq!((s.seen, s.sampled, s.written), (sent, sent, sent), "{s:?}");
    assert_eq!(s.flow("packets"), sent);
    let bytes: u64 = packets
        .iter()
        .map(|r| r["packet_size"].as_u64().unwrap())
        .sum();
    assert_eq!(bytes, want.values().map(|v| v.1).sum::<u64>());
}

/// Acceptance 4: the same frames, captured live and replayed from a pcap of them, give the
/// same flow rows but for the times and the interface's name.
#[test]
fn live_capture_and_pcap_replay_of_the_same_frames_give_the_same_flow_rows() {
    let net = common::NetPair::new();
    let collector = net
        .collector()
        // A replay cannot see the kernel's drops (these frames are dropped: no address
        // is theirs): the live side leaves them out too.
        .args(&[
            "--mode",
            "flows",
            "--drops",
            "off",
            "--flow-interval",
            "1h",
            "--output",
            "jsonl",
        ])
        .start();
    let t = known_traffic();
    let sender = net.sender();
    let mut file = Vec::new();
    for (f, n) in &t.ingress {
        for _ in 0..*n {
            sender.send(f);
            // All in one 10 s interval of packet time.
            file.push((
                pcap::T0 + Duration::from_millis(file.len() as u64 + 1),
                f.clone(),
            ));
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let path = pcap::file("flows-live", "same-frames.pcap", &pcap::ethernet(file));
    let out = pcap::replay(&path, &["--mode", "flows", "--output", "jsonl"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sorted = |rows: Vec<Value>| {
        let mut v: Vec<String> = rows.iter().map(|r| flow_content(r).to_string()).collect();
        v.sort();
        v
    };
    let mut live = done.rows();
    let replayed = pcap::json_lines(&out);
    // A file has no sockets: a replay leaves the local sockets' columns null. Live, the part
    // runs (`--tcp-health`), and these TCP flows had no local socket (the frames came from a
    // raw socket): no retransmit, no RTT. The rest compares as it is.
    for r in &mut live {
        let retransmits = if r["protocol"] == 6 {
            0.into()
        } else {
            Value::Null
        };
        assert_eq!(r["tcp_retransmits"], retransmits, "{r}");
        assert!(r["tcp_rtt_us"].is_null(), "{r}");
        r["tcp_retransmits"] = Value::Null;
    }
    assert!(
        replayed
            .iter()
            .all(|r| r["tcp_retransmits"].is_null() && r["tcp_rtt_us"].is_null())
    );
    assert!(live.iter().all(|r| r["interface"] == net.if_a.as_str()));
    assert!(
        replayed
            .iter()
            .all(|r| r["interface"] == "same-frames.pcap")
    );
    let ingress_flows = t.want.keys().filter(|k| k.0 == "ingress").count();
    assert_eq!(live.len(), ingress_flows, "one row per ingress flow");
    assert_eq!(sorted(live), sorted(replayed));
}
