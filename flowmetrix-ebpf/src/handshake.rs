//! TCP handshakes (`--mode flows|both`, unless `HANDSHAKES_ON` is 0): the state machine of
//! [`flowmetrix_common::handshake`] run on the handshake segments the flow path keys.
//!
//! What a packet pays:
//! - not TCP, or tracking off: nothing (one compare);
//! - a SYN, SYN-ACK or RST: a lookup in `HANDSHAKES` (an RST: two, one each way), the
//!   step, and a write or an insert; the SYN also sets [`FLOW_AWAITS_ACK`] in its flow
//!   entry's flags (the same atomic or as its flags);
//! - a plain ACK: a lookup only when its flow entry awaits one (the bit is read from the
//!   entry the flow path already holds, then cleared) or when it made a new entry (the
//!   first packet of a generation: the SYN's entry may be in the other map); any other ACK
//!   reads one word more.
//!
//! A SYN that finds the map full is counted (`HSSTATS.full`), and its attempt is not
//! measured. Userspace reads and removes completed attempts every interval
//! (`flowmetrix/src/flows/handshakes.rs`).

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use flowmetrix_common::{
    flow_key::FlowKey,
    handshake::{
        DEFAULT_HANDSHAKE_MAX_ENTRIES, HandshakeState, HandshakeStats, PHASE_DONE, Segment, Step,
        connection_of, step,
    },
};

/// 1: track handshakes; 0: not (`--tcp-health off`). Set by userspace at load, as a
/// constant: the verifier drops the path when it is 0.
#[unsafe(no_mangle)]
static HANDSHAKES_ON: u32 = 1;

/// Open (and completed, until userspace reads them) attempts, by connection. Sized by
/// userspace.
#[map]
static HANDSHAKES: HashMap<FlowKey, HandshakeState> =
    HashMap::with_max_entries(DEFAULT_HANDSHAKE_MAX_ENTRIES, 0);

#[map]
static HSSTATS: PerCpuArray<HandshakeStats> = PerCpuArray::with_max_entries(1, 0);

/// Whether a packet of IP protocol `protocol` is tracked: TCP, with the tracking on.
#[inline(always)]
pub fn tracked(protocol: u8) -> bool {
    // SAFETY: reading a global set before load.
    protocol == 6 && unsafe { read_volatile(&HANDSHAKES_ON) } != 0
}

/// Runs segment `seg` of the packet keyed `key` (at `now`; `local`: it leaves with a local
/// socket) through its connection's state.
#[inline(always)]
pub fn track(key: &FlowKey, seg: Segment, now: u64, local: bool) {
    let Some(stats) = HSSTATS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's entry; programs do not nest on a CPU in one direction, and the
    // counters are only added to (a rare lost add between directions is a counter, not a
    // figure).
    let stats = unsafe { &mut *stats };
    match seg {
        Segment::Syn => on(key, seg, true, now, local, stats),
        Segment::SynAck => on(key, seg, false, now, local, stats),
        Segment::Ack => {
            stats.ack_lookups += 1;
            on(key, seg, true, now, local, stats);
        }
        // Either side may reset the attempt.
        Segment::Rst => {
            on(key, seg, true, now, local, stats);
            on(key, seg, false, now, local, stats);
        }
        Segment::Other => {}
    }
}

#[inline(always)]
fn on(
    key: &FlowKey,
    seg: Segment,
    forward: bool,
    now: u64,
    local: bool,
    stats: &mut HandshakeStats,
) {
    let reversed;
    let conn = if forward {
        key
    } else {
        reversed = connection_of(key, false);
        &reversed
    };
    let found = HANDSHAKES.get_ptr_mut(conn);
    // SAFETY: a live map value; another CPU may write it meanwhile (segments of one
    // handshake are a round trip apart), at worst the step sees the older state.
    let cur = found.map(|p| unsafe { p.read_volatile() });
    match step(cur.as_ref(), seg, forward, now, local) {
        Step::Keep => {}
        Step::Update(n) => {
            let Some(p) = found else { return };
            if n.phase == PHASE_DONE {
                stats.completed += 1;
            }
            // SAFETY: `p` points at the live value read above. The latency goes last, in
            // one 8-byte store: userspace takes a non-zero latency as the attempt's end.
            unsafe {
                (&raw mut (*p).start_ns).write_volatile(n.start_ns);
                (&raw mut (*p).last_ns).write_volatile(n.last_ns);
                (&raw mut (*p).syn_retransmits).write_volatile(n.syn_retransmits);
                (&raw mut (*p).phase).write_volatile(n.phase);
                (&raw mut (*p).clock).write_volatile(n.clock);
                (&raw mut (*p).latency_ns).write_volatile(n.latency_ns);
            }
        }
        Step::Insert(n) => match HANDSHAKES.insert(conn, &n, u64::from(BPF_NOEXIST)) {
            Ok(()) => stats.started += 1,
            // EEXIST: another CPU's SYN of the same connection got there first.
            Err(-17) => {}
            // E2BIG (full), ENOMEM: this attempt is not measured.
            Err(_) => stats.full += 1,
        },
    }
}
