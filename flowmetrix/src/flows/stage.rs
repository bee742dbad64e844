//! The flows stage as it runs: live ([`Live`]), a task of its own that collects the kernel's
//! maps every interval on its own timer; in a replay ([`Replay`]), frames counted as the
//! pipeline hands them over, intervals by packet time.

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, info, warn};

use super::{
    aggregate::{Aggregator, Interfaces, PacketClock},
    drops::DropMaps,
    handshakes::{self, Tracker},
    kernel::{Collected, FlowMapError, FlowMaps},
    tcp::{SocketsCollected, TcpSocketError, TcpSockets},
};
use crate::{
    applications::Applications,
    attribution::Resolver,
    clock::{self, Clock},
    metrics::{Counters, FlowCounters},
    record::{FlowRecord, UnixNanos},
    sample::{InterfaceNames, Sample},
};

/// What the flows stage is told.
#[derive(Debug, Clone)]
pub struct FlowSettings {
    /// `--flow-interval`.
    pub interval: Duration,
    /// `--flow-table`.
    pub table: String,
    /// TCP handshake latency and SYN retransmits (off with `--tcp-health off`; the kernel
    /// is told at load, [`crate::capture::FlowsConfig::handshakes`]).
    pub handshakes: bool,
    /// Whether egress is watched (`--direction egress|both`): a local socket's figures go on
    /// its egress rows, else on the reverse direction's ingress rows.
    pub egress_watched: bool,
}

/// Live: the kernel's maps, collected every interval on a blocking thread, their flows named
/// from the shared interface names. Rows go to the `deliver` it is started with.
pub struct Live {
    settings: FlowSettings,
    agg: Aggregator,
    counters: Arc<FlowCounters>,
    /// The maps, while no collection holds them.
    maps: Option<FlowMaps>,
    /// `--tcp-health`: the socket maps, collected with the flow maps' generation.
    tcp: Option<TcpSockets>,
    /// When the interval being counted began.
    since: std::time::Instant,
    /// `-auto-detect`: the prefix the programs were told.
    prefix_pushed: Option<u32>,
    names: InterfaceNames,
    /// The name of flows whose interface is not in `names`.
    fallback: Arc<str>,
    warned: bool,
    /// Which workload each row belongs to.
    attribution: Option<Resolver>,
    /// `--drops on`: the drop program's maps, while no collection holds them.
    drops: Option<DropMaps>,
}

/// What the live stage listens to while it runs.
pub struct Signals {
    /// `-auto-detect`: the prefix the decode stage learned (`None` while it learns).
    pub prefix: Option<watch::Receiver<Option<usize>>>,
    /// Turns true once the programs are detached: one last collection (the partial
    /// interval), then the task ends.
    pub stop: watch::Receiver<bool>,
}

impl Live {
    pub fn new(
        settings: FlowSettings,
        applications: Arc<Applications>,
        host: Arc<str>,
        counters: Arc<FlowCounters>,
        maps: FlowMaps,
        names: InterfaceNames,
        fallback: Arc<str>,
    ) -> Self {
        let mut agg = Aggregator::new(applications, host, Arc::clone(&counters));
        agg.health.parts.handshakes = settings.handshakes && maps.handshakes.is_some();
        agg.health.parts.egress_watched = settings.egress_watched;
        Self {
            settings,
            agg,
            counters,
            maps: Some(maps),
            tcp: None,
            since: std::time::Instant::now(),
            prefix_pushed: None,
            names,
            fallback,
            warned: false,
            attribution: None,
            drops: None,
        }
    }

    /// Rows get their [`crate::record::Workload`] from `resolver`.
    pub fn attribute_with(mut self, resolver: Resolver) -> Self {
        self.attribution = Some(resolver);
        self
    }

    /// Local sockets' retransmits and RTT go on the rows, from `sockets` (`--tcp-health`,
    /// when the kernel lets it run; else those columns stay null).
    pub fn tcp_sockets(mut self, sockets: TcpSockets) -> Self {
        self.tcp = Some(sockets);
        self.agg.health.parts.tcp_sockets = true;
        self
    }

    /// Drops by reason go on the rows, from `drops` (the drop program runs).
    pub fn with_drops(mut self, drops: DropMaps) -> Self {
        self.agg.health.parts.drops = true;
        self.counters
            .drops
            .on
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.drops = Some(drops);
        self
    }

