//! Outputs: where decoded rows go. A sink knows rows, not XDP.
//!
//! The pipeline hands rows to a sink's [`Input`]: a queue bounded in rows. When the queue
//! is full the sink's own overflow policy decides: the GreptimeDB sink hands the rows to
//! its disk spool, JSON lines and `none` count them as `queue drops`. Batching (size or
//! flush interval), retries and the spool live inside the sink.
//!
//! A sink writes one or two tables (`packet_data`, and `flow_data` with `--mode
//! flows|both`): the code is generic over the row type ([`Table`]), with a queue, a batcher
//! and [`Counters`] per table, over one GreptimeDB connection set and one spool.

pub mod batch;
pub mod greptime;
pub mod jsonl;

use std::sync::Arc;

use tokio::{sync::watch, task::JoinHandle};

use crate::{
    metrics::Counters,
    queue::{self, Receiver, Rejected},
    record::{FlowRecord, PacketRecord},
    throttle::Throttled,
};
pub use greptime::Table;
use greptime::spool_writer::{Item, Payload, SpoolWriter, TableRows};

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

/// A table's front door, used by the thread that drains the source. One per table: its
/// own queue, overflow and counters.
pub struct Input<R = PacketRecord> {
    tx: queue::Sender<Vec<R>>,
    overflow: Overflow,
    counters: Arc<Counters>,
    full: Throttled,
    spooling: Throttled,
}

impl<R: Table> Input<R> {
    fn new(tx: queue::Sender<Vec<R>>, overflow: Overflow, counters: Arc<Counters>) -> Self {
        Self {
            tx,
            overflow,
            counters,
            full: Throttled::default(),
            spooling: Throttled::default(),
        }
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
                payload: Payload::Rows(Box::new(TableRows {
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

/// A started sink of packet rows and, with `--mode flows|both`, flow rows: one output, one
/// GreptimeDB connection set and one spool for both, a queue and counters per table. The
/// task ends once both inputs are dropped and every row is written, spooled or counted.
pub struct Sinks {
    pub packets: Input<PacketRecord>,
    pub flows: Option<Input<FlowRecord>>,
    pub task: JoinHandle<Result<(), SinkError>>,
}

/// Starts the sink. `stopping` turns true when capture stops; sinks that retry use it to
/// start their shutdown deadline.
pub fn start(
    settings: SinkSettings,
    counters: Arc<Counters>,
    stopping: watch::Receiver<bool>,
) -> Result<Sink, SinkError> {
    let Sinks { packets, task, .. } = start_tables(settings, counters, None, stopping)?;
    Ok(Sink {
        input: packets,
        task,
    })
}

/// Where flow rows go: their table and their counters.
#[derive(Debug, Clone)]
pub struct FlowOutput {
    pub table: String,
    pub counters: Arc<Counters>,
}

/// Starts the sink of packet rows (`counters`) and, when `flows` is given, of flow rows.
pub fn start_tables(
    settings: SinkSettings,
    counters: Arc<Counters>,
    flows: Option<FlowOutput>,
    stopping: watch::Receiver<bool>,
) -> Result<Sinks, SinkError> {
    let (tx, rx) = queue::bounded(settings.queue_rows);
    let (flow_tx, flow_rx) = match &flows {
        Some(f) => {
            let (t, r) = queue::bounded::<Vec<FlowRecord>>(settings.queue_rows);
            (Some((t, f.clone())), Some(r))
        }
        None => (None, None),
    };
    let mut flow_overflow = Overflow::Drop;
    let (overflow, task) = match settings.output {
        SinkConfig::Greptime(cfg) => {
            let writer = match &cfg.spool {
                Some(s) => greptime::open_spool(s, settings.queue_rows, &counters)?,
                None => None,
            };
            if let (Some(w), Some(f)) = (&writer, &flows) {
                w.spool().add_table(&f.table, Arc::clone(&f.counters));
            }
            let spill = |table: &str| match &writer {
                Some(w) => Overflow::Spool {
                    writer: Arc::clone(w),
                    database: cfg.database.clone(),
                    table: table.to_owned(),
                },
                None => Overflow::Drop,
            };
            let overflow = spill(&cfg.table);
            if let Some(f) = &flows {
                flow_overflow = spill(&f.table);
            }
            let flow_table = flow_rx.zip(flows).map(|(rx, f)| greptime::FlowTable {
                table: f.table,
                rx,
                counters: f.counters,
            });
            let task = tokio::spawn(greptime::run_tables(
                *cfg,
                rx,
                Arc::clone(&counters),
                flow_table,
                stopping,
                writer,
            ));
            (overflow, task)
        }
        SinkConfig::Jsonl => {
            let c = Arc::clone(&counters);
            let flows = flow_rx.zip(flows.map(|f| f.counters));
            (
                Overflow::Drop,
                tokio::spawn(async move { jsonl::run_tables(rx, &c, flows).await }),
            )
        }
        SinkConfig::None => {
            let c = Arc::clone(&counters);
            let flows = flow_rx.zip(flows.map(|f| f.counters));
            (
                Overflow::Drop,
                tokio::spawn(async move {
                    let packets = discard(rx, &c);
                    match flows {
                        Some((rx, fc)) => {
                            tokio::join!(packets, discard(rx, &fc));
                        }
                        None => packets.await,
                    }
                    Ok(())
                }),
            )
        }
    };
    Ok(Sinks {
        packets: Input::new(tx, overflow, counters),
        flows: flow_tx.map(|(tx, f)| Input::new(tx, flow_overflow, f.counters)),
        task,
    })
}

/// `--output none`: rows are accepted and dropped on purpose (benchmarks), so they count
/// as written.
async fn discard<R>(mut rx: Receiver<Vec<R>>, counters: &Counters) {
    while let Some(batch) = rx.recv().await {
        Counters::add(&counters.written, batch.len() as u64);
    }
}

/// After a fatal error: stop accepting batches and count what was queued as failed.
fn fail_remaining<R>(mut rx: Receiver<Vec<R>>, counters: &Counters) {
    for batch in rx.close() {
        Counters::add(&counters.write_errors, batch.len() as u64);
    }
}
