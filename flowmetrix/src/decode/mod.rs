//! Frame bytes → [`PacketRecord`]: the link header ([`link`]), what lies between it and the
//! network packet ([`l2`]: VLAN, MPLS, PPPoE, MACsec), then IP and tunnels with etherparse.
//!
//! Parsing is lax: a sample cut short by the snap length fills the columns it has and leaves
//! the rest null. Only a frame without a whole link header is an error.

mod l2;
mod link;
#[cfg(test)]
mod link_tests;

use std::net::{IpAddr, Ipv4Addr};

use etherparse::{
    EtherType, IpNumber, LaxIpPayloadSlice, LaxNetSlice, LaxSlicedPacket, TransportSlice,
};

pub use self::link::Link;
use crate::{
    applications::Applications,
    record::{self, Direction, PacketRecord, PacketType, Tunnel, UnixNanos},
};

/// What the sampler knows about a frame besides its bytes.
#[derive(Clone, Copy, Debug)]
pub struct FrameMeta {
    pub ts: UnixNanos,
    /// Length of the whole frame on the wire (the sample may hold fewer bytes).
    pub wire_len: u32,
    pub sample_rate: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}-byte sample is shorter than an Ethernet header")]
    TooShort(usize),
    #[error("{len}-byte sample is shorter than a {} header", .link.name())]
    ShortLink { len: usize, link: Link },
}

/// Decodes one Ethernet II frame (or the first bytes of one); `apps` names the application.
pub fn decode(
    frame: &[u8],
    meta: FrameMeta,
    apps: &Applications,
) -> Result<PacketRecord, DecodeError> {
    decode_link(Link::Ethernet, frame, meta, apps)
}

/// What follows a `link` header: its EtherType and bytes (the flows stage keys frames of
/// non-Ethernet link types from here), or `None` when the link header is cut short.
pub fn network_of(link: Link, frame: &[u8]) -> Option<(u16, &[u8])> {
    link::header(link, frame)
        .ok()
        .map(|h| (h.ether_type, h.payload))
}

/// Decodes one frame that starts with a `link` header.
pub fn decode_link(
    link: Link,
    frame: &[u8],
    meta: FrameMeta,
    apps: &Applications,
) -> Result<PacketRecord, DecodeError> {
    let head = link::header(link, frame)?;
    let l2 = l2::walk(head.ether_type, head.payload);
    let ip = l2.net.map_or_else(IpFields::default, |(t, bytes)| {
        IpFields::of(&LaxSlicedPacket::from_ether_type(t, bytes))
    });
    let inner = ip.tunnel.and_then(|(_, payload)| payload.decode());

    Ok(PacketRecord {
        ts: meta.ts,
        packet_size: u16::try_from(meta.wire_len).unwrap_or(u16::MAX),
        ether_type: l2.ether_type,
        src_mac: head.src_mac,
        dst_mac: head.dst_mac,
        vlan_id: l2.vlan_id,
        protocol: ip.protocol,
        src_ip: ip.src,
        dst_ip: ip.dst,
        src_port: ip.src_port,
        dst_port: ip.dst_port,
        tcp_flags: ip.tcp_flags,
        packet_type: l2.net.map_or(PacketType::Other, |(t, _)| packet_type(t)),
        application: apps.application(ip.src_port, ip.dst_port),
        tunnel: ip.tunnel.map(|(t, _)| t),
        inner_src_ip: inner.as_ref().and_then(|i| i.src),
        inner_dst_ip: inner.as_ref().and_then(|i| i.dst),
        inner_protocol: inner.as_ref().and_then(|i| i.protocol),
        inner_src_port: inner.as_ref().and_then(|i| i.src_port),
        inner_dst_port: inner.as_ref().and_then(|i| i.dst_port),
        mpls_labels: l2.mpls_labels,
        sample_rate: meta.sample_rate,
        host: record::unnamed(),
        interface: record::unnamed(),
        direction: Direction::Ingress,
    })
}

