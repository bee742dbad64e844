//! Wiring: capture → ring drain → offset + decode → bounded queue → sink, and shutdown.
//!
//! The ring is drained on the tokio runtime as soon as the kernel signals data. Rows go to
//! the sink through a bounded queue; when it is full the rows are dropped and counted
//! (`queue_drops`) rather than stalling the drain. Shutdown detaches the program first, so
//! nothing new arrives, then drains what the ring still holds, then lets the sink finish.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use tracing::{debug, warn};

use crate::{
    capture::{Capture, CaptureConfig},
    decode::{self, FrameMeta},
    metrics::{Counters, Summary},
    offset::Offset,
    queue::{self, Rejected},
    record::PacketRecord,
    ring::{self, Clock, Ring},
    sink::{self, SinkConfig},
};

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub capture: CaptureConfig,
    pub offset: Offset,
    pub output: SinkConfig,
    pub batch_size: u32,
    pub queue_size: u32,
}

/// How a run ended: its numbers, and the error that ended it early, if any.
pub struct Outcome {
    pub summary: Summary,
    pub error: Option<anyhow::Error>,
}

/// How long to wait after detaching for program runs already under way on other CPUs.
const DETACH_SETTLE: Duration = Duration::from_millis(20);

/// Captures until `shutdown` completes (or the sink fails). Errors before capture starts
/// are returned; errors after it are in the [`Outcome`] with the numbers so far.
pub async fn run(
    cfg: PipelineConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    let mut capture = Capture::attach(&cfg.capture)?;
    let mut ring = Ring::new(capture.take_ring()?).context("cannot poll the ring buffer")?;
    if let Some(logger) = capture.take_logger() {
        ring::spawn_logger(logger).context("cannot poll the eBPF log buffer")?;
    }

    let counters = Arc::new(Counters::default());
    let batch_size = cfg.batch_size as usize;
    let (tx, rx) = queue::bounded(cfg.queue_size as usize);
    let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
    let mut sink = tokio::spawn(sink::run(
        cfg.output,
        rx,
        Arc::clone(&counters),
        stopping_rx,
    ));

    let mut batcher = Batcher {
        offset: cfg.offset,
        sample_rate: cfg.capture.sample_rate,
        batch_size,
        batch: Vec::with_capacity(batch_size),
        counters: Arc::clone(&counters),
        tx,
        warned: false,
    };

    tokio::pin!(shutdown);
    let mut error = None;
    let mut sink_done = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            res = &mut sink => {
                sink_done = Some(res);
                break;
            }
            res = ring.readable() => {
                if let Err(e) = res {
                    error = Some(anyhow::Error::new(e).context("polling the ring buffer failed"));
                    break;
                }
                batcher.drain(&mut ring);
            }
        }
    }

    capture.detach();
    stopping.send_replace(true);
    tokio::time::sleep(DETACH_SETTLE).await;
    let kernel = capture.stats();
    batcher.drain(&mut ring);
    drop(batcher); // closes the queue: the sink writes what it holds and returns

    let sink_result = match sink_done {
        Some(res) => res,
        None => sink.await,
    };
    match sink_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error = error.or(Some(e.into())),
        Err(join) => error = error.or(Some(anyhow::anyhow!("output task failed: {join}"))),
    }
    let kernel = match kernel {
        Ok(k) => k,
        Err(e) => {
            error = error.or(Some(e.into()));
            Default::default()
        }
    };
    Ok(Outcome {
        summary: Summary::new(kernel, &counters),
        error,
    })
}

/// Turns ring records into rows and hands them to the queue in batches.
struct Batcher {
    offset: Offset,
    sample_rate: u32,
    batch_size: usize,
    batch: Vec<PacketRecord>,
    counters: Arc<Counters>,
    tx: queue::Sender,
    warned: bool,
}

impl Batcher {
    /// Everything in the ring now, then the partial batch.
    fn drain(&mut self, ring: &mut Ring) {
        let clock = Clock::now();
        ring.drain(|bytes| self.push(bytes, &clock));
        self.send();
    }

    fn push(&mut self, bytes: &[u8], clock: &Clock) {
        match self.decode(bytes, clock) {
            Ok(row) => {
                Counters::add(&self.counters.decoded, 1);
                self.batch.push(row);
                if self.batch.len() >= self.batch_size {
                    self.send();
                }
            }
            Err(e) => {
                Counters::add(&self.counters.decode_errors, 1);
                if self.warned {
                    debug!("sample not decoded: {e:#}");
                } else {
                    warn!("sample not decoded: {e:#} (further ones are counted, logged at debug)");
                    self.warned = true;
                }
            }
        }
    }

    fn decode(&self, bytes: &[u8], clock: &Clock) -> anyhow::Result<PacketRecord> {
        let sample = ring::parse_record(bytes)?;
        let (frame, wire_len) = self.offset.apply(sample.frame, sample.header.wire_len)?;
        let meta = FrameMeta {
            ts: clock.wall(sample.header.ts_boot_ns),
            wire_len,
            sample_rate: self.sample_rate,
        };
        Ok(decode::decode(frame, meta)?)
    }

    fn send(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size));
        match self.tx.try_send(batch) {
            Ok(()) => {}
            Err(Rejected::Full(batch)) => {
                Counters::add(&self.counters.queue_drops, batch.len() as u64);
            }
            // The sink has stopped (its error is reported); these rows are not written.
            Err(Rejected::Closed(batch)) => {
                Counters::add(&self.counters.write_errors, batch.len() as u64);
            }
        }
    }
}
