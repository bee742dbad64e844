//! The sink loop, on top of the rest: rows from the queue through the one batcher, a bounded
//! number of inserts in flight, retries, and the spool replay.
//!
//! Every batch a write task takes is accounted exactly once — written, a write error, or
//! handed to the spool — also when the task panics or is cancelled ([`Unsettled`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use greptimedb_ingester::api::v1::RowInsertRequests;
use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
};
use tracing::{error, info};

use super::{
    bulk::Bulk,
    config::{GreptimeConfig, WritePath},
    error::GreptimeError,
    outage::OutageLog,
    retry::{self, Failure, REQUEST_TIMEOUT},
    service::Endpoints,
    spool::{
        Contents, Replayed,
        thread::{Item, Payload, SpoolWriter, UnencodedRows},
    },
    startup::Startup,
};
use crate::schema::{Table, encode};
use crate::{
    metrics::Counters,
    queue::Receiver,
    record::{DnsRecord, FlowRecord, PacketRecord},
    sink::batch::Batcher,
};

/// Shared by the write tasks: the connections, counters, and what was already logged.
struct Writer {
    /// The endpoints; `insert` picks a healthy one.
    endpoints: Arc<Endpoints>,
    hints: Vec<(&'static str, String)>,
    cfg: GreptimeConfig,
    counters: Arc<Counters>,
    /// When the current outage began, and the failures already reported.
    log: Arc<OutageLog>,
    /// The start-up work: inserts wait for it ([`Startup::ready`]).
    startup: Arc<Startup>,
    /// Set when shutdown begins: retries stop at this instant.
    deadline: watch::Sender<Option<Instant>>,
    spool: Option<Arc<SpoolWriter>>,
}

impl Writer {
    fn hints(&self) -> Vec<(&str, &str)> {
        self.hints.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    fn time_left(&self) -> Option<Duration> {
        let deadline = *self.deadline.borrow();
        deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// One attempt at one insert, bounded by the request timeout and the shutdown
    /// deadline. The caller counts the rows.
    /// `since`: when an earlier attempt at these rows (by bulk) that an endpoint failed was
    /// sent; an outage found now began there.
    async fn attempt(
        &self,
        database: Option<&str>,
        request: &RowInsertRequests,
        since: Option<Instant>,
    ) -> Attempt {
        let budget = self
            .time_left()
            .map_or(REQUEST_TIMEOUT, |t| t.min(REQUEST_TIMEOUT));
        let started = since.unwrap_or_else(Instant::now);
        if let Err(why) = self.startup.ready() {
            self.log.began_at(&why, started);
            return Attempt::Retry(why);
        }
        let hints = self.hints();
        let insert = self.endpoints.insert(database, request, &hints, budget);
        let done = tokio::select! {
            done = insert => done,
            // The second Ctrl+C: an insert in flight is not waited for.
            () = self.given_up() => return Attempt::GivenUp,
        };
        match done {
            Ok(_affected) => {
                self.log.succeeded();
                Attempt::Written
            }
            Err(Failure::Retry { why, .. }) => {
                self.log.began_at(&why, started);
                Attempt::Retry(why)
            }
            Err(Failure::Fatal { kind, message }) => {
                self.log.fatal(kind, &message);
                Attempt::Fatal
            }
        }
    }

    /// Resolves once the shutdown deadline is moved to now or before (the second Ctrl+C);
    /// a deadline that passes on its own is the request budget's to keep.
    async fn given_up(&self) {
        let mut deadline = self.deadline.subscribe();
        loop {
            if deadline
                .borrow_and_update()
                .is_some_and(|d| d <= Instant::now())
            {
                return;
            }
            if deadline.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Sleeps the next wait of `backoff` (jittered), cut short when shutdown begins; false
    /// when the shutdown deadline leaves no time for another try.
    async fn back_off(&self, backoff: &mut impl Iterator<Item = Duration>) -> bool {
        let jittered = backoff.next().unwrap_or(retry::BACKOFF_CAP);
        if self.time_left().is_some_and(|left| left <= jittered) {
            return false;
        }
        let mut deadline_set = self.deadline.subscribe();
        tokio::select! {
            () = tokio::time::sleep(jittered) => {}
            _ = deadline_set.changed() => {}
        }
        true
    }

    /// Writes one batch of `out`'s table: by bulk first with `--write-path bulk`, the rest
    /// by row insert. What a retry cannot fix is counted as write errors; retriable failures
    /// go to the spool when there is one, else are retried until the deadline.
    async fn write<R: Table>(&self, out: &TableOut<R>, rows: Vec<R>) {
        let counters = &*out.counters;
        let (rows, bulk_failed_at) = match &out.bulk {
            Some(bulk) => {
                // A table the start-up DDL made or found takes bulk writes from the first.
                if self.startup.ran()
                    && !out.startup_seen.swap(true, Ordering::Relaxed)
                    && self.startup.found(&out.table)
                {
                    bulk.table_exists();
                }
                let budget = self
                    .time_left()
                    .map_or(REQUEST_TIMEOUT, |t| t.min(REQUEST_TIMEOUT));
                let n = rows.len() as u64;
                tokio::select! {
                    rest = bulk.write(rows, &self.endpoints, counters, budget) => rest,
                    // The second Ctrl+C. Bulk counts what it wrote once it is done, so none
                    // of these is counted yet: all are given up.
                    () = self.given_up() => {
                        return Counters::add(&counters.write_errors, n);
                    }
                }
            }
            None => (rows, None),
        };
        if rows.is_empty() {
            return;
        }
        let mut account = Unsettled::new(rows.len() as u64, counters);
        let started = Instant::now();
        if let Some(spool) = &self.spool
            && let Some(why) = self.down_now()
        {
            // The insert would fail before it is sent (as `attempt` finds): the rows go to
            // the spool as they are, without being encoded for nothing.
            self.log.began_at(&why, bulk_failed_at.unwrap_or(started));
            return self.to_spool(spool, out, rows, &mut account).await;
        }
        let request = encode(&out.table, &rows);
        // Kept for the spool, which takes rows as they are (a fraction of the insert's
        // size); else freed now.
        let mut rows = self.spool.is_some().then_some(rows);
        let mut backoff = retry::backoff();
        loop {
            match self.attempt(None, &request, bulk_failed_at).await {
                Attempt::Written => {
                    out.bulk.iter().for_each(Bulk::table_exists);
                    account.settle(&counters.written);
                    counters.write_seconds.observe(started.elapsed());
                    return;
                }
                Attempt::Fatal | Attempt::GivenUp => {
                    return account.settle(&counters.write_errors);
                }
                Attempt::Retry(why) => {
                    self.log.began(&why);
                    if let (Some(spool), Some(rows)) = (&self.spool, rows.take()) {
                        drop(request);
                        return self.to_spool(spool, out, rows, &mut account).await;
                    }
                    Counters::add(&counters.write_retries, 1);
                    if !self.back_off(&mut backoff).await {
                        // Shutting down and out of time: these rows are not written.
                        return account.settle(&counters.write_errors);
                    }
                }
            }
        }
    }

    /// Why an insert would fail now without being sent: the start-up work has not run, or
    /// every endpoint is out of rotation.
    fn down_now(&self) -> Option<String> {
        match self.startup.ready() {
            Err(why) => Some(why),
            Ok(()) => self.endpoints.all_down().map(|e| e.to_string()),
        }
    }

    /// Hands `rows` to the spool (waiting for room until the shutdown deadline); counted as
    /// spooled by the spool, or as write errors when it could not take them.
    async fn to_spool<R: Table>(
        &self,
        spool: &SpoolWriter,
        out: &TableOut<R>,
        rows: Vec<R>,
        account: &mut Unsettled<'_>,
    ) {
        let item = Item {
            database: self.cfg.database.clone(),
            payload: Payload::Rows(Box::new(UnencodedRows {
                table: out.table.clone(),
                rows,
            })),
        };
        match spool.put(item, &self.deadline.subscribe()).await {
            Ok(()) => account.handed_over(),
            Err(_) => account.settle(&out.counters.write_errors),
        }
    }

    /// Replays the spool, oldest first, while live rows keep flowing; each record is
    /// marked done once GreptimeDB acknowledged it, and a segment deleted once all are.
    /// Stops when shutdown begins, keeping on disk only what was not acknowledged.
    async fn replay(self: Arc<Self>, writer: Arc<SpoolWriter>) {
        let spool = Arc::clone(writer.spool());
        // The segment being replayed and its next record.
        let mut current: Option<(Contents, usize)> = None;
        let mut backoff = retry::backoff();
        let mut deadline_set = self.deadline.subscribe();
        while self.deadline.borrow().is_none() {
            if writer.spooled_within(REPLAY_QUIET) {
                // Rows still go to the spool: GreptimeDB is not taking them. A replay now
                // would hold a segment in memory (and compete with the spool's thread) only
                // to fail; the segment being replayed goes back, first in line.
                if current.take().is_some() {
                    spool.put_back();
                }
                tokio::select! {
                    () = tokio::time::sleep(REPLAY_IDLE) => {}
                    _ = deadline_set.changed() => {}
                }
                continue;
            }
            if current.is_none() {
                let s = Arc::clone(&spool);
                // Reads a segment file: not on a runtime thread.
                current = tokio::task::spawn_blocking(move || s.take_oldest())
                    .await
                    .ok()
                    .flatten()
                    .map(|(_, c)| (c, 0));
            }
            let Some((contents, next)) = current.as_mut() else {
                tokio::select! {
                    () = tokio::time::sleep(REPLAY_IDLE) => {}
                    _ = deadline_set.changed() => {}
                }
                continue;
            };
            let Some(record) = contents.records.get(*next).cloned() else {
                spool.done();
                current = None;
                continue;
            };
            if !spool.begin(&record) {
                current = None; // dropped for room meanwhile: counted by the spool
                continue;
            }
            let Some(request) = contents.request(*next) else {
                // Checked when the segment was read; cannot happen.
                spool.finish(&record, Replayed::Refused);
                *next += 1;
                continue;
            };
            match self
                .attempt(record.database.as_deref(), &request, None)
                .await
            {
                Attempt::Written => {
                    spool.finish(&record, Replayed::Written);
                    *next += 1;
                    backoff = retry::backoff();
                }
                Attempt::Fatal => {
                    spool.finish(&record, Replayed::Refused);
                    *next += 1;
                }
                Attempt::GivenUp => {
                    spool.finish(&record, Replayed::Failed);
                    break;
                }
                Attempt::Retry(why) => {
                    spool.finish(&record, Replayed::Failed);
                    self.log.began(&why);
                    Counters::add(&self.counters.write_retries, 1);
                    if !self.back_off(&mut backoff).await {
                        break;
                    }
                }
            }
        }
        if current.is_some() {
            spool.put_back();
        }
    }
}

/// The rows of one batch until they are accounted for: written, failed, or handed to the
/// spool. Dropped unaccounted (a panic, a cancelled task), they count as write errors, so
/// no row leaves the loss equation.
struct Unsettled<'a> {
    n: u64,
    counters: &'a Counters,
    settled: bool,
}

impl<'a> Unsettled<'a> {
    fn new(n: u64, counters: &'a Counters) -> Self {
        Self {
            n,
            counters,
            settled: false,
        }
    }

    fn settle(&mut self, counter: &std::sync::atomic::AtomicU64) {
        Counters::add(counter, self.n);
        self.settled = true;
    }

    fn handed_over(&mut self) {
        self.settled = true;
    }
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if !self.settled {
            Counters::add(&self.counters.write_errors, self.n);
        }
    }
}

/// How one attempt at an insert went.
enum Attempt {
    Written,
    Fatal,
    Retry(String),
    /// Cut short by the second Ctrl+C: not written, and no more tries.
    GivenUp,
}

/// How often an idle replayer looks at the spool.
const REPLAY_IDLE: Duration = Duration::from_millis(200);
/// How long nothing must have gone to the spool before a replay starts.
const REPLAY_QUIET: Duration = Duration::from_secs(1);

/// One table the writer writes: its name and counters.
struct TableOut<R: Table> {
    table: String,
    counters: Arc<Counters>,
    /// `--write-path bulk`: batches go by bulk first; what it cannot write, by row insert.
    bulk: Option<Bulk<R>>,
    /// Whether the bulk path has been told what the start-up work found.
    startup_seen: AtomicBool,
}

impl<R: Table> TableOut<R> {
    fn new(
        cfg: &GreptimeConfig,
        table: String,
        counters: Arc<Counters>,
    ) -> Result<Self, GreptimeError> {
        let bulk = match cfg.write_path {
            WritePath::Bulk => Bulk::new(cfg, &table)?,
            WritePath::Rows => None,
        };
        Ok(Self {
            table,
            counters,
            bulk,
            startup_seen: AtomicBool::new(false),
        })
    }
}

/// A table besides the packet table, for [`run`]: its name, its queue and its counters.
pub struct TableRx<R> {
    pub table: String,
    pub rx: Receiver<Vec<R>>,
    pub counters: Arc<Counters>,
}

/// The flow table (`--mode flows|both`).
pub type FlowTable = TableRx<FlowRecord>;
/// The DNS table (`--mode flows|both`).
pub type DnsTable = TableRx<DnsRecord>;

/// The tables besides the packet table.
#[derive(Default)]
pub struct MoreTables {
    pub flows: Option<FlowTable>,
    pub dns: Option<DnsTable>,
}

/// Writes packet rows from `rx` (`cfg.table`, counted in `counters`) and, when given, flow
/// and DNS rows until the queues close: all over the same connections, retries, outage log
/// and spool, each with its own batcher and counters, and `--max-in-flight` requests in
/// flight over all. When `shutdown` fires, retries get `shutdown_timeout` more before the rows they
/// hold count as write errors (or, with a spool, go to it).
pub async fn run(
    cfg: GreptimeConfig,
    rx: Receiver,
    counters: Arc<Counters>,
    more: MoreTables,
    shutdown: watch::Receiver<bool>,
    spool: Option<Arc<SpoolWriter>>,
) -> Result<(), GreptimeError> {
    let stop = Stop {
        stopping: shutdown,
        give_up: watch::channel(false).1,
    };
    run_until(cfg, rx, counters, more, stop, spool).await
}

/// When the sink stops trying: `stopping` starts the shutdown deadline
/// (`shutdown_timeout` from then); `give_up`, set after it, moves the deadline to now.
pub struct Stop {
    pub stopping: watch::Receiver<bool>,
    pub give_up: watch::Receiver<bool>,
}

/// [`run`], which can also be told to give up at once ([`Stop::give_up`]).
pub async fn run_until(
    cfg: GreptimeConfig,
    rx: Receiver,
    counters: Arc<Counters>,
    more: MoreTables,
    stop: Stop,
    spool: Option<Arc<SpoolWriter>>,
) -> Result<(), GreptimeError> {
    let Stop {
        stopping: mut shutdown,
        mut give_up,
    } = stop;
    let endpoints = Endpoints::connect(&cfg)?;
    let log = Arc::new(OutageLog::new(cfg.describe(), spool.is_some()));
    let startup = Arc::new(Startup::new(
        Arc::clone(&endpoints),
        cfg.clone(),
        Arc::clone(&log),
    ));
    // Before the first insert, so that the tables are made by their DDL, not by an insert.
    // Bounded by its timeouts; rows wait in the queue meanwhile. When no endpoint answers,
    // it runs once one does, and inserts wait for it.
    startup.run().await;
    let writer = Arc::new(Writer {
        endpoints,
        hints: cfg.hints(),
        cfg: cfg.clone(),
        counters: Arc::clone(&counters),
        log,
        startup,
        deadline: watch::Sender::new(None),
        spool: spool.clone(),
    });
    let replayer = spool
        .clone()
        .map(|spool| tokio::spawn(Arc::clone(&writer).replay(spool)));
    {
        let writer = Arc::clone(&writer);
        let timeout = cfg.shutdown_timeout;
        tokio::spawn(async move {
            if shutdown.wait_for(|&s| s).await.is_ok() {
                move_deadline(&writer.deadline, Instant::now() + timeout);
            }
        });
    }
    {
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            if give_up.wait_for(|&g| g).await.is_ok() {
                move_deadline(&writer.deadline, Instant::now());
            }
        });
    }

