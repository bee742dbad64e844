//! A queue bounded in rows (not items, which may be small when traffic is light) and in
//! bytes (what its items hold in memory, so that fat items — encoded inserts, rows with
//! spare capacity — cannot grow it past a fixed size whatever the rate): between the decode
//! stage and the sink, and between the sink and its spool writer. `try_send` never waits:
//! an item that does not fit is handed back for its sender's overflow policy.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::sync::{Notify, mpsc};

use crate::record::PacketRecord;

pub type Batch = Vec<PacketRecord>;

/// The bytes a queue holds at most unless told otherwise ([`bounded_in`]).
pub const QUEUE_BYTES: usize = 16 << 20;

/// The bytes a queue of `rows` rows of `R` may hold: the rows themselves and 1 MiB (senders
/// trim the spare capacity of the `Vec`s they send, which the queue would count).
pub fn bytes_for<R>(rows: usize) -> usize {
    rows.saturating_mul(std::mem::size_of::<R>())
        .saturating_add(1 << 20)
}

/// What the queue bounds: how many rows an item holds, and the memory it holds.
pub trait Rows {
    fn rows(&self) -> usize;
    /// The memory the item holds (its own heap; names shared by every row are not counted).
    fn bytes(&self) -> usize;
}

impl<R> Rows for Vec<R> {
    fn rows(&self) -> usize {
        self.len()
    }

    fn bytes(&self) -> usize {
        self.capacity() * std::mem::size_of::<R>()
    }
}

/// Why a batch was not queued.
#[derive(Debug)]
pub enum Rejected<T = Batch> {
    /// The queue holds `capacity` rows, or its bytes, already (or would with this batch).
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

pub struct Sender<T = Batch> {
    tx: mpsc::UnboundedSender<T>,
    depth: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
    capacity: usize,
    max_bytes: usize,
    room: Arc<Notify>,
}

pub struct Receiver<T = Batch> {
    rx: mpsc::UnboundedReceiver<T>,
    depth: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
    room: Arc<Notify>,
}

/// A queue that holds at most `capacity` rows and [`QUEUE_BYTES`].
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    bounded_in(capacity, QUEUE_BYTES)
}

/// A queue that holds at most `capacity` rows and `max_bytes` bytes.
pub fn bounded_in<T>(capacity: usize, max_bytes: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let depth = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let room = Arc::new(Notify::new());
    (
        Sender {
            tx,
            depth: Arc::clone(&depth),
            bytes: Arc::clone(&bytes),
            capacity,
            max_bytes,
            room: Arc::clone(&room),
        },
        Receiver {
            rx,
            depth,
            bytes,
            room,
        },
    )
}

impl<T: Rows> Sender<T> {
    pub fn try_send(&self, batch: T) -> Result<(), Rejected<T>> {
        let (n, b) = (batch.rows(), batch.bytes());
        // Only this sender adds, so a check-then-add cannot overshoot. An empty queue takes
        // any batch, so a batch larger than the capacity is not refused forever.
        let depth = self.depth.load(Ordering::Acquire);
        let held = self.bytes.load(Ordering::Acquire);
        if depth > 0 && (depth + n > self.capacity || held + b > self.max_bytes) {
            return Err(Rejected::Full(batch));
        }
        self.depth.fetch_add(n, Ordering::AcqRel);
        self.bytes.fetch_add(b, Ordering::AcqRel);
        self.tx.send(batch).map_err(|e| {
            self.depth.fetch_sub(n, Ordering::AcqRel);
            self.bytes.fetch_sub(b, Ordering::AcqRel);
            Rejected::Closed(e.0)
        })
    }

    /// Queues the batch, waiting for room; hands it back if the receiver is gone.
    pub async fn send_waiting(&self, mut batch: T) -> Result<(), T> {
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

    /// Notified when the receiver takes an item.
    pub fn room(&self) -> Arc<Notify> {
        Arc::clone(&self.room)
    }
}

impl<T: Rows> Receiver<T> {
    pub async fn recv(&mut self) -> Option<T> {
        let batch = self.rx.recv().await?;
        Some(self.taken(batch))
    }

    /// For a receiver on a thread of its own (the spool writer).
    pub fn blocking_recv(&mut self) -> Option<T> {
        let batch = self.rx.blocking_recv()?;
        Some(self.taken(batch))
    }

    fn taken(&self, batch: T) -> T {
        self.depth.fetch_sub(batch.rows(), Ordering::AcqRel);
        self.bytes.fetch_sub(batch.bytes(), Ordering::AcqRel);
        self.room.notify_one();
        batch
    }

    /// Rows waiting.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Stops accepting batches and returns those still queued.
    pub fn close(&mut self) -> Vec<T> {
        self.rx.close();
        let mut left = Vec::new();
        while let Ok(batch) = self.rx.try_recv() {
            self.depth.fetch_sub(batch.rows(), Ordering::AcqRel);
            self.bytes.fetch_sub(batch.bytes(), Ordering::AcqRel);
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
        let (tx, mut rx) = bounded::<Batch>(10);
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
        let (tx, mut rx) = bounded::<Batch>(2);
        tx.try_send(rows(5)).unwrap();
        assert!(matches!(tx.try_send(rows(1)), Err(Rejected::Full(_))));
        assert_eq!(rx.recv().await.unwrap().len(), 5);
        tx.try_send(rows(1)).unwrap();
    }

    #[tokio::test]
    async fn send_waiting_waits_for_room_instead_of_dropping() {
        let (tx, mut rx) = bounded::<Batch>(2);
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
    async fn bounded_in_bytes_too() {
        let row = std::mem::size_of::<PacketRecord>();
        let (tx, mut rx) = bounded_in::<Batch>(1_000, 3 * row);
        tx.try_send(rows(2)).unwrap();
        tx.try_send(rows(1)).unwrap();
        // Room for rows, none for bytes.
        assert!(matches!(tx.try_send(rows(1)), Err(Rejected::Full(_))));
        // Spare capacity is memory held: counted.
        let mut roomy = rows(1);
        roomy.reserve_exact(10);
        assert_eq!(rx.recv().await.unwrap().len(), 2);
        assert!(matches!(tx.try_send(roomy), Err(Rejected::Full(_))));
        tx.try_send(rows(2)).unwrap();
        assert_eq!(tx.depth(), 3);
    }

    #[tokio::test]
    async fn closed_receiver_hands_batches_back() {
        let (tx, mut rx) = bounded::<Batch>(10);
        tx.try_send(rows(3)).unwrap();
        let left = rx.close();
        assert_eq!(left.iter().map(Vec::len).sum::<usize>(), 3);
        assert!(matches!(tx.try_send(rows(1)), Err(Rejected::Closed(_))));
        assert_eq!(tx.depth(), 0);
    }
}
