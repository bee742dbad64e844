//! Kernel cost per packet, measured by the kernel itself (BPF_PROG_TEST_RUN, repeated):
//! a program that does nothing (the baseline), ours with the packet sampled out, and ours
//! with the packet sampled in (ring-buffer reservation and copy), at 64- and 1500-byte
//! frames; for the XDP program against an empty XDP program, and for the TC egress program
//! against an empty TC program. Then flows (issue 18): the cost per packet in `flows` and
//! `both` mode (every packet counted in the flow map), the kernel memory of one flow map of
//! 100 000 entries, and what userspace's `collect()` costs at 100 000 flows. Needs root.
//! Run with `cargo xtask bench` (or `cargo bench --bench kernel`).

// The loader the kernel tests use (tests/root_kernel/); the bench needs only load and run.
#[path = "../tests/common/xdp.rs"]
#[allow(dead_code)]
mod xdp;

use etherparse::PacketBuilder;
use std::time::{Duration, Instant};

use flowmetrix_common::{
    BASELINE_PROGRAM_NAME, PROGRAM_NAME, TC_BASELINE_PROGRAM_NAME, TC_EGRESS_PROGRAM_NAME,
    flow_key::{MODE_FLOWS, MODE_PACKETS},
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
    ns_per_packet_in(program, MODE_PACKETS, sample_rate, packet)
}

/// [`ns_per_packet`] in `mode` (MODE_* bits).
fn ns_per_packet_in(program: &'static str, mode: u32, sample_rate: u32, packet: &[u8]) -> f64 {
    ns_per_packet_of(None, program, mode, sample_rate, packet)
}

/// [`ns_per_packet_in`] with `object` (None: the embedded one).
fn ns_per_packet_of(
    object: Option<&'static [u8]>,
    program: &'static str,
    mode: u32,
    sample_rate: u32,
    packet: &[u8],
) -> f64 {
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let loaded = Loaded::load(Settings {
                object,
                program,
                sample_rate,
                snaplen: 192,
                ring_bytes: 512 << 20,
                // Never wake: in steady state the reader keeps up and is not woken either.
                wakeup_bytes: u32::MAX,
                mode,
                ..Default::default()
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
    if let Some(path) = std::env::var_os("FLOWMETRIX_BENCH_BEFORE") {
        return before_after(&path);
    }
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
    flows();
}

/// Distinct UDP flows (source address and port), 64 bytes each.
fn flow_frames(n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut f = Vec::new();
            PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([10, 1, (i >> 16) as u8, (i >> 8) as u8], [10, 0, 0, 2], 64)
                .udp(i as u16, 53)
                .write(&mut f, &[0u8; 22])
                .unwrap();
            f
        })
        .collect()
}

fn possible_cpus() -> u32 {
    // "0-1", "0-63", "0,2-5": count them.
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    s.trim()
        .split(',')
        .filter_map(|r| {
            let mut it = r.split('-').map(|n| n.parse::<u32>().ok());
            let a = it.next()??;
            let b = it.next().flatten().unwrap_or(a);
            Some(b - a + 1)
        })
        .sum()
}

