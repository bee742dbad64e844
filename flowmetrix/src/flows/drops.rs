//! The drop program's maps (`--drops on`), seen from userspace: each interval, the drops
//! counted per flow and reason, and every reason's running total.
//!
//! Exact with the flow maps ([`super::kernel`]): the program reads the flow maps' generation
//! `g` from `FLOWCFG` once per drop and counts it in `DROPS{g & 1}`, so a drop is in the
//! interval its packet was counted in. The flow maps' collection flips `g` and waits an RCU
//! grace period (`membarrier(MEMBARRIER_CMD_GLOBAL)`: a tracing program runs inside an RCU
//! read-side section too, so every run that read `g` has finished); [`DropMaps::collect`]
//! then reads and deletes every entry of that generation's map, which no program writes
//! until the flip after next (one flip and one wait an interval for both), with
//! `BPF_MAP_LOOKUP_AND_DELETE_BATCH` ([`BatchMap`]: a few calls, not three an entry). The
//! reasons' totals are never cleared: they are read as they are (`BPF_MAP_LOOKUP_BATCH`). A drop the full map could not take is counted (`DROP_STAT_KEY_FULL`), never lost
//! from its reason's total.

use std::sync::{Arc, atomic::Ordering::Relaxed};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use flowmetrix_common::drops::{
    DROP_MAPS, DROP_REASONS_MAP, DROP_STAT_KEY_FULL, DROP_STAT_OTHER_IF, DROP_STAT_REASON_FULL,
    DROP_STATS, DROP_STATS_MAP, DropKey, DropValue,
};

use super::{
    bpf::{BatchMap, CallError, FIRST_BATCH},
    health::Health,
};
use crate::{kernel_btf::DropReasons, metrics::DropCounters};

