//! Whole rows for every link type and every encapsulation below IP: each test compares the
//! complete record, so every column is checked.

use std::net::{IpAddr, Ipv6Addr};

use etherparse::PacketBuilder;

use super::*;
use crate::record::{MacAddr, MplsLabels, Tunnel};

const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

fn decode(link: Link, frame: &[u8]) -> PacketRecord {
    let meta = FrameMeta {
        ts: UnixNanos(7),
        wire_len: frame.len() as u32,
        sample_rate: 1,
    };
    decode_link(link, frame, meta, &Applications::default()).unwrap()
}

/// IPv4/UDP 10.0.0.1:40000 → 10.0.0.2:53.
fn ip4_udp() -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(40_000, 53)
        .write(&mut v, b"hello")
        .unwrap();
    v
}

/// IPv6/TCP fd…:443 → fe…:50000, SYN|ACK.
fn ip6_tcp() -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
        .tcp(443, 50_000, 1, 1000)
        .syn()
        .ack(7)
        .write(&mut v, b"x")
        .unwrap();
    v
}

/// The row of [`ip4_udp`] in a frame of `len` bytes, with Ethernet MACs.
fn ip4_udp_row(len: usize, ether_type: u16) -> PacketRecord {
    PacketRecord {
        ts: UnixNanos(7),
        packet_size: len as u16,
        ether_type,
        src_mac: Some(MacAddr(SRC)),
        dst_mac: Some(MacAddr(DST)),
        vlan_id: None,
        protocol: Some(17),
        src_ip: Some("10.0.0.1".parse().unwrap()),
        dst_ip: Some("10.0.0.2".parse().unwrap()),
        src_port: Some(40_000),
        dst_port: Some(53),
        tcp_flags: None,
        packet_type: PacketType::Ipv4,
        application: "DNS",
        tunnel: None,
        inner_src_ip: None,
        inner_dst_ip: None,
        inner_protocol: None,
        inner_src_port: None,
        inner_dst_port: None,
        mpls_labels: None,
        sample_rate: 1,
        ..PacketRecord::default()
    }
}

/// The row of [`ip6_tcp`] in a frame of `len` bytes, with Ethernet MACs.
fn ip6_tcp_row(len: usize, ether_type: u16) -> PacketRecord {
    PacketRecord {
        protocol: Some(6),
        src_ip: Some(IpAddr::V6(Ipv6Addr::from([0xfd; 16]))),
        dst_ip: Some(IpAddr::V6(Ipv6Addr::from([0xfe; 16]))),
        src_port: Some(443),
        dst_port: Some(50_000),
        tcp_flags: Some(0x12),
        packet_type: PacketType::Ipv6,
        application: "HTTPS",
        ..ip4_udp_row(len, ether_type)
    }
}

fn no_macs(r: PacketRecord) -> PacketRecord {
    PacketRecord {
        src_mac: None,
        dst_mac: None,
        ..r
    }
}

fn eth(ether_type: u16, rest: &[&[u8]]) -> Vec<u8> {
    let mut f = [&DST[..], &SRC, &ether_type.to_be_bytes()].concat();
    for part in rest {
        f.extend_from_slice(part);
    }
    f
}

/// An MPLS stack entry with these label and bottom-of-stack bit, TC 5, TTL 64.
fn label(label: u32, bottom: bool) -> [u8; 4] {
    ((label << 12) | (5 << 9) | (u32::from(bottom) << 8) | 64).to_be_bytes()
}

fn stack(labels: &[u32]) -> Vec<u8> {
    let last = labels.len() - 1;
    labels
        .iter()
        .enumerate()
        .flat_map(|(i, &l)| label(l, i == last))
        .collect()
}

#[test]
fn mpls_stacks_of_one_to_four_labels_over_ipv4_and_ipv6() {
    for labels in [
        &[16][..],
        &[16, 1001],
        &[16, 1001, 0, 1_048_575],
        &[3, 2, 1],
    ] {
        let f = eth(0x8847, &[&stack(labels), &ip4_udp()]);
        let want = PacketRecord {
            mpls_labels: Some(MplsLabels::from_slice(labels)),
            ..ip4_udp_row(f.len(), 0x8847)
        };
        assert_eq!(decode(Link::Ethernet, &f), want, "{labels:?}");

        let f = eth(0x8847, &[&stack(labels), &ip6_tcp()]);
        let want = PacketRecord {
            mpls_labels: Some(MplsLabels::from_slice(labels)),
            ..ip6_tcp_row(f.len(), 0x8847)
        };
        assert_eq!(decode(Link::Ethernet, &f), want, "{labels:?}");
    }
    assert_eq!(
        decode(
            Link::Ethernet,
            &eth(0x8847, &[&stack(&[16, 1001, 0, 1_048_575]), &ip4_udp()])
        )
        .mpls_labels
        .map(|l| l.to_string()),
        Some("16/1001/0/1048575".to_owned()),
        "outermost first"
    );
}

