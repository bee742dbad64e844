//! The embedded object (`flowmetrix::kernel_object`) loaded into this process with chosen
//! settings, and one of its programs (XDP or TC) run on frames with BPF_PROG_TEST_RUN: no
//! interface, nothing attached.
//! The kernel tests (`tests/root_kernel/`) and the kernel bench (`benches/kernel.rs`) share it.
//! Needs root (CAP_BPF).

use std::time::Duration;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{SchedClassifier, TestRun as _, TestRunOptions, TestRunResult, Xdp},
};
use flowmetrix::{flows::kernel::FlowMaps, kernel_object};
use flowmetrix_common::{
    CpuStats, DEFAULT_SNAPLEN, Direction, IF_SLOT_MAP, PROGRAM_NAME, SAMPLE_RATE_GLOBAL,
    SAMPLES_MAP, SNAPLEN_GLOBAL, STATS_MAP, TC_BASELINE_PROGRAM_NAME, TC_EGRESS_PROGRAM_NAME,
    TC_INGRESS_PROGRAM_NAME, WAKEUP_BYTES_GLOBAL,
    flow_key::{FLOW_EVENTS_MAP, FLOW_MAPS, MODE_FLOWS, MODE_GLOBAL, MODE_PACKETS},
    handshake::{DEFAULT_HANDSHAKE_MAX_ENTRIES, HANDSHAKE_MAP, HANDSHAKES_GLOBAL},
};

/// Whether program `name` of the object is a TC (sched_cls) program; else it is XDP.
pub fn is_tc(name: &str) -> bool {
    [
        TC_INGRESS_PROGRAM_NAME,
        TC_EGRESS_PROGRAM_NAME,
        TC_BASELINE_PROGRAM_NAME,
    ]
    .contains(&name)
}

/// The load-time settings userspace gives the program (what `capture` sets from the flags).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Which program of the object: [`PROGRAM_NAME`], a TC program or a do-nothing baseline.
    pub program: &'static str,
    pub sample_rate: u32,
    pub snaplen: u32,
    /// Bytes of ring buffer (a power-of-two multiple of the page size).
    pub ring_bytes: u32,
    pub wakeup_bytes: u32,
    /// `MODE` bits ([`MODE_PACKETS`], [`MODE_FLOWS`]).
    pub mode: u32,
    /// Entries of each flow map, bytes of the flow-event ring, the prefix (flows mode).
    pub flow_entries: u32,
    pub event_bytes: u32,
    pub prefix: Option<u32>,
    /// Another build of the kernel programs to load instead of the embedded one (the
    /// kernel bench's before/after runs); None: the embedded object.
    pub object: Option<&'static [u8]>,
    /// The TCP handshake tracking (`HANDSHAKES_ON`), and its state map's entries.
    pub handshakes: bool,
    pub handshake_entries: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            program: PROGRAM_NAME,
            sample_rate: 1,
            snaplen: DEFAULT_SNAPLEN,
            ring_bytes: 4 << 20,
            // Never wake: nobody waits on the ring here.
            wakeup_bytes: u32::MAX,
            mode: MODE_PACKETS,
            flow_entries: 1024,
            event_bytes: 1 << 20,
            prefix: Some(0),
            object: None,
            handshakes: true,
            handshake_entries: DEFAULT_HANDSHAKE_MAX_ENTRIES,
        }
    }
}

/// What one BPF_PROG_TEST_RUN call gives back.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// The program's return value (XDP: 2 is XDP_PASS; TC: u32::MAX is TC_ACT_UNSPEC).
    pub action: u32,
    /// Mean time per repetition, as the kernel measured it.
    pub per_run: Duration,
}

/// The loaded program with its ring buffer and counters.
pub struct Loaded {
    ebpf: Ebpf,
    program: &'static str,
    ring: RingBuf<MapData>,
    /// None for another build whose counters have another layout (the bench's before
    /// object): it can be timed, not counted.
    stats: Option<PerCpuArray<MapData, CpuStats>>,
    /// The flow maps (until taken; in `packets` mode, of one entry each).
    pub flows: Option<FlowMaps>,
}

/// The kernel's per-CPU counters, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub seen: u64,
    pub sampled: u64,
    pub ring_full: u64,
}

