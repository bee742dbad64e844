//! Outputs: where decoded rows go. A sink knows rows, not XDP.
//!
//! The pipeline hands rows to a sink's [`Input`]: a queue bounded in rows. When the queue
//! is full the sink's own overflow policy decides: the GreptimeDB sink hands the rows to
//! its disk spool, JSON lines and `none` count them as `queue drops`. Batching (size or
//! flush interval), retries and the spool live inside the sink.
//!
//! A sink writes one to three tables (`packet_data`, and `flow_data` and `dns_data` with
//! `--mode flows|both`): the code is generic over the row type ([`Table`]), with a queue, a
//! batcher and [`Counters`] per table, over one GreptimeDB connection set and one spool.
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
    record::{DnsRecord, FlowRecord, PacketRecord},
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

/// A started sink of packet rows and, with `--mode flows|both`, flow and DNS rows: one
/// output, one GreptimeDB connection set and one spool for all, a queue and counters per
/// table. The task ends once every input is dropped and every row is written, spooled or
/// counted.
pub struct Sink {
    pub packets: Input<PacketRecord>,
    pub flows: Option<Input<FlowRecord>>,
    pub dns: Option<Input<DnsRecord>>,
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

/// Where the rows of a table besides the packet table go: its name and its counters.
#[derive(Debug, Clone)]
pub struct TableOutput {
    pub table: String,
    pub counters: Arc<Counters>,
}

/// The tables besides the packet table a sink writes.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// `--mode flows|both`: flow rows.
    pub flows: Option<TableOutput>,
    /// `--mode flows|both`: DNS rows.
    pub dns: Option<TableOutput>,
}

/// A table's two ends, when it is written: the receiver for the output, the sender (with
/// the table's name and counters) for its [`Input`].
struct Ends<R> {
    tx: queue::Sender<Vec<R>>,
    rx: queue::Receiver<Vec<R>>,
    out: TableOutput,
}

/// What a table's [`Input`] takes: the queue's sender and the table's counters.
type InputEnd<R> = (queue::Sender<Vec<R>>, Arc<Counters>);

impl<R> Ends<R> {
    fn of(out: Option<TableOutput>, rows: usize) -> Option<Self> {
        out.map(|out| {
            let (tx, rx) = queue::bounded_in(rows, queue::bytes_for::<R>(rows));
            Self { tx, rx, out }
        })
    }

    /// What the output takes (the receiver, the name and counters), and what the input
    /// takes.
    fn split(self) -> (greptime::TableRx<R>, InputEnd<R>) {
        let rx = greptime::TableRx {
            table: self.out.table,
            rx: self.rx,
            counters: Arc::clone(&self.out.counters),
        };
        (rx, (self.tx, self.out.counters))
    }
}

/// Starts the sink of packet rows (`counters`) and of the `more` tables given.
/// `stopping` turns true when capture stops; sinks that retry use it to start their
/// shutdown deadline.
pub fn start(
    settings: SinkSettings,
    counters: Arc<Counters>,
    more: Outputs,
    stopping: watch::Receiver<bool>,
) -> Result<Sink, SinkError> {
    let rows = settings.queue_rows;
    let (tx, rx) = queue::bounded_in(rows, queue::bytes_for::<PacketRecord>(rows));
    let (flows, flow_in) = Ends::<FlowRecord>::of(more.flows, settings.queue_rows)
        .map(Ends::split)
        .unzip();
    let (dns, dns_in) = Ends::<DnsRecord>::of(more.dns, settings.queue_rows)
        .map(Ends::split)
        .unzip();
    let (mut flow_overflow, mut dns_overflow) = (Overflow::Drop, Overflow::Drop);
    let (give_up, give_up_rx) = watch::channel(false);
    let (gone, reader_gone) = watch::channel(false);
    let mut spool = false;
    let mut waits_for = None;
    let discards = matches!(settings.output, SinkConfig::None);
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
                let tables = flows.iter().map(|f| (&f.table, &f.counters));
                for (table, c) in tables.chain(dns.iter().map(|d| (&d.table, &d.counters))) {
                    w.spool().add_table(table, Arc::clone(c));
                }
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
            if let Some(d) = &dns {
                dns_overflow = spill(&d.table);
            }
            let run = greptime::writer::run_until(
                *cfg,
                rx,
                Arc::clone(&counters),
                greptime::MoreTables { flows, dns },
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
            let more = jsonl::More {
                flows: flows.map(|f| (f.rx, f.counters)),
                dns: dns.map(|d| (d.rx, d.counters)),
            };
            (
                Overflow::Drop,
                tokio::spawn(async move { jsonl::run(rx, &c, more, &gone).await }),
            )
        }
        SinkConfig::None => {
            let c = Arc::clone(&counters);
            (
                Overflow::Drop,
                tokio::spawn(async move {
                    tokio::join!(
                        discard(rx, &c),
                        async {
                            if let Some(f) = flows {
                                discard(f.rx, &f.counters).await;
                            }
                        },
                        async {
                            if let Some(d) = dns {
                                discard(d.rx, &d.counters).await;
                            }
                        }
                    );
                    Ok(())
                }),
            )
        }
    };
    let packets = Input::new(tx, overflow, counters);
    Ok(Sink {
        packets: if discards {
            packets.discarding()
        } else {
            packets
        },
        flows: flow_in.map(|(tx, c)| Input::new(tx, flow_overflow, c)),
        dns: dns_in.map(|(tx, c)| Input::new(tx, dns_overflow, c)),
        task,
        spool,
        waits_for,
        give_up,
        reader_gone,
    })
}
