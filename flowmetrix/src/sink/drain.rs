//! How an output lets rows go without writing them: on purpose (`--output none`), after
//! a fatal error, or once the reader of stdout has left.

use crate::{metrics::Counters, queue::Receiver};

/// `--output none`: rows are accepted and dropped on purpose (benchmarks), so they count
/// as written.
pub async fn discard<R>(mut rx: Receiver<Vec<R>>, counters: &Counters) {
    while let Some(batch) = rx.recv().await {
        Counters::add(&counters.written, batch.len() as u64);
    }
}

/// After a fatal error: stop accepting batches and count what was queued as failed.
pub fn fail_remaining<R>(mut rx: Receiver<Vec<R>>, counters: &Counters) {
    for batch in rx.close() {
        Counters::add(&counters.write_errors, batch.len() as u64);
    }
}

/// The reader of stdout has left: take every batch until the pipeline, stopping, closes the
/// queue, and count its rows as unread (not written, not lost: nobody asked for them).
pub async fn unread<R>(mut rx: Receiver<Vec<R>>, counters: &Counters) {
    while let Some(batch) = rx.recv().await {
        Counters::add(&counters.unread, batch.len() as u64);
    }
}
