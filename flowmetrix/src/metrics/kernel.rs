//! The kernel's counters (per CPU in the maps), summed over CPUs: per direction, per
//! interface and in total. Snapshots read from the maps, not counted here.

use std::sync::Arc;

use flowmetrix_common::Direction;

/// Kernel counters of one direction, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DirectionStats {
    pub seen: u64,
    pub sampled: u64,
    pub ring_drops: u64,
    /// Flows mode (zero otherwise).
    pub flows: FlowKernelStats,
}

/// The kernel's flow counters of one direction (`CpuStats::flow_*`), summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlowKernelStats {
    /// Packets the flow parser could not key, and their bytes.
    pub unkeyed: u64,
    pub unkeyed_bytes: u64,
    /// Packets sent as flow events through the ring because the flow map was full.
    pub events: u64,
    /// Packets neither the map nor the ring could take, and their bytes.
    pub overflow: u64,
    pub overflow_bytes: u64,
    /// DNS packets passed to the ring outside the sampling, and those it had no room for.
    pub dns_copies: u64,
    pub dns_ring_full: u64,
}

impl FlowKernelStats {
    /// Each counter of `self` and `other` combined by `f`.
    pub fn zip(self, other: Self, f: impl Fn(u64, u64) -> u64) -> Self {
        Self {
            unkeyed: f(self.unkeyed, other.unkeyed),
            unkeyed_bytes: f(self.unkeyed_bytes, other.unkeyed_bytes),
            events: f(self.events, other.events),
            overflow: f(self.overflow, other.overflow),
            overflow_bytes: f(self.overflow_bytes, other.overflow_bytes),
            dns_copies: f(self.dns_copies, other.dns_copies),
            dns_ring_full: f(self.dns_ring_full, other.dns_ring_full),
        }
    }
}

impl DirectionStats {
    /// Each counter of `self` and `other` combined by `f`.
    pub fn zip(self, other: Self, f: impl Fn(u64, u64) -> u64 + Copy) -> Self {
        Self {
            seen: f(self.seen, other.seen),
            sampled: f(self.sampled, other.sampled),
            ring_drops: f(self.ring_drops, other.ring_drops),
            flows: self.flows.zip(other.flows, f),
        }
    }

    pub fn add(&mut self, other: &Self) {
        *self = self.zip(*other, |a, b| a + b);
    }
}

/// Kernel counters of one interface, by direction (indexed by [`Direction`]). Over every
/// interface (those gone included, and `other` for packets of interfaces that had no
/// counters of their own) they add up to [`KernelStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceStats {
    pub interface: Arc<str>,
    pub directions: [DirectionStats; 2],
}

/// Kernel counters summed over CPUs: the totals, and the same split by direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KernelStats {
    /// Totals over both directions.
    pub seen: u64,
    pub sampled: u64,
    pub ring_drops: u64,
    /// Indexed by [`Direction`] (ingress, egress); they add up to the totals.
    pub directions: [DirectionStats; 2],
}

/// The directions in [`KernelStats::directions`] order, with their label values.
pub const DIRECTIONS: [(Direction, &str); 2] = [
    (Direction::Ingress, "ingress"),
    (Direction::Egress, "egress"),
];

impl KernelStats {
    /// Totals computed from the per-direction counters.
    pub fn from_directions(directions: [DirectionStats; 2]) -> Self {
        let [i, e] = directions;
        Self {
            seen: i.seen + e.seen,
            sampled: i.sampled + e.sampled,
            ring_drops: i.ring_drops + e.ring_drops,
            directions,
        }
    }

    /// The counters of direction `d`.
    pub fn direction(&self, d: Direction) -> DirectionStats {
        self.directions[d as usize]
    }
}
