//! The spool's own thread: encodes and appends what is handed to it, so no disk write,
//! fsync or segment drop ever runs on the thread that drains the ring (or on a write task).
//! It is fed by a queue bounded in rows and in bytes ([`QUEUE_BYTES`]); what does not fit is
//! handed back to the caller, which counts it. Rows wait in it as the records they are, not
//! as inserts (an insert held in memory is several times their size).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use greptimedb_ingester::api::v1::RowInsertRequests;
use tracing::warn;

use super::{columns::ipc_parts, store::Spool};
use crate::schema::{
    Table,
    arrow::{arrow_schema, record_batch},
    encode,
};
use crate::{
    metrics::Counters,
    queue::{self, Rejected},
};

/// What the spool's queue holds at most, in bytes.
pub const QUEUE_BYTES: usize = 8 << 20;

/// Rows of some table, encoded only on the spool's thread.
pub trait Unencoded: Send {
    fn rows(&self) -> usize;
    /// The memory the rows hold.
    fn bytes(&self) -> usize;
    /// The table they are for.
    fn table(&self) -> &str;
    /// The rows from the `from`-th on as a row insert (the older record format).
    fn encode(&self, from: usize) -> RowInsertRequests;
    /// Hands the rows to `append` as columnar records (Arrow IPC) of at most [`PART_ROWS`]
    /// rows and `limit` bytes, each with its rows, in order; returns how many rows it
    /// handed over: all of them, or those before the first part that has no Arrow form.
    fn columns(&self, limit: usize, append: &mut dyn FnMut(&[u8], u64)) -> usize;
}

/// Rows a columnar record is built from at most: a drain's 8 192 rows would hold their
/// Arrow arrays, the IPC stream and the record, each about their size, all at once.
pub const PART_ROWS: usize = 1024;

/// Rows for `table`, not encoded yet.
pub struct UnencodedRows<R> {
    pub table: String,
    pub rows: Vec<R>,
}

impl<R: Table> Unencoded for UnencodedRows<R> {
    fn rows(&self) -> usize {
        self.rows.len()
    }

    fn bytes(&self) -> usize {
        queue::Rows::bytes(&self.rows)
    }

    fn table(&self) -> &str {
        &self.table
    }

    fn encode(&self, from: usize) -> RowInsertRequests {
        encode(&self.table, self.rows.get(from..).unwrap_or_default())
    }

    fn columns(&self, limit: usize, append: &mut dyn FnMut(&[u8], u64)) -> usize {
        let Ok(schema) = arrow_schema(R::COLUMNS) else {
            return 0;
        };
        let mut done = 0;
        let mut refs: Vec<&R> = Vec::with_capacity(PART_ROWS.min(self.rows.len()));
        for part in self.rows.chunks(PART_ROWS) {
            refs.clear();
            refs.extend(part);
            let Ok(batch) = record_batch(R::COLUMNS, &refs, &schema) else {
                return done;
            };
            let Ok(parts) = ipc_parts(&batch, limit) else {
                return done;
            };
            for (ipc, n) in parts {
                append(&ipc, n);
            }
            done += part.len();
        }
        done
    }
}

/// What goes to the spool.
pub enum Payload {
    /// Rows the queue to GreptimeDB had no room for, or that GreptimeDB could not take now
    /// (encoded on the spool's thread).
    Rows(Box<dyn Unencoded>),
}

pub struct Item {
    pub database: String,
    pub payload: Payload,
}

impl queue::Rows for Item {
    fn rows(&self) -> usize {
        match &self.payload {
            Payload::Rows(rows) => rows.rows(),
        }
    }

    fn bytes(&self) -> usize {
        match &self.payload {
            Payload::Rows(rows) => rows.bytes(),
        }
    }
}

pub struct SpoolWriter {
    spool: Arc<Spool>,
    tx: Mutex<Option<queue::Sender<Item>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Set at shutdown: what is still queued after it is counted, not written.
    deadline: Arc<Mutex<Option<Instant>>>,
    /// When rows were last queued, in milliseconds after `started` (0: never).
    last_put: AtomicU64,
    started: Instant,
}

