//! JSON lines on stdout: one object per row, keys = column names.

use tokio::io::AsyncWriteExt;

use super::{SinkError, fail_remaining};
use crate::{metrics::Counters, queue::Receiver, record::PacketRecord};

/// Appends one row as a JSON line.
pub fn encode(buf: &mut Vec<u8>, row: &PacketRecord) {
    // Serializing this plain struct into a Vec cannot fail.
    if serde_json::to_writer(&mut *buf, row).is_ok() {
        buf.push(b'\n');
    }
}

pub async fn run(mut rx: Receiver, counters: &Counters) -> Result<(), SinkError> {
    let mut out = tokio::io::stdout();
    let mut buf = Vec::with_capacity(1 << 16);
    while let Some(batch) = rx.recv().await {
        buf.clear();
        for row in &batch {
            encode(&mut buf, row);
        }
        let n = batch.len() as u64;
        let res = match out.write_all(&buf).await {
            Ok(()) if rx.is_empty() => out.flush().await,
            other => other,
        };
        if let Err(e) = res {
            Counters::add(&counters.write_errors, n);
            fail_remaining(rx, counters);
            return Err(SinkError::Stdout(e));
        }
        Counters::add(&counters.written, n);
    }
    out.flush().await.map_err(SinkError::Stdout)
}
