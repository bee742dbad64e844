//! How well flows went (issue 25): measurements that arrive apart from the flow counts —
//! TCP handshakes (from packets), local sockets' retransmits and RTT (tracing hooks), drops
//! by reason (`skb:kfree_skb`) — gathered over one interval here and joined to that
//! interval's flow rows by [`Health::fill`], then the rest by [`Health::finish`].
//!
//! How each finds its row:
//! - a handshake carries the exact [`FlowKey`] of its initiating direction's row (client →
//!   server, keyed by the flow parser as the packets were); a handshake whose row is not in
//!   this interval waits for the next one once, then is counted as unmatched;
//! - a local socket's figures ([`SocketKey`]: local → remote) go on every TCP row of the
//!   socket's sending direction — egress, or, when egress is not watched, the ingress row
//!   of the reverse direction — on any interface; none: left out, not counted (the hooks see
//!   every socket of the host, on loopback and in other namespaces too, most with no row on
//!   the watched interfaces);
//! - drops carry the flow key of the dropped packet without its VLAN (the hook sees the
//!   packet after the tag is gone); drops whose flow has no row this interval become a row
//!   of their own with no packets, so a packet dropped before the hooks saw it (a firewall's
//!   OUTPUT chain) is still on record.
//!
//! What was not measured stays null ([`FlowHealth`]): a part that is off leaves its columns
//! null, and the `tcp_*` columns are null on flows that are not TCP.

use std::{collections::HashMap, sync::Arc};

use flowmetrix_common::{Direction as KernelDirection, flow_key::FlowKey};

use crate::{
    metrics::{Counters, FlowCounters},
    record::FlowHealth,
};

const PROTO_TCP: u8 = 6;

/// Which parts run (the columns of the others stay null).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parts {
    /// Handshake latency and SYN retransmits (from packets).
    pub handshakes: bool,
    /// Local sockets' retransmits and smoothed RTT (tracing hooks).
    pub tcp_sockets: bool,
    /// Drops by reason (`skb:kfree_skb`).
    pub drops: bool,
    /// Whether egress is watched: a socket's figures go on its egress row, else on the
    /// ingress row of the reverse direction.
    pub egress_watched: bool,
}

/// A local TCP socket, local → remote, addresses as in [`FlowKey`] (IPv4 in the first four
/// bytes, the rest zero; an IPv4-mapped IPv6 address of a dual-stack socket written as
/// IPv4), ports in host order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketKey {
    /// 0x0800 or 0x86dd, as the flow key's `ether_type`.
    pub ether_type: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
}

impl SocketKey {
    /// The socket a TCP flow row sending from `key.src` belongs to.
    pub fn sending(key: &FlowKey) -> Self {
        Self {
            ether_type: key.ether_type,
            local_addr: key.src_addr,
            remote_addr: key.dst_addr,
            local_port: key.src_port,
            remote_port: key.dst_port,
        }
    }

    /// The socket a TCP flow row arriving at `key.dst` belongs to.
    pub fn receiving(key: &FlowKey) -> Self {
        Self {
            ether_type: key.ether_type,
            local_addr: key.dst_addr,
            remote_addr: key.src_addr,
            local_port: key.dst_port,
            remote_port: key.src_port,
        }
    }
}

/// One handshake's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handshake {
    /// Null when the attempt did not complete (only its SYN retransmits are known).
    pub us: Option<u64>,
    pub syn_retransmits: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Socket {
    retransmits: u32,
    rtt_max_us: Option<u64>,
    /// A row took the figures (every row of the socket takes them: one per interface).
    matched: bool,
}

#[derive(Clone, Debug, Default)]
struct Drops {
    packets: u64,
    bytes: u64,
    /// Packets by reason (a handful at most).
    reasons: Vec<(Arc<str>, u64)>,
    first_ns: u64,
    last_ns: u64,
}

