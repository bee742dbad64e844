//! The kernel's per-CPU counters, by interface slot and direction: read on the pipeline's
//! tick and, through a [`CounterReader`], at each `/metrics` scrape, while the capture
//! gives and takes back slots as interfaces come and go.

use std::sync::{Arc, Mutex, MutexGuard};

use aya::maps::{MapData, PerCpuArray};
use flowmetrix_common::{CpuStats, Direction as KernelDirection, stats_index};

use super::{error::CaptureError, slots::SlotBook};
use crate::metrics::{DirectionStats, FlowKernelStats, InterfaceStats, KernelStats};

/// The counters map and which interface holds each slot.
pub(super) struct KernelCounters {
    stats: PerCpuArray<MapData, CpuStats>,
    pub(super) book: SlotBook,
}

/// The kernel's counters, shared by the capture and whoever reads them.
#[derive(Clone)]
pub struct CounterReader(Arc<Mutex<KernelCounters>>);

impl CounterReader {
    pub(super) fn new(stats: PerCpuArray<MapData, CpuStats>) -> Self {
        Self(Arc::new(Mutex::new(KernelCounters {
            stats,
            book: SlotBook::default(),
        })))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, KernelCounters> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kernel counters summed over all CPUs: in total and per direction, and per interface
    /// (those that went away included), from one reading, so the second add up to the
    /// first.
    pub fn read(&self) -> Result<(KernelStats, Vec<InterfaceStats>), CaptureError> {
        let k = self.lock();
        let raw = (0..k.book.used())
            .map(|slot| k.read_slot(slot))
            .collect::<Result<Vec<_>, _>>()?;
        let mut dirs = [DirectionStats::default(); 2];
        for slot in &raw {
            for (total, d) in dirs.iter_mut().zip(slot) {
                total.add(d);
            }
        }
        Ok((KernelStats::from_directions(dirs), k.book.report(&raw)))
    }
}

impl KernelCounters {
    /// The counters of slot `slot`, summed over CPUs, by direction.
    pub(super) fn read_slot(&self, slot: u32) -> Result<[DirectionStats; 2], CaptureError> {
        let mut dirs = [DirectionStats::default(); 2];
        for d in [KernelDirection::Ingress, KernelDirection::Egress] {
            let per_cpu = self
                .stats
                .get(&stats_index(slot, d), 0)
                .map_err(CaptureError::Stats)?;
            dirs[d as usize] = per_cpu.iter().fold(DirectionStats::default(), |acc, c| {
                acc.zip(
                    DirectionStats {
                        seen: c.seen,
                        sampled: c.sampled,
                        ring_drops: c.ring_full,
                        flows: FlowKernelStats {
                            unkeyed: c.flow_unkeyed,
                            unkeyed_bytes: c.flow_unkeyed_bytes,
                            events: c.flow_events,
                            overflow: c.flow_overflow,
                            overflow_bytes: c.flow_overflow_bytes,
                            dns_copies: c.dns_copies,
                            dns_ring_full: c.dns_ring_full,
                        },
                    },
                    |a, b| a + b,
                )
            });
        }
        Ok(dirs)
    }
}
