//! Load the embedded programs, attach them to interfaces, read their counters, detach.
//!
//! Ingress is sampled by the XDP program (or, with `--ingress-hook tc`, a TC program),
//! egress by a TC program; the programs are loaded once and attached to every interface
//! captured on, and all of them write to one ring buffer and one per-CPU counter array
//! indexed by interface slot and direction (a slot is given to each interface attached, in
//! the `IFSLOT` map; see [`SlotBook`]).
//!
//! XDP is attached through a bpf_link, TC through TCX (Linux 6.6+), a bpf_link too: the
//! kernel detaches a program when the last file descriptor on its link closes, so a crashed
//! or SIGKILLed collector leaves nothing behind. Where TCX is missing (or with the hidden
//! `--tc-attach netlink`), TC programs are attached as a `clsact` qdisc filter through
//! netlink. Such a filter is removed when the collector exits normally (Ctrl+C, SIGTERM, an
//! error), but **not on kill -9**: the kernel keeps the filter, which keeps running the
//! program (it never changes a packet's fate, but costs its few nanoseconds per packet and
//! samples into a ring no one reads). The next collector started with the netlink path
//! removes such stale filters of ours first, when no running process holds programs of ours;
//! by hand: `tc filter show dev IF egress` then `tc filter del dev IF egress pref P`.
//! The `clsact` qdisc itself is left in place (other filters may use it).

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{
        LinkOrder, SchedClassifier, TcAttachType, Xdp,
        links::FdLink,
        tc::{NlOptions, SchedClassifierLink, TcAttachOptions},
    },
    util::KernelVersion,
};
use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
};

use flowmetrix_common::flow::{FLOW_EVENTS_MAP, FLOW_MAPS, MODE_FLOWS, MODE_GLOBAL, MODE_PACKETS};
use flowmetrix_common::{
    CpuStats, Direction, IF_SLOT_MAP, IF_SLOTS, MAX_IFINDEX, PROGRAM_NAME, SAMPLE_RATE_GLOBAL,
    SAMPLES_MAP, SNAPLEN_GLOBAL, STATS_MAP, TC_EGRESS_PROGRAM_NAME, TC_INGRESS_PROGRAM_NAME,
    WAKEUP_BYTES_GLOBAL, stats_index,
};
use tracing::{debug, info, warn};

use crate::flowmap::FlowMaps;

/// Forwards the XDP program's log records to `log` (and so to tracing).
pub type EbpfLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

use crate::metrics::{DirectionStats, FlowKernelStats, InterfaceStats, KernelStats};

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
    #[error("interface {iface} already has an XDP program ({program}, id {id}){hint}")]
    AlreadyAttached {
        iface: String,
        program: String,
        id: u32,
        hint: String,
    },
    #[error("kernel {0} is too old: XDP bpf_link and BPF ring buffers need Linux 5.9 or later")]
    KernelTooOld(KernelVersion),
    #[error("the XDP object lacks {0}")]
    Missing(&'static str),
    #[error("cannot read the kernel counters")]
    Stats(#[source] aya::maps::MapError),
    #[error("cannot set up the flow maps")]
    Flows(#[source] crate::flowmap::FlowMapError),
    #[error("cannot attach the TC {direction} program to {iface} ({how}){hint}")]
    TcAttach {
        iface: String,
        direction: &'static str,
        how: &'static str,
        hint: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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

/// Which directions to capture (`--direction`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Directions {
    /// Packets arriving (the original's behaviour).
    #[default]
    Ingress,
    /// Packets leaving.
    Egress,
    Both,
}

impl Directions {
    pub fn ingress(self) -> bool {
        matches!(self, Self::Ingress | Self::Both)
    }

    pub fn egress(self) -> bool {
        matches!(self, Self::Egress | Self::Both)
    }
}

/// Where ingress is sampled (`--ingress-hook`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IngressHook {
    #[default]
    Xdp,
    /// A TC program, for interfaces whose driver's XDP is unsuitable.
    Tc,
}

/// How TC programs are attached (the hidden `--tc-attach`, for tests and old kernels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TcAttach {
    /// TCX where the kernel has it (6.6+), else a clsact qdisc filter through netlink.
    #[default]
    Auto,
    /// TCX only.
    Tcx,
    /// A clsact filter through netlink only (not detached by kill -9: see the module doc).
    Netlink,
}

/// What to load and where to attach it.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// The `-i` values: interface names and patterns (see [`crate::watch::Selection`]).
    pub interfaces: Vec<String>,
    pub mode: XdpMode,
    pub sample_rate: u32,
    pub snaplen: u32,
    pub ring_bytes: u32,
    pub directions: Directions,
    pub ingress_hook: IngressHook,
    pub tc_attach: TcAttach,
    /// Sample packets into the ring (`--mode packets|both`).
    pub packets: bool,
    /// Count every packet in the flow maps (`--mode flows|both`).
    pub flows: Option<FlowsConfig>,
}

