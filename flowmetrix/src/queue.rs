//! The queue between the decoder and the sink, bounded in rows (not batches, which may be
//! small when traffic is light). The sender never waits: a batch that does not fit is
//! handed back to be counted as dropped.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::sync::{Notify, mpsc};

use crate::record::PacketRecord;

pub type Batch = Vec<PacketRecord>;

/// Why a batch was not queued.
#[derive(Debug)]
pub enum Rejected {
    /// The queue holds `capacity` rows already (or would with this batch).
    Full(Batch),
    /// The receiver is gone.
    Closed(Batch),
}

pub struct Sender {
    tx: mpsc::UnboundedSender<Batch>,
    depth: Arc<AtomicUsize>,
    capacity: usize,
    room: Arc<Notify>,
}

pub struct Receiver {
    rx: mpsc::UnboundedReceiver<Batch>,
    depth: Arc<AtomicUsize>,
    room: Arc<Notify>,
}

/// A queue that holds at most `capacity` rows.
pub fn bounded(capacity: usize) -> (Sender, Receiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let depth = Arc::new(AtomicUsize::new(0));
    let room = Arc::new(Notify::new());
    (
        Sender {
            tx,
            depth: Arc::clone(&depth),
            capacity,
            room: Arc::clone(&room),
        },
        Receiver { rx, depth, room },
    )
}

impl Sender {
    pub fn try_send(&self, batch: Batch) -> Result<(), Rejected> {
        let n = batch.len();
        // Only this sender adds, so a check-then-add cannot overshoot. An empty queue takes
        // any batch, so a batch larger than the capacity is not refused forever.
        let depth = self.depth.load(Ordering::Acquire);
        if depth > 0 && depth + n > self.capacity {
            return Err(Rejected::Full(batch));
        }
        self.depth.fetch_add(n, Ordering::AcqRel);
        self.tx.send(batch).map_err(|e| {
            self.depth.fetch_sub(n, Ordering::AcqRel);
            Rejected::Closed(e.0)
        })
    }

    /// Queues the batch, waiting for room; hands it back if the receiver is gone.
    pub async fn send_waiting(&self, mut batch: Batch) -> Result<(), Batch> {
        loop {
            let room = self.room.notified();
            match self.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(Rejected::Closed(b)) => return Err(b),
                Err(Rejected::Full(b)) => {
                    batch = b;
                    room.await;
                }
            }
        }
    }

    /// Rows waiting in the queue.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }
}

impl Receiver {
    pub async fn recv(&mut self) -> Option<Batch> {
        let batch = self.rx.recv().await?;
        self.depth.fetch_sub(batch.len(), Ordering::AcqRel);
        self.room.notify_one();
        Some(batch)
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Stops accepting batches and returns those still queued.
    pub fn close(&mut self) -> Vec<Batch> {
        self.rx.close();
        let mut left = Vec::new();
        while let Ok(batch) = self.rx.try_recv() {
            self.depth.fetch_sub(batch.len(), Ordering::AcqRel);
            left.push(batch);
        }
        self.room.notify_one();
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Batch {
        let row = PacketRecord::default();
        vec![row; n]
    }

    #[tokio::test]
    async fn bounded_in_rows_and_freed_by_receiving() {
        let (tx, mut rx) = bounded(10);
        for _ in 0..10 {
            tx.try_send(rows(1)).unwrap();
        }
        assert!(matches!(tx.try_send(rows(1)), Err(Rejected::Full(b)) if b.len() == 1));
        assert_eq!(tx.depth(), 10);
        assert_eq!(rx.recv().await.unwrap().len(), 1);
        assert_eq!(tx.depth(), 9);
        assert!(matches!(tx.try_send(rows(2)), Err(Rejected::Full(_))));
        tx.try_send(rows(1)).unwrap();
    }

    #[tokio::test]
    async fn an_empty_queue_takes_a_batch_larger_than_its_capacity() {
        let (tx, mut rx) = bounded(2);
        tx.try_send(rows(5)).unwrap();
        assert!(matches!(tx.try_send(rows(1)), Err(Rejected::Full(_))));
        assert_eq!(rx.recv().await.unwrap().len(), 5);
        tx.try_send(rows(1)).unwrap();
    }

    #[tokio::test]
    async fn send_waiting_waits_for_room_instead_of_dropping() {
        let (tx, mut rx) = bounded(2);
        tx.try_send(rows(2)).unwrap();
        let receiver = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let mut got = 0;
            while let Some(b) = rx.recv().await {
                got += b.len();
            }
            got
        });
        tx.send_waiting(rows(2)).await.unwrap();
        tx.send_waiting(rows(1)).await.unwrap();
        drop(tx);
        assert_eq!(receiver.await.unwrap(), 5);
    }

    #[tokio::test]
    async fn closed_receiver_hands_batches_back() {
        let (tx, mut rx) = bounded(10);
        tx.try_send(rows(3)).unwrap();
        let left = rx.close();
        assert_eq!(left.iter().map(Vec::len).sum::<usize>(), 3);
        assert!(matches!(tx.try_send(rows(1)), Err(Rejected::Closed(_))));
        assert_eq!(tx.depth(), 0);
    }
}
