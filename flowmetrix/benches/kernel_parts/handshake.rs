//! The kernel bench's `handshake` section: what the TCP handshake tracking costs in flows
//! mode — a packet that is not a handshake segment (UDP, a plain TCP ACK) with the tracking
//! on, off (`HANDSHAKES_ON` 0) and in the build before it (`FLOWMETRIX_BENCH_BEFORE_OBJECT`),
//! one run; then each handshake segment's own cost: a SYN retransmitted (lookup, update), a
//! SYN-ACK and an RST of no known connection (lookups), and whole handshakes, each
//! connection's SYN (new flow entry and new state) and its ACK (the entry's mark, a lookup,
//! the completion) run once.

use etherparse::PacketBuilder;
use flowmetrix_common::{
    BASELINE_PROGRAM_NAME, PROGRAM_NAME, TC_BASELINE_PROGRAM_NAME, TC_EGRESS_PROGRAM_NAME,
    flow_key::{MODE_FLOWS, MODE_PACKETS},
};

use super::{Loaded, Settings, Variant, fmt, frame, medians, ours};

/// A 64-byte TCP frame from port `port` to 80 with these flags ("S", "SA", "A", "RA").
fn tcp(port: u16, src: [u8; 4], flags: &str) -> Vec<u8> {
    let mut f = Vec::new();
    let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, [10, 0, 0, 2], 64)
        .tcp(port, 80, 1, 1000);
    for c in flags.chars() {
        b = match c {
            'S' => b.syn(),
            'A' => b.ack(1),
            'R' => b.rst(),
            _ => unreachable!(),
        };
    }
    b.write(&mut f, &[0u8; 10]).unwrap();
    f
}

/// Our `program` in flows mode, the tracking on or off, from `object`.
fn flows(program: &'static str, on: bool, object: Option<&'static [u8]>) -> Variant {
    match ours(program, MODE_FLOWS, 1, object) {
        Variant::Ours(s) => Variant::Ours(Settings {
            handshakes: on,
            ..s
        }),
        v => v,
    }
}

pub fn table(before: Option<&'static [u8]>) {
    println!();
    println!("handshake: flows mode, ns per packet above the empty program (one flow, a hit)");
    println!(
        "{:<5} {:<22} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "hook", "packet", "base", "off", "on", "before", "on-before"
    );
    let packets = [
        ("udp 64 B", frame(64)),
        ("tcp ack 64 B", tcp(40_000, [10, 0, 0, 1], "A")),
        ("tcp syn (retransmit)", tcp(40_000, [10, 0, 0, 1], "S")),
        ("tcp syn-ack (unknown)", tcp(40_000, [10, 0, 0, 1], "SA")),
        ("tcp rst (unknown)", tcp(40_000, [10, 0, 0, 1], "RA")),
    ];
    for (hook, baseline, program) in [
        ("xdp", BASELINE_PROGRAM_NAME, PROGRAM_NAME),
        ("tc", TC_BASELINE_PROGRAM_NAME, TC_EGRESS_PROGRAM_NAME),
    ] {
        for (name, packet) in &packets {
            let mut v = vec![
                ours(baseline, MODE_PACKETS, 1, None),
                flows(program, false, None),
                flows(program, true, None),
            ];
            if let Some(o) = before {
                v.push(flows(program, true, Some(o)));
            }
            let m = medians(&v, packet);
            let base = m[0].0;
            let (b, d) = match before {
                Some(_) => (fmt(m[3].0 - base), fmt(m[2].0 - m[3].0)),
                None => ("-".into(), "-".into()),
            };
            println!(
                "{hook:<5} {name:<22} {base:>8.1} {:>8} {:>8} {b:>9} {d:>9}",
                fmt(m[1].0 - base),
                fmt(m[2].0 - base),
            );
        }
    }
    whole();
}

/// Connections in [`whole`]'s runs.
const CONNECTIONS: u32 = 10_000;

/// Whole handshakes: [`CONNECTIONS`] SYNs, each run once, then their ACKs, with the
/// tracking on and off (XDP: no socket, so SYN → ACK); the mean of each, median of 7 loads.
fn whole() {
    println!();
    println!(
        "handshake: whole handshakes, {CONNECTIONS} connections, each SYN then each ACK run once (xdp, ns a packet, mean)"
    );
    println!(
        "{:<5} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "", "syn", "ack", "syn+ack", "completed", "collect ms"
    );
    let syn: Vec<Vec<u8>> = (0..CONNECTIONS)
        .map(|i| tcp(i as u16, [10, 1, (i >> 8) as u8, i as u8], "S"))
        .collect();
    let ack: Vec<Vec<u8>> = (0..CONNECTIONS)
        .map(|i| tcp(i as u16, [10, 1, (i >> 8) as u8, i as u8], "A"))
        .collect();
    let mut rows = Vec::new();
    for on in [false, true] {
        let mut runs: Vec<(f64, f64, u64, f64)> = (0..7)
            .map(|_| {
                let mut l = Loaded::load(Settings {
                    program: PROGRAM_NAME,
                    mode: MODE_FLOWS,
                    flow_entries: 4 * CONNECTIONS,
                    handshakes: on,
                    ..Default::default()
                });
                let mean = |l: &Loaded, frames: &[Vec<u8>]| {
                    let total: f64 = frames
                        .iter()
                        .map(|f| l.run(f, 1).per_run.as_nanos() as f64)
                        .sum();
                    total / frames.len() as f64
                };
                let (s, a) = (mean(&l, &syn), mean(&l, &ack));
                let h = l
                    .flow_maps()
                    .handshakes
                    .as_mut()
                    .expect("the handshake map");
                let done = h.totals().map_or(0, |t| t.completed);
                // What the collector's interval read costs with that many completed.
                let t = std::time::Instant::now();
                let read = h.collect(flowmetrix::flows::handshakes::boot_now());
                let ms = t.elapsed().as_secs_f64() * 1e3;
                assert_eq!(read.map(|r| r.len() as u64).unwrap_or(0), done);
                (s, a, done, ms)
            })
            .collect();
        runs.sort_by(|x, y| (x.0 + x.1).total_cmp(&(y.0 + y.1)));
        let (s, a, done, ms) = runs[3];
        println!(
            "{:<5} {s:>10.1} {a:>10.1} {:>10.1} {done:>10} {ms:>12.1}",
            if on { "on" } else { "off" },
            s + a
        );
        rows.push((s, a));
    }
    println!(
        "{:<5} {:>10} {:>10} {:>10}",
        "on-off",
        fmt(rows[1].0 - rows[0].0),
        fmt(rows[1].1 - rows[0].1),
        fmt(rows[1].0 + rows[1].1 - rows[0].0 - rows[0].1)
    );
}
