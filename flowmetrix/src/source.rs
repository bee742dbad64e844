//! Where samples come from: the kernel ring buffer (live capture) or a pcap file (replay).
//! Both yield the same [`Sample`] and count what they read in the same [`KernelStats`]; the
//! rest of the pipeline does not know which it has.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use flowmetrix_common::DRAIN_INTERVAL_MS;
use tracing::{info, warn};

use crate::{
    capture::{self, Capture, CaptureConfig, CaptureError},
    clock::Clock,
    decode::Link,
    metrics::{DirectionStats, InterfaceStats, KernelReader, KernelStats},
    pcap::{self, FrameInfo, PcapFileError, PcapFrames},
    record::Direction,
    ring::{self, Ring},
    sample::{InterfaceNames, RecordError, Sample, SourceInfo},
    watch::{self, LinkEvent, Selection, Watcher},
};

/// Where to read from.
#[derive(Debug, Clone)]
pub enum SourceSettings {
    Live(CaptureConfig),
    Pcap(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("cannot poll the ring buffer")]
    Poll(#[source] std::io::Error),
    #[error(transparent)]
    Pcap(#[from] PcapFileError),
    #[error("interface {0} went away; capture stopped")]
    InterfaceGone(String),
    #[error("cannot watch link changes (rtnetlink)")]
    Watch(#[source] std::io::Error),
    #[error("the thread reading the capture file stopped")]
    ReaderGone,
}

/// Whether a source has more to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pulled {
    More,
    End,
}

pub enum Source {
    Live(Box<Live>),
    Pcap(Box<Replay>),
}

pub struct Live {
    capture: Capture,
    ring: Ring,
    /// The program wakes us only every few samples per CPU: drain on a timer too.
    drain: tokio::time::Interval,
    config: CaptureConfig,
    selection: Selection,
    /// One interface named and nothing else: it is watched the original way, and its going
    /// away ends the run ([`Source::check`]).
    single: Option<(String, u32)>,
    /// Link changes, for lists and patterns.
    watcher: Option<Watcher>,
    /// ifindex → name, for the rows: the interfaces attached to, and for a few seconds those
    /// just gone (their last samples may still be in the ring).
    names: InterfaceNames,
    forget: Vec<(u32, Instant)>,
}

/// How long the name of an interface gone is kept for its samples still in the ring.
const FORGET_AFTER: Duration = Duration::from_secs(5);

impl Live {
    /// Attaches to interface `name` (`ifindex`) if the `-i` values want it and it is not
    /// attached yet. Errors are logged: an interface that appears later is no reason to stop.
    fn offer(&mut self, ifindex: u32, name: &str) {
        match self.capture.name_of(ifindex) {
            Some(was) if &*was == name => return,
            Some(_) => {
                // Renamed: keep it if the new name is wanted too.
                self.capture.detach_from(ifindex);
                self.forget.push((ifindex, Instant::now()));
            }
            None => {}
        }
        if !self.selection.matches(name) {
            return;
        }
        match self.capture.attach_to(name, ifindex) {
            Ok(()) => {
                info!(interface = name, ifindex, "capturing");
                self.names.insert(ifindex, name.into());
                self.forget.retain(|(i, _)| *i != ifindex);
            }
            Err(e) => warn!(interface = name, "not captured: {e}"),
        }
    }

    fn gone(&mut self, ifindex: u32) {
        if let Some(name) = self.capture.name_of(ifindex) {
            info!(interface = %name, ifindex, "interface went away; detaching");
            self.capture.detach_from(ifindex);
            self.forget.push((ifindex, Instant::now()));
        }
    }

    /// Attaches to every wanted interface there is, detaches from those gone.
    fn resync(&mut self) {
        let now = watch::interfaces();
        let gone: Vec<u32> = self
            .capture
            .attached()
            .filter(|(i, n)| !now.iter().any(|(j, m)| i == j && &***n == m.as_str()))
            .map(|(i, _)| i)
            .collect();
        for ifindex in gone {
            self.gone(ifindex);
        }
        for (ifindex, name) in now {
            self.offer(ifindex, &name);
        }
    }

    fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Present { ifindex, name } => self.offer(ifindex, &name),
            LinkEvent::Gone { ifindex } => self.gone(ifindex),
            LinkEvent::Resync => {
                warn!("the kernel's link notifications stopped; looking at the interfaces again");
                self.resync();
                match Watcher::start() {
                    Ok(w) => {
                        self.watcher = Some(w);
                        self.resync();
                    }
                    Err(e) => warn!("cannot watch link changes any more: {e}"),
                }
            }
        }
    }
}

