//! Flows in the kernel (root tier): the XDP and TC programs loaded in `flows` (and `both`,
//! `packets`) mode and run on frames with BPF_PROG_TEST_RUN (tests/common/xdp.rs); the flow
//! maps are collected through [`flowmetrix::flows::kernel::FlowMaps`], as the collector does, and
//! checked exactly: the kernel's key is `flowmetrix_common::flow_key::parse` of the frame, and
//! packets and bytes are what was run — across generation flips, with a full map (flow
//! events) and a full event ring (overflow).

use crate::common;

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
};

use common::xdp::{Loaded, Settings, is_tc};
use flowmetrix::flows::kernel::Collected;
use flowmetrix_common::{
    Direction, PROGRAM_NAME, TC_EGRESS_PROGRAM_NAME, TC_INGRESS_PROGRAM_NAME,
    flow_key::{FlowKey, MODE_FLOWS, MODE_PACKETS, parse},
};

const PROGRAMS: [&str; 3] = [
    PROGRAM_NAME,
    TC_INGRESS_PROGRAM_NAME,
    TC_EGRESS_PROGRAM_NAME,
];

/// BPF_PROG_TEST_RUN runs on loopback.
const LO: u32 = 1;

fn direction(program: &str) -> Direction {
    if program == TC_EGRESS_PROGRAM_NAME {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

fn flows(program: &'static str, prefix: Option<u32>) -> Settings {
    Settings {
        program,
        mode: MODE_FLOWS,
        prefix,
        ..Default::default()
    }
}

/// What userspace says the kernel must count a frame under (None: not keyed).
fn user_key(program: &str, frame: &[u8], prefix: usize) -> Option<(FlowKey, u8)> {
    let mut key = FlowKey::ZERO;
    let flags = parse(frame, prefix, &mut key)?;
    key.ifindex = LO;
    key.direction = direction(program) as u8;
    Some((key, flags))
}

/// Per key: packets, bytes, OR of the TCP flags.
type Totals = BTreeMap<FlowKey, (u64, u64, u64)>;

/// Adds a collection (map entries and events) to `t`.
fn add(t: &mut Totals, c: &Collected) {
    for (k, v) in &c.flows {
        assert!(v.first_seen_ns <= v.last_seen_ns, "{v:?}");
        let e = t.entry(*k).or_default();
        e.0 += v.packets;
        e.1 += v.bytes;
        e.2 |= v.tcp_flags;
    }
    for ev in &c.events {
        assert!(ev.generation <= c.generation, "{ev:?} in {}", c.generation);
        let e = t.entry(ev.key).or_default();
        e.0 += 1;
        e.1 += u64::from(ev.bytes);
        e.2 |= u64::from(ev.tcp_flags);
    }
}

fn vlan_frame(tags: &[(u16, u16)], inner: &[u8]) -> Vec<u8> {
    let mut f = inner[..12].to_vec();
    for &(tpid, vid) in tags {
        f.extend(tpid.to_be_bytes());
        f.extend(vid.to_be_bytes());
    }
    f.extend(&inner[12..]);
    f
}

fn ipv4_fragment(offset_words: u16, more: bool) -> Vec<u8> {
    let mut f = common::frames::write(|v| {
        common::frames::eth()
            .ipv4(common::frames::IP4_B, common::frames::IP4_A, 64)
            .udp(40_100, 53)
            .write(v, &[5; 64])
            .unwrap()
    });
    let flags = (u16::from(more) << 13) | offset_words;
    f[20..22].copy_from_slice(&flags.to_be_bytes());
    // The header checksum is not checked by anyone here.
    f
}

/// IPv6: hop-by-hop (8 bytes), destination options (16 bytes), then TCP with flags.
fn ipv6_ext_tcp() -> Vec<u8> {
    let mut f = common::frames::write(|v| {
        common::frames::eth()
            .ipv6(common::frames::IP6_B, common::frames::IP6_A, 64)
            .tcp(8443, 51000, 1, 1000)
            .syn()
            .ack(1)
            .write(v, b"x")
            .unwrap()
    });
    let tcp = f.split_off(54);
    f[20] = 0; // next header: hop-by-hop
    f.extend([60, 0, 1, 4, 0, 0, 0, 0]); // -> destination options, 8 bytes (PadN)
    f.extend([6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // -> TCP, 16 bytes
    f.extend(tcp);
    let payload = (f.len() - 54) as u16;
    f[18..20].copy_from_slice(&payload.to_be_bytes());
    f
}

/// Every frame kind, by name. Frames the skb test run refuses (an IPv4 frame too short for
/// its IP header) are left out for TC.
fn frames(program: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = common::frames::cases()
        .into_iter()
        .map(|c| (c.name.to_owned(), c.frame))
        .collect();
    let udp4 = out[0].1.clone();
    out.push((
        "qinq 100/5 udp4".into(),
        vlan_frame(&[(0x88a8, 100), (0x8100, 5)], &udp4),
    ));
    out.push(("ipv4 first fragment".into(), ipv4_fragment(0, true)));
    out.push(("ipv4 later fragment".into(), ipv4_fragment(8, false)));
    out.push(("ipv6 hop-by-hop, dest opts, tcp".into(), ipv6_ext_tcp()));
    let mut bad_ihl = udp4.clone();
    bad_ihl[14] = 0x44;
    out.push(("ipv4 with IHL 4 (not keyed)".into(), bad_ihl));
    if !is_tc(program) {
        out.push((
            "ipv4 header cut short (not keyed)".into(),
            udp4[..30].to_vec(),
        ));
        out.push(("14-byte ethernet only".into(), udp4[..14].to_vec()));
    }
    out
}

#[test]
fn every_frame_kind_is_keyed_as_userspace_keys_it_with_its_packets_and_bytes() {
    common::require_root();
    for program in PROGRAMS {
        for prefix in [0usize, 24] {
            keyed_like_userspace(program, prefix);
        }
    }
}

fn keyed_like_userspace(program: &'static str, prefix: usize) {
    let mut prog = Loaded::load(flows(program, Some(prefix as u32)));
    let mut want = Totals::new();
    let (mut unkeyed, mut unkeyed_bytes, mut runs) = (0, 0, 0);
    for (i, (name, frame)) in frames(program).into_iter().enumerate() {
        // A prefix of its own bytes in front (the skb test run reads 12..14 as the
        // EtherType: make it one it leaves alone).
        let mut f = vec![0xa5u8; prefix];
        if prefix >= 14 {
            f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        }
        f.extend(&frame);
        let repeat = i as u32 + 1;
        prog.run(&f, repeat);
        runs += u64::from(repeat);
        let bytes = frame.len() as u64;
        match user_key(program, &f, prefix) {
            Some((key, flags)) => {
                let e = want.entry(key).or_default();
                e.0 += u64::from(repeat);
                e.1 += u64::from(repeat) * bytes;
                e.2 |= u64::from(flags);
            }
            None => {
                assert!(
                    name.contains("not keyed") || name.contains("ethernet only"),
                    "{name}"
                );
                unkeyed += u64::from(repeat);
                unkeyed_bytes += u64::from(repeat) * bytes;
            }
        }
    }
    let c = prog.flow_maps().collect().expect("collect");
    assert_eq!(c.generation, 0);
    assert_eq!(c.map_entries, c.flows.len());
    assert!(c.events.is_empty(), "the map has room");
    let mut got = Totals::new();
    add(&mut got, &c);
    let what = format!("{program}, prefix {prefix}");
    assert_eq!(got.len(), want.len(), "{what}: one entry per distinct key");
    for (k, w) in &want {
        assert_eq!(got.get(k), Some(w), "{what}: {k:?}");
    }
    // TC egress keeps the sending socket's cgroup (a test run's own socket, in this
    // process's cgroup); the other hooks none.
    let cgroup = if program == TC_EGRESS_PROGRAM_NAME {
        crate::own_cgroup_id()
    } else {
        0
    };
    for (k, v) in &c.flows {
        assert_eq!(v.cgroup_id, cgroup, "{what}: {k:?}");
    }
    let s = prog.cpu_stats();
    assert_eq!(s.seen, runs, "{what}");
    assert_eq!(
        (s.flow_unkeyed, s.flow_unkeyed_bytes),
        (unkeyed, unkeyed_bytes),
        "{what}"
    );
    assert_eq!(
        (s.flow_events, s.flow_overflow, s.sampled),
        (0, 0, 0),
        "{what}"
    );
    // Flows mode samples nothing: what the ring holds is the DNS packets alone, flagged.
    let passed = prog.drain();
    assert_eq!(passed.len() as u64, s.dns_copies, "{what}");
    for r in &passed {
        let p = flowmetrix::ring::parse_record(r).expect("a well-formed record");
        assert!(p.dns_only, "{what}: flows mode samples nothing");
    }
    // The next collection has nothing: the map was cleared.
    let c = prog.flow_maps().collect().expect("collect");
    assert_eq!((c.generation, c.flows.len(), c.events.len()), (1, 0, 0));
}

#[test]
fn an_unknown_prefix_counts_everything_as_not_keyed_until_it_is_set() {
    common::require_root();
    for program in PROGRAMS {
        let mut prog = Loaded::load(flows(program, None));
        let f = common::frames::udp_frame(1);
        prog.run(&f, 10);
        let s = prog.cpu_stats();
        assert_eq!(
            (s.flow_unkeyed, s.flow_unkeyed_bytes),
            (10, 10 * f.len() as u64)
        );
        // Above MAX_PREFIX: not keyed either.
        prog.flow_maps().set_prefix(Some(65)).unwrap();
        prog.run(&f, 1);
        assert_eq!(prog.cpu_stats().flow_unkeyed, 11);
        prog.flow_maps().set_prefix(Some(0)).unwrap();
        prog.run(&f, 3);
        let c = prog.flow_maps().collect().unwrap();
        assert_eq!(c.flows.len(), 1, "{program}");
        assert_eq!(c.flows[0].1.packets, 3);
        assert_eq!(c.flows[0].0, user_key(program, &f, 0).unwrap().0);
        assert_eq!(prog.cpu_stats().flow_unkeyed, 11);
    }
}

/// `n` UDP frames of distinct flows (source ports), 100 bytes each.
fn distinct_flows(n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            common::frames::write(|v| {
                common::frames::eth()
                    .ipv4(common::frames::IP4_B, common::frames::IP4_A, 64)
                    .udp(20_000 + i as u16, 9)
                    .write(v, &[0; 58])
                    .unwrap()
            })
        })
        .collect()
}

#[test]
fn every_packet_lands_in_exactly_one_collection_while_traffic_flows() {
    common::require_root();
    for program in [PROGRAM_NAME, TC_EGRESS_PROGRAM_NAME] {
        across_flips(program);
    }
}

fn across_flips(program: &'static str) {
    /// Collections while the senders run, at least.
    const COLLECTIONS: u32 = 25;
    // A run takes some milliseconds, as long as a collection: most flips fall inside one.
    const REPEAT: u32 = 50_000;
    let mut prog = Loaded::load(flows(program, Some(0)));
    let mut maps = prog.flows.take().expect("flow maps");
    let frames = distinct_flows(6);
    let stop = AtomicBool::new(false);
    let mut total = Totals::new();
    let mut busy = 0;
    // Collections in which a flow's packets are not whole runs: the flip came in the middle
    // of a BPF_PROG_TEST_RUN call, the case that must not lose or double a packet.
    let mut split = 0;
    let rounds: Vec<u32> = std::thread::scope(|s| {
        // Two senders (two CPUs here): the same keys from both, so inserts race (EEXIST)
        // and counters are added from both at once.
        let senders: Vec<_> = (0..2)
            .map(|t| {
                let (prog, frames, stop) = (&prog, &frames, &stop);
                s.spawn(move || {
                    let mut r = 0;
                    while !stop.load(Ordering::Relaxed) {
                        prog.run(&frames[(r as usize + t) % frames.len()], REPEAT);
                        r += 1;
                    }
                    r
                })
            })
            .collect();
        // At least COLLECTIONS, and on until enough of them saw packets and one flip fell
        // inside a run (the senders may be slow to start on a loaded machine), within 60 s.
        let started = std::time::Instant::now();
        let mut made = 0;
        while made < COLLECTIONS
            || ((busy < COLLECTIONS / 2 || split < 1)
                && started.elapsed() < std::time::Duration::from_secs(60))
        {
            made += 1;
            std::thread::sleep(std::time::Duration::from_millis(5));
            let c = maps.collect().expect("collect");
            if !c.flows.is_empty() {
                busy += 1;
            }
            if c.flows
                .iter()
                .any(|(_, v)| v.packets % u64::from(REPEAT) != 0)
            {
                split += 1;
            }
            add(&mut total, &c);
        }
        stop.store(true, Ordering::Relaxed);
        senders.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let c = maps.collect().expect("the last collection");
    add(&mut total, &c);
    assert!(
        busy >= COLLECTIONS / 2,
        "{program}: only {busy} collections saw packets"
    );
    assert!(split >= 1, "{program}: no flip fell inside a run");
    let mut want = Totals::new();
    for (t, &n) in rounds.iter().enumerate() {
        for r in 0..n {
            let f = &frames[(r as usize + t) % frames.len()];
            let (k, _) = user_key(program, f, 0).unwrap();
            let e = want.entry(k).or_default();
            e.0 += u64::from(REPEAT);
            e.1 += u64::from(REPEAT) * f.len() as u64;
        }
    }
    assert_eq!(
        total, want,
        "{program}: per flow, over {COLLECTIONS} collections"
    );
    let runs: u32 = rounds.iter().sum();
    assert_eq!(prog.cpu_stats().seen, u64::from(runs * REPEAT));
}

#[test]
fn a_full_map_sends_the_rest_as_events_and_a_full_ring_counts_overflow_exactly() {
    common::require_root();
    for program in PROGRAMS {
        full_map(program);
    }
}

fn full_map(program: &'static str) {
    const FLOWS: u32 = 300;
    const REPEAT: u32 = 3;
    let frames = distinct_flows(FLOWS);
    let bytes = frames[0].len() as u64;
    let run_all = |prog: &Loaded| {
        for f in &frames {
            prog.run(f, REPEAT);
        }
    };
    let mut want = Totals::new();
    for f in &frames {
        let (k, _) = user_key(program, f, 0).unwrap();
        want.insert(k, (u64::from(REPEAT), u64::from(REPEAT) * bytes, 0));
    }

    // The map takes 16 flows, the ring (1 MiB) the rest.
    let mut prog = Loaded::load(Settings {
        flow_entries: 16,
        ..flows(program, Some(0))
    });
    run_all(&prog);
    let c = prog.flow_maps().collect().unwrap();
    assert_eq!((c.map_entries, c.max_entries), (16, 16), "{program}");
    let in_map: u64 = c.flows.iter().map(|(_, v)| v.packets).sum();
    assert_eq!(in_map, 16 * u64::from(REPEAT));
    assert_eq!(c.events.len() as u64, u64::from(FLOWS * REPEAT) - in_map);
    let mut got = Totals::new();
    add(&mut got, &c);
    assert_eq!(got, want, "{program}: map + events");
    let s = prog.cpu_stats();
    assert_eq!((s.flow_events, s.flow_overflow), (c.events.len() as u64, 0));

    // The ring too small (one page: 51 records of 80 bytes): overflow counts the rest.
    // SAFETY: no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u32;
    let mut prog = Loaded::load(Settings {
        flow_entries: 16,
        event_bytes: page,
        ..flows(program, Some(0))
    });
    run_all(&prog);
    let c = prog.flow_maps().collect().unwrap();
    let s = prog.cpu_stats();
    let fits = u64::from(page) / 80;
    assert_eq!(c.events.len() as u64, fits, "{program}");
    assert_eq!(s.flow_events, fits);
    let in_map: u64 = c.flows.iter().map(|(_, v)| v.packets).sum();
    assert_eq!(in_map, 16 * u64::from(REPEAT));
    let total = u64::from(FLOWS * REPEAT);
    assert_eq!(
        s.flow_overflow,
        total - in_map - fits,
        "{program}: every missing packet"
    );
    assert_eq!(s.flow_overflow_bytes, s.flow_overflow * bytes);
    // Drained, the ring takes events again; the map was cleared, so 16 flows go there.
    run_all(&prog);
    let c = prog.flow_maps().collect().unwrap();
    assert_eq!(
        (c.generation, c.map_entries, c.events.len() as u64),
        (1, 16, fits)
    );
}

#[test]
fn packets_mode_never_touches_the_flow_maps_and_both_mode_does_both() {
    common::require_root();
    for program in PROGRAMS {
        let f = common::frames::udp_frame(7);
        for mode in [MODE_PACKETS, MODE_PACKETS | MODE_FLOWS] {
            let mut prog = Loaded::load(Settings {
                mode,
                ..flows(program, Some(0))
            });
            prog.run(&f, 50);
            assert_eq!(prog.drain().len(), 50, "{program}, mode {mode}: rate 1");
            let s = prog.cpu_stats();
            assert_eq!((s.seen, s.sampled), (50, 50));
            let c = prog.flow_maps().collect().unwrap();
            if mode == MODE_PACKETS {
                assert!(
                    c.flows.is_empty(),
                    "{program}: packets mode counts no flows"
                );
                assert_eq!(c.max_entries, 1, "shrunk");
            } else {
                assert_eq!(c.flows.len(), 1);
                assert_eq!(c.flows[0].1.packets, 50);
            }
            assert_eq!(s.flow_unkeyed + s.flow_events + s.flow_overflow, 0);
        }
    }
}

#[test]
fn without_batch_calls_one_by_one_reads_and_clears_every_flow() {
    common::require_root();
    let frames = distinct_flows(300);
    for batch in [true, false] {
        let mut prog = Loaded::load(flows(PROGRAM_NAME, Some(0)));
        if !batch {
            prog.flow_maps().without_batch_calls();
        }
        for (i, f) in frames.iter().enumerate() {
            prog.run(f, i as u32 % 5 + 1);
        }
        let c = prog.flow_maps().collect().unwrap();
        assert_eq!(c.map_entries, 300, "batch {batch}");
        let mut got = Totals::new();
        add(&mut got, &c);
        for (i, f) in frames.iter().enumerate() {
            let (k, _) = user_key(PROGRAM_NAME, f, 0).unwrap();
            let n = i as u64 % 5 + 1;
            assert_eq!(got[&k], (n, n * f.len() as u64, 0), "batch {batch}");
        }
        // Both maps are empty now: two more collections find nothing.
        for _ in 0..2 {
            assert_eq!(prog.flow_maps().collect().unwrap().map_entries, 0);
        }
    }
}

/// Flows mode passes every DNS packet (UDP to or from port 53) to the ring, flagged as such,
/// whatever the sample rate, and nothing else; `both` mode passes the ones the sampler did
/// not take, each counted.
#[test]
fn dns_packets_reach_the_ring_whatever_the_sample_rate() {
    use flowmetrix::ring::parse_record;
    common::require_root();
    let dns = common::frames::udp4(
        (common::MAC_A, common::MAC_B),
        ([10, 1, 0, 1], 40_000),
        ([10, 1, 0, 2], 53),
        &[0; 30],
    );
    let other = common::frames::udp4(
        (common::MAC_A, common::MAC_B),
        ([10, 1, 0, 1], 40_000),
        ([10, 1, 0, 2], 5_300),
        &[0; 30],
    );
    for program in PROGRAMS {
        for (mode, rate) in [(MODE_FLOWS, 1), (MODE_PACKETS | MODE_FLOWS, 1_000_000)] {
            let mut prog = Loaded::load(Settings {
                mode,
                sample_rate: rate,
                ..flows(program, Some(0))
            });
            prog.run(&dns, 10);
            prog.run(&other, 10);
            let records = prog.drain();
            let parsed: Vec<_> = records
                .iter()
                .map(|r| parse_record(r).expect("a well-formed record"))
                .collect();
            let s = prog.cpu_stats();
            let what = format!("{program}, mode {mode}");
            if mode == MODE_FLOWS {
                // Every DNS packet, none of the others, each flagged.
                assert_eq!(parsed.len(), 10, "{what}");
                assert!(parsed.iter().all(|p| p.dns_only), "{what}");
                assert_eq!(
                    (s.sampled, s.dns_copies, s.dns_ring_full),
                    (0, 10, 0),
                    "{what}"
                );
            } else {
                // A CPU samples its first packet (its countdown starts at 0), then hardly
                // any at this rate: every DNS packet is in the ring, sampled or copied, and
                // a copy only where it was not sampled.
                let copies = parsed.iter().filter(|p| p.dns_only).count() as u64;
                assert_eq!(copies, s.dns_copies, "{what}");
                assert_eq!(records.len() as u64, s.sampled + s.dns_copies, "{what}");
                let dns_records = parsed.iter().filter(|p| p.frame == &dns[..]).count();
                assert_eq!(dns_records, 10, "{what}");
                assert!(copies >= 8, "{what}: {copies}");
            }
            for p in parsed.iter().filter(|p| p.dns_only) {
                assert_eq!(p.direction, direction(program), "{what}");
                assert_eq!(p.frame, &dns[..], "{what}");
            }
        }
    }
}
