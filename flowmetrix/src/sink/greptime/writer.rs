//! The writer: batches from the queue, a bounded number of inserts in flight, retries, the
//! outage log, and the spool replay.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use greptimedb_ingester::api::v1::RowInsertRequests;
use rand::Rng as _;
use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
};
use tracing::{error, info, warn};

use super::{
    client::startup_check,
    endpoints::Endpoints,
    retry::{BACKOFF_CAP, BACKOFF_START, Failure, Problem, REQUEST_TIMEOUT},
    schema::encode,
    settings::GreptimeConfig,
};
use crate::{
    metrics::Counters,
    queue::Receiver,
    record::PacketRecord,
    sink::{
        SinkError,
        spool::{Contents, Segment, Spool},
    },
};

/// Shared by the write tasks: the connections, counters, and what was already logged.
pub(super) struct Writer {
    /// The endpoints; `insert` picks a healthy one.
    pub(super) endpoints: Arc<Endpoints>,
    hints: Vec<(&'static str, String)>,
    pub(super) cfg: GreptimeConfig,
    counters: Arc<Counters>,
    /// When the current outage began (None while writes succeed).
    outage: Mutex<Option<Instant>>,
    /// Fatal problems already reported (each is logged once).
    reported: Mutex<HashSet<Problem>>,
    /// Set when shutdown begins: retries stop at this instant.
    deadline: watch::Sender<Option<Instant>>,
    spool: Option<Arc<Spool>>,
}

impl Writer {
    pub(super) fn hints(&self) -> Vec<(&str, &str)> {
        self.hints.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    fn time_left(&self) -> Option<Duration> {
        let deadline = *self.deadline.borrow();
        deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    pub(super) fn outage_began(&self, why: &str) {
        self.outage_began_at(why, Instant::now());
    }

    /// An outage whose first failed attempt started at `started` (a request that timed out
    /// after 10 s began 10 s before it failed).
    pub(super) fn outage_began_at(&self, why: &str, started: Instant) {
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        if outage.is_none() {
            *outage = Some(started);
            let meanwhile = if self.spool.is_some() {
                "rows go to the disk spool meanwhile"
            } else {
                "rows wait in the queue meanwhile"
            };
            warn!(
                "{} failed: {why}; retrying ({meanwhile})",
                self.cfg.describe()
            );
        }
    }

    fn succeeded(&self) {
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = outage.take() {
            info!(
                "{} is writable again after {:.1}s",
                self.cfg.describe(),
                since.elapsed().as_secs_f64()
            );
        }
    }

    pub(super) fn fatal(&self, kind: Problem, message: &str) {
        let first = self
            .reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind);
        if first {
            error!("{}: {message}", self.cfg.describe());
        }
    }

    /// One attempt at one insert, bounded by the request timeout and the shutdown
    /// deadline.
    async fn attempt(&self, request: &RowInsertRequests, rows: u64) -> Attempt {
        let budget = self
            .time_left()
            .map_or(REQUEST_TIMEOUT, |t| t.min(REQUEST_TIMEOUT));
        let started = Instant::now();
        match self.endpoints.insert(request, &self.hints(), budget).await {
            Ok(_affected) => {
                self.succeeded();
                Attempt::Written
            }
            Err(Failure::Retry { why, .. }) => {
                self.outage_began_at(&why, started);
                Attempt::Retry(why)
            }
            Err(Failure::Fatal { kind, message }) => {
                self.fatal(kind, &message);
                Counters::add(&self.counters.write_errors, rows);
                Attempt::Fatal
            }
        }
    }

    /// Sleeps `backoff` with jitter, cut short when shutdown begins; false when the
    /// shutdown deadline leaves no time for another try.
    async fn back_off(&self, backoff: Duration) -> bool {
        let jittered = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
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

    /// Writes one batch. What a retry cannot fix is counted as write errors; retriable
    /// failures go to the spool when there is one, else are retried until the deadline.
    async fn write(&self, rows: Vec<PacketRecord>) {
        let n = rows.len() as u64;
        let started = Instant::now();
        let request = encode(&self.cfg.table, &rows);
        drop(rows);
        let mut backoff = BACKOFF_START;
        loop {
            match self.attempt(&request, n).await {
                Attempt::Written => {
                    Counters::add(&self.counters.written, n);
                    self.counters.write_seconds.observe(started.elapsed());
                    return;
                }
                Attempt::Fatal => return,
                Attempt::Retry(why) => {
                    self.outage_began(&why);
                    if let Some(spool) = &self.spool {
                        spool.append(&request, n);
                        return;
                    }
                    Counters::add(&self.counters.write_retries, 1);
                    if !self.back_off(backoff).await {
                        // Shutting down and out of time: these rows are not written.
                        Counters::add(&self.counters.write_errors, n);
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                }
            }
        }
    }

    /// Replays the spool, oldest first, while live rows keep flowing; a segment is deleted
    /// once all its records are acknowledged. Stops when shutdown begins, keeping on disk
    /// only what was not acknowledged.
    async fn replay(self: Arc<Self>, spool: Arc<Spool>) {
        // The segment being replayed and its next record.
        let mut current: Option<(Segment, Contents, usize)> = None;
        let mut backoff = BACKOFF_START;
        let mut deadline_set = self.deadline.subscribe();
        while self.deadline.borrow().is_none() {
            if current.is_none() {
                current = spool.take_oldest().map(|(seg, c)| (seg, c, 0));
            }
            let Some((seg, contents, next)) = current.as_mut() else {
                tokio::select! {
                    () = tokio::time::sleep(REPLAY_IDLE) => {}
                    _ = deadline_set.changed() => {}
                }
                continue;
            };
            let Some(&(_, rows)) = contents.records.get(*next) else {
                spool.done(seg);
                current = None;
                continue;
            };
            let Some(request) = contents.request(*next) else {
                *next += 1; // checked when the segment was read; cannot happen
                continue;
            };
            match self.attempt(&request, rows).await {
                Attempt::Written => {
                    Counters::add(&self.counters.spool_replayed, rows);
                    *next += 1;
                    backoff = BACKOFF_START;
                }
                Attempt::Fatal => *next += 1,
                Attempt::Retry(why) => {
                    self.outage_began(&why);
                    Counters::add(&self.counters.write_retries, 1);
                    if !self.back_off(backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                }
            }
        }
        if let Some((seg, contents, next)) = current {
            spool.keep_rest(seg, &contents, next);
        }
    }
}

/// How one attempt at an insert went.
enum Attempt {
    Written,
    /// Counted as write errors already.
    Fatal,
    Retry(String),
}

/// How often an idle replayer looks at the spool.
const REPLAY_IDLE: Duration = Duration::from_millis(200);
/// Writes batches from `rx` until it closes. When `shutdown` fires, retries get
/// `shutdown_timeout` more before the rows they hold count as write errors (or, with a
/// spool, go to it).
pub async fn run(
    cfg: GreptimeConfig,
    mut rx: Receiver,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
    spool: Option<Arc<Spool>>,
) -> Result<(), SinkError> {
    let writer = Arc::new(Writer {
        endpoints: Endpoints::connect(&cfg)?,
        hints: cfg.hints(),
        cfg: cfg.clone(),
        counters,
        outage: Mutex::new(None),
        reported: Mutex::new(HashSet::new()),
        deadline: watch::Sender::new(None),
        spool: spool.clone(),
    });
    tokio::spawn(startup_check(Arc::clone(&writer)));
    let replayer = spool
        .clone()
        .map(|spool| tokio::spawn(Arc::clone(&writer).replay(spool)));
    {
        let writer = Arc::clone(&writer);
        let timeout = cfg.shutdown_timeout;
        tokio::spawn(async move {
            if shutdown.wait_for(|&s| s).await.is_ok() {
                writer.deadline.send_replace(Some(Instant::now() + timeout));
            }
        });
    }

    let in_flight = Arc::new(Semaphore::new(cfg.max_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    let mut pending: Vec<PacketRecord> = Vec::with_capacity(cfg.batch_size);
    let mut flush_at: Option<tokio::time::Instant> = None;

    let submit = |rows: Vec<PacketRecord>, tasks: &mut JoinSet<()>, permit| {
        let writer = Arc::clone(&writer);
        tasks.spawn(async move {
            writer.write(rows).await;
            drop(permit);
        });
    };

    loop {
        let timer = async {
            match flush_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                if pending.is_empty() {
                    flush_at = Some(tokio::time::Instant::now() + cfg.flush_interval);
                }
                pending.extend(batch);
                while pending.len() >= cfg.batch_size {
                    let rest = pending.split_off(cfg.batch_size);
                    let full = std::mem::replace(&mut pending, rest);
                    let permit = Arc::clone(&in_flight).acquire_owned().await;
                    submit(full, &mut tasks, permit);
                }
                if pending.is_empty() {
                    flush_at = None;
                }
            }
            () = timer => {
                flush_at = None;
                let rows = std::mem::take(&mut pending);
                let permit = Arc::clone(&in_flight).acquire_owned().await;
                submit(rows, &mut tasks, permit);
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }

    // The queue is closed: capture has stopped. Write what is left within the deadline.
    if !pending.is_empty() {
        let permit = Arc::clone(&in_flight).acquire_owned().await;
        submit(pending, &mut tasks, permit);
    }
    while tasks.join_next().await.is_some() {}
    if let Some(replayer) = replayer {
        let _ = replayer.await;
    }
    if let Some(spool) = &spool {
        spool.sync();
    }
    Ok(())
}
