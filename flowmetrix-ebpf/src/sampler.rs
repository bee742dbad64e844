//! The sampling code both hooks share: XDP (`xdp_md`) and TC (`__sk_buff`) differ only in
//! how a packet's length, bytes, interface and queue are read, which [`Packet`] abstracts.
//!
//! For one packet in `SAMPLE_RATE` per CPU and direction (with a randomised skip so
//! periodic traffic does not alias with the sampler), reserve a [`Sample`] in the `SAMPLES`
//! ring buffer (with the smallest slot that fits) holding the kernel timestamp, the frame's
//! full length, its direction, the VLAN tag the kernel took out of the frame (TC) and its
//! first `SNAPLEN` bytes. Every run updates the per-CPU
//! counters of its interface (the slot userspace gave it in `IFSLOT`) and direction; the
//! countdown is kept per interface and direction too.
//!
//! The load-time `MODE` chooses what runs: sampling (`packets`), counting every packet in
//! the flow maps ([`crate::flows`], `flows`), or both.

use core::{cmp::min, ffi::c_void, ptr::read_volatile};

use crate::flows;
use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{
        bpf_get_prandom_u32, bpf_ktime_get_boot_ns, bpf_skb_load_bytes, bpf_xdp_get_buff_len,
        bpf_xdp_load_bytes,
    },
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::error;
use flowmetrix_common::{
    CpuStats, DIRECTIONS, Direction, IF_SLOTS, MAX_IFINDEX, MAX_SNAPLEN, SLOT_SIZES, Sample,
    VLAN_PRESENT, WAKEUP_EVERY,
    flow::{MODE_FLOWS, MODE_PACKETS},
    next_skip, stats_index,
};

/// 1 in SAMPLE_RATE packets is sampled. Set by userspace at load time.
#[unsafe(no_mangle)]
static SAMPLE_RATE: u32 = 1;

/// Bytes of each sampled frame to copy (1..=MAX_SNAPLEN). Set by userspace at load time.
#[unsafe(no_mangle)]
static SNAPLEN: u32 = flowmetrix_common::DEFAULT_SNAPLEN;

/// Bytes waiting in the ring above which the reader is woken early. Set by userspace.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u32 = 1 << 20;

/// Sized by userspace at load time (`--ring-bytes`). One ring for every program.
#[map]
static SAMPLES: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Indexed by interface slot and [`Direction`] ([`stats_index`]).
#[map]
static STATS: PerCpuArray<CpuStats> = PerCpuArray::with_max_entries(IF_SLOTS * DIRECTIONS, 0);

/// An interface's slot in STATS, by ifindex; 0 (no slot) unless userspace set one.
#[map]
static IFSLOT: Array<u32> = Array::with_max_entries(MAX_IFINDEX, 0);

/// What the sampler needs from a packet, whichever hook it came through.
pub trait Packet: EbpfContext {
    /// The frame's full length: all XDP fragments; for an skb, `skb->len` (for a GSO skb on
    /// egress that is the whole super-packet, before the NIC or the stack segments it).
    fn wire_len(&self) -> u32;
    /// Copies the frame's first `len` bytes to `dst`; 0 on success, a negative errno else.
    ///
    /// # Safety
    /// `dst` must point at `len` writable bytes.
    unsafe fn load(&self, dst: *mut c_void, len: u32) -> i64;
    fn ifindex(&self) -> u32;
    fn queue(&self) -> u32;
    /// Whether [`pull`](Self::pull) can bring more of the frame into the linear part.
    const PULLS: bool;
    /// Start and end of the part of the frame readable in place (direct packet access).
    fn linear(&self) -> (usize, usize);
    /// Makes the first `len` bytes linear (skb only); false when it could not.
    fn pull(&self, len: u32) -> bool;
    /// The VLAN id of an outer 802.1Q/802.1ad tag the kernel took out of the frame into
    /// the skb's metadata (on receive it always does, before TC ingress; on transmit with
    /// VLAN offload): the tag was on the wire but is not in the bytes. XDP: never.
    fn vlan_tag(&self) -> Option<u16>;
}

