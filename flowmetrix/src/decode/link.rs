//! The link layers a frame may start with (the pcap link types replayed), and their headers.

use crate::record::MacAddr;

/// A frame without a whole link header: the one thing decoding refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}-byte sample is shorter than an Ethernet header")]
    TooShort(usize),
    #[error("{len}-byte sample is shorter than a {} header", .link.name())]
    ShortLink { len: usize, link: Link },
}

/// The link layer a frame starts with. Live capture is always Ethernet; a pcap file says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Link {
    #[default]
    Ethernet,
    /// Linux cooked capture (`tcpdump -i any` before libpcap 1.10).
    LinuxSll,
    /// Linux cooked capture v2 (`tcpdump -i any` since libpcap 1.10).
    LinuxSll2,
    /// Raw IP: IPv4 or IPv6 by the version nibble.
    RawIp,
    RawIpv4,
    RawIpv6,
    /// BSD loopback: the address family as a 4-byte word in the capturing host's order.
    Null,
    /// OpenBSD loopback: the address family as a 4-byte word in network order.
    Loop,
}

impl Link {
    /// Every link type, for tests and the fuzz targets.
    pub const ALL: [Self; 8] = [
        Self::Ethernet,
        Self::LinuxSll,
        Self::LinuxSll2,
        Self::RawIp,
        Self::RawIpv4,
        Self::RawIpv6,
        Self::Null,
        Self::Loop,
    ];

    /// By pcap link type (`LINKTYPE_*`, the lower 16 bits of the file's field).
    pub fn from_linktype(linktype: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.linktype() == linktype)
    }

    /// Its pcap link type number.
    pub const fn linktype(self) -> u16 {
        match self {
            Self::Ethernet => 1,
            Self::LinuxSll => 113,
            Self::LinuxSll2 => 276,
            Self::RawIp => 101,
            Self::RawIpv4 => 228,
            Self::RawIpv6 => 229,
            Self::Null => 0,
            Self::Loop => 108,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Ethernet => "Ethernet",
            Self::LinuxSll => "Linux cooked capture",
            Self::LinuxSll2 => "Linux cooked capture v2",
            Self::RawIp => "raw IP",
            Self::RawIpv4 => "raw IPv4",
            Self::RawIpv6 => "raw IPv6",
            Self::Null => "BSD loopback",
            Self::Loop => "OpenBSD loopback",
        }
    }

    /// Bytes of its header before the network packet (or EtherType payload).
    pub const fn header_len(self) -> usize {
        match self {
            Self::Ethernet => ETHERNET,
            Self::LinuxSll => SLL,
            Self::LinuxSll2 => SLL2,
            Self::RawIp | Self::RawIpv4 | Self::RawIpv6 => 0,
            Self::Null | Self::Loop => 4,
        }
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (link type {})", self.name(), self.linktype())
    }
}

const ETHERNET: usize = 14;
const SLL: usize = 16;
const SLL2: usize = 20;

/// What a link header says: the addresses it has, and the EtherType of what follows.
#[derive(Debug, Clone, Copy)]
pub(super) struct LinkHeader<'a> {
    pub src_mac: Option<MacAddr>,
    pub dst_mac: Option<MacAddr>,
    /// EtherType (or, for a cooked capture, the protocol field, which may be one of Linux's
    /// non-EtherType values below 0x0600); 0 when the link type names no known protocol.
    pub ether_type: u16,
    pub payload: &'a [u8],
}

const IPV4: u16 = 0x0800;
const IPV6: u16 = 0x86dd;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn mac(b: &[u8], at: usize) -> Option<MacAddr> {
    let bytes: [u8; 6] = b.get(at..at + 6)?.try_into().ok()?;
    Some(MacAddr(bytes))
}

/// A cooked capture's link-layer address: the sender's MAC when it has 6 bytes.
fn cooked_mac(len: Option<u16>, b: &[u8], at: usize) -> Option<MacAddr> {
    (len == Some(6)).then(|| mac(b, at)).flatten()
}

/// EtherType for a BSD address family (AF_INET; AF_INET6 of Linux, NetBSD/OpenBSD, FreeBSD
/// and macOS).
fn family(af: u32) -> u16 {
    match af {
        2 => IPV4,
        10 | 24 | 28 | 30 => IPV6,
        _ => 0,
    }
}

