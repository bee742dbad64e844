//! FlowMetrix samplers: an XDP program for ingress and TC (sched_cls) programs for ingress
//! and egress, all calling the same [`sampler`] and writing to the same ring buffer and
//! counters (per direction). The programs never change a packet's fate: XDP always returns
//! XDP_PASS, TC always TC_ACT_UNSPEC (go on with the next program or the default action).
#![no_std]
// The atomic add and or intrinsics (see flows::bump).
#![allow(internal_features)]
#![feature(core_intrinsics)]
// Single unaligned packet loads (see flows::load).
#![feature(asm_experimental_arch)]
#![no_main]

mod flows;
mod sampler;

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use flowmetrix_common::Direction;

#[xdp]
pub fn flowmetrix(ctx: XdpContext) -> u32 {
    sampler::sample(&ctx, Direction::Ingress);
    xdp_action::XDP_PASS
}

/// TC ingress (`--ingress-hook tc`).
#[classifier]
pub fn flowmetrix_in(ctx: TcContext) -> i32 {
    sampler::sample(&ctx, Direction::Ingress);
    TC_ACT_UNSPEC
}

/// TC egress.
#[classifier]
pub fn flowmetrix_eg(ctx: TcContext) -> i32 {
    sampler::sample(&ctx, Direction::Egress);
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
