//! The drop and socket maps read by the flows stage (root tier): entries written from
//! userspace into the maps of the loaded kernel object, then read and cleared through
//! [`DropMaps::collect`] and [`TcpSockets::collect`] as the collector does — with batch
//! calls, and one key at a time as on a kernel that refuses them — and what a collection of
//! a full drop map costs each way.

use std::time::{Duration, Instant};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, Map, MapData},
};
use flowmetrix::{
    flows::{drops::DropMaps, tcp::TcpSockets},
    kernel_btf::KernelBtf,
    kernel_object,
};
use flowmetrix_common::{
    drops::{DROP_MAPS, DROP_MAX_ENTRIES, DROP_REASONS_MAP, DropKey, DropValue},
    flow_key::FlowKey,
    tcp::{AF_INET, TCP_SOCKET_MAPS, TcpSocketKey, TcpSocketValue},
};

use crate::common;

/// The kernel object, its maps created, no program loaded.
fn object() -> Ebpf {
    EbpfLoader::new()
        .load(kernel_object::object().expect("the kernel programs (--features ebpf)"))
        .expect("load the kernel object (needs root)")
}

/// A second handle on the object's map `name`, to write it once the reader has taken it.
fn writer<K: aya::Pod, V: aya::Pod>(ebpf: &Ebpf, name: &str) -> HashMap<MapData, K, V> {
    let id = ebpf
        .map(name)
        .and_then(|m| match m {
            Map::HashMap(m) => Some(m.info().expect("map info").id()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{name} is a hash map"));
    let map = MapData::from_id(id).expect("open the map by id");
    HashMap::try_from(Map::HashMap(map)).expect("a map of K → V")
}

fn drop_key(i: u32) -> DropKey {
    let mut flow = FlowKey::ZERO;
    flow.ifindex = 3;
    flow.ether_type = 0x0800;
    flow.protocol = 17;
    flow.src_port = i as u16;
    flow.dst_port = (i >> 16) as u16;
    DropKey {
        flow,
        reason: 2 + i % 3,
        _pad: 0,
    }
}

fn drop_value(i: u32) -> DropValue {
    DropValue {
        packets: u64::from(i) + 1,
        bytes: 100 * (u64::from(i) + 1),
        first_ns: u64::from(i),
        last_ns: u64::from(i) + 7,
    }
}

fn fill(map: &mut HashMap<MapData, DropKey, DropValue>, n: u32) {
    for i in 0..n {
        map.insert(drop_key(i), drop_value(i), 0)
            .expect("insert a drop");
    }
}

/// The object's drop maps, the reader holding them, and writers of both halves and the
/// reasons' totals.
struct Drops {
    _ebpf: Ebpf,
    maps: DropMaps,
    halves: [HashMap<MapData, DropKey, DropValue>; 2],
    reasons: HashMap<MapData, u32, u64>,
}

fn drops(batch: bool) -> Drops {
    let mut ebpf = object();
    let halves = [writer(&ebpf, DROP_MAPS[0]), writer(&ebpf, DROP_MAPS[1])];
    let reasons = writer(&ebpf, DROP_REASONS_MAP);
    let names = KernelBtf::running()
        .expect("the running kernel's BTF")
        .drop_reasons()
        .expect("drop reasons");
    let mut maps = DropMaps::from_ebpf(&mut ebpf, names).expect("the drop maps");
    if !batch {
        maps.without_batch_calls();
    }
    Drops {
        _ebpf: ebpf,
        maps,
        halves,
        reasons,
    }
}

#[test]
fn the_idle_drop_map_is_read_whole_and_emptied_the_other_half_and_the_totals_stay() {
    common::require_root();
    for batch in [true, false] {
        let mut d = drops(batch);
        fill(&mut d.halves[0], 3_000);
        fill(&mut d.halves[1], 5);
        for r in 0..10u32 {
            d.reasons.insert(r, u64::from(r) * 3, 0).unwrap();
        }
        let c = d.maps.collect(0).unwrap();
        let mut got = c.drops.clone();
        got.sort_by_key(|(k, _)| (k.flow.dst_port, k.flow.src_port));
        let want: Vec<_> = (0..3_000).map(|i| (drop_key(i), drop_value(i))).collect();
        assert_eq!(got, want, "batch {batch}: every drop of generation 0, once");
        let mut totals = c.totals.clone();
        totals.sort_unstable();
        assert_eq!(
            totals,
            (0..10u32)
                .map(|r| (r, u64::from(r) * 3))
                .collect::<Vec<_>>()
        );
        // Emptied: the next collection of that half finds nothing; the totals stay.
        let c = d.maps.collect(0).unwrap();
        assert!(c.drops.is_empty(), "batch {batch}");
        assert_eq!(c.totals.len(), 10);
        // The other half was not touched.
        let c = d.maps.collect(1).unwrap();
        assert_eq!(c.drops.len(), 5, "batch {batch}");
        assert!(d.maps.collect(1).unwrap().drops.is_empty());
    }
}

#[test]
fn the_idle_socket_map_is_read_whole_and_emptied() {
    common::require_root();
    for batch in [true, false] {
        let mut ebpf = object();
        let mut halves: [HashMap<MapData, TcpSocketKey, TcpSocketValue>; 2] = [
            writer(&ebpf, TCP_SOCKET_MAPS[0]),
            writer(&ebpf, TCP_SOCKET_MAPS[1]),
        ];
        let mut sockets = TcpSockets::from_ebpf(&mut ebpf).expect("the socket maps");
        if !batch {
            sockets.without_batch_calls();
        }
        let key = |i: u16, family| TcpSocketKey {
            family,
            local_port: 40_000,
            remote_port: i,
            local_addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..TcpSocketKey::ZERO
        };
        let value = |i: u16| TcpSocketValue {
            retransmits: u32::from(i),
            rtt_us: 10 * u32::from(i),
        };
        for i in 1..=2_000u16 {
            halves[1].insert(key(i, AF_INET), value(i), 0).unwrap();
        }
        // Another family: read and cleared, not given.
        halves[1].insert(key(1, 1), value(1), 0).unwrap();
        halves[0].insert(key(1, AF_INET), value(1), 0).unwrap();
        let c = sockets.collect(1).unwrap();
        assert_eq!(
            (c.map_entries, c.sockets.len()),
            (2_001, 2_000),
            "batch {batch}"
        );
        let mut got: Vec<_> = c
            .sockets
            .iter()
            .map(|s| (s.key.remote_port, s.retransmits, s.rtt_us))
            .collect();
        got.sort_unstable();
        let want: Vec<_> = (1..=2_000u16)
            .map(|i| (i, u32::from(i), Some(10 * u64::from(i))))
            .collect();
        assert_eq!(got, want, "batch {batch}");
        assert_eq!(sockets.collect(1).unwrap().map_entries, 0, "emptied");
        assert_eq!(
            sockets.collect(0).unwrap().map_entries,
            1,
            "the other half kept"
        );
    }
}

/// What collecting a full drop map costs: with batch calls, one key at a time (get-next-key,
/// lookup, delete: as on a kernel that refuses batch calls), and as the drop map was read
/// before the batch reader (aya's keys, then get and remove each). Printed, not asserted:
/// `--nocapture` shows it.
#[test]
fn a_full_drop_map_collection_cost() {
    common::require_root();
    const REPS: usize = 5;
    let n = DROP_MAX_ENTRIES;
    let mut line = Vec::new();
    for way in [
        "batch calls",
        "one key at a time",
        "before: aya keys, get, remove",
    ] {
        let mut d = drops(way != "one key at a time");
        let mut times: Vec<Duration> = (0..REPS)
            .map(|_| {
                fill(&mut d.halves[0], n);
                let t = Instant::now();
                let read = if way.starts_with("before") {
                    let map = &mut d.halves[0];
                    let keys = map.keys().collect::<Result<Vec<_>, _>>().unwrap();
                    let mut out = Vec::new();
                    for k in keys {
                        if let Ok(v) = map.get(&k, 0) {
                            out.push((k, v));
                        }
                        map.remove(&k).unwrap();
                    }
                    out.len()
                } else {
                    d.maps.collect(0).unwrap().drops.len()
                };
                let took = t.elapsed();
                assert_eq!(read, n as usize, "{way}");
                took
            })
            .collect();
        times.sort_unstable();
        let median = times[REPS / 2];
        line.push(format!(
            "{way}: {:.2} ms ({:.0} ns an entry)",
            median.as_secs_f64() * 1e3,
            median.as_nanos() as f64 / f64::from(n)
        ));
    }
    eprintln!(
        "collecting a full drop map ({n} entries), median of {REPS}: {}",
        line.join("; ")
    );
}