fn packet_type(ether_type: EtherType) -> PacketType {
    match ether_type {
        EtherType::IPV4 => PacketType::Ipv4,
        EtherType::IPV6 => PacketType::Ipv6,
        EtherType::ARP => PacketType::Arp,
        _ => PacketType::Other,
    }
}

fn ipv4(bytes: &[u8]) -> Option<IpAddr> {
    let octets: [u8; 4] = bytes.try_into().ok()?;
    Some(Ipv4Addr::from(octets).into())
}

/// What follows a tunnel header: a whole Ethernet frame, or an IP packet.
#[derive(Debug, Clone, Copy)]
enum Encapsulated<'a> {
    Ethernet(&'a [u8]),
    Ip(&'a [u8]),
}

impl<'a> Encapsulated<'a> {
    /// The inner packet's addresses, protocol and ports (tunnels are not followed twice).
    fn decode(self) -> Option<IpFields<'a>> {
        let packet = match self {
            Self::Ethernet(b) => LaxSlicedPacket::from_ethernet(b).ok()?,
            Self::Ip(b) => LaxSlicedPacket::from_ip(b).ok()?,
        };
        let mut fields = IpFields::of(&packet);
        fields.tunnel = None;
        Some(fields)
    }

    /// By EtherType, as GRE and Geneve name their payload.
    fn by_ether_type(ether_type: u16, bytes: &'a [u8]) -> Option<Self> {
        match EtherType(ether_type) {
            TRANSPARENT_ETHERNET_BRIDGING => Some(Self::Ethernet(bytes)),
            EtherType::IPV4 | EtherType::IPV6 => Some(Self::Ip(bytes)),
            _ => None,
        }
    }
}

/// EtherType of an Ethernet frame carried in GRE or Geneve.
const TRANSPARENT_ETHERNET_BRIDGING: EtherType = EtherType(0x6558);
const VXLAN_PORT: u16 = 4789;
const GENEVE_PORT: u16 = 6081;

/// Network and transport fields of one IP (or ARP) packet.
#[derive(Debug, Default, Clone, Copy)]
struct IpFields<'a> {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    protocol: Option<u8>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    tcp_flags: Option<u8>,
    tunnel: Option<(Tunnel, Encapsulated<'a>)>,
}

impl<'a> IpFields<'a> {
    fn of(packet: &LaxSlicedPacket<'a>) -> Self {
        let mut f = Self::default();
        let (payload, first_fragment) = match &packet.net {
            Some(LaxNetSlice::Ipv4(ip)) => {
                let header = ip.header();
                f.src = Some(header.source_addr().into());
                f.dst = Some(header.destination_addr().into());
                (ip.payload(), header.fragments_offset().value() == 0)
            }
            Some(LaxNetSlice::Ipv6(ip)) => {
                let header = ip.header();
                f.src = Some(header.source_addr().into());
                f.dst = Some(header.destination_addr().into());
                let first = ipv6_first_fragment(header.next_header(), ip.extensions().slice());
                (ip.payload(), first)
            }
            Some(LaxNetSlice::Arp(arp)) => {
                if arp.proto_addr_type() == EtherType::IPV4 {
                    f.src = ipv4(arp.sender_protocol_addr());
                    f.dst = ipv4(arp.target_protocol_addr());
                }
                return f;
            }
            None => return f,
        };
        f.protocol = Some(payload.ip_number.0);
        // Only the first fragment of a datagram carries the transport header.
        if first_fragment {
            f.transport(packet, payload);
        }
        f
    }

