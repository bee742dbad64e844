//! Where samples come from: the kernel ring buffer (live capture) or a pcap file (replay).
//! Both yield the same [`Sample`] and count what they read in the same [`KernelStats`]; the
//! rest of the pipeline does not know which it has.

use std::{path::PathBuf, time::Duration};

use flowmetrix_common::DRAIN_INTERVAL_MS;
use tracing::info;

use crate::{
    capture::{self, Capture, CaptureConfig, CaptureError},
    decode::Link,
    metrics::{DirectionStats, KernelStats},
    pcap::{self, FrameInfo, PcapFileError, PcapFrames},
    record::UnixNanos,
    ring::{self, Clock, RecordError, Ring},
};

pub use crate::record::Direction;

/// One sampled frame, borrowed from the source.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// The captured bytes (any VMware prefix included).
    pub frame: &'a [u8],
    /// The frame's length on the wire.
    pub wire_len: u32,
    pub ts: UnixNanos,
    pub ifindex: u32,
    pub direction: Direction,
    /// What the frame starts with: Ethernet live, the file's link type in a replay.
    pub link: Link,
}

/// What the rows need to know about the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// The interface captured on; for a file, the file's name.
    pub interface: std::sync::Arc<str>,
    /// 1 in N packets is sampled.
    pub sample_rate: u32,
    /// Bytes captured per sample (0: whole frames, as a file holds them).
    pub snaplen: u32,
    /// Whether the source waits for the output rather than dropping rows (a file can wait;
    /// the kernel cannot).
    pub waits: bool,
}

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
    ifindex: u32,
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
            SourceSettings::Live(cfg) => {
                let mut capture = Capture::attach(cfg)?;
                let ring = Ring::new(capture.take_ring()?).map_err(SourceError::Poll)?;
                if let Some(logger) = capture.take_logger() {
                    ring::spawn_logger(logger).map_err(SourceError::Poll)?;
                }
                let mut drain = tokio::time::interval(Duration::from_millis(DRAIN_INTERVAL_MS));
                drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let ifindex = capture::if_index(&cfg.interface)
                    .ok_or_else(|| CaptureError::NoSuchInterface(cfg.interface.clone()))?;
                Ok(Self::Live(Box::new(Live {
                    capture,
                    ring,
                    drain,
                    config: cfg.clone(),
                    ifindex,
                })))
            }
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
                interface: l.config.interface.as_str().into(),
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
            Self::Live(l) => tokio::select! {
                res = l.ring.readable() => res.map_err(SourceError::Poll),
                _ = l.drain.tick() => Ok(()),
            },
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
                l.ring.drain(|bytes| {
                    f(ring::parse_record(bytes).map(|s| Sample {
                        frame: s.frame,
                        wire_len: s.header.wire_len,
                        ts: clock.wall(s.header.ts_boot_ns),
                        ifindex: s.header.ifindex,
                        direction: match s.direction {
                            flowmetrix_common::Direction::Ingress => Direction::Ingress,
                            flowmetrix_common::Direction::Egress => Direction::Egress,
                        },
                        link: Link::Ethernet,
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
                        ts: info.ts,
                        ifindex: 0,
                        direction: Direction::Ingress,
                        link: info.link,
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
        match self {
            Self::Live(l) => Ok(l.capture.stats()?),
            Self::Pcap(r) => {
                let read = r.read;
                Ok(KernelStats::from_directions([
                    DirectionStats {
                        seen: read,
                        sampled: read,
                        ring_drops: 0,
                    },
                    DirectionStats::default(),
                ]))
            }
        }
    }

    /// Fails when the interface captured on is gone (deleted, or renamed and replaced).
    pub fn check(&self) -> Result<(), SourceError> {
        match self {
            Self::Live(l) if capture::if_index(&l.config.interface) != Some(l.ifindex) => {
                Err(SourceError::InterfaceGone(l.config.interface.clone()))
            }
            _ => Ok(()),
        }
    }

    /// Stops new samples: detaches the program. What the ring holds can still be pulled.
    pub fn stop(&mut self) {
        if let Self::Live(l) = self {
            l.capture.detach();
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(self, Self::Live(_))
    }
}
