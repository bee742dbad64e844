//! TCP handshakes (`--mode flows|both`): the one state machine that turns a connection's
//! handshake segments into its latency (`tcp_handshake_us`) and its SYN retransmits
//! (`tcp_syn_retransmits`), run by the kernel programs on live packets and by the collector
//! on replayed frames, so both give the same figures.
//!
//! A connection is keyed by the [`FlowKey`] of its initiating direction (client → server) as
//! the packets are keyed where they are seen: the SYN's own key; a SYN-ACK's key reversed
//! ([`connection_of`]: addresses and ports swapped, the other direction, same interface).
//! So every interface and hook the connection passes has a state of its own, and the
//! figure lands on that interface's initiating row.
//!
//! Where the clock starts and stops depends on what the observer is ([`Clock`]):
//! - the client's host (the SYN leaves with a local socket): SYN out → SYN-ACK in;
//! - the server's host (the SYN-ACK leaves with a local socket): SYN-ACK out → the ACK in;
//! - elsewhere (forwarded both ways, a veth seen from the host, a replay): SYN → ACK.
//!
//! The direction a hook gives is never read as "towards the server": on a container's
//! veth seen from the host, the container's SYN is the host's *ingress*, and the rules
//! above still hold because they follow the SYN, not the hook.
//!
//! Rules of [`step`] (one segment, one state):
//! - a SYN with no state starts an attempt; a SYN on an open attempt is a retransmit
//!   (counted; the clock restarts there, unless the server's SYN-ACK holds it); a SYN on a
//!   finished attempt (done or reset) starts a new one on the same 5-tuple, keeping the
//!   retransmits not yet reported;
//! - a SYN-ACK on an attempt: on the client's host it completes it; with a local socket it
//!   starts the server's clock (each SYN-ACK retransmit restarts it); else it is noted;
//! - an ACK (no SYN, no RST) on an open attempt that is not the client's completes it;
//! - an RST either way ends an open attempt (reset: its retransmits are still reported);
//! - a segment older than the clock's start (out of order) changes nothing, so a latency
//!   is never 0 or negative.
//!
//! Userspace reads the states at every interval ([`report`]): a completed attempt gives its
//! latency and is removed; an open one gives the SYN retransmits not yet reported; one idle
//! for [`IDLE_NS`] is removed. A full state map is counted, never a wrong figure.

use crate::flow_key::FlowKey;

/// Name of the hash map of [`HandshakeState`]s, keyed by the connection's [`FlowKey`].
pub const HANDSHAKE_MAP: &str = "HANDSHAKES";
/// Name of the per-CPU array (one entry) of [`HandshakeStats`].
pub const HANDSHAKE_STATS_MAP: &str = "HSSTATS";
/// Name of the global that switches the tracking on (1) or off (0), set at load.
pub const HANDSHAKES_GLOBAL: &str = "HANDSHAKES_ON";
/// Entries of [`HANDSHAKE_MAP`]: handshakes open at once (and completed ones until the next
/// collection) it can hold.
pub const DEFAULT_HANDSHAKE_MAX_ENTRIES: u32 = 16_384;
/// A bit of [`crate::flow_key::FlowValue::tcp_flags`] above the flags byte: the flow's
/// entry saw a SYN, so its next plain ACK looks the connection up (and clears the bit).
/// Other ACKs never pay for a lookup. Userspace masks it off (`tcp_flags & 0xff`).
pub const FLOW_AWAITS_ACK: u64 = 1 << 8;
/// An open attempt with no SYN or SYN-ACK for this long is removed by the collector
/// (Linux gives up a SYN after 127 s with the default `tcp_syn_retries`).
pub const IDLE_NS: u64 = 130_000_000_000;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Phases of an attempt ([`HandshakeState::phase`]).
pub const PHASE_SYN: u8 = 1;
pub const PHASE_SYNACK: u8 = 2;
pub const PHASE_DONE: u8 = 3;
pub const PHASE_RESET: u8 = 4;

/// What a segment is to the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    Syn,
    SynAck,
    /// RST, with or without ACK.
    Rst,
    /// ACK without SYN or RST (with or without data, FIN).
    Ack,
    /// Anything else (no ACK: a bare FIN, a null segment).
    Other,
}

