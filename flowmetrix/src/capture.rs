//! Load the embedded XDP program, attach it to an interface, read its counters, detach.
//!
//! Attachment is a bpf_link: the kernel detaches the program when the last file descriptor
//! on the link closes, so a crashed or SIGKILLed collector leaves nothing behind.

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{Xdp, links::FdLink},
    util::KernelVersion,
};
use flowmetrix_common::{
    CpuStats, PROGRAM_NAME, SAMPLE_RATE_GLOBAL, SAMPLES_MAP, SNAPLEN_GLOBAL, STATS_MAP,
    WAKEUP_BYTES_GLOBAL,
};
use tracing::{debug, info};

/// Forwards the XDP program's log records to `log` (and so to tracing).
pub type EbpfLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

use crate::metrics::KernelStats;

/// The XDP object built by build.rs, embedded so the binary is self-contained.
pub static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowmetrix"));

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("no such interface: {0}")]
    NoSuchInterface(String),
    #[error("cannot load the XDP program{hint}")]
    Load {
        hint: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("interface {0} is down (ip link set {0} up)")]
    InterfaceDown(String),
    #[error("cannot attach XDP to {iface} in {mode} mode{hint}")]
    Attach {
        iface: String,
        mode: &'static str,
        hint: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("kernel {0} is too old: XDP bpf_link and BPF ring buffers need Linux 5.9 or later")]
    KernelTooOld(KernelVersion),
    #[error("the XDP object lacks {0}")]
    Missing(&'static str),
    #[error("cannot read the kernel counters")]
    Stats(#[source] aya::maps::MapError),
}

/// How to attach the XDP program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic (skb) mode.
    #[default]
    Auto,
    Native,
    Skb,
}

/// What to load and where to attach it.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub interface: String,
    pub mode: XdpMode,
    pub sample_rate: u32,
    pub snaplen: u32,
    pub ring_bytes: u32,
}

/// A loaded, attached sampler.
pub struct Capture {
    ebpf: Ebpf,
    link: Option<FdLink>,
    logger: Option<EbpfLogger>,
    stats: PerCpuArray<MapData, CpuStats>,
    /// The mode the program ended up attached in ("native" or "skb").
    pub mode: &'static str,
}

/// Whether an interface is administratively up (IFF_UP), if it exists.
pub fn if_is_up(name: &str) -> Option<bool> {
    let c = std::ffi::CString::new(name).ok()?;
    let bytes = c.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: an ioctl on a socket we own, with a zeroed ifreq holding the name.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
            *dst = src as libc::c_char;
        }
        let rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        libc::close(fd);
        (rc == 0).then_some(req.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short != 0)
    }
}

/// Index of an interface by name, if it exists.
pub fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

