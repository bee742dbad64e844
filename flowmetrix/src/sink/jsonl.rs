//! JSON lines on stdout: one object per row, keys = column names. Packet rows and flow rows
//! (`--mode both`) go through one writer, so lines never interleave; a reader tells a flow
//! row by its `interval_ms` key (packet rows have `packet_size` instead).
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
    record::{FlowRecord, PacketRecord},
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

/// Packet rows from `rx`, and flow rows from `flows` when given, each counted in its own
/// counters. When the reader of stdout leaves, `reader_gone` turns true (the pipeline stops
/// as at Ctrl+C) and the rows still coming are counted as unread until the queues close.
pub async fn run(
    mut rx: Receiver,
    counters: &Counters,
    flows: Option<(Receiver<Vec<FlowRecord>>, Arc<Counters>)>,
    reader_gone: &watch::Sender<bool>,
) -> Result<(), SinkError> {
    let mut out = tokio::io::stdout();
    let mut buf = Vec::with_capacity(1 << 16);
    let (mut frx, fc) = match flows {
        Some((r, c)) => (Some(r), Some(c)),
        None => (None, None),
    };
    let mut packets_open = true;
    loop {
        enum Got {
            Packets(Option<Vec<PacketRecord>>),
            Flows(Option<Vec<FlowRecord>>),
        }
        let got = tokio::select! {
            b = rx.recv(), if packets_open => Got::Packets(b),
            b = async { match frx.as_mut() {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            } }, if frx.is_some() => Got::Flows(b),
            else => break,
        };
        buf.clear();
        let (n, c, more) = match got {
            Got::Packets(None) => {
                packets_open = false;
                continue;
            }
            Got::Flows(None) => {
                frx = None;
                continue;
            }
            Got::Packets(Some(batch)) => (encode_all(&mut buf, &batch), counters, !rx.is_empty()),
            Got::Flows(Some(batch)) => (
                encode_all(&mut buf, &batch),
                fc.as_deref().unwrap_or(counters),
                frx.as_ref().is_some_and(|r| !r.is_empty()),
            ),
        };
        let res = match out.write_all(&buf).await {
            Ok(()) if !more => out.flush().await,
            other => other,
        };
        if let Err(e) = res {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                Counters::add(&c.unread, n);
                return reader_left(rx, counters, frx.zip(fc), reader_gone).await;
            }
            Counters::add(&c.write_errors, n);
            fail_remaining(rx, counters);
            if let (Some(r), Some(c)) = (frx, &fc) {
                fail_remaining(r, c);
            }
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

/// The reader of stdout has left: say so (not as an error), have the pipeline stop, and
/// count the rows still queued or still coming as unread until it closes the queues.
async fn reader_left(
    rx: Receiver,
    counters: &Counters,
    flows: Option<(Receiver<Vec<FlowRecord>>, Arc<Counters>)>,
    reader_gone: &watch::Sender<bool>,
) -> Result<(), SinkError> {
    tracing::info!(
        "stdout was closed by its reader: stopping (rows not printed are counted as unread)"
    );
    reader_gone.send_replace(true);
    match flows {
        Some((f, fc)) => {
            tokio::join!(unread(rx, counters), unread(f, &fc));
        }
        None => unread(rx, counters).await,
    }
    Ok(())
}
