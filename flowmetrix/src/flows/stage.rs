//! The flows stage as it runs: live ([`Live`]), a task of its own that collects the kernel's
//! maps every interval on its own timer; in a replay ([`Replay`]), frames counted as the
//! pipeline hands them over, intervals by packet time.

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, info, warn};

use super::{
    aggregate::{Aggregator, Interfaces, PacketClock},
    drops::DropMaps,
    kernel::{Collected, FlowMapError, FlowMaps},
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
}

/// Live: the kernel's maps, collected every interval on a blocking thread, their flows named
/// from the shared interface names. Rows go to the `deliver` it is started with.
pub struct Live {
    settings: FlowSettings,
    agg: Aggregator,
    counters: Arc<FlowCounters>,
    /// The maps, while no collection holds them.
    maps: Option<FlowMaps>,
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
        Self {
            settings,
            agg: Aggregator::new(applications, host, Arc::clone(&counters)),
            counters,
            maps: Some(maps),
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
            let res = tokio::task::spawn_blocking(move || {
                let res = maps.collect();
                (maps, res)
            })
            .await;
            self.collected(res);
        }
        // After the flow maps: a drop is keyed to the flow its packet was counted in before.
        if let Some(mut drops) = self.drops.take() {
            let res = tokio::task::spawn_blocking(move || {
                let res = drops.collect();
                (drops, res)
            })
            .await;
            match res {
                Ok((mut drops, res)) => {
                    match res {
                        Ok(c) => drops.deliver(&c, &mut self.agg.health, &self.counters.drops),
                        Err(e) => self.failed(&e),
                    }
                    self.drops = Some(drops);
                }
                Err(e) => self.failed(&e),
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
}

impl Replay {
    pub fn new(
        settings: FlowSettings,
        applications: Arc<Applications>,
        host: Arc<str>,
        counters: Arc<FlowCounters>,
    ) -> Self {
        Self {
            clock: PacketClock::new(settings.interval),
            settings,
            agg: Aggregator::new(applications, host, counters),
            interfaces: Interfaces::default(),
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
        self.agg.add_frame(
            s.link,
            s.frame,
            s.wire_len,
            prefix,
            s.ts,
            ifindex,
            s.direction,
        );
    }

    /// At the end of the file: the last interval's rows.
    pub fn finish(&mut self, out: &mut Vec<FlowRecord>) {
        if let Some(end) = self.clock.finish() {
            self.close(end, out);
        }
    }

    fn close(&mut self, end: UnixNanos, out: &mut Vec<FlowRecord>) {
        let interfaces = &self.interfaces;
        out.extend(self.agg.rows(
            end,
            self.settings.interval,
            |ns| UnixNanos(i64::try_from(ns).unwrap_or(i64::MAX)),
            |i| interfaces.name(i).unwrap_or_else(crate::record::unnamed),
        ));
    }
}
