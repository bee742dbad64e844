//! Kernel cost per packet, measured by the kernel itself (BPF_PROG_TEST_RUN, repeated):
//! a program that does nothing (the baseline), ours with the packet sampled out, and ours
//! with the packet sampled in (ring-buffer reservation and copy), at 64- and 1500-byte
//! frames; for the XDP program against an empty XDP program, and for the TC egress program
//! against an empty TC program. Needs root. Run with `cargo xtask bench` (or
//! `cargo bench --bench kernel`).

// The loader the kernel tests use (tests/kernel.rs); the bench needs only load and run.
#[path = "../tests/common/xdp.rs"]
#[allow(dead_code)]
mod xdp;

use etherparse::PacketBuilder;
use flowmetrix_common::{
    BASELINE_PROGRAM_NAME, PROGRAM_NAME, TC_BASELINE_PROGRAM_NAME, TC_EGRESS_PROGRAM_NAME,
};
use xdp::{Loaded, Settings};

const REPEAT: u32 = 1_000_000;
const RUNS: usize = 7;

fn frame(len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(40_000, 53)
        .write(&mut f, &vec![0u8; len - 42])
        .unwrap();
    f
}

/// ns per packet, median of RUNS runs of REPEAT packets each (a fresh load per run, so the
/// ring buffer starts empty and is big enough for every sample).
fn ns_per_packet(program: &'static str, sample_rate: u32, packet: &[u8]) -> f64 {
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let loaded = Loaded::load(Settings {
                program,
                sample_rate,
                snaplen: 192,
                ring_bytes: 512 << 20,
                // Never wake: in steady state the reader keeps up and is not woken either.
                wakeup_bytes: u32::MAX,
            });
            let run = loaded.run(packet, REPEAT);
            let pass = if xdp::is_tc(program) { u32::MAX } else { 2 };
            assert_eq!(run.action, pass, "XDP_PASS / TC_ACT_UNSPEC");
            run.per_run.as_nanos() as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

fn main() {
    // cargo bench passes --bench; nothing to parse.
    println!(
        "kernel cost per packet, BPF_PROG_TEST_RUN, {REPEAT} packets a run, median of {RUNS} runs"
    );
    println!(
        "{:<5} {:<12} {:>14} {:>14} {:>14} {:>12} {:>12}",
        "hook",
        "frame",
        "baseline ns",
        "sampled-out ns",
        "sampled-in ns",
        "out - base",
        "in - base"
    );
    for (hook, baseline, program) in [
        ("xdp", BASELINE_PROGRAM_NAME, PROGRAM_NAME),
        ("tc", TC_BASELINE_PROGRAM_NAME, TC_EGRESS_PROGRAM_NAME),
    ] {
        for len in [64, 1500] {
            let packet = frame(len);
            let base = ns_per_packet(baseline, 1, &packet);
            // Rate 1 000 000: after the first packet, every one is skipped.
            let out = ns_per_packet(program, 1_000_000, &packet);
            let inn = ns_per_packet(program, 1, &packet);
            println!(
                "{hook:<5} {:<12} {base:>14.1} {out:>14.1} {inn:>14.1} {:>12.1} {:>12.1}",
                format!("{len} bytes"),
                out - base,
                inn - base
            );
        }
    }
}
