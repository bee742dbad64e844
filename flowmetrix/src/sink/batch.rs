//! The one batcher: rows are sent when `size` have gathered, or `interval` after the first
//! row of a partial batch, whichever comes first — so a quiet link still gets its rows
//! promptly and a busy one gets full batches.

use std::time::Duration;

use tokio::time::Instant;

use crate::record::PacketRecord;

pub struct Batcher<R = PacketRecord> {
    size: usize,
    interval: Duration,
    pending: Vec<R>,
    /// When the partial batch is due.
    due: Option<Instant>,
}

impl<R> Batcher<R> {
    pub fn new(size: usize, interval: Duration) -> Self {
        let size = size.max(1);
        Self {
            size,
            interval,
            pending: Vec::with_capacity(size),
            due: None,
        }
    }

    /// Adds `rows`; hands every full batch to `full`.
    pub fn push(&mut self, mut rows: Vec<R>, mut full: impl FnMut(Vec<R>)) {
        if self.pending.is_empty() {
            if rows.len() == self.size {
                return full(rows); // as it came: no copy
            }
            self.due = Some(Instant::now() + self.interval);
        }
        while !rows.is_empty() {
            let room = self.size - self.pending.len();
            if rows.len() <= room {
                self.pending.append(&mut rows);
            } else {
                self.pending.extend(rows.drain(..room));
            }
            if self.pending.len() == self.size {
                let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(self.size));
                full(batch);
                self.due = (!rows.is_empty()).then(|| Instant::now() + self.interval);
            }
        }
    }

    /// Completes when the partial batch is due (never while there is none).
    pub async fn due(&self) {
        match self.due {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// The partial batch, if any.
    pub fn take(&mut self) -> Option<Vec<R>> {
        self.due = None;
        (!self.pending.is_empty())
            .then(|| std::mem::replace(&mut self.pending, Vec::with_capacity(self.size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::UnixNanos;

    fn rows(from: i64, n: i64) -> Vec<PacketRecord> {
        (from..from + n)
            .map(|i| PacketRecord {
                ts: UnixNanos(i),
                ..PacketRecord::default()
            })
            .collect()
    }

    fn ts(b: &[PacketRecord]) -> Vec<i64> {
        b.iter().map(|r| r.ts.0).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn full_batches_go_at_once_in_order_and_the_rest_waits() {
        let mut b = Batcher::new(4, Duration::from_secs(1));
        let mut out = Vec::new();
        b.push(rows(0, 3), |x| out.push(x));
        assert!(out.is_empty());
        b.push(rows(3, 6), |x| out.push(x));
        assert_eq!(
            out.iter().map(|x| ts(x)).collect::<Vec<_>>(),
            [vec![0, 1, 2, 3], vec![4, 5, 6, 7]]
        );
        b.push(rows(9, 4), |x| out.push(x));
        assert_eq!(out.len(), 3);
        assert_eq!(ts(&out[2]), [8, 9, 10, 11]);
        assert_eq!(ts(&b.take().unwrap()), [12]);
        assert!(b.take().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_is_due_one_interval_after_its_first_row() {
        let mut b = Batcher::new(100, Duration::from_millis(500));
        let start = Instant::now();
        b.push(rows(0, 1), |_| panic!("not full"));
        tokio::time::advance(Duration::from_millis(300)).await;
        b.push(rows(1, 1), |_| panic!("not full"));
        b.due().await;
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        assert_eq!(ts(&b.take().unwrap()), [0, 1]);
        // Nothing pending: never due.
        let never = tokio::time::timeout(Duration::from_secs(60), b.due()).await;
        assert!(never.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_of_exactly_one_batch_passes_through() {
        let mut b = Batcher::new(3, Duration::from_secs(1));
        let chunk = rows(0, 3);
        let ptr = chunk.as_ptr();
        let mut got = None;
        b.push(chunk, |x| got = Some(x));
        let got = got.unwrap();
        assert_eq!(got.as_ptr(), ptr);
    }
}
