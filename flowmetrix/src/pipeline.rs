//! Lifecycle: source → decode stage → sink, the flows stage beside them, and shutdown.
//!
//! The source is drained as soon as it has samples; rows go to the sink's input, which never
//! makes the kernel side wait (a full queue is the sink's overflow policy: the spool, or
//! counted drops). A file source waits for the sink instead, since nothing is lost by going
//! slower. Shutdown stops the source first, so nothing new arrives, then takes what it still
//! holds, then has the flows stage collect the partial interval, then lets the sink finish
//! within its deadline.
//!
//! Live, the flows stage runs on a task of its own ([`flows::Live`]): its own timer, the
//! kernel's flow maps (taken from the source at start), the interface names the source
//! keeps, and the prefix the decode stage learns, on a watch channel. In a replay the
//! pipeline hands it the frames ([`flows::Replay`]), after the decode stage.
//!
//! A run stops at the shutdown signal (Ctrl+C), at the end of a file, on an error, or when
//! the output's reader leaves (stdout closed under `--output jsonl`): that last one ends
//! it as Ctrl+C does, without an error, the rows not printed counted as unread.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    attribution::{
        self,
        kube::{self, KubeSettings, PodIndex},
    },
    clock,
    decoder::{DecodeSettings, Decoder},
    dns::{self, DnsSettings},
    flows::{self, FlowSettings},
    metrics::{
        self, Counters, DnsCounters, FlowCounters, Gauges, KernelStats, Registry, Shape, Summary,
    },
    record::PacketRecord,
    sample::{RecordError, Sample, SourceInfo},
    sink::{self, SinkConfig, SinkError, SinkSettings},
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
    /// Write packet rows (`--mode packets|both`).
    pub packets: bool,
    /// Write flow rows (`--mode flows|both`).
    pub flows: Option<FlowSettings>,
    /// `--mode flows|both`: DNS transactions.
    pub dns: Option<DnsSettings>,
    pub metrics: MetricsSettings,
    /// `--kube-metadata`: where the pod names come from.
    pub kube: Option<KubeSettings>,
    /// `--cgroup-root`: the host's cgroup2 tree (None: this process's cgroup2 mount).
    pub cgroup_root: Option<std::path::PathBuf>,
}

/// How a run ended: its numbers, and the error that ended it early, if any.
pub struct Outcome {
    pub summary: Summary,
    /// Which parts of the summary apply to this run.
    pub shape: Shape,
    pub error: Option<anyhow::Error>,
    /// The end was cut short (the second Ctrl+C): rows not yet written were given up.
    pub gave_up: bool,
}

/// How long the end of a run may wait on the output before the collector says what it is
/// waiting for.
const WAIT_NOTICE: Duration = Duration::from_millis(300);

/// How often the source's counters are read for metrics, the status line and the checks.
const TICK: Duration = Duration::from_secs(1);

/// How long to wait after detaching for program runs already under way on other CPUs.
const DETACH_SETTLE: Duration = Duration::from_millis(20);

enum Event {
    Stop,
    /// The reader of stdout has left.
    ReaderGone,
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
    run_until(settings, shutdown, std::future::pending()).await
}

