//! Sampling (`--mode packets|both`): for one packet in `SAMPLE_RATE` per CPU and direction
//! (with a randomised skip so periodic traffic does not alias with the sampler), reserve a
//! [`Sample`] in the `SAMPLES` ring buffer (with the smallest slot that fits) holding the
//! kernel timestamp, the frame's full length, its direction, the VLAN tag the kernel took
//! out of the frame (TC) and its first `SNAPLEN` bytes. The countdown is kept per interface
//! and direction, in the counters [`crate::count`] hands over.

use core::{cmp::min, ffi::c_void, ptr::read_volatile};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::bpf_get_prandom_u32,
    macros::map,
    maps::RingBuf,
};
use aya_log_ebpf::error;
use flowmetrix_common::{
    CpuStats, Direction, MAX_SNAPLEN, SAMPLE_DNS_ONLY, SLOT_SIZES, Sample, VLAN_PRESENT,
    WAKEUP_EVERY, next_skip,
};

use crate::packet::{Now, Packet, cgroup_of};

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

/// Samples the packet (direction `dir`, counted in `stats`) if its turn has come: whether
/// it did (the ring may have had no room).
#[inline(always)]
pub fn sample<P: Packet>(ctx: &P, dir: Direction, stats: &mut CpuStats, now: &Now) -> bool {
    if stats.countdown > 0 {
        stats.countdown -= 1;
        return false;
    }
    // SAFETY: reading a global that userspace set before load.
    let rate = unsafe { read_volatile(&SAMPLE_RATE) };
    // A random number only when there is a skip to draw (1:1 has none).
    // SAFETY: no arguments.
    let random = if rate > 1 {
        unsafe { bpf_get_prandom_u32() }
    } else {
        0
    };
    stats.countdown = next_skip(rate, random);
    stats.sampled += 1;
    if submit(ctx, dir, stats, now, 0).is_none() {
        stats.ring_full += 1;
    }
    true
}

/// A DNS packet the sampler did not take (flows mode), passed to the ring for the DNS
/// transactions alone ([`SAMPLE_DNS_ONLY`]).
#[inline(always)]
pub fn copy_dns<P: Packet>(ctx: &P, dir: Direction, stats: &mut CpuStats, now: &Now) {
    stats.dns_copies += 1;
    if submit(ctx, dir, stats, now, SAMPLE_DNS_ONLY).is_none() {
        stats.dns_ring_full += 1;
    }
}

/// Puts the packet in the ring with the `flag` bits in its direction. None when the ring
/// had no room.
#[inline(always)]
fn submit<P: Packet>(
    ctx: &P,
    dir: Direction,
    stats: &mut CpuStats,
    now: &Now,
    flag: u16,
) -> Option<()> {
    let ts = now.get();
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
        flag,
    };
    // The smallest slot that holds `want` bytes (SLOT_SIZES): small frames, the ones that
    // come at the highest rates, take the least ring.
    if want <= SLOT_SIZES[0] as u32 {
        record::<P, { SLOT_SIZES[0] }>(ctx, want, &head)
    } else if want <= SLOT_SIZES[1] as u32 {
        record::<P, { SLOT_SIZES[1] }>(ctx, want, &head)
    } else if want <= SLOT_SIZES[2] as u32 {
        record::<P, { SLOT_SIZES[2] }>(ctx, want, &head)
    } else {
        record::<P, MAX_SNAPLEN>(ctx, want, &head)
    }
}

/// What goes in a record besides the bytes.
struct Head {
    wire_len: u32,
    ts: u64,
    flags: u32,
    dir: Direction,
    /// Bits or-ed into the record's direction ([`SAMPLE_DNS_ONLY`]).
    flag: u16,
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
        // volatile read keeps LLVM from dropping the mask (and the bound) as a no-op (it
        // knows want <= N from the caller's branch; the verifier, after a spill, may not).
        // The mask bounds 1..=N for a power of two; a slot that is not one (192, the default
        // snap length) is bounded once more by a compare.
        // SAFETY: reading a local.
        let w = unsafe { read_volatile(&want) };
        let mut len = (w.wrapping_sub(1) & (N.next_power_of_two() as u32 - 1)) + 1;
        if !N.is_power_of_two() && len > N as u32 {
            len = N as u32;
        }
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
        (*record).header.direction = head.dir as u16 | head.flag;
        (*record).header.vlan = vlan.map_or(0, |id| VLAN_PRESENT | id);
        (*record).header.cgroup_id = cgroup_of(ctx, head.dir);
    }
    entry.submit(u64::from(head.flags));
    Some(())
}
