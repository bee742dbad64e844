//! Local TCP sockets' retransmits and smoothed RTT (`--tcp-health`), seen from userspace:
//! the programs (`flowmetrix-ebpf/src/tcp.rs`) count into `TCPSOCK{generation & 1}` under
//! the flow maps' generation, so once [`super::kernel::FlowMaps::collect`] has flipped it
//! and waited the grace period, the old generation's socket map is idle too: read and
//! cleared here with `BPF_MAP_LOOKUP_AND_DELETE_BATCH` ([`BatchMap`]: a few calls, not three
//! an entry). Each socket becomes a [`SocketKey`] for
//! [`super::Health::tcp_socket`].

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use flowmetrix_common::tcp::{
    AF_INET, AF_INET6, TCP_SOCKET_MAPS, TCP_STAT_FULL, TCP_STATS_MAP, TcpSocketKey, TcpSocketValue,
};

use super::{
    bpf::{BatchMap, CallError, FIRST_BATCH},
    health::SocketKey,
};

const ETHER_IPV4: u16 = 0x0800;
const ETHER_IPV6: u16 = 0x86dd;

#[derive(Debug, thiserror::Error)]
pub enum TcpSocketError {
    #[error("the kernel object lacks the map {0}")]
    Missing(&'static str),
    #[error("map {0}")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error("reading map {0} failed")]
    Read(&'static str, #[source] CallError),
}

/// One socket's figures of an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketFigures {
    pub key: SocketKey,
    pub retransmits: u32,
    /// The interval's largest smoothed RTT (µs); None when the socket took no segment with
    /// an RTT measured.
    pub rtt_us: Option<u64>,
}

/// What one collection gives.
#[derive(Debug, Default)]
pub struct SocketsCollected {
    pub sockets: Vec<SocketFigures>,
    /// Socket updates the full map refused since the last collection.
    pub full: u64,
    /// Entries the map held (sockets of other families are read and cleared, not given).
    pub map_entries: usize,
}

/// The loaded socket maps.
pub struct TcpSockets {
    maps: [BatchMap<TcpSocketKey, TcpSocketValue>; 2],
    stats: PerCpuArray<MapData, u64>,
    /// The full count already reported.
    full_seen: u64,
}

impl TcpSockets {
    /// Takes the socket maps out of a loaded object.
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, TcpSocketError> {
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(TcpSocketError::Missing(name));
        let stats = PerCpuArray::try_from(take(TCP_STATS_MAP)?)
            .map_err(|e| TcpSocketError::Map(TCP_STATS_MAP, e))?;
        let map = |m, name| BatchMap::new(m, FIRST_BATCH).map_err(|e| TcpSocketError::Map(name, e));
        let maps = [
            map(take(TCP_SOCKET_MAPS[0])?, TCP_SOCKET_MAPS[0])?,
            map(take(TCP_SOCKET_MAPS[1])?, TCP_SOCKET_MAPS[1])?,
        ];
        Ok(Self {
            maps,
            stats,
            full_seen: 0,
        })
    }

    /// Reads one key at a time from now on, as on a kernel that refuses batch calls (for
    /// tests of that path).
    #[doc(hidden)]
    pub fn without_batch_calls(&mut self) {
        for map in &mut self.maps {
            map.without_batch_calls();
        }
    }

