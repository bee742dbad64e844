//! What `/metrics` and the status line read: the shared counters, the latest kernel
//! snapshot and the settings shown as gauges.

use std::sync::Arc;

use super::{
    counters::{Counters, FlowCounters},
    kernel::{InterfaceStats, KernelStats},
};

/// Settings shown as gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub sample_rate: u32,
    pub snaplen: u32,
}

/// What `/metrics` and the status line read: the userspace counters and the latest
/// snapshot of the kernel's.
#[derive(Debug, Default)]
pub struct Registry {
    pub counters: Arc<Counters>,
    pub kernel: std::sync::Mutex<KernelStats>,
    /// The kernel's counters per interface, read with `kernel`.
    pub interfaces: std::sync::Mutex<Vec<InterfaceStats>>,
    pub gauges: Gauges,
    /// `--mode flows|both`.
    pub flows: Option<Arc<FlowCounters>>,
}

impl Registry {
    pub fn kernel(&self) -> KernelStats {
        *self.kernel.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_kernel(&self, k: KernelStats) {
        *self.kernel.lock().unwrap_or_else(|e| e.into_inner()) = k;
    }

    pub fn interfaces(&self) -> Vec<InterfaceStats> {
        self.interfaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The kernel's counters, in total and per interface, from one reading.
    pub fn set_counters(&self, k: KernelStats, interfaces: Vec<InterfaceStats>) {
        // Per interface first: a scrape between the two sees totals no smaller than them.
        *self.interfaces.lock().unwrap_or_else(|e| e.into_inner()) = interfaces;
        self.set_kernel(k);
    }
}