    /// Runs the stage on a task of its own: a collection every interval (the first one an
    /// interval from now), the prefix told to the programs as soon as it is learned, and at
    /// `stop` a last collection. Each collection's rows go to `deliver`.
    pub fn spawn(
        self,
        signals: Signals,
        deliver: impl FnMut(Vec<FlowRecord>) + Send + 'static,
    ) -> JoinHandle<()> {
        tokio::spawn(self.run(signals, deliver))
    }

    async fn run(
        mut self,
        Signals {
            mut prefix,
            mut stop,
        }: Signals,
        mut deliver: impl FnMut(Vec<FlowRecord>) + Send,
    ) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is at once
        loop {
            tokio::select! {
                _ = tick.tick() => deliver(self.collect().await),
                res = async {
                    match prefix.as_mut() {
                        Some(rx) => rx.changed().await,
                        None => std::future::pending().await,
                    }
                } => match res {
                    Ok(()) => {
                        let learned = prefix.as_mut().and_then(|rx| *rx.borrow_and_update());
                        self.push_prefix(learned);
                    }
                    // The decode stage is gone: nothing more to learn.
                    Err(_) => prefix = None,
                },
                res = async { stop.wait_for(|stop| *stop).await.map(|_| ()) } => {
                    if res.is_err() {
                        debug!("flows: the pipeline went away without stopping the stage");
                    }
                    break;
                }
            }
        }
        // The programs are detached: the partial interval.
        deliver(self.collect().await);
    }

    /// Collects the maps once: the interval's rows.
    async fn collect(&mut self) -> Vec<FlowRecord> {
        if let Some(mut maps) = self.maps.take() {
            let on = self.agg.health.parts.handshakes;
            let mut tcp = self.tcp.take();
            let mut drops = self.drops.take();
            let res = tokio::task::spawn_blocking(move || {
                let res = maps.collect();
                // The flip and grace period just made that generation's socket and drop maps
                // idle too.
                let sockets = match (&res, tcp.as_mut()) {
                    (Ok(c), Some(t)) => Some(t.collect(c.generation)),
                    _ => None,
                };
                let dropped = match (&res, drops.as_mut()) {
                    (Ok(c), Some(d)) => Some(d.collect(c.generation)),
                    _ => None,
                };
                let shakes = match maps.handshakes.as_mut().filter(|_| on) {
                    Some(h) => h
                        .collect(handshakes::boot_now())
                        .and_then(|read| Ok((read, h.totals()?.full))),
                    None => Ok((Vec::new(), 0)),
                };
                (maps, res, tcp, sockets, shakes, drops, dropped)
            })
            .await;
            match res {
                Ok((maps, res, tcp, sockets, shakes, mut drops, dropped)) => {
                    self.tcp = tcp;
                    self.sockets(sockets);
                    if let Some(d) = drops.as_mut() {
                        match dropped {
                            Some(Ok(c)) => {
                                d.deliver(&c, &mut self.agg.health, &self.counters.drops)
                            }
                            Some(Err(e)) => self.failed(&e),
                            None => {}
                        }
                    }
                    self.drops = drops;
                    match shakes {
                        Ok((read, full)) => {
                            for (key, h) in read {
                                self.agg.health.handshake(key, h);
                            }
                            Counters::set(&self.counters.handshakes_full, full);
                        }
                        Err(e) => debug!("cannot read the handshake map: {e}"),
                    }
                    self.collected(Ok((maps, res)));
                }
                Err(e) => self.collected(Err(e)),
            }
        }
        let interval = self.since.elapsed();
        self.since = std::time::Instant::now();
        let clock = Clock::now();
        let (names, fallback) = (self.names.read(), &self.fallback);
        let mut rows = self.agg.rows(
            clock::wall_now(),
            interval,
            |ns| clock.wall(ns),
            |i| {
                names
                    .get(&i)
                    .cloned()
                    .unwrap_or_else(|| Arc::clone(fallback))
            },
        );
        if let Some(a) = &self.attribution {
            a.flows(&mut rows, std::time::Instant::now());
        }
        rows
    }

    fn collected(
        &mut self,
        res: Result<(FlowMaps, Result<Collected, FlowMapError>), tokio::task::JoinError>,
    ) {
        match res {
            Ok((maps, Ok(c))) => {
                self.maps = Some(maps);
                self.agg.add_collected(&c);
            }
            Ok((maps, Err(e))) => {
                self.maps = Some(maps);
                self.failed(&e);
            }
            Err(e) => self.failed(&e),
        }
    }

    fn sockets(&mut self, collected: Option<Result<SocketsCollected, TcpSocketError>>) {
        match collected {
            Some(Ok(c)) => {
                for f in c.sockets {
                    self.agg.health.tcp_socket(f.key, f.retransmits, f.rtt_us);
                }
                Counters::add(&self.counters.tcp_sockets_full, c.full);
            }
            Some(Err(e)) => self.failed(&e),
            None => {}
        }
    }

    fn failed(&mut self, e: &dyn std::fmt::Display) {
        Counters::add(&self.counters.collect_errors, 1);
        if self.warned {
            debug!("cannot collect the flow maps: {e}");
        } else {
            warn!(
                "cannot collect the flow maps: {e} (further failures are counted, logged at debug)"
            );
            self.warned = true;
        }
    }

    /// `-auto-detect`: tells the programs the prefix once it is learned (or when it
    /// changes).
    fn push_prefix(&mut self, prefix: Option<usize>) {
        let Some(p) = prefix.and_then(|p| u32::try_from(p).ok()) else {
            return;
        };
        if self.prefix_pushed == Some(p) {
            return;
        }
        if let Some(maps) = self.maps.as_mut() {
            match maps.set_prefix(Some(p)) {
                Ok(()) => {
                    info!("flows: the kernel keys packets after the learned {p}-byte prefix");
                    self.prefix_pushed = Some(p);
                }
                Err(e) => self.failed(&e),
            }
        }
    }
}

