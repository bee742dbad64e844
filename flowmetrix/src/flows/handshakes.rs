//! TCP handshakes seen from the collector: live, the kernel's states
//! (`flowmetrix-ebpf/src/handshake.rs`) read at every interval ([`HandshakeMap`]); in a
//! replay, the same state machine ([`flowmetrix_common::handshake::step`]) run here on the
//! frames ([`Tracker`]). Both read their states the same way ([`Reports`]) and hand
//! [`Handshake`]s to the interval's [`Health`]: a completed attempt's latency (the state is
//! then removed), an open attempt's SYN retransmits as they come (so an attempt that never
//! completes still shows them on its row), and attempts idle too long removed.

use std::collections::{HashMap, HashSet};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use flowmetrix_common::{
    flow_key::FlowKey,
    handshake::{
        DEFAULT_HANDSHAKE_MAX_ENTRIES, HANDSHAKE_MAP, HANDSHAKE_STATS_MAP, HandshakeState,
        HandshakeStats, Segment, Step, connection_of, report, step,
    },
};

use super::{
    bpf::{BatchMap, CallError, FIRST_BATCH},
    health::{Handshake, Health},
};

#[derive(Debug, thiserror::Error)]
pub enum HandshakeMapError {
    #[error("map {0} has an unexpected type")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error("reading the handshake counters failed")]
    Read(#[source] aya::maps::MapError),
    #[error("reading the handshake map failed")]
    States(#[source] CallError),
}

/// What the collector has reported of each open attempt: its SYN retransmits so far.
#[derive(Debug, Default)]
pub struct Reports {
    reported: HashMap<FlowKey, u32>,
}

impl Reports {
    /// Reads `state` (connection `key`) at `now`: what is new goes to `out`. Whether the
    /// state is to be removed.
    pub fn read(
        &mut self,
        key: &FlowKey,
        state: &HandshakeState,
        now: u64,
        out: &mut Vec<(FlowKey, Handshake)>,
    ) -> bool {
        let before = self.reported.get(key).copied().unwrap_or(0);
        let r = report(state, before, now);
        if r.us.is_some() || r.syn_retransmits > 0 {
            out.push((
                *key,
                Handshake {
                    us: r.us,
                    syn_retransmits: r.syn_retransmits,
                },
            ));
        }
        if r.remove {
            self.reported.remove(key);
        } else {
            self.reported.insert(*key, state.syn_retransmits);
        }
        r.remove
    }

    /// Forgets attempts whose state is gone (`keep` says which are still there).
    fn retain(&mut self, keep: impl Fn(&FlowKey) -> bool) {
        self.reported.retain(|k, _| keep(k));
    }
}

/// The kernel's handshake states and counters.
pub struct HandshakeMap {
    states: BatchMap<FlowKey, HandshakeState>,
    stats: PerCpuArray<MapData, HandshakeStats>,
    reports: Reports,
}

/// The tracking's counters, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeTotals {
    pub started: u64,
    pub completed: u64,
    /// SYNs the full state map could not take (those attempts are not measured).
    pub full: u64,
    pub ack_lookups: u64,
}

impl HandshakeMap {
    /// Takes the state map and counters out of a loaded object (`None`: an object without
    /// them).
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Option<Self>, HandshakeMapError> {
        let (Some(states), Some(stats)) = (
            ebpf.take_map(HANDSHAKE_MAP),
            ebpf.take_map(HANDSHAKE_STATS_MAP),
        ) else {
            return Ok(None);
        };
        Ok(Some(Self {
            states: BatchMap::new(states, FIRST_BATCH)
                .map_err(|e| HandshakeMapError::Map(HANDSHAKE_MAP, e))?,
            stats: PerCpuArray::try_from(stats)
                .map_err(|e| HandshakeMapError::Map(HANDSHAKE_STATS_MAP, e))?,
            reports: Reports::default(),
        }))
    }

