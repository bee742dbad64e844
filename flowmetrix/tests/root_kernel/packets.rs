//! The XDP and TC programs themselves, in this process (root tier): the embedded object is
//! loaded with chosen settings and run on frames with BPF_PROG_TEST_RUN (tests/common/xdp.rs),
//! and the ring records and per-CPU counters are read back and checked exactly — like aya's
//! own `test/integration-test/src/tests/prog_test_run.rs`. Every check runs on the XDP
//! program and on both TC programs (ingress, egress), which share the sampling code.

use crate::common;

use std::mem::{offset_of, size_of};

use common::xdp::{Counters, Loaded, Settings, is_tc};
use flowmetrix_common::{
    Direction, MAX_SNAPLEN, PROGRAM_NAME, SLOT_SIZES, SampleHeader, TC_EGRESS_PROGRAM_NAME,
    TC_INGRESS_PROGRAM_NAME,
};

const XDP_PASS: u32 = 2;
/// TC_ACT_UNSPEC (-1) as BPF_PROG_TEST_RUN reports it.
const TC_ACT_UNSPEC: u32 = u32::MAX;

/// What `program` must always return: it never changes a packet's fate.
fn pass(program: &str) -> u32 {
    if is_tc(program) {
        TC_ACT_UNSPEC
    } else {
        XDP_PASS
    }
}