/// Loads the programs and attaches them to the interfaces `cfg` names or its patterns
/// match; named ones must exist (and be up when only one is named).
fn open_live(cfg: &CaptureConfig) -> Result<Live, SourceError> {
    let selection = Selection::new(&cfg.interfaces);
    let single = selection.single().map(str::to_owned);
    for name in &selection.names {
        if capture::if_index(name).is_none() {
            return Err(CaptureError::NoSuchInterface(name.clone()).into());
        }
        if capture::if_is_up(name) == Some(false) {
            return Err(CaptureError::InterfaceDown(name.clone()).into());
        }
    }
    let mut capture = Capture::load(cfg)?;
    let ring = Ring::new(capture.take_ring()?).map_err(SourceError::Poll)?;
    if let Some(logger) = capture.take_logger() {
        ring::spawn_logger(logger).map_err(SourceError::Poll)?;
    }
    let mut drain = tokio::time::interval(Duration::from_millis(DRAIN_INTERVAL_MS));
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Subscribed before listing, so an interface that appears in between is not missed.
    let watcher = match single {
        Some(_) => None,
        None => Some(Watcher::start().map_err(SourceError::Watch)?),
    };
    let mut live = Live {
        capture,
        ring,
        drain,
        config: cfg.clone(),
        selection,
        single: None,
        watcher,
        names: InterfaceNames::default(),
        forget: Vec::new(),
    };
    let present = watch::interfaces();
    // Named interfaces first: failing to attach to one is a start-up error.
    for name in live.selection.names.clone() {
        let ifindex =
            capture::if_index(&name).ok_or_else(|| CaptureError::NoSuchInterface(name.clone()))?;
        live.capture.attach_to(&name, ifindex)?;
        live.names.insert(ifindex, name.as_str().into());
        if single.is_some() {
            live.single = Some((name.clone(), ifindex));
        }
    }
    for pattern in &live.selection.patterns {
        if !present.iter().any(|(_, n)| watch::glob(pattern, n)) {
            warn!(
                pattern = pattern.as_str(),
                "no interface matches -i {pattern} yet; waiting for one"
            );
        }
    }
    if live.watcher.is_some() {
        for (ifindex, name) in present {
            live.offer(ifindex, &name);
        }
    }
    Ok(live)
}

/// A file read on a thread of its own (a pipe on standard input may block for as long as
/// its writer likes; Ctrl+C must still be heard), handed over in chunks.
pub struct Replay {
    /// The file's name (`stdin` for standard input), as the rows' interface.
    name: std::sync::Arc<str>,
    rx: tokio::sync::mpsc::Receiver<Chunk>,
    chunk: Option<Chunk>,
    /// Frames handed to the pipeline.
    read: u64,
}

/// Frames read from the file, and how the file ended after them, if it did.
struct Chunk {
    frames: Vec<(Vec<u8>, FrameInfo)>,
    end: Option<Result<(), PcapFileError>>,
}

/// How many frames a replay hands over at a time (and between looks at the shutdown
/// signal), and how many such chunks may be read ahead.
const REPLAY_CHUNK: usize = 256;
const READ_AHEAD: usize = 4;

fn read_file(mut frames: PcapFrames, tx: tokio::sync::mpsc::Sender<Chunk>) {
    loop {
        let mut chunk = Chunk {
            frames: Vec::with_capacity(REPLAY_CHUNK),
            end: None,
        };
        while chunk.frames.len() < REPLAY_CHUNK {
            let mut buf = Vec::new();
            match frames.next_frame(&mut buf) {
                Ok(Some(info)) => chunk.frames.push((buf, info)),
                Ok(None) => {
                    chunk.end = Some(Ok(()));
                    break;
                }
                Err(e) => {
                    chunk.end = Some(Err(e));
                    break;
                }
            }
        }
        let last = chunk.end.is_some();
        if tx.blocking_send(chunk).is_err() || last {
            return;
        }
    }
}

