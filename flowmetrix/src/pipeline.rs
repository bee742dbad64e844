//! Lifecycle: source → decode stage → sink, and shutdown.
//!
//! The source is drained as soon as it has samples; rows go to the sink's input, which never
//! makes the kernel side wait (a full queue is the sink's overflow policy: the spool, or
//! counted drops). A file source waits for the sink instead, since nothing is lost by going
//! slower. Shutdown stops the source first, so nothing new arrives, then takes what it still
//! holds, then lets the sink finish within its deadline.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::watch;
use tracing::info;

use crate::{
    metrics::{self, Counters, Gauges, KernelStats, Registry, Summary},
    rows::{DecodeSettings, Decoder},
    sink::{self, SinkError, SinkSettings},
    source::{Pulled, Source, SourceSettings},
    status::Status,
};

/// Prometheus and the status line.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// Serve Prometheus metrics here.
    pub addr: Option<std::net::SocketAddr>,
    /// How often to log a status line.
    pub stats_interval: Duration,
}

/// Every stage's settings.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub source: SourceSettings,
    pub decode: DecodeSettings,
    pub sink: SinkSettings,
    pub metrics: MetricsSettings,
}

/// How a run ended: its numbers, and the error that ended it early, if any.
pub struct Outcome {
    pub summary: Summary,
    pub error: Option<anyhow::Error>,
}

/// How often the source's counters are read for metrics, the status line and the checks.
const TICK: Duration = Duration::from_secs(1);

/// How long to wait after detaching for program runs already under way on other CPUs.
const DETACH_SETTLE: Duration = Duration::from_millis(20);

enum Event {
    Stop,
    Tick,
    Ready(Result<(), crate::source::SourceError>),
    SinkDone(Result<Result<(), SinkError>, tokio::task::JoinError>),
}

/// Runs until `shutdown` completes, the source ends or fails, or the sink fails. Errors
/// before anything starts are returned; errors after it are in the [`Outcome`] with the
/// numbers.
pub async fn run(
    settings: PipelineSettings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    tokio::pin!(shutdown);
    let mut source = tokio::select! {
        s = Source::open(&settings.source) => s?,
        () = &mut shutdown => return Ok(Outcome {
            summary: Summary::default(),
            error: None,
        }),
    };
    let info = source.info();
    let counters = Arc::new(Counters::default());
    let registry = Arc::new(Registry {
        counters: Arc::clone(&counters),
        kernel: Default::default(),
        interfaces: Default::default(),
        gauges: Gauges {
            sample_rate: info.sample_rate,
            snaplen: info.snaplen,
        },
    });
    if let Some(addr) = settings.metrics.addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        info!("metrics at http://{addr}/metrics");
        tokio::spawn(metrics::serve(listener, Arc::clone(&registry)));
    }
    let (stopping, stopping_rx) = watch::channel(false);
    let mut sink = sink::start(settings.sink, Arc::clone(&counters), stopping_rx)?;
    let mut decoder = Decoder::new(settings.decode, &info, Arc::clone(&counters));
    let mut status = Status::new(settings.metrics.stats_interval);
    let mut tick = tokio::time::interval(TICK);
    let mut rows = Vec::new();
    let mut error = None;
    let mut sink_done = None;

    loop {
        let event = tokio::select! {
            () = &mut shutdown => Event::Stop,
            _ = tick.tick() => Event::Tick,
            res = &mut sink.task => Event::SinkDone(res),
            res = source.ready() => Event::Ready(res),
        };
        match event {
            Event::Stop => break,
            Event::SinkDone(res) => {
                sink_done = Some(res);
                break;
            }
            Event::Tick => {
                if let Ok((k, interfaces)) = source.counters() {
                    registry.set_counters(k, interfaces);
                }
                Counters::set(&counters.queue_depth, sink.input.depth() as u64);
                status.tick(&registry);
                if let Err(e) = source.check() {
                    error = Some(e.into());
                    break;
                }
            }
            Event::Ready(Err(e)) => {
                error = Some(e.into());
                break;
            }
            Event::Ready(Ok(())) => {
                let pulled = source.pull(|s| decoder.push(s, &mut rows));
                let chunk = std::mem::take(&mut rows);
                if info.waits {
                    sink.input.send(chunk).await;
                } else {
                    sink.input.offer(chunk);
                }
                match pulled {
                    Ok(Pulled::More) => {}
                    Ok(Pulled::End) => break,
                    Err(e) => {
                        error = Some(e.into());
                        break;
                    }
                }
            }
        }
    }

    // Stop new samples, then take what the source still holds.
    source.stop();
    stopping.send_replace(true);
    if source.is_live() {
        tokio::time::sleep(DETACH_SETTLE).await;
    }
    let kernel = source.counters();
    if source.is_live() {
        let _ = source.pull(|s| decoder.push(s, &mut rows));
    }
    // Frames still held by -auto-detect are decided and written too.
    decoder.finish(&mut rows);
    let chunk = std::mem::take(&mut rows);
    if info.waits {
        sink.input.send(chunk).await;
    } else {
        sink.input.offer(chunk);
    }
    let sink::Sink { input, task } = sink;
    drop(input); // closes the queue: the sink writes what it holds and returns
    let sink_result = match sink_done {
        Some(res) => res,
        None => task.await,
    };
    match sink_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error = error.or(Some(e.into())),
        Err(join) => error = error.or(Some(anyhow::anyhow!("output task failed: {join}"))),
    }
    let (kernel, interfaces) = kernel.unwrap_or_else(|e| {
        error.get_or_insert(e.into());
        (KernelStats::default(), Vec::new())
    });
    registry.set_counters(kernel, interfaces);
    Ok(Outcome {
        summary: Summary::new(kernel, &counters),
        error,
    })
}