impl Packet for XdpContext {
    #[inline(always)]
    fn wire_len(&self) -> u32 {
        // SAFETY: `self.ctx` is the program's own xdp_md.
        unsafe { bpf_xdp_get_buff_len(self.ctx) as u32 }
    }

    #[inline(always)]
    unsafe fn load(&self, dst: *mut c_void, len: u32) -> i64 {
        // SAFETY: the caller's `dst` holds `len` bytes; `self.ctx` is our xdp_md.
        unsafe { bpf_xdp_load_bytes(self.ctx, 0, dst, len) }
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.ingress_ifindex() as u32
    }

    #[inline(always)]
    fn queue(&self) -> u32 {
        self.rx_queue_index()
    }

    const PULLS: bool = false;

    #[inline(always)]
    fn linear(&self) -> (usize, usize) {
        (self.data(), self.data_end())
    }

    #[inline(always)]
    fn pull(&self, _len: u32) -> bool {
        false
    }

    #[inline(always)]
    fn vlan_tag(&self) -> Option<u16> {
        None
    }
}

impl Packet for TcContext {
    #[inline(always)]
    fn wire_len(&self) -> u32 {
        self.skb.len()
    }

    #[inline(always)]
    unsafe fn load(&self, dst: *mut c_void, len: u32) -> i64 {
        // SAFETY: the caller's `dst` holds `len` bytes; `skb` is the program's own context.
        unsafe { bpf_skb_load_bytes(self.skb.skb as *const c_void, 0, dst, len) }
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: reading a field of the program's own context.
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn queue(&self) -> u32 {
        // SAFETY: reading a field of the program's own context.
        unsafe { (*self.skb.skb).queue_mapping }
    }

    const PULLS: bool = true;

    #[inline(always)]
    fn linear(&self) -> (usize, usize) {
        (self.data(), self.data_end())
    }

    #[inline(always)]
    fn pull(&self, len: u32) -> bool {
        self.pull_data(len).is_ok()
    }

    #[inline(always)]
    fn vlan_tag(&self) -> Option<u16> {
        // SAFETY: reading fields of the program's own context.
        let (present, tci) = unsafe { ((*self.skb.skb).vlan_present, (*self.skb.skb).vlan_tci) };
        (present != 0).then_some((tci & 0x0fff) as u16)
    }
}

/// Counts the packet in direction `dir`'s counters and samples it if its turn has come.
#[inline(always)]
pub fn sample<P: Packet>(ctx: &P, dir: Direction) {
    // Both lookups are array lookups, which the verifier inlines.
    let slot = IFSLOT.get(ctx.ifindex()).copied().unwrap_or(0);
    let slot = if slot < IF_SLOTS { slot } else { 0 };
    let Some(stats) = STATS.get_ptr_mut(stats_index(slot, dir)) else {
        return;
    };
    // SAFETY: a per-CPU entry of this interface and direction; the programs run with
    // migration disabled, and one direction's program does not nest on a CPU (TC egress
    // runs with bottom halves off, so neither XDP nor TC ingress interrupts it, and they use
    // the other entry anyway).
    let stats = unsafe { &mut *stats };
    stats.seen += 1;
    // MODE is a load-time constant: the verifier keeps only the paths the mode takes.
    let mode = flows::mode();
    if mode & MODE_FLOWS != 0 {
        flows::count(ctx, dir, stats);
    }
    if mode & MODE_PACKETS == 0 {
        return;
    }
    if stats.countdown > 0 {
        stats.countdown -= 1;
        return;
    }
    // SAFETY: reading globals that userspace set before load; helpers take no pointers.
    let (rate, random, ts) = unsafe {
        (
            read_volatile(&SAMPLE_RATE),
            bpf_get_prandom_u32(),
            bpf_ktime_get_boot_ns(),
        )
    };
    stats.countdown = next_skip(rate, random);
    stats.sampled += 1;

    let wire_len = ctx.wire_len();
    // SAFETY: reading a global set before load.
    let snaplen = unsafe { read_volatile(&SNAPLEN) };
    let want = min(min(wire_len, snaplen), MAX_SNAPLEN as u32);
    // The reader drains on a timer; wake it early only when the ring is filling up,
    // looked at every WAKEUP_EVERY samples per CPU. (A wakeup per sample costs the reader
    // far more than the sample costs here.)
    stats.unwoken += 1;
    let mut flags = BPF_RB_NO_WAKEUP;
    if stats.unwoken >= WAKEUP_EVERY {
        stats.unwoken = 0;
        // SAFETY: reading a global set before load.
        let wake_at = unsafe { read_volatile(&WAKEUP_BYTES) };
        if SAMPLES.query(u64::from(BPF_RB_AVAIL_DATA)) >= u64::from(wake_at) {
            flags = BPF_RB_FORCE_WAKEUP;
        }
    }
    let head = Head {
        wire_len,
        ts,
        flags,
        dir,
    };
    // The smallest slot that holds `want` bytes (SLOT_SIZES): small frames, the ones that
    // come at the highest rates, take the least ring.
    let done = if want <= SLOT_SIZES[0] as u32 {
        record::<P, { SLOT_SIZES[0] }>(ctx, want, &head)
    } else if want <= SLOT_SIZES[1] as u32 {
        record::<P, { SLOT_SIZES[1] }>(ctx, want, &head)
    } else {
        record::<P, MAX_SNAPLEN>(ctx, want, &head)
    };
    if done.is_none() {
        stats.ring_full += 1;
    }
}

/// What goes in a record besides the bytes.
struct Head {
    wire_len: u32,
    ts: u64,
    flags: u32,
    dir: Direction,
}

/// Reserves a record with an `N`-byte slot, copies `want` (1..=N) bytes of the frame into
/// it and submits it with `head.flags`. None when the ring is full.
#[inline(always)]
fn record<P: Packet, const N: usize>(ctx: &P, want: u32, head: &Head) -> Option<()> {
    let mut entry = SAMPLES.reserve::<Sample<N>>(0)?;
    let record = entry.as_mut_ptr();
    let mut cap_len = 0;
    if want > 0 {
        // Give the verifier a provable range 1..=N; equal to `want` here (want <= N). The
        // volatile read keeps LLVM from dropping the mask as a no-op (it knows want <= N
        // from the caller's branch; the verifier, after a spill, may not).
        // SAFETY: reading a local.
        let w = unsafe { read_volatile(&want) };
        let len = (w.wrapping_sub(1) & (N as u32 - 1)) + 1;
        // SAFETY: `record` points at a reserved Sample<N> whose data holds N >= len bytes.
        let ret = unsafe { ctx.load((*record).data.as_mut_ptr().cast::<c_void>(), len) };
        if ret == 0 {
            cap_len = len;
        } else {
            // Submitted with cap_len 0: userspace counts it as a decode error, not a loss.
            error!(ctx, "loading {} bytes of the packet failed: {}", len, ret);
        }
    }
    // The tag the kernel took out of the bytes, if any: userspace puts it back in the row.
    let vlan = ctx.vlan_tag();
    // SAFETY: writing the header fields of the reserved record.
    unsafe {
        (*record).header.ts_boot_ns = head.ts;
        (*record).header.wire_len = head.wire_len;
        // cap_len <= N <= MAX_SNAPLEN, which fits 16 bits (checked in flowmetrix-common).
        (*record).header.cap_len = cap_len as u16;
        (*record).header.ifindex = ctx.ifindex();
        (*record).header.rx_queue = ctx.queue() as u16;
        (*record).header.direction = head.dir as u16;
        (*record).header.vlan = vlan.map_or(0, |id| VLAN_PRESENT | id);
    }
    entry.submit(u64::from(head.flags));
    Some(())
}
