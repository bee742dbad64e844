//! JSON lines on stdout: one object per row, keys = column names. Packet rows and flow rows
//! (`--mode both`) go through one writer, so lines never interleave; a reader tells a flow
//! row by its `interval_ms` key (packet rows have `packet_size` instead).

use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::{drain::fail_remaining, error::SinkError};
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

/// Packet rows only.
pub async fn run(rx: Receiver, counters: &Counters) -> Result<(), SinkError> {
    run_tables(rx, counters, None).await
}

/// Packet rows from `rx`, and flow rows from `flows` when given, each counted in its own
/// counters.
pub async fn run_tables(
    mut rx: Receiver,
    counters: &Counters,
    flows: Option<(Receiver<Vec<FlowRecord>>, Arc<Counters>)>,
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
            Counters::add(&c.write_errors, n);
            fail_remaining(rx, counters);
            if let (Some(r), Some(c)) = (frx, &fc) {
                fail_remaining(r, c);
            }
            return Err(SinkError::Stdout(e));
        }
        Counters::add(&c.written, n);
    }
    out.flush().await.map_err(SinkError::Stdout)
}