/// The direction `program` samples.
fn direction(program: &str) -> Direction {
    if program == TC_EGRESS_PROGRAM_NAME {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

fn other(d: Direction) -> Direction {
    match d {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

/// Checks that `prog`'s counters are `want`, all of them in `program`'s direction.
fn assert_counters(prog: &Loaded, program: &str, want: Counters, what: &str) {
    let d = direction(program);
    assert_eq!(prog.counters(), want, "{what}: totals");
    assert_eq!(prog.counters_of(d), want, "{what}: {d:?}");
    assert_eq!(
        prog.counters_of(other(d)),
        Counters::default(),
        "{what}: the other direction"
    );
}

/// A frame of `len` bytes: Ethernet/IPv4/UDP with a counting payload from 42 bytes on, the
/// first `len` bytes of one below that (BPF_PROG_TEST_RUN takes 14 bytes at least).
fn frame(len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len.saturating_sub(42))
        .map(|i| (i * 7 + len) as u8)
        .collect();
    let mut f = common::frames::udp4(
        (common::MAC_B, common::MAC_A),
        (common::frames::IP4_B, 40_000),
        (common::frames::IP4_A, 53),
        &payload,
    );
    f.truncate(len);
    f
}

/// [`frame`] for `program`. The skb test run refuses an IPv4 frame too short for its IP
/// header (under 34 bytes), so for TC those are given a local experimental EtherType.
fn frame_for(program: &str, len: usize) -> Vec<u8> {
    let mut f = frame(len);
    if is_tc(program) && len < 34 {
        f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    }
    f
}

/// One ring record, taken apart with the layout of flowmetrix-common.
struct Record {
    header: SampleHeader,
    /// The record's data slot: every byte after the header.
    slot: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(b[at..at + 2].try_into().unwrap())
}

fn parse(record: &[u8]) -> Record {
    let head = size_of::<SampleHeader>();
    assert!(record.len() >= head, "record of {} bytes", record.len());
    let header = SampleHeader {
        ts_boot_ns: u64::from_ne_bytes(record[..8].try_into().unwrap()),
        wire_len: u32_at(record, offset_of!(SampleHeader, wire_len)),
        cap_len: u16_at(record, offset_of!(SampleHeader, cap_len)),
        vlan: u16_at(record, offset_of!(SampleHeader, vlan)),
        ifindex: u32_at(record, offset_of!(SampleHeader, ifindex)),
        rx_queue: u16_at(record, offset_of!(SampleHeader, rx_queue)),
        direction: u16_at(record, offset_of!(SampleHeader, direction)),
        cgroup_id: u64::from_ne_bytes(
            record[offset_of!(SampleHeader, cgroup_id)..][..8]
                .try_into()
                .unwrap(),
        ),
    };
    Record {
        header,
        slot: record[head..].to_vec(),
    }
}

/// The smallest slot that holds `n` bytes.
fn slot_for(n: usize) -> usize {
    SLOT_SIZES
        .into_iter()
        .find(|&s| s >= n)
        .expect("n <= MAX_SNAPLEN")
}

fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and out pointer.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Every length from the smallest the kernel takes to past the largest slot, longer frames
/// up to what one page of test buffer holds, and for XDP a 9000-byte jumbo frame, which the
/// kernel hands over as a page plus fragments: `wire_len` must count them all. (The skb test
/// run takes one linear buffer of at most a page less its head- and tailroom.)
fn lengths(program: &str) -> Vec<usize> {
    let jumbo: &[usize] = if is_tc(program) { &[] } else { &[9000] };
    (14..=300)
        .chain([511, 512, 513, 1000, 1499, 1500, 1514, 2048, 3000, 3500])
        .chain(jumbo.iter().copied())
        .collect()
}

/// The sampling programs, each with the direction it records.
const PROGRAMS: [&str; 3] = [
    PROGRAM_NAME,
    TC_INGRESS_PROGRAM_NAME,
    TC_EGRESS_PROGRAM_NAME,
];

#[test]
fn every_length_passes_with_the_smallest_slot_and_the_first_min_wire_snaplen_bytes() {
    common::require_root();
    every_length(PROGRAM_NAME);
}

#[test]
fn tc_every_length_passes_with_the_smallest_slot_and_the_direction() {
    common::require_root();
    every_length(TC_INGRESS_PROGRAM_NAME);
    every_length(TC_EGRESS_PROGRAM_NAME);
}

fn every_length(program: &'static str) {
    let lengths = lengths(program);
    // Around each slot boundary, the default, the maximum, and one above the maximum (the
    // collector refuses it; the program must still clamp to MAX_SNAPLEN).
    for snaplen in [
        1u32, 14, 63, 64, 65, 127, 128, 129, 191, 192, 193, 255, 256, 4096,
    ] {
        let mut prog = Loaded::load(Settings {
            program,
            snaplen,
            ..Default::default()
        });
        for (i, &len) in lengths.iter().enumerate() {
            let f = frame_for(program, len);
            let before = boot_ns();
            let run = prog.run(&f, 1);
            let after = boot_ns();
            let what = format!("{program}: {len}-byte frame, snaplen {snaplen}");
            assert_eq!(run.action, pass(program), "{what}");

            let records = prog.drain();
            assert_eq!(records.len(), 1, "{what}: rate 1 samples every frame");
            let r = parse(&records[0]);
            let want = len.min(snaplen as usize).min(MAX_SNAPLEN);
            assert_eq!(r.slot.len(), slot_for(want), "{what}: slot size");
            assert_eq!(r.header.cap_len as usize, want, "{what}: cap_len");
            assert_eq!(&r.slot[..want], &f[..want], "{what}: copied bytes");
            assert_eq!(r.header.wire_len as usize, len, "{what}: wire_len");
            assert!(
                (before..=after).contains(&r.header.ts_boot_ns),
                "{what}: ts {} outside {before}..={after}",
                r.header.ts_boot_ns
            );
            // BPF_PROG_TEST_RUN without a context runs on loopback's first queue.
            assert_eq!((r.header.ifindex, r.header.rx_queue), (1, 0), "{what}");
            assert_eq!(r.header.direction, direction(program) as u16, "{what}");
            // A test run gives its skb a socket of its own, in this process's cgroup: TC
            // egress reads that cgroup's id; the other hooks none.
            let cgroup = if program == TC_EGRESS_PROGRAM_NAME {
                crate::own_cgroup_id()
            } else {
                0
            };
            assert_eq!(r.header.cgroup_id, cgroup, "{what}");

            let n = i as u64 + 1;
            let want = Counters {
                seen: n,
                sampled: n,
                ring_full: 0,
            };
            assert_counters(&prog, program, want, &what);
        }
    }
}

#[test]
fn counters_are_exact_at_every_rate() {
    common::require_root();
    for program in PROGRAMS {
        counters_exact(program);
    }
}

fn counters_exact(program: &'static str) {
    let f = frame(60);
    for rate in [1u32, 2, 7, 100, 1_000_000] {
        let mut prog = Loaded::load(Settings {
            program,
            sample_rate: rate,
            ..Default::default()
        });
        let mut records = 0;
        for round in 1..=5u64 {
            assert_eq!(prog.run(&f, 1_000).action, pass(program), "rate {rate}");
            records += prog.drain().len() as u64;
            let c = prog.counters_of(direction(program));
            assert_eq!(c, prog.counters(), "{program}: all in its direction");
            assert_eq!(c.seen, round * 1_000, "rate {rate}: {c:?}");
            assert_eq!(c.ring_full, 0, "rate {rate}: {c:?}");
            assert_eq!(c.sampled, records, "rate {rate}: every sample is a record");
        }
        if rate == 1 {
            assert_eq!(records, 5_000);
        }
        if rate == 1_000_000 {
            // The first frame on a CPU is always sampled; then a skip of up to 2 million.
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
            assert!((1..=cpus).contains(&records), "{records}");
        }
    }
}

#[test]
fn one_in_n_over_a_hundred_thousand_frames_samples_about_runs_over_n() {
    common::require_root();
    one_in_n(PROGRAM_NAME);
}

/// The same statistics on egress (and TC ingress) as on XDP ingress.
#[test]
fn tc_one_in_n_over_a_hundred_thousand_frames_on_egress_and_ingress() {
    common::require_root();
    one_in_n(TC_EGRESS_PROGRAM_NAME);
    one_in_n(TC_INGRESS_PROGRAM_NAME);
}

fn one_in_n(program: &'static str) {
    const RUNS: u32 = 100_000;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let f = frame(60);
    for rate in [2u32, 10, 100, 1_000] {
        let mut prog = Loaded::load(Settings {
            program,
            sample_rate: rate,
            // Room for every sample at rate 2: 50 000 records of 96 bytes.
            ring_bytes: 8 << 20,
            ..Default::default()
        });
        assert_eq!(prog.run(&f, RUNS).action, pass(program));
        let records = prog.drain();
        assert!(
            records
                .iter()
                .all(|r| parse(r).header.direction == direction(program) as u16),
            "{program}: every record carries its direction"
        );
        let records = records.len() as u64;
        let c = prog.counters_of(direction(program));
        assert_eq!(c, prog.counters(), "{program}: all in its direction");
        assert_eq!((c.seen, c.ring_full), (u64::from(RUNS), 0), "{c:?}");
        assert_eq!(c.sampled, records);

        // The gaps between samples are independent and uniform on 1..=2N-1: mean N,
        // variance N(N-1)/3. By the renewal central limit theorem the count over R frames
        // is about normal with mean R/N and variance R·(N(N-1)/3)/N³ = R(N-1)/(3N²):
        // for N = 10, sd 55; N = 100, sd 18; N = 1000, sd 5.8. Allow 6 sd (a chance of
        // 2e-9 to fail by luck) plus one extra sample per CPU (the first frame a CPU sees
        // is always sampled; the kernel may move the run between CPUs).
        let (r, n) = (f64::from(RUNS), f64::from(rate));
        let sd = (r * (n - 1.0) / (3.0 * n * n)).sqrt();
        let mean = r / n;
        let bound = 6.0 * sd + cpus;
        let got = c.sampled as f64;
        assert!(
            (got - mean).abs() <= bound,
            "{program}, rate {rate}: sampled {got} of {RUNS}, want {mean} ± {bound:.0}"
        );
    }
}

/// Bytes a record of data slot `slot` takes in the ring: the kernel's 8-byte record header,
/// ours, the slot, rounded up to 8.
fn ring_record_bytes(slot: usize) -> usize {
    (8 + size_of::<SampleHeader>() + slot).div_ceil(8) * 8
}

#[test]
fn a_full_ring_counts_ring_full_and_still_passes() {
    common::require_root();
    for program in PROGRAMS {
        full_ring(program);
    }
}

fn full_ring(program: &'static str) {
    // SAFETY: no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    for len in [60, 100, 1500] {
        // The smallest ring there is: one page.
        let mut prog = Loaded::load(Settings {
            program,
            ring_bytes: page as u32,
            snaplen: MAX_SNAPLEN as u32,
            ..Default::default()
        });
        let fits = (page / ring_record_bytes(slot_for(len.min(MAX_SNAPLEN)))) as u64;
        let f = frame(len);
        assert_eq!(prog.run(&f, 200).action, pass(program), "{len}");
        let want = Counters {
            seen: 200,
            sampled: 200,
            ring_full: 200 - fits,
        };
        let what = format!("{program}: {len}-byte frames, {fits} fit");
        assert_counters(&prog, program, want, &what);
        assert_eq!(prog.drain().len() as u64, fits, "{len}");
        // Drained, the ring takes records again.
        assert_eq!(prog.run(&f, 5).action, pass(program));
        assert_eq!(prog.drain().len(), 5);
        assert_eq!(prog.counters().ring_full, 200 - fits);
    }
}
