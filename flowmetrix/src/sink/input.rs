//! A table's front door: the queue to its output, and what happens when it is full.

use std::sync::Arc;

use crate::{
    metrics::Counters,
    queue::{self, Rejected},
    record::PacketRecord,
    schema::Table,
    sink::greptime::spool::thread::{Item, Payload, SpoolWriter, UnencodedRows},
    throttle::Throttled,
};

/// Where rows go when the queue is full.
pub(super) enum Overflow {
    /// Counted as queue drops.
    Drop,
    /// To the disk spool, for this database and table.
    Spool {
        writer: Arc<SpoolWriter>,
        database: String,
        table: String,
    },
}

/// A table's front door, used by the thread that drains the source. One per table: its
/// own queue, overflow and counters.
pub struct Input<R = PacketRecord> {
    tx: queue::Sender<Vec<R>>,
    overflow: Overflow,
    counters: Arc<Counters>,
    full: Throttled,
    spooling: Throttled,
    /// `--output none`: [`drain`](Self::drain) counts rows as written where they are made,
    /// with no queue or task between.
    discards: bool,
}

impl<R: Table> Input<R> {
    pub(super) fn new(
        tx: queue::Sender<Vec<R>>,
        overflow: Overflow,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            tx,
            overflow,
            counters,
            full: Throttled::default(),
            spooling: Throttled::default(),
            discards: false,
        }
    }

    /// An input whose output keeps nothing (`--output none`).
    pub(super) fn discarding(mut self) -> Self {
        self.discards = true;
        self
    }

    /// Hands the rows of one drain over ([`hand_over`](Self::hand_over)), leaving `rows`
    /// empty with room for as many: the next drain is likely to bring as many, and a `Vec`
    /// grown by doubling copies every row so far (`cargo bench -p flowmetrix --bench
    /// pipeline -- drain`). An output that keeps nothing counts them as written here, and
    /// `rows` keeps its room: handing each drain to the output's task, on another thread,
    /// woke that thread and freed every row there, for nothing (`FLOWMETRIX_BENCH_ONLY=none
    /// cargo bench -p flowmetrix --features ebpf --bench capture_rate`, BENCHMARKS.md).
    pub async fn drain(&self, rows: &mut Vec<R>, wait: bool) {
        if self.discards {
            Counters::add(&self.counters.written, rows.len() as u64);
            rows.clear();
            return;
        }
        let n = rows.len();
        self.hand_over(std::mem::replace(rows, Vec::with_capacity(n)), wait)
            .await;
    }

    /// Hands `rows` over: waiting for room when `wait` ([`send`](Self::send), a replay),
    /// else at once ([`offer`](Self::offer), live capture).
    pub async fn hand_over(&self, rows: Vec<R>, wait: bool) {
        if wait {
            self.send(rows).await;
        } else {
            self.offer(rows);
        }
    }

    /// Hands `rows` over without waiting: to the queue, else to the overflow policy, else
    /// counted.
    pub fn offer(&self, rows: Vec<R>) {
        if rows.is_empty() {
            return;
        }
        let rows = trimmed(rows);
        let rows = match self.tx.try_send(rows) {
            Ok(()) => return,
            // The sink has stopped (its error is reported); these rows are not written.
            Err(Rejected::Closed(rows)) => {
                return Counters::add(&self.counters.write_errors, rows.len() as u64);
            }
            Err(Rejected::Full(rows)) => rows,
        };
        let n = rows.len() as u64;
        if let Overflow::Spool {
            writer,
            database,
            table,
        } = &self.overflow
        {
            let item = Item {
                database: database.clone(),
                payload: Payload::Rows(Box::new(UnencodedRows {
                    table: table.clone(),
                    rows,
                })),
            };
            if writer.try_put(item).is_ok() {
                return self.spooling.warn(format_args!(
                    "GreptimeDB falls behind the capture: {} go to the disk spool (raise --max-in-flight or --batch-size, or sample with --sample-rate)",
                    R::ROWS
                ));
            }
            self.full.warn(format_args!(
                "the output and its spool both fall behind: {} are dropped (raise --queue-size or --max-in-flight, or sample with --sample-rate)",
                R::ROWS
            ));
        } else {
            self.full.warn(format_args!(
                "the output falls behind: {} are dropped (raise --queue-size, or sample with --sample-rate)",
                R::ROWS
            ));
        }
        Counters::add(&self.counters.queue_drops, n);
    }

    /// Hands `rows` over, waiting for room in the queue (replay: nothing is lost by going
    /// slower).
    pub async fn send(&self, rows: Vec<R>) {
        if rows.is_empty() {
            return;
        }
        let rows = trimmed(rows);
        if let Err(rows) = self.tx.send_waiting(rows).await {
            Counters::add(&self.counters.write_errors, rows.len() as u64);
        }
    }

    /// Rows waiting for the output (and for its spool).
    pub fn depth(&self) -> usize {
        self.tx.depth()
            + match &self.overflow {
                Overflow::Spool { writer, .. } => writer.depth(),
                Overflow::Drop => 0,
            }
    }
}

/// `rows` without spare capacity: the queue counts what a `Vec` holds, spare room included
/// ([`queue::bytes_for`]). Shrinking is in place (glibc's `realloc` to a smaller size, or
/// `mremap` for a block mapped on its own): no copy.
fn trimmed<R>(mut rows: Vec<R>) -> Vec<R> {
    if rows.capacity() > rows.len() {
        rows.shrink_to_fit();
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::UnixNanos;

    fn rows(n: i64) -> Vec<PacketRecord> {
        (0..n)
            .map(|i| PacketRecord {
                ts: UnixNanos(i),
                ..PacketRecord::default()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_drain_is_handed_over_and_leaves_room_for_as_many() {
        let (tx, mut rx) = queue::bounded_in(1_000, queue::bytes_for::<PacketRecord>(1_000));
        let counters = Arc::new(Counters::default());
        let input = Input::new(tx, Overflow::Drop, Arc::clone(&counters));
        let mut drained = rows(300);
        input.drain(&mut drained, false).await;
        assert!(drained.is_empty());
        assert!(drained.capacity() >= 300);
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(300));
        assert_eq!(Counters::get(&counters.written), 0, "written by the output");
    }

    #[tokio::test]
    async fn an_output_that_keeps_nothing_counts_the_drain_as_written_and_keeps_its_vec() {
        let (tx, mut rx) = queue::bounded_in(1_000, queue::bytes_for::<PacketRecord>(1_000));
        let counters = Arc::new(Counters::default());
        let input = Input::new(tx, Overflow::Drop, Arc::clone(&counters)).discarding();
        let mut drained = rows(300);
        let kept = drained.as_ptr();
        input.drain(&mut drained, false).await;
        assert!(drained.is_empty());
        assert_eq!(drained.as_ptr(), kept, "the same Vec, for the next drain");
        assert_eq!(Counters::get(&counters.written), 300);
        assert_eq!(Counters::get(&counters.queue_drops), 0);
        drop(input);
        assert!(rx.recv().await.is_none(), "nothing went to the queue");
    }
}