impl Source {
    /// Attaches the program, or opens the file.
    pub async fn open(settings: &SourceSettings) -> Result<Self, SourceError> {
        match settings {
            SourceSettings::Live(cfg) => Ok(Self::Live(Box::new(open_live(cfg)?))),
            SourceSettings::Pcap(path) => {
                // Opening reads the file header, which a pipe may hold back: on the thread
                // too, so that Ctrl+C is heard meanwhile.
                let (opened_tx, opened) = tokio::sync::oneshot::channel();
                let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
                let name = if path.as_os_str() == pcap::STDIN {
                    "stdin".into()
                } else {
                    path.file_name()
                        .map_or_else(|| path.to_string_lossy(), |n| n.to_string_lossy())
                        .as_ref()
                        .into()
                };
                let path = path.clone();
                std::thread::Builder::new()
                    .name("flowmetrix-pcap".into())
                    .spawn(move || match PcapFrames::open(&path) {
                        Ok(frames) => {
                            if path.as_os_str() == pcap::STDIN {
                                info!("replaying standard input");
                            } else {
                                info!(file = %path.display(), "replaying");
                            }
                            if opened_tx.send(Ok(())).is_ok() {
                                read_file(frames, tx);
                            }
                        }
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                        }
                    })
                    .map_err(SourceError::Poll)?;
                match opened.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => return Err(SourceError::ReaderGone),
                }
                Ok(Self::Pcap(Box::new(Replay {
                    name,
                    rx,
                    chunk: None,
                    read: 0,
                })))
            }
        }
    }

    pub fn info(&self) -> SourceInfo {
        match self {
            Self::Live(l) => SourceInfo {
                interface: l.config.interfaces.join(",").into(),
                sample_rate: l.config.sample_rate,
                snaplen: l.config.snaplen,
                waits: false,
            },
            Self::Pcap(r) => SourceInfo {
                interface: r.name.clone(),
                sample_rate: 1,
                snaplen: 0,
                waits: true,
            },
        }
    }

    /// Waits until there may be samples to pull.
    pub async fn ready(&mut self) -> Result<(), SourceError> {
        match self {
            Self::Live(l) => {
                let watcher = l.watcher.as_mut();
                let link = tokio::select! {
                    res = l.ring.readable() => return res.map_err(SourceError::Poll),
                    _ = l.drain.tick() => return Ok(()),
                    ev = async move {
                        match watcher {
                            Some(w) => w.next().await,
                            None => std::future::pending().await,
                        }
                    } => ev,
                };
                l.on_link(link);
                Ok(())
            }
            Self::Pcap(r) => {
                if r.chunk.is_none() {
                    r.chunk = Some(r.rx.recv().await.unwrap_or(Chunk {
                        frames: Vec::new(),
                        end: Some(Ok(())), // the reading thread is gone
                    }));
                }
                Ok(())
            }
        }
    }

    /// Hands what is available now to `f`: everything in the ring, or the file's next
    /// frames. A ring record that is not a sample is handed over as its error.
    pub fn pull(
        &mut self,
        mut f: impl FnMut(Result<Sample<'_>, RecordError>),
    ) -> Result<Pulled, SourceError> {
        match self {
            Self::Live(l) => {
                let clock = Clock::now();
                let names = l.names.read();
                // Samples come in runs from one interface: look its name up once a run.
                let mut last: Option<(u32, Option<&Arc<str>>)> = None;
                l.ring.drain(|bytes| {
                    f(ring::parse_record(bytes).map(|s| Sample {
                        interface: match last {
                            Some((i, name)) if i == s.header.ifindex => name,
                            _ => {
                                let name = names.get(&s.header.ifindex);
                                last = Some((s.header.ifindex, name));
                                name
                            }
                        },
                        frame: s.frame,
                        wire_len: s.header.wire_len,
                        vlan: s.vlan,
                        ts: clock.wall(s.header.ts_boot_ns),
                        ifindex: s.header.ifindex,
                        direction: s.direction.into(),
                        cgroup_id: s.header.cgroup_id,
                        link: Link::Ethernet,
                        dns_only: s.dns_only,
                    }));
                });
                Ok(Pulled::More)
            }
            Self::Pcap(r) => {
                let Some(chunk) = r.chunk.take() else {
                    return Ok(Pulled::More);
                };
                for (frame, info) in &chunk.frames {
                    r.read += 1;
                    f(Ok(Sample {
                        frame,
                        wire_len: info.wire_len,
                        vlan: None,
                        ts: info.ts,
                        ifindex: 0,
                        direction: Direction::Ingress,
                        cgroup_id: 0,
                        link: info.link,
                        interface: info.interface.as_ref(),
                        dns_only: false,
                    }));
                }
                match chunk.end {
                    None => Ok(Pulled::More),
                    Some(Ok(())) => Ok(Pulled::End),
                    Some(Err(e)) => Err(e.into()),
                }
            }
        }
    }

    /// What the source has read: the kernel's per-CPU counters summed, or the frames of
    /// the file (each one seen and sampled).
    pub fn stats(&self) -> Result<KernelStats, SourceError> {
        Ok(self.counters()?.0)
    }

    /// A reader of the kernel's counters for a `/metrics` scrape (live capture only; a
    /// replay's counts move on the pipeline's tick).
    pub fn kernel_reader(&self) -> Option<KernelReader> {
        let Self::Live(l) = self else {
            return None;
        };
        let reader = l.capture.counter_reader();
        Some(Box::new(move || reader.read().ok()))
    }

    /// [`stats`](Self::stats), and the same per interface (none for a file), from one
    /// reading.
    pub fn counters(&self) -> Result<(KernelStats, Vec<InterfaceStats>), SourceError> {
        match self {
            Self::Live(l) => Ok(l.capture.counters()?),
            Self::Pcap(r) => {
                let read = r.read;
                Ok((
                    KernelStats::from_directions([
                        DirectionStats {
                            seen: read,
                            sampled: read,
                            ring_drops: 0,
                            ..Default::default()
                        },
                        DirectionStats::default(),
                    ]),
                    Vec::new(),
                ))
            }
        }
    }

    /// With one interface named and nothing else: fails when it is gone (deleted, or
    /// renamed and replaced). With lists and patterns interfaces come and go (watched), and
    /// the names of those gone are forgotten here once their samples are through.
    pub fn check(&mut self) -> Result<(), SourceError> {
        let Self::Live(l) = self else {
            return Ok(());
        };
        if let Some((name, ifindex)) = &l.single
            && capture::if_index(name) != Some(*ifindex)
        {
            return Err(SourceError::InterfaceGone(name.clone()));
        }
        let now = Instant::now();
        let names = &l.names;
        l.forget.retain(|&(ifindex, at)| {
            let keep = now.duration_since(at) < FORGET_AFTER;
            if !keep {
                names.remove(ifindex);
            }
            keep
        });
        Ok(())
    }

    /// Stops new samples: detaches the program. What the ring holds can still be pulled.
    pub fn stop(&mut self) {
        if let Self::Live(l) = self {
            l.capture.detach();
        }
    }

    /// Live, `--mode flows|both`: the kernel's flow maps (once).
    pub fn take_flow_maps(&mut self) -> Option<crate::flows::kernel::FlowMaps> {
        match self {
            Self::Live(l) => l.capture.take_flow_maps(),
            Self::Pcap(_) => None,
        }
    }

    /// Live, `--tcp-health`: the kernel's socket maps (once), when the kernel lets the part
    /// run.
    pub fn take_tcp_sockets(&mut self) -> Option<crate::flows::tcp::TcpSockets> {
        match self {
            Self::Live(l) => l.capture.take_tcp_sockets(),
            Self::Pcap(_) => None,
        }
    }

    /// Live, `--drops on`: the drop program's maps (once), when the probe passed.
    pub fn take_drop_maps(&mut self) -> Option<crate::flows::drops::DropMaps> {
        match self {
            Self::Live(l) => l.capture.take_drop_maps(),
            Self::Pcap(_) => None,
        }
    }

    /// Live: the names of the interfaces captured on, as the samples' rows have them
    /// (shared: it follows interfaces as they come and go). Empty for a file.
    pub fn names(&self) -> InterfaceNames {
        match self {
            Self::Live(l) => l.names.clone(),
            Self::Pcap(_) => InterfaceNames::default(),
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(self, Self::Live(_))
    }

    /// The last [`pull`](Self::pull) stopped with records left in the ring.
    pub fn has_more(&self) -> bool {
        match self {
            Self::Live(l) => l.ring.has_more(),
            Self::Pcap(_) => false,
        }
    }
}
