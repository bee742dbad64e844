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
use tracing::{info, warn};

use crate::{
    flows::{self, FlowSettings},
    metrics::{self, Counters, FlowCounters, Gauges, KernelStats, Registry, Summary},
    ring::RecordError,
    rows::{DecodeSettings, Decoder},
    sink::{self, SinkError, SinkSettings},
    source::{Pulled, Sample, Source, SourceInfo, SourceSettings},
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
    /// Write packet rows (`--mode packets|both`).
    pub packets: bool,
    /// Write flow rows (`--mode flows|both`).
    pub flows: Option<FlowSettings>,
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
    FlowTick,
    Collected(Box<flows::CollectResult>),
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
    let flow_counters = settings
        .flows
        .as_ref()
        .map(|_| Arc::new(FlowCounters::default()));
    let registry = Arc::new(Registry {
        counters: Arc::clone(&counters),
        kernel: Default::default(),
        interfaces: Default::default(),
        gauges: Gauges {
            sample_rate: info.sample_rate,
            snaplen: info.snaplen,
        },
        flows: flow_counters.clone(),
    });
    if let Some(addr) = settings.metrics.addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        info!("metrics at http://{addr}/metrics");
        tokio::spawn(metrics::serve(listener, Arc::clone(&registry)));
    }
    let (stopping, stopping_rx) = watch::channel(false);
    let flow_output = settings
        .flows
        .as_ref()
        .zip(flow_counters.as_ref())
        .map(|(f, c)| sink::FlowOutput {
            table: f.table.clone(),
            counters: Arc::clone(&c.sink),
        });
    let mut sink = sink::start(
        settings.sink,
        Arc::clone(&counters),
        flow_output,
        stopping_rx,
    )?;
    let packets = settings.packets;
    let live = source.is_live();
    // A replay without packet rows samples nothing (the loss equation of packet rows).
    let counted = |k: KernelStats| {
        if packets || live {
            k
        } else {
            without_samples(k)
        }
    };
    let mut stage = settings
        .flows
        .clone()
        .zip(flow_counters.clone())
        .map(|(f, c)| {
            let maps = source.take_flow_maps();
            if live && maps.is_none() {
                warn!("the flow maps are not available: no flow rows will be written");
            }
            flows::Stage::new(
                f,
                Arc::clone(&settings.decode.applications),
                Arc::clone(&settings.decode.host),
                c,
                maps,
            )
        });
    let mut flow_tick = tokio::time::interval(
        stage
            .as_ref()
            .map_or(Duration::from_secs(3600), flows::Stage::interval),
    );
    flow_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    flow_tick.tick().await; // the first tick is at once
    let flows_live = stage.as_ref().is_some_and(flows::Stage::is_live);
    let mut flow_rows = Vec::new();
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
            _ = flow_tick.tick(), if flows_live => Event::FlowTick,
            res = async { match stage.as_mut() {
                Some(s) => s.collecting().await,
                None => std::future::pending().await,
            } }, if flows_live => Event::Collected(Box::new(res)),
        };
        match event {
            Event::Stop => break,
            Event::SinkDone(res) => {
                sink_done = Some(res);
                break;
            }
            Event::FlowTick => {
                if let Some(s) = stage.as_mut() {
                    s.start_collect();
                }
            }
            Event::Collected(res) => {
                if let Some(s) = stage.as_mut() {
                    let rows = s.collected(*res, |i| interface_of(&source, &info, i));
                    if let Some(input) = &sink.flows {
                        input.offer(rows);
                    }
                }
            }
            Event::Tick => {
                if let Ok((k, interfaces)) = source.counters() {
                    registry.set_counters(counted(k), interfaces);
                }
                Counters::set(&counters.queue_depth, sink.packets.depth() as u64);
                if let (Some(input), Some(fc)) = (&sink.flows, &flow_counters) {
                    Counters::set(&fc.sink.queue_depth, input.depth() as u64);
                }
                // The kernel was loaded with a fixed prefix; a learned one it is told.
                if let Some(s) = stage.as_mut()
                    && decoder.learns_prefix()
                {
                    s.push_prefix(decoder.prefix());
                }
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
                let pulled = source.pull(|s| {
                    pull_one(
                        s,
                        packets,
                        &mut decoder,
                        &mut rows,
                        &mut stage,
                        &info,
                        &mut flow_rows,
                    )
                });
                sink.packets
                    .hand_over(std::mem::take(&mut rows), info.waits)
                    .await;
                if let Some(input) = &sink.flows {
                    input.send(std::mem::take(&mut flow_rows)).await;
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
        let _ = source.pull(|s| {
            pull_one(
                s,
                packets,
                &mut decoder,
                &mut rows,
                &mut stage,
                &info,
                &mut flow_rows,
            )
        });
    }
    // Frames still held by -auto-detect are decided and written too.
    decoder.finish(&mut rows);
    sink.packets
        .hand_over(std::mem::take(&mut rows), info.waits)
        .await;
    // Flows: the partial interval (live: one last collection, the programs detached).
    if let Some(s) = stage.as_mut() {
        if s.is_live() {
            flow_rows.extend(s.last_collect(|i| interface_of(&source, &info, i)).await);
        } else {
            s.finish(&mut flow_rows);
        }
    }
    if let Some(input) = &sink.flows {
        input
            .hand_over(std::mem::take(&mut flow_rows), info.waits)
            .await;
    }
    let sink::Sink {
        packets: input,
        flows: flow_input,
        task,
    } = sink;
    drop(input); // closes the queues: the sink writes what it holds and returns
    drop(flow_input);
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
    let kernel = counted(kernel);
    registry.set_counters(kernel, interfaces);
    let mut summary = Summary::new(kernel, &counters);
    if let Some(fc) = &flow_counters {
        summary = summary.with_flows(fc);
    }
    Ok(Outcome { summary, error })
}

/// One sample: to the decode stage (packet rows), and to the flows stage in a replay
/// (live, the kernel counts flows).
#[allow(clippy::too_many_arguments)]
fn pull_one(
    s: Result<Sample<'_>, RecordError>,
    packets: bool,
    decoder: &mut Decoder,
    rows: &mut Vec<crate::record::PacketRecord>,
    stage: &mut Option<flows::Stage>,
    info: &SourceInfo,
    flow_rows: &mut Vec<crate::record::FlowRecord>,
) {
    let sample = s.as_ref().ok().copied();
    if packets {
        decoder.push(s, rows);
    }
    if info.waits
        && let (Some(stage), Some(sample)) = (stage.as_mut(), sample)
    {
        let name = sample.interface.unwrap_or(&info.interface);
        stage.frame(&sample, decoder.prefix(), name, flow_rows);
    }
}

/// The name of interface `ifindex` for flow rows, as the decode stage names samples.
fn interface_of(source: &Source, info: &SourceInfo, ifindex: u32) -> Arc<str> {
    source
        .interface_name(ifindex)
        .unwrap_or_else(|| Arc::clone(&info.interface))
}

/// `k` with nothing sampled: a replay in `--mode flows` makes no packet rows.
fn without_samples(mut k: KernelStats) -> KernelStats {
    k.sampled = 0;
    for d in &mut k.directions {
        d.sampled = 0;
    }
    k
}