    let in_flight = Window {
        requests: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
        kib: Arc::new(Semaphore::new(IN_FLIGHT_KIB)),
    };
    let packets = TableOut::<PacketRecord>::new(&cfg, cfg.table.clone(), counters)?;
    let packets = feed(&writer, &in_flight, packets, rx);
    let flows = more
        .flows
        .map(|f| table_feed(&writer, &in_flight, f))
        .transpose()?;
    let dns = more
        .dns
        .map(|d| table_feed(&writer, &in_flight, d))
        .transpose()?;
    tokio::join!(packets, maybe(flows), maybe(dns));

    if let Some(replayer) = replayer {
        let _ = replayer.await;
    }
    if let Some(spool) = spool {
        let deadline = writer
            .deadline
            .borrow()
            .unwrap_or_else(|| Instant::now() + cfg.shutdown_timeout);
        let w = Arc::clone(&spool);
        let _ = tokio::task::spawn_blocking(move || w.finish(deadline)).await;
        let left = spool.spool().rows();
        if left > 0 {
            info!(
                "spool {}: {left} rows kept for the next run",
                spool.spool().dir().display()
            );
        }
    }
    Ok(())
}

/// Sets the shutdown deadline to `at`, or keeps the one set if it is sooner.
fn move_deadline(deadline: &watch::Sender<Option<Instant>>, at: Instant) {
    deadline.send_modify(|d| *d = Some(d.map_or(at, |d| d.min(at))));
}

/// What the write tasks of every table hold at most: `--max-in-flight` batches, and
/// [`IN_FLIGHT_KIB`] of rows (each batch's insert or Arrow form is a few times that). A batch
/// waits for both; meanwhile the queue before it fills, and its overflow policy takes over.
struct Window {
    requests: Arc<Semaphore>,
    kib: Arc<Semaphore>,
}

/// KiB of rows the write tasks hold at most (a batch larger than that waits for all of it).
const IN_FLIGHT_KIB: usize = 4 << 10;

/// One table's rows from `rx` through its batcher into write tasks, until `rx` closes and
/// every batch it gave is accounted for.
async fn feed<R: Table>(
    writer: &Arc<Writer>,
    in_flight: &Window,
    out: TableOut<R>,
    mut rx: Receiver<Vec<R>>,
) {
    let out = Arc::new(out);
    let mut tasks = JoinSet::new();
    let mut batcher = Batcher::new(writer.cfg.batch_size, writer.cfg.flush_interval);
    let mut full = Vec::new();
    loop {
        tokio::select! {
            chunk = rx.recv() => {
                let Some(chunk) = chunk else { break };
                batcher.push(chunk, |b| full.push(b));
            }
            () = batcher.due() => full.extend(batcher.take()),
            Some(res) = tasks.join_next(), if !tasks.is_empty() => reap(res),
        }
        for rows in full.drain(..) {
            submit(writer, in_flight, &mut tasks, &out, rows).await;
        }
    }
    // The queue is closed: capture has stopped. Write what is left within the deadline.
    if let Some(rows) = batcher.take() {
        submit(writer, in_flight, &mut tasks, &out, rows).await;
    }
    while let Some(res) = tasks.join_next().await {
        reap(res);
    }
}

/// [`feed`] for a table besides the packet table.
fn table_feed<'a, R: Table>(
    writer: &'a Arc<Writer>,
    in_flight: &'a Window,
    t: TableRx<R>,
) -> Result<impl Future<Output = ()> + 'a, GreptimeError> {
    let out = TableOut::<R>::new(&writer.cfg, t.table, t.counters)?;
    Ok(feed(writer, in_flight, out, t.rx))
}