    fn transport(&mut self, packet: &LaxSlicedPacket<'a>, payload: &LaxIpPayloadSlice<'a>) {
        let bytes = payload.payload;
        match &packet.transport {
            Some(TransportSlice::Tcp(tcp)) => {
                self.src_port = Some(tcp.source_port());
                self.dst_port = Some(tcp.destination_port());
                self.tcp_flags = tcp.header_slice().get(TCP_FLAGS_OFFSET).copied();
            }
            Some(TransportSlice::Udp(udp)) => {
                self.src_port = Some(udp.source_port());
                self.dst_port = Some(udp.destination_port());
            }
            Some(TransportSlice::Icmpv4(_) | TransportSlice::Icmpv6(_)) => {}
            // etherparse leaves the transport of a fragmented datagram (and of a header cut
            // by the snap length) undecoded; the first fragment still starts with the ports.
            None => {
                if matches!(payload.ip_number, IpNumber::TCP | IpNumber::UDP) && bytes.len() >= 4 {
                    self.src_port = Some(u16::from_be_bytes([bytes[0], bytes[1]]));
                    self.dst_port = Some(u16::from_be_bytes([bytes[2], bytes[3]]));
                    if payload.ip_number == IpNumber::TCP {
                        self.tcp_flags = bytes.get(TCP_FLAGS_OFFSET).copied();
                    }
                }
            }
        }
        self.tunnel = match payload.ip_number {
            IpNumber::IPV4 | IpNumber::IPV6 => Some((Tunnel::Ipip, Encapsulated::Ip(bytes))),
            IpNumber::GRE => gre(bytes).map(|inner| (Tunnel::Gre, inner)),
            IpNumber::UDP => match (self.dst_port, bytes.get(UDP_HEADER..)) {
                (Some(VXLAN_PORT), Some(udp)) => vxlan(udp).map(|inner| (Tunnel::Vxlan, inner)),
                (Some(GENEVE_PORT), Some(udp)) => geneve(udp).map(|inner| (Tunnel::Geneve, inner)),
                _ => None,
            },
            _ => None,
        };
    }
}

const UDP_HEADER: usize = 8;

/// Whether an IPv6 packet is not a later fragment: no fragment header with a non-zero
/// offset among its extension headers (`exts`, starting with header type `first`).
///
/// Walked here with bounds checks rather than with etherparse's extension iterator, which
/// reads out of bounds on some truncated headers (found by the decode fuzz target).
fn ipv6_first_fragment(first: IpNumber, exts: &[u8]) -> bool {
    let mut next = first;
    let mut rest = exts;
    loop {
        let len = match next {
            IpNumber::IPV6_HEADER_HOP_BY_HOP
            | IpNumber::IPV6_ROUTE_HEADER
            | IpNumber::IPV6_DESTINATION_OPTIONS => rest.get(1).map(|&l| (usize::from(l) + 1) * 8),
            IpNumber::AUTHENTICATION_HEADER => rest.get(1).map(|&l| (usize::from(l) + 2) * 4),
            IpNumber::IPV6_FRAGMENTATION_HEADER => {
                return rest
                    .get(2..4)
                    .is_none_or(|b| u16::from_be_bytes([b[0], b[1]]) >> 3 == 0);
            }
            _ => return true,
        };
        match (len, rest.first()) {
            (Some(len), Some(&n)) if len <= rest.len() => {
                next = IpNumber(n);
                rest = &rest[len..];
            }
            _ => return true,
        }
    }
}

/// VXLAN (RFC 7348): 8-byte header with the I flag set, then an Ethernet frame.
fn vxlan(b: &[u8]) -> Option<Encapsulated<'_>> {
    (b.len() >= 8 && b[0] & 0x08 != 0).then(|| Encapsulated::Ethernet(&b[8..]))
}

/// Geneve (RFC 8926): version 0, options length in 4-byte words, protocol as an EtherType.
fn geneve(b: &[u8]) -> Option<Encapsulated<'_>> {
    let (&first, rest) = b.split_first()?;
    if first >> 6 != 0 || rest.len() < 3 {
        return None;
    }
    let header = 8 + usize::from(first & 0x3f) * 4;
    let proto = u16::from_be_bytes([b[2], b[3]]);
    Encapsulated::by_ether_type(proto, b.get(header..)?)
}

/// GRE (RFC 2784/2890): flags, protocol as an EtherType, then optional checksum, key and
/// sequence number words.
fn gre(b: &[u8]) -> Option<Encapsulated<'_>> {
    let flags = *b.first()?;
    if b.get(1)? & 0x07 != 0 {
        return None; // version 1 is PPTP's enhanced GRE
    }
    let words = [0x80u8, 0x20, 0x10]
        .iter()
        .filter(|&&bit| flags & bit != 0)
        .count();
    let header = 4 + 4 * words;
    let proto = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    Encapsulated::by_ether_type(proto, b.get(header..)?)
}