    /// Reads and clears the socket map of `generation`, which the programs no longer count
    /// into (call right after the flow maps' collection of that generation). Blocking.
    pub fn collect(&mut self, generation: u32) -> Result<SocketsCollected, TcpSocketError> {
        let map = &mut self.maps[(generation & 1) as usize];
        let name = TCP_SOCKET_MAPS[(generation & 1) as usize];
        let mut entries = Vec::new();
        map.read_and_delete(&mut entries)
            .map_err(|e| TcpSocketError::Read(name, e))?;
        let full = self
            .stats
            .get(&TCP_STAT_FULL, 0)
            .map(|per_cpu| per_cpu.iter().sum::<u64>())
            .unwrap_or(self.full_seen);
        let new_full = full.saturating_sub(self.full_seen);
        self.full_seen = full;
        Ok(SocketsCollected {
            map_entries: entries.len(),
            sockets: entries.iter().filter_map(|(k, v)| figures(k, v)).collect(),
            full: new_full,
        })
    }
}

/// A kernel socket's entry as the figures of its [`SocketKey`] (None: not IPv4 or IPv6).
pub fn figures(k: &TcpSocketKey, v: &TcpSocketValue) -> Option<SocketFigures> {
    Some(SocketFigures {
        key: socket_key(k)?,
        retransmits: v.retransmits,
        rtt_us: (v.rtt_us != 0).then_some(u64::from(v.rtt_us)),
    })
}

/// The flow rows' view of a kernel socket: an IPv4-mapped IPv6 socket (a dual-stack socket
/// talking IPv4) written as IPv4, as its packets are keyed.
pub fn socket_key(k: &TcpSocketKey) -> Option<SocketKey> {
    let (ether_type, local_addr, remote_addr) = match k.family {
        AF_INET => (ETHER_IPV4, k.local_addr, k.remote_addr),
        AF_INET6 => match (mapped_v4(&k.local_addr), mapped_v4(&k.remote_addr)) {
            (Some(l), Some(r)) => (ETHER_IPV4, l, r),
            _ => (ETHER_IPV6, k.local_addr, k.remote_addr),
        },
        _ => return None,
    };
    Some(SocketKey {
        ether_type,
        local_addr,
        remote_addr,
        local_port: k.local_port,
        remote_port: k.remote_port,
    })
}

/// `::ffff:a.b.c.d` as a flow key's IPv4 address (first four bytes, the rest zero).
fn mapped_v4(a: &[u8; 16]) -> Option<[u8; 16]> {
    let std::net::IpAddr::V4(v4) = std::net::Ipv6Addr::from(*a).to_canonical() else {
        return None;
    };
    // `to_canonical` turns `::ffff:a.b.c.d` only: the deprecated `::a.b.c.d` stays IPv6.
    let mut out = [0; 16];
    out[..4].copy_from_slice(&v4.octets());
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..4].copy_from_slice(&a);
        out
    }

    #[test]
    fn an_ipv4_socket_keeps_its_addresses_and_ports() {
        let k = TcpSocketKey {
            family: AF_INET,
            local_port: 40_000,
            remote_port: 80,
            local_addr: v4([10, 0, 0, 1]),
            remote_addr: v4([10, 0, 0, 2]),
            ..TcpSocketKey::ZERO
        };
        let f = figures(
            &k,
            &TcpSocketValue {
                retransmits: 3,
                rtt_us: 1_250,
            },
        )
        .unwrap();
        assert_eq!(
            f,
            SocketFigures {
                key: SocketKey {
                    ether_type: 0x0800,
                    local_addr: v4([10, 0, 0, 1]),
                    remote_addr: v4([10, 0, 0, 2]),
                    local_port: 40_000,
                    remote_port: 80,
                },
                retransmits: 3,
                rtt_us: Some(1_250),
            }
        );
        // It is the socket of the flow row sending from it.
        let mut row = flowmetrix_common::flow_key::FlowKey::ZERO;
        row.ether_type = 0x0800;
        row.src_addr = v4([10, 0, 0, 1]);
        row.dst_addr = v4([10, 0, 0, 2]);
        row.src_port = 40_000;
        row.dst_port = 80;
        assert_eq!(SocketKey::sending(&row), f.key);
    }

    #[test]
    fn a_mapped_ipv6_socket_is_written_as_ipv4_a_real_one_stays_ipv6() {
        let mapped = |a: [u8; 4]| Ipv4Addr::from(a).to_ipv6_mapped().octets();
        let k = TcpSocketKey {
            family: AF_INET6,
            local_port: 8080,
            remote_port: 51_000,
            local_addr: mapped([192, 0, 2, 1]),
            remote_addr: mapped([192, 0, 2, 9]),
            ..TcpSocketKey::ZERO
        };
        let s = socket_key(&k).unwrap();
        assert_eq!(s.ether_type, 0x0800);
        assert_eq!(s.local_addr, v4([192, 0, 2, 1]));
        assert_eq!(s.remote_addr, v4([192, 0, 2, 9]));
        assert_eq!((s.local_port, s.remote_port), (8080, 51_000));

        let l: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let r: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let k = TcpSocketKey {
            local_addr: l.octets(),
            remote_addr: r.octets(),
            ..k
        };
        let s = socket_key(&k).unwrap();
        assert_eq!(s.ether_type, 0x86dd);
        assert_eq!((s.local_addr, s.remote_addr), (l.octets(), r.octets()));
        // One side mapped and not the other is not an IPv4 socket.
        let k = TcpSocketKey {
            local_addr: mapped([192, 0, 2, 1]),
            ..k
        };
        assert_eq!(socket_key(&k).unwrap().ether_type, 0x86dd);
    }

    #[test]
    fn no_rtt_measured_is_none_and_other_families_are_skipped() {
        let k = TcpSocketKey {
            family: AF_INET,
            ..TcpSocketKey::ZERO
        };
        let f = figures(
            &k,
            &TcpSocketValue {
                retransmits: 1,
                rtt_us: 0,
            },
        )
        .unwrap();
        assert_eq!((f.retransmits, f.rtt_us), (1, None));
        let unix = TcpSocketKey {
            family: 1,
            ..TcpSocketKey::ZERO
        };
        assert!(figures(&unix, &TcpSocketValue::default()).is_none());
    }
}
