//! Frame bytes → [`PacketRecord`]: the link header ([`link`]), what lies between it and the
//! network packet ([`l2`]: VLAN, MPLS, PPPoE, MACsec), then IP and tunnels with etherparse.
//!
//! Parsing is lax: a sample cut short by the snap length fills the columns it has and leaves
//! the rest null. Only a frame without a whole link header is an error.

pub mod dns;
mod ip;
mod l2;
mod link;
#[cfg(test)]
mod link_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

use self::ip::IpFields;
pub use self::link::{DecodeError, Link};
use crate::{
    applications::Applications,
    record::{self, Direction, PacketRecord, PacketType, UnixNanos},
};

/// What the sampler knows about a frame besides its bytes.
#[derive(Clone, Copy, Debug)]
pub struct FrameMeta {
    pub ts: UnixNanos,
    /// Length of the whole frame on the wire (the sample may hold fewer bytes).
    pub wire_len: u32,
    pub sample_rate: u32,
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
    let origin = Origin {
        host: record::unnamed(),
        interface: record::unnamed(),
        direction: Direction::Ingress,
    };
    Ok(Layers::of(link, frame)?.row(meta, apps, origin))
}

/// The columns a frame's bytes do not give: set by the decode stage.
#[derive(Debug, Clone)]
pub struct Origin {
    pub host: Arc<str>,
    pub interface: Arc<str>,
    pub direction: Direction,
}

/// [`decode_link`], the row made in place at the end of `out`, with `origin`'s host,
/// interface and direction (no row moved, no empty names made and dropped); returns it.
pub fn decode_onto<'r>(
    link: Link,
    frame: &[u8],
    meta: FrameMeta,
    apps: &Applications,
    origin: Origin,
    out: &'r mut Vec<PacketRecord>,
) -> Result<&'r mut PacketRecord, DecodeError> {
    let layers = Layers::of(link, frame)?;
    let at = out.len();
    out.push(layers.row(meta, apps, origin));
    Ok(&mut out[at])
}

/// A frame's layers, sliced.
struct Layers<'a> {
    head: link::LinkHeader<'a>,
    l2: l2::L2<'a>,
    ip: IpFields<'a>,
}

impl<'a> Layers<'a> {
    fn of(link: Link, frame: &'a [u8]) -> Result<Self, DecodeError> {
        let head = link::header(link, frame)?;
        let l2 = l2::walk(head.ether_type, head.payload);
        let ip = l2
            .net
            .map_or_else(IpFields::default, |(t, bytes)| IpFields::sliced(t, bytes));
        Ok(Self { head, l2, ip })
    }

    /// The row, written as one value (where it is to be kept, when inlined there).
    #[inline(always)]
    fn row(self, meta: FrameMeta, apps: &Applications, origin: Origin) -> PacketRecord {
        let Self { head, l2, ip } = self;
        let inner = ip.tunnel.and_then(|(_, payload)| payload.decode());
        PacketRecord {
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
            host: origin.host,
            interface: origin.interface,
            direction: origin.direction,
            workload: record::Workload::default(),
        }
    }
}

/// A UDP datagram or TCP segment: its addresses, ports and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: (std::net::IpAddr, u16),
    pub dst: (std::net::IpAddr, u16),
    /// 17 (UDP) or 6 (TCP).
    pub protocol: u8,
    pub payload: &'a [u8],
}

/// The UDP datagram or TCP segment a frame carries, whole headers included: what the DNS
/// transactions read. None for other frames and later fragments.
pub fn segment(link: Link, frame: &[u8]) -> Option<Segment<'_>> {
    let head = link::header(link, frame).ok()?;
    let (ether_type, bytes) = l2::walk(head.ether_type, head.payload).net?;
    let packet = LaxSlicedPacket::from_ether_type(ether_type, bytes);
    let (src, dst): (std::net::IpAddr, std::net::IpAddr) = match packet.net.as_ref()? {
        LaxNetSlice::Ipv4(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        LaxNetSlice::Ipv6(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        LaxNetSlice::Arp(_) => return None,
    };
    let (protocol, ports, payload) = match packet.transport.as_ref()? {
        TransportSlice::Udp(u) => (17, (u.source_port(), u.destination_port()), u.payload()),
        TransportSlice::Tcp(t) => (6, (t.source_port(), t.destination_port()), t.payload()),
        _ => return None,
    };
    Some(Segment {
        src: (src, ports.0),
        dst: (dst, ports.1),
        protocol,
        payload,
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
