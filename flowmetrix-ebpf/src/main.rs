//! FlowMetrix samplers: an XDP program for ingress and TC (sched_cls) programs for ingress
//! and egress, all calling the same [`count`] and writing to the same ring buffer and
//! counters (per direction). The programs never change a packet's fate: XDP always returns
//! XDP_PASS, TC always TC_ACT_UNSPEC (go on with the next program or the default action).
#![no_std]
// The atomic add and or intrinsics (see flows::bump).
#![allow(internal_features)]
#![feature(core_intrinsics)]
// Single unaligned packet loads (see flows::load).
#![feature(asm_experimental_arch)]
#![no_main]

//!
//! Every run counts the packet in the per-CPU counters of its interface (the slot userspace
//! gave it in `IFSLOT`) and direction; the load-time `MODE` chooses what runs then: counting
//! every packet in the flow maps ([`flows`], `flows`), sampling ([`sampler`], `packets`), or
//! both. Both read the packet through [`packet::Packet`].

mod drops;
mod flows;
mod handshake;
mod packet;
mod sampler;
mod tcp;

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, map, xdp},
    maps::{Array, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use flowmetrix_common::{
    CpuStats, DIRECTIONS, Direction, IF_SLOTS, MAX_IFINDEX,
    flow_key::{MODE_FLOWS, MODE_PACKETS},
    stats_index,
};

use packet::{Now, Packet};

/// The mode bits (`MODE_PACKETS`, `MODE_FLOWS`). Set by userspace at load time, as a
/// constant: the verifier drops the path a mode does not take.
#[unsafe(no_mangle)]
static MODE: u32 = MODE_PACKETS;

/// Indexed by interface slot and [`Direction`] ([`stats_index`]).
#[map]
static STATS: PerCpuArray<CpuStats> = PerCpuArray::with_max_entries(IF_SLOTS * DIRECTIONS, 0);

/// An interface's slot in STATS, by ifindex; 0 (no slot) unless userspace set one.
#[map]
pub(crate) static IFSLOT: Array<u32> = Array::with_max_entries(MAX_IFINDEX, 0);

/// Counts the packet in direction `dir`'s counters, in its flow (`flows`), and samples it
/// if its turn has come (`packets`).
#[inline(always)]
fn count<P: Packet>(ctx: &P, dir: Direction) {
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
    // SAFETY: reading a global set before load.
    let mode = unsafe { read_volatile(&MODE) };
    // The clock, read once for both (`both` mode).
    let now = Now::new();
    let dns = mode & MODE_FLOWS != 0 && flows::count(ctx, dir, stats, &now);
    if mode & MODE_PACKETS != 0 && sampler::sample(ctx, dir, stats, &now) {
        return;
    }
    // A DNS packet reaches the DNS transactions whatever the sample rate.
    if dns {
        sampler::copy_dns(ctx, dir, stats, &now);
    }
}

#[xdp]
pub fn flowmetrix(ctx: XdpContext) -> u32 {
    count(&ctx, Direction::Ingress);
    xdp_action::XDP_PASS
}

/// TC ingress (`--ingress-hook tc`).
#[classifier]
pub fn flowmetrix_in(ctx: TcContext) -> i32 {
    count(&ctx, Direction::Ingress);
    TC_ACT_UNSPEC
}

/// TC egress.
#[classifier]
pub fn flowmetrix_eg(ctx: TcContext) -> i32 {
    count(&ctx, Direction::Egress);
    TC_ACT_UNSPEC
}

/// An XDP program that does nothing: the baseline for `cargo xtask bench`'s per-packet
/// cost (BPF_PROG_TEST_RUN). Never attached by the collector.
#[xdp]
pub fn flowmetrix_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// A TC program that does nothing: the TC programs' baseline. Never attached.
#[classifier]
pub fn flowmetrix_nop(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
