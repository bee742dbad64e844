//! Counters for every place a sample or row can be lost, named for the place.
//!
//! The kernel keeps its own per-CPU counters (`seen`, `sampled`, `ring_drops`); userspace
//! stages count here. When everything has drained:
//! `sampled == ring_drops + decode_errors + queue_drops + write_errors + written`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Userspace counters, shared by the pipeline stages.
#[derive(Debug, Default)]
pub struct Counters {
    /// Samples turned into rows.
    pub decoded: AtomicU64,
    /// Samples that could not be turned into a row (malformed record, frame too short).
    pub decode_errors: AtomicU64,
    /// Rows dropped because the queue to the output was full.
    pub queue_drops: AtomicU64,
    /// Rows the output accepted.
    pub written: AtomicU64,
    /// Rows the output failed to write.
    pub write_errors: AtomicU64,
    /// Write attempts that failed and were retried.
    pub write_retries: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// Kernel counters summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KernelStats {
    pub seen: u64,
    pub sampled: u64,
    pub ring_drops: u64,
}

/// The numbers of one run, printed at exit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub kernel: KernelStats,
    pub decoded: u64,
    pub decode_errors: u64,
    pub queue_drops: u64,
    pub written: u64,
    pub write_errors: u64,
}

impl Summary {
    pub fn new(kernel: KernelStats, c: &Counters) -> Self {
        Self {
            kernel,
            decoded: c.decoded.load(Relaxed),
            decode_errors: c.decode_errors.load(Relaxed),
            queue_drops: c.queue_drops.load(Relaxed),
            written: c.written.load(Relaxed),
            write_errors: c.write_errors.load(Relaxed),
        }
    }

    /// Samples unaccounted for: 0 when every sample became a row or a counted loss.
    pub fn unaccounted(&self) -> i128 {
        i128::from(self.kernel.sampled)
            - i128::from(self.kernel.ring_drops)
            - i128::from(self.decode_errors)
            - i128::from(self.queue_drops)
            - i128::from(self.write_errors)
            - i128::from(self.written)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seen {}, sampled {}, ring drops {}, decoded {}, decode errors {}, queue drops {}, written {}, write errors {}",
            self.kernel.seen,
            self.kernel.sampled,
            self.kernel.ring_drops,
            self.decoded,
            self.decode_errors,
            self.queue_drops,
            self.written,
            self.write_errors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_format() {
        let s = Summary {
            kernel: KernelStats {
                seen: 10,
                sampled: 9,
                ring_drops: 1,
            },
            decoded: 8,
            decode_errors: 0,
            queue_drops: 2,
            written: 6,
            write_errors: 0,
        };
        assert_eq!(
            s.to_string(),
            "seen 10, sampled 9, ring drops 1, decoded 8, decode errors 0, queue drops 2, written 6, write errors 0"
        );
        assert_eq!(s.unaccounted(), 0);
    }
}
