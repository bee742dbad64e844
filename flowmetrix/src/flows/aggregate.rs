//! One interval's flows, keyed as the kernel keys them, made into [`FlowRecord`]s: from the
//! kernel's collected maps (live) or from replayed frames keyed by the same parser.

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration};

use flowmetrix_common::{
    Direction as KernelDirection,
    flow_key::{self, FlowEvent, FlowKey, FlowValue},
};

use super::{
    health::{DropOnly, Health},
    kernel::Collected,
};
use crate::{
    applications::Applications,
    decode::{self, Link},
    metrics::{Counters, FlowCounters},
    record::{Direction, FlowHealth, FlowRecord, UnixNanos, Workload},
};

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// One interval's flows, keyed as the kernel keys them. Times are nanoseconds on whatever
/// clock the packets came with (boot time live, Unix time in a replay); [`Aggregator::rows`]
/// is told how to make them wall-clock time.
pub struct Aggregator {
    flows: HashMap<FlowKey, FlowValue>,
    applications: Arc<Applications>,
    host: Arc<str>,
    counters: Arc<FlowCounters>,
    /// The interval's how-well figures, joined to its rows by [`Aggregator::rows`].
    pub health: Health,
}

impl Aggregator {
    pub fn new(
        applications: Arc<Applications>,
        host: Arc<str>,
        counters: Arc<FlowCounters>,
    ) -> Self {
        Self {
            flows: HashMap::new(),
            applications,
            host,
            counters,
            health: Health::default(),
        }
    }