impl Loaded {
    pub fn load(s: Settings) -> Self {
        let flows = s.mode & MODE_FLOWS != 0;
        let mut ebpf = EbpfLoader::new()
            .override_global(SAMPLE_RATE_GLOBAL, &s.sample_rate, true)
            .override_global(SNAPLEN_GLOBAL, &s.snaplen, true)
            .override_global(WAKEUP_BYTES_GLOBAL, &s.wakeup_bytes, true)
            .override_global(MODE_GLOBAL, &s.mode, true)
            // Not in objects built before the tracking (the bench's before runs).
            .override_global(HANDSHAKES_GLOBAL, &u32::from(s.handshakes), false)
            .map_max_entries(HANDSHAKE_MAP, s.handshake_entries)
            .map_max_entries(SAMPLES_MAP, s.ring_bytes)
            .map_max_entries(FLOW_MAPS[0], if flows { s.flow_entries } else { 1 })
            .map_max_entries(FLOW_MAPS[1], if flows { s.flow_entries } else { 1 })
            .map_max_entries(FLOW_EVENTS_MAP, if flows { s.event_bytes } else { 4096 })
            .load(s.object.unwrap_or_else(|| {
                kernel_object::object().expect("the kernel programs (--features ebpf)")
            }))
            .expect("load the XDP object (needs root)");
        // Built in every mode: in `packets` mode the programs never touch them.
        let flows = Some(FlowMaps::from_ebpf(&mut ebpf, s.prefix).expect("flow maps"));
        let ring = ebpf.take_map(SAMPLES_MAP).expect("the SAMPLES map");
        let ring = RingBuf::try_from(ring).expect("SAMPLES is a ring buffer");
        // Looked at in place first: a map taken out and dropped would leave the program
        // pointing at a closed map.
        let fits = PerCpuArray::<_, CpuStats>::try_from(ebpf.map(STATS_MAP).expect("STATS"))
            .map_err(|e| assert!(s.object.is_some(), "STATS of CpuStats: {e}"))
            .is_ok();
        let stats = fits.then(|| {
            let map = ebpf.take_map(STATS_MAP).expect("the STATS map");
            PerCpuArray::try_from(map).expect("STATS is a per-CPU array")
        });
        let prog = ebpf
            .program_mut(s.program)
            .expect("the program is in the object");
        if is_tc(s.program) {
            let prog: &mut SchedClassifier = prog.try_into().expect("a TC program");
            prog.load().expect("the verifier accepts the program");
        } else {
            let prog: &mut Xdp = prog.try_into().expect("an XDP program");
            prog.load().expect("the verifier accepts the program");
        }
        Self {
            ebpf,
            program: s.program,
            ring,
            stats,
            flows,
        }
    }

    /// Gives interface `ifindex` counter slot `slot` (what userspace does when it attaches).
    pub fn set_slot(&mut self, ifindex: u32, slot: u32) {
        let map = self.ebpf.map_mut(IF_SLOT_MAP).expect("the IFSLOT map");
        let mut slots: Array<&mut MapData, u32> = Array::try_from(map).expect("IFSLOT is an array");
        slots.set(ifindex, slot, 0).expect("set a slot");
    }

    /// The loaded program's size after the verifier: (BPF instructions, JITed bytes).
    pub fn sizes(&self) -> (u32, u32) {
        let info = self
            .ebpf
            .program(self.program)
            .expect("loaded above")
            .info()
            .expect("program info");
        (info.size_translated().unwrap_or(0) / 8, info.size_jitted())
    }

    /// The flow maps (not taken).
    pub fn flow_maps(&mut self) -> &mut FlowMaps {
        self.flows.as_mut().expect("loaded in flows mode")
    }

    /// Every counter of both directions, summed over CPUs (the flow ones included).
    fn stats(&self) -> &PerCpuArray<MapData, CpuStats> {
        self.stats
            .as_ref()
            .expect("the counters of a build with this CpuStats layout")
    }

    pub fn cpu_stats(&self) -> CpuStats {
        let mut t = CpuStats::default();
        for d in [Direction::Ingress, Direction::Egress] {
            for c in self.stats().get(&(d as u32), 0).expect("read STATS").iter() {
                t.seen += c.seen;
                t.sampled += c.sampled;
                t.ring_full += c.ring_full;
                t.flow_unkeyed += c.flow_unkeyed;
                t.flow_unkeyed_bytes += c.flow_unkeyed_bytes;
                t.flow_events += c.flow_events;
                t.flow_overflow += c.flow_overflow;
                t.flow_overflow_bytes += c.flow_overflow_bytes;
                t.dns_copies += c.dns_copies;
                t.dns_ring_full += c.dns_ring_full;
            }
        }
        t
    }

    /// Runs the program `repeat` times on `frame`.
    pub fn run(&self, frame: &[u8], repeat: u32) -> Run {
        let prog = self.ebpf.program(self.program).expect("loaded above");
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        let result: Result<TestRunResult, _> = if is_tc(self.program) {
            let prog: &SchedClassifier = prog.try_into().expect("a TC program");
            prog.test_run(opts)
        } else {
            let prog: &Xdp = prog.try_into().expect("an XDP program");
            prog.test_run(opts)
        };
        let result =
            result.unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on {} bytes: {e}", frame.len()));
        Run {
            action: result.return_value,
            per_run: result.duration,
        }
    }

    /// Every record waiting in the ring, in order, copied out (the ring is then empty).
    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            out.push(item.to_vec());
        }
        out
    }

    /// The counters of both directions added up.
    pub fn counters(&self) -> Counters {
        let (i, e) = (
            self.counters_of(Direction::Ingress),
            self.counters_of(Direction::Egress),
        );
        Counters {
            seen: i.seen + e.seen,
            sampled: i.sampled + e.sampled,
            ring_full: i.ring_full + e.ring_full,
        }
    }

    /// The counters of one direction.
    pub fn counters_of(&self, d: Direction) -> Counters {
        let per_cpu = self.stats().get(&(d as u32), 0).expect("read STATS");
        per_cpu.iter().fold(Counters::default(), |acc, c| Counters {
            seen: acc.seen + c.seen,
            sampled: acc.sampled + c.sampled,
            ring_full: acc.ring_full + c.ring_full,
        })
    }
}
