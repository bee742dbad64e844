//! What `/metrics` and the status line read: the shared counters, the kernel's counters
//! (read afresh at each scrape where the source can, else its latest snapshot) and the
//! settings shown as gauges.

use std::sync::{Arc, Mutex};

use super::{
    counters::{Counters, FlowCounters},
    dns::DnsCounters,
    kernel::{InterfaceStats, KernelStats},
};

/// Settings shown as gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub sample_rate: u32,
    pub snaplen: u32,
}

/// Reads the kernel's counters now, in total and per interface (None: they cannot be read).
pub type KernelReader = Box<dyn Fn() -> Option<(KernelStats, Vec<InterfaceStats>)> + Send + Sync>;

/// The kernel's counters as the page sees them: the latest snapshot (the pipeline's tick)
/// and, live, a reader for a fresh one at each scrape.
#[derive(Default)]
pub struct KernelView {
    latest: Mutex<KernelStats>,
    reader: Mutex<Option<KernelReader>>,
}

impl std::fmt::Debug for KernelView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelView")
            .field(
                "latest",
                &*self.latest.lock().unwrap_or_else(|e| e.into_inner()),
            )
            .finish_non_exhaustive()
    }
}

/// What `/metrics` and the status line read: the userspace counters and the kernel's.
#[derive(Debug, Default)]
pub struct Registry {
    pub counters: Arc<Counters>,
    pub kernel: KernelView,
    /// The kernel's counters per interface, read with `kernel`.
    pub interfaces: Mutex<Vec<InterfaceStats>>,
    pub gauges: Gauges,
    /// `--mode flows|both`.
    pub flows: Option<Arc<FlowCounters>>,
    /// `--mode flows|both`: the DNS transactions.
    pub dns: Option<Arc<DnsCounters>>,
}

impl Registry {
    /// The latest snapshot of the kernel's counters.
    pub fn kernel(&self) -> KernelStats {
        *self.kernel.latest.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_kernel(&self, k: KernelStats) {
        *self.kernel.latest.lock().unwrap_or_else(|e| e.into_inner()) = k;
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

    /// Reads the kernel's counters afresh at each scrape with `reader` (a live capture's).
    pub fn read_kernel_with(&self, reader: Option<KernelReader>) {
        *self.kernel.reader.lock().unwrap_or_else(|e| e.into_inner()) = reader;
    }

    /// The kernel's counters now: read afresh where a reader is set, else the latest
    /// snapshot (the tick's, which alone moves the status line's deltas). A scrape calls this after reading the userspace
    /// counters: every sample those counted was sampled before, so the page's loss
    /// equation never goes negative.
    pub fn fresh_kernel(&self) -> (KernelStats, Vec<InterfaceStats>) {
        let fresh = self
            .kernel
            .reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|read| read());
        fresh.unwrap_or_else(|| (self.kernel(), self.interfaces()))
    }
}