/// The kernel side of `--mode flows|both`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowsConfig {
    /// Entries of each of the two flow maps (`--flow-max-entries`).
    pub max_entries: u32,
    /// The prefix before the Ethernet header: `-offset`'s, or `None` with `-auto-detect`
    /// until it is learned ([`crate::flowmap::FlowMaps::set_prefix`]).
    pub prefix: Option<u32>,
    /// Test hook ([`crate::settings::FLOW_EVENTS_BYTES_ENV`]): the flow event ring's size
    /// instead of the one `max_entries` gives (rounded up to a power of two, at least a
    /// page), to fill it in a test.
    pub events_bytes: Option<u32>,
}

/// The loaded programs, and the interfaces they are attached to.
pub struct Capture {
    ebpf: Ebpf,
    cfg: CaptureConfig,
    attached: BTreeMap<u32, Attached>,
    logger: Option<EbpfLogger>,
    stats: PerCpuArray<MapData, CpuStats>,
    slot_of: Array<MapData, u32>,
    book: SlotBook,
    /// The flow maps, until taken (`--mode flows|both`).
    flow_maps: Option<FlowMaps>,
    /// The mode the XDP program was last attached in ("native" or "skb"), "" without XDP.
    pub mode: &'static str,
    /// How the TC programs were last attached ("tcx" or "netlink"), "" without TC.
    pub tc_attached: &'static str,
}

/// One interface the programs are attached to.
struct Attached {
    name: Arc<str>,
    /// Its counters' slot (0: none was free; counted with the other unslotted ones).
    slot: u32,
    xdp: Option<FdLink>,
    /// TC programs' links (TCX: a bpf_link fd; netlink: removed by their drop).
    tc: Vec<SchedClassifierLink>,
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
    /// Loads the programs (attached to nothing yet).
    pub fn load(cfg: &CaptureConfig) -> Result<Self, CaptureError> {
        // Ring buffers came in 5.8, XDP bpf_links in 5.9.
        if let Ok(v) = KernelVersion::current()
            && v < KernelVersion::new(5, 9, 0)
        {
            return Err(CaptureError::KernelTooOld(v));
        }
        raise_memlock_limit();

        let sizes = MapSizes::of(cfg);
        let mut ebpf = EbpfLoader::new()
            .override_global(SAMPLE_RATE_GLOBAL, &cfg.sample_rate, true)
            .override_global(SNAPLEN_GLOBAL, &cfg.snaplen, true)
            .override_global(WAKEUP_BYTES_GLOBAL, &(cfg.ring_bytes / 4), true)
            .override_global(MODE_GLOBAL, &sizes.mode, true)
            .map_max_entries(SAMPLES_MAP, sizes.samples_bytes)
            .map_max_entries(FLOW_MAPS[0], sizes.flow_entries)
            .map_max_entries(FLOW_MAPS[1], sizes.flow_entries)
            .map_max_entries(FLOW_EVENTS_MAP, sizes.events_bytes)
            .load(
                crate::kernel_object::object().map_err(|e| CaptureError::Load {
                    hint: "",
                    source: Box::new(e),
                })?,
            )
            .map_err(|e| CaptureError::Load {
                hint: privilege_hint(),
                source: Box::new(e),
            })?;
        // Generation 0 and the prefix are set before any program is attached.
        let flow_maps = match cfg.flows {
            Some(f) => Some(FlowMaps::from_ebpf(&mut ebpf, f.prefix).map_err(CaptureError::Flows)?),
            None => None,
        };
        // The logger owns the program's log map: it must live as long as the program.
        let logger = aya_log::EbpfLogger::init(&mut ebpf)
            .inspect_err(|e| debug!("eBPF logger not started: {e}"))
            .ok();

        let stats = ebpf
            .take_map(STATS_MAP)
            .ok_or(CaptureError::Missing(STATS_MAP))?;
        let stats = PerCpuArray::try_from(stats).map_err(CaptureError::Stats)?;
        let slot_of = ebpf
            .take_map(IF_SLOT_MAP)
            .ok_or(CaptureError::Missing(IF_SLOT_MAP))?;
        let slot_of = Array::try_from(slot_of).map_err(CaptureError::Stats)?;

        if cfg.directions.ingress() && cfg.ingress_hook == IngressHook::Xdp {
            load_program::<Xdp>(&mut ebpf, PROGRAM_NAME)?;
        }
        for (name, _, _) in tc_hooks(cfg) {
            load_program::<SchedClassifier>(&mut ebpf, name)?;
        }
        Ok(Self {
            ebpf,
            cfg: cfg.clone(),
            attached: BTreeMap::new(),
            logger,
            stats,
            slot_of,
            book: SlotBook::default(),
            flow_maps,
            mode: "",
            tc_attached: "",
        })
    }

