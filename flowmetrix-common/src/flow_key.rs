//! Flows (`--mode flows|both`): the key every packet is counted under, the counters kept
//! for it, and the one parser that builds the key — run by the kernel programs on every
//! packet and by the collector on pcap frames, so both sides key a frame the same way.
//!
//! The rules, which the parser below implements:
//! - after the fixed prefix (`-offset`), an Ethernet II header, then up to two VLAN tags
//!   (0x8100 or 0x88a8): `vlan_id` is the outer tag's 12-bit id (0 without a tag),
//!   `ether_type` the type after the tags;
//! - IPv4 (version 4, IHL ≥ 5): addresses, protocol; ports only on first fragments
//!   (fragment offset 0);
//! - IPv6: the fixed header, then at most [`IPV6_EXT_MAX`] extension headers (hop-by-hop,
//!   routing, destination options, fragment, AH); a non-first fragment has no ports; the
//!   protocol is the first header that is not one of these (or the last one walked);
//! - TCP and UDP: ports (and TCP's flags byte); ICMP and ICMPv6: type in `src_port`, code
//!   in `dst_port`; other protocols: ports 0;
//! - ARP: the sender and target protocol addresses when they are IPv4 (protocol type
//!   0x0800, length 4; any hardware address length), as the packet row gives them, stored
//!   as IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`): an ARP key without them stays all
//!   zero, and an ARP probe's sender 0.0.0.0 is told apart from none. Protocol and ports 0;
//! - other EtherTypes: keyed by `ether_type` (and VLAN) alone, addresses 0.
//!
//! A frame is not keyed ([`parse`] gives `None`) when it is shorter than the prefix and an
//! Ethernet header, or its IP header is cut short or malformed. Those are counted apart
//! (packets and bytes). A transport header cut short leaves the ports 0.

/// Name of the two flow hash maps ([`FlowKey`] → [`FlowValue`]); the active one is
/// `FLOW_MAPS[generation & 1]` ([`FLOW_CFG_GENERATION`]).
pub const FLOW_MAPS: [&str; 2] = ["FLOWS0", "FLOWS1"];
/// Name of the config array (u32 entries) the programs read and userspace writes.
pub const FLOW_CONFIG_MAP: &str = "FLOWCFG";
/// [`FLOW_CONFIG_MAP`] index: the current generation. Programs count into
/// `FLOW_MAPS[generation & 1]` and tag ring events with the generation.
pub const FLOW_CFG_GENERATION: u32 = 0;
/// [`FLOW_CONFIG_MAP`] index: the prefix length before the Ethernet header, or
/// [`PREFIX_UNKNOWN`] while `-auto-detect` has not learned it (packets are then counted as
/// not keyed).
pub const FLOW_CFG_PREFIX: u32 = 1;
/// Entries of [`FLOW_CONFIG_MAP`].
pub const FLOW_CFG_ENTRIES: u32 = 2;
/// The prefix is not known yet.
pub const PREFIX_UNKNOWN: u32 = u32::MAX;
/// Largest prefix the kernel honours (a larger one keys nothing).
pub const MAX_PREFIX: u32 = 64;
/// Name of the ring buffer of [`FlowEvent`]s: packets the full flow map could not take.
pub const FLOW_EVENTS_MAP: &str = "FLOWEVENTS";
/// Name of the global holding the mode bits ([`MODE_PACKETS`], [`MODE_FLOWS`]), set at load.
pub const MODE_GLOBAL: &str = "MODE";
/// Mode bit: sample packets into the `SAMPLES` ring.
pub const MODE_PACKETS: u32 = 1;
/// Mode bit: count every packet in the flow maps.
pub const MODE_FLOWS: u32 = 2;
/// Default `--flow-max-entries` (per map; there are two).
pub const DEFAULT_FLOW_MAX_ENTRIES: u32 = 65_536;
/// IPv6 extension headers walked at most.
pub const IPV6_EXT_MAX: usize = 4;
/// Transport headers further into the frame than this are not read (ports 0): keeps every
/// offset the kernel computes provably small.
pub const MAX_L4_OFFSET: usize = 512;