    /// Reads every state (boot-time clock `now`): what is new, for [`Health::handshake`].
    /// Removes completed, reset and idle attempts. Blocking (system calls): a few batch
    /// calls an interval (`BPF_MAP_LOOKUP_BATCH`, `BPF_MAP_DELETE_BATCH`), or, where the
    /// kernel refuses them, two calls a state and one more for each removed.
    pub fn collect(&mut self, now: u64) -> Result<Vec<(FlowKey, Handshake)>, HandshakeMapError> {
        let mut states = Vec::new();
        self.states
            .read(&mut states)
            .map_err(HandshakeMapError::States)?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (key, state) in &states {
            if self.reports.read(key, state, now, &mut out) {
                gone.push(*key);
            }
        }
        // A new attempt on a key read as finished may have started since: it goes too (a
        // missing figure, never a wrong one).
        self.states
            .delete(&gone)
            .map_err(HandshakeMapError::States)?;
        let live: HashSet<FlowKey> = states.into_iter().map(|(k, _)| k).collect();
        self.reports.retain(|k| live.contains(k));
        Ok(out)
    }

    /// Reads one state at a time from now on, as on a kernel that refuses batch calls (for
    /// tests of that path).
    #[doc(hidden)]
    pub fn without_batch_calls(&mut self) {
        self.states.without_batch_calls();
    }

    /// The kernel's counters, summed over CPUs.
    pub fn totals(&self) -> Result<HandshakeTotals, HandshakeMapError> {
        let per_cpu = self.stats.get(&0, 0).map_err(HandshakeMapError::Read)?;
        Ok(per_cpu
            .iter()
            .fold(HandshakeTotals::default(), |t, s| HandshakeTotals {
                started: t.started + s.started,
                completed: t.completed + s.completed,
                full: t.full + s.full,
                ack_lookups: t.ack_lookups + s.ack_lookups,
            }))
    }
}

/// CLOCK_BOOTTIME now, in ns (the programs' clock).
pub fn boot_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// A replay's handshake states, as the kernel keeps them, bounded as the kernel's map.
#[derive(Debug)]
pub struct Tracker {
    states: HashMap<FlowKey, HandshakeState>,
    reports: Reports,
    max: usize,
    /// SYNs that found the states full.
    pub full: u64,
}

impl Default for Tracker {
    fn default() -> Self {
        Self {
            states: HashMap::new(),
            reports: Reports::default(),
            max: DEFAULT_HANDSHAKE_MAX_ENTRIES as usize,
            full: 0,
        }
    }
}

impl Tracker {
    /// A TCP segment with `flags`, keyed `key` as the flow path keyed it, at `now`. A
    /// replay knows no sockets: every segment is seen from the path (SYN → ACK). An
    /// answer (SYN-ACK, RST) whose connection is not known the other direction is looked
    /// for in its own (files without directions).
    pub fn segment(&mut self, key: &FlowKey, flags: u8, now: u64) {
        if key.protocol != 6 {
            return;
        }
        match Segment::of(flags) {
            seg @ (Segment::Syn | Segment::Ack) => self.on(key, seg, true, now),
            seg @ Segment::SynAck => self.on(key, seg, false, now),
            seg @ Segment::Rst => {
                self.on(key, seg, true, now);
                self.on(key, seg, false, now);
            }
            Segment::Other => {}
        }
    }

    fn on(&mut self, key: &FlowKey, seg: Segment, forward: bool, now: u64) {
        let mut conn = connection_of(key, forward);
        // A file without directions (a classic pcap: all "ingress") has both ways of a
        // connection in one direction: the reversed key keeps it then.
        if !forward && !self.states.contains_key(&conn) {
            conn.direction = key.direction;
        }
        match step(self.states.get(&conn), seg, forward, now, false) {
            Step::Keep => {}
            Step::Update(n) => {
                self.states.insert(conn, n);
            }
            Step::Insert(n) if self.states.len() < self.max => {
                self.states.insert(conn, n);
            }
            Step::Insert(_) => self.full += 1,
        }
    }

