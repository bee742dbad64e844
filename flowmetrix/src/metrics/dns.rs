//! The DNS transactions' counters (`--mode flows|both`): what the matcher saw and made, and
//! the `dns_data` table's own sink counters (on the page: [`super::exposition`]). When everything has drained, `rows ==
//! sink.written + sink.write_errors + sink.queue_drops + sink.spooled + sink.unread`.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use super::{
    counters::{Counters, SinkFigures},
    kernel::KernelStats,
};

#[derive(Debug, Default)]
pub struct DnsCounters {
    pub sink: Arc<Counters>,
    /// Queries seen.
    pub queries: AtomicU64,
    /// Rows made: answered transactions and timeouts.
    pub rows: AtomicU64,
    pub timeouts: AtomicU64,
    /// Answers to no query seen.
    pub unmatched_answers: AtomicU64,
    /// A query again with the same id before its answer.
    pub repeated_queries: AtomicU64,
    /// Queries that found the table of waiting queries full: no row for them.
    pub table_full: AtomicU64,
    /// DNS-port packets whose message could not be read.
    pub malformed: AtomicU64,
    /// Queries still waiting at the end, younger than the timeout: no row for them.
    pub pending_at_end: AtomicU64,
}

/// The DNS part of the exit summary, read once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsSummary {
    pub rows: u64,
    /// What became of them.
    pub sink: SinkFigures,
    pub queries: u64,
    pub timeouts: u64,
    pub unmatched_answers: u64,
    pub repeated_queries: u64,
    pub table_full: u64,
    pub malformed: u64,
    pub pending_at_end: u64,
    /// DNS packets the kernel passed to the ring outside the sampling, and those the ring
    /// had no room for (live, flows mode).
    pub kernel_copies: u64,
    pub ring_drops: u64,
}

impl DnsSummary {
    pub fn new(d: &DnsCounters, kernel: &KernelStats) -> Self {
        let k = kernel.directions[0]
            .flows
            .zip(kernel.directions[1].flows, |a, b| a + b);
        Self {
            kernel_copies: k.dns_copies,
            ring_drops: k.dns_ring_full,
            rows: d.rows.load(Relaxed),
            sink: SinkFigures::of(&d.sink),
            queries: d.queries.load(Relaxed),
            timeouts: d.timeouts.load(Relaxed),
            unmatched_answers: d.unmatched_answers.load(Relaxed),
            repeated_queries: d.repeated_queries.load(Relaxed),
            table_full: d.table_full.load(Relaxed),
            malformed: d.malformed.load(Relaxed),
            pending_at_end: d.pending_at_end.load(Relaxed),
        }
    }

    /// DNS rows unaccounted for: 0 when every row was written or counted as lost.
    pub fn unaccounted(&self) -> i128 {
        self.sink.unaccounted(self.rows)
    }

    /// The DNS part, name and number, in the order printed; the spool's figures only when a
    /// spool could take rows.
    pub fn fields(&self, spool: bool) -> Vec<(&'static str, u64)> {
        let mut v = self.sink.fields(self.rows, spool);
        v.extend([
            ("queries", self.queries),
            ("timeouts", self.timeouts),
            ("unmatched answers", self.unmatched_answers),
            ("repeated queries", self.repeated_queries),
            ("table full", self.table_full),
            ("malformed", self.malformed),
            ("pending at end", self.pending_at_end),
        ]);
        // Only where the kernel passed DNS packets (live, flows mode).
        if self.kernel_copies > 0 {
            v.extend([
                ("kernel copies", self.kernel_copies),
                ("ring drops", self.ring_drops),
            ]);
        }
        v
    }
}
