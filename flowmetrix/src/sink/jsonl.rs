//! JSON lines on stdout: one object per row, keys = column names. Packet, flow and DNS rows
//! (`--mode both`) go through one writer, so lines never interleave; a reader tells a flow
//! row by its `interval_ms` key, a DNS row by its `dns_qname` key (packet rows have
//! `packet_size` instead).
//!
//! A reader that leaves (`flowmetrix … --output jsonl | head -2`: a broken pipe) ends the
//! run as a Ctrl+C would, quietly, as Unix tools do: the pipeline stops capture, detaches
//! and exits 0. The rows not printed are no write error and no loss (nobody is left to read
//! them); they are counted as `unread`, a figure of their own in the summary, so the loss
//! equation still adds up. Rows stdout took before the pipe broke count as written.

use std::sync::Arc;

use tokio::{io::AsyncWriteExt, sync::watch};

use super::{
    drain::{fail_remaining, unread},
    error::SinkError,
};
use crate::{
    metrics::Counters,
    queue::Receiver,
    record::{DnsRecord, FlowRecord},
    schema::Table,
};

/// Appends one row as a JSON line.
pub fn encode<R: Table>(buf: &mut Vec<u8>, row: &R) {
    row.write_json(buf);
}

/// Appends every row of `rows`; gives how many.
fn encode_all<R: Table>(buf: &mut Vec<u8>, rows: &[R]) -> u64 {
    rows.iter().for_each(|r| encode(buf, r));
    rows.len() as u64
}

/// The tables besides the packet table, when written: each one's queue and counters.
#[derive(Default)]
pub struct More {
    pub flows: Option<(Receiver<Vec<FlowRecord>>, Arc<Counters>)>,
    pub dns: Option<(Receiver<Vec<DnsRecord>>, Arc<Counters>)>,
}

/// One table's queue, while it is open, and its counters.
struct Stream<R> {
    rx: Option<Receiver<Vec<R>>>,
    counters: Arc<Counters>,
}

impl<R: Table> Stream<R> {
    fn new(table: Option<(Receiver<Vec<R>>, Arc<Counters>)>) -> Self {
        match table {
            Some((rx, counters)) => Self {
                rx: Some(rx),
                counters,
            },
            None => Self {
                rx: None,
                counters: Arc::default(),
            },
        }
    }

    fn open(&self) -> bool {
        self.rx.is_some()
    }

    /// The next batch; None once the queue has closed (it is then forgotten).
    async fn recv(&mut self) -> Option<Vec<R>> {
        let batch = match self.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        };
        if batch.is_none() {
            self.rx = None;
        }
        batch
    }

    /// `batch` encoded into `buf`: its rows, its counters, and whether more is queued.
    fn encode(&self, buf: &mut Vec<u8>, batch: &[R]) -> (u64, Arc<Counters>, bool) {
        let more = self.rx.as_ref().is_some_and(|r| !r.is_empty());
        (encode_all(buf, batch), Arc::clone(&self.counters), more)
    }

    /// After a fatal error: what is queued counts as failed.
    fn fail(self) {
        if let Some(rx) = self.rx {
            fail_remaining(rx, &self.counters);
        }
    }

    /// The reader has left: what is queued or still coming counts as unread.
    async fn unread(self) {
        if let Some(rx) = self.rx {
            unread(rx, &self.counters).await;
        }
    }
}

/// Packet rows from `rx`, and the `more` tables' rows, each counted in its own counters.
/// When the reader of stdout leaves, `reader_gone` turns true (the pipeline stops as at
/// Ctrl+C) and the rows still coming are counted as unread until the queues close.
pub async fn run(
    rx: Receiver,
    counters: &Arc<Counters>,
    more: More,
    reader_gone: &watch::Sender<bool>,
) -> Result<(), SinkError> {
    let mut out = tokio::io::stdout();
    let mut buf = Vec::with_capacity(1 << 16);
    let mut packets = Stream::new(Some((rx, Arc::clone(counters))));
    let mut flows = Stream::new(more.flows);
    let mut dns = Stream::new(more.dns);
    loop {
        buf.clear();
        let (n, c, more) = tokio::select! {
            Some(b) = packets.recv(), if packets.open() => packets.encode(&mut buf, &b),
            Some(b) = flows.recv(), if flows.open() => flows.encode(&mut buf, &b),
            Some(b) = dns.recv(), if dns.open() => dns.encode(&mut buf, &b),
            else => break,
        };
        let res = match out.write_all(&buf).await {
            Ok(()) if !more => out.flush().await,
            other => other,
        };
        if let Err(e) = res {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                Counters::add(&c.unread, n);
                tracing::info!(
                    "stdout was closed by its reader: stopping (rows not printed are counted as unread)"
                );
                reader_gone.send_replace(true);
                tokio::join!(packets.unread(), flows.unread(), dns.unread());
                return Ok(());
            }
            Counters::add(&c.write_errors, n);
            packets.fail();
            flows.fail();
            dns.fail();
            return Err(SinkError::Stdout(e));
        }
        Counters::add(&c.written, n);
    }
    match out.flush().await {
        // Every row was handed to stdout already: the reader left after them.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(SinkError::Stdout),
    }
}
