//! The frames the kernel-path tests send, each with the row it must produce.

use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};
use std::time::SystemTime;

use serde_json::{Value, json};

use super::{MAC_A, MAC_B, mac_str};

pub const IP4_A: [u8; 4] = [10, 77, 0, 1];
pub const IP4_B: [u8; 4] = [10, 77, 0, 2];
pub const IP6_A: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const IP6_B: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// A frame to send and the row it must produce (all columns but `ts`).
pub struct Case {
    pub name: &'static str,
    pub frame: Vec<u8>,
    pub row: Value,
}

pub fn eth() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(MAC_B, MAC_A)
}

/// The row a frame from MAC_B to MAC_A produces before anything is known of its layers:
/// every case's row is this plus the fields that differ.
fn base_row(frame: &[u8]) -> Value {
    json!({
        "packet_size": frame.len(),
        "ether_type": null,
        "src_mac": mac_str(MAC_B),
        "dst_mac": mac_str(MAC_A),
        "protocol": null,
        "src_ip": null,
        "dst_ip": null,
        "src_port": null,
        "dst_port": null,
        "tcp_flags": null,
        "packet_type": null,
        "application": "UNKNOWN",
        "vlan_id": null,
        "tunnel": null,
        "inner_src_ip": null,
        "inner_dst_ip": null,
        "inner_protocol": null,
        "inner_src_port": null,
        "inner_dst_port": null,
        "mpls_labels": null,
        "sample_rate": 1,
        "direction": "ingress",
        // Frames a raw socket sent from a namespace with no process in it: no workload.
        "cgroup_id": null,
        "container_id": null,
        "pod_uid": null,
        "pod": null,
        "namespace": null,
    })
}

/// A case: `frame`, and its row = the base row with each of `fields` laid over it in turn.
fn case(name: &'static str, frame: Vec<u8>, fields: &[&Value]) -> Case {
    let mut row = base_row(&frame);
    for f in fields {
        for (k, v) in f.as_object().expect("fields are an object") {
            assert!(row.get(k).is_some(), "{name}: no column {k}");
            row[k] = v.clone();
        }
    }
    Case { name, frame, row }
}

pub fn write(b: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    b(&mut v);
    v
}

