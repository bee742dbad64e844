//! Flows (`--mode flows|both`): every packet — not sampled — counted under its
//! [`FlowKey`] in one of two shared hash maps, `FLOWS{generation & 1}`.
//!
//! The key comes from [`flowmetrix_common::flow_key::parse`], the same parser userspace runs on
//! pcap frames, reading the packet in place through [`Linear`] (direct packet access,
//! bounds-checked against `data_end`). Per packet:
//! - the generation and the prefix are read from `FLOWCFG` once; a prefix that is
//!   [`PREFIX_UNKNOWN`] or above [`MAX_PREFIX`], or a frame the parser cannot key, is
//!   counted as not keyed (`flow_unkeyed`, `flow_unkeyed_bytes`);
//! - a hit adds 1 packet and the bytes with atomic adds, stores `last_seen`, ors the TCP
//!   flags (only when they add a bit to the entry's); a miss inserts with `BPF_NOEXIST`;
//!   `EEXIST` (another CPU inserted the key meanwhile) looks up again and adds;
//! - a TCP packet goes to the handshake tracking ([`crate::handshake`]) when it is a SYN,
//!   SYN-ACK or RST, or a plain ACK whose entry awaits one (a SYN marked it) or is new;
//! - when the map is full, the packet goes to userspace as a [`FlowEvent`] tagged with its
//!   generation, in `FLOWEVENTS` (submitted without a wakeup: userspace drains it at every
//!   interval), and `flow_events` counts it; when that ring is full too, `flow_overflow`
//!   and `flow_overflow_bytes` count it.
//!
//! Userspace flips the generation, waits an RCU grace period and reads the idle map
//! (`flowmetrix/src/flows/kernel.rs` says why that is exact).
//!
//! The maps are shared, not per-CPU (memory must not grow with the CPU count), so every
//! counter update is an atomic instruction.

use core::{
    arch::asm,
    cell::Cell,
    intrinsics::{AtomicOrdering::Relaxed, atomic_and, atomic_or, atomic_xadd},
    mem::MaybeUninit,
    ptr::read_volatile,
};

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, RingBuf},
};
use flowmetrix_common::{
    CpuStats, Direction,
    flow_key::{
        DEFAULT_FLOW_MAX_ENTRIES, FLOW_CFG_ENTRIES, FLOW_CFG_GENERATION, FLOW_CFG_PREFIX,
        FlowEvent, FlowKey, FlowValue, Frame, MAX_L4_OFFSET, MAX_PREFIX, PREFIX_UNKNOWN, parse,
    },
    handshake::{FLOW_AWAITS_ACK, Segment},
};

use crate::{
    handshake,
    packet::{Now, Packet, cgroup_of},
};

/// The two flow maps; the programs count into `FLOWS{generation & 1}`. Sized by userspace
/// (`--flow-max-entries`; the minimum in `packets` mode).
#[map]
static FLOWS0: HashMap<FlowKey, FlowValue> = HashMap::with_max_entries(DEFAULT_FLOW_MAX_ENTRIES, 0);
#[map]
static FLOWS1: HashMap<FlowKey, FlowValue> = HashMap::with_max_entries(DEFAULT_FLOW_MAX_ENTRIES, 0);

/// Generation and prefix, written by userspace ([`FLOW_CFG_GENERATION`], [`FLOW_CFG_PREFIX`]).
#[map]
pub(crate) static FLOWCFG: Array<u32> = Array::with_max_entries(FLOW_CFG_ENTRIES, 0);

/// Packets the full flow map could not take. Sized by userspace.
#[map]
static FLOWEVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Largest offset [`Linear`] reads at: the parser's own bounds keep every offset below it
/// (prefix ≤ 64, then at most 14 + 8 + 60 bytes of headers before IPv4's transport header;
/// IPv6 extension headers stop at [`MAX_L4_OFFSET`]), and this check gives the verifier a
/// provable range for every packet pointer.
const MAX_READ_OFFSET: usize = MAX_L4_OFFSET + MAX_PREFIX as usize + 64;

/// Bytes of an skb the parser may read at most; what a TC program pulls into the linear part
/// when the headers are not all there.
const MAX_PARSE_BYTES: u32 = MAX_READ_OFFSET as u32 + 64;

/// The packet's linear part, read in place. `short` records that a read ran past its end
/// (the headers may be in the non-linear part of an skb).
struct Linear {
    data: usize,
    end: usize,
    short: Cell<bool>,
}

