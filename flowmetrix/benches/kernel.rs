//! Kernel cost per packet, measured by the kernel itself (BPF_PROG_TEST_RUN, repeated):
//! a program that does nothing (the baseline), ours with the packet sampled out, and ours
//! with the packet sampled in (ring-buffer reservation and copy), at 64- and 1500-byte
//! frames; for the XDP program against an empty XDP program, and for the TC egress program
//! against an empty TC program. Beside them, in the same run:
//! - the Go original's XDP object when `FLOWMETRIX_BENCH_GO_OBJECT` names it (BENCHMARKS.md
//!   says how to get it; it is not part of this repository), loaded as it is with its ring
//!   made as large as ours so that every record fits;
//! - another build of our object when `FLOWMETRIX_BENCH_BEFORE_OBJECT` names it (a change's
//!   before and after, measured in one run).
//!
//! Variants are measured interleaved (a fresh load of each in turn, RUNS times), so a drift of
//! the machine's load moves them all. Then the cost with the packet's interface in counter
//! slot 1, 64 and 511 (interfaces attached), then flows (issue 18): the cost per packet in
//! `flows` and `both` mode (every packet counted in the flow map), the cost of a packet with
//! 1 000, 100 000 and 1 000 000 live flows in the map, the kernel memory of one flow map of
//! 100 000 entries, and what userspace's `collect()` costs at 100 000 flows. Needs root.
//! Run with `cargo xtask bench` (or `cargo bench --bench kernel`).

// The loader the kernel tests use (tests/root_kernel/); the bench needs only load and run.
#[path = "../tests/common/xdp.rs"]
#[allow(dead_code)]
mod xdp;

/// The TCP handshake tracking's cost (section `handshake`).
#[path = "kernel_parts/handshake.rs"]
mod handshake;

use etherparse::PacketBuilder;
use std::time::{Duration, Instant};

use aya::{
    EbpfLoader,
    maps::RingBuf,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use flowmetrix_common::{
    BASELINE_PROGRAM_NAME, IF_SLOTS, PROGRAM_NAME, TC_BASELINE_PROGRAM_NAME,
    TC_EGRESS_PROGRAM_NAME,
    flow_key::{MODE_FLOWS, MODE_PACKETS},
};
use xdp::{Loaded, Settings};

const REPEAT: u32 = 1_000_000;
const RUNS: usize = 7;
/// Ring bytes for the sampled-in runs: every one of REPEAT samples fits.
const RING_BYTES: u32 = 512 << 20;
/// The interface BPF_PROG_TEST_RUN runs a packet on (loopback).
const TEST_RUN_IFINDEX: u32 = 1;

/// The Go original's object (`internal/bpf/sampler_kern_bpfel.o`), its program and ring.
const GO_OBJECT_VAR: &str = "FLOWMETRIX_BENCH_GO_OBJECT";
const GO_PROGRAM: &str = "sampler";
const GO_RING: &str = "rb";
/// Another build of our object, measured beside the embedded one.
const BEFORE_OBJECT_VAR: &str = "FLOWMETRIX_BENCH_BEFORE_OBJECT";

fn frame(len: usize) -> Vec<u8> {
    udp_to(9999, len)
}

/// A UDP frame of `len` bytes to `port`: 53 is a DNS packet, which flows mode passes to the
/// ring; [`frame`] is not.
fn udp_to(port: u16, len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(40_000, port)
        .write(&mut f, &vec![0u8; len - 42])
        .unwrap();
    f
}

/// An object file named by environment variable `var`, read once (None: not given).
fn object_from(var: &str) -> Option<&'static [u8]> {
    let path = std::env::var_os(var)?;
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("{var}={}: {e}", path.to_string_lossy()));
    Some(Vec::leak(bytes))
}

