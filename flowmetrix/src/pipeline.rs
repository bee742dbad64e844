//! Wiring: source → offset + decode → bounded queue → sink, and shutdown.
//!
//! Live: the ring is drained on the tokio runtime as soon as the kernel signals data. Rows
//! go to the sink through a bounded queue; when it is full the rows are dropped and counted
//! (`queue_drops`) rather than stalling the drain. Shutdown detaches the program first, so
//! nothing new arrives, then drains what the ring still holds, then lets the sink finish.
//!
//! Replay (`--pcap`): frames come from a file through the same offset/decode/sink path; the
//! file waits for the queue instead of dropping rows, since nothing is lost by going slower.

use std::{
    future::Future,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, info, warn};

use crate::{
    capture::{Capture, CaptureConfig},
    decode::{self, FrameMeta},
    metrics::{Counters, KernelStats, Summary},
    offset::{AutoOffset, Offset, Step},
    pcap::PcapFrames,
    queue::{self, Batch, Rejected},
    record::{PacketRecord, UnixNanos},
    ring::{self, Clock, Ring},
    sink::{self, SinkConfig, SinkError},
};

/// Where frames come from.
#[derive(Debug, Clone)]
pub enum Source {
    Live(CaptureConfig),
    Pcap(PathBuf),
}

/// The VMware prefix: a fixed length, or learned from the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Fixed(Offset),
    Auto,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub source: Source,
    pub prefix: Prefix,
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

/// Runs until `shutdown` completes, the source ends, or the sink fails. Errors before
/// anything starts are returned; errors after it are in the [`Outcome`] with the numbers.
pub async fn run(
    cfg: PipelineConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    match cfg.source.clone() {
        Source::Live(capture) => live(capture, cfg, shutdown).await,
        Source::Pcap(path) => replay(&path, cfg, shutdown).await,
    }
}

/// The stages after the source: batcher, queue, sink task.
struct Stages {
    batcher: Batcher,
    sink: JoinHandle<Result<(), SinkError>>,
    /// Turned on when the source stops (sinks start their shutdown deadline).
    stopping: watch::Sender<bool>,
    counters: Arc<Counters>,
}

impl Stages {
    fn start(cfg: &PipelineConfig, sample_rate: u32) -> Self {
        let counters = Arc::new(Counters::default());
        let batch_size = cfg.batch_size as usize;
        let (tx, rx) = queue::bounded(cfg.queue_size as usize);
        let (stopping, stopping_rx) = watch::channel(false);
        let sink = tokio::spawn(sink::run(
            cfg.output.clone(),
            rx,
            Arc::clone(&counters),
            stopping_rx,
        ));
        let batcher = Batcher {
            prefix: match cfg.prefix {
                Prefix::Fixed(o) => OffsetState::Fixed(o),
                Prefix::Auto => OffsetState::Auto(Box::default()),
            },
            sample_rate,
            batch_size,
            batch: Vec::with_capacity(batch_size),
            counters: Arc::clone(&counters),
            tx,
            warned: false,
        };
        Self {
            batcher,
            sink,
            stopping,
            counters,
        }
    }

    /// Closes the queue, waits for the sink, and sums up.
    async fn finish(
        self,
        sink_done: Option<Result<Result<(), SinkError>, tokio::task::JoinError>>,
        kernel: anyhow::Result<KernelStats>,
        mut error: Option<anyhow::Error>,
    ) -> Outcome {
        let Self {
            mut batcher,
            sink,
            stopping,
            counters,
        } = self;
        stopping.send_replace(true);
        // Frames still held by -auto-detect are decided and written too.
        batcher.release_held();
        batcher.send_waiting().await;
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
        let kernel = kernel.unwrap_or_else(|e| {
            error.get_or_insert(e);
            KernelStats::default()
        });
        Outcome {
            summary: Summary::new(kernel, &counters),
            error,
        }
    }
}

async fn live(
    capture_cfg: CaptureConfig,
    cfg: PipelineConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    let mut capture = Capture::attach(&capture_cfg)?;
    let mut ring = Ring::new(capture.take_ring()?).context("cannot poll the ring buffer")?;
    if let Some(logger) = capture.take_logger() {
        ring::spawn_logger(logger).context("cannot poll the eBPF log buffer")?;
    }
    let mut stages = Stages::start(&cfg, capture_cfg.sample_rate);

    tokio::pin!(shutdown);
    let mut error = None;
    let mut sink_done = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            res = &mut stages.sink => {
                sink_done = Some(res);
                break;
            }
            res = ring.readable() => {
                if let Err(e) = res {
                    error = Some(anyhow::Error::new(e).context("polling the ring buffer failed"));
                    break;
                }
                stages.batcher.drain(&mut ring);
            }
        }
    }

    capture.detach();
    stages.stopping.send_replace(true);
    tokio::time::sleep(DETACH_SETTLE).await;
    let kernel = capture.stats().map_err(anyhow::Error::from);
    stages.batcher.drain(&mut ring);
    Ok(stages.finish(sink_done, kernel, error).await)
}