impl Frame for Linear {
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if off > MAX_READ_OFFSET {
            return None;
        }
        let start = self.data + off;
        if start + N > self.end {
            self.short.set(true);
            return None;
        }
        // SAFETY: `start..start + N` lies inside the packet (checked against data_end just
        // above; the verifier checks it again).
        Some(unsafe { load::<N>(start) })
    }
}

/// The `N` bytes at packet address `p`, read with as few loads as the sizes allow (8, 4, 2,
/// then 1 bytes at a time).
///
/// Why not `read_unaligned`: the BPF target assumes strict alignment, so LLVM splits every
/// unaligned read into byte loads, shifts and ors (an IPv4 address: 4 loads and 6 ALU
/// instructions). The BPF ISA has no such rule for packet memory — the verifier checks the
/// alignment of packet accesses only under `BPF_F_STRICT_ALIGNMENT`, and x86-64 and arm64
/// JIT a load as one unaligned `mov`/`ldr` — so each word is one load, written in assembly
/// so that the compiler neither splits it nor assumes an alignment the pointer lacks
/// (about 1 ns per packet: 20 byte loads fewer on the IPv4/UDP path). The words go back to
/// bytes in native order, as they were in memory.
///
/// # Safety
/// `p..p + N` must lie inside the packet, checked against `data_end` where the verifier
/// sees it.
#[inline(always)]
unsafe fn load<const N: usize>(p: usize) -> [u8; N] {
    let mut out = MaybeUninit::<[u8; N]>::uninit();
    let o = out.as_mut_ptr().cast::<u8>();
    // Straight-line code once unrolled: N is a constant, the loop runs N / 8 times.
    let mut i = 0;
    // SAFETY (every block): `p + i..p + i + width` lies inside `p..p + N`; the asm only
    // reads it (`pure, readonly`: a word the parser never looks at is dropped); `o + i` is
    // inside `out`, and every byte of `out` is written before it is read. (Were a load ever
    // moved above the caller's bounds check, the verifier would refuse the program.)
    while i + 8 <= N {
        let w: u64;
        unsafe {
            asm!("{w} = *(u64 *)({a} + 0)", a = in(reg) p + i, w = lateout(reg) w,
                 options(pure, readonly, nostack, preserves_flags));
            o.add(i).cast::<[u8; 8]>().write_unaligned(w.to_ne_bytes());
        }
        i += 8;
    }
    if i + 4 <= N {
        let w: u64;
        unsafe {
            asm!("{w} = *(u32 *)({a} + 0)", a = in(reg) p + i, w = lateout(reg) w,
                 options(pure, readonly, nostack, preserves_flags));
            o.add(i)
                .cast::<[u8; 4]>()
                .write_unaligned((w as u32).to_ne_bytes());
        }
        i += 4;
    }
    if i + 2 <= N {
        let w: u64;
        unsafe {
            asm!("{w} = *(u16 *)({a} + 0)", a = in(reg) p + i, w = lateout(reg) w,
                 options(pure, readonly, nostack, preserves_flags));
            o.add(i)
                .cast::<[u8; 2]>()
                .write_unaligned((w as u16).to_ne_bytes());
        }
        i += 2;
    }
    if i < N {
        unsafe { *o.add(i) = *((p + i) as *const u8) };
    }
    // SAFETY: every byte written above.
    unsafe { out.assume_init() }
}

/// The ports DNS is served on (53 and `--dns-port`'s; 0: unused). Set by userspace at load.
#[unsafe(no_mangle)]
static DNS_PORTS: [u16; flowmetrix_common::DNS_PORTS] = [53, 0, 0, 0];

/// Whether a keyed packet is DNS: UDP or TCP to or from a [`DNS_PORTS`] port.
#[inline(always)]
fn is_dns(key: &FlowKey) -> bool {
    if key.protocol != 6 && key.protocol != 17 {
        return false;
    }
    // SAFETY: reading a global that userspace set before load.
    let ports = unsafe { read_volatile(&DNS_PORTS) };
    let mut i = 0;
    while i < ports.len() {
        let p = ports[i];
        if p != 0 && (key.src_port == p || key.dst_port == p) {
            return true;
        }
        i += 1;
    }
    false
}

