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
//!
//! With `--tcp-health` (flows mode) two raw tracepoint programs are loaded and attached at
//! load time too, when the kernel allows (`tcp_health.rs`: one line says what is off if not).

mod config;
mod counters;
mod drops;
mod error;
mod iface;
mod load;
mod owner;
mod slots;
mod stale;
mod tc;
mod tcp_health;
mod xdp;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{SchedClassifier, Xdp, links::FdLink, tc::SchedClassifierLink},
    util::KernelVersion,
};
use std::{collections::BTreeMap, sync::Arc};

pub use counters::CounterReader;
pub use drops::{DROP_MAX_ENTRIES_ENV, DROPS_BTF_ENV, DropProbeError};

use flowmetrix_common::drops::{DROP_MAPS, DROP_OFFSETS_GLOBAL, DROP_SKIP_GLOBAL};
use flowmetrix_common::flow_key::{FLOW_EVENTS_MAP, FLOW_MAPS, MODE_GLOBAL};
use flowmetrix_common::handshake::{HANDSHAKE_MAP, HANDSHAKES_GLOBAL};
use flowmetrix_common::tcp::{TCP_OFFSETS_GLOBAL, TCP_RETRANSMIT_ERR_GLOBAL, TCP_SOCKET_MAPS};
use flowmetrix_common::{
    DNS_PORTS_GLOBAL, IF_SLOT_MAP, MAX_IFINDEX, PROGRAM_NAME, SAMPLE_RATE_GLOBAL, SAMPLES_MAP,
    SNAPLEN_GLOBAL, STATS_MAP, WAKEUP_BYTES_GLOBAL,
};
use tracing::{debug, info, warn};

use crate::flows::{kernel::FlowMaps, tcp::TcpSockets};
use crate::metrics::{InterfaceStats, KernelStats};

pub use config::{
    CaptureConfig, Directions, FlowsConfig, IngressHook, MapSizes, TcAttach, XdpMode,
};
pub use error::CaptureError;
pub use iface::{if_index, if_is_up};
pub use load::EbpfLogger;
pub use slots::{OTHER, SlotBook};
pub use tcp_health::TCP_HEALTH_BTF_ENV;

use load::{load_error, load_program, raise_memlock_limit};
use tc::{attach_tc, tc_hooks};
use xdp::attach_xdp;

/// What `cfg` loads, for an error message: "XDP program", "TC programs" or both.
fn programs_of(cfg: &CaptureConfig) -> &'static str {
    let xdp = cfg.directions.ingress() && cfg.ingress_hook == IngressHook::Xdp;
    match (xdp, tc_hooks(cfg).is_empty()) {
        (true, true) => "XDP program",
        (true, false) => "XDP and TC programs",
        (false, _) => "TC programs",
    }
}