/// What a flow is counted under. Addresses are in network order, IPv4 in the first four
/// bytes (the rest zero), ARP's as IPv4-mapped IPv6 addresses (module rules); ports in host
/// order. Every byte is set (no implicit padding), so
/// the kernel's hash sees no garbage: start from [`FlowKey::ZERO`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub ifindex: u32,
    /// Outer VLAN id, 0 without a tag.
    pub vlan_id: u16,
    pub ether_type: u16,
    /// TCP/UDP source port, ICMP type.
    pub src_port: u16,
    /// TCP/UDP destination port, ICMP code.
    pub dst_port: u16,
    /// A [`crate::Direction`] as its value.
    pub direction: u8,
    /// IP protocol number (0 for non-IP).
    pub protocol: u8,
    pub _pad: [u8; 2],
}

impl FlowKey {
    pub const ZERO: Self = Self {
        src_addr: [0; 16],
        dst_addr: [0; 16],
        ifindex: 0,
        vlan_id: 0,
        ether_type: 0,
        src_port: 0,
        dst_port: 0,
        direction: 0,
        protocol: 0,
        _pad: [0; 2],
    };
}

/// A flow's counters in the kernel map. `packets`, `bytes` and `tcp_flags` are updated with
/// atomic adds and ors from every CPU; `last_seen_ns` is a plain store (the latest writer
/// wins; CPUs may store out of order by the time of one packet).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub packets: u64,
    /// Wire lengths (less the prefix), summed.
    pub bytes: u64,
    /// `bpf_ktime_get_boot_ns()` of the packet that created the entry.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// OR of the TCP flags bytes seen (u64 for the kernel's 64-bit atomic or).
    pub tcp_flags: u64,
    /// TC egress: the cgroup v2 id of the socket of the last packet counted (a plain store,
    /// as `last_seen_ns`); 0: no socket, or not egress.
    pub cgroup_id: u64,
}

/// One packet the flow map had no room for, sent to userspace through
/// [`FLOW_EVENTS_MAP`]; userspace adds it to the interval of its `generation`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEvent {
    pub key: FlowKey,
    pub ts_boot_ns: u64,
    /// Wire length less the prefix.
    pub bytes: u32,
    pub generation: u32,
    pub tcp_flags: u8,
    pub _pad: [u8; 7],
}

/// Where the parser reads frame bytes: a slice in userspace, the packet itself in the
/// kernel (direct packet access, bounds-checked against its end).
pub trait Frame {
    /// The `N` bytes at `off`, or `None` when the frame ends before `off + N`.
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
}

impl Frame for [u8] {
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let end = off.checked_add(N)?;
        let s = self.get(off..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Some(out)
    }
}

const ETH_HEADER: usize = 14;
const VLAN_TAG: usize = 4;
const VLAN_TAGS_MAX: usize = 2;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Bytes 10 and 11 of an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), how a key holds an
/// ARP packet's IPv4 addresses.
pub const IPV4_MAPPED: [u8; 2] = [0xff, 0xff];
/// ARP's fixed header: hardware type, protocol type, their lengths, operation.
const ARP_HEADER: usize = 8;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Keys an Ethernet frame that starts after `prefix` bytes: fills every field of `key`
/// but `ifindex` and `direction` (the caller's) and gives the TCP flags byte (0 for
/// others). `None`: not keyed (see the module rules).
#[inline(always)]
pub fn parse<F: Frame + ?Sized>(f: &F, prefix: usize, key: &mut FlowKey) -> Option<u8> {
    let mut off = prefix;
    let mut ether_type = be16(f.bytes::<2>(off + 12)?);
    // The whole Ethernet header must be there, even for a frame that ends in it.
    f.bytes::<1>(off + ETH_HEADER - 1)?;
    off += ETH_HEADER;
    let mut tags = 0;
    while tags < VLAN_TAGS_MAX && (ether_type == ETHERTYPE_VLAN || ether_type == ETHERTYPE_QINQ) {
        let tag = f.bytes::<4>(off)?;
        if tags == 0 {
            key.vlan_id = be16([tag[0], tag[1]]) & 0x0fff;
        }
        ether_type = be16([tag[2], tag[3]]);
        off += VLAN_TAG;
        tags += 1;
    }
    key.ether_type = ether_type;
    parse_ip(f, off, ether_type, key)
}