#[derive(Debug, thiserror::Error)]
pub enum DropMapError {
    #[error("the kernel object lacks the map {0}")]
    Missing(&'static str),
    #[error("map {0} has an unexpected type")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error("reading the drop maps failed")]
    Read(#[source] CallError),
}

/// One interval's drops, and the running totals.
#[derive(Debug, Default)]
pub struct DropsCollected {
    pub drops: Vec<(DropKey, DropValue)>,
    /// Reason value → drops since start.
    pub totals: Vec<(u32, u64)>,
    /// `DROPSTATS`, summed over CPUs.
    pub stats: [u64; DROP_STATS as usize],
}

/// The drop program's maps, and the names of the running kernel's reasons.
pub struct DropMaps {
    maps: [BatchMap<DropKey, DropValue>; 2],
    reasons: BatchMap<u32, u64>,
    stats: PerCpuArray<MapData, u64>,
    names: Names,
}

impl DropMaps {
    /// Takes the maps out of a loaded object.
    pub fn from_ebpf(ebpf: &mut Ebpf, names: DropReasons) -> Result<Self, DropMapError> {
        let maps = [
            batch_map(ebpf, DROP_MAPS[0])?,
            batch_map(ebpf, DROP_MAPS[1])?,
        ];
        let reasons = batch_map(ebpf, DROP_REASONS_MAP)?;
        let stats = PerCpuArray::try_from(take(ebpf, DROP_STATS_MAP)?)
            .map_err(|e| DropMapError::Map(DROP_STATS_MAP, e))?;
        Ok(Self {
            maps,
            reasons,
            stats,
            names: Names::new(names),
        })
    }

    /// Reads and clears the drops of `generation`, which the programs no longer count into
    /// (call right after the flow maps' collection of that generation), the totals and the
    /// counters. Blocking.
    pub fn collect(&mut self, generation: u32) -> Result<DropsCollected, DropMapError> {
        let mut out = DropsCollected::default();
        // No program writes this map until the flip after next: read and delete it whole.
        self.maps[(generation & 1) as usize]
            .read_and_delete(&mut out.drops)
            .map_err(DropMapError::Read)?;
        self.reasons
            .read(&mut out.totals)
            .map_err(DropMapError::Read)?;
        for (i, s) in out.stats.iter_mut().enumerate() {
            if let Ok(per_cpu) = self.stats.get(&(i as u32), 0) {
                *s = per_cpu.iter().sum();
            }
        }
        Ok(out)
    }

    /// Reads one key at a time from now on, as on a kernel that refuses batch calls (for
    /// tests of that path).
    #[doc(hidden)]
    pub fn without_batch_calls(&mut self) {
        for map in &mut self.maps {
            map.without_batch_calls();
        }
        self.reasons.without_batch_calls();
    }

    /// Hands a collection to `health` (each drop to its flow) and `counters`.
    pub fn deliver(&mut self, c: &DropsCollected, health: &mut Health, counters: &DropCounters) {
        self.names.deliver(c, health, counters);
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DropMapError> {
    ebpf.take_map(name).ok_or(DropMapError::Missing(name))
}

fn batch_map<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<BatchMap<K, V>, DropMapError> {
    BatchMap::new(take(ebpf, name)?, FIRST_BATCH).map_err(|e| DropMapError::Map(name, e))
}

/// The running kernel's reason names, each made once and shared by the rows that carry it.
pub struct Names {
    names: DropReasons,
    interned: std::collections::HashMap<u32, Arc<str>>,
}

impl Names {
    pub fn new(names: DropReasons) -> Self {
        Self {
            names,
            interned: std::collections::HashMap::new(),
        }
    }

    /// `reason`'s name, as the running kernel calls it.
    pub fn name(&mut self, reason: u32) -> Arc<str> {
        let names = &self.names;
        Arc::clone(
            self.interned
                .entry(reason)
                .or_insert_with(|| names.name(reason).into()),
        )
    }

    /// Hands a collection to `health` (each drop to its flow) and `counters` (the reasons'
    /// totals and the losses).
    pub fn deliver(&mut self, c: &DropsCollected, health: &mut Health, counters: &DropCounters) {
        for (k, v) in &c.drops {
            let reason = self.name(k.reason);
            health.drop(k.flow, reason, v.packets, v.bytes, (v.first_ns, v.last_ns));
        }
        counters.set_totals(
            c.totals
                .iter()
                .map(|(r, n)| (self.names.name(*r).into_owned(), *n)),
        );
        counters
            .map_full
            .store(c.stats[DROP_STAT_KEY_FULL as usize], Relaxed);
        counters
            .reasons_full
            .store(c.stats[DROP_STAT_REASON_FULL as usize], Relaxed);
        counters
            .other_interface
            .store(c.stats[DROP_STAT_OTHER_IF as usize], Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use flowmetrix_common::{Direction, flow_key::FlowKey};

    use super::*;
    use crate::{flows::health::Parts, kernel_btf::KernelBtf, metrics::FlowCounters};

    fn names() -> Names {
        Names::new(KernelBtf::running().unwrap().drop_reasons().unwrap())
    }

    /// The running kernel's value of reason `name`.
    fn value_of(n: &mut Names, name: &str) -> u32 {
        (0..1024).find(|v| &*n.name(*v) == name).unwrap()
    }

    #[test]
    fn a_collection_puts_each_drop_on_its_flow_and_names_every_total() {
        let mut n = names();
        let (no_socket, netfilter) = (
            value_of(&mut n, "NO_SOCKET"),
            value_of(&mut n, "NETFILTER_DROP"),
        );
        let mut flow = FlowKey::ZERO;
        flow.ifindex = 3;
        flow.direction = Direction::Ingress as u8;
        flow.ether_type = 0x0800;
        flow.protocol = 17;
        flow.src_addr[..4].copy_from_slice(&[10, 0, 0, 2]);
        flow.dst_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        flow.dst_port = 9;
        let v = |packets, first_ns| DropValue {
            packets,
            bytes: packets * 142,
            first_ns,
            last_ns: first_ns + 5,
        };
        let key = |reason| DropKey {
            flow,
            reason,
            _pad: 0,
        };
        let c = DropsCollected {
            drops: vec![(key(no_socket), v(10, 100)), (key(netfilter), v(2, 50))],
            totals: vec![(no_socket, 40), (netfilter, 2), ((9_999 << 16) | 1, 1)],
            stats: [53, 4, 1, 7],
        };
        let counters = FlowCounters::default();
        let mut health = Health::new(Parts {
            drops: true,
            ..Parts::default()
        });
        n.deliver(&c, &mut health, &counters.drops);
        let h = health.fill(&flow);
        assert_eq!(h.drop_packets, Some(12));
        assert_eq!(h.drop_bytes, Some(12 * 142));
        assert_eq!(h.drop_reason.as_deref(), Some("NO_SOCKET"));
        assert!(health.finish(&counters).is_empty());
        let mut totals = counters.drops.totals();
        totals.sort();
        assert_eq!(
            totals,
            [
                (((9_999u32 << 16) | 1).to_string(), 1),
                ("NETFILTER_DROP".to_owned(), 2),
                ("NO_SOCKET".to_owned(), 40)
            ]
        );
        assert_eq!(counters.drops.map_full.load(Relaxed), 4);
        assert_eq!(counters.drops.reasons_full.load(Relaxed), 1);
        assert_eq!(counters.drops.other_interface.load(Relaxed), 7);
        // One name, shared.
        assert!(Arc::ptr_eq(&n.name(no_socket), &n.name(no_socket)));
    }
}