impl Drops {
    fn reason(&self) -> Option<Arc<str>> {
        // The most frequent; on a tie the first seen.
        let mut best: Option<&(Arc<str>, u64)> = None;
        for r in &self.reasons {
            if best.is_none_or(|b| r.1 > b.1) {
                best = Some(r);
            }
        }
        best.map(|b| Arc::clone(&b.0))
    }
}

/// Drops whose flow had no row in the interval: made rows of their own (no packets).
#[derive(Clone, Debug)]
pub struct DropOnly {
    pub key: FlowKey,
    pub first_ns: u64,
    pub last_ns: u64,
    pub health: FlowHealth,
}

/// One interval's how-well figures, waiting for their rows.
#[derive(Debug, Default)]
pub struct Health {
    pub parts: Parts,
    handshakes: HashMap<FlowKey, Handshake>,
    /// Handshakes of the interval before whose row has not come yet.
    waiting: HashMap<FlowKey, Handshake>,
    sockets: HashMap<SocketKey, Socket>,
    drops: HashMap<FlowKey, Drops>,
}

impl Health {
    pub fn new(parts: Parts) -> Self {
        Self {
            parts,
            ..Self::default()
        }
    }

    /// A handshake (completed, or an attempt's SYN retransmits), for the row `key`: the
    /// initiating direction's flow key.
    pub fn handshake(&mut self, key: FlowKey, h: Handshake) {
        let e = self.handshakes.entry(key).or_default();
        if h.us.is_some() {
            e.us = h.us;
        }
        e.syn_retransmits = e.syn_retransmits.saturating_add(h.syn_retransmits);
    }

    /// A local socket's retransmits and smoothed RTT (µs) since the last call.
    pub fn tcp_socket(&mut self, key: SocketKey, retransmits: u32, rtt_us: Option<u64>) {
        let e = self.sockets.entry(key).or_default();
        e.retransmits = e.retransmits.saturating_add(retransmits);
        e.rtt_max_us = e.rtt_max_us.max(rtt_us);
    }

    /// `packets` drops (`bytes`) of the flow `key` (its VLAN id is ignored) for `reason`,
    /// the first and last at `first_ns` and `last_ns` (the flow times' clock).
    pub fn drop(
        &mut self,
        key: FlowKey,
        reason: Arc<str>,
        packets: u64,
        bytes: u64,
        (first_ns, last_ns): (u64, u64),
    ) {
        let e = self.drops.entry(without_vlan(&key)).or_default();
        if e.packets == 0 {
            e.first_ns = first_ns;
            e.last_ns = last_ns;
        } else {
            e.first_ns = e.first_ns.min(first_ns);
            e.last_ns = e.last_ns.max(last_ns);
        }
        e.packets += packets;
        e.bytes += bytes;
        match e.reasons.iter_mut().find(|r| r.0 == reason) {
            Some(r) => r.1 += packets,
            None => e.reasons.push((reason, packets)),
        }
    }

    /// The figures of the row keyed `key`, taking what is its alone.
    pub fn fill(&mut self, key: &FlowKey) -> FlowHealth {
        let mut h = FlowHealth::default();
        let tcp = key.protocol == PROTO_TCP;
        if self.parts.handshakes && tcp {
            let found = self
                .handshakes
                .remove(key)
                .or_else(|| self.waiting.remove(key))
                .unwrap_or_default();
            h.tcp_handshake_us = found.us;
            h.tcp_syn_retransmits = Some(found.syn_retransmits);
        }
        if self.parts.tcp_sockets && tcp {
            let egress = key.direction == KernelDirection::Egress as u8;
            let socket = match (egress, self.parts.egress_watched) {
                (true, _) => Some(SocketKey::sending(key)),
                (false, false) => Some(SocketKey::receiving(key)),
                (false, true) => None,
            };
            let s = socket
                .and_then(|s| self.sockets.get_mut(&s))
                .map(|s| {
                    s.matched = true;
                    *s
                })
                .unwrap_or_default();
            h.tcp_retransmits = Some(s.retransmits);
            h.tcp_rtt_us = s.rtt_max_us;
        }
        if self.parts.drops {
            match self.drops.remove(&without_vlan(key)) {
                Some(d) => {
                    h.drop_packets = Some(d.packets);
                    h.drop_bytes = Some(d.bytes);
                    h.drop_reason = d.reason();
                }
                None => {
                    h.drop_packets = Some(0);
                    h.drop_bytes = Some(0);
                }
            }
        }
        h
    }