impl Segment {
    #[inline(always)]
    pub fn of(flags: u8) -> Self {
        if flags & TCP_RST != 0 {
            Self::Rst
        } else if flags & TCP_SYN != 0 {
            if flags & TCP_ACK != 0 {
                Self::SynAck
            } else {
                Self::Syn
            }
        } else if flags & TCP_ACK != 0 {
            Self::Ack
        } else {
            Self::Other
        }
    }

    /// SYN, SYN-ACK and RST always go to the state machine; a plain ACK only when its
    /// flow entry awaits one ([`FLOW_AWAITS_ACK`]).
    #[inline(always)]
    pub fn is_handshake(self) -> bool {
        matches!(self, Self::Syn | Self::SynAck | Self::Rst)
    }
}

/// Who starts and stops the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Clock {
    /// Seen from the path (or not known yet): SYN → ACK.
    Path = 0,
    /// The client's host: SYN out → SYN-ACK in.
    Client = 1,
    /// The server's host: SYN-ACK out → ACK in.
    Server = 2,
}

/// One connection attempt. Every byte is set (no implicit padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandshakeState {
    /// Where the clock started (the packets' clock, ns).
    pub start_ns: u64,
    /// The attempt's latest SYN or SYN-ACK: how long it has been idle.
    pub last_ns: u64,
    /// The completed handshake's latency, ns; 0 until it completes (a single 8-byte store,
    /// so a reader never sees half of it).
    pub latency_ns: u64,
    /// SYNs after the first, over the attempts on this key since the collector last
    /// removed the state.
    pub syn_retransmits: u32,
    /// `PHASE_*`.
    pub phase: u8,
    /// A [`Clock`] as its value.
    pub clock: u8,
    pub _pad: [u8; 2],
}

impl HandshakeState {
    #[inline(always)]
    pub fn open(&self) -> bool {
        self.phase == PHASE_SYN || self.phase == PHASE_SYNACK
    }
}

/// What [`step`] does to the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing.
    Keep,
    /// A new state (there was none).
    Insert(HandshakeState),
    /// The state becomes this.
    Update(HandshakeState),
}

/// Per-CPU counters of the tracking (userspace sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandshakeStats {
    /// Attempts started (a state inserted).
    pub started: u64,
    /// Attempts completed.
    pub completed: u64,
    /// SYNs that found the state map full: that attempt is not measured.
    pub full: u64,
    /// Plain ACKs that looked their connection up (flow entry awaiting one, or a new one).
    pub ack_lookups: u64,
}

/// The connection key of a segment keyed `key`: the key itself for a segment going the
/// initiating way (SYN, ACK), reversed for one coming back (SYN-ACK).
#[inline(always)]
pub fn connection_of(key: &FlowKey, forward: bool) -> FlowKey {
    if forward {
        return *key;
    }
    let mut k = *key;
    k.src_addr = key.dst_addr;
    k.dst_addr = key.src_addr;
    k.src_port = key.dst_port;
    k.dst_port = key.src_port;
    k.direction = key.direction ^ 1;
    k
}

/// One segment `seg` at `now` on the state `state` of its connection. `forward`: it goes
/// the initiating way (the SYN's); `local`: it leaves with a local socket (TC egress and a
/// socket: the host's own TCP stack sent it).
#[inline(always)]
pub fn step(
    state: Option<&HandshakeState>,
    seg: Segment,
    forward: bool,
    now: u64,
    local: bool,
) -> Step {
    match (seg, forward) {
        (Segment::Syn, true) => match state {
            Some(s) if s.open() => {
                let mut n = *s;
                n.syn_retransmits = n.syn_retransmits.saturating_add(1);
                n.last_ns = now;
                if n.clock != Clock::Server as u8 && now > n.start_ns {
                    n.start_ns = now;
                }
                Step::Update(n)
            }
            // A new attempt on a 5-tuple seen before: what is not reported yet is kept.
            Some(s) => Step::Update(syn(now, local, s.syn_retransmits)),
            None => Step::Insert(syn(now, local, 0)),
        },
        (Segment::SynAck, false) => {
            let Some(s) = state.filter(|s| s.open()) else {
                return Step::Keep;
            };
            if now <= s.start_ns {
                return Step::Keep;
            }
            let mut n = *s;
            if s.clock == Clock::Client as u8 {
                return Step::Update(done(n, now));
            }
            n.last_ns = now;
            n.phase = PHASE_SYNACK;
            if local {
                n.clock = Clock::Server as u8;
                n.start_ns = now;
            }
            Step::Update(n)
        }
        (Segment::Ack, true) => match state {
            Some(s) if s.open() && s.clock != Clock::Client as u8 && now > s.start_ns => {
                Step::Update(done(*s, now))
            }
            _ => Step::Keep,
        },
        (Segment::Rst, _) => match state {
            Some(s) if s.open() => Step::Update(HandshakeState {
                phase: PHASE_RESET,
                ..*s
            }),
            _ => Step::Keep,
        },
        _ => Step::Keep,
    }
}

