//! Frame bytes → [`PacketRecord`], with etherparse.
//!
//! Parsing is lax: a sample cut short by the snap length fills the columns it has and leaves
//! the rest null. Only a frame without a whole Ethernet header is an error.

use std::net::{IpAddr, Ipv4Addr};

use etherparse::{
    EtherType, IpNumber, Ipv6ExtensionSlice, LaxIpPayloadSlice, LaxNetSlice, LaxSlicedPacket,
    LinkSlice, TransportSlice,
};

use crate::{
    app,
    record::{MacAddr, PacketRecord, PacketType, UnixNanos},
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
}

/// Decodes one Ethernet II frame (or the first bytes of one).
pub fn decode(frame: &[u8], meta: FrameMeta) -> Result<PacketRecord, DecodeError> {
    let packet =
        LaxSlicedPacket::from_ethernet(frame).map_err(|_| DecodeError::TooShort(frame.len()))?;
    let Some(LinkSlice::Ethernet2(eth)) = &packet.link else {
        return Err(DecodeError::TooShort(frame.len()));
    };
    // The EtherType after any VLAN tags.
    let ether_type = packet
        .ether_payload()
        .map_or(eth.ether_type(), |p| p.ether_type);

    let mut rec = PacketRecord {
        ts: meta.ts,
        packet_size: u16::try_from(meta.wire_len).unwrap_or(u16::MAX),
        ether_type: ether_type.0,
        src_mac: MacAddr(eth.source()),
        dst_mac: MacAddr(eth.destination()),
        protocol: None,
        src_ip: None,
        dst_ip: None,
        src_port: None,
        dst_port: None,
        tcp_flags: None,
        packet_type: packet_type(ether_type),
        application: app::UNKNOWN,
        sample_rate: meta.sample_rate,
    };

    match &packet.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let header = ip.header();
            rec.src_ip = Some(header.source_addr().into());
            rec.dst_ip = Some(header.destination_addr().into());
            let first_fragment = header.fragments_offset().value() == 0;
            ip_payload(&mut rec, &packet, ip.payload(), first_fragment);
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let header = ip.header();
            rec.src_ip = Some(header.source_addr().into());
            rec.dst_ip = Some(header.destination_addr().into());
            let first_fragment = ip.extensions().clone().into_iter().all(|ext| match ext {
                Ipv6ExtensionSlice::Fragment(frag) => frag.fragment_offset().value() == 0,
                _ => true,
            });
            ip_payload(&mut rec, &packet, ip.payload(), first_fragment);
        }
        Some(LaxNetSlice::Arp(arp)) if arp.proto_addr_type() == EtherType::IPV4 => {
            rec.src_ip = ipv4(arp.sender_protocol_addr());
            rec.dst_ip = ipv4(arp.target_protocol_addr());
        }
        Some(LaxNetSlice::Arp(_)) | None => {}
    }
    Ok(rec)
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

/// Fills protocol, ports, TCP flags and application from the IP payload. Only the first
/// fragment of a datagram carries the transport header.
fn ip_payload(
    rec: &mut PacketRecord,
    packet: &LaxSlicedPacket<'_>,
    payload: &LaxIpPayloadSlice<'_>,
    first_fragment: bool,
) {
    rec.protocol = Some(payload.ip_number.0);
    if !first_fragment {
        return;
    }
    match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            rec.src_port = Some(tcp.source_port());
            rec.dst_port = Some(tcp.destination_port());
            rec.tcp_flags = tcp.header_slice().get(TCP_FLAGS_OFFSET).copied();
        }
        Some(TransportSlice::Udp(udp)) => {
            rec.src_port = Some(udp.source_port());
            rec.dst_port = Some(udp.destination_port());
        }
        Some(TransportSlice::Icmpv4(_) | TransportSlice::Icmpv6(_)) => {}
        // etherparse leaves the transport of a fragmented datagram (and of a header cut by
        // the snap length) undecoded; the first fragment still starts with the ports.
        None => {
            let bytes = payload.payload;
            if matches!(payload.ip_number, IpNumber::TCP | IpNumber::UDP) && bytes.len() >= 4 {
                rec.src_port = Some(u16::from_be_bytes([bytes[0], bytes[1]]));
                rec.dst_port = Some(u16::from_be_bytes([bytes[2], bytes[3]]));
                if payload.ip_number == IpNumber::TCP {
                    rec.tcp_flags = bytes.get(TCP_FLAGS_OFFSET).copied();
                }
            }
        }
    }
    rec.application = app::application(rec.src_port, rec.dst_port);
}

/// Offset of the flags byte (CWR..FIN) in a TCP header.
const TCP_FLAGS_OFFSET: usize = 13;

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, PacketBuilder};

    use super::*;

    const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

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
        assert_eq!(r.src_mac, MacAddr(SRC));
        assert_eq!(r.dst_mac, MacAddr(DST));
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
}