    /// Flows with packets in the current interval.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    fn merge(&mut self, key: FlowKey, v: FlowValue) {
        self.flows
            .entry(key)
            .and_modify(|f| {
                f.packets += v.packets;
                f.bytes += v.bytes;
                f.first_seen_ns = f.first_seen_ns.min(v.first_seen_ns);
                f.last_seen_ns = f.last_seen_ns.max(v.last_seen_ns);
                f.tcp_flags |= v.tcp_flags;
                // The socket last seen sending on the flow (0: none in this part).
                if v.cgroup_id != 0 {
                    f.cgroup_id = v.cgroup_id;
                }
            })
            .or_insert(v);
    }

    /// One packet of `bytes` bytes at `ts_ns`.
    pub fn add_packet(&mut self, key: FlowKey, ts_ns: u64, bytes: u64, tcp_flags: u8) {
        self.merge(
            key,
            FlowValue {
                packets: 1,
                bytes,
                first_seen_ns: ts_ns,
                last_seen_ns: ts_ns,
                tcp_flags: u64::from(tcp_flags),
                cgroup_id: 0,
            },
        );
    }

    /// A flow event from the kernel: one packet the full map could not take.
    pub fn add_event(&mut self, ev: &FlowEvent) {
        Counters::add(&self.counters.events, 1);
        self.add_packet(ev.key, ev.ts_boot_ns, u64::from(ev.bytes), ev.tcp_flags);
    }

    /// One collection of the kernel's maps: its entries and its flow events.
    pub fn add_collected(&mut self, c: &Collected) {
        Counters::set(&self.counters.map_entries, c.map_entries as u64);
        self.counters
            .map_peak
            .fetch_max(c.map_entries as u64, std::sync::atomic::Ordering::Relaxed);
        Counters::set(&self.counters.map_max, u64::from(c.max_entries));
        for (k, v) in &c.flows {
            self.merge(*k, *v);
        }
        for ev in &c.events {
            self.add_event(ev);
        }
    }

    /// A replayed frame: keyed by the kernel's rules after `prefix` bytes (Ethernet), or
    /// from the network header on for other link types (no VLAN tags then). `None` for the
    /// prefix: not known yet (`-auto-detect` still learning), so not keyed, as live.
    /// `ifindex` stands for the frame's interface (see [`Interfaces`]). The frame's key and
    /// TCP flags, when it was keyed.
    #[allow(clippy::too_many_arguments)]
    pub fn add_frame(
        &mut self,
        link: Link,
        frame: &[u8],
        wire_len: u32,
        prefix: Option<usize>,
        ts: UnixNanos,
        ifindex: u32,
        direction: Direction,
    ) -> Option<(FlowKey, u8)> {
        let mut key = FlowKey::ZERO;
        let (keyed, bytes) = match (link, prefix) {
            (Link::Ethernet, Some(p)) => (
                flow_key::parse(frame, p, &mut key),
                u64::from(wire_len).saturating_sub(p as u64),
            ),
            (Link::Ethernet, None) => (None, u64::from(wire_len)),
            (link, _) => {
                let keyed = decode::network_of(link, frame).and_then(|(ether_type, net)| {
                    key.ether_type = ether_type;
                    flow_key::parse_ip(net, 0, ether_type, &mut key)
                });
                (keyed, u64::from(wire_len))
            }
        };
        let Some(tcp_flags) = keyed else {
            Counters::add(&self.counters.unkeyed, 1);
            Counters::add(&self.counters.unkeyed_bytes, bytes);
            return None;
        };
        key.ifindex = ifindex;
        key.direction = KernelDirection::from(direction) as u8;
        self.add_packet(key, u64::try_from(ts.0).unwrap_or(0), bytes, tcp_flags);
        Some((key, tcp_flags))
    }

    /// The interval's rows, and the aggregator emptied for the next one. `ts` is the
    /// interval's end, `wall` turns packet times into wall-clock time, `interface` names an
    /// ifindex.
    pub fn rows(
        &mut self,
        ts: UnixNanos,
        interval: Duration,
        wall: impl Fn(u64) -> UnixNanos,
        mut interface: impl FnMut(u32) -> Arc<str>,
    ) -> Vec<FlowRecord> {
        let interval_ms = u32::try_from(interval.as_millis()).unwrap_or(u32::MAX);
        let mut names: Option<(u32, Arc<str>)> = None;
        let mut out = Vec::with_capacity(self.flows.len());
        let mut flows = std::mem::take(&mut self.flows);
        for (k, v) in flows.drain() {
            let name = match &names {
                Some((i, n)) if *i == k.ifindex => Arc::clone(n),
                _ => {
                    let n = interface(k.ifindex);
                    names = Some((k.ifindex, Arc::clone(&n)));
                    n
                }
            };
            Counters::add(&self.counters.packets, v.packets);
            Counters::add(&self.counters.bytes, v.bytes);
            let health = self.health.fill(&k);
            out.push(self.row(&k, &v, ts, interval_ms, &wall, name, health));
        }
        // Reuse the map's allocation next interval.
        self.flows = flows;
        for DropOnly {
            key,
            first_ns,
            last_ns,
            health,
        } in self.health.finish(&self.counters)
        {
            let v = FlowValue {
                first_seen_ns: first_ns,
                last_seen_ns: last_ns,
                ..FlowValue::default()
            };
            let name = interface(key.ifindex);
            out.push(self.row(&key, &v, ts, interval_ms, &wall, name, health));
        }
        Counters::add(&self.counters.rows, out.len() as u64);
        out
    }

    /// The row of flow `k` with counts `v`.
    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        k: &FlowKey,
        v: &FlowValue,
        ts: UnixNanos,
        interval_ms: u32,
        wall: &impl Fn(u64) -> UnixNanos,
        interface: Arc<str>,
        health: FlowHealth,
    ) -> FlowRecord {
        let (src_ip, dst_ip) = addresses(k);
        let ports = matches!(k.protocol, PROTO_TCP | PROTO_UDP) && src_ip.is_some();
        FlowRecord {
            ts,
            host: Arc::clone(&self.host),
            interface,
            direction: if k.direction == KernelDirection::Egress as u8 {
                Direction::Egress
            } else {
                Direction::Ingress
            },
            application: if ports {
                self.applications
                    .application(Some(k.src_port), Some(k.dst_port))
            } else {
                crate::applications::UNKNOWN
            },
            vlan_id: (k.vlan_id != 0).then_some(k.vlan_id),
            ether_type: k.ether_type,
            src_ip,
            dst_ip,
            protocol: k.protocol,
            src_port: k.src_port,
            dst_port: k.dst_port,
            packets: v.packets,
            bytes: v.bytes,
            first_seen: wall(v.first_seen_ns),
            last_seen: wall(v.last_seen_ns),
            tcp_flags: (v.tcp_flags & 0xff) as u8,
            interval_ms,
            health,
            workload: Workload {
                cgroup_id: (v.cgroup_id != 0).then_some(v.cgroup_id),
                ..Workload::default()
            },
        }
    }
}

