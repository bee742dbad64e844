//! Outputs: where decoded rows go. A sink knows rows, not XDP.

pub mod greptime;
pub mod jsonl;
pub mod spool;

use std::sync::Arc;

use crate::{metrics::Counters, queue::Receiver};

/// Which output, with its settings.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    Greptime(Box<greptime::GreptimeConfig>),
    Jsonl,
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write to stdout")]
    Stdout(#[source] std::io::Error),
    #[error("cannot set up TLS to GreptimeDB: {0}")]
    Tls(String),
}

/// Consumes batches until the sender side closes, counting rows written and failed.
/// `shutdown` turns true when capture stops; sinks that retry use it to start their
/// shutdown deadline.
pub async fn run(
    output: SinkConfig,
    rx: Receiver,
    counters: Arc<Counters>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    spool: Option<Arc<spool::Spool>>,
) -> Result<(), SinkError> {
    match output {
        SinkConfig::Greptime(cfg) => greptime::run(*cfg, rx, counters, shutdown, spool).await,
        SinkConfig::Jsonl => jsonl::run(rx, &counters).await,
        SinkConfig::None => {
            discard(rx, &counters).await;
            Ok(())
        }
    }
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