    /// Attaches the programs to interface `name` (index `ifindex`), and gives it a slot for
    /// its counters. Does nothing if they are attached there already.
    pub fn attach_to(&mut self, name: &str, ifindex: u32) -> Result<(), CaptureError> {
        if self.attached.contains_key(&ifindex) {
            return Ok(());
        }
        let name: Arc<str> = name.into();
        let slot = match self.book.take() {
            Some(slot) if ifindex < MAX_IFINDEX => {
                let now = self.read_slot(slot)?;
                self.book.start(slot, Arc::clone(&name), now);
                // Set before attaching, so that the first packet already counts in it.
                if let Err(e) = self.slot_of.set(ifindex, slot, 0) {
                    warn!(interface = %name, "cannot give the interface its counters: {e}");
                }
                slot
            }
            other => {
                if let Some(slot) = other {
                    self.book.put_back(slot);
                }
                warn!(
                    interface = %name,
                    "no counter slot for this interface (ifindex {ifindex}): counted under interface \"other\""
                );
                0
            }
        };
        let mut on = Attached {
            name: Arc::clone(&name),
            slot,
            xdp: None,
            tc: Vec::new(),
        };
        // Whatever fails, what was attached is detached by `on`'s drop.
        let result = (|| {
            if self.cfg.directions.ingress() && self.cfg.ingress_hook == IngressHook::Xdp {
                let (link, mode) = attach_xdp(&mut self.ebpf, &self.cfg, &name, ifindex)?;
                on.xdp = Some(link);
                self.mode = mode;
            }
            for (program, kind, direction) in tc_hooks(&self.cfg) {
                let (link, how) =
                    attach_tc(&mut self.ebpf, &self.cfg, &name, program, kind, direction)?;
                on.tc.push(link);
                self.tc_attached = how;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.attached.insert(ifindex, on);
                Ok(())
            }
            Err(e) => {
                drop(on);
                self.release(ifindex, slot);
                Err(e)
            }
        }
    }

    /// Detaches the programs from interface `ifindex` (gone, or no longer wanted). Its
    /// counters are kept, under its name.
    pub fn detach_from(&mut self, ifindex: u32) {
        if let Some(on) = self.attached.remove(&ifindex) {
            let slot = on.slot;
            info!(interface = %on.name, "detached");
            drop(on);
            self.release(ifindex, slot);
        }
    }

    fn release(&mut self, ifindex: u32, slot: u32) {
        if slot == 0 {
            return;
        }
        if ifindex < MAX_IFINDEX
            && let Err(e) = self.slot_of.set(ifindex, 0, 0)
        {
            debug!("clearing the counter slot of ifindex {ifindex}: {e}");
        }
        self.book.release(slot);
    }

    /// The interfaces attached to: ifindex and name.
    pub fn attached(&self) -> impl Iterator<Item = (u32, &Arc<str>)> {
        self.attached.iter().map(|(i, a)| (*i, &a.name))
    }

    /// The name of interface `ifindex`, if attached to.
    pub fn name_of(&self, ifindex: u32) -> Option<Arc<str>> {
        self.attached.get(&ifindex).map(|a| Arc::clone(&a.name))
    }

    /// The counters of slot `slot`, summed over CPUs, by direction.
    fn read_slot(&self, slot: u32) -> Result<[DirectionStats; 2], CaptureError> {
        let mut dirs = [DirectionStats::default(); 2];
        for d in [Direction::Ingress, Direction::Egress] {
            let per_cpu = self
                .stats
                .get(&stats_index(slot, d), 0)
                .map_err(CaptureError::Stats)?;
            dirs[d as usize] = per_cpu.iter().fold(DirectionStats::default(), |acc, c| {
                acc.zip(
                    DirectionStats {
                        seen: c.seen,
                        sampled: c.sampled,
                        ring_drops: c.ring_full,
                        flows: FlowKernelStats {
                            unkeyed: c.flow_unkeyed,
                            unkeyed_bytes: c.flow_unkeyed_bytes,
                            events: c.flow_events,
                            overflow: c.flow_overflow,
                            overflow_bytes: c.flow_overflow_bytes,
                        },
                    },
                    |a, b| a + b,
                )
            });
        }
        Ok(dirs)
    }

    /// The ring buffer the program writes samples to (once).
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, CaptureError> {
        let map = self
            .ebpf
            .take_map(SAMPLES_MAP)
            .ok_or(CaptureError::Missing(SAMPLES_MAP))?;
        RingBuf::try_from(map).map_err(CaptureError::Stats)
    }

    /// The flow maps (once), when loaded with [`CaptureConfig::flows`].
    pub fn take_flow_maps(&mut self) -> Option<FlowMaps> {
        self.flow_maps.take()
    }

    /// Messages the XDP program logs (errors only), to be polled by the caller.
    pub fn take_logger(&mut self) -> Option<EbpfLogger> {
        self.logger.take()
    }

    /// Kernel counters summed over all CPUs, per direction and in total.
    pub fn stats(&self) -> Result<KernelStats, CaptureError> {
        Ok(self.counters()?.0)
    }

    /// Kernel counters summed over all CPUs: in total and per direction, and per interface
    /// (those that went away included), from one reading, so the second add up to the first.
    pub fn counters(&self) -> Result<(KernelStats, Vec<InterfaceStats>), CaptureError> {
        let raw = (0..self.book.used())
            .map(|slot| self.read_slot(slot))
            .collect::<Result<Vec<_>, _>>()?;
        let mut dirs = [DirectionStats::default(); 2];
        for slot in &raw {
            for (total, d) in dirs.iter_mut().zip(slot) {
                total.add(d);
            }
        }
        Ok((KernelStats::from_directions(dirs), self.book.report(&raw)))
    }

    /// Detaches the programs from every interface (closes the links, removes netlink
    /// filters). Idempotent; also happens on drop.
    pub fn detach(&mut self) {
        let all: Vec<u32> = self.attached.keys().copied().collect();
        for ifindex in all {
            self.detach_from(ifindex);
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.detach();
    }
}

/// Load-time mode and map sizes for `cfg`: what a mode does not use is shrunk to the
/// kernel's minimum (one flow entry, one page of ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    /// `MODE` bits.
    pub mode: u32,
    pub samples_bytes: u32,
    pub flow_entries: u32,
    pub events_bytes: u32,
}

/// Smallest and largest flow-event ring: it holds about as many events as the map holds
/// flows (80 bytes a record), within these bounds.
const EVENTS_MIN_BYTES: u32 = 1 << 20;
const EVENTS_MAX_BYTES: u32 = 64 << 20;

impl MapSizes {
    pub fn of(cfg: &CaptureConfig) -> Self {
        let page = page_size();
        let mut mode = 0;
        if cfg.packets {
            mode |= MODE_PACKETS;
        }
        let (flow_entries, events_bytes) = match cfg.flows {
            Some(f) => {
                mode |= MODE_FLOWS;
                let want = u64::from(f.max_entries) * 80;
                let bytes = match f.events_bytes {
                    Some(b) => b.min(EVENTS_MAX_BYTES).next_power_of_two(),
                    None => want
                        .clamp(u64::from(EVENTS_MIN_BYTES), u64::from(EVENTS_MAX_BYTES))
                        .next_power_of_two()
                        .min(u64::from(EVENTS_MAX_BYTES)) as u32,
                };
                (f.max_entries.max(1), bytes.max(page))
            }
            None => (1, page),
        };
        Self {
            mode,
            samples_bytes: if cfg.packets { cfg.ring_bytes } else { page },
            flow_entries,
            events_bytes,
        }
    }
}

fn page_size() -> u32 {
    // SAFETY: no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(page).unwrap_or(4096).max(4096)
}

/// The TC programs `cfg` wants: program name, hook, direction.
fn tc_hooks(cfg: &CaptureConfig) -> Vec<(&'static str, TcAttachType, &'static str)> {
    let mut tc = Vec::new();
    if cfg.directions.ingress() && cfg.ingress_hook == IngressHook::Tc {
        tc.push((TC_INGRESS_PROGRAM_NAME, TcAttachType::Ingress, "ingress"));
    }
    if cfg.directions.egress() {
        tc.push((TC_EGRESS_PROGRAM_NAME, TcAttachType::Egress, "egress"));
    }
    tc
}

/// The program `name` of the object, as its kind `P`.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, CaptureError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(CaptureError::Missing(name))?
        .try_into()
        .map_err(|e| CaptureError::Load {
            hint: "",
            source: Box::new(e),
        })
}

