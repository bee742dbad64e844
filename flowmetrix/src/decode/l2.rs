//! From the link header's EtherType to the network packet: VLAN tags, MPLS label stacks
//! (with an Ethernet pseudowire behind a control word), PPPoE sessions and MACsec.
//!
//! Every step is bounded (at most [`MAX_VLAN_TAGS`] tags, [`MplsLabels::MAX`] labels, one
//! MPLS stack, one MACsec tag) and checks each length before it reads.

use etherparse::EtherType;

use crate::record::MplsLabels;

/// What lies between the link header and the network packet.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct L2<'a> {
    /// The EtherType after the outer VLAN tags (`ether_type` column).
    pub ether_type: u16,
    /// The outermost VLAN id.
    pub vlan_id: Option<u16>,
    pub mpls_labels: Option<MplsLabels>,
    /// The network packet found: IPv4, IPv6 or ARP, and its bytes.
    pub net: Option<(EtherType, &'a [u8])>,
}

/// Outer VLAN tags walked (as etherparse's own limit was): 802.1Q, 802.1ad, QinQ 0x9100.
pub(super) const MAX_VLAN_TAGS: usize = 3;
/// VLAN tags skipped inside MACsec or a pseudowire.
const MAX_INNER_VLAN_TAGS: usize = 2;

pub(super) const MPLS_UNICAST: u16 = 0x8847;
pub(super) const MPLS_MULTICAST: u16 = 0x8848;
pub(super) const PPPOE_SESSION: u16 = 0x8864;
pub(super) const MACSEC: u16 = 0x88e5;
const ETHERNET_HEADER: usize = 14;
const PW_CONTROL_WORD: usize = 4;

fn is_vlan(ether_type: u16) -> bool {
    matches!(ether_type, 0x8100 | 0x88a8 | 0x9100)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// One VLAN tag: its id, the EtherType after it and the rest; `None` when cut short.
fn vlan(b: &[u8]) -> Option<(u16, u16, &[u8])> {
    let tci = be16(b, 0)?;
    let next = be16(b, 2)?;
    Some((tci & 0x0fff, next, b.get(4..)?))
}

fn is_network(ether_type: u16) -> bool {
    matches!(
        EtherType(ether_type),
        EtherType::IPV4 | EtherType::IPV6 | EtherType::ARP
    )
}

/// Walks what follows a link header with this EtherType.
pub(super) fn walk(mut ether_type: u16, mut bytes: &[u8]) -> L2<'_> {
    let mut l2 = L2::default();
    for _ in 0..MAX_VLAN_TAGS {
        if !is_vlan(ether_type) {
            break;
        }
        // A tag cut short leaves its TPID as the EtherType.
        let Some((id, next, rest)) = vlan(bytes) else {
            break;
        };
        l2.vlan_id.get_or_insert(id);
        (ether_type, bytes) = (next, rest);
    }
    l2.ether_type = ether_type;
    l2.net = match ether_type {
        t if is_network(t) => Some((EtherType(t), bytes)),
        MPLS_UNICAST | MPLS_MULTICAST => {
            let (labels, net) = mpls(bytes);
            l2.mpls_labels = Some(labels);
            net
        }
        PPPOE_SESSION => pppoe(bytes),
        MACSEC => macsec(bytes).and_then(|(t, b)| plain(t, b)),
        _ => None,
    };
    l2
}

/// Inside MACsec or a pseudowire: VLAN tags skipped, then IPv4, IPv6 or ARP.
fn plain(mut ether_type: u16, mut bytes: &[u8]) -> Option<(EtherType, &[u8])> {
    for _ in 0..MAX_INNER_VLAN_TAGS {
        if !is_vlan(ether_type) {
            break;
        }
        let (_, next, rest) = vlan(bytes)?;
        (ether_type, bytes) = (next, rest);
    }
    is_network(ether_type).then_some((EtherType(ether_type), bytes))
}