/// The loaded programs, and the interfaces they are attached to.
pub struct Capture {
    ebpf: Ebpf,
    cfg: CaptureConfig,
    attached: BTreeMap<u32, Attached>,
    logger: Option<EbpfLogger>,
    /// The counters map and the interfaces' slots in it.
    counters: CounterReader,
    slot_of: Array<MapData, u32>,
    /// The flow maps, until taken (`--mode flows|both`).
    flow_maps: Option<FlowMaps>,
    /// The socket maps, until taken (`--tcp-health`, when the kernel lets it run).
    tcp_sockets: Option<TcpSockets>,
    /// The drop program's maps, until taken (`--drops on`, when the probe passed).
    drop_maps: Option<crate::flows::drops::DropMaps>,
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
        let dns_ports = cfg
            .flows
            .map_or([0; flowmetrix_common::DNS_PORTS], |f| f.dns_ports);
        let tcp = tcp_health::Probe::new(cfg);
        // Drops by reason: what the program needs from the kernel's BTF, read first (its
        // globals are set at load).
        let drop_plan = cfg
            .flows
            .filter(|f| f.drops)
            .map(|_| drops::plan(&drops::btf_path()));
        // The drop maps take the kernel's minimum when the part does not run.
        let (drop_offsets, drop_skip, drop_entries) = match &drop_plan {
            Some(Ok(p)) => (p.offsets, p.skip, drops::max_entries()),
            _ => (Default::default(), Default::default(), 1),
        };
        let mut ebpf = EbpfLoader::new()
            .override_global(DROP_OFFSETS_GLOBAL, &drop_offsets, true)
            .override_global(DROP_SKIP_GLOBAL, &drop_skip, true)
            .override_global(DNS_PORTS_GLOBAL, &dns_ports, true)
            .override_global(SAMPLE_RATE_GLOBAL, &cfg.sample_rate, true)
            .override_global(SNAPLEN_GLOBAL, &cfg.snaplen, true)
            .override_global(WAKEUP_BYTES_GLOBAL, &(cfg.ring_bytes / 4), true)
            .override_global(MODE_GLOBAL, &sizes.mode, true)
            .override_global(
                HANDSHAKES_GLOBAL,
                &u32::from(cfg.flows.is_some_and(|f| f.handshakes)),
                true,
            )
            .map_max_entries(HANDSHAKE_MAP, sizes.handshake_entries)
            .map_max_entries(SAMPLES_MAP, sizes.samples_bytes)
            .map_max_entries(FLOW_MAPS[0], sizes.flow_entries)
            .map_max_entries(FLOW_MAPS[1], sizes.flow_entries)
            .map_max_entries(FLOW_EVENTS_MAP, sizes.events_bytes)
            .override_global(TCP_OFFSETS_GLOBAL, &tcp.hooks().offsets, true)
            .override_global(
                TCP_RETRANSMIT_ERR_GLOBAL,
                &u32::from(tcp.hooks().retransmit_err),
                true,
            )
            .map_max_entries(TCP_SOCKET_MAPS[0], tcp.map_entries())
            .map_max_entries(TCP_SOCKET_MAPS[1], tcp.map_entries())
            .map_max_entries(DROP_MAPS[0], drop_entries)
            .map_max_entries(DROP_MAPS[1], drop_entries)
            .load(crate::kernel_object::object().map_err(|e| load_error(programs_of(cfg), e))?)
            .map_err(|e| load_error(programs_of(cfg), e))?;
        // Generation 0 and the prefix are set before any program is attached.
        let flow_maps = match cfg.flows {
            Some(f) => Some(FlowMaps::from_ebpf(&mut ebpf, f.prefix).map_err(CaptureError::Flows)?),
            None => None,
        };
        let tcp_sockets = tcp.start(&mut ebpf);
        let drop_maps = drop_plan.and_then(|plan| {
            plan.and_then(|p| drops::start(&mut ebpf, p))
                .inspect_err(|e| warn!("{}", drops::off_line(e)))
                .ok()
        });
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
            counters: CounterReader::new(stats),
            slot_of,
            flow_maps,
            tcp_sockets,
            drop_maps,
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
        // Taken and started under one lock: a scrape never sees a slot half given.
        let taken = {
            let mut k = self.counters.lock();
            match k.book.take() {
                Some(slot) if ifindex < MAX_IFINDEX => {
                    let now = k.read_slot(slot)?;
                    k.book.start(slot, Arc::clone(&name), now);
                    Ok(slot)
                }
                other => {
                    if let Some(slot) = other {
                        k.book.put_back(slot);
                    }
                    Err(())
                }
            }
        };
        let slot = match taken {
            Ok(slot) => {
                // Set before attaching, so that the first packet already counts in it.
                if let Err(e) = self.slot_of.set(ifindex, slot, 0) {
                    warn!(interface = %name, "cannot give the interface its counters: {e}");
                }
                slot
            }
            Err(()) => {
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
                let (link, how) = attach_tc(
                    &mut self.ebpf,
                    &self.cfg,
                    &name,
                    ifindex,
                    program,
                    kind,
                    direction,
                )?;
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
        self.counters.lock().book.release(slot);
    }

    /// The interfaces attached to: ifindex and name.
    pub fn attached(&self) -> impl Iterator<Item = (u32, &Arc<str>)> {
        self.attached.iter().map(|(i, a)| (*i, &a.name))
    }

    /// The name of interface `ifindex`, if attached to.
    pub fn name_of(&self, ifindex: u32) -> Option<Arc<str>> {
        self.attached.get(&ifindex).map(|a| Arc::clone(&a.name))
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

    /// The socket maps (once), when `--tcp-health` runs.
    pub fn take_tcp_sockets(&mut self) -> Option<TcpSockets> {
        self.tcp_sockets.take()
    }

    /// The drop program's maps (once), when `--drops on` and the probe passed.
    pub fn take_drop_maps(&mut self) -> Option<crate::flows::drops::DropMaps> {
        self.drop_maps.take()
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
        self.counters.read()
    }

    /// A reader of the same counters for another task (a `/metrics` scrape reads them
    /// fresh, after the userspace counters, so that the page's numbers add up).
    pub fn counter_reader(&self) -> CounterReader {
        self.counters.clone()
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