/// Counts the packet (direction `dir`) in the active flow map, or as an event, an
/// overflow or not keyed, in `stats`. Whether it is a DNS packet.
#[inline(always)]
pub fn count<P: Packet>(ctx: &P, dir: Direction, stats: &mut CpuStats, now: &Now) -> bool {
    let generation = FLOWCFG.get(FLOW_CFG_GENERATION).copied().unwrap_or(0);
    let prefix = FLOWCFG
        .get(FLOW_CFG_PREFIX)
        .copied()
        .unwrap_or(PREFIX_UNKNOWN);
    let wire_len = ctx.wire_len();
    if prefix > MAX_PREFIX {
        stats.flow_unkeyed += 1;
        stats.flow_unkeyed_bytes += u64::from(wire_len);
        return false;
    }
    let mut bytes = u64::from(wire_len.saturating_sub(prefix));
    // A tag the kernel moved into the skb's metadata was on the wire, in front of what the
    // bytes show: the outer tag, 4 bytes.
    let outer = ctx.vlan_tag();
    if outer.is_some() {
        bytes += 4;
    }
    let mut key = Key8(FlowKey::ZERO);
    let key = &mut key.0;
    zero(key);
    let Some(flags) = key_of(ctx, prefix as usize, wire_len, key) else {
        stats.flow_unkeyed += 1;
        stats.flow_unkeyed_bytes += bytes;
        return false;
    };
    if let Some(vid) = outer {
        key.vlan_id = vid;
    }
    key.ifindex = ctx.ifindex();
    key.direction = dir as u8;
    let dns = is_dns(key);
    let cgroup = cgroup_of(ctx, dir);
    // TCP handshakes: a SYN marks its flow entry, whose next plain ACK then looks its
    // connection up (see `handshake`).
    let seg = if handshake::tracked(key.protocol) {
        Segment::of(flags)
    } else {
        Segment::Other
    };
    let mark = Mark {
        flags: u64::from(flags)
            | if seg == Segment::Syn {
                FLOW_AWAITS_ACK
            } else {
                0
            },
        ack: seg == Segment::Ack,
    };
    let counted = if generation & 1 == 0 {
        add(&FLOWS0, key, bytes, mark, cgroup, now)
    } else {
        add(&FLOWS1, key, bytes, mark, cgroup, now)
    };
    if seg.is_handshake() || counted.look {
        // An egress packet with a socket was sent by this host's own TCP stack.
        handshake::track(key, seg, now.get(), cgroup != 0);
    }
    if !counted.full {
        return dns;
    }
    // The map had no room: the packet's timestamp, read by `add`.
    let ts = now.get();
    match FLOWEVENTS.reserve::<FlowEvent>(0) {
        Some(mut entry) => {
            entry.write(FlowEvent {
                key: *key,
                ts_boot_ns: ts,
                bytes: bytes as u32,
                generation,
                tcp_flags: flags,
                _pad: [0; 7],
            });
            entry.submit(u64::from(BPF_RB_NO_WAKEUP));
            stats.flow_events += 1;
        }
        None => {
            stats.flow_overflow += 1;
            stats.flow_overflow_bytes += bytes;
        }
    }
    dns
}

/// A [`FlowKey`] on an 8-byte boundary, so [`zero`] can clear it a word at a time.
#[repr(C, align(8))]
struct Key8(FlowKey);

/// Sets every byte of `key` to 0 with six 8-byte stores. (`FlowKey::ZERO` compiles to a call
/// of a byte-at-a-time `memset`, which cost more than the whole map update.)
#[inline(always)]
fn zero(key: &mut FlowKey) {
    const WORDS: usize = size_of::<FlowKey>() / 8;
    const _: () = assert!(size_of::<FlowKey>() == WORDS * 8);
    let words = (key as *mut FlowKey).cast::<u64>();
    for i in 0..WORDS {
        // SAFETY: `key` is the FlowKey of a Key8 (8-byte aligned), WORDS words long;
        // volatile, so LLVM does not merge the stores back into a memset call.
        unsafe { words.add(i).write_volatile(0) };
    }
}

/// Keys the frame: [`parse`] on the linear part; for an skb whose headers run past it, once
/// more after pulling them in.
#[inline(always)]
fn key_of<P: Packet>(ctx: &P, prefix: usize, wire_len: u32, key: &mut FlowKey) -> Option<u8> {
    let (data, end) = ctx.linear();
    let f = Linear {
        data,
        end,
        short: Cell::new(false),
    };
    let flags = parse(&f, prefix, key);
    if !P::PULLS || !f.short.get() || (end - data) as u32 >= wire_len {
        return flags;
    }
    let want = if wire_len < MAX_PARSE_BYTES {
        wire_len
    } else {
        MAX_PARSE_BYTES
    };
    if !ctx.pull(want) {
        return flags;
    }
    zero(key);
    let (data, end) = ctx.linear();
    let f = Linear {
        data,
        end,
        short: Cell::new(false),
    };
    parse(&f, prefix, key)
}