#[test]
fn mpls_under_a_vlan_tag_and_multicast_mpls() {
    let f = eth(
        0x8100,
        &[&[0x20, 0x2a, 0x88, 0x47], &stack(&[100]), &ip4_udp()],
    );
    let want = PacketRecord {
        vlan_id: Some(42),
        mpls_labels: Some(MplsLabels::from([100])),
        ..ip4_udp_row(f.len(), 0x8847)
    };
    assert_eq!(decode(Link::Ethernet, &f), want);

    let f = eth(0x8848, &[&stack(&[200, 300]), &ip6_tcp()]);
    let want = PacketRecord {
        mpls_labels: Some(MplsLabels::from([200, 300])),
        ..ip6_tcp_row(f.len(), 0x8848)
    };
    assert_eq!(decode(Link::Ethernet, &f), want);
}

#[test]
fn mpls_pseudowire_with_control_word_carrying_ethernet() {
    // The customer's frame, with a VLAN tag of its own: the IP columns are its packet's,
    // MACs and VLAN the provider's frame's.
    let mut inner = [&[0x02, 0, 0, 0, 9, 1][..], &[0x02, 0, 0, 0, 9, 2]].concat();
    inner.extend_from_slice(&[0x81, 0x00, 0x00, 0x07, 0x86, 0xdd]);
    inner.extend(ip6_tcp());
    let control_word = [0, 0, 0, 1];
    let f = eth(0x8847, &[&stack(&[5000, 77]), &control_word, &inner]);
    let want = PacketRecord {
        mpls_labels: Some(MplsLabels::from([5000, 77])),
        ..ip6_tcp_row(f.len(), 0x8847)
    };
    assert_eq!(decode(Link::Ethernet, &f), want);

    // The same frame cut inside the customer's Ethernet header: the labels only.
    let cut = &f[..14 + 8 + 4 + 10];
    let want = PacketRecord {
        ts: UnixNanos(7),
        packet_size: cut.len() as u16,
        ether_type: 0x8847,
        src_mac: Some(MacAddr(SRC)),
        dst_mac: Some(MacAddr(DST)),
        mpls_labels: Some(MplsLabels::from([5000, 77])),
        ..PacketRecord::default()
    };
    assert_eq!(decode(Link::Ethernet, cut), want);
}

#[test]
fn a_tunnel_under_mpls_is_decoded_too() {
    let mut inner = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2])
        .ipv4([192, 168, 1, 1], [192, 168, 1, 2], 64)
        .udp(1111, 2222)
        .write(&mut inner, b"")
        .unwrap();
    let mut vxlan = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(49_152, 4789)
        .write(
            &mut vxlan,
            &[&[0x08, 0, 0, 0, 0, 0, 1, 0][..], &inner].concat(),
        )
        .unwrap();
    let f = eth(0x8847, &[&stack(&[16]), &vxlan]);
    let want = PacketRecord {
        src_port: Some(49_152),
        dst_port: Some(4789),
        application: "VXLAN",
        tunnel: Some(Tunnel::Vxlan),
        inner_src_ip: Some("192.168.1.1".parse().unwrap()),
        inner_dst_ip: Some("192.168.1.2".parse().unwrap()),
        inner_protocol: Some(17),
        inner_src_port: Some(1111),
        inner_dst_port: Some(2222),
        mpls_labels: Some(MplsLabels::from([16])),
        ..ip4_udp_row(f.len(), 0x8847)
    };
    assert_eq!(decode(Link::Ethernet, &f), want);
}

/// A PPPoE session header for a PPP frame of this protocol and payload.
fn pppoe(protocol: u16, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() + 2) as u16;
    let mut v = vec![0x11, 0x00, 0x12, 0x34];
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&protocol.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

#[test]
fn pppoe_sessions_carrying_ipv4_and_ipv6() {
    let f = eth(0x8864, &[&pppoe(0x0021, &ip4_udp())]);
    assert_eq!(decode(Link::Ethernet, &f), ip4_udp_row(f.len(), 0x8864));

    // Under a VLAN tag (as access networks send it), padded to a minimum frame.
    let mut f = eth(
        0x8100,
        &[&[0x00, 0x0a, 0x88, 0x64], &pppoe(0x0057, &ip6_tcp())],
    );
    f.extend_from_slice(&[0xee; 30]);
    let want = PacketRecord {
        vlan_id: Some(10),
        ..ip6_tcp_row(f.len(), 0x8864)
    };
    assert_eq!(decode(Link::Ethernet, &f), want);

    // LCP, and PPPoE discovery: the EtherType only.
    for f in [
        eth(0x8864, &[&pppoe(0xc021, &[1, 1, 0, 4])]),
        eth(0x8863, &[&[0x11, 0x09, 0, 0, 0, 0]]),
    ] {
        let want = PacketRecord {
            ts: UnixNanos(7),
            packet_size: f.len() as u16,
            ether_type: u16::from_be_bytes([f[12], f[13]]),
            src_mac: Some(MacAddr(SRC)),
            dst_mac: Some(MacAddr(DST)),
            ..PacketRecord::default()
        };
        assert_eq!(decode(Link::Ethernet, &f), want);
    }
}