/// An MPLS label stack (RFC 3032): 4-byte entries (label 20 bits, TC 3, bottom of stack 1,
/// TTL 8) to the one with the bottom-of-stack bit, then IPv4 or IPv6 by the first nibble,
/// or a pseudowire control word (first nibble 0, RFC 4385) and an Ethernet frame (RFC 4448).
/// The labels seen are kept even when the stack is cut short or deeper than
/// [`MplsLabels::MAX`]; then nothing under it is decoded.
fn mpls(mut bytes: &[u8]) -> (MplsLabels, Option<(EtherType, &[u8])>) {
    let mut labels = MplsLabels::default();
    loop {
        let Some(entry) = bytes.get(..4).and_then(|e| <[u8; 4]>::try_from(e).ok()) else {
            return (labels, None);
        };
        let word = u32::from_be_bytes(entry);
        if !labels.push(word >> 12) {
            return (labels, None);
        }
        bytes = bytes.get(4..).unwrap_or_default();
        if word & 0x100 != 0 {
            break;
        }
        if labels.is_full() {
            return (labels, None);
        }
    }
    let net = match bytes.first().map(|b| b >> 4) {
        Some(4) => Some((EtherType::IPV4, bytes)),
        Some(6) => Some((EtherType::IPV6, bytes)),
        Some(0) => bytes
            .get(PW_CONTROL_WORD..)
            .and_then(|frame| Some((be16(frame, 12)?, frame.get(ETHERNET_HEADER..)?)))
            .and_then(|(t, b)| plain(t, b)),
        _ => None,
    };
    (labels, net)
}

/// A PPPoE session packet (RFC 2516): version/type 0x11, code 0, session id, length, then
/// a PPP frame whose protocol is IPv4 (0x0021) or IPv6 (0x0057).
fn pppoe(bytes: &[u8]) -> Option<(EtherType, &[u8])> {
    const HEADER: usize = 6;
    const PPP_PROTOCOL: usize = 2;
    if bytes.first() != Some(&0x11) || bytes.get(1) != Some(&0) {
        return None;
    }
    // The length counts the PPP frame; bytes beyond it are Ethernet padding.
    let len = usize::from(be16(bytes, 4)?);
    let end = (HEADER + len).min(bytes.len());
    let payload = bytes.get(HEADER + PPP_PROTOCOL..end)?;
    match be16(bytes, HEADER)? {
        0x0021 => Some((EtherType::IPV4, payload)),
        0x0057 => Some((EtherType::IPV6, payload)),
        _ => None,
    }
}