/// Runs `f` when there is one.
async fn maybe(f: Option<impl Future<Output = ()>>) {
    if let Some(f) = f {
        f.await;
    }
}

/// Starts a write task once one of the `max_in_flight` places is free.
async fn submit<R: Table>(
    writer: &Arc<Writer>,
    in_flight: &Window,
    tasks: &mut JoinSet<()>,
    out: &Arc<TableOut<R>>,
    rows: Vec<R>,
) {
    let kib = crate::queue::Rows::bytes(&rows)
        .div_ceil(1024)
        .clamp(1, IN_FLIGHT_KIB);
    let permits = (
        Arc::clone(&in_flight.requests).acquire_owned().await,
        Arc::clone(&in_flight.kib)
            .acquire_many_owned(u32::try_from(kib).unwrap_or(u32::MAX))
            .await,
    );
    let (Ok(request), Ok(bytes)) = permits else {
        // The semaphores are never closed; keep the accounting exact all the same.
        return Unsettled::new(rows.len() as u64, &out.counters).settle(&out.counters.write_errors);
    };
    let writer = Arc::clone(writer);
    let out = Arc::clone(out);
    tasks.spawn(async move {
        writer.write(&out, rows).await;
        drop((request, bytes));
    });
}

/// A write task that ended by a panic has had its rows counted (as write errors) by its
/// [`Unsettled`]; say so once.
fn reap(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        error!("a GreptimeDB write task failed ({e}); its rows are counted as write errors");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_counted_once_however_a_write_task_ends() {
        let c = Counters::default();
        Unsettled::new(3, &c).settle(&c.written);
        Unsettled::new(5, &c).handed_over();
        drop(Unsettled::new(7, &c)); // cancelled
        let panicked = std::panic::catch_unwind(|| {
            let _rows = Unsettled::new(11, &c);
            panic!("a write task panics");
        });
        assert!(panicked.is_err());
        assert_eq!(Counters::get(&c.written), 3);
        assert_eq!(Counters::get(&c.write_errors), 7 + 11);
    }

    #[tokio::test]
    async fn a_panicking_write_task_leaves_its_rows_counted() {
        let c = Arc::new(Counters::default());
        let mut tasks = JoinSet::new();
        let counters = Arc::clone(&c);
        tasks.spawn(async move {
            let _rows = Unsettled::new(9, &counters);
            panic!("boom");
        });
        while let Some(res) = tasks.join_next().await {
            assert!(res.is_err());
            reap(res);
        }
        assert_eq!(Counters::get(&c.write_errors), 9);
    }
}