#[inline(always)]
fn syn(now: u64, local: bool, syn_retransmits: u32) -> HandshakeState {
    HandshakeState {
        start_ns: now,
        last_ns: now,
        latency_ns: 0,
        syn_retransmits,
        phase: PHASE_SYN,
        clock: if local {
            Clock::Client as u8
        } else {
            Clock::Path as u8
        },
        _pad: [0; 2],
    }
}

#[inline(always)]
fn done(mut s: HandshakeState, now: u64) -> HandshakeState {
    s.latency_ns = now - s.start_ns;
    s.phase = PHASE_DONE;
    s
}

/// What the collector does with one state it read ([`report`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// The latency in µs, when the attempt completed (at least 1).
    pub us: Option<u64>,
    /// SYN retransmits not reported before.
    pub syn_retransmits: u32,
    /// Whether to remove the state (completed, reset, or idle for [`IDLE_NS`]).
    pub remove: bool,
}

/// The collector's reading of `state` at `now` (the packets' clock), `reported` of its SYN
/// retransmits already reported. A completed latency is rounded to the µs, at least 1.
pub fn report(state: &HandshakeState, reported: u32, now: u64) -> Report {
    let done = state.latency_ns != 0;
    let idle = now.saturating_sub(state.last_ns) >= IDLE_NS;
    Report {
        us: done.then(|| (state.latency_ns.div_ceil(1_000)).max(1)),
        syn_retransmits: state.syn_retransmits.saturating_sub(reported),
        remove: done || state.phase == PHASE_RESET || idle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_are_fixed_and_unpadded() {
        assert_eq!(size_of::<HandshakeState>(), 32);
        assert_eq!(offset_of!(HandshakeState, last_ns), 8);
        assert_eq!(offset_of!(HandshakeState, latency_ns), 16);
        assert_eq!(offset_of!(HandshakeState, syn_retransmits), 24);
        assert_eq!(offset_of!(HandshakeState, phase), 28);
        assert_eq!(offset_of!(HandshakeState, clock), 29);
        assert_eq!(offset_of!(HandshakeState, _pad), 30);
        assert_eq!(size_of::<HandshakeStats>(), 32);
        assert_eq!(FLOW_AWAITS_ACK & 0xff, 0);
    }

    const MS: u64 = 1_000_000;

    /// Runs `segments` (segment, forward, time in ms, local) through [`step`] from no state.
    fn run(segments: &[(Segment, bool, u64, bool)]) -> Option<HandshakeState> {
        let mut s: Option<HandshakeState> = None;
        for &(seg, fwd, t, local) in segments {
            match step(s.as_ref(), seg, fwd, t * MS, local) {
                Step::Keep => {}
                Step::Insert(n) => {
                    assert!(s.is_none());
                    s = Some(n);
                }
                Step::Update(n) => {
                    assert!(s.is_some());
                    s = Some(n);
                }
            }
        }
        s
    }

    use Segment::{Ack, Rst, Syn, SynAck};

    #[test]
    fn segments_by_flags() {
        assert_eq!(Segment::of(TCP_SYN), Syn);
        assert_eq!(Segment::of(TCP_SYN | TCP_ACK), SynAck);
        assert_eq!(Segment::of(TCP_ACK), Ack);
        assert_eq!(Segment::of(TCP_ACK | 0x08), Ack);
        assert_eq!(Segment::of(TCP_ACK | TCP_FIN), Ack);
        assert_eq!(Segment::of(TCP_RST | TCP_ACK), Rst);
        assert_eq!(Segment::of(TCP_RST), Rst);
        assert_eq!(Segment::of(TCP_FIN), Segment::Other);
        assert_eq!(Segment::of(0), Segment::Other);
        assert!(Syn.is_handshake() && SynAck.is_handshake() && Rst.is_handshake());
        assert!(!Ack.is_handshake());
    }

    #[test]
    fn server_host_measures_synack_out_to_ack_in() {
        // SYN in (ingress: no socket known), SYN-ACK out with the listener's socket, ACK in.
        let s = run(&[
            (Syn, true, 10, false),
            (SynAck, false, 11, true),
            (Ack, true, 61, false),
        ])
        .unwrap();
        assert_eq!((s.phase, s.clock), (PHASE_DONE, Clock::Server as u8));
        assert_eq!((s.latency_ns, s.syn_retransmits), (50 * MS, 0));
    }

    #[test]
    fn client_host_measures_syn_out_to_synack_in() {
        let s = run(&[
            (Syn, true, 10, true),
            (SynAck, false, 60, false),
            // The ACK out changes nothing.
            (Ack, true, 61, true),
        ])
        .unwrap();
        assert_eq!((s.phase, s.clock), (PHASE_DONE, Clock::Client as u8));
        assert_eq!(s.latency_ns, 50 * MS);
    }

    #[test]
    fn forwarded_or_veth_from_the_host_measures_syn_to_ack() {
        // Neither side local: a router, or a container's veth seen from the host (the
        // container's SYN is the host's ingress there, its ACK too).
        let s = run(&[
            (Syn, true, 10, false),
            (SynAck, false, 40, false),
            (Ack, true, 70, false),
        ])
        .unwrap();
        assert_eq!((s.phase, s.clock), (PHASE_DONE, Clock::Path as u8));
        assert_eq!(s.latency_ns, 60 * MS);
        // Only one way watched (no SYN-ACK seen): still SYN → ACK.
        let s = run(&[(Syn, true, 10, false), (Ack, true, 70, false)]).unwrap();
        assert_eq!(s.latency_ns, 60 * MS);
    }

    #[test]
    fn syn_retransmits_count_and_restart_the_clock() {
        let s = run(&[
            (Syn, true, 0, true),
            (Syn, true, 1000, true),
            (Syn, true, 3000, true),
        ])
        .unwrap();
        assert_eq!((s.phase, s.syn_retransmits), (PHASE_SYN, 2));
        assert_eq!((s.start_ns, s.last_ns), (3000 * MS, 3000 * MS));
        let s = run(&[
            (Syn, true, 0, true),
            (Syn, true, 1000, true),
            (SynAck, false, 1050, false),
        ])
        .unwrap();
        assert_eq!((s.latency_ns, s.syn_retransmits), (50 * MS, 1));
        // On the server, a SYN retransmit does not move the clock its SYN-ACK started; the
        // SYN-ACK sent again does.
        let s = run(&[
            (Syn, true, 0, false),
            (SynAck, false, 1, true),
            (Syn, true, 1000, false),
            (SynAck, false, 1001, true),
            (Ack, true, 1051, false),
        ])
        .unwrap();
        assert_eq!((s.latency_ns, s.syn_retransmits), (50 * MS, 1));
    }

    #[test]
    fn rst_ends_an_attempt_either_way_and_keeps_its_retransmits() {
        for fwd in [true, false] {
            let s = run(&[
                (Syn, true, 0, true),
                (Syn, true, 1000, true),
                (Rst, fwd, 1001, false),
                // Nothing completes a reset attempt.
                (SynAck, false, 1002, false),
                (Ack, true, 1003, false),
            ])
            .unwrap();
            assert_eq!(
                (s.phase, s.latency_ns, s.syn_retransmits),
                (PHASE_RESET, 0, 1)
            );
        }
        // An RST with no attempt: nothing.
        assert_eq!(run(&[(Rst, true, 1, false)]), None);
    }

    #[test]
    fn a_reused_five_tuple_starts_a_new_attempt() {
        let s = run(&[
            (Syn, true, 0, false),
            (Ack, true, 5, false),
            (Syn, true, 100, false),
            (Syn, true, 200, false),
        ])
        .unwrap();
        assert_eq!(
            (s.phase, s.latency_ns, s.syn_retransmits),
            (PHASE_SYN, 0, 1)
        );
        assert_eq!(s.start_ns, 200 * MS);
        let s = run(&[
            (Syn, true, 0, true),
            (Rst, false, 1, false),
            (Syn, true, 100, true),
            (SynAck, false, 130, false),
        ])
        .unwrap();
        assert_eq!((s.phase, s.latency_ns), (PHASE_DONE, 30 * MS));
    }

    #[test]
    fn out_of_order_and_stray_segments_never_make_a_figure() {
        // A SYN-ACK or ACK with no SYN seen: no state.
        assert_eq!(
            run(&[(SynAck, false, 1, true), (Ack, true, 2, false)]),
            None
        );
        // A SYN-ACK stamped before the SYN (segments handled out of order), and an ACK at
        // the SYN's own time: nothing completes.
        let s = run(&[
            (Syn, true, 10, false),
            (SynAck, false, 9, true),
            (Ack, true, 10, false),
        ])
        .unwrap();
        assert_eq!((s.phase, s.latency_ns), (PHASE_SYN, 0));
        // The ACK before the SYN-ACK (two interfaces merged in a pcap): SYN → ACK, and the
        // late SYN-ACK changes nothing.
        let s = run(&[
            (Syn, true, 10, false),
            (Ack, true, 30, false),
            (SynAck, false, 20, false),
        ])
        .unwrap();
        assert_eq!((s.phase, s.latency_ns), (PHASE_DONE, 20 * MS));
        // A segment the wrong way round is not a handshake segment.
        assert_eq!(run(&[(Syn, false, 1, false)]), None);
        assert_eq!(
            run(&[(Syn, true, 1, false), (Ack, false, 2, false)]).map(|s| s.phase),
            Some(PHASE_SYN)
        );
    }

    #[test]
    fn connection_keys_follow_the_syn_not_the_hook() {
        let mut k = FlowKey::ZERO;
        k.src_addr[..4].copy_from_slice(&[10, 0, 0, 2]);
        k.dst_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        k.src_port = 80;
        k.dst_port = 40_000;
        k.ifindex = 7;
        k.direction = 1;
        k.protocol = 6;
        let c = connection_of(&k, false);
        assert_eq!((&c.src_addr[..4], c.src_port), (&[10, 0, 0, 1][..], 40_000));
        assert_eq!((&c.dst_addr[..4], c.dst_port), (&[10, 0, 0, 2][..], 80));
        assert_eq!((c.ifindex, c.direction, c.protocol), (7, 0, 6));
        assert_eq!(connection_of(&c, false), k);
        assert_eq!(connection_of(&k, true), k);
    }

    #[test]
    fn reports_give_latency_once_and_retransmits_as_they_come() {
        let open = run(&[(Syn, true, 0, true), (Syn, true, 1000, true)]).unwrap();
        let r = report(&open, 0, 1500 * MS);
        assert_eq!((r.us, r.syn_retransmits, r.remove), (None, 1, false));
        assert_eq!(report(&open, 1, 1500 * MS).syn_retransmits, 0);
        // Idle for IDLE_NS: removed.
        assert!(report(&open, 1, 1000 * MS + IDLE_NS).remove);
        let done = run(&[(Syn, true, 0, true), (SynAck, false, 50, false)]).unwrap();
        let r = report(&done, 0, 60 * MS);
        assert_eq!((r.us, r.syn_retransmits, r.remove), (Some(50_000), 0, true));
        // Sub-µs rounds up, never 0.
        let mut tiny = done;
        tiny.latency_ns = 300;
        assert_eq!(report(&tiny, 0, 0).us, Some(1));
        let reset = run(&[(Syn, true, 0, true), (Rst, false, 1, false)]).unwrap();
        assert!(report(&reset, 0, 2 * MS).remove);
    }
}
