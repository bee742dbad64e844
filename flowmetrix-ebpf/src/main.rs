//! FlowMetrix XDP sampler.
//!
//! For one packet in `SAMPLE_RATE` (per CPU, with a randomised skip so periodic traffic does
//! not alias with the sampler), reserve a [`Sample`] in the `SAMPLES` ring buffer (with the
//! smallest slot that fits) holding the kernel timestamp, the frame's full wire length and
//! its first `SNAPLEN` bytes. Every run updates per-CPU counters. The program never drops traffic: it always returns XDP_PASS.
#![no_std]
#![no_main]

use core::{cmp::min, ffi::c_void, ptr::read_volatile};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, xdp_action},
    helpers::generated::{
        bpf_get_prandom_u32, bpf_ktime_get_boot_ns, bpf_xdp_get_buff_len, bpf_xdp_load_bytes,
    },
    macros::{map, xdp},
    maps::{PerCpuArray, RingBuf},
    programs::XdpContext,
};
use aya_log_ebpf::error;
use flowmetrix_common::{CpuStats, MAX_SNAPLEN, SLOT_SIZES, Sample, WAKEUP_EVERY, next_skip};

/// 1 in SAMPLE_RATE packets is sampled. Set by userspace at load time.
#[unsafe(no_mangle)]
static SAMPLE_RATE: u32 = 1;

/// Bytes of each sampled frame to copy (1..=MAX_SNAPLEN). Set by userspace at load time.
#[unsafe(no_mangle)]
static SNAPLEN: u32 = flowmetrix_common::DEFAULT_SNAPLEN;

/// Bytes waiting in the ring above which the reader is woken early. Set by userspace.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u32 = 1 << 20;

/// Sized by userspace at load time (`--ring-bytes`).
#[map]
static SAMPLES: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

#[map]
static STATS: PerCpuArray<CpuStats> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn flowmetrix(ctx: XdpContext) -> u32 {
    sample(&ctx);
    xdp_action::XDP_PASS
}

/// An XDP program that does nothing: the baseline for `cargo xtask bench`'s per-packet
/// cost (BPF_PROG_TEST_RUN). Never attached by the collector.
#[xdp]
pub fn flowmetrix_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn sample(ctx: &XdpContext) {
    let Some(stats) = STATS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU slot; XDP runs with migration disabled and does not nest on a CPU.
    let stats = unsafe { &mut *stats };
    stats.seen += 1;
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

    // SAFETY: `ctx.ctx` is the program's own xdp_md; reading a global set before load.
    let wire_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as u32;
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
    // The smallest slot that holds `want` bytes (SLOT_SIZES): small frames, the ones that
    // come at the highest rates, take the least ring.
    let done = if want <= SLOT_SIZES[0] as u32 {
        record::<{ SLOT_SIZES[0] }>(ctx, want, wire_len, ts, flags)
    } else if want <= SLOT_SIZES[1] as u32 {
        record::<{ SLOT_SIZES[1] }>(ctx, want, wire_len, ts, flags)
    } else {
        record::<MAX_SNAPLEN>(ctx, want, wire_len, ts, flags)
    };
    if done.is_none() {
        stats.ring_full += 1;
    }
}

/// Reserves a record with an `N`-byte slot, copies `want` (1..=N) bytes of the frame into
/// it and submits it with `flags`. None when the ring is full.
#[inline(always)]
fn record<const N: usize>(
    ctx: &XdpContext,
    want: u32,
    wire_len: u32,
    ts: u64,
    flags: u32,
) -> Option<()> {
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
        // SAFETY: `record` points at a reserved Sample<N> whose data holds N bytes.
        let ret = unsafe {
            bpf_xdp_load_bytes(
                ctx.ctx,
                0,
                (*record).data.as_mut_ptr().cast::<c_void>(),
                len,
            )
        };
        if ret == 0 {
            cap_len = len;
        } else {
            // Submitted with cap_len 0: userspace counts it as a decode error, not a loss.
            error!(ctx, "bpf_xdp_load_bytes({}) failed: {}", len, ret);
        }
    }
    // SAFETY: writing the header fields of the reserved record.
    unsafe {
        (*record).header.ts_boot_ns = ts;
        (*record).header.wire_len = wire_len;
        (*record).header.cap_len = cap_len;
        (*record).header.ifindex = ctx.ingress_ifindex() as u32;
        (*record).header.rx_queue = ctx.rx_queue_index();
    }
    entry.submit(u64::from(flags));
    Some(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