/// The flags a packet ors into its flow entry (the TCP flags byte, and
/// [`FLOW_AWAITS_ACK`] for a SYN), and whether it is a plain ACK that wants to know if the
/// entry awaits one.
#[derive(Clone, Copy)]
struct Mark {
    flags: u64,
    ack: bool,
}

/// What became of a packet in the flow map. (Plain fields, not a `Result`: LLVM may merge
/// the payload of a variant not taken into a branch, a register the verifier then finds
/// never written.)
#[derive(Clone, Copy)]
struct Added {
    /// A plain ACK (`mark.ack`) whose connection is to be looked up: its entry awaited an
    /// ACK, is new, or could not be made.
    look: bool,
    /// The map had no room for a new entry.
    full: bool,
}

/// Adds the packet to `key`'s entry of `map`, creating it if need be, stamped with the
/// packet's time (`now`, read from the clock here unless already read), with the `cgroup`
/// id of its socket.
#[inline(always)]
fn add(
    map: &HashMap<FlowKey, FlowValue>,
    key: &FlowKey,
    bytes: u64,
    mark: Mark,
    cgroup: u64,
    now: &Now,
) -> Added {
    let done = |look| Added { look, full: false };
    let full = Added {
        look: mark.ack,
        full: true,
    };
    let found = map.get_ptr_mut(key);
    // The clock is read between the lookup and the atomic adds, not before the lookup: the
    // same work, 4–5 ns less per packet on this VM (BENCHMARKS.md, Flows), where the
    // clock read (`lfence; rdtsc` under a hypervisor) is half of the flow path's cost. Read
    // before the parse or after the adds it costs as much as before the lookup.
    let ts = now.get();
    if let Some(v) = found {
        return done(bump(v, bytes, ts, mark, cgroup));
    }
    let fresh = FlowValue {
        packets: 1,
        bytes,
        first_seen_ns: ts,
        last_seen_ns: ts,
        tcp_flags: mark.flags,
        cgroup_id: cgroup,
    };
    match map.insert(key, &fresh, u64::from(BPF_NOEXIST)) {
        Ok(()) => done(mark.ack),
        // EEXIST: another CPU created the entry since the lookup.
        Err(-17) => match map.get_ptr_mut(key) {
            Some(v) => done(bump(v, bytes, ts, mark, cgroup)),
            None => full,
        },
        // E2BIG (full), ENOMEM: no room.
        Err(_) => full,
    }
}

/// Adds to the entry `v`; for a plain ACK (`mark.ack`), whether the entry awaited one (the
/// mark is then cleared).
#[inline(always)]
fn bump(v: *mut FlowValue, bytes: u64, ts: u64, mark: Mark, cgroup: u64) -> bool {
    // The intrinsics, not `AtomicU64`: the bpf target declares no compare-and-swap, so core
    // leaves out the atomic types' read-modify-write methods; the intrinsics compile to the
    // BPF atomic instructions (`lock *(u64 *)(r + off) += r`, and the atomic or of BPF v3,
    // Linux 5.12), which is all an add or an or whose result is unused needs.
    // SAFETY: `v` points at a live, 8-byte aligned map value; every writer updates the
    // counters with atomic instructions.
    unsafe {
        atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*v).packets, 1);
        atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*v).bytes, bytes);
        (&raw mut (*v).last_seen_ns).write_volatile(ts);
        // The last packet's socket wins, as for `last_seen_ns`; ingress leaves it be.
        if cgroup != 0 {
            (&raw mut (*v).cgroup_id).write_volatile(cgroup);
        }
        // Not TCP (no flags): nothing more, as before the tracking.
        if mark.flags == 0 {
            return false;
        }
        // Read first: the atomic or only when it adds a bit (a TCP flow's segments mostly
        // repeat flags already there), and an ACK learns whether the entry awaits it.
        let had = (&raw const (*v).tcp_flags).read_volatile();
        if mark.flags & !had != 0 {
            atomic_or::<u64, u64, { Relaxed }>(&raw mut (*v).tcp_flags, mark.flags);
        }
        if !mark.ack || had & FLOW_AWAITS_ACK == 0 {
            return false;
        }
        atomic_and::<u64, u64, { Relaxed }>(&raw mut (*v).tcp_flags, !FLOW_AWAITS_ACK);
        true
    }
}