/// Keys what follows the link layer: `off` is where the network header starts and
/// `ether_type` says what it is (for link types without Ethernet, e.g. raw IP in a pcap).
/// Sets addresses, protocol and ports of `key`; not `ether_type` or `vlan_id`.
#[inline(always)]
pub fn parse_ip<F: Frame + ?Sized>(
    f: &F,
    off: usize,
    ether_type: u16,
    key: &mut FlowKey,
) -> Option<u8> {
    let (l4, protocol) = match ether_type {
        ETHERTYPE_IPV4 => {
            let h = f.bytes::<20>(off)?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            if h[0] >> 4 != 4 || ihl < 20 {
                return None;
            }
            // Options, if any, must be there too.
            f.bytes::<1>(off + ihl - 1)?;
            key.src_addr[..4].copy_from_slice(&h[12..16]);
            key.dst_addr[..4].copy_from_slice(&h[16..20]);
            key.protocol = h[9];
            let first_fragment = be16([h[6], h[7]]) & 0x1fff == 0;
            (first_fragment.then_some(off + ihl), h[9])
        }
        ETHERTYPE_IPV6 => {
            let h = f.bytes::<40>(off)?;
            if h[0] >> 4 != 6 {
                return None;
            }
            key.src_addr.copy_from_slice(&h[8..24]);
            key.dst_addr.copy_from_slice(&h[24..40]);
            let (l4, next) = ipv6_extensions(f, off + 40, h[6]);
            key.protocol = next;
            (l4, next)
        }
        ETHERTYPE_ARP => {
            arp(f, off, key);
            return Some(0);
        }
        _ => return Some(0),
    };
    let Some(l4) = l4 else { return Some(0) };
    if l4 > MAX_L4_OFFSET {
        return Some(0);
    }
    match protocol {
        PROTO_TCP => {
            let Some(t) = f.bytes::<14>(l4) else {
                return Some(0);
            };
            key.src_port = be16([t[0], t[1]]);
            key.dst_port = be16([t[2], t[3]]);
            Some(t[13])
        }
        PROTO_UDP => {
            if let Some(u) = f.bytes::<4>(l4) {
                key.src_port = be16([u[0], u[1]]);
                key.dst_port = be16([u[2], u[3]]);
            }
            Some(0)
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            if let Some(i) = f.bytes::<2>(l4) {
                key.src_port = u16::from(i[0]);
                key.dst_port = u16::from(i[1]);
            }
            Some(0)
        }
        _ => Some(0),
    }
}

/// An ARP packet's IPv4 sender and target addresses into `key` (module rules); nothing when
/// it is not about IPv4 or is cut short.
#[inline(always)]
fn arp<F: Frame + ?Sized>(f: &F, off: usize, key: &mut FlowKey) {
    let Some(h) = f.bytes::<ARP_HEADER>(off) else {
        return;
    };
    if be16([h[2], h[3]]) != ETHERTYPE_IPV4 || h[5] != 4 {
        return;
    }
    // Sender hardware address, sender IPv4, target hardware address, target IPv4.
    let hlen = usize::from(h[4]);
    let spa = off + ARP_HEADER + hlen;
    let (Some(src), Some(dst)) = (f.bytes::<4>(spa), f.bytes::<4>(spa + 4 + hlen)) else {
        return;
    };
    key.src_addr[10..12].copy_from_slice(&IPV4_MAPPED);
    key.src_addr[12..].copy_from_slice(&src);
    key.dst_addr[10..12].copy_from_slice(&IPV4_MAPPED);
    key.dst_addr[12..].copy_from_slice(&dst);
}