    /// The end of an interval at `now`: what is new goes to `health`, as live.
    pub fn report(&mut self, now: u64, health: &mut Health) {
        let reports = &mut self.reports;
        let mut out = Vec::new();
        self.states
            .retain(|key, state| !reports.read(key, state, now, &mut out));
        let states = &self.states;
        reports.retain(|k| states.contains_key(k));
        for (key, h) in out {
            health.handshake(key, h);
        }
    }
}

#[cfg(test)]
mod tests {
    use flowmetrix_common::handshake::{TCP_ACK, TCP_RST, TCP_SYN};

    use super::*;
    use crate::{flows::Parts, metrics::FlowCounters, record::FlowHealth};

    const MS: u64 = 1_000_000;

    fn key(src: ([u8; 4], u16), dst: ([u8; 4], u16), direction: u8) -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.src_addr[..4].copy_from_slice(&src.0);
        k.dst_addr[..4].copy_from_slice(&dst.0);
        k.src_port = src.1;
        k.dst_port = dst.1;
        k.ifindex = 3;
        k.direction = direction;
        k.ether_type = 0x0800;
        k.protocol = 6;
        k
    }

    const C: ([u8; 4], u16) = ([10, 0, 0, 1], 40_000);
    const S: ([u8; 4], u16) = ([10, 0, 0, 2], 80);

    fn health() -> Health {
        Health::new(Parts {
            handshakes: true,
            ..Parts::default()
        })
    }

    #[test]
    fn a_replay_reports_latency_once_and_retransmits_as_they_come() {
        let (fwd, back) = (key(C, S, 0), key(S, C, 1));
        let mut t = Tracker::default();
        let mut h = health();
        t.segment(&fwd, TCP_SYN, 0);
        t.segment(&fwd, TCP_SYN, 1000 * MS);
        t.report(1500 * MS, &mut h);
        assert_eq!(
            h.fill(&fwd),
            FlowHealth {
                tcp_syn_retransmits: Some(1),
                ..FlowHealth::default()
            }
        );
        t.segment(&fwd, TCP_SYN, 3000 * MS);
        t.segment(&back, TCP_SYN | TCP_ACK, 3040 * MS);
        t.segment(&fwd, TCP_ACK, 3090 * MS);
        // Data after the handshake changes nothing.
        t.segment(&fwd, TCP_ACK, 3100 * MS);
        t.report(3500 * MS, &mut h);
        let f = h.fill(&fwd);
        assert_eq!(
            (f.tcp_handshake_us, f.tcp_syn_retransmits),
            (Some(90_000), Some(1))
        );
        assert!(t.states.is_empty() && t.reports.reported.is_empty());
        t.report(4500 * MS, &mut h);
        assert_eq!(h.fill(&fwd).tcp_syn_retransmits, Some(0));
        h.finish(&FlowCounters::default());
    }

    #[test]
    fn a_reset_attempt_reports_its_retransmits_and_goes() {
        let (fwd, back) = (key(C, S, 0), key(S, C, 1));
        let mut t = Tracker::default();
        let mut h = health();
        t.segment(&fwd, TCP_SYN, 0);
        t.segment(&fwd, TCP_SYN, 1000 * MS);
        t.segment(&back, TCP_RST | TCP_ACK, 1001 * MS);
        t.report(1500 * MS, &mut h);
        let f = h.fill(&fwd);
        assert_eq!((f.tcp_handshake_us, f.tcp_syn_retransmits), (None, Some(1)));
        assert!(t.states.is_empty());
    }

    #[test]
    fn a_full_tracker_counts_and_measures_nothing_wrong() {
        let mut t = Tracker {
            max: 1,
            ..Tracker::default()
        };
        let (a, mut b) = (key(C, S, 0), key(C, S, 0));
        b.src_port = 40_001;
        t.segment(&a, TCP_SYN, 0);
        t.segment(&b, TCP_SYN, 0);
        t.segment(&b, TCP_ACK, 10 * MS);
        assert_eq!((t.full, t.states.len()), (1, 1));
        let mut h = health();
        t.report(20 * MS, &mut h);
        assert_eq!(h.fill(&b).tcp_handshake_us, None);
    }
}