/// A MACsec SecTAG with this TCI (the SC bit adds an SCI) and short length.
fn sectag(tci: u8, short_len: u8) -> Vec<u8> {
    let mut v = vec![tci, short_len, 0, 0, 0, 42];
    if tci & 0x20 != 0 {
        v.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x0a, 0, 1]);
    }
    v
}

#[test]
fn macsec_integrity_only_is_decoded_encrypted_is_not() {
    let icv = [0xcc; 16];
    for tci in [0x00, 0x20, 0x20 | 0x01] {
        let f = eth(0x88e5, &[&sectag(tci, 0), &[0x08, 0x00], &ip4_udp(), &icv]);
        assert_eq!(
            decode(Link::Ethernet, &f),
            ip4_udp_row(f.len(), 0x88e5),
            "TCI {tci:#x}"
        );
    }
    // A VLAN tag inside the protected data (its id is not the outer VLAN).
    let f = eth(
        0x88e5,
        &[
            &sectag(0, 0),
            &[0x81, 0, 0, 9, 0x86, 0xdd],
            &ip6_tcp(),
            &icv,
        ],
    );
    assert_eq!(decode(Link::Ethernet, &f), ip6_tcp_row(f.len(), 0x88e5));

    // Encrypted (E and C set): the EtherType, MACs and VLAN only.
    let f = eth(
        0x8100,
        &[&[0, 5, 0x88, 0xe5], &sectag(0x2c, 0), &[0x5a; 60], &icv],
    );
    let want = PacketRecord {
        ts: UnixNanos(7),
        packet_size: f.len() as u16,
        ether_type: 0x88e5,
        src_mac: Some(MacAddr(SRC)),
        dst_mac: Some(MacAddr(DST)),
        vlan_id: Some(5),
        ..PacketRecord::default()
    };
    assert_eq!(decode(Link::Ethernet, &f), want);
}

/// A Linux cooked header (v1) from this 6-byte address, for this protocol.
fn sll(protocol: u16) -> Vec<u8> {
    let mut v = vec![0, 4, 0, 1, 0, 6]; // outgoing, ARPHRD_ETHER, 6-byte address
    v.extend_from_slice(&SRC);
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&protocol.to_be_bytes());
    v
}

/// A Linux cooked header v2 from this 6-byte address, for this protocol.
fn sll2(protocol: u16) -> Vec<u8> {
    let mut v = protocol.to_be_bytes().to_vec();
    v.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 0, 6]); // ifindex 3, ARPHRD_ETHER, host, 6
    v.extend_from_slice(&SRC);
    v.extend_from_slice(&[0, 0]);
    v
}

#[test]
fn linux_cooked_captures_have_the_sender_mac_only() {
    let f = [sll(0x0800), ip4_udp()].concat();
    let want = PacketRecord {
        dst_mac: None,
        ..ip4_udp_row(f.len(), 0x0800)
    };
    assert_eq!(decode(Link::LinuxSll, &f), want);

    let f = [sll2(0x86dd), ip6_tcp()].concat();
    let want = PacketRecord {
        dst_mac: None,
        ..ip6_tcp_row(f.len(), 0x86dd)
    };
    assert_eq!(decode(Link::LinuxSll2, &f), want);

    // An untagged VLAN frame the kernel did not strip, and MPLS, behind a cooked header.
    let f = [
        sll2(0x8100),
        vec![0, 33, 0x88, 0x47],
        stack(&[16]),
        ip4_udp(),
    ]
    .concat();
    let want = PacketRecord {
        dst_mac: None,
        vlan_id: Some(33),
        mpls_labels: Some(MplsLabels::from([16])),
        ..ip4_udp_row(f.len(), 0x8847)
    };
    assert_eq!(decode(Link::LinuxSll2, &f), want);

    // Loopback (ARPHRD_LOOPBACK, an all-zero address) and a protocol that is not an
    // EtherType (0x0004, 802.2 LLC): recorded as it is, nothing decoded.
    let mut f = [sll(0x0004), vec![0x42; 20]].concat();
    f[4..6].copy_from_slice(&0u16.to_be_bytes());
    let want = PacketRecord {
        ts: UnixNanos(7),
        packet_size: f.len() as u16,
        ether_type: 0x0004,
        ..PacketRecord::default()
    };
    assert_eq!(decode(Link::LinuxSll, &f), want);
}