/// Replay: frames counted here, intervals by packet time; the rows of an interval come back
/// as soon as a frame past it (or the end of the file) closes it.
pub struct Replay {
    settings: FlowSettings,
    agg: Aggregator,
    clock: PacketClock,
    interfaces: Interfaces,
    /// The handshakes' states (the kernel's state machine, run here).
    handshakes: Option<Tracker>,
    counters: Arc<FlowCounters>,
}

impl Replay {
    pub fn new(
        settings: FlowSettings,
        applications: Arc<Applications>,
        host: Arc<str>,
        counters: Arc<FlowCounters>,
    ) -> Self {
        let mut agg = Aggregator::new(applications, host, Arc::clone(&counters));
        agg.health.parts.handshakes = settings.handshakes;
        Self {
            clock: PacketClock::new(settings.interval),
            handshakes: settings.handshakes.then(Tracker::default),
            settings,
            agg,
            interfaces: Interfaces::default(),
            counters,
        }
    }

    /// One frame, seen on `name`, after `prefix` bytes (see [`Aggregator::add_frame`]).
    /// Rows of the interval it closes, if any, go to `out` first.
    pub fn frame(
        &mut self,
        s: &Sample<'_>,
        prefix: Option<usize>,
        name: &Arc<str>,
        out: &mut Vec<FlowRecord>,
    ) {
        if let Some(end) = self.clock.advance(s.ts) {
            self.close(end, out);
        }
        let ifindex = self.interfaces.index(name);
        let keyed = self.agg.add_frame(
            s.link,
            s.frame,
            s.wire_len,
            prefix,
            s.ts,
            ifindex,
            s.direction,
        );
        if let (Some(t), Some((key, flags))) = (self.handshakes.as_mut(), keyed) {
            t.segment(&key, flags, u64::try_from(s.ts.0).unwrap_or(0));
        }
    }

    /// At the end of the file: the last interval's rows.
    pub fn finish(&mut self, out: &mut Vec<FlowRecord>) {
        if let Some(end) = self.clock.finish() {
            self.close(end, out);
        }
    }

    fn close(&mut self, end: UnixNanos, out: &mut Vec<FlowRecord>) {
        if let Some(t) = self.handshakes.as_mut() {
            t.report(u64::try_from(end.0).unwrap_or(0), &mut self.agg.health);
            Counters::set(&self.counters.handshakes_full, t.full);
        }
        let interfaces = &self.interfaces;
        out.extend(self.agg.rows(
            end,
            self.settings.interval,
            |ns| UnixNanos(i64::try_from(ns).unwrap_or(i64::MAX)),
            |i| interfaces.name(i).unwrap_or_else(crate::record::unnamed),
        ));
    }
}