/// [`run`]; once `shutdown` has stopped it, `give_up` (the second Ctrl+C) ends the wait for
/// the output at once: the rows not yet written are counted as write errors.
pub async fn run_until(
    settings: PipelineSettings,
    shutdown: impl Future<Output = ()>,
    give_up: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Outcome> {
    tokio::pin!(shutdown);
    let shape = shape(&settings);
    let mut source = tokio::select! {
        s = Source::open(&settings.source) => s?,
        () = &mut shutdown => return Ok(Outcome {
            summary: Summary::default(),
            shape,
            error: None,
            gave_up: false,
        }),
    };
    let info = source.info();
    let counters = Arc::new(Counters::default());
    let flow_counters = settings
        .flows
        .as_ref()
        .map(|_| Arc::new(FlowCounters::default()));
    let dns_counters = settings
        .dns
        .as_ref()
        .map(|_| Arc::new(DnsCounters::default()));
    let registry = Arc::new(Registry {
        counters: Arc::clone(&counters),
        kernel: Default::default(),
        interfaces: Default::default(),
        gauges: Gauges {
            sample_rate: info.sample_rate,
            snaplen: info.snaplen,
        },
        flows: flow_counters.clone(),
        dns: dns_counters.clone(),
    });
    registry.read_kernel_with(source.kernel_reader());
    if let Some(addr) = settings.metrics.addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        info!("metrics at http://{addr}/metrics");
        tokio::spawn(metrics::serve(listener, Arc::clone(&registry)));
    }
    let (stopping, stopping_rx) = watch::channel(false);
    // Pod names by UID, kept current by their own task; the stages look them up without
    // waiting (a pod not yet listed is a miss).
    let pods = PodIndex::default();
    if let Some(k) = settings.kube.clone() {
        kube::start(k, pods.clone(), Arc::clone(&counters), stopping.subscribe());
    }
    let outputs = sink::Outputs {
        flows: settings
            .flows
            .as_ref()
            .zip(flow_counters.as_ref())
            .map(|(f, c)| sink::TableOutput {
                table: f.table.clone(),
                counters: Arc::clone(&c.sink),
            }),
        dns: settings
            .dns
            .as_ref()
            .zip(dns_counters.as_ref())
            .map(|(d, c)| sink::TableOutput {
                table: d.table.clone(),
                counters: Arc::clone(&c.sink),
            }),
    };
    let mut sink = sink::start(settings.sink, Arc::clone(&counters), outputs, stopping_rx)?;
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
    let mut decoder = Decoder::new(settings.decode.clone(), &info, Arc::clone(&counters));
    // Live: which workload each row belongs to; pod and namespace from the pod index
    // (`--kube-metadata`; empty without it: they stay null).
    let resolver = live
        .then(|| attribution::Resolver::start(pods.clone(), settings.cgroup_root.clone()))
        .flatten();
    if let Some(r) = &resolver {
        decoder.attribute_with(r.clone());
    }
    let flow_input = sink.flows.take().map(Arc::new);
    let dns_input = sink.dns.take();
    let mut dns = settings
        .dns
        .as_ref()
        .zip(dns_counters.clone())
        .map(|(d, c)| dns::Stage::new(d, Arc::clone(&settings.decode.host), c));
    if let (Some(d), Some(r)) = (dns.as_mut(), &resolver) {
        d.attribute_with(r.clone());
    }
    let mut dns_rows = Vec::new();
    // Live: the flows stage on its own task; in a replay, counted here from the frames.
    let (stop_flows, flows_stopped) = watch::channel(false);
    let mut flows_task = None;
    let mut replay = None;
    if let (Some(f), Some(c)) = (settings.flows.clone(), flow_counters.clone()) {
        if live {
            match (source.take_flow_maps(), &flow_input) {
                (Some(maps), Some(input)) => {
                    let mut stage = flows::Live::new(
                        f,
                        Arc::clone(&settings.decode.applications),
                        Arc::clone(&settings.decode.host),
                        c,
                        maps,
                        source.names(),
                        Arc::clone(&info.interface),
                    );
                    if let Some(r) = &resolver {
                        stage = stage.attribute_with(r.clone());
                    }
                    if let Some(t) = source.take_tcp_sockets() {
                        stage = stage.tcp_sockets(t);
                    }
                    if let Some(d) = source.take_drop_maps() {
                        stage = stage.with_drops(d);
                    }
                    let signals = flows::Signals {
                        prefix: decoder.learned_prefix(),
                        stop: flows_stopped,
                    };
                    let input = Arc::clone(input);
                    flows_task = Some(stage.spawn(signals, move |rows| input.offer(rows)));
                }
                _ => warn!("the flow maps are not available: no flow rows will be written"),
            }
        } else {
            replay = Some(flows::Replay::new(
                f,
                Arc::clone(&settings.decode.applications),
                Arc::clone(&settings.decode.host),
                c,
            ));
        }
    }
    let mut flow_rows = Vec::new();
    let mut status = Status::new(settings.metrics.stats_interval).with_packets(packets);
    let mut tick = tokio::time::interval(TICK);
    let mut rows = Vec::new();
    let mut error = None;
    let mut sink_done = None;
    let shape = Shape {
        spool: sink.spool,
        ..shape
    };
    let mut interrupted = false;
    let mut reader_gone = sink.reader_gone.clone();

    loop {
        let event = tokio::select! {
            () = &mut shutdown => Event::Stop,
            () = left(&mut reader_gone) => Event::ReaderGone,
            _ = tick.tick() => Event::Tick,
            res = &mut sink.task => Event::SinkDone(res),
            res = source.ready() => Event::Ready(res),
        };
        match event {
            Event::Stop => {
                interrupted = true;
                break;
            }
            // As at Ctrl+C, but nothing is left to wait for: the sink counts the rest as
            // unread.
            Event::ReaderGone => break,
            Event::SinkDone(res) => {
                sink_done = Some(res);
                break;
            }
            Event::Tick => {
                if let Ok((k, interfaces)) = source.counters() {
                    registry.set_counters(counted(k), interfaces);
                }
                Counters::set(&counters.queue_depth, sink.packets.depth() as u64);
                if let (Some(input), Some(fc)) = (&flow_input, &flow_counters) {
                    Counters::set(&fc.sink.queue_depth, input.depth() as u64);
                }
                if let (Some(d), Some(input)) = (dns.as_mut(), &dns_input) {
                    d.tick(live.then(clock::wall_now), &mut dns_rows);
                    input
                        .hand_over(std::mem::take(&mut dns_rows), info.waits)
                        .await;
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
                        &mut replay,
                        &info,
                        &mut flow_rows,
                        dns.as_mut().map(|d| (d, &mut dns_rows)),
                    )
                });
                sink.packets.drain(&mut rows, info.waits).await;
                if let Some(input) = &flow_input {
                    input.send(std::mem::take(&mut flow_rows)).await;
                }
                if let Some(input) = &dns_input {
                    input
                        .hand_over(std::mem::take(&mut dns_rows), info.waits)
                        .await;
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
    let ending = interrupted.then(|| Ending::start(&sink, give_up));
    if source.is_live() {
        tokio::time::sleep(DETACH_SETTLE).await;
    }
    let kernel = source.counters();
    // Everything the ring holds, a bounded drain at a time.
    let mut more = source.is_live();
    while more {
        let _ = source.pull(|s| {
            pull_one(
                s,
                packets,
                &mut decoder,
                &mut rows,
                &mut replay,
                &info,
                &mut flow_rows,
                dns.as_mut().map(|d| (d, &mut dns_rows)),
            )
        });
        more = source.has_more();
        if more {
            sink.packets.drain(&mut rows, info.waits).await;
        }
    }
    // Frames still held by -auto-detect are decided and written too.
    decoder.finish(&mut rows);
    sink.packets.drain(&mut rows, info.waits).await;
    // Flows: the partial interval (live: one last collection, the programs detached).
    stop_flows.send_replace(true);
    if let Some(task) = flows_task
        && let Err(e) = task.await
    {
        warn!("the flows stage failed: {e}");
    }
    if let Some(r) = replay.as_mut() {
        r.finish(&mut flow_rows);
    }
    if let Some(input) = &flow_input {
        input
            .hand_over(std::mem::take(&mut flow_rows), info.waits)
            .await;
    }
    if let (Some(d), Some(input)) = (dns.as_mut(), &dns_input) {
        d.finish(live.then(clock::wall_now), &mut dns_rows);
        input
            .hand_over(std::mem::take(&mut dns_rows), info.waits)
            .await;
    }
    drop(dns_input);
    let sink::Sink {
        packets: input,
        flows: _, // taken above, as flow_input
        dns: _,   // and dns_input
        task,
        ..
    } = sink;
    drop(input); // closes the queues: the sink writes what it holds and returns
    drop(flow_input); // the flows stage's copy went with its task
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
    if let Some(dc) = &dns_counters {
        summary = summary.with_dns(dc);
    }
    let gave_up = ending.is_some_and(Ending::finish);
    Ok(Outcome {
        summary,
        shape,
        error,
        gave_up,
    })
}

/// Completes when the output's reader has left; never for an output without one (its
/// sender is gone without turning true).
async fn left(reader_gone: &mut watch::Receiver<bool>) {
    if reader_gone.wait_for(|&gone| gone).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The parts of the summary that apply to a run of `settings` (whether a spool opened is
/// known once the sink has started).
fn shape(settings: &PipelineSettings) -> Shape {
    let directions = match &settings.source {
        SourceSettings::Live(c) => [c.directions.ingress(), c.directions.egress()],
        SourceSettings::Pcap(_) => [false; 2],
    };
    Shape {
        packets: settings.packets,
        directions,
        spool: matches!(&settings.sink.output, SinkConfig::Greptime(g) if g.spool.is_some()),
    }
}

/// The end of an interrupted run: after [`WAIT_NOTICE`], one line saying what it waits for
/// and for how long; on `give_up`, the sink stops waiting.
struct Ending {
    notice: tokio::task::JoinHandle<()>,
    give_up: tokio::task::JoinHandle<()>,
    gave_up: Arc<std::sync::atomic::AtomicBool>,
}

impl Ending {
    fn start(sink: &sink::Sink, give_up: impl Future<Output = ()> + Send + 'static) -> Self {
        let notice = match sink.waits_for.clone() {
            Some((output, timeout)) => tokio::spawn(async move {
                tokio::time::sleep(WAIT_NOTICE).await;
                warn!(
                    "stopping: waiting up to {timeout:?} for {output} to take the rows still queued (Ctrl+C again to give them up)"
                );
            }),
            None => tokio::spawn(async {}),
        };
        let gave_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tell = sink.give_up.clone();
        let flag = Arc::clone(&gave_up);
        let give_up = tokio::spawn(async move {
            give_up.await;
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
            tell.send_replace(true);
            warn!("stopping now: the rows not yet written are given up (counted in the summary)");
        });
        Self {
            notice,
            give_up,
            gave_up,
        }
    }

    /// The run has ended: no notice after it. Whether it gave up.
    fn finish(self) -> bool {
        self.notice.abort();
        self.give_up.abort();
        self.gave_up.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One sample: to the decode stage (packet rows), to the DNS transactions, and to the
/// flows stage in a replay (live, the kernel counts flows).
#[allow(clippy::too_many_arguments)]
fn pull_one(
    s: Result<Sample<'_>, RecordError>,
    packets: bool,
    decoder: &mut Decoder,
    rows: &mut Vec<PacketRecord>,
    replay: &mut Option<flows::Replay>,
    info: &SourceInfo,
    flow_rows: &mut Vec<crate::record::FlowRecord>,
    dns: Option<(&mut dns::Stage, &mut Vec<crate::record::DnsRecord>)>,
) {
    let sample = s.as_ref().ok().copied();
    // A DNS packet the kernel passed outside the sampling is no packet row.
    if packets && !sample.is_some_and(|s| s.dns_only) {
        decoder.push(s, rows);
    }
    if let (Some((dns, dns_rows)), Some(sample)) = (dns, sample) {
        let name = sample.interface.unwrap_or(&info.interface);
        dns.sample(&sample, decoder.prefix(), name, dns_rows);
    }
    if info.waits
        && let (Some(replay), Some(sample)) = (replay.as_mut(), sample)
    {
        let name = sample.interface.unwrap_or(&info.interface);
        replay.frame(&sample, decoder.prefix(), name, flow_rows);
    }
}

/// `k` with nothing sampled: a replay in `--mode flows` makes no packet rows.
fn without_samples(mut k: KernelStats) -> KernelStats {
    k.sampled = 0;
    for d in &mut k.directions {
        d.sampled = 0;
    }
    k
}
