//! TCP handshakes seen from the collector: live, the kernel's states
//! (`flowmetrix-ebpf/src/handshake.rs`) read at every interval ([`HandshakeMap`]); in a
//! replay, the same state machine ([`flowmetrix_common::handshake::step`]) run here on the
//! frames ([`Tracker`]). Both read their states the same way ([`Reports`]) and hand
//! [`Handshake`]s to the interval's [`Health`]: a completed attempt's latency (the state is
//! then removed), an open attempt's SYN retransmits as they come (so an attempt that never
//! completes still shows them on its row), and attempts idle too long removed.

use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray},
};
use flowmetrix_common::{
    flow_key::FlowKey,
    handshake::{
        DEFAULT_HANDSHAKE_MAX_ENTRIES, HANDSHAKE_MAP, HANDSHAKE_STATS_MAP, HandshakeState,
        HandshakeStats, Segment, Step, connection_of, report, step,
    },
};

use super::health::{Handshake, Health};

#[derive(Debug, thiserror::Error)]
pub enum HandshakeMapError {
    #[error("map {0} has an unexpected type")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error("reading the handshake map failed")]
    Read(#[source] aya::maps::MapError),
    #[error("reading the handshake map failed (batch calls)")]
    Batch(#[source] std::io::Error),
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
    states: BpfHashMap<MapData, FlowKey, HandshakeState>,
    stats: PerCpuArray<MapData, HandshakeStats>,
    reports: Reports,
    /// Whether the kernel takes batch calls on the map (until it refuses).
    batch: bool,
    /// The state map's descriptor (owned by `states`), for the batch calls.
    fd: i32,
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
        let fd = match &states {
            aya::maps::Map::HashMap(m) => {
                use std::os::fd::{AsFd as _, AsRawFd as _};
                m.fd().as_fd().as_raw_fd()
            }
            // Refused just below.
            _ => -1,
        };
        Ok(Some(Self {
            states: BpfHashMap::try_from(states)
                .map_err(|e| HandshakeMapError::Map(HANDSHAKE_MAP, e))?,
            stats: PerCpuArray::try_from(stats)
                .map_err(|e| HandshakeMapError::Map(HANDSHAKE_STATS_MAP, e))?,
            reports: Reports::default(),
            batch: true,
            fd,
        }))
    }

    /// Reads every state (boot-time clock `now`): what is new, for [`Health::handshake`].
    /// Removes completed, reset and idle attempts. Blocking (system calls): a few batch
    /// calls an interval (`BPF_MAP_LOOKUP_BATCH`, `BPF_MAP_DELETE_BATCH`), or, where the
    /// kernel refuses them, three calls a state.
    pub fn collect(&mut self, now: u64) -> Result<Vec<(FlowKey, Handshake)>, HandshakeMapError> {
        if self.batch {
            let fd = self.fd;
            match sys::read_all(fd) {
                Ok(states) => {
                    let mut out = Vec::new();
                    let mut gone = Vec::new();
                    for (key, state) in &states {
                        if self.reports.read(key, state, now, &mut out) {
                            gone.push(*key);
                        }
                    }
                    // A new attempt on a key read as finished may have started since: it
                    // goes too (a missing figure, never a wrong one).
                    sys::delete_all(fd, &gone).map_err(HandshakeMapError::Batch)?;
                    let live: std::collections::HashSet<FlowKey> =
                        states.into_iter().map(|(k, _)| k).collect();
                    self.reports.retain(|k| live.contains(k));
                    return Ok(out);
                }
                Err(None) => self.batch = false,
                Err(Some(e)) => return Err(HandshakeMapError::Batch(e)),
            }
        }
        let mut out = Vec::new();
        // Keys first: removing while walking would restart get-next-key.
        let keys = self
            .states
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(HandshakeMapError::Read)?;
        for key in &keys {
            // Gone meanwhile (never by the programs, which only insert and update).
            let Ok(state) = self.states.get(key, 0) else {
                continue;
            };
            if self.reports.read(key, &state, now, &mut out) {
                // A new attempt on the key could have started since the read: it is lost
                // (a missing figure, never a wrong one).
                let _ = self.states.remove(key);
            }
        }
        let live: std::collections::HashSet<FlowKey> = keys.into_iter().collect();
        self.reports.retain(|k| live.contains(k));
        Ok(out)
    }

    /// Reads one state at a time from now on, as on a kernel that refuses batch calls (for
    /// tests of that path).
    #[doc(hidden)]
    pub fn without_batch_calls(&mut self) {
        self.batch = false;
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

/// Batch reads and deletes of the state map (`bpf(2)` directly: aya has no batch calls).
mod sys {
    use std::io;

    use flowmetrix_common::{flow_key::FlowKey, handshake::HandshakeState};

    use super::super::bpf::{Attr, ENOTSUPP, bpf};

    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
    /// Entries a call reads at first; doubled when a hash bucket holds more.
    const BATCH: usize = 1024;
    const BATCH_MAX: usize = 1 << 16;

    fn refused(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EINVAL | libc::ENOTSUP | ENOTSUPP | libc::ENOSYS)
        )
    }

    /// Every entry of the map `fd`. `Err(None)`: the kernel takes no batch calls here.
    pub fn read_all(fd: i32) -> Result<Vec<(FlowKey, HandshakeState)>, Option<io::Error>> {
        let mut size = BATCH;
        let mut keys = vec![FlowKey::ZERO; size];
        let mut values = vec![HandshakeState::default(); size];
        let (mut out, mut from) = (Vec::new(), None::<u32>);
        loop {
            let mut in_batch = from.unwrap_or(0);
            let mut out_batch = 0u32;
            let mut attr: Attr = [0; 16];
            // attr.batch: in_batch, out_batch, keys, values, count | map_fd, elem_flags, flags.
            attr[0] = if from.is_some() {
                (&raw mut in_batch) as u64
            } else {
                0
            };
            attr[1] = (&raw mut out_batch) as u64;
            attr[2] = keys.as_mut_ptr() as u64;
            attr[3] = values.as_mut_ptr() as u64;
            attr[4] = size as u64 | (u64::from(fd as u32) << 32);
            let rc = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
            let count = ((attr[4] & 0xffff_ffff) as usize).min(size);
            out.extend(
                keys[..count]
                    .iter()
                    .copied()
                    .zip(values[..count].iter().copied()),
            );
            match rc {
                Ok(()) => from = Some(out_batch),
                Err(e) => match e.raw_os_error() {
                    Some(libc::ENOENT) => return Ok(out),
                    Some(libc::ENOSPC) if count == 0 && size < BATCH_MAX => {
                        size *= 2;
                        keys.resize(size, FlowKey::ZERO);
                        values.resize(size, HandshakeState::default());
                    }
                    _ if count == 0 && out.is_empty() && refused(&e) => return Err(None),
                    _ => return Err(Some(e)),
                },
            }
        }
    }

    /// Deletes `keys` from the map `fd` (a key already gone is skipped).
    pub fn delete_all(fd: i32, keys: &[FlowKey]) -> io::Result<()> {
        let mut rest = keys;
        while !rest.is_empty() {
            let mut attr: Attr = [0; 16];
            attr[2] = rest.as_ptr() as u64;
            attr[4] = rest.len() as u64 | (u64::from(fd as u32) << 32);
            let rc = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
            let done = ((attr[4] & 0xffff_ffff) as usize).min(rest.len());
            match rc {
                Ok(()) => return Ok(()),
                // Stopped at a key not there: skip it, go on after it.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    rest = &rest[(done + 1).min(rest.len())..];
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