/// The key's addresses as the decoder writes them; `None` when the flow is not IP, or is
/// ARP without IPv4 addresses (the parser writes those IPv4-mapped).
fn addresses(k: &FlowKey) -> (Option<IpAddr>, Option<IpAddr>) {
    match k.ether_type {
        flow_key::ETHERTYPE_ARP if k.src_addr[10..12] == flow_key::IPV4_MAPPED => {
            let v4 = |a: &[u8; 16]| IpAddr::from([a[12], a[13], a[14], a[15]]);
            (Some(v4(&k.src_addr)), Some(v4(&k.dst_addr)))
        }
        flow_key::ETHERTYPE_IPV4 => {
            let v4 = |a: &[u8; 16]| IpAddr::from([a[0], a[1], a[2], a[3]]);
            (Some(v4(&k.src_addr)), Some(v4(&k.dst_addr)))
        }
        flow_key::ETHERTYPE_IPV6 => (
            Some(IpAddr::from(k.src_addr)),
            Some(IpAddr::from(k.dst_addr)),
        ),
        _ => (None, None),
    }
}

/// Names of the interfaces of a replay, each given a stand-in ifindex (1, 2, …) for the
/// flow key.
#[derive(Debug, Default)]
pub struct Interfaces {
    names: Vec<Arc<str>>,
}

impl Interfaces {
    pub fn index(&mut self, name: &Arc<str>) -> u32 {
        let i = match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(Arc::clone(name));
                self.names.len() - 1
            }
        };
        u32::try_from(i + 1).unwrap_or(u32::MAX)
    }

    pub fn name(&self, ifindex: u32) -> Option<Arc<str>> {
        let i = usize::try_from(ifindex).ok()?.checked_sub(1)?;
        self.names.get(i).cloned()
    }
}

/// Replay: intervals by packet time. Tells when a packet at `ts` starts a new interval.
#[derive(Debug)]
pub struct PacketClock {
    interval_ns: i64,
    /// End of the current interval, once a packet has opened one.
    end: Option<i64>,
}