pub fn cases() -> Vec<Case> {
    // What every IPv4 / IPv6 frame from B to A has in its row.
    let v4 = json!({
        "ether_type": 0x0800, "packet_type": "IPv4", "src_ip": "10.77.0.2", "dst_ip": "10.77.0.1",
    });
    let v6 = json!({
        "ether_type": 0x86dd, "packet_type": "IPv6", "src_ip": "fd77::2", "dst_ip": "fd77::1",
    });
    let udp = |src: u16, dst: u16, app: &str| json!({"protocol": 17, "src_port": src, "dst_port": dst, "application": app});
    let tcp = |src: u16, dst: u16, flags: u8, app: &str| {
        json!({
            "protocol": 6, "src_port": src, "dst_port": dst, "tcp_flags": flags,
            "application": app,
        })
    };
    let v4_frame =
        |b: &dyn Fn(etherparse::PacketBuilderStep<etherparse::IpHeaders>, &mut Vec<u8>)| {
            write(|v| b(eth().ipv4(IP4_B, IP4_A, 64), v))
        };
    let v6_frame =
        |b: &dyn Fn(etherparse::PacketBuilderStep<etherparse::IpHeaders>, &mut Vec<u8>)| {
            write(|v| b(eth().ipv6(IP6_B, IP6_A, 64), v))
        };
    let mut cases = vec![
        case(
            "udp4",
            v4_frame(&|p, v| p.udp(40001, 53).write(v, &[7; 20]).unwrap()),
            &[&v4, &udp(40001, 53, "DNS")],
        ),
        case(
            "tcp4 syn",
            v4_frame(&|p, v| p.tcp(40002, 80, 1, 64240).syn().write(v, &[]).unwrap()),
            &[&v4, &tcp(40002, 80, 0x02, "HTTP")],
        ),
        case(
            "udp6",
            v6_frame(&|p, v| p.udp(40003, 123).write(v, &[1; 48]).unwrap()),
            &[&v6, &udp(40003, 123, "NTP")],
        ),
        case(
            "tcp6 psh+ack",
            v6_frame(&|p, v| {
                p.tcp(443, 50000, 9, 1000)
                    .ack(5)
                    .psh()
                    .write(v, b"hello")
                    .unwrap()
            }),
            &[&v6, &tcp(443, 50000, 0x18, "HTTPS")],
        ),
        case(
            "icmp4 echo",
            v4_frame(&|p, v| p.icmpv4_echo_request(1, 1).write(v, &[0; 56]).unwrap()),
            &[&v4, &json!({"protocol": 1})],
        ),
        case(
            "icmp6 echo",
            v6_frame(&|p, v| p.icmpv6_echo_request(1, 1).write(v, &[0; 8]).unwrap()),
            &[&v6, &json!({"protocol": 58})],
        ),
    ];

    let arp = |op, dst_mac: [u8; 6], sender: [u8; 4], target: [u8; 4], target_mac: [u8; 6]| {
        let p = ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            op,
            &MAC_B,
            &sender,
            &target_mac,
            &target,
        )
        .unwrap();
        write(|v| {
            PacketBuilder::ethernet2(MAC_B, dst_mac)
                .arp(p)
                .write(v)
                .unwrap()
        })
    };
    let arp_row = |src_ip: &str, dst_mac: [u8; 6]| {
        json!({
            "ether_type": 0x0806, "packet_type": "ARP", "src_ip": src_ip, "dst_ip": "10.77.0.1",
            "dst_mac": mac_str(dst_mac),
        })
    };
    let f = arp(ArpOperation::REQUEST, [0xff; 6], IP4_B, IP4_A, [0; 6]);
    assert!(f.len() < 64);
    cases.push(case(
        "arp request (42 bytes)",
        f,
        &[&arp_row("10.77.0.2", [0xff; 6])],
    ));
    let f = arp(ArpOperation::REPLY, MAC_A, [10, 77, 0, 3], IP4_A, MAC_A);
    cases.push(case("arp reply", f, &[&arp_row("10.77.0.3", MAC_A)]));

    let f = v4_frame(&|p, v| p.udp(40004, 161).write(v, &[]).unwrap());
    assert_eq!(f.len(), 42);
    cases.push(case(
        "udp4 empty (42 bytes)",
        f,
        &[&v4, &udp(40004, 161, "SNMP")],
    ));

    // Longer than the snap length: packet_size is the wire length, not the captured bytes.
    let f = v4_frame(&|p, v| {
        p.tcp(5432, 40005, 1, 1000)
            .fin()
            .ack(2)
            .write(v, &[0xaa; 1400])
            .unwrap()
    });
    cases.push(case(
        "tcp4 1454 bytes",
        f,
        &[&v4, &tcp(5432, 40005, 0x11, "PostgreSQL")],
    ));

    // IPv6 fragments, the fragment header laid out as on the wire (RFC 8200: offset << 3 |
    // M): the first carries the UDP ports, a later one only addresses and protocol.
    let first = udp(40008, 53, "DNS");
    let later = json!({"protocol": 17});
    for (name, offset, more, fields) in [
        ("ipv6 first fragment", 0u16, true, &first),
        ("ipv6 later fragment", 4, false, &later),
    ] {
        let exts = etherparse::Ipv6Extensions {
            fragment: Some(etherparse::Ipv6FragmentHeader::new(
                etherparse::IpNumber(0),
                etherparse::IpFragOffset::ZERO,
                false,
                7,
            )),
            ..Default::default()
        };
        let header = etherparse::Ipv6Header {
            source: IP6_B,
            destination: IP6_A,
            hop_limit: 64,
            ..Default::default()
        };
        let mut f = write(|v| {
            eth()
                .ip(etherparse::IpHeaders::Ipv6(header, exts))
                .udp(40008, 53)
                .write(v, &[3; 48])
                .unwrap()
        });
        f[14 + 40 + 2..14 + 40 + 4]
            .copy_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
        cases.push(case(name, f, &[&v6, fields]));
    }

    // VLAN 100: ether_type after the tag, vlan_id set.
    let f = write(|v| {
        eth()
            .single_vlan(etherparse::VlanId::try_new(100).unwrap())
            .ipv4(IP4_B, IP4_A, 64)
            .udp(40006, 514)
            .write(v, b"<13>syslog")
            .unwrap()
    });
    cases.push(case(
        "vlan 100 udp4",
        f,
        &[&v4, &udp(40006, 514, "SYSLOG"), &json!({"vlan_id": 100})],
    ));

    // VXLAN carrying an Ethernet frame with IPv6/TCP.
    let mut inner = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 9, 1], [2, 0, 0, 0, 9, 2])
        .ipv6(
            [0xfd, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0xfd, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .tcp(41000, 6379, 1, 100)
        .syn()
        .write(&mut inner, &[])
        .unwrap();
    let payload = [&[0x08, 0, 0, 0, 0, 0, 0x2a, 0][..], &inner].concat();
    let f = v4_frame(&|p, v| p.udp(40007, 4789).write(v, &payload).unwrap());
    let inner = json!({
        "tunnel": "VXLAN", "inner_src_ip": "fd99::1", "inner_dst_ip": "fd99::2",
        "inner_protocol": 6, "inner_src_port": 41000, "inner_dst_port": 6379,
    });
    cases.push(case(
        "vxlan ipv6 tcp",
        f,
        &[&v4, &udp(40007, 4789, "VXLAN"), &inner],
    ));

    cases
}

/// An Ethernet frame (`macs`: source, destination) of IPv4 UDP from `src` to `dst`
/// (address, port) carrying `payload`.
pub fn udp4(
    macs: ([u8; 6], [u8; 6]),
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    payload: &[u8],
) -> Vec<u8> {
    write(|v| {
        PacketBuilder::ethernet2(macs.0, macs.1)
            .ipv4(src.0, dst.0, 64)
            .udp(src.1, dst.1)
            .write(v, payload)
            .unwrap()
    })
}

/// A UDP frame numbered `i` (its source port and payload), for bulk traffic.
pub fn udp_frame(i: u32) -> Vec<u8> {
    let port = 10_000 + (i % 50_000) as u16;
    udp4(
        (MAC_B, MAC_A),
        (IP4_B, port),
        (IP4_A, 9999),
        &i.to_be_bytes(),
    )
}

/// A row without its `ts` (which no test can predict exactly).
/// A row without what depends on when and where it was captured: `ts`, `host` and
/// `interface` (checked on their own, see [`assert_each_case_once`]).
pub fn without_ts(row: &Value) -> Value {
    let mut r = row.clone();
    let o = r.as_object_mut().unwrap();
    for k in ["ts", "host", "interface"] {
        o.remove(k);
    }
    r
}

/// This machine's host name, as the collector puts it in the `host` column.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

pub fn ts_nanos(row: &Value) -> i128 {
    let s = row["ts"].as_str().expect("ts is a string");
    let t = chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("ts {s}: {e}"));
    // RFC 3339 UTC with nine fractional digits.
    assert!(
        s.ends_with('Z') && s.len() == "2026-01-01T00:00:00.000000000Z".len(),
        "{s}"
    );
    i128::from(t.timestamp_nanos_opt().unwrap())
}