fn load_program<P>(ebpf: &mut Ebpf, name: &'static str) -> Result<(), CaptureError>
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    P: Loadable,
{
    let program: &mut P = program(ebpf, name)?;
    program.load_it().map_err(|e| CaptureError::Load {
        hint: privilege_hint(),
        source: Box::new(e),
    })
}

/// The programs' `load`, which aya does not put in a trait.
trait Loadable {
    fn load_it(&mut self) -> Result<(), aya::programs::ProgramError>;
}

impl Loadable for Xdp {
    fn load_it(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
}

impl Loadable for SchedClassifier {
    fn load_it(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
}

/// Who the counts in each interface slot belong to: slots are given to interfaces as they
/// are attached and taken back when they go, and a slot's counters keep growing across
/// owners, so each owner's share is the growth since it got the slot. Counts that arrive
/// after an owner left (packets in flight) stay its own until the slot has a new one. So
/// the per-interface counters always add up to the slots' sums, the totals.
#[derive(Debug, Default)]
pub struct SlotBook {
    /// By slot (slot 0, for interfaces without one, is never given out).
    slots: Vec<Slot>,
    /// Slots given back, the longest free first.
    free: VecDeque<u32>,
    /// What interfaces that no longer hold a slot counted, by name.
    gone: BTreeMap<Arc<str>, [DirectionStats; 2]>,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    owner: Option<Arc<str>>,
    /// The slot's counters when `owner` got it.
    base: [DirectionStats; 2],
}

/// Where the counts of interfaces without a slot (and of names past [`MAX_GONE`]) go.
pub const OTHER: &str = "other";
/// Interfaces gone whose counters are kept by name; more are added to [`OTHER`].
const MAX_GONE: usize = 1024;

impl SlotBook {
    /// Slots to read (0..used).
    pub fn used(&self) -> u32 {
        (self.slots.len() as u32).max(1)
    }

    /// A free slot, if any (not yet owned: [`start`](Self::start) it).
    pub fn take(&mut self) -> Option<u32> {
        if self.slots.is_empty() {
            self.slots.push(Slot::default()); // slot 0
        }
        if let Some(slot) = self.free.pop_front() {
            return Some(slot);
        }
        let next = self.slots.len() as u32;
        (next < IF_SLOTS).then(|| {
            self.slots.push(Slot::default());
            next
        })
    }

    /// Gives back a slot taken but not started.
    pub fn put_back(&mut self, slot: u32) {
        self.free.push_front(slot);
    }

    /// `name` owns `slot` from now on; `now` is the slot's counters at this moment.
    pub fn start(&mut self, slot: u32, name: Arc<str>, now: [DirectionStats; 2]) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if let Some(old) = s.owner.take() {
            let share = since(now, s.base);
            let key = if self.gone.len() < MAX_GONE || self.gone.contains_key(&old) {
                old
            } else {
                OTHER.into()
            };
            let entry = self.gone.entry(key).or_default();
            for (e, d) in entry.iter_mut().zip(&share) {
                e.add(d);
            }
        }
        s.owner = Some(name);
        s.base = now;
    }

    /// The owner of `slot` has gone; the slot may be given out again.
    pub fn release(&mut self, slot: u32) {
        if slot != 0 && (slot as usize) < self.slots.len() && !self.free.contains(&slot) {
            self.free.push_back(slot);
        }
    }

    /// Per-interface counters from the slots' counters `raw` (by slot), sorted by name;
    /// [`OTHER`] only when it counted something.
    pub fn report(&self, raw: &[[DirectionStats; 2]]) -> Vec<InterfaceStats> {
        let mut by: BTreeMap<Arc<str>, [DirectionStats; 2]> = self.gone.clone();
        for (i, now) in raw.iter().enumerate() {
            let (name, share) = match self.slots.get(i).and_then(|s| s.owner.as_ref()) {
                Some(owner) => (Arc::clone(owner), since(*now, self.slots[i].base)),
                None => (OTHER.into(), *now),
            };
            let entry = by.entry(name).or_default();
            for (e, d) in entry.iter_mut().zip(&share) {
                e.add(d);
            }
        }
        by.into_iter()
            .filter(|(n, d)| &**n != OTHER || d.iter().any(|d| d.seen > 0 || d.sampled > 0))
            .map(|(interface, directions)| InterfaceStats {
                interface,
                directions,
            })
            .collect()
    }
}

fn since(now: [DirectionStats; 2], base: [DirectionStats; 2]) -> [DirectionStats; 2] {
    std::array::from_fn(|i| now[i].zip(base[i], u64::saturating_sub))
}

/// Loads the XDP program and attaches it to `ifindex`; returns its link and mode.
fn attach_xdp(
    ebpf: &mut Ebpf,
    cfg: &CaptureConfig,
    iface: &str,
    ifindex: u32,
) -> Result<(FdLink, &'static str), CaptureError> {
    let program: &mut Xdp = program(ebpf, PROGRAM_NAME)?;

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
                    debug!("{name} XDP on {iface} failed ({e}); trying the next mode");
                }
                last_err = Some((name, e));
            }
        }
    }
    let Some((id, mode)) = attached else {
        let (mode, source) = last_err.ok_or(CaptureError::Missing("an attach mode"))?;
        // "File exists" from the kernel: name the program that holds the interface.
        if let Some(taken) = owner::attached_program(ifindex) {
            return Err(taken.error(iface));
        }
        return Err(CaptureError::Attach {
            iface: iface.to_owned(),
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
            iface: iface.to_owned(),
            mode,
            hint: "",
            source,
        })?;
    info!(
        interface = iface,
        mode,
        sample_rate = cfg.sample_rate,
        snaplen = cfg.snaplen,
        "XDP attached"
    );
    Ok((link, mode))
}