impl SpoolWriter {
    /// Starts the thread, with room for `capacity` rows (and [`QUEUE_BYTES`]) waiting;
    /// `stall` delays every append (a test hook for a slow disk).
    pub fn start(
        spool: Arc<Spool>,
        capacity: usize,
        counters: Arc<Counters>,
        stall: Option<Duration>,
    ) -> Self {
        let (tx, mut rx) = queue::bounded_in::<Item>(capacity, QUEUE_BYTES);
        let deadline: Arc<Mutex<Option<Instant>>> = Arc::default();
        let thread = {
            let spool = Arc::clone(&spool);
            let deadline = Arc::clone(&deadline);
            std::thread::Builder::new()
                .name("flowmetrix-spool".into())
                .spawn(move || {
                    let mut late = 0;
                    while let Some(item) = rx.blocking_recv() {
                        let past = deadline
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .is_some_and(|d| Instant::now() >= d);
                        let rows = queue::Rows::rows(&item) as u64;
                        if past {
                            // Handed to the spool, but the exit deadline came first.
                            Counters::add(&counters.spooled, rows);
                            Counters::add(&counters.spool_lost, rows);
                            late += rows;
                            continue;
                        }
                        if let Some(d) = stall {
                            std::thread::sleep(d);
                        }
                        match item.payload {
                            // Columnar records, one write each; rows without an Arrow form
                            // as a row insert.
                            Payload::Rows(batch) => {
                                let (db, table) = (&item.database, batch.table());
                                let done = batch.columns(spool.part_limit(), &mut |ipc, n| {
                                    spool.append_columns(db, table, ipc, n);
                                });
                                if done < batch.rows() {
                                    let rest = rows - done as u64;
                                    spool.append(db, &batch.encode(done), rest);
                                }
                            }
                        }
                    }
                    spool.sync();
                    if late > 0 {
                        warn!(
                            "spool: {late} rows were not written to disk before the exit deadline; counted as lost"
                        );
                    }
                })
        };
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                warn!("cannot start the spool thread: {e}; rows for the spool are dropped");
                None
            }
        };
        Self {
            spool,
            tx: Mutex::new(thread.is_some().then_some(tx)),
            thread: Mutex::new(thread),
            deadline,
            last_put: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    fn queued(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_put.store(ms.max(1), Ordering::Relaxed);
    }

    /// Whether rows were queued for the spool within `d`: GreptimeDB is not taking them
    /// (or not fast enough), so a replay would only hold a segment in memory and fail.
    pub fn spooled_within(&self, d: Duration) -> bool {
        match self.last_put.load(Ordering::Relaxed) {
            0 => false,
            ms => self.started.elapsed() < Duration::from_millis(ms) + d,
        }
    }

    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    fn sender(&self) -> std::sync::MutexGuard<'_, Option<queue::Sender<Item>>> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` now, or hands it back when the spool's queue is full or closed.
    pub fn try_put(&self, item: Item) -> Result<(), Item> {
        match self.sender().as_ref() {
            Some(tx) => {
                tx.try_send(item).map_err(|e| match e {
                    Rejected::Full(i) | Rejected::Closed(i) => i,
                })?;
                self.queued();
                Ok(())
            }
            None => Err(item),
        }
    }

    /// Queues `item`, waiting for room until `deadline` (once one is set) passes; hands it
    /// back if that comes first or the spool is closed.
    pub async fn put(
        &self,
        mut item: Item,
        deadline: &tokio::sync::watch::Receiver<Option<Instant>>,
    ) -> Result<(), Item> {
        loop {
            // Not held across the wait: a room notification, then a retry.
            let waited = {
                let guard = self.sender();
                let Some(tx) = guard.as_ref() else {
                    return Err(item);
                };
                match tx.try_send(item) {
                    Ok(()) => {
                        self.queued();
                        return Ok(());
                    }
                    Err(Rejected::Closed(i)) => return Err(i),
                    Err(Rejected::Full(i)) => {
                        item = i;
                        tx.room()
                    }
                }
            };
            let wait = tokio::time::sleep(Duration::from_millis(50));
            tokio::select! {
                () = waited.notified() => {}
                () = wait => {}
            }
            if deadline.borrow().is_some_and(|d| Instant::now() >= d) {
                return Err(item);
            }
        }
    }

    /// Rows waiting for the spool's thread.
    pub fn depth(&self) -> usize {
        self.sender().as_ref().map_or(0, queue::Sender::depth)
    }

    /// Closes the queue; the thread writes what is queued until `deadline`, counts the
    /// rest, syncs and ends. Blocks until it has.
    pub fn finish(&self, deadline: Instant) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(deadline);
        self.sender().take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            warn!("the spool thread panicked; rows it held may be missing from the counts");
        }
    }
}