    /// The end of an interval, after every row was filled: drops with no row are returned
    /// to be made rows; handshakes with no row wait one more interval, then are counted as
    /// unmatched; sockets with no row are left out.
    pub fn finish(&mut self, counters: &FlowCounters) -> Vec<DropOnly> {
        let unmatched = self.waiting.len() as u64;
        self.waiting = std::mem::take(&mut self.handshakes);
        self.sockets.clear();
        Counters::add(&counters.health_unmatched, unmatched);
        let tcp_parts = (self.parts.handshakes, self.parts.tcp_sockets);
        self.drops
            .drain()
            .map(|(key, d)| {
                let tcp = key.protocol == PROTO_TCP;
                let reason = d.reason();
                DropOnly {
                    key,
                    first_ns: d.first_ns,
                    last_ns: d.last_ns,
                    health: FlowHealth {
                        tcp_syn_retransmits: (tcp && tcp_parts.0).then_some(0),
                        tcp_retransmits: (tcp && tcp_parts.1).then_some(0),
                        drop_packets: Some(d.packets),
                        drop_bytes: Some(d.bytes),
                        drop_reason: reason,
                        ..FlowHealth::default()
                    },
                }
            })
            .collect()
    }
}

fn without_vlan(key: &FlowKey) -> FlowKey {
    FlowKey { vlan_id: 0, ..*key }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(
        dir: KernelDirection,
        ifindex: u32,
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
    ) -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.src_addr[..4].copy_from_slice(&src.0);
        k.dst_addr[..4].copy_from_slice(&dst.0);
        k.src_port = src.1;
        k.dst_port = dst.1;
        k.ifindex = ifindex;
        k.direction = dir as u8;
        k.ether_type = 0x0800;
        k.protocol = PROTO_TCP;
        k
    }

    const CLIENT: ([u8; 4], u16) = ([10, 0, 0, 1], 40_000);
    const SERVER: ([u8; 4], u16) = ([10, 0, 0, 2], 80);

    fn all() -> Parts {
        Parts {
            handshakes: true,
            tcp_sockets: true,
            drops: true,
            egress_watched: true,
        }
    }

    #[test]
    fn a_handshake_goes_on_its_row_or_waits_one_interval_then_is_counted() {
        let counters = FlowCounters::default();
        let mut h = Health::new(all());
        let k = key(KernelDirection::Ingress, 2, CLIENT, SERVER);
        let done = Handshake {
            us: Some(50_000),
            syn_retransmits: 1,
        };
        h.handshake(k, done);
        let f = h.fill(&k);
        assert_eq!(f.tcp_handshake_us, Some(50_000));
        assert_eq!(f.tcp_syn_retransmits, Some(1));
        // Taken: the next row of that key has none.
        assert_eq!(h.fill(&k).tcp_handshake_us, None);
        assert_eq!(h.fill(&k).tcp_syn_retransmits, Some(0));
        assert!(h.finish(&counters).is_empty());

        // No row this interval: it waits for the next one…
        h.handshake(k, done);
        h.finish(&counters);
        assert_eq!(h.fill(&k).tcp_handshake_us, Some(50_000));
        // …once.
        h.handshake(k, done);
        h.finish(&counters);
        h.finish(&counters);
        assert_eq!(h.fill(&k).tcp_handshake_us, None);
        assert_eq!(Counters::get(&counters.health_unmatched), 1);
    }

    #[test]
    fn a_socket_goes_on_its_egress_rows_on_every_interface() {
        let counters = FlowCounters::default();
        let mut h = Health::new(all());
        let out = key(KernelDirection::Egress, 2, CLIENT, SERVER);
        let back = key(KernelDirection::Ingress, 2, SERVER, CLIENT);
        h.tcp_socket(SocketKey::sending(&out), 2, Some(900));
        h.tcp_socket(SocketKey::sending(&out), 1, Some(1_200));
        let f = h.fill(&out);
        assert_eq!((f.tcp_retransmits, f.tcp_rtt_us), (Some(3), Some(1_200)));
        let other_interface = key(KernelDirection::Egress, 3, CLIENT, SERVER);
        assert_eq!(h.fill(&other_interface).tcp_retransmits, Some(3));
        let f = h.fill(&back);
        assert_eq!((f.tcp_retransmits, f.tcp_rtt_us), (Some(0), None));
        h.finish(&counters);
        assert_eq!(Counters::get(&counters.health_unmatched), 0);

        // Egress not watched: the reverse ingress row.
        let mut h = Health::new(Parts {
            egress_watched: false,
            ..all()
        });
        h.tcp_socket(SocketKey::sending(&out), 4, None);
        assert_eq!(h.fill(&back).tcp_retransmits, Some(4));
        // A socket with no row (another interface's, loopback's) is left out, not counted.
        let mut lone = out;
        lone.src_port = 1;
        h.tcp_socket(SocketKey::sending(&lone), 1, None);
        h.finish(&counters);
        assert_eq!(Counters::get(&counters.health_unmatched), 0);
    }

    #[test]
    fn drops_match_without_the_vlan_name_the_most_frequent_reason_and_stand_alone() {
        let counters = FlowCounters::default();
        let mut h = Health::new(all());
        let mut tagged = key(KernelDirection::Ingress, 2, CLIENT, SERVER);
        tagged.vlan_id = 100;
        let seen = key(KernelDirection::Ingress, 2, CLIENT, SERVER);
        h.drop(seen, "NETFILTER_DROP".into(), 1, 60, (5, 6));
        h.drop(seen, "NO_SOCKET".into(), 2, 120, (3, 9));
        let f = h.fill(&tagged);
        assert_eq!(f.drop_packets, Some(3));
        assert_eq!(f.drop_bytes, Some(180));
        assert_eq!(f.drop_reason.as_deref(), Some("NO_SOCKET"));
        let other = key(KernelDirection::Egress, 2, SERVER, CLIENT);
        let f = h.fill(&other);
        assert_eq!((f.drop_packets, f.drop_reason), (Some(0), None));

        // No row: a row of its own, no packets, the drops' times.
        h.drop(other, "NETFILTER_DROP".into(), 4, 240, (7, 8));
        let alone = h.finish(&counters);
        assert_eq!(alone.len(), 1);
        assert_eq!(alone[0].key, other);
        assert_eq!((alone[0].first_ns, alone[0].last_ns), (7, 8));
        assert_eq!(alone[0].health.drop_packets, Some(4));
        assert_eq!(
            alone[0].health.drop_reason.as_deref(),
            Some("NETFILTER_DROP")
        );
        assert_eq!(alone[0].health.tcp_retransmits, Some(0));
        assert!(h.finish(&counters).is_empty());
    }

    #[test]
    fn what_is_off_or_does_not_apply_is_null() {
        let mut h = Health::default();
        let k = key(KernelDirection::Ingress, 2, CLIENT, SERVER);
        h.handshake(k, Handshake::default());
        assert_eq!(h.fill(&k), FlowHealth::default());
        let mut h = Health::new(all());
        let mut udp = k;
        udp.protocol = 17;
        let f = h.fill(&udp);
        assert_eq!(f.tcp_syn_retransmits, None);
        assert_eq!(f.tcp_retransmits, None);
        assert_eq!(f.drop_packets, Some(0));
    }
}