#[test]
fn raw_ip_link_types_have_no_macs() {
    let v4 = ip4_udp();
    let v6 = ip6_tcp();
    assert_eq!(
        decode(Link::RawIp, &v4),
        no_macs(ip4_udp_row(v4.len(), 0x0800))
    );
    assert_eq!(
        decode(Link::RawIp, &v6),
        no_macs(ip6_tcp_row(v6.len(), 0x86dd))
    );
    assert_eq!(
        decode(Link::RawIpv4, &v4),
        no_macs(ip4_udp_row(v4.len(), 0x0800))
    );
    assert_eq!(
        decode(Link::RawIpv6, &v6),
        no_macs(ip6_tcp_row(v6.len(), 0x86dd))
    );
    // Neither version: nothing but the size.
    let junk = [0x10; 30];
    let want = PacketRecord {
        ts: UnixNanos(7),
        packet_size: 30,
        ..PacketRecord::default()
    };
    assert_eq!(decode(Link::RawIp, &junk), want);
}

#[test]
fn loopback_link_types_read_the_address_family() {
    let v4 = ip4_udp();
    let v6 = ip6_tcp();
    // BSD NULL in a little-endian host's order (AF_INET 2), and a big-endian one's
    // (AF_INET6 of FreeBSD, 28); OpenBSD LOOP in network order (AF_INET6 24).
    let f = [&[2, 0, 0, 0][..], &v4].concat();
    assert_eq!(
        decode(Link::Null, &f),
        no_macs(ip4_udp_row(f.len(), 0x0800))
    );
    let f = [&[0, 0, 0, 28][..], &v6].concat();
    assert_eq!(
        decode(Link::Null, &f),
        no_macs(ip6_tcp_row(f.len(), 0x86dd))
    );
    let f = [&[0, 0, 0, 24][..], &v6].concat();
    assert_eq!(
        decode(Link::Loop, &f),
        no_macs(ip6_tcp_row(f.len(), 0x86dd))
    );
    // Linux's AF_INET6 (10) and macOS's (30) too.
    for af in [10u32, 30] {
        let f = [&af.to_le_bytes()[..], &v6].concat();
        assert_eq!(decode(Link::Null, &f).src_port, Some(443), "AF {af}");
    }
}

#[test]
fn a_frame_shorter_than_its_link_header_is_an_error_naming_it() {
    let meta = FrameMeta {
        ts: UnixNanos(0),
        wire_len: 10,
        sample_rate: 1,
    };
    let apps = Applications::default();
    let e = decode_link(Link::LinuxSll2, &[0; 19], meta, &apps).unwrap_err();
    assert_eq!(
        e.to_string(),
        "19-byte sample is shorter than a Linux cooked capture v2 header"
    );
    let e = decode_link(Link::RawIp, &[], meta, &apps).unwrap_err();
    assert_eq!(
        e.to_string(),
        "0-byte sample is shorter than a raw IP header"
    );
    let e = decode_link(Link::Ethernet, &[0; 13], meta, &apps).unwrap_err();
    assert_eq!(e, DecodeError::TooShort(13));
}

#[test]
fn any_cut_of_any_case_is_no_panic_and_keeps_the_link_columns() {
    let frames = [
        (
            Link::Ethernet,
            eth(0x8847, &[&stack(&[1, 2, 3, 4]), &ip4_udp()]),
        ),
        (
            Link::Ethernet,
            eth(
                0x8847,
                &[&stack(&[9]), &[0; 4], &eth(0x0800, &[&ip4_udp()])],
            ),
        ),
        (Link::Ethernet, eth(0x8864, &[&pppoe(0x0057, &ip6_tcp())])),
        (
            Link::Ethernet,
            eth(0x88e5, &[&sectag(0x20, 0), &[0x08, 0], &ip4_udp()]),
        ),
        (Link::LinuxSll, [sll(0x0800), ip4_udp()].concat()),
        (Link::LinuxSll2, [sll2(0x86dd), ip6_tcp()].concat()),
        (Link::Null, [&[2, 0, 0, 0][..], &ip4_udp()].concat()),
    ];
    for (link, f) in frames {
        let full = decode(link, &f);
        for cut in link.header_len().max(1)..f.len() {
            let r = decode(link, &f[..cut]);
            assert_eq!(
                (r.src_mac, r.dst_mac),
                (full.src_mac, full.dst_mac),
                "{link} {cut}"
            );
            assert_eq!(r.ether_type, full.ether_type, "{link} cut at {cut}");
        }
    }
}