fn flows() {
    println!();
    println!("flows: cost per packet (every packet counted in the flow map; one flow, a hit)");
    println!(
        "{:<5} {:<12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "hook", "frame", "baseline", "packets", "flows", "both", "flows-base", "both-base"
    );
    for (hook, baseline, program) in [
        ("xdp", BASELINE_PROGRAM_NAME, PROGRAM_NAME),
        ("tc", TC_BASELINE_PROGRAM_NAME, TC_EGRESS_PROGRAM_NAME),
    ] {
        for len in [64, 1500] {
            let packet = frame(len);
            let base = ns_per_packet(baseline, 1, &packet);
            // Packets and both: sampled out (rate 1 000 000), as in the table above.
            let packets = ns_per_packet(program, 1_000_000, &packet);
            let flows = ns_per_packet_in(program, MODE_FLOWS, 1, &packet);
            let both = ns_per_packet_in(program, MODE_PACKETS | MODE_FLOWS, 1_000_000, &packet);
            println!(
                "{hook:<5} {:<12} {base:>12.1} {packets:>12.1} {flows:>12.1} {both:>12.1} {:>12.1} {:>12.1}",
                format!("{len} bytes"),
                flows - base,
                both - base
            );
        }
    }

    // Memory: the memlock the kernel charges for one map (/proc/self/fdinfo).
    const N: u32 = 100_000;
    let memlock = |entries: u32| {
        let mut l = Loaded::load(Settings {
            mode: MODE_FLOWS,
            flow_entries: entries,
            ..Default::default()
        });
        l.flow_maps().map_memlock().expect("memlock in fdinfo")
    };
    let m = memlock(N);
    // One entry more, same bucket count (a power of two): the size of one element.
    let elem = memlock(N + 1) - m;
    let cpus = possible_cpus();
    // The kernel's htab_map_mem_usage() for a preallocated hash map: max_entries + one spare
    // element per possible CPU, a pointer to it per CPU, and HASHTAB_MAP_LOCK_COUNT (8) ints
    // of bucket-lock state per CPU; the rest does not depend on the CPU count.
    let per_cpu = elem + 8 + 8 * 4;
    let m64 = m + per_cpu * u64::from(64u32.saturating_sub(cpus));
    println!();
    println!("flows: memory of one flow map of {N} entries (two maps are loaded)");
    println!(
        "memlock {m} bytes = {:.1} MiB, {:.0} bytes per flow; element {elem} bytes; {cpus} possible CPUs",
        m as f64 / (1 << 20) as f64,
        m as f64 / f64::from(N)
    );
    println!(
        "64 possible CPUs: {m64} bytes = {:.1} MiB (+{} CPUs of {per_cpu} bytes: a spare element, its pointer, lock state)",
        m64 as f64 / (1 << 20) as f64,
        64u32.saturating_sub(cpus)
    );

    // Userspace: collect() at 100 000 flows (flip, grace period, batch read and delete).
    let frames = flow_frames(N);
    let mut l = Loaded::load(Settings {
        mode: MODE_FLOWS,
        flow_entries: N,
        ..Default::default()
    });
    let mut times = Vec::new();
    let mut grace = Vec::new();
    for _ in 0..RUNS {
        // Fill the active map; the first collect() flips to the other, which is filled next.
        for f in &frames {
            l.run(f, 1);
        }
        let t = Instant::now();
        let c = l.flow_maps().collect().expect("collect");
        times.push(t.elapsed());
        assert_eq!(c.map_entries, N as usize, "every flow in the map");
        // The grace period alone: a collection of an empty map.
        let t = Instant::now();
        let c = l.flow_maps().collect().expect("collect");
        grace.push(t.elapsed());
        assert_eq!(c.map_entries, 0);
    }
    times.sort();
    grace.sort();
    let (t, g) = (times[RUNS / 2], grace[RUNS / 2]);
    println!();
    println!(
        "flows: collect() of {N} flows: {:.1} ms (median of {RUNS}), {:.0} ns per flow; of an empty map (the grace period): {:.2} ms",
        ms(t),
        t.as_nanos() as f64 / f64::from(N),
        ms(g)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `FLOWMETRIX_BENCH_BEFORE=OBJECT`: the TC egress program of an earlier build of the kernel
/// programs (the object file build.rs leaves in OUT_DIR) against the embedded one and the
/// empty program, measured in turn in one run, three rounds; the median of each.
fn before_after(path: &std::ffi::OsStr) {
    let bytes = std::fs::read(path).expect("the earlier object");
    // Loaded programs borrow nothing from the bytes after load, but Settings wants 'static.
    let before: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    println!(
        "TC egress, before ({}) and after, BPF_PROG_TEST_RUN, {REPEAT} packets a run, median of {RUNS} runs, 3 rounds",
        path.to_string_lossy()
    );
    println!(
        "{:<12} {:<12} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "case", "frame", "baseline", "before", "after", "before-base", "after-base"
    );
    let cases: [(&str, u32, u32); 3] = [
        ("sampled-out", MODE_PACKETS, 1_000_000),
        ("sampled-in", MODE_PACKETS, 1),
        ("flows", MODE_FLOWS, 1),
    ];
    for (case, mode, rate) in cases {
        for len in [64, 1500] {
            let packet = frame(len);
            let (mut base, mut old, mut new) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..3 {
                base.push(ns_per_packet(TC_BASELINE_PROGRAM_NAME, 1, &packet));
                old.push(ns_per_packet_of(
                    Some(before),
                    TC_EGRESS_PROGRAM_NAME,
                    mode,
                    rate,
                    &packet,
                ));
                new.push(ns_per_packet_of(
                    None,
                    TC_EGRESS_PROGRAM_NAME,
                    mode,
                    rate,
                    &packet,
                ));
            }
            let median = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (b, o, n) = (median(base), median(old), median(new));
            println!(
                "{case:<12} {:<12} {b:>10.1} {o:>10.1} {n:>10.1} {:>12.1} {:>12.1}",
                format!("{len} bytes"),
                o - b,
                n - b
            );
        }
    }
}
