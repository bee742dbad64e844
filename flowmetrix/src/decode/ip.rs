//! The network and transport fields of an IP (or ARP) packet, and the tunnels they may
//! carry (IP in IP, GRE, VXLAN, Geneve), decoded one level deep.

use std::net::{IpAddr, Ipv4Addr};

use etherparse::{
    ArpPacketSlice, EtherType, IpNumber, LaxIpPayloadSlice, LaxIpSlice, LaxNetSlice,
    LaxSlicedPacket,
};

use crate::record::Tunnel;

fn ipv4(bytes: &[u8]) -> Option<IpAddr> {
    let octets: [u8; 4] = bytes.try_into().ok()?;
    Some(Ipv4Addr::from(octets).into())
}

/// What follows a tunnel header: a whole Ethernet frame, or an IP packet.
#[derive(Debug, Clone, Copy)]
pub(super) enum Encapsulated<'a> {
    Ethernet(&'a [u8]),
    Ip(&'a [u8]),
}

impl<'a> Encapsulated<'a> {
    /// The inner packet's addresses, protocol and ports (tunnels are not followed twice).
    pub(super) fn decode(self) -> Option<IpFields<'a>> {
        let net = match self {
            // Rare (tunnels only): the whole Ethernet walk, VLAN tags and MACsec included.
            Self::Ethernet(b) => LaxSlicedPacket::from_ethernet(b).ok()?.net,
            Self::Ip(b) => Some(LaxIpSlice::from_slice(b).ok()?.0.into()),
        };
        let mut fields = IpFields::of(net.as_ref());
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
pub(super) struct IpFields<'a> {
    pub(super) src: Option<IpAddr>,
    pub(super) dst: Option<IpAddr>,
    pub(super) protocol: Option<u8>,
    pub(super) src_port: Option<u16>,
    pub(super) dst_port: Option<u16>,
    pub(super) tcp_flags: Option<u8>,
    pub(super) tunnel: Option<(Tunnel, Encapsulated<'a>)>,
}

impl<'a> IpFields<'a> {
    /// The network packet `bytes` (IPv4 or IPv6 by its version nibble, or ARP), sliced one
    /// layer at a time: etherparse's IP slice only, no `LaxSlicedPacket` (which also slices
    /// the transport header, and is moved whole through each of its steps).
    pub(super) fn sliced(ether_type: EtherType, bytes: &'a [u8]) -> Self {
        let net = match ether_type {
            EtherType::ARP => ArpPacketSlice::from_slice(bytes).ok().map(LaxNetSlice::Arp),
            _ => LaxIpSlice::from_slice(bytes).ok().map(|(ip, _)| ip.into()),
        };
        Self::of(net.as_ref())
    }

    pub(super) fn of(net: Option<&LaxNetSlice<'a>>) -> Self {
        let mut f = Self::default();
        let (payload, first_fragment) = match net {
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
            f.transport(payload);
        }
        f
    }

    fn transport(&mut self, payload: &LaxIpPayloadSlice<'a>) {
        let bytes = payload.payload;
        // The ports are the first four bytes of a TCP or UDP header, the flags its 14th:
        // read where they are, whole header or not (a header cut by the snap length, or
        // the first fragment of a datagram, still starts with them). What etherparse's
        // TCP and UDP slices return for a whole header is these same bytes, so they are
        // not made.
        if matches!(payload.ip_number, IpNumber::TCP | IpNumber::UDP) && bytes.len() >= 4 {
            self.src_port = Some(u16::from_be_bytes([bytes[0], bytes[1]]));
            self.dst_port = Some(u16::from_be_bytes([bytes[2], bytes[3]]));
            if payload.ip_number == IpNumber::TCP {
                self.tcp_flags = bytes.get(TCP_FLAGS_OFFSET).copied();
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
    use super::*;

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
}