/// Loads TC program `name` and attaches it to the interface's `kind` hook: through TCX, or
/// through a clsact qdisc filter (see the module doc). Returns the link and which it was.
fn attach_tc(
    ebpf: &mut Ebpf,
    cfg: &CaptureConfig,
    iface: &str,
    name: &'static str,
    kind: TcAttachType,
    direction: &'static str,
) -> Result<(SchedClassifierLink, &'static str), CaptureError> {
    let fail =
        |how, hint, source: Box<dyn std::error::Error + Send + Sync>| CaptureError::TcAttach {
            iface: iface.to_owned(),
            direction,
            how,
            hint,
            source,
        };
    let program: &mut SchedClassifier = program(ebpf, name)?;
    let tcx_here = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    if cfg.tc_attach == TcAttach::Tcx || (cfg.tc_attach == TcAttach::Auto && tcx_here) {
        match program.attach_with_options(
            iface,
            kind,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        ) {
            Ok(id) => {
                let link = program
                    .take_link(id)
                    .map_err(|e| fail("tcx", "", Box::new(e)))?;
                info!(
                    interface = iface,
                    direction,
                    attach = "tcx",
                    sample_rate = cfg.sample_rate,
                    snaplen = cfg.snaplen,
                    "TC attached"
                );
                return Ok((link, "tcx"));
            }
            Err(e) if cfg.tc_attach == TcAttach::Tcx => {
                return Err(fail("tcx", " (TCX needs Linux 6.6 or later)", Box::new(e)));
            }
            Err(e) => debug!("TCX attach on {iface} failed ({e}); trying a clsact qdisc"),
        }
    }
    // A clsact qdisc may be there already (ours from an earlier run, or someone else's).
    if let Err(e) = aya::programs::tc::qdisc_add_clsact(iface) {
        debug!("adding a clsact qdisc to {iface}: {e} (it may exist already)");
    }
    stale::remove(iface, kind, name);
    let id = program
        .attach_with_options(iface, kind, TcAttachOptions::Netlink(NlOptions::default()))
        .map_err(|e| fail("clsact filter", "", Box::new(e)))?;
    let link = program
        .take_link(id)
        .map_err(|e| fail("clsact filter", "", Box::new(e)))?;
    warn!(
        interface = iface,
        direction,
        "a clsact filter (no TCX) stays attached if the collector is killed with SIGKILL"
    );
    info!(
        interface = iface,
        direction,
        attach = "netlink",
        sample_rate = cfg.sample_rate,
        snaplen = cfg.snaplen,
        "TC attached"
    );
    Ok((link, "netlink"))
}