/// Splits off the link header; an error when the frame cannot hold it.
pub(super) fn header(link: Link, frame: &[u8]) -> Result<LinkHeader<'_>, DecodeError> {
    let short = || {
        if link == Link::Ethernet {
            DecodeError::TooShort(frame.len())
        } else {
            DecodeError::ShortLink {
                len: frame.len(),
                link,
            }
        }
    };
    // Raw IP needs its version nibble.
    let need = link.header_len().max(1);
    let payload = frame
        .get(link.header_len()..)
        .filter(|_| frame.len() >= need);
    let payload = payload.ok_or_else(short)?;
    let mut h = LinkHeader {
        src_mac: None,
        dst_mac: None,
        ether_type: 0,
        payload,
    };
    match link {
        Link::Ethernet => {
            h.dst_mac = mac(frame, 0);
            h.src_mac = mac(frame, 6);
            h.ether_type = be16(frame, 12).ok_or_else(short)?;
        }
        // Packet type (2), ARPHRD type (2), address length (2), address (8), protocol (2).
        Link::LinuxSll => {
            h.src_mac = cooked_mac(be16(frame, 4), frame, 6);
            h.ether_type = be16(frame, 14).ok_or_else(short)?;
        }
        // Protocol (2), reserved (2), ifindex (4), ARPHRD type (2), packet type (1),
        // address length (1), address (8).
        Link::LinuxSll2 => {
            h.src_mac = cooked_mac(frame.get(11).map(|&l| u16::from(l)), frame, 12);
            h.ether_type = be16(frame, 0).ok_or_else(short)?;
        }
        Link::RawIp => {
            h.ether_type = match frame.first().map(|b| b >> 4) {
                Some(4) => IPV4,
                Some(6) => IPV6,
                _ => 0,
            };
        }
        Link::RawIpv4 => h.ether_type = IPV4,
        Link::RawIpv6 => h.ether_type = IPV6,
        Link::Null => {
            let word: [u8; 4] = frame
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(short)?;
            // Written in the capturing host's order: a family is small, so a word whose low
            // bytes come last is big-endian.
            let af = if word[0] == 0 && word[1] == 0 {
                u32::from_be_bytes(word)
            } else {
                u32::from_le_bytes(word)
            };
            h.ether_type = family(af);
        }
        Link::Loop => {
            let word: [u8; 4] = frame
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(short)?;
            h.ether_type = family(u32::from_be_bytes(word));
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_types_round_trip_and_unknown_ones_are_none() {
        for l in Link::ALL {
            assert_eq!(Link::from_linktype(l.linktype()), Some(l));
        }
        assert_eq!(Link::from_linktype(105), None); // 802.11
        assert_eq!(Link::from_linktype(u16::MAX), None);
        assert_eq!(
            Link::LinuxSll2.to_string(),
            "Linux cooked capture v2 (link type 276)"
        );
    }

    #[test]
    fn every_header_is_bounds_checked() {
        for link in Link::ALL {
            let need = link.header_len().max(1);
            for len in 0..need {
                let frame = vec![0x45; len];
                assert!(header(link, &frame).is_err(), "{link} with {len} bytes");
            }
            assert!(header(link, &vec![0x45; need]).is_ok(), "{link}");
        }
    }

    #[test]
    fn null_takes_either_byte_order() {
        let le = header(Link::Null, &[2, 0, 0, 0]).unwrap();
        let be = header(Link::Null, &[0, 0, 0, 30]).unwrap();
        assert_eq!((le.ether_type, be.ether_type), (IPV4, IPV6));
        assert_eq!(header(Link::Null, &[7, 0, 0, 0]).unwrap().ether_type, 0);
        assert_eq!(header(Link::Loop, &[0, 0, 0, 24]).unwrap().ether_type, IPV6);
        // OpenBSD's loopback is network order only: a little-endian word is no family.
        assert_eq!(header(Link::Loop, &[2, 0, 0, 0]).unwrap().ether_type, 0);
    }

    #[test]
    fn cooked_addresses_other_than_six_bytes_are_no_mac() {
        let mut sll = [0u8; 16];
        sll[4..6].copy_from_slice(&8u16.to_be_bytes()); // an 8-byte (e.g. FireWire) address
        sll[6..14].copy_from_slice(&[1; 8]);
        sll[14..16].copy_from_slice(&IPV4.to_be_bytes());
        let h = header(Link::LinuxSll, &sll).unwrap();
        assert_eq!((h.src_mac, h.dst_mac, h.ether_type), (None, None, IPV4));
    }
}