impl Capture {
    pub fn attach(cfg: &CaptureConfig) -> Result<Self, CaptureError> {
        let ifindex = if_index(&cfg.interface)
            .ok_or_else(|| CaptureError::NoSuchInterface(cfg.interface.clone()))?;
        if if_is_up(&cfg.interface) == Some(false) {
            return Err(CaptureError::InterfaceDown(cfg.interface.clone()));
        }
        // Ring buffers came in 5.8, XDP bpf_links in 5.9.
        if let Ok(v) = KernelVersion::current()
            && v < KernelVersion::new(5, 9, 0)
        {
            return Err(CaptureError::KernelTooOld(v));
        }
        raise_memlock_limit();

        let mut ebpf = EbpfLoader::new()
            .override_global(SAMPLE_RATE_GLOBAL, &cfg.sample_rate, true)
            .override_global(SNAPLEN_GLOBAL, &cfg.snaplen, true)
            .override_global(WAKEUP_BYTES_GLOBAL, &(cfg.ring_bytes / 4), true)
            .map_max_entries(SAMPLES_MAP, cfg.ring_bytes)
            .load(PROGRAM)
            .map_err(|e| CaptureError::Load {
                hint: privilege_hint(),
                source: Box::new(e),
            })?;
        // The logger owns the program's log map: it must live as long as the program.
        let logger = aya_log::EbpfLogger::init(&mut ebpf)
            .inspect_err(|e| debug!("eBPF logger not started: {e}"))
            .ok();

        let stats = ebpf
            .take_map(STATS_MAP)
            .ok_or(CaptureError::Missing(STATS_MAP))?;
        let stats = PerCpuArray::try_from(stats).map_err(CaptureError::Stats)?;

        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(CaptureError::Missing(PROGRAM_NAME))?
            .try_into()
            .map_err(|e| CaptureError::Load {
                hint: "",
                source: Box::new(e),
            })?;
        program.load().map_err(|e| CaptureError::Load {
            hint: privilege_hint(),
            source: Box::new(e),
        })?;

        let attempts: &[(aya::programs::XdpMode, &'static str)] = match cfg.mode {
            XdpMode::Auto => &[
                (aya::programs::XdpMode::Driver, "native"),
                (aya::programs::XdpMode::Skb, "skb"),
            ],
            XdpMode::Native => &[(aya::programs::XdpMode::Driver, "native")],
            XdpMode::Skb => &[(aya::programs::XdpMode::Skb, "skb")],
        };
        let mut last_err = None;
        let mut attached = None;
        for &(mode, name) in attempts {
            match program.attach_to_if_index(ifindex, mode) {
                Ok(id) => {
                    attached = Some((id, name));
                    break;
                }
                Err(e) => {
                    if attempts.len() > 1 {
                        debug!(
                            "{name} XDP on {} failed ({e}); trying the next mode",
                            cfg.interface
                        );
                    }
                    last_err = Some((name, e));
                }
            }
        }
        let Some((id, mode)) = attached else {
            let (mode, source) = last_err.ok_or(CaptureError::Missing("an attach mode"))?;
            return Err(CaptureError::Attach {
                iface: cfg.interface.clone(),
                mode,
                hint: if mode == "native" {
                    " (the driver may lack native XDP: try --xdp-mode skb)"
                } else {
                    ""
                },
                source: Box::new(source),
            });
        };
        // Own the link as a bpf_link fd: closing it (drop, exit, SIGKILL) detaches.
        let link = program
            .take_link(id)
            .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })
            .and_then(|link| FdLink::try_from(link).map_err(|e| Box::new(e) as _))
            .map_err(|source| CaptureError::Attach {
                iface: cfg.interface.clone(),
                mode,
                hint: "",
                source,
            })?;
        info!(
            interface = %cfg.interface,
            mode,
            sample_rate = cfg.sample_rate,
            snaplen = cfg.snaplen,
            "XDP attached"
        );
        Ok(Self {
            ebpf,
            link: Some(link),
            logger,
            stats,
            mode,
        })
    }

    /// The ring buffer the program writes samples to (once).
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, CaptureError> {
        let map = self
            .ebpf
            .take_map(SAMPLES_MAP)
            .ok_or(CaptureError::Missing(SAMPLES_MAP))?;
        RingBuf::try_from(map).map_err(CaptureError::Stats)
    }

    /// Messages the XDP program logs (errors only), to be polled by the caller.
    pub fn take_logger(&mut self) -> Option<EbpfLogger> {
        self.logger.take()
    }

    /// Kernel counters summed over all CPUs.
    pub fn stats(&self) -> Result<KernelStats, CaptureError> {
        let per_cpu = self.stats.get(&0, 0).map_err(CaptureError::Stats)?;
        Ok(per_cpu
            .iter()
            .fold(KernelStats::default(), |acc, c| KernelStats {
                seen: acc.seen + c.seen,
                sampled: acc.sampled + c.sampled,
                ring_drops: acc.ring_drops + c.ring_full,
            }))
    }

    /// Detaches the program (closes the link). Idempotent; also happens on drop.
    pub fn detach(&mut self) {
        if self.link.take().is_some() {
            info!("XDP detached");
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.detach();
    }
}

fn privilege_hint() -> &'static str {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        " (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
    } else {
        ""
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it where we may.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
