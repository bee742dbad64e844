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

use flowmetrix_common::DRAIN_INTERVAL_MS;

use crate::{
    capture::{Capture, CaptureConfig},
    decode::{self, FrameMeta},
    metrics::{self, Counters, Gauges, KernelStats, Registry, Summary},
    offset::{AutoOffset, Offset, Step},
    pcap::PcapFrames,
    queue::{self, Batch, Rejected},
    record::{PacketRecord, UnixNanos},
    ring::{self, Clock, Ring},
    sink::{self, SinkConfig, SinkError, greptime, spool::Spool},
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
    /// Serve Prometheus metrics here.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// How often to log a status line.
    pub stats_interval: Duration,
}

/// How a run ended: its numbers, and the error that ended it early, if any.
pub struct Outcome {
    pub summary: Summary,
    pub error: Option<anyhow::Error>,
}

/// How often the kernel counters are read for metrics and the status line.
const TICK: Duration = Duration::from_secs(1);

/// The periodic status line: rates and losses since the previous one.
struct StatusLine {
    every: Duration,
    last_at: Instant,
    last: Summary,
}

impl StatusLine {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last_at: Instant::now(),
            last: Summary::default(),
        }
    }

    fn maybe_log(&mut self, registry: &Registry) {
        let elapsed = self.last_at.elapsed();
        if elapsed < self.every {
            return;
        }
        let now = Summary::new(registry.kernel(), &registry.counters);
        let secs = elapsed.as_secs_f64();
        let d = |new: u64, old: u64| new.saturating_sub(old);
        info!(
            "sampled {:.1}/s, written {:.1}/s; since the last line: ring drops {}, decode errors {}, queue drops {}, write errors {}, spooled {}, replayed {}, spool lost {}; spool {} bytes",
            d(now.kernel.sampled, self.last.kernel.sampled) as f64 / secs,
            d(now.written, self.last.written) as f64 / secs,
            d(now.kernel.ring_drops, self.last.kernel.ring_drops),
            d(now.decode_errors, self.last.decode_errors),
            d(now.queue_drops, self.last.queue_drops),
            d(now.write_errors, self.last.write_errors),
            d(now.spooled, self.last.spooled),
            d(now.replayed, self.last.replayed),
            d(now.spool_lost, self.last.spool_lost),
            Counters::get(&registry.counters.spool_bytes),
        );
        self.last = now;
        self.last_at = Instant::now();
    }
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

/// The stages after the source: batcher, queue, sink task, and what reports on them.
struct Stages {
    batcher: Batcher,
    sink: JoinHandle<Result<(), SinkError>>,
    /// Turned on when the source stops (sinks start their shutdown deadline).
    stopping: watch::Sender<bool>,
    counters: Arc<Counters>,
    registry: Arc<Registry>,
    status: StatusLine,
}

impl Stages {
    async fn start(cfg: &PipelineConfig, gauges: Gauges) -> anyhow::Result<Self> {
        let counters = Arc::new(Counters::default());
        let registry = Arc::new(Registry {
            counters: Arc::clone(&counters),
            kernel: Default::default(),
            gauges,
        });
        if let Some(addr) = cfg.metrics_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            info!("metrics at http://{addr}/metrics");
            tokio::spawn(metrics::serve(listener, Arc::clone(&registry)));
        }
        let batch_size = cfg.batch_size as usize;
        let (tx, rx) = queue::bounded(cfg.queue_size as usize);
        let (stopping, stopping_rx) = watch::channel(false);
        let spool = match &cfg.output {
            SinkConfig::Greptime(g) => g.spool.as_ref().and_then(|s| {
                Spool::open(&s.dir, s.max_bytes, Arc::clone(&counters))
                    .inspect_err(|e| {
                        let e = anyhow::anyhow!(
                            "{e}: {}",
                            std::error::Error::source(e).map_or(String::new(), ToString::to_string)
                        );
                        warn!("{e}; running without a spool: rows GreptimeDB cannot take are lost");
                    })
                    .ok()
                    .map(|spool| (Arc::new(spool), g.table.clone()))
            }),
            _ => None,
        };
        let sink = tokio::spawn(sink::run(
            cfg.output.clone(),
            rx,
            Arc::clone(&counters),
            stopping_rx,
            spool.as_ref().map(|(s, _)| Arc::clone(s)),
        ));
        let sample_rate = gauges.sample_rate;
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
            overflow: spool,
            warned: false,
        };
        Ok(Self {
            batcher,
            sink,
            stopping,
            counters,
            registry,
            status: StatusLine::new(cfg.stats_interval),
        })
    }

    /// Takes a fresh look at the kernel counters and the queue; logs the status line
    /// when it is due.
    fn tick(&mut self, kernel: Option<KernelStats>) {
        if let Some(k) = kernel {
            self.registry.set_kernel(k);
        }
        self.counters.queue_depth.store(
            self.batcher.tx.depth() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.status.maybe_log(&self.registry);
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
            registry,
            status: _,
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
        registry.set_kernel(kernel);
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
    let gauges = Gauges {
        sample_rate: capture_cfg.sample_rate,
        snaplen: capture_cfg.snaplen,
    };
    let mut stages = Stages::start(&cfg, gauges).await?;

    tokio::pin!(shutdown);
    let mut error = None;
    let mut sink_done = None;
    let mut tick = tokio::time::interval(TICK);
    // The program wakes us only every few samples per CPU: drain on a timer too.
    let mut drain = tokio::time::interval(Duration::from_millis(DRAIN_INTERVAL_MS));
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => stages.tick(capture.stats().ok()),
            _ = drain.tick() => stages.batcher.drain(&mut ring),
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
    let gauges = Gauges {
        sample_rate: 1,
        snaplen: 0,
    };
    let mut stages = Stages::start(&cfg, gauges).await?;
    tokio::pin!(shutdown);
    let mut buf = Vec::new();
    let mut error = None;
    loop {
        if frames.frames() % REPLAY_CHECK_EVERY == 0 {
            let read = frames.frames();
            stages.tick(Some(KernelStats {
                seen: read,
                sampled: read,
                ring_drops: 0,
            }));
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
    /// Where batches go when the queue is full (the spool, and the table to encode for).
    overflow: Option<(Arc<Spool>, String)>,
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
        // No combinators here: each one would move the ~200-byte row once more.
        let (frame, wire_len) = match offset.apply(frame, wire_len) {
            Ok(f) => f,
            Err(e) => return self.not_decoded(e.into()),
        };
        let meta = FrameMeta {
            ts,
            wire_len,
            sample_rate: self.sample_rate,
        };
        match decode::decode(frame, meta) {
            Ok(row) => {
                Counters::add(&self.counters.decoded, 1);
                self.batch.push(row);
            }
            Err(e) => self.not_decoded(e.into()),
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
            Err(Rejected::Full(batch)) => match &self.overflow {
                Some((spool, table)) => {
                    spool.append(&greptime::encode(table, &batch), batch.len() as u64);
                }
                None => Counters::add(&self.counters.queue_drops, batch.len() as u64),
            },
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
