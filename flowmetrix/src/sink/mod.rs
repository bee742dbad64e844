//! Outputs: where decoded rows go. A sink knows rows, not XDP.
//!
//! The pipeline hands rows to a sink's [`Input`]: a queue bounded in rows. When the queue
//! is full the sink's own overflow policy decides: the GreptimeDB sink hands the rows to
//! its disk spool, JSON lines and `none` count them as `queue drops`. Batching (size or
//! flush interval), retries and the spool live inside the sink.

pub mod batch;
pub mod greptime;
pub mod jsonl;

use std::sync::Arc;

use tokio::{sync::watch, task::JoinHandle};

use crate::{
    metrics::Counters,
    queue::{self, Batch, Receiver, Rejected},
    throttle::Throttled,
};
use greptime::spool_writer::{Item, Payload, SpoolWriter};

/// Which output, with its settings.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    Greptime(Box<greptime::GreptimeConfig>),
    Jsonl,
    None,
}

/// A sink's settings.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    pub output: SinkConfig,
    /// Rows that may wait for the output.
    pub queue_rows: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write to stdout")]
    Stdout(#[source] std::io::Error),
    #[error("cannot set up TLS to GreptimeDB: {0}")]
    Tls(String),
    #[error(transparent)]
    Spool(#[from] greptime::spool::SpoolError),
}

/// Where rows go when the queue is full.
enum Overflow {
    /// Counted as queue drops.
    Drop,
    /// To the disk spool, for this database and table.
    Spool {
        writer: Arc<SpoolWriter>,
        database: String,
        table: String,
    },
}

/// The sink's front door, used by the thread that drains the source.
pub struct Input {
    tx: queue::Sender,
    overflow: Overflow,
    counters: Arc<Counters>,
    full: Throttled,
    spooling: Throttled,
}

impl Input {
    /// Hands `rows` over without waiting: to the queue, else to the overflow policy, else
    /// counted.
    pub fn offer(&self, rows: Batch) {
        if rows.is_empty() {
            return;
        }
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
                payload: Payload::Rows {
                    table: table.clone(),
                    rows,
                },
            };
            if writer.try_put(item).is_ok() {
                return self.spooling.warn(format_args!(
                    "GreptimeDB falls behind the capture: rows go to the disk spool (raise --max-in-flight or --batch-size, or sample with --sample-rate)"
                ));
            }
            self.full.warn(format_args!(
                "the output and its spool both fall behind: rows are dropped (raise --queue-size or --max-in-flight, or sample with --sample-rate)"
            ));
        } else {
            self.full.warn(format_args!(
                "the output falls behind: rows are dropped (raise --queue-size, or sample with --sample-rate)"
            ));
        }
        Counters::add(&self.counters.queue_drops, n);
    }

    /// Hands `rows` over, waiting for room in the queue (replay: nothing is lost by going
    /// slower).
    pub async fn send(&self, rows: Batch) {
        if rows.is_empty() {
            return;
        }
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

/// A started sink: its input, and the task that ends once the input is dropped and every
/// row is written, spooled or counted.
pub struct Sink {
    pub input: Input,
    pub task: JoinHandle<Result<(), SinkError>>,
}

/// Starts the sink. `stopping` turns true when capture stops; sinks that retry use it to
/// start their shutdown deadline.
pub fn start(
    settings: SinkSettings,
    counters: Arc<Counters>,
    stopping: watch::Receiver<bool>,
) -> Result<Sink, SinkError> {
    let (tx, rx) = queue::bounded(settings.queue_rows);
    let (overflow, task) = match settings.output {
        SinkConfig::Greptime(cfg) => {
            let writer = match &cfg.spool {
                Some(s) => greptime::open_spool(s, settings.queue_rows, &counters)?,
                None => None,
            };
            let overflow = match &writer {
                Some(w) => Overflow::Spool {
                    writer: Arc::clone(w),
                    database: cfg.database.clone(),
                    table: cfg.table.clone(),
                },
                None => Overflow::Drop,
            };
            let task = tokio::spawn(greptime::run(
                *cfg,
                rx,
                Arc::clone(&counters),
                stopping,
                writer,
            ));
            (overflow, task)
        }
        SinkConfig::Jsonl => {
            let c = Arc::clone(&counters);
            (
                Overflow::Drop,
                tokio::spawn(async move { jsonl::run(rx, &c).await }),
            )
        }
        SinkConfig::None => {
            let c = Arc::clone(&counters);
            (
                Overflow::Drop,
                tokio::spawn(async move {
                    discard(rx, &c).await;
                    Ok(())
                }),
            )
        }
    };
    Ok(Sink {
        input: Input {
            tx,
            overflow,
            counters,
            full: Throttled::default(),
            spooling: Throttled::default(),
        },
        task,
    })
}

/// `--output none`: rows are accepted and dropped on purpose (benchmarks), so they count
/// as written.
async fn discard(mut rx: Receiver, counters: &Counters) {
    while let Some(batch) = rx.recv().await {
        Counters::add(&counters.written, batch.len() as u64);
    }
}

/// After a fatal error: stop accepting batches and count what was queued as failed.
fn fail_remaining(mut rx: Receiver, counters: &Counters) {
    for batch in rx.close() {
        Counters::add(&counters.write_errors, batch.len() as u64);
    }
}
