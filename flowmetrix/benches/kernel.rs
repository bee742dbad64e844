//! Kernel cost per packet, measured by the kernel itself (BPF_PROG_TEST_RUN, repeated):
//! an XDP program that does nothing (the baseline), ours with the packet sampled out, and
//! ours with the packet sampled in (ring-buffer reservation and copy), at 64- and 1500-byte
//! frames. Needs root. Run with `cargo xtask bench` (or `cargo bench --bench kernel`).

use aya::{
    EbpfLoader,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use etherparse::PacketBuilder;
use flowmetrix::capture::PROGRAM;
use flowmetrix_common::{
    BASELINE_PROGRAM_NAME, PROGRAM_NAME, SAMPLE_RATE_GLOBAL, SAMPLES_MAP, SNAPLEN_GLOBAL,
    WAKEUP_BYTES_GLOBAL,
};

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
fn ns_per_packet(program: &str, sample_rate: u32, packet: &[u8]) -> f64 {
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let mut ebpf = EbpfLoader::new()
                .override_global(SAMPLE_RATE_GLOBAL, &sample_rate, true)
                .override_global(SNAPLEN_GLOBAL, &192u32, true)
                // Never wake: in steady state the reader keeps up and is not woken either.
                .override_global(WAKEUP_BYTES_GLOBAL, &u32::MAX, true)
                .map_max_entries(SAMPLES_MAP, 512 << 20)
                .load(PROGRAM)
                .expect("load the XDP object (run as root)");
            let prog: &mut Xdp = ebpf.program_mut(program).unwrap().try_into().unwrap();
            prog.load().expect("load the program");
            let result = prog
                .test_run(TestRunOptions {
                    data_in: Some(packet),
                    repeat: REPEAT,
                    ..Default::default()
                })
                .expect("BPF_PROG_TEST_RUN");
            assert_eq!(result.return_value, 2, "XDP_PASS");
            result.duration.as_nanos() as f64
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
        "{:<12} {:>14} {:>14} {:>14} {:>12} {:>12}",
        "frame", "baseline ns", "sampled-out ns", "sampled-in ns", "out - base", "in - base"
    );
    for len in [64, 1500] {
        let packet = frame(len);
        let base = ns_per_packet(BASELINE_PROGRAM_NAME, 1, &packet);
        // Rate 1 000 000: after the first packet, every one is skipped.
        let out = ns_per_packet(PROGRAM_NAME, 1_000_000, &packet);
        let inn = ns_per_packet(PROGRAM_NAME, 1, &packet);
        println!(
            "{:<12} {base:>14.1} {out:>14.1} {inn:>14.1} {:>12.1} {:>12.1}",
            format!("{len} bytes"),
            out - base,
            inn - base
        );
    }
}