pub fn unix_nanos(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as i128
}

/// Each case's row is among `rows` exactly once, with a `ts` inside the send window, and
/// every row says this host and `interface`.
pub fn assert_each_case_once(
    rows: &[Value],
    cases: &[Case],
    window: (SystemTime, SystemTime),
    interface: &str,
) {
    let host = host_name();
    for r in rows {
        assert_eq!(
            (r["host"].as_str(), r["interface"].as_str()),
            (Some(host.as_str()), Some(interface)),
            "{r}"
        );
    }
    let (from, to) = (unix_nanos(window.0), unix_nanos(window.1));
    for case in cases {
        let hits: Vec<&Value> = rows.iter().filter(|r| without_ts(r) == case.row).collect();
        assert_eq!(
            hits.len(),
            1,
            "{}: want one row {}\nrows: {rows:#?}",
            case.name,
            case.row
        );
        let ts = ts_nanos(hits[0]);
        assert!(
            from <= ts && ts <= to,
            "{}: ts {} outside the send window",
            case.name,
            hits[0]["ts"]
        );
    }
}

/// Sends each case's frame (2 ms apart) and gives the collector a moment to take them;
/// returns the time window the sends happened in.
pub fn send_cases(sender: &super::FrameSender, cases: &[Case]) -> (SystemTime, SystemTime) {
    let before = SystemTime::now();
    for case in cases {
        sender.send(&case.frame);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let after = SystemTime::now();
    std::thread::sleep(std::time::Duration::from_millis(300));
    (before, after)
}

/// A DNS message: header (id, flags, counts), one question for `name` of type `qtype`, and
/// `answers` A records pointing at it.
pub fn dns_message(id: u16, flags: u16, name: &str, qtype: u16, answers: u16) -> Vec<u8> {
    let mut m = Vec::new();
    for w in [id, flags, 1, answers, 0, 0] {
        m.extend_from_slice(&w.to_be_bytes());
    }
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    for i in 0..answers {
        m.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x0a\x00\x00");
        m.push(i as u8);
    }
    m
}