/// Filters of ours left on an interface by a collector killed with SIGKILL (netlink path).
mod stale {
    use aya::programs::{TcAttachType, loaded_programs, tc::qdisc_detach_program};
    use tracing::{debug, info};

    /// Removes the `kind` filters named `name` from `iface` when nothing but filters holds
    /// a program of that name: no running process has one open (another collector would,
    /// for as long as it runs), so every such filter is a leftover.
    pub fn remove(iface: &str, kind: TcAttachType, name: &str) {
        // The kernel keeps 15 characters of a program's name.
        let short = &name[..name.len().min(15)];
        let ids: Vec<u32> = loaded_programs()
            .filter_map(Result::ok)
            .filter(|p| p.name_as_str() == Some(short))
            .map(|p| p.id())
            .collect();
        if ids.is_empty() {
            return;
        }
        let me = std::process::id();
        if let Some(pid) = holder(&ids, me) {
            debug!("programs named {name} are held by process {pid}: leaving their filters");
            return;
        }
        match qdisc_detach_program(iface, kind, name) {
            Ok(()) => info!(
                interface = iface,
                "removed a stale {name} filter left by a collector that was killed"
            ),
            Err(e) => debug!("no stale {name} filter on {iface}: {e}"),
        }
    }

    /// A process other than `me` with a file descriptor on one of programs `ids`.
    fn holder(ids: &[u32], me: u32) -> Option<u32> {
        let wants: Vec<String> = ids.iter().map(|id| format!("prog_id:\t{id}\n")).collect();
        for proc in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
            let Some(pid) = proc
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(proc.path().join("fdinfo")) else {
                continue;
            };
            for fd in fds.filter_map(Result::ok) {
                let Ok(info) = std::fs::read_to_string(fd.path()) else {
                    continue;
                };
                if wants.iter().any(|w| info.contains(w.as_str())) {
                    return Some(pid);
                }
            }
        }
        None
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

/// Who holds an interface's XDP hook: asked of the kernel when attaching fails, so that the
/// error names the program (and the process) instead of saying "File exists".
mod owner {
    use std::{ffi::OsStr, os::unix::ffi::OsStrExt as _};

    use aya::programs::{ProgramInfo, links::LinkType, loaded_links, loaded_programs};

    use super::CaptureError;

    pub struct Attached {
        id: u32,
        name: String,
        holder: Holder,
    }

    enum Holder {
        /// A bpf_link that this process holds open (another collector).
        Process { pid: u32, comm: String },
        /// A bpf_link no process holds: pinned in bpffs.
        Pinned { link: u32 },
        /// Attached through netlink (`ip link set dev X xdp obj …`).
        Netlink,
    }

    impl Attached {
        pub fn error(&self, iface: &str) -> CaptureError {
            let hint = match &self.holder {
                Holder::Process { pid, comm } => format!(
                    ": is another collector running? (process {pid}, {comm}, holds it: stop it and the program detaches)"
                ),
                Holder::Pinned { link } => format!(
                    ": is another collector running? (bpf_link {link} holds it, pinned: detach it with `bpftool link detach id {link}`)"
                ),
                Holder::Netlink => {
                    format!(": detach it with `ip link set dev {iface} xdp off`")
                }
            };
            CaptureError::AlreadyAttached {
                iface: iface.to_owned(),
                program: self.name.clone(),
                id: self.id,
                hint,
            }
        }
    }

    /// The XDP program attached to interface `ifindex` (in this network namespace), if any.
    pub fn attached_program(ifindex: u32) -> Option<Attached> {
        let id = xdp_prog_id(ifindex)?;
        let name = loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == id)
            .as_ref()
            .and_then(ProgramInfo::name_as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or("unnamed")
            .to_owned();
        let link = loaded_links()
            .filter_map(Result::ok)
            .find(|l| l.program_id() == id && matches!(l.link_type(), Ok(LinkType::Xdp)))
            .map(|l| l.id());
        let holder = match link {
            Some(link) => link_holder(link).map_or(Holder::Pinned { link }, |(pid, comm)| {
                Holder::Process { pid, comm }
            }),
            None => Holder::Netlink,
        };
        Some(Attached { id, name, holder })
    }

    /// The process holding bpf_link `link` open: its pid and command name.
    fn link_holder(link: u32) -> Option<(u32, String)> {
        let want = format!("link_id:\t{link}\n");
        for proc in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
            let Some(pid) = proc
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else {
                continue;
            };
            for fd in fds.filter_map(Result::ok) {
                let is_link = std::fs::read_link(fd.path())
                    .is_ok_and(|t| t.as_os_str() == OsStr::from_bytes(b"anon_inode:bpf_link"));
                if !is_link {
                    continue;
                }
                let info = proc.path().join("fdinfo").join(fd.file_name());
                if std::fs::read_to_string(info).is_ok_and(|i| i.contains(&want)) {
                    let comm = std::fs::read_to_string(proc.path().join("comm"))
                        .map(|c| c.trim().to_owned())
                        .unwrap_or_default();
                    return Some((pid, comm));
                }
            }
        }
        None
    }

