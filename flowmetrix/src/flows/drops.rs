//! The drop program's maps (`--drops on`), seen from userspace: each interval, the drops
//! counted per flow and reason, and every reason's running total.
//!
//! Exact the way the flow maps are ([`super::kernel`]): the program reads the generation
//! `g` from `DROPCFG` once per drop and counts it in `DROPS{g & 1}`; [`DropMaps::collect`]
//! writes `g + 1`, waits an RCU grace period (`membarrier(MEMBARRIER_CMD_GLOBAL)`: a
//! tracing program runs inside an RCU read-side section, so every run that read `g` has
//! finished), then reads and deletes every entry of the idle map, which no program writes
//! until the flip after next. The reasons' totals are never cleared: they are read as they
//! are. A drop the full map could not take is counted (`DROP_STAT_KEY_FULL`), never lost
//! from its reason's total.

use std::sync::Arc;

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray},
};
use flowmetrix_common::drops::{
    DROP_CFG_GENERATION, DROP_CONFIG_MAP, DROP_MAPS, DROP_REASONS_MAP, DROP_STAT_KEY_FULL,
    DROP_STAT_OTHER_IF, DROP_STAT_REASON_FULL, DROP_STATS, DROP_STATS_MAP, DropKey, DropValue,
};

use super::{health::Health, kernel::membarrier};
use crate::{kernel_btf::DropReasons, metrics::DropCounters};

#[derive(Debug, thiserror::Error)]
pub enum DropMapError {
    #[error("the kernel object lacks the map {0}")]
    Missing(&'static str),
    #[error("map {0} has an unexpected type")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error("cannot flip the drop maps' generation")]
    Config(#[source] aya::maps::MapError),
    #[error("membarrier(MEMBARRIER_CMD_GLOBAL) failed")]
    Membarrier(#[source] std::io::Error),
    #[error("reading the drop maps failed")]
    Read(#[source] aya::maps::MapError),
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
    cfg: Array<MapData, u32>,
    maps: [HashMap<MapData, DropKey, DropValue>; 2],
    reasons: HashMap<MapData, u32, u64>,
    stats: PerCpuArray<MapData, u64>,
    generation: u32,
    names: DropReasons,
    /// Reason names already made, shared by the rows that carry them.
    interned: std::collections::HashMap<u32, Arc<str>>,
}

impl DropMaps {
    /// Takes the maps out of a loaded object (generation 0).
    pub fn from_ebpf(ebpf: &mut Ebpf, names: DropReasons) -> Result<Self, DropMapError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(DropMapError::Missing(name));
        let cfg = Array::try_from(take(DROP_CONFIG_MAP)?)
            .map_err(|e| DropMapError::Map(DROP_CONFIG_MAP, e))?;
        let maps = [
            HashMap::try_from(take(DROP_MAPS[0])?)
                .map_err(|e| DropMapError::Map(DROP_MAPS[0], e))?,
            HashMap::try_from(take(DROP_MAPS[1])?)
                .map_err(|e| DropMapError::Map(DROP_MAPS[1], e))?,
        ];
        let reasons = HashMap::try_from(take(DROP_REASONS_MAP)?)
            .map_err(|e| DropMapError::Map(DROP_REASONS_MAP, e))?;
        let stats = PerCpuArray::try_from(take(DROP_STATS_MAP)?)
            .map_err(|e| DropMapError::Map(DROP_STATS_MAP, e))?;
        Ok(Self {
            cfg,
            maps,
            reasons,
            stats,
            generation: 0,
            names,
            interned: std::collections::HashMap::new(),
        })
    }

    /// Flips the generation and reads the interval's drops, the totals and the counters.
    pub fn collect(&mut self) -> Result<DropsCollected, DropMapError> {
        let old = self.generation;
        let new = old.wrapping_add(1);
        self.cfg
            .set(DROP_CFG_GENERATION, new, 0)
            .map_err(DropMapError::Config)?;
        self.generation = new;
        membarrier::global().map_err(DropMapError::Membarrier)?;
        let map = &mut self.maps[(old & 1) as usize];
        let keys = map
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(DropMapError::Read)?;
        let mut out = DropsCollected::default();
        for k in keys {
            // No program writes this map until the flip after next: read, then delete.
            if let Ok(v) = map.get(&k, 0) {
                out.drops.push((k, v));
            }
            map.remove(&k).map_err(DropMapError::Read)?;
        }
        for e in self.reasons.iter() {
            out.totals.push(e.map_err(DropMapError::Read)?);
        }
        for (i, s) in out.stats.iter_mut().enumerate() {
            if let Ok(per_cpu) = self.stats.get(&(i as u32), 0) {
                *s = per_cpu.iter().sum();
            }
        }
        Ok(out)
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

    /// Hands a collection to `health` (each drop to its flow) and `counters`.
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
        use std::sync::atomic::Ordering::Relaxed;
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