/// A MACsec SecTAG (IEEE 802.1AE): TCI/AN, short length, packet number, and an 8-byte SCI
/// when the SC bit is set. Only a frame neither encrypted (E) nor changed (C) — integrity
/// only — has readable contents: the original EtherType and payload, then the ICV, which the
/// IP length leaves out. Returns that EtherType and payload.
fn macsec(bytes: &[u8]) -> Option<(u16, &[u8])> {
    const VERSION: u8 = 0x80;
    const SC: u8 = 0x20;
    const E_AND_C: u8 = 0x0c;
    let tci = *bytes.first()?;
    let short_len = usize::from(*bytes.get(1)? & 0x3f);
    if tci & (VERSION | E_AND_C) != 0 {
        return None;
    }
    let header = if tci & SC != 0 { 14 } else { 6 };
    let mut data = bytes.get(header..)?;
    // A non-zero short length is the secure data's length (under 48 bytes): the rest is
    // the ICV and padding.
    if short_len != 0 {
        data = data.get(..short_len.min(data.len()))?;
    }
    Some((be16(data, 0)?, data.get(2..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An MPLS stack entry.
    pub(crate) fn label(label: u32, bottom: bool) -> [u8; 4] {
        ((label << 12) | (u32::from(bottom) << 8) | 64).to_be_bytes()
    }

    #[test]
    fn vlan_tags_then_the_ether_type() {
        let b = [0x00, 0x64, 0x08, 0x00, 0x45];
        let l2 = walk(0x8100, &b);
        assert_eq!((l2.vlan_id, l2.ether_type), (Some(100), 0x0800));
        assert_eq!(l2.net, Some((EtherType::IPV4, &b[4..])));
        // Cut inside the tag: the TPID stays the EtherType.
        let l2 = walk(0x8100, &b[..3]);
        assert_eq!((l2.vlan_id, l2.ether_type, l2.net), (None, 0x8100, None));
    }

    #[test]
    fn more_vlan_tags_than_walked_leave_a_tpid() {
        let tag = [0x00, 0x05, 0x81, 0x00];
        let b: Vec<u8> = tag.iter().copied().cycle().take(4 * 10).collect();
        let l2 = walk(0x8100, &b);
        assert_eq!((l2.vlan_id, l2.ether_type, l2.net), (Some(5), 0x8100, None));
    }

    #[test]
    fn mpls_stack_walk_is_bounded() {
        // Cut inside the second entry: the first label kept.
        let b = [&label(100, false)[..], &[0, 1]].concat();
        let (labels, net) = mpls(&b);
        assert_eq!((labels.as_slice(), net), (&[100][..], None));
        // No bottom of stack in MAX labels: those kept, nothing decoded.
        let b: Vec<u8> = (0..20).flat_map(|i| label(i, false)).collect();
        let (labels, net) = mpls(&b);
        assert_eq!((labels.as_slice().len(), net), (MplsLabels::MAX, None));
        // Bottom of stack at MAX: decoded.
        let mut b: Vec<u8> = (0..7).flat_map(|i| label(i, false)).collect();
        b.extend(label(7, true));
        b.push(0x45);
        let (labels, net) = mpls(&b);
        assert_eq!(labels.to_string(), "0/1/2/3/4/5/6/7");
        assert_eq!(net, Some((EtherType::IPV4, &[0x45][..])));
        // Empty, an unknown first nibble, a control word with a cut Ethernet header.
        assert_eq!(mpls(&[]).0.as_slice(), &[] as &[u32]);
        assert_eq!(mpls(&[&label(3, true)[..], &[0x10]].concat()).1, None);
        assert_eq!(mpls(&[&label(3, true)[..], &[0; 4 + 13]].concat()).1, None);
    }

    #[test]
    fn pppoe_bounds() {
        assert_eq!(pppoe(&[]), None);
        assert_eq!(pppoe(&[0x11, 0, 0, 1, 0, 2, 0x00]), None, "cut protocol");
        assert_eq!(pppoe(&[0x11, 0, 0, 1, 0, 1, 0x00, 0x21]), None, "length 1");
        assert_eq!(
            pppoe(&[0x11, 0, 0, 1, 0, 2, 0x00, 0x21]),
            Some((EtherType::IPV4, &[][..]))
        );
        assert_eq!(
            pppoe(&[0x11, 9, 0, 1, 0, 2, 0x00, 0x21]),
            None,
            "discovery code"
        );
        assert_eq!(pppoe(&[0x11, 0, 0, 1, 0, 4, 0xc0, 0x21, 1, 2]), None, "LCP");
        // Padding beyond the length is cut off; a length beyond the sample is not trusted.
        let b = [0x11, 0, 0, 1, 0, 3, 0x00, 0x57, 0x60, 0xee];
        assert_eq!(pppoe(&b), Some((EtherType::IPV6, &[0x60][..])));
        let b = [0x11, 0, 0, 1, 0xff, 0xff, 0x00, 0x57, 0x60];
        assert_eq!(pppoe(&b), Some((EtherType::IPV6, &[0x60][..])));
    }

    #[test]
    fn macsec_bounds_and_flags() {
        assert_eq!(macsec(&[]), None);
        assert_eq!(macsec(&[0x00]), None);
        assert_eq!(macsec(&[0, 0, 0, 0, 0, 1, 0x08]), None, "cut EtherType");
        let plain = [0, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45];
        assert_eq!(macsec(&plain), Some((0x0800, &[0x45][..])));
        for tci in [0x0c, 0x08, 0x04, 0x80] {
            let mut b = plain;
            b[0] = tci;
            assert_eq!(macsec(&b), None, "TCI {tci:#x}");
        }
        // With an SCI: 8 more header bytes.
        let sci = [&[0x20, 0, 0, 0, 0, 1][..], &[9; 8], &[0x86, 0xdd, 0x60]].concat();
        assert_eq!(macsec(&sci), Some((0x86dd, &[0x60][..])));
        assert_eq!(macsec(&sci[..15]), None);
        // A short length of 3: EtherType and one byte, the rest is the ICV.
        let b = [0, 3, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0xaa, 0xbb];
        assert_eq!(macsec(&b), Some((0x0800, &[0x45][..])));
        let b = [0, 1, 0, 0, 0, 1, 0x08, 0x00, 0x45];
        assert_eq!(macsec(&b), None, "short length too small for an EtherType");
    }
}