    const IFLA_XDP: u16 = 43;
    const IFLA_XDP_PROG_ID: u16 = 4;
    const IFLA_XDP_DRV_PROG_ID: u16 = 5;
    const IFLA_XDP_SKB_PROG_ID: u16 = 6;
    const NLA_TYPE_MASK: u16 = 0x3fff;

    /// The id of the XDP program on `ifindex`, asked with an RTM_GETLINK request.
    fn xdp_prog_id(ifindex: u32) -> Option<u32> {
        let mut req = Vec::with_capacity(32);
        req.extend_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
        req.extend_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
        req.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        req.extend_from_slice(&1u32.to_ne_bytes()); // seq
        req.extend_from_slice(&0u32.to_ne_bytes()); // pid
        req.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]); // family, pad, type
        req.extend_from_slice(&(ifindex as i32).to_ne_bytes());
        req.extend_from_slice(&[0; 8]); // flags, change
        let mut buf = vec![0u8; 64 << 10];
        // SAFETY: a netlink socket we own, our own buffers with their lengths.
        let n = unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            );
            if fd < 0 {
                return None;
            }
            let timeout = libc::timeval {
                tv_sec: 2,
                tv_usec: 0,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            let sent = libc::send(fd, req.as_ptr().cast(), req.len(), 0);
            let n = if sent == req.len() as isize {
                libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0)
            } else {
                -1
            };
            libc::close(fd);
            n
        };
        let msg = buf.get(..usize::try_from(n).ok()?)?;
        parse_link_reply(msg)
    }

    fn u16_at(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
    }

    fn u32_at(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }

    /// Netlink attributes in `b`: (type, payload).
    fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
        std::iter::from_fn(move || {
            let len = usize::from(u16_at(b, 0)?);
            let kind = u16_at(b, 2)? & NLA_TYPE_MASK;
            let payload = b.get(4..len)?;
            b = b.get(len.next_multiple_of(4)..).unwrap_or_default();
            Some((kind, payload))
        })
    }

    /// The XDP program id in an RTM_NEWLINK reply (none for an error or no program).
    fn parse_link_reply(msg: &[u8]) -> Option<u32> {
        let len = usize::try_from(u32_at(msg, 0)?).ok()?;
        if u16_at(msg, 4)? != libc::RTM_NEWLINK {
            return None;
        }
        // nlmsghdr (16 bytes), ifinfomsg (16 bytes), then the attributes.
        let (_, xdp) = attrs(msg.get(32..len)?).find(|(kind, _)| *kind == IFLA_XDP)?;
        let mut ids = [None; 3];
        for (kind, value) in attrs(xdp) {
            let slot = match kind {
                IFLA_XDP_PROG_ID => 0,
                IFLA_XDP_DRV_PROG_ID => 1,
                IFLA_XDP_SKB_PROG_ID => 2,
                _ => continue,
            };
            ids[slot] = u32_at(value, 0).filter(|&id| id != 0);
        }
        ids.into_iter().flatten().next()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
            let mut v = Vec::new();
            v.extend_from_slice(&(4 + payload.len() as u16).to_ne_bytes());
            v.extend_from_slice(&kind.to_ne_bytes());
            v.extend_from_slice(payload);
            v.resize(v.len().next_multiple_of(4), 0);
            v
        }

        fn reply(attributes: &[u8]) -> Vec<u8> {
            let mut v = Vec::new();
            v.extend_from_slice(&(32 + attributes.len() as u32).to_ne_bytes());
            v.extend_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
            v.extend_from_slice(&[0; 10]);
            v.extend_from_slice(&[0; 16]);
            v.extend_from_slice(attributes);
            v
        }

        #[test]
        fn the_program_id_is_read_from_the_nested_xdp_attribute() {
            let xdp = [attr(2, &[1]), attr(IFLA_XDP_PROG_ID, &42u32.to_ne_bytes())].concat();
            let msg = reply(&[attr(3, b"veth0\0"), attr(IFLA_XDP | 0x8000, &xdp)].concat());
            assert_eq!(parse_link_reply(&msg), Some(42));
            let skb_only = attr(IFLA_XDP, &attr(IFLA_XDP_SKB_PROG_ID, &7u32.to_ne_bytes()));
            assert_eq!(parse_link_reply(&reply(&skb_only)), Some(7));
            let none = attr(IFLA_XDP, &attr(2, &[0]));
            assert_eq!(parse_link_reply(&reply(&none)), None);
            assert_eq!(parse_link_reply(&reply(&attr(3, b"lo\0"))), None);
            assert_eq!(parse_link_reply(&msg[..20]), None, "short");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(seen: u64, sampled: u64, ring_drops: u64) -> DirectionStats {
        DirectionStats {
            seen,
            sampled,
            ring_drops,
            ..Default::default()
        }
    }

    fn sum(report: &[InterfaceStats]) -> [DirectionStats; 2] {
        let mut t = [DirectionStats::default(); 2];
        for i in report {
            for (t, d) in t.iter_mut().zip(&i.directions) {
                t.add(d);
            }
        }
        t
    }

    #[test]
    fn per_interface_counters_add_up_to_the_slots_across_owners() {
        let mut b = SlotBook::default();
        let zero = [DirectionStats::default(); 2];
        let s1 = b.take().unwrap();
        b.start(s1, "veth1".into(), zero);
        let s2 = b.take().unwrap();
        b.start(s2, "veth2".into(), zero);
        assert_eq!((s1, s2, b.used()), (1, 2, 3), "slot 0 is never given out");
        // veth1 counts 10 ingress, 4 egress; veth2 5; 1 packet on an interface without a slot.
        let mut raw = vec![
            [d(1, 1, 0), d(0, 0, 0)],
            [d(10, 2, 1), d(4, 1, 0)],
            [d(5, 1, 0), d(0, 0, 0)],
        ];
        // veth1 goes; 2 of its packets were in flight; veth3 gets its slot.
        b.release(s1);
        raw[1][0] = d(12, 3, 1);
        let s3 = b.take().unwrap();
        assert_eq!(s3, s1, "a slot given back is reused");
        b.start(s3, "veth3".into(), raw[1]);
        raw[1][0] = d(20, 4, 1);
        let r = b.report(&raw);
        let names: Vec<&str> = r.iter().map(|i| &*i.interface).collect();
        assert_eq!(names, ["other", "veth1", "veth2", "veth3"]);
        assert_eq!(r[1].directions, [d(12, 3, 1), d(4, 1, 0)]);
        assert_eq!(r[3].directions, [d(8, 1, 0), d(0, 0, 0)]);
        let mut total = [DirectionStats::default(); 2];
        for slot in &raw {
            for (t, x) in total.iter_mut().zip(slot) {
                t.add(x);
            }
        }
        assert_eq!(sum(&r), total);
        // A name that comes back adds to what it had.
        b.release(s3);
        let s = b.take().unwrap();
        b.start(s, "veth1".into(), raw[1]);
        raw[1][0] = d(21, 4, 1);
        let r = b.report(&raw);
        assert_eq!(
            r.iter()
                .find(|i| &*i.interface == "veth1")
                .unwrap()
                .directions[0],
            d(13, 3, 1)
        );
        assert_eq!(sum(&r), {
            let mut t = total;
            t[0].seen += 1;
            t
        });
    }

    #[test]
    fn map_sizes_shrink_what_the_mode_does_not_use() {
        let mut cfg = CaptureConfig {
            interfaces: vec![],
            mode: XdpMode::Auto,
            sample_rate: 1,
            snaplen: 192,
            ring_bytes: 8 << 20,
            directions: Directions::Ingress,
            ingress_hook: IngressHook::Xdp,
            tc_attach: TcAttach::Auto,
            packets: true,
            flows: None,
        };
        let page = page_size();
        let s = MapSizes::of(&cfg);
        assert_eq!((s.mode, s.samples_bytes), (MODE_PACKETS, 8 << 20));
        assert_eq!((s.flow_entries, s.events_bytes), (1, page));
        cfg.flows = Some(FlowsConfig {
            max_entries: 100_000,
            prefix: None,
            events_bytes: None,
        });
        let s = MapSizes::of(&cfg);
        assert_eq!(s.mode, MODE_PACKETS | MODE_FLOWS);
        // 100 000 events of 80 bytes: 8 MB, rounded up to a power of two.
        assert_eq!((s.flow_entries, s.events_bytes), (100_000, 8 << 20));
        cfg.packets = false;
        let s = MapSizes::of(&cfg);
        assert_eq!((s.mode, s.samples_bytes), (MODE_FLOWS, page));
        cfg.flows = Some(FlowsConfig {
            max_entries: 10,
            prefix: Some(0),
            events_bytes: None,
        });
        assert_eq!(MapSizes::of(&cfg).events_bytes, 1 << 20, "at least 1 MiB");
        cfg.flows = Some(FlowsConfig {
            max_entries: u32::MAX,
            prefix: Some(0),
            events_bytes: None,
        });
        assert_eq!(MapSizes::of(&cfg).events_bytes, 64 << 20, "at most 64 MiB");
        assert!(MapSizes::of(&cfg).events_bytes.is_power_of_two());
        // The test hook: a ring of its own size, at least a page.
        cfg.flows = Some(FlowsConfig {
            max_entries: 16,
            prefix: Some(0),
            events_bytes: Some(100),
        });
        assert_eq!(MapSizes::of(&cfg).events_bytes, page);
    }

    #[test]
    fn slots_run_out_and_other_is_shown_only_when_it_counted() {
        let mut b = SlotBook::default();
        let taken: Vec<u32> = std::iter::from_fn(|| b.take()).collect();
        assert_eq!(taken.len() as u32, IF_SLOTS - 1);
        assert_eq!(b.take(), None);
        b.put_back(7);
        assert_eq!(b.take(), Some(7));
        let raw = vec![[DirectionStats::default(); 2]; b.used() as usize];
        assert!(
            b.report(&raw).is_empty(),
            "nothing started, nothing counted"
        );
    }
}
