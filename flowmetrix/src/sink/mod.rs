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
//!
//! [`start`] wires one output to the inputs ([`input`]); the outputs ([`greptime`],
//! [`jsonl`], `none` in [`drain`]) use the shared [`batch`]er and [`error`] type and never
//! this module.

pub mod batch;
pub mod drain;
pub mod error;
pub mod greptime;
pub mod input;
pub mod jsonl;

use std::sync::Arc;

use tokio::{sync::watch, task::JoinHandle};

pub use crate::schema::Table;
use crate::{
    metrics::Counters,
    queue,
    record::{FlowRecord, PacketRecord},
};
use drain::discard;
pub use error::SinkError;
pub use input::Input;
use input::Overflow;

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

/// A started sink of packet rows and, with `--mode flows|both`, flow rows: one output, one
/// GreptimeDB connection set and one spool for both, a queue and counters per table. The
/// task ends once both inputs are dropped and every row is written, spooled or counted.
pub struct Sink {
    pub packets: Input<PacketRecord>,
    pub flows: Option<Input<FlowRecord>>,
    pub task: JoinHandle<Result<(), SinkError>>,
    /// Whether a disk spool takes the rows the output cannot (one was asked for and
    /// opened).
    pub spool: bool,
    /// What the end of a run waits for, and for how long at most: the output that retries
    /// (GreptimeDB), with its shutdown timeout. None when the end does not wait.
    pub waits_for: Option<(String, std::time::Duration)>,
    /// Set once shutdown has begun to give up at once: the rows not yet written are
    /// counted as write errors (or go to the spool), without waiting out the deadline.
    pub give_up: watch::Sender<bool>,
    /// Turns true when the output's reader has left (stdout closed under `--output jsonl`):
    /// the run stops as at Ctrl+C, and the rows not printed are counted as unread. Closed
    /// without turning true by the outputs that have no reader to lose.
    pub reader_gone: watch::Receiver<bool>,
}

/// Where flow rows go: their table and their counters.
#[derive(Debug, Clone)]
pub struct FlowOutput {
    pub table: String,
    pub counters: Arc<Counters>,
}

/// Starts the sink of packet rows (`counters`) and, when `flows` is given, of flow rows.
/// `stopping` turns true when capture stops; sinks that retry use it to start their
/// shutdown deadline.
pub fn start(
    settings: SinkSettings,
    counters: Arc<Counters>,
    flows: Option<FlowOutput>,
    stopping: watch::Receiver<bool>,
) -> Result<Sink, SinkError> {
    let (tx, rx) = queue::bounded(settings.queue_rows);
    let (flow_tx, flow_rx) = match &flows {
        Some(f) => {
            let (t, r) = queue::bounded::<Vec<FlowRecord>>(settings.queue_rows);
            (Some((t, f.clone())), Some(r))
        }
        None => (None, None),
    };
    let mut flow_overflow = Overflow::Drop;
    let (give_up, give_up_rx) = watch::channel(false);
    let (gone, reader_gone) = watch::channel(false);
    let mut spool = false;
    let mut waits_for = None;
    let (overflow, task) = match settings.output {
        SinkConfig::Greptime(cfg) => {
            waits_for = Some((cfg.describe(), cfg.shutdown_timeout));
            let writer = match &cfg.spool {
                Some(s) => greptime::open_spool(s, settings.queue_rows, &counters)?,
                None => None,
            };
            spool = writer.is_some();
            if let Some(w) = &writer {
                let rows = w.spool().rows();
                if rows > 0 {
                    // Replayed into this run's endpoint: say so before it happens.
                    let endpoints = cfg.endpoints.join(",");
                    let output = format!("GreptimeDB at {endpoints}");
                    tracing::info!(
                        "{}",
                        greptime::spool::list::earlier_run(w.spool().dir(), rows, &output)
                    );
                }
            }
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
            let run = greptime::writer::run_until(
                *cfg,
                rx,
                Arc::clone(&counters),
                flow_table,
                greptime::writer::Stop {
                    stopping,
                    give_up: give_up_rx,
                },
                writer,
            );
            let task = tokio::spawn(async move { Ok(run.await?) });
            (overflow, task)
        }
        SinkConfig::Jsonl => {
            let c = Arc::clone(&counters);
            let flows = flow_rx.zip(flows.map(|f| f.counters));
            (
                Overflow::Drop,
                tokio::spawn(async move { jsonl::run(rx, &c, flows, &gone).await }),
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
    Ok(Sink {
        packets: Input::new(tx, overflow, counters),
        flows: flow_tx.map(|(tx, f)| Input::new(tx, flow_overflow, f.counters)),
        task,
        spool,
        waits_for,
        give_up,
        reader_gone,
    })
}