/// What one measured variant loads.
#[derive(Clone, Copy)]
enum Variant {
    /// A program of our object (`Settings::object`: the embedded one or another build).
    Ours(Settings),
    /// The Go original's XDP program.
    Go(&'static [u8]),
    /// Either, sampling every packet into a ring of [`WARM_RING`] bytes drained between
    /// batches of half of it, as the collector's reader keeps it: the ring's memory is
    /// reused, where the runs above stream every record to memory not touched before.
    Warm(&'static Variant),
}

/// The collector's default `--ring-bytes`.
const WARM_RING: u32 = 8 << 20;

/// Our `program` in `mode` at `sample_rate`, from `object` (None: the embedded one).
fn ours(
    program: &'static str,
    mode: u32,
    sample_rate: u32,
    object: Option<&'static [u8]>,
) -> Variant {
    Variant::Ours(Settings {
        program,
        sample_rate,
        snaplen: 192,
        ring_bytes: RING_BYTES,
        // Never wake: in steady state the reader keeps up and is not woken either.
        wakeup_bytes: u32::MAX,
        mode,
        object,
        ..Default::default()
    })
}

/// ns per packet of one fresh load of `v` running `packet` REPEAT times, and the program's
/// (BPF instructions, JITed bytes).
fn run_once(v: Variant, packet: &[u8]) -> (f64, (u32, u32)) {
    match v {
        Variant::Warm(inner) => (warm(*inner, packet), (0, 0)),
        Variant::Ours(s) => {
            let loaded = Loaded::load(s);
            let run = loaded.run(packet, REPEAT);
            let pass = if xdp::is_tc(s.program) { u32::MAX } else { 2 };
            assert_eq!(run.action, pass, "XDP_PASS / TC_ACT_UNSPEC");
            (run.per_run.as_nanos() as f64, loaded.sizes())
        }
        Variant::Go(object) => {
            let mut ebpf = EbpfLoader::new()
                .map_max_entries(GO_RING, RING_BYTES)
                .load(object)
                .expect("load the Go original's object (needs root)");
            let prog: &mut Xdp = ebpf
                .program_mut(GO_PROGRAM)
                .expect("its XDP program")
                .try_into()
                .expect("an XDP program");
            prog.load().expect("the verifier accepts it");
            let info = prog.info().expect("program info");
            let sizes = (info.size_translated().unwrap_or(0) / 8, info.size_jitted());
            let r = prog
                .test_run(TestRunOptions {
                    data_in: Some(packet),
                    repeat: REPEAT,
                    ..Default::default()
                })
                .expect("BPF_PROG_TEST_RUN");
            assert_eq!(r.return_value, 2, "XDP_PASS");
            (r.duration.as_nanos() as f64, sizes)
        }
    }
}

/// ns per packet of `v` (sampling every packet) with a [`WARM_RING`]-byte ring drained
/// between batches, at least REPEAT packets in all.
fn warm(v: Variant, packet: &[u8]) -> f64 {
    // A record: the ring's 8-byte header and the sample, rounded up to 8 bytes.
    let record = |sample: usize| (8 + sample).div_ceil(8) * 8;
    let (mut total, mut packets) = (Duration::ZERO, 0u64);
    match v {
        Variant::Ours(s) => {
            let mut l = Loaded::load(Settings {
                ring_bytes: WARM_RING,
                ..s
            });
            let want = packet.len().min(s.snaplen as usize);
            let slot = *flowmetrix_common::SLOT_SIZES
                .iter()
                .find(|&&n| n >= want)
                .expect("a slot");
            let size = record(size_of::<flowmetrix_common::SampleHeader>() + slot);
            let batch = WARM_RING / 2 / size as u32;
            while packets < u64::from(REPEAT) {
                total += l.run(packet, batch).per_run * batch;
                packets += u64::from(batch);
                l.drain();
            }
            assert_eq!(l.counters().ring_full, 0, "every sample fits");
        }
        Variant::Go(object) => {
            let mut ebpf = EbpfLoader::new()
                .map_max_entries(GO_RING, WARM_RING)
                .load(object)
                .expect("load the Go original's object (needs root)");
            let mut ring =
                RingBuf::try_from(ebpf.take_map(GO_RING).expect("its ring")).expect("a ring");
            let prog: &mut Xdp = ebpf
                .program_mut(GO_PROGRAM)
                .expect("its XDP program")
                .try_into()
                .expect("an XDP program");
            prog.load().expect("the verifier accepts it");
            // Its record: 66 bytes (2 of length, 64 of frame).
            let batch = WARM_RING / 2 / record(66) as u32;
            while packets < u64::from(REPEAT) {
                let r = prog
                    .test_run(TestRunOptions {
                        data_in: Some(packet),
                        repeat: batch,
                        ..Default::default()
                    })
                    .expect("BPF_PROG_TEST_RUN");
                total += r.duration * batch;
                packets += u64::from(batch);
                let mut n = 0;
                while ring.next().is_some() {
                    n += 1;
                }
                assert_eq!(n, batch, "every record fits");
            }
        }
        Variant::Warm(_) => unreachable!("not nested"),
    }
    total.as_nanos() as f64 / packets as f64
}

/// ns per packet of each variant: RUNS fresh loads of each, interleaved, the median of each.
/// Also each variant's (BPF instructions, JITed bytes).
fn medians(variants: &[Variant], packet: &[u8]) -> Vec<(f64, (u32, u32))> {
    let mut runs = vec![Vec::new(); variants.len()];
    let mut sizes = vec![(0, 0); variants.len()];
    for _ in 0..RUNS {
        for (i, v) in variants.iter().enumerate() {
            let (ns, sz) = run_once(*v, packet);
            runs[i].push(ns);
            sizes[i] = sz;
        }
    }
    runs.into_iter()
        .zip(sizes)
        .map(|(mut r, sz)| {
            r.sort_by(f64::total_cmp);
            (r[RUNS / 2], sz)
        })
        .collect()
}

/// Whether section `name` runs: every section unless the command line names some
/// (`cargo bench --bench kernel -- packets flows`; sections: packets, warm, slots, flows, growth,
/// memory, handshake).
fn section(name: &str) -> bool {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    named.is_empty() || named.iter().any(|a| a == name)
}

fn main() {
    let go = object_from(GO_OBJECT_VAR);
    let before = object_from(BEFORE_OBJECT_VAR);
    println!(
        "kernel cost per packet, BPF_PROG_TEST_RUN, {REPEAT} packets a run, median of {RUNS} runs (interleaved)"
    );
    println!(
        "Go original ({GO_OBJECT_VAR}): {}; before ({BEFORE_OBJECT_VAR}): {}",
        if go.is_some() { "given" } else { "not given" },
        if before.is_some() {
            "given"
        } else {
            "not given"
        },
    );
    println!(
        "{:<5} {:<10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "hook",
        "frame",
        "base",
        "go-b",
        "out-b",
        "in-b",
        "in/go",
        "out/go",
        "bef out",
        "bef in",
        "insns in",
        "jit in"
    );
    for (hook, baseline, program) in [
        ("xdp", BASELINE_PROGRAM_NAME, PROGRAM_NAME),
        ("tc", TC_BASELINE_PROGRAM_NAME, TC_EGRESS_PROGRAM_NAME),
    ] {
        for len in [64, 1500] {
            if !section("packets") {
                break;
            }
            let packet = frame(len);
            // Rate 1 000 000: after the first packet, every one is skipped.
            let mut v = vec![
                ours(baseline, MODE_PACKETS, 1, None),
                ours(program, MODE_PACKETS, 1_000_000, None),
                ours(program, MODE_PACKETS, 1, None),
            ];
            if let Some(o) = before {
                v.push(ours(program, MODE_PACKETS, 1_000_000, Some(o)));
                v.push(ours(program, MODE_PACKETS, 1, Some(o)));
            }
            // The Go original is an XDP program only.
            let go = go.filter(|_| hook == "xdp");
            if let Some(o) = go {
                v.push(Variant::Go(o));
            }
            let m = medians(&v, &packet);
            let base = m[0].0;
            let (out, inn, sizes) = (m[1].0 - base, m[2].0 - base, m[2].1);
            let (bout, binn) = match before {
                Some(_) => (fmt(m[3].0 - base), fmt(m[4].0 - base)),
                None => ("-".into(), "-".into()),
            };
            let gob = go.map(|_| m[m.len() - 1].0 - base);
            let ratio = |x: f64| gob.map_or("-".into(), |g| format!("{:.2}", x / g));
            println!(
                "{hook:<5} {:<10} {base:>8.1} {:>8} {:>8} {:>8} {:>8} {:>8} {bout:>8} {binn:>8} {:>8} {:>8}",
                format!("{len} B"),
                gob.map_or("-".into(), fmt),
                fmt(out),
                fmt(inn),
                ratio(inn),
                ratio(out),
                sizes.0,
                sizes.1,
            );
            if let Some(g) = go.map(|_| m[m.len() - 1].1) {
                println!(
                    "      (Go original: {} BPF instructions, {} JITed bytes)",
                    g.0, g.1
                );
            }
        }
    }
    if section("warm") {
        warm_table(go);
    }
    if section("slots") {
        slots();
    }
    if section("flows") {
        flows(before);
    }
    if section("growth") {
        flow_growth();
    }
    if section("memory") {
        memory();
    }
    if section("handshake") {
        handshake::table(before);
    }
}

/// Sampled in with the ring drained between batches ([`Variant::Warm`]), ours beside the Go
/// original.
fn warm_table(go: Option<&'static [u8]>) {
    println!();
    println!(
        "sampled in, a {} MiB ring drained between batches (the default --ring-bytes)",
        WARM_RING >> 20
    );
    println!(
        "{:<5} {:<10} {:>8} {:>8} {:>8} {:>8}",
        "hook", "frame", "base", "go-b", "in-b", "in/go"
    );
    for (hook, baseline, program) in [
        ("xdp", BASELINE_PROGRAM_NAME, PROGRAM_NAME),
        ("tc", TC_BASELINE_PROGRAM_NAME, TC_EGRESS_PROGRAM_NAME),
    ] {
        for len in [64, 1500] {
            let packet = frame(len);
            let inn: &'static Variant = Box::leak(Box::new(ours(program, MODE_PACKETS, 1, None)));
            let mut v = vec![ours(baseline, MODE_PACKETS, 1, None), Variant::Warm(inn)];
            let go = go.filter(|_| hook == "xdp");
            if let Some(o) = go {
                v.push(Variant::Warm(Box::leak(Box::new(Variant::Go(o)))));
            }
            let m = medians(&v, &packet);
            let base = m[0].0;
            let gob = go.map(|_| m[2].0 - base);
            println!(
                "{hook:<5} {:<10} {base:>8.1} {:>8} {:>8} {:>8}",
                format!("{len} B"),
                gob.map_or("-".into(), fmt),
                fmt(m[1].0 - base),
                gob.map_or("-".into(), |g| format!("{:.2}", (m[1].0 - base) / g)),
            );
        }
    }
}

/// A cost above the baseline, signed.
fn fmt(ns: f64) -> String {
    format!("{ns:+.1}")
}

/// Growth with interfaces: the packet's interface in slot 1, 64 or 511 of IFSLOT with that
/// many interfaces given a slot, sampled out and in. The per-packet work is the same two
/// array lookups whatever the count; what could change is where the counters lie.
fn slots() {
    println!();
    println!("interfaces attached: the packet's interface in the last of N slots (XDP, 64 B)");
    println!(
        "{:<10} {:>10} {:>10} {:>10}",
        "slots", "base", "out-b", "in-b"
    );
    let packet = frame(64);
    for n in [1u32, 64, IF_SLOTS - 1] {
        let mut runs = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..RUNS {
            for (i, rate) in [(0, 0), (1, 1_000_000), (2, 1)] {
                let Variant::Ours(s) = ours(
                    if i == 0 {
                        BASELINE_PROGRAM_NAME
                    } else {
                        PROGRAM_NAME
                    },
                    MODE_PACKETS,
                    rate.max(1),
                    None,
                ) else {
                    unreachable!()
                };
                let mut l = Loaded::load(s);
                // Interfaces TEST_RUN_IFINDEX + 1.. in the first slots, the packet's in slot n.
                for k in 1..n {
                    l.set_slot(TEST_RUN_IFINDEX + k, k);
                }
                l.set_slot(TEST_RUN_IFINDEX, n);
                runs[i].push(l.run(&packet, REPEAT).per_run.as_nanos() as f64);
            }
        }
        let [b, o, i] = runs.map(|mut r| {
            r.sort_by(f64::total_cmp);
            r[RUNS / 2]
        });
        println!("{n:<10} {b:>10.1} {:>10} {:>10}", fmt(o - b), fmt(i - b));
    }
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

fn flows(before: Option<&'static [u8]>) {
    println!();
    println!("flows: cost per packet (every packet counted in the flow map; one flow, a hit)");
    println!(
        "{:<5} {:<10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>6}",
        "hook",
        "frame",
        "base",
        "packets",
        "flows-b",
        "both-b",
        "both in",
        "bef flows",
        "bef both",
        "bef b.in",
        "insns"
    );
    for (hook, baseline, program) in [
        ("xdp", BASELINE_PROGRAM_NAME, PROGRAM_NAME),
        ("tc", TC_BASELINE_PROGRAM_NAME, TC_EGRESS_PROGRAM_NAME),
    ] {
        for len in [64, 1500] {
            let packet = frame(len);
            // Packets and both: sampled out (rate 1 000 000), as in the table above.
            let mut v = vec![
                ours(baseline, MODE_PACKETS, 1, None),
                ours(program, MODE_PACKETS, 1_000_000, None),
                ours(program, MODE_FLOWS, 1, None),
                ours(program, MODE_PACKETS | MODE_FLOWS, 1_000_000, None),
                // Both, every packet sampled in as well.
                ours(program, MODE_PACKETS | MODE_FLOWS, 1, None),
            ];
            if let Some(o) = before {
                v.push(ours(program, MODE_FLOWS, 1, Some(o)));
                v.push(ours(program, MODE_PACKETS | MODE_FLOWS, 1_000_000, Some(o)));
                v.push(ours(program, MODE_PACKETS | MODE_FLOWS, 1, Some(o)));
            }
            let m = medians(&v, &packet);
            let base = m[0].0;
            let [bf, bb, bi] = [5, 6, 7].map(|i| match before {
                Some(_) => fmt(m[i].0 - base),
                None => "-".into(),
            });
            println!(
                "{hook:<5} {:<10} {base:>8.1} {:>8.1} {:>8} {:>8} {:>8} {bf:>9} {bb:>9} {bi:>9} {:>6}",
                format!("{len} B"),
                m[1].0,
                fmt(m[2].0 - base),
                fmt(m[3].0 - base),
                fmt(m[4].0 - base),
                m[2].1.0,
            );
        }
    }
    // A DNS packet in flows mode: counted, and passed to the ring for the DNS transactions.
    println!();
    println!("flows, a DNS packet (UDP to port 53, 64 B): counted and passed to the ring");
    println!(
        "{:<5} {:>8} {:>10} {:>10} {:>12}",
        "hook", "base", "other-b", "dns-b", "bef dns-b"
    );
    for (hook, baseline, program) in [
        ("xdp", BASELINE_PROGRAM_NAME, PROGRAM_NAME),
        ("tc", TC_BASELINE_PROGRAM_NAME, TC_EGRESS_PROGRAM_NAME),
    ] {
        let (other, dns) = (frame(64), udp_to(53, 64));
        let flows = ours(program, MODE_FLOWS, 1, None);
        let m = medians(&[ours(baseline, MODE_PACKETS, 1, None), flows], &other);
        let (base, o) = (m[0].0, m[1].0);
        let mut v = vec![ours(baseline, MODE_PACKETS, 1, None), flows];
        if let Some(b) = before {
            v.push(ours(program, MODE_FLOWS, 1, Some(b)));
        }
        let m = medians(&v, &dns);
        let d = m[1].0 - m[0].0 + base;
        let bd = before.map(|_| m[2].0 - m[0].0 + base);
        println!(
            "{hook:<5} {base:>8.1} {:>10} {:>10} {:>12}",
            fmt(o - base),
            fmt(d - base),
            bd.map_or("-".into(), |b| fmt(b - base)),
        );
    }
}

/// Kernel memory of a flow map, and userspace's `collect()` of 100 000 flows.
fn memory() {
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

/// Growth with flows: N live flows in the map (XDP, 64 B), then (1) one of them sent REPEAT
/// times (a hit, its bucket and entry in cache) and (2) every one of them once, one
/// BPF_PROG_TEST_RUN each (a walk over the whole map, as a busy host's traffic is), each
/// against the empty program run the same way.
fn flow_growth() {
    println!();
    println!(
        "flows: N live flows in the map (XDP, 64 B; hot: one flow repeated; walk: each flow once)"
    );
    println!(
        "{:<10} {:>10} {:>10} {:>12} {:>12}",
        "flows", "hot base", "hot-b", "walk base", "walk-b"
    );
    for n in [1_000u32, 100_000, 1_000_000] {
        let frames = flow_frames(n);
        let Variant::Ours(base_s) = ours(BASELINE_PROGRAM_NAME, MODE_PACKETS, 1, None) else {
            unreachable!()
        };
        let Variant::Ours(mut flows_s) = ours(PROGRAM_NAME, MODE_FLOWS, 1, None) else {
            unreachable!()
        };
        flows_s.flow_entries = n;
        flows_s.ring_bytes = 4096;
        let base = Loaded::load(Settings {
            ring_bytes: 4096,
            ..base_s
        });
        let l = Loaded::load(flows_s);
        for f in &frames {
            l.run(f, 1);
        }
        let walk = |p: &Loaded| {
            let total: Duration = frames.iter().map(|f| p.run(f, 1).per_run).sum();
            total.as_nanos() as f64 / f64::from(n)
        };
        let (wb, wf) = (walk(&base), walk(&l));
        let mut hot = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            hot.0
                .push(base.run(&frames[0], REPEAT).per_run.as_nanos() as f64);
            hot.1
                .push(l.run(&frames[0], REPEAT).per_run.as_nanos() as f64);
        }
        hot.0.sort_by(f64::total_cmp);
        hot.1.sort_by(f64::total_cmp);
        let (hb, hf) = (hot.0[RUNS / 2], hot.1[RUNS / 2]);
        let c = l.cpu_stats();
        assert_eq!(
            c.flow_events + c.flow_overflow + c.flow_unkeyed,
            0,
            "every flow in the map"
        );
        println!(
            "{n:<10} {hb:>10.1} {:>10} {wb:>12.1} {:>12}",
            fmt(hf - hb),
            fmt(wf - wb)
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