/// Offset of the flags byte (CWR..FIN) in a TCP header.
const TCP_FLAGS_OFFSET: usize = 13;

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use etherparse::{
        ArpHardwareId, ArpOperation, ArpPacket, IpAuthHeader, IpFragOffset, IpHeaders,
        Ipv6Extensions, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, PacketBuilder, VlanId,
    };

    use super::*;
    use crate::record::MacAddr;

    const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    fn decode(frame: &[u8], meta: FrameMeta) -> Result<PacketRecord, DecodeError> {
        super::decode(frame, meta, &Applications::default())
    }

    fn meta(len: usize) -> FrameMeta {
        FrameMeta {
            ts: UnixNanos(1),
            wire_len: len as u32,
            sample_rate: 1,
        }
    }

    fn udp4(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(SRC, DST)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(40_000, 53);
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn udp_over_ipv4() {
        let f = udp4(b"hello");
        let r = decode(&f, meta(f.len())).unwrap();
        assert_eq!(r.src_mac, Some(MacAddr(SRC)));
        assert_eq!(r.dst_mac, Some(MacAddr(DST)));
        assert_eq!(r.ether_type, 0x0800);
        assert_eq!(r.packet_type, PacketType::Ipv4);
        assert_eq!(r.protocol, Some(17));
        assert_eq!(r.src_ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(r.dst_ip, Some("10.0.0.2".parse().unwrap()));
        assert_eq!((r.src_port, r.dst_port), (Some(40_000), Some(53)));
        assert_eq!(r.tcp_flags, None);
        assert_eq!(r.application, "DNS");
        assert_eq!(usize::from(r.packet_size), f.len());
    }

    #[test]
    fn tcp_over_ipv6_with_flags() {
        let b = PacketBuilder::ethernet2(SRC, DST)
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(443, 50_000, 1, 1000)
            .syn()
            .ack(7);
        let mut f = Vec::new();
        b.write(&mut f, b"x").unwrap();
        let r = decode(&f, meta(f.len())).unwrap();
        assert_eq!(r.ether_type, 0x86dd);
        assert_eq!(r.packet_type, PacketType::Ipv6);
        assert_eq!(r.protocol, Some(6));
        assert_eq!(r.src_ip, Some(IpAddr::V6(Ipv6Addr::from([0xfd; 16]))));
        assert_eq!(r.dst_ip, Some(IpAddr::V6(Ipv6Addr::from([0xfe; 16]))));
        assert_eq!((r.src_port, r.dst_port), (Some(443), Some(50_000)));
        assert_eq!(r.tcp_flags, Some(0x12)); // SYN|ACK
        assert_eq!(r.application, "HTTPS"); // by the source port
    }

    #[test]
    fn icmp_has_protocol_and_no_ports() {
        let b = PacketBuilder::ethernet2(SRC, DST)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(1, 2);
        let mut f = Vec::new();
        b.write(&mut f, b"ping").unwrap();
        let r = decode(&f, meta(f.len())).unwrap();
        assert_eq!(r.protocol, Some(1));
        assert_eq!((r.src_port, r.dst_port, r.tcp_flags), (None, None, None));
        assert_eq!(r.application, "UNKNOWN");
    }

    #[test]
    fn arp_takes_ips_from_protocol_addresses() {
        let arp = ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            ArpOperation::REQUEST,
            &SRC,
            &[10, 0, 0, 1],
            &[0; 6],
            &[10, 0, 0, 2],
        )
        .unwrap();
        let b = PacketBuilder::ethernet2(SRC, [0xff; 6]).arp(arp);
        let mut f = Vec::new();
        b.write(&mut f).unwrap();
        assert_eq!(f.len(), 42, "an ARP frame is shorter than 64 bytes");
        let r = decode(&f, meta(f.len())).unwrap();
        assert_eq!(r.packet_type, PacketType::Arp);
        assert_eq!(r.ether_type, 0x0806);
        assert_eq!(r.src_ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(r.dst_ip, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(r.protocol, None);
        assert_eq!((r.src_port, r.dst_port), (None, None));
        assert_eq!(r.packet_size, 42);
    }

    #[test]
    fn ipv4_options_are_skipped_by_ihl() {
        let mut header =
            etherparse::Ipv4Header::new(8, 64, IpNumber::UDP, [10, 0, 0, 1], [10, 0, 0, 2])
                .unwrap();
        header.options = [1u8, 1, 1, 0].as_slice().try_into().unwrap(); // NOP NOP NOP EOL
        let b = PacketBuilder::ethernet2(SRC, DST)
            .ip(etherparse::IpHeaders::Ipv4(header, Default::default()))
            .udp(1234, 161);
        let mut f = Vec::new();
        b.write(&mut f, &[]).unwrap();
        let r = decode(&f, meta(f.len())).unwrap();
        assert_eq!((r.src_port, r.dst_port), (Some(1234), Some(161)));
        assert_eq!(r.application, "SNMP");
    }

    /// Sets IPv4 fragmentation fields and fixes the header checksum.
    fn fragment_ipv4(frame: &mut [u8], offset_units: u16, more: bool) {
        let ip = &mut frame[14..34];
        let v = (u16::from(more) << 13) | offset_units;
        ip[6..8].copy_from_slice(&v.to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let h = etherparse::Ipv4HeaderSlice::from_slice(ip)
            .unwrap()
            .to_header();
        let sum = h.calc_header_checksum();
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
    }

    #[test]
    fn first_fragment_has_ports_later_fragments_do_not() {
        let mut first = udp4(&[0u8; 32]);
        fragment_ipv4(&mut first, 0, true);
        let r = decode(&first, meta(first.len())).unwrap();
        assert_eq!((r.src_port, r.dst_port), (Some(40_000), Some(53)));

        let mut later = udp4(&[0u8; 32]);
        fragment_ipv4(&mut later, 185, false);
        let r = decode(&later, meta(later.len())).unwrap();
        assert_eq!(r.protocol, Some(17));
        assert_eq!(r.src_ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!((r.src_port, r.dst_port, r.tcp_flags), (None, None, None));
        assert_eq!(r.application, "UNKNOWN");
    }

    #[test]
    fn truncated_sample_keeps_what_it_has() {
        let f = udp4(b"payload");
        // Ethernet + IPv4 + 4 bytes of UDP: ports survive.
        let r = decode(&f[..38], meta(f.len())).unwrap();
        assert_eq!((r.src_port, r.dst_port), (Some(40_000), Some(53)));
        assert_eq!(usize::from(r.packet_size), f.len());
        // Ethernet + half an IPv4 header: MACs and EtherType only.
        let r = decode(&f[..24], meta(f.len())).unwrap();
        assert_eq!(r.packet_type, PacketType::Ipv4);
        assert_eq!((r.src_ip, r.protocol, r.src_port), (None, None, None));
    }

    #[test]
    fn less_than_an_ethernet_header_is_an_error() {
        assert_eq!(decode(&[0u8; 13], meta(13)), Err(DecodeError::TooShort(13)));
        assert_eq!(decode(&[], meta(0)), Err(DecodeError::TooShort(0)));
    }

    #[test]
    fn non_ip_frames_are_other() {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&DST);
        f[6..12].copy_from_slice(&SRC);
        f[12..14].copy_from_slice(&0x88ccu16.to_be_bytes()); // LLDP
        let r = decode(&f, meta(f.len())).unwrap();
        assert_eq!(r.packet_type, PacketType::Other);
        assert_eq!(r.ether_type, 0x88cc);
        assert_eq!(r.src_ip, None);
    }

    #[test]
    fn packet_size_saturates() {
        let f = udp4(b"");
        let r = decode(&f, meta(70_000)).unwrap();
        assert_eq!(r.packet_size, u16::MAX);
    }

    fn vid(v: u16) -> VlanId {
        VlanId::try_new(v).unwrap()
    }

    #[test]
    fn single_vlan_tag() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .single_vlan(vid(100))
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 53)
            .write(&mut f, b"q")
            .unwrap();
        let r = decode(&f, meta(f.len())).unwrap();
        assert_eq!(r.vlan_id, Some(100));
        assert_eq!(r.ether_type, 0x0800, "the EtherType after the tag");
        assert_eq!(r.packet_type, PacketType::Ipv4);
        assert_eq!((r.src_port, r.dst_port), (Some(1000), Some(53)));
        assert_eq!(r.src_ip, Some("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn qinq_reports_the_outer_vlan() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .double_vlan(vid(300), vid(12))
            .ipv6([1; 16], [2; 16], 64)
            .tcp(22, 40_000, 1, 100)
            .ack(1)
            .write(&mut f, b"")
            .unwrap();
        assert_eq!(&f[12..14], &[0x88, 0xa8], "802.1ad outer tag");
        let r = decode(&f, meta(f.len())).unwrap();
        assert_eq!(r.vlan_id, Some(300));
        assert_eq!(r.ether_type, 0x86dd);
        assert_eq!(r.protocol, Some(6));
        assert_eq!(
            (r.src_port, r.dst_port, r.tcp_flags),
            (Some(22), Some(40_000), Some(0x10))
        );
        assert_eq!(r.application, "SSH");
    }

    #[test]
    fn fuzz_crash_truncated_ipv6_extension_headers() {
        // Found by `cargo xtask fuzz`: etherparse's extension iterator read out of bounds.
        let input = "0af0ffffff00000000e52100000000000000000048000008006a00000ae5e500000008006a00000affffffffffff29ffffffffffffffffffffffffffffffffff00000000ffffffffffffff00";
        let data: Vec<u8> = (0..input.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&input[i..i + 2], 16).unwrap())
            .collect();
        let (&offset, frame) = data.split_first().unwrap();
        let frame = &frame[usize::from(offset % 64)..];
        let _ = decode(frame, meta(frame.len()));
    }

    #[test]
    fn ipv6_fragment_walk_is_bounded() {
        assert!(ipv6_first_fragment(IpNumber::UDP, &[]));
        assert!(
            ipv6_first_fragment(IpNumber(0), &[17, 200, 0, 0]),
            "truncated hop-by-hop"
        );
        assert!(
            ipv6_first_fragment(IpNumber(44), &[17, 0]),
            "truncated fragment header"
        );
        assert!(!ipv6_first_fragment(
            IpNumber(44),
            &[17, 0, 0, 8, 0, 0, 0, 1]
        ));
        let hop = [44, 0, 1, 4, 0, 0, 0, 0];
        assert!(!ipv6_first_fragment(
            IpNumber(0),
            &[&hop[..], &[17, 0, 0, 9, 0, 0, 0, 1]].concat()
        ));
    }

    #[test]
    fn untagged_frames_have_no_vlan() {
        let f = udp4(b"");
        assert_eq!(decode(&f, meta(f.len())).unwrap().vlan_id, None);
    }

    /// fd…fd → fe…fe, hop limit 64.
    fn v6_header() -> Ipv6Header {
        Ipv6Header {
            source: [0xfd; 16],
            destination: [0xfe; 16],
            hop_limit: 64,
            ..Default::default()
        }
    }

    #[test]
    fn ipv6_extension_headers_are_skipped_to_the_transport() {
        let exts = Ipv6Extensions {
            hop_by_hop_options: Some(Ipv6RawExtHeader::new_raw(IpNumber(0), &[0; 6]).unwrap()),
            destination_options: Some(
                Ipv6RawExtHeader::new_raw(IpNumber(0), &[1, 4, 0, 0, 0, 0]).unwrap(),
            ),
            auth: Some(IpAuthHeader::new(IpNumber(0), 7, 1, &[0; 12]).unwrap()),
            ..Default::default()
        };
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .ip(IpHeaders::Ipv6(v6_header(), exts))
            .tcp(5432, 40_000, 1, 100)
            .syn()
            .write(&mut f, b"")
            .unwrap();
        let r = decode(&f, meta(f.len())).unwrap();
        assert_eq!(r.protocol, Some(6), "the upper layer, not hop-by-hop (0)");
        assert_eq!(
            (r.src_port, r.dst_port, r.tcp_flags),
            (Some(5432), Some(40_000), Some(2))
        );
        assert_eq!(r.application, "PostgreSQL");
    }

    /// An IPv6/UDP datagram fragment. The fragment header's offset/M word is written here
    /// as RFC 8200 lays it out (offset << 3 | M): etherparse 0.19's builder puts the M flag
    /// in another bit.
    fn ipv6_fragment(offset: u16, more: bool) -> Vec<u8> {
        let exts = Ipv6Extensions {
            fragment: Some(Ipv6FragmentHeader::new(
                IpNumber(0),
                IpFragOffset::ZERO,
                false,
                99,
            )),
            ..Default::default()
        };
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .ip(IpHeaders::Ipv6(v6_header(), exts))
            .udp(4000, 53)
            .write(&mut f, &[0; 40])
            .unwrap();
        let word = (offset << 3) | u16::from(more);
        f[14 + 40 + 2..14 + 40 + 4].copy_from_slice(&word.to_be_bytes());
        f
    }

    #[test]
    fn ipv6_first_fragment_has_ports_later_ones_do_not() {
        let first = ipv6_fragment(0, true);
        let r = decode(&first, meta(first.len())).unwrap();
        assert_eq!(
            (r.protocol, r.src_port, r.dst_port),
            (Some(17), Some(4000), Some(53))
        );
        let later = ipv6_fragment(100, false);
        let r = decode(&later, meta(later.len())).unwrap();
        assert_eq!(r.protocol, Some(17));
        assert_eq!(r.src_ip, Some(IpAddr::V6(Ipv6Addr::from([0xfd; 16]))));
        assert_eq!((r.src_port, r.dst_port), (None, None));
        assert_eq!(r.application, "UNKNOWN");
    }

    /// An inner IPv6/UDP packet in an Ethernet frame.
    fn inner_ethernet() -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2])
            .ipv6([0xaa; 16], [0xbb; 16], 64)
            .udp(5353, 53)
            .write(&mut f, b"dns")
            .unwrap();
        f
    }

    fn inner_ipv4_tcp() -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ipv4([192, 168, 9, 1], [192, 168, 9, 2], 64)
            .tcp(33_000, 443, 1, 100)
            .syn()
            .write(&mut f, b"")
            .unwrap();
        f
    }

    fn assert_inner_v6_udp(r: &PacketRecord) {
        assert_eq!(r.inner_src_ip, Some(IpAddr::V6(Ipv6Addr::from([0xaa; 16]))));
        assert_eq!(r.inner_dst_ip, Some(IpAddr::V6(Ipv6Addr::from([0xbb; 16]))));
        assert_eq!(r.inner_protocol, Some(17));
        assert_eq!((r.inner_src_port, r.inner_dst_port), (Some(5353), Some(53)));
    }

    fn assert_inner_v4_tcp(r: &PacketRecord) {
        assert_eq!(r.inner_src_ip, Some("192.168.9.1".parse().unwrap()));
        assert_eq!(r.inner_dst_ip, Some("192.168.9.2".parse().unwrap()));
        assert_eq!(r.inner_protocol, Some(6));
        assert_eq!(
            (r.inner_src_port, r.inner_dst_port),
            (Some(33_000), Some(443))
        );
    }

    fn udp_tunnel(dst_port: u16, header: &[u8], inner: &[u8]) -> Vec<u8> {
        let payload = [header, inner].concat();
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(49_152, dst_port)
            .write(&mut f, &payload)
            .unwrap();
        f
    }

    #[test]
    fn vxlan_outer_columns_and_inner_packet() {
        let f = udp_tunnel(4789, &[0x08, 0, 0, 0, 0, 0x10, 0, 0], &inner_ethernet());
        let r = decode(&f, meta(f.len())).unwrap();
        assert_eq!(r.tunnel, Some(Tunnel::Vxlan));
        assert_eq!(r.src_ip, Some("10.0.0.1".parse().unwrap()), "outer");
        assert_eq!((r.protocol, r.dst_port), (Some(17), Some(4789)));
        assert_eq!(r.application, "VXLAN");
        assert_inner_v6_udp(&r);
    }

    #[test]
    fn geneve_with_options_carrying_ethernet() {
        // Version 0, 2 words (8 bytes) of options, protocol 0x6558.
        let mut header = vec![0x02, 0, 0x65, 0x58, 0, 0, 0x2a, 0];
        header.extend_from_slice(&[0xff; 8]);
        let f = udp_tunnel(6081, &header, &inner_ethernet());
        let r = decode(&f, meta(f.len())).unwrap();
        assert_eq!(r.tunnel, Some(Tunnel::Geneve));
        assert_inner_v6_udp(&r);
    }

    fn ip_in(protocol: IpNumber, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .write(&mut f, protocol, payload)
            .unwrap();
        f
    }

    #[test]
    fn gre_with_key_carrying_ipv4() {
        // K bit, protocol IPv4, then the key word.
        let header = [0x20, 0, 0x08, 0x00, 0, 0, 0, 7];
        let f = ip_in(IpNumber::GRE, &[&header[..], &inner_ipv4_tcp()].concat());
        let r = decode(&f, meta(f.len())).unwrap();
        assert_eq!(r.tunnel, Some(Tunnel::Gre));
        assert_eq!((r.protocol, r.src_port), (Some(47), None));
        assert_inner_v4_tcp(&r);
    }

    #[test]
    fn gre_transparent_ethernet_bridging() {
        let header = [0, 0, 0x65, 0x58];
        let f = ip_in(IpNumber::GRE, &[&header[..], &inner_ethernet()].concat());
        let r = decode(&f, meta(f.len())).unwrap();
        assert_eq!(r.tunnel, Some(Tunnel::Gre));
        assert_inner_v6_udp(&r);
    }

    #[test]
    fn ip_in_ip() {
        let f = ip_in(IpNumber::IPV4, &inner_ipv4_tcp());
        let r = decode(&f, meta(f.len())).unwrap();
        assert_eq!(r.tunnel, Some(Tunnel::Ipip));
        assert_eq!(r.protocol, Some(4));
        assert_inner_v4_tcp(&r);

        let mut v6 = Vec::new();
        PacketBuilder::ipv6([0xaa; 16], [0xbb; 16], 64)
            .udp(5353, 53)
            .write(&mut v6, b"dns")
            .unwrap();
        let f = ip_in(IpNumber::IPV6, &v6);
        let r = decode(&f, meta(f.len())).unwrap();
        assert_eq!((r.tunnel, r.protocol), (Some(Tunnel::Ipip), Some(41)));
        assert_inner_v6_udp(&r);
    }

    #[test]
    fn a_tunnel_cut_by_the_snap_length_keeps_what_it_has() {
        let f = udp_tunnel(4789, &[0x08, 0, 0, 0, 0, 0x10, 0, 0], &inner_ethernet());
        // Outer Ethernet+IPv4+UDP+VXLAN (50) + inner Ethernet (14) + 30 of 40 IPv6 bytes.
        let r = decode(&f[..94], meta(f.len())).unwrap();
        assert_eq!(r.tunnel, Some(Tunnel::Vxlan));
        assert_eq!(r.dst_port, Some(4789));
        assert_eq!((r.inner_src_ip, r.inner_protocol), (None, None));
        // Cut inside the VXLAN header: no tunnel decoded, outer columns intact.
        let r = decode(&f[..46], meta(f.len())).unwrap();
        assert_eq!((r.tunnel, r.dst_port), (None, Some(4789)));
    }

    #[test]
    fn udp_to_a_tunnel_port_without_a_tunnel_header_is_plain_udp() {
        // VXLAN's I flag unset: not VXLAN.
        let f = udp_tunnel(4789, &[0; 8], &inner_ethernet());
        let r = decode(&f, meta(f.len())).unwrap();
        assert_eq!(r.tunnel, None);
        assert_eq!(r.inner_src_ip, None);
    }
}