/// How many frames to replay between looks at the shutdown signal.
const REPLAY_CHECK_EVERY: u64 = 256;

async fn replay(
    path: &std::path::Path,
    cfg: PipelineConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    let mut frames = PcapFrames::open(path)?;
    info!(file = %path.display(), "replaying");
    let mut stages = Stages::start(&cfg, 1);
    tokio::pin!(shutdown);
    let mut buf = Vec::new();
    let mut error = None;
    loop {
        if frames.frames() % REPLAY_CHECK_EVERY == 0 {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = std::future::ready(()) => {}
            }
        }
        match frames.next_frame(&mut buf) {
            Ok(Some(info)) => {
                if stages.batcher.push_frame(&buf, info.wire_len, info.ts) {
                    stages.batcher.send_waiting().await;
                }
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(e.into());
                break;
            }
        }
    }
    stages.batcher.send_waiting().await;
    let read = frames.frames();
    let file = KernelStats {
        seen: read,
        sampled: read,
        ring_drops: 0,
    };
    Ok(stages.finish(None, Ok(file), error).await)
}

/// Where the prefix length comes from, as the batcher uses it.
enum OffsetState {
    Fixed(Offset),
    Auto(Box<AutoOffset>),
}

/// Turns frames into rows and hands them to the queue in batches.
struct Batcher {
    prefix: OffsetState,
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
        ring.drain(|bytes| {
            if self.push_record(bytes, &clock) {
                self.send();
            }
        });
        self.send();
    }

    /// One ring record; true when the batch is full.
    fn push_record(&mut self, bytes: &[u8], clock: &Clock) -> bool {
        match ring::parse_record(bytes) {
            Ok(s) => self.push_frame(s.frame, s.header.wire_len, clock.wall(s.header.ts_boot_ns)),
            Err(e) => {
                self.not_decoded(e.into());
                false
            }
        }
    }

    /// One frame (prefix included); true when the batch is full.
    fn push_frame(&mut self, frame: &[u8], wire_len: u32, ts: UnixNanos) -> bool {
        let step = match &mut self.prefix {
            OffsetState::Fixed(o) => Step::Use(o.0),
            OffsetState::Auto(auto) => auto.observe(frame, wire_len, ts, Instant::now()),
        };
        match step {
            Step::Hold => {}
            Step::Use(offset) => self.decode_at(Offset(offset), frame, wire_len, ts),
            Step::Release { offset, frames } => {
                for held in frames {
                    self.decode_at(Offset(offset), &held.bytes, held.wire_len, held.ts);
                }
            }
        }
        self.batch.len() >= self.batch_size
    }

    /// Decides the offset for frames -auto-detect still holds, and decodes them.
    fn release_held(&mut self) {
        let OffsetState::Auto(auto) = &mut self.prefix else {
            return;
        };
        if let Some((offset, frames)) = auto.finish() {
            for held in frames {
                self.decode_at(Offset(offset), &held.bytes, held.wire_len, held.ts);
            }
        }
    }

    fn decode_at(&mut self, offset: Offset, frame: &[u8], wire_len: u32, ts: UnixNanos) {
        let row = offset
            .apply(frame, wire_len)
            .map_err(anyhow::Error::from)
            .and_then(|(frame, wire_len)| {
                let meta = FrameMeta {
                    ts,
                    wire_len,
                    sample_rate: self.sample_rate,
                };
                Ok(decode::decode(frame, meta)?)
            });
        match row {
            Ok(row) => {
                Counters::add(&self.counters.decoded, 1);
                self.batch.push(row);
            }
            Err(e) => self.not_decoded(e),
        }
    }

    fn not_decoded(&mut self, e: anyhow::Error) {
        Counters::add(&self.counters.decode_errors, 1);
        if self.warned {
            debug!("sample not decoded: {e:#}");
        } else {
            warn!("sample not decoded: {e:#} (further ones are counted, logged at debug)");
            self.warned = true;
        }
    }

    fn take(&mut self) -> Option<Batch> {
        (!self.batch.is_empty())
            .then(|| std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size)))
    }

    /// Hands the batch to the queue now, or counts it as dropped.
    fn send(&mut self) {
        let Some(batch) = self.take() else { return };
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

    /// Hands the batch to the queue, waiting for room.
    async fn send_waiting(&mut self) {
        let Some(batch) = self.take() else { return };
        if let Err(batch) = self.tx.send_waiting(batch).await {
            Counters::add(&self.counters.write_errors, batch.len() as u64);
        }
    }
}