/// Walks IPv6 extension headers from `off` (`next`: the fixed header's next header). Gives
/// where the transport header starts (`None`: a non-first fragment, a header cut short, or
/// more extension headers than [`IPV6_EXT_MAX`]) and the protocol.
#[inline(always)]
fn ipv6_extensions<F: Frame + ?Sized>(f: &F, mut off: usize, mut next: u8) -> (Option<usize>, u8) {
    let mut walked = 0;
    while walked < IPV6_EXT_MAX {
        let len = match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                let Some(e) = f.bytes::<2>(off) else {
                    return (None, next);
                };
                (usize::from(e[1]) + 1) * 8
            }
            IPV6_FRAGMENT => {
                let Some(e) = f.bytes::<4>(off) else {
                    return (None, next);
                };
                if be16([e[2], e[3]]) >> 3 != 0 {
                    return (None, e[0]);
                }
                8
            }
            IPV6_AH => {
                let Some(e) = f.bytes::<2>(off) else {
                    return (None, next);
                };
                (usize::from(e[1]) + 2) * 4
            }
            _ => return (Some(off), next),
        };
        // `next` becomes the header this one points at (first byte of every extension).
        let Some([n]) = f.bytes::<1>(off) else {
            return (None, next);
        };
        next = n;
        off += len;
        if off > MAX_L4_OFFSET {
            return (None, next);
        }
        walked += 1;
    }
    match next {
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_FRAGMENT | IPV6_AH => (None, next),
        _ => (Some(off), next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_are_fixed_and_unpadded() {
        assert_eq!(size_of::<FlowKey>(), 48);
        assert_eq!(offset_of!(FlowKey, dst_addr), 16);
        assert_eq!(offset_of!(FlowKey, ifindex), 32);
        assert_eq!(offset_of!(FlowKey, vlan_id), 36);
        assert_eq!(offset_of!(FlowKey, ether_type), 38);
        assert_eq!(offset_of!(FlowKey, src_port), 40);
        assert_eq!(offset_of!(FlowKey, dst_port), 42);
        assert_eq!(offset_of!(FlowKey, direction), 44);
        assert_eq!(offset_of!(FlowKey, protocol), 45);
        assert_eq!(offset_of!(FlowKey, _pad), 46);
        assert_eq!(size_of::<FlowValue>(), 48);
        assert_eq!(size_of::<FlowEvent>(), 72);
        assert_eq!(offset_of!(FlowEvent, ts_boot_ns), 48);
        assert_eq!(offset_of!(FlowEvent, bytes), 56);
        assert_eq!(offset_of!(FlowEvent, generation), 60);
        assert_eq!(offset_of!(FlowEvent, tcp_flags), 64);
    }

    fn eth(ether_type: u16, tags: &[(u16, u16)]) -> [u8; 64] {
        let mut f = [0u8; 64];
        let mut off = 12;
        for &(tpid, vid) in tags {
            f[off..off + 2].copy_from_slice(&tpid.to_be_bytes());
            f[off + 2..off + 4].copy_from_slice(&vid.to_be_bytes());
            off += 4;
        }
        f[off..off + 2].copy_from_slice(&ether_type.to_be_bytes());
        f
    }

    fn ipv4_udp(frag: u16) -> [u8; 64] {
        let mut f = eth(ETHERTYPE_IPV4, &[]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[9] = PROTO_UDP;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        f[34..38].copy_from_slice(&[0x30, 0x39, 0x00, 0x35]);
        f
    }

    fn key_of(f: &[u8], prefix: usize) -> Option<(FlowKey, u8)> {
        let mut k = FlowKey::ZERO;
        parse(f, prefix, &mut k).map(|flags| (k, flags))
    }

    #[test]
    fn ipv4_udp_first_and_later_fragments() {
        let (k, flags) = key_of(&ipv4_udp(0), 0).unwrap();
        assert_eq!(&k.src_addr[..4], &[10, 0, 0, 1]);
        assert_eq!(&k.dst_addr[..4], &[10, 0, 0, 2]);
        assert_eq!(k.src_addr[4..], [0; 12]);
        assert_eq!(
            (k.ether_type, k.protocol, k.src_port, k.dst_port),
            (0x0800, 17, 12345, 53)
        );
        assert_eq!((k.vlan_id, flags), (0, 0));
        // More-fragments set, offset 0: still the first fragment.
        let (k, _) = key_of(&ipv4_udp(0x2000), 0).unwrap();
        assert_eq!(k.dst_port, 53);
        // A later fragment: no ports.
        let (k, _) = key_of(&ipv4_udp(0x0001), 0).unwrap();
        assert_eq!((k.protocol, k.src_port, k.dst_port), (17, 0, 0));
    }

    #[test]
    fn vlan_tags_and_prefix() {
        let mut f = [0u8; 96];
        let inner = eth(0x0806, &[(0x88a8, 0x0064), (0x8100, 0x2005)]);
        f[24..88].copy_from_slice(&inner);
        let (k, _) = key_of(&f, 24).unwrap();
        assert_eq!((k.vlan_id, k.ether_type, k.protocol), (100, 0x0806, 0));
        // A third tag is not walked: its TPID is the EtherType.
        let f = eth(0x0800, &[(0x8100, 1), (0x8100, 2), (0x8100, 3)]);
        assert_eq!(key_of(&f, 0).unwrap().0.ether_type, 0x8100);
    }

    #[test]
    fn short_or_malformed_frames_are_not_keyed() {
        let f = ipv4_udp(0);
        assert_eq!(key_of(&f[..13], 0), None);
        assert_eq!(key_of(&f[..33], 0), None);
        assert!(key_of(&f[..34], 0).is_some());
        assert_eq!(key_of(&f[..34], 0).unwrap().0.dst_port, 0);
        let mut bad = f;
        bad[14] = 0x44; // IHL 4
        assert_eq!(key_of(&bad, 0), None);
        assert_eq!(key_of(&f, 60), None);
    }

    #[test]
    fn ipv6_tcp_behind_extension_headers() {
        let mut f = [0u8; 128];
        f[..14].copy_from_slice(&eth(ETHERTYPE_IPV6, &[])[..14]);
        let ip = &mut f[14..54];
        ip[0] = 0x60;
        ip[6] = IPV6_HOP_BY_HOP;
        ip[8] = 0xfd;
        ip[39] = 2;
        // hop-by-hop (8 bytes) -> fragment (offset 0) -> TCP
        f[54] = IPV6_FRAGMENT;
        f[55] = 0;
        f[62] = PROTO_TCP;
        f[70..74].copy_from_slice(&[0x01, 0xbb, 0xc3, 0x50]);
        f[70 + 13] = 0x12;
        let (k, flags) = key_of(&f, 0).unwrap();
        assert_eq!((k.ether_type, k.protocol), (0x86dd, 6));
        assert_eq!((k.src_port, k.dst_port, flags), (443, 50000, 0x12));
        assert_eq!((k.src_addr[0], k.dst_addr[15]), (0xfd, 2));
        // A later fragment: protocol from the fragment header, no ports.
        f[64..66].copy_from_slice(&0x0008u16.to_be_bytes());
        let (k, _) = key_of(&f, 0).unwrap();
        assert_eq!((k.protocol, k.src_port, k.dst_port), (6, 0, 0));
    }

    /// An Ethernet/ARP frame about IPv4 (hardware address length `hlen`).
    fn arp_frame(hlen: u8, sender: [u8; 4], target: [u8; 4]) -> [u8; 64] {
        let mut f = eth(ETHERTYPE_ARP, &[]);
        let h = usize::from(hlen);
        f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, hlen, 4, 0, 1]);
        f[22 + h..26 + h].copy_from_slice(&sender);
        f[26 + 2 * h..30 + 2 * h].copy_from_slice(&target);
        f
    }

    #[test]
    fn arp_sender_and_target_addresses_as_ipv4_mapped() {
        let mapped = |a: [u8; 4]| {
            let mut m = [0u8; 16];
            m[10..12].copy_from_slice(&IPV4_MAPPED);
            m[12..].copy_from_slice(&a);
            m
        };
        for hlen in [6, 8] {
            let f = arp_frame(hlen, [10, 0, 0, 1], [10, 0, 0, 2]);
            let (k, flags) = key_of(&f, 0).unwrap();
            assert_eq!((k.ether_type, k.protocol, flags), (ETHERTYPE_ARP, 0, 0));
            assert_eq!(k.src_addr, mapped([10, 0, 0, 1]));
            assert_eq!(k.dst_addr, mapped([10, 0, 0, 2]));
            assert_eq!((k.src_port, k.dst_port), (0, 0));
        }
        // A probe's sender 0.0.0.0 is an address.
        let (k, _) = key_of(&arp_frame(6, [0; 4], [10, 0, 0, 2]), 0).unwrap();
        assert_eq!(k.src_addr, mapped([0; 4]));
        // Cut short before the target address, or not about IPv4: keyed, no addresses.
        let f = arp_frame(6, [10, 0, 0, 1], [10, 0, 0, 2]);
        let (k, _) = key_of(&f[..41], 0).unwrap();
        assert_eq!((k.src_addr, k.dst_addr), ([0; 16], [0; 16]));
        let mut other = f;
        other[17] = 0x86; // protocol type 0x86dd
        let (k, _) = key_of(&other, 0).unwrap();
        assert_eq!(
            (k.ether_type, k.src_addr, k.dst_addr),
            (ETHERTYPE_ARP, [0; 16], [0; 16])
        );
    }

    #[test]
    fn icmp_type_and_code_in_the_ports() {
        let mut f = ipv4_udp(0);
        f[14 + 9] = PROTO_ICMP;
        f[34] = 8;
        f[35] = 0;
        let (k, _) = key_of(&f, 0).unwrap();
        assert_eq!((k.protocol, k.src_port, k.dst_port), (1, 8, 0));
    }
}