impl PacketClock {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval_ns: i64::try_from(interval.as_nanos())
                .unwrap_or(i64::MAX)
                .max(1),
            end: None,
        }
    }

    fn end_of(&self, ts: i64) -> i64 {
        ts.div_euclid(self.interval_ns)
            .saturating_add(1)
            .saturating_mul(self.interval_ns)
    }

    /// A packet at `ts`: the end of the interval it closes, if it is past the current one
    /// (then its rows are due before the packet is added).
    pub fn advance(&mut self, ts: UnixNanos) -> Option<UnixNanos> {
        let end = self.end_of(ts.0);
        match self.end {
            Some(cur) if end > cur => {
                self.end = Some(end);
                Some(UnixNanos(cur))
            }
            Some(_) => None,
            None => {
                self.end = Some(end);
                None
            }
        }
    }

    /// At the end of the file: the end of the interval still open.
    pub fn finish(&mut self) -> Option<UnixNanos> {
        self.end.take().map(UnixNanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn agg() -> (Aggregator, Arc<FlowCounters>) {
        let c = Arc::new(FlowCounters::default());
        (
            Aggregator::new(Arc::default(), "node".into(), Arc::clone(&c)),
            c,
        )
    }

    fn key(src_port: u16, dst_port: u16) -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.src_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        k.dst_addr[..4].copy_from_slice(&[10, 0, 0, 2]);
        k.ifindex = 7;
        k.ether_type = flow_key::ETHERTYPE_IPV4;
        k.protocol = PROTO_UDP;
        k.src_port = src_port;
        k.dst_port = dst_port;
        k
    }

    fn value(packets: u64, bytes: u64, first: u64, last: u64) -> FlowValue {
        FlowValue {
            packets,
            bytes,
            first_seen_ns: first,
            last_seen_ns: last,
            tcp_flags: 0,
            cgroup_id: 0,
        }
    }

    fn event(k: FlowKey, ts: u64, bytes: u32, flags: u8) -> FlowEvent {
        FlowEvent {
            key: k,
            ts_boot_ns: ts,
            bytes,
            generation: 1,
            tcp_flags: flags,
            _pad: [0; 7],
        }
    }

    fn rows(a: &mut Aggregator) -> Vec<FlowRecord> {
        let mut r = a.rows(
            UnixNanos(1_000_000),
            Duration::from_secs(10),
            |ns| UnixNanos(ns as i64 + 5),
            |i| format!("if{i}").into(),
        );
        r.sort_by_key(|r| (r.src_port, r.dst_port));
        r
    }

    #[test]
    fn map_entries_and_events_of_one_flow_add_up_exactly() {
        let (mut a, c) = agg();
        let mut tcp = key(40_000, 443);
        tcp.protocol = PROTO_TCP;
        let mut v = value(10, 1_000, 100, 900);
        v.tcp_flags = 0x02;
        a.add_collected(&Collected {
            generation: 1,
            flows: vec![(tcp, v), (key(5353, 53), value(1, 80, 50, 50))],
            events: vec![event(tcp, 40, 60, 0x10), event(tcp, 950, 70, 0x01)],
            map_entries: 2,
            max_entries: 2,
        });
        let r = rows(&mut a);
        assert_eq!(r.len(), 2);
        let dns = &r[0];
        assert_eq!((dns.packets, dns.bytes, dns.application), (1, 80, "DNS"));
        let t = &r[1];
        assert_eq!((t.packets, t.bytes), (12, 1_130));
        assert_eq!((t.first_seen, t.last_seen), (UnixNanos(45), UnixNanos(955)));
        assert_eq!((t.tcp_flags, t.application, t.protocol), (0x13, "HTTPS", 6));
        assert_eq!((&*t.interface, &*t.host), ("if7", "node"));
        assert_eq!(t.src_ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            (t.vlan_id, t.interval_ms, t.ts),
            (None, 10_000, UnixNanos(1_000_000))
        );
        assert_eq!(Counters::get(&c.events), 2);
        assert_eq!(Counters::get(&c.packets), 13);
        assert_eq!(Counters::get(&c.bytes), 1_210);
        assert_eq!(Counters::get(&c.rows), 2);
        assert_eq!(
            (Counters::get(&c.map_entries), Counters::get(&c.map_max)),
            (2, 2)
        );
    }

    #[test]
    fn a_flow_keeps_the_cgroup_its_socket_was_seen_with() {
        let (mut a, _) = agg();
        let mut v = value(3, 300, 10, 20);
        v.cgroup_id = 4242;
        a.add_collected(&Collected {
            generation: 1,
            flows: vec![(key(1, 2), v), (key(3, 4), value(1, 100, 10, 10))],
            // A packet the full map sent as an event carries no cgroup: the flow keeps its.
            events: vec![event(key(1, 2), 30, 100, 0)],
            map_entries: 2,
            max_entries: 2,
        });
        let r = rows(&mut a);
        assert_eq!(r[0].workload.cgroup_id, Some(4242));
        assert_eq!(r[0].packets, 4);
        assert_eq!(r[1].workload, Workload::default(), "0 is none");
    }

    #[test]
    fn a_flow_idle_for_an_interval_gets_no_row() {
        let (mut a, _) = agg();
        a.add_packet(key(1, 2), 10, 100, 0);
        a.add_packet(key(3, 4), 10, 100, 0);
        assert_eq!(rows(&mut a).len(), 2);
        a.add_packet(key(3, 4), 20, 50, 0);
        let r = rows(&mut a);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].src_port, r[0].packets, r[0].bytes), (3, 1, 50));
        assert!(rows(&mut a).is_empty(), "nothing in the third interval");
    }

    #[test]
    fn text_forms_vlan_and_non_ip_flows() {
        let (mut a, _) = agg();
        let mut v6 = key(0, 0);
        v6.ether_type = flow_key::ETHERTYPE_IPV6;
        v6.protocol = 58;
        v6.src_port = 128; // echo request: no application from ICMP types
        v6.src_addr = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        v6.dst_addr = "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
        v6.vlan_id = 42;
        v6.direction = KernelDirection::Egress as u8;
        let mut arp = FlowKey::ZERO;
        arp.ether_type = 0x0806;
        arp.dst_port = 1;
        a.add_packet(v6, 1, 100, 0);
        a.add_packet(arp, 1, 60, 0);
        let r = rows(&mut a);
        let arp = &r[0];
        assert_eq!((arp.src_ip, arp.dst_ip, arp.protocol), (None, None, 0));
        assert_eq!(arp.application, "UNKNOWN");
        let v6 = &r[1];
        assert_eq!(v6.src_ip, Some("fd00::1".parse().unwrap()));
        assert_eq!((v6.vlan_id, v6.direction), (Some(42), Direction::Egress));
        assert_eq!((v6.src_port, v6.application), (128, "UNKNOWN"));
        let json = serde_json::to_value(v6).unwrap();
        assert_eq!(
            (json["src_ip"].as_str(), json["vlan_id"].as_u64()),
            (Some("fd00::1"), Some(42))
        );
    }

    fn udp_frame(vlan: Option<u16>, dst_port: u16, payload: usize) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let b = match vlan {
            Some(id) => eth
                .single_vlan(id.try_into().unwrap())
                .ipv4([10, 9, 0, 1], [10, 9, 0, 2], 64)
                .udp(40_000, dst_port),
            None => eth
                .ipv4([10, 9, 0, 1], [10, 9, 0, 2], 64)
                .udp(40_000, dst_port),
        };
        let mut out = Vec::new();
        b.write(&mut out, &vec![0; payload]).unwrap();
        out
    }

    #[test]
    fn replayed_frames_are_keyed_by_the_kernels_rules() {
        let (mut a, c) = agg();
        let mut ifs = Interfaces::default();
        let eth0: Arc<str> = "eth0".into();
        let i = ifs.index(&eth0);
        let plain = udp_frame(None, 53, 20);
        let tagged = udp_frame(Some(100), 53, 20);
        let mut prefixed = vec![0xee; 24];
        prefixed.extend_from_slice(&plain);
        let ing = Direction::Ingress;
        let at = UnixNanos(1_000);
        a.add_frame(
            Link::Ethernet,
            &plain,
            plain.len() as u32,
            Some(0),
            at,
            i,
            ing,
        );
        a.add_frame(
            Link::Ethernet,
            &plain,
            plain.len() as u32,
            Some(0),
            at,
            i,
            ing,
        );
        a.add_frame(
            Link::Ethernet,
            &tagged,
            tagged.len() as u32,
            Some(0),
            at,
            i,
            ing,
        );
        a.add_frame(
            Link::Ethernet,
            &prefixed,
            prefixed.len() as u32,
            Some(24),
            at,
            i,
            ing,
        );
        a.add_frame(Link::Ethernet, &plain, plain.len() as u32, None, at, i, ing);
        a.add_frame(Link::Ethernet, &plain[..20], 20, Some(0), at, i, ing);
        // Raw IP: the same flow as the untagged frames.
        a.add_frame(
            Link::RawIp,
            &plain[14..],
            plain.len() as u32 - 14,
            Some(0),
            at,
            i,
            ing,
        );
        let mut r = a.rows(
            at,
            Duration::from_secs(1),
            |n| UnixNanos(n as i64),
            |i| ifs.name(i).unwrap(),
        );
        r.sort_by_key(|r| (r.vlan_id, r.packets));
        assert_eq!(r.len(), 2, "{r:?}");
        let n = plain.len() as u64;
        assert_eq!(
            (r[0].vlan_id, r[0].packets, r[0].bytes),
            (None, 4, 4 * n - 14)
        );
        assert_eq!(
            (r[1].vlan_id, r[1].packets, r[1].bytes),
            (Some(100), 1, n + 4)
        );
        assert_eq!((&*r[0].interface, r[0].application), ("eth0", "DNS"));
        // Unknown prefix, and an IP header cut short: counted apart.
        assert_eq!(Counters::get(&c.unkeyed), 2);
        assert_eq!(Counters::get(&c.unkeyed_bytes), n + 20);
    }

    #[test]
    fn replay_intervals_follow_packet_time() {
        let mut clock = PacketClock::new(Duration::from_secs(10));
        let s = 1_000_000_000i64;
        assert_eq!(clock.advance(UnixNanos(3 * s)), None);
        assert_eq!(clock.advance(UnixNanos(9 * s)), None);
        assert_eq!(clock.advance(UnixNanos(10 * s)), Some(UnixNanos(10 * s)));
        assert_eq!(clock.advance(UnixNanos(45 * s)), Some(UnixNanos(20 * s)));
        assert_eq!(clock.advance(UnixNanos(46 * s)), None);
        assert_eq!(clock.finish(), Some(UnixNanos(50 * s)));
        assert_eq!(clock.finish(), None);
    }
}
