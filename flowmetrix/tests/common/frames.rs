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

#[allow(clippy::too_many_arguments)]
fn row(
    frame: &[u8],
    ether_type: u16,
    protocol: Option<u8>,
    ips: (&str, &str),
    ports: (Option<u16>, Option<u16>),
    tcp_flags: Option<u8>,
    packet_type: &str,
    application: &str,
    dst_mac: [u8; 6],
) -> Value {
    json!({
        "packet_size": frame.len(),
        "ether_type": ether_type,
        "src_mac": mac_str(MAC_B),
        "dst_mac": mac_str(dst_mac),
        "protocol": protocol,
        "src_ip": ips.0,
        "dst_ip": ips.1,
        "src_port": ports.0,
        "dst_port": ports.1,
        "tcp_flags": tcp_flags,
        "packet_type": packet_type,
        "application": application,
        "vlan_id": null,
        "tunnel": null,
        "inner_src_ip": null,
        "inner_dst_ip": null,
        "inner_protocol": null,
        "inner_src_port": null,
        "inner_dst_port": null,
        "mpls_labels": null,
        "sample_rate": 1,
    })
}

pub fn write(b: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    b(&mut v);
    v
}

pub fn cases() -> Vec<Case> {
    let (a4, b4) = ("10.77.0.1", "10.77.0.2");
    let (a6, b6) = ("fd77::1", "fd77::2");
    let mut cases = Vec::new();

    let f = write(|v| {
        eth()
            .ipv4(IP4_B, IP4_A, 64)
            .udp(40001, 53)
            .write(v, &[7; 20])
            .unwrap()
    });
    let r = row(
        &f,
        0x0800,
        Some(17),
        (b4, a4),
        (Some(40001), Some(53)),
        None,
        "IPv4",
        "DNS",
        MAC_A,
    );
    cases.push(Case {
        name: "udp4",
        frame: f,
        row: r,
    });

    let f = write(|v| {
        eth()
            .ipv4(IP4_B, IP4_A, 64)
            .tcp(40002, 80, 1, 64240)
            .syn()
            .write(v, &[])
            .unwrap()
    });
    let r = row(
        &f,
        0x0800,
        Some(6),
        (b4, a4),
        (Some(40002), Some(80)),
        Some(0x02),
        "IPv4",
        "HTTP",
        MAC_A,
    );
    cases.push(Case {
        name: "tcp4 syn",
        frame: f,
        row: r,
    });

    let f = write(|v| {
        eth()
            .ipv6(IP6_B, IP6_A, 64)
            .udp(40003, 123)
            .write(v, &[1; 48])
            .unwrap()
    });
    let r = row(
        &f,
        0x86dd,
        Some(17),
        (b6, a6),
        (Some(40003), Some(123)),
        None,
        "IPv6",
        "NTP",
        MAC_A,
    );
    cases.push(Case {
        name: "udp6",
        frame: f,
        row: r,
    });

    let f = write(|v| {
        eth()
            .ipv6(IP6_B, IP6_A, 64)
            .tcp(443, 50000, 9, 1000)
            .ack(5)
            .psh()
            .write(v, b"hello")
            .unwrap()
    });
    let r = row(
        &f,
        0x86dd,
        Some(6),
        (b6, a6),
        (Some(443), Some(50000)),
        Some(0x18),
        "IPv6",
        "HTTPS",
        MAC_A,
    );
    cases.push(Case {
        name: "tcp6 psh+ack",
        frame: f,
        row: r,
    });

    let f = write(|v| {
        eth()
            .ipv4(IP4_B, IP4_A, 64)
            .icmpv4_echo_request(1, 1)
            .write(v, &[0; 56])
            .unwrap()
    });
    let r = row(
        &f,
        0x0800,
        Some(1),
        (b4, a4),
        (None, None),
        None,
        "IPv4",
        "UNKNOWN",
        MAC_A,
    );
    cases.push(Case {
        name: "icmp4 echo",
        frame: f,
        row: r,
    });

    let f = write(|v| {
        eth()
            .ipv6(IP6_B, IP6_A, 64)
            .icmpv6_echo_request(1, 1)
            .write(v, &[0; 8])
            .unwrap()
    });
    let r = row(
        &f,
        0x86dd,
        Some(58),
        (b6, a6),
        (None, None),
        None,
        "IPv6",
        "UNKNOWN",
        MAC_A,
    );
    cases.push(Case {
        name: "icmp6 echo",
        frame: f,
        row: r,
    });

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
    let f = arp(ArpOperation::REQUEST, [0xff; 6], IP4_B, IP4_A, [0; 6]);
    assert!(f.len() < 64);
    let r = row(
        &f,
        0x0806,
        None,
        (b4, a4),
        (None, None),
        None,
        "ARP",
        "UNKNOWN",
        [0xff; 6],
    );
    cases.push(Case {
        name: "arp request (42 bytes)",
        frame: f,
        row: r,
    });

    let f = arp(ArpOperation::REPLY, MAC_A, [10, 77, 0, 3], IP4_A, MAC_A);
    let r = row(
        &f,
        0x0806,
        None,
        ("10.77.0.3", a4),
        (None, None),
        None,
        "ARP",
        "UNKNOWN",
        MAC_A,
    );
    cases.push(Case {
        name: "arp reply",
        frame: f,
        row: r,
    });

    let f = write(|v| {
        eth()
            .ipv4(IP4_B, IP4_A, 64)
            .udp(40004, 161)
            .write(v, &[])
            .unwrap()
    });
    assert_eq!(f.len(), 42);
    let r = row(
        &f,
        0x0800,
        Some(17),
        (b4, a4),
        (Some(40004), Some(161)),
        None,
        "IPv4",
        "SNMP",
        MAC_A,
    );
    cases.push(Case {
        name: "udp4 empty (42 bytes)",
        frame: f,
        row: r,
    });

    // Longer than the snap length: packet_size is the wire length, not the captured bytes.
    let f = write(|v| {
        eth()
            .ipv4(IP4_B, IP4_A, 64)
            .tcp(5432, 40005, 1, 1000)
            .fin()
            .ack(2)
            .write(v, &[0xaa; 1400])
            .unwrap()
    });
    let r = row(
        &f,
        0x0800,
        Some(6),
        (b4, a4),
        (Some(5432), Some(40005)),
        Some(0x11),
        "IPv4",
        "PostgreSQL",
        MAC_A,
    );
    cases.push(Case {
        name: "tcp4 1454 bytes",
        frame: f,
        row: r,
    });

    // IPv6 fragments, the fragment header laid out as on the wire (RFC 8200: offset << 3 |
    // M): the first carries the UDP ports, a later one only addresses and protocol.
    for (name, offset, more) in [
        ("ipv6 first fragment", 0u16, true),
        ("ipv6 later fragment", 4, false),
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
        let r = if offset == 0 {
            row(
                &f,
                0x86dd,
                Some(17),
                (b6, a6),
                (Some(40008), Some(53)),
                None,
                "IPv6",
                "DNS",
                MAC_A,
            )
        } else {
            row(
                &f,
                0x86dd,
                Some(17),
                (b6, a6),
                (None, None),
                None,
                "IPv6",
                "UNKNOWN",
                MAC_A,
            )
        };
        cases.push(Case {
            name,
            frame: f,
            row: r,
        });
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
    let mut r = row(
        &f,
        0x0800,
        Some(17),
        (b4, a4),
        (Some(40006), Some(514)),
        None,
        "IPv4",
        "SYSLOG",
        MAC_A,
    );
    r["vlan_id"] = json!(100);
    cases.push(Case {
        name: "vlan 100 udp4",
        frame: f,
        row: r,
    });

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
    let f = write(|v| {
        eth()
            .ipv4(IP4_B, IP4_A, 64)
            .udp(40007, 4789)
            .write(v, &payload)
            .unwrap()
    });
    let mut r = row(
        &f,
        0x0800,
        Some(17),
        (b4, a4),
        (Some(40007), Some(4789)),
        None,
        "IPv4",
        "VXLAN",
        MAC_A,
    );
    r["tunnel"] = json!("VXLAN");
    r["inner_src_ip"] = json!("fd99::1");
    r["inner_dst_ip"] = json!("fd99::2");
    r["inner_protocol"] = json!(6);
    r["inner_src_port"] = json!(41000);
    r["inner_dst_port"] = json!(6379);
    cases.push(Case {
        name: "vxlan ipv6 tcp",
        frame: f,
        row: r,
    });

    cases
}

/// A UDP frame numbered `i` (its source port and payload), for bulk traffic.
pub fn udp_frame(i: u32) -> Vec<u8> {
    let port = 10_000 + (i % 50_000) as u16;
    write(|v| {
        eth()
            .ipv4(IP4_B, IP4_A, 64)
            .udp(port, 9999)
            .write(v, &i.to_be_bytes())
            .unwrap()
    })
}

/// A row without its `ts` (which no test can predict exactly).
pub fn without_ts(row: &Value) -> Value {
    let mut r = row.clone();
    r.as_object_mut().unwrap().remove("ts");
    r
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

/// Each case's row is among `rows` exactly once, with a `ts` inside the send window.
pub fn assert_each_case_once(rows: &[Value], cases: &[Case], window: (SystemTime, SystemTime)) {
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
