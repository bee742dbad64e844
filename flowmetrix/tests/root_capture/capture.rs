//! The capture path end to end, in real network namespaces: frames sent over a veth pair
//! come out of the real binary as JSON rows, every column checked; counters add up.

use crate::common;

use std::time::Duration;

use common::frames::{Case, assert_each_case_once, cases, send_cases, udp_frame, without_ts};

#[test]
fn every_sent_frame_comes_out_once_with_every_column_right() {
    every_sent_frame_exactly("xdp");
}

/// TC ingress sees each frame after the kernel has moved an 802.1Q tag into the skb's
/// metadata (`skb_vlan_untag`): the VLAN case must still give its vlan_id and full size.
#[test]
fn every_sent_frame_comes_out_once_with_every_column_right_with_tc_ingress() {
    every_sent_frame_exactly("tc");
}

fn every_sent_frame_exactly(ingress_hook: &str) {
    let net = common::NetPair::new();
    let ready = if ingress_hook == "tc" {
        "TC attached"
    } else {
        "XDP attached"
    };
    let collector = net
        .collector()
        .args(&[
            "--sample-rate",
            "1",
            "--ingress-hook",
            ingress_hook,
            "--output",
            "jsonl",
        ])
        .ready(ready)
        .start();
    let sender = net.sender();
    let cases = cases();
    let window = send_cases(&sender, &cases);
    let done = collector.interrupt();
    assert!(
        done.status.success(),
        "exit {:?}\n{}",
        done.status,
        done.stderr
    );

    let rows = done.rows();
    assert_each_case_once(&rows, &cases, window, &net.if_a);
    // The link is quiet but for the test's frames: nothing else came out.
    assert_eq!(rows.len(), cases.len(), "unexpected rows:\n{}", done.stdout);

    let s = done.summary();
    assert_eq!(s.seen, cases.len() as u64, "{s:?}");
    assert_eq!(s.sampled, s.seen, "rate 1 samples every packet: {s:?}");
    assert_eq!(
        (s.ring_drops, s.decode_errors, s.queue_drops, s.write_errors),
        (0, 0, 0, 0)
    );
    assert_eq!(s.written, rows.len() as u64);
    assert_eq!(s.decoded, s.written);
}

#[test]
fn ring_too_small_every_sample_is_a_row_or_a_counted_drop() {
    let net = common::NetPair::new();
    // One page: room for about a dozen samples.
    let collector = net
        .collector()
        .args(&[
            "--sample-rate",
            "1",
            "--ring-bytes",
            "4096",
            "--output",
            "jsonl",
        ])
        .start();
    let sender = net.sender();
    let frames = 5_000u32;
    for i in 0..frames {
        sender.send(&udp_frame(i));
    }
    std::thread::sleep(Duration::from_millis(200));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let s = done.summary();
    let rows = done.rows();
    assert!(s.ring_drops > 0, "the ring never overflowed: {s:?}");
    assert_eq!(s.sampled, s.written + s.ring_drops, "{s:?}");
    assert_eq!(s.written, rows.len() as u64);
    assert_eq!((s.decode_errors, s.queue_drops, s.write_errors), (0, 0, 0));
    assert_eq!(s.sampled, s.seen);
    // Frames lost before XDP (veth's own queue) are not ours to count, but none were made up.
    assert!(s.seen <= u64::from(frames), "{s:?}");
}

#[test]
fn sample_rate_ten_samples_about_a_tenth_and_counters_agree() {
    let net = common::NetPair::new();
    let collector = net
        .collector()
        .args(&["--sample-rate", "10", "--output", "jsonl"])
        .start();
    let frames = 10_000u32;
    // Paced below veth's 256-frame XDP queue: every frame reaches the program.
    net.send_udp(0..frames);
    std::thread::sleep(Duration::from_millis(200));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let s = done.summary();
    let rows = done.rows();
    assert_eq!(s.seen, u64::from(frames), "{s:?}");
    // Each gap between samples is uniform on 1..=19 (mean 10, variance 30), so the count
    // over 10 000 packets has a standard deviation of about sqrt(10000*30/1000) = 17.3;
    // ±100 is over 5.7 sigma: a failure means the sampler is wrong, not unlucky.
    assert!(
        (900..=1100).contains(&s.sampled),
        "sampled {} of {frames}",
        s.sampled
    );
    assert_eq!(s.sampled, s.written + s.ring_drops);
    assert_eq!(s.ring_drops, 0, "{s:?}");
    assert_eq!(s.written, rows.len() as u64);
    assert!(rows.iter().all(|r| r["sample_rate"] == 10));
    // Distinct frames: no sample was written twice.
    let mut ports: Vec<(u64, String)> = rows
        .iter()
        .map(|r| (r["src_port"].as_u64().unwrap(), r["ts"].to_string()))
        .collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), rows.len());
}

#[test]
fn offset_24_skips_a_vmware_prefix_and_counts_frames_too_short_for_it() {
    let net = common::NetPair::new();
    let collector = net
        .collector()
        .args(&["-offset", "24", "--output", "jsonl"])
        .start();
    let sender = net.sender();
    let cases = cases();
    let prefixed: Vec<(&Case, Vec<u8>)> = cases
        .iter()
        .take(4)
        .map(|c| {
            let mut f = vec![0x5a; 24];
            f.extend_from_slice(&c.frame);
            (c, f)
        })
        .collect();
    for (_, f) in &prefixed {
        sender.send(f);
    }
    // 24 + 13 bytes: no whole Ethernet header after the prefix.
    sender.send(&[0x5a; 37]);
    std::thread::sleep(Duration::from_millis(200));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let rows = done.rows();
    assert_eq!(rows.len(), prefixed.len(), "{}", done.stdout);
    for (case, _) in &prefixed {
        // packet_size is the frame after the prefix.
        let hits = rows.iter().filter(|r| without_ts(r) == case.row).count();
        assert_eq!(hits, 1, "{}: {}\n{}", case.name, case.row, done.stdout);
    }
    let s = done.summary();
    assert_eq!(s.decode_errors, 1, "{s:?}");
    assert_eq!(
        s.sampled,
        s.written + s.decode_errors + s.ring_drops,
        "{s:?}"
    );
}

/// Sends every case `rounds` times with `prefix` junk bytes in front, under `-auto-detect`,
/// and checks that every frame came out exactly as without the prefix.
fn auto_detect_decodes_exactly(prefix: usize) {
    let net = common::NetPair::new();
    let collector = net
        .collector()
        .args(&["-auto-detect", "--output", "jsonl"])
        .start();
    let sender = net.sender();
    let cases = cases();
    let rounds = 4;
    for round in 0..rounds {
        for (i, case) in cases.iter().enumerate() {
            // Junk that changes from frame to frame, like a hypervisor's metadata.
            let junk: Vec<u8> = (0..prefix)
                .map(|j| (round * 31 + i * 7 + j * 13) as u8 ^ 0xa5)
                .collect();
            sender.send(&[junk, case.frame.clone()].concat());
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    assert!(
        done.stderr.contains(&format!("prefix is {prefix} bytes")),
        "{}",
        done.stderr
    );
    let rows = done.rows();
    assert_eq!(rows.len(), rounds * cases.len(), "{}", done.stderr);
    for case in &cases {
        let hits = rows.iter().filter(|r| without_ts(r) == case.row).count();
        assert_eq!(hits, rounds, "{}: {}\n{}", case.name, case.row, done.stdout);
    }
    let s = done.summary();
    assert_eq!(
        (s.decode_errors, s.written),
        (0, (rounds * cases.len()) as u64)
    );
}

#[test]
fn auto_detect_finds_a_24_byte_prefix() {
    auto_detect_decodes_exactly(24);
}

#[test]
fn auto_detect_finds_a_16_byte_prefix() {
    auto_detect_decodes_exactly(16);
}

#[test]
fn auto_detect_settles_on_0_without_a_prefix_and_garbles_nothing() {
    auto_detect_decodes_exactly(0);
}

/// `udp_frame(i)` with `tags` (TPID, VLAN id), outermost first, inserted after the MACs.
fn tagged_udp(i: u32, tags: &[(u16, u16)]) -> Vec<u8> {
    let mut f = udp_frame(i);
    let at = 12;
    for (n, (tpid, id)) in tags.iter().enumerate() {
        let mut tag = tpid.to_be_bytes().to_vec();
        tag.extend(id.to_be_bytes());
        f.splice(at + 4 * n..at + 4 * n, tag);
    }
    f
}

/// The outer tag is the row's VLAN and every tag counts in the size, whichever hook: XDP
/// sees the tags in the bytes; before TC ingress the kernel moves the outer one (802.1Q
/// or 802.1ad) into the skb's metadata and leaves an inner one in the bytes.
#[test]
fn vlan_tagged_frames_give_the_outer_vlan_and_their_wire_size_with_either_ingress_hook() {
    let cases: [(u32, &[(u16, u16)]); 5] = [
        (0, &[]),
        (1, &[(0x8100, 100)]),
        (2, &[(0x88a8, 300), (0x8100, 12)]),
        (3, &[(0x8100, 7), (0x8100, 8)]),
        (4, &[(0x88a8, 4000)]),
    ];
    for hook in ["xdp", "tc"] {
        let net = common::NetPair::new();
        let ready = if hook == "tc" {
            "TC attached"
        } else {
            "XDP attached"
        };
        let collector = net
            .collector()
            .args(&["--ingress-hook", hook, "--output", "jsonl"])
            .ready(ready)
            .start();
        let sender = net.sender();
        let mut want = Vec::new();
        for (i, tags) in cases {
            let f = tagged_udp(i, tags);
            sender.send(&f);
            let vlan = tags.first().map(|t| u64::from(t.1));
            want.push((10_000 + u64::from(i), vlan, f.len() as u64));
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(300));
        let done = collector.interrupt();
        assert!(done.status.success(), "{hook}: {}", done.stderr);
        let mut got: Vec<_> = done
            .rows()
            .iter()
            .map(|r| {
                (
                    r["src_port"].as_u64().unwrap_or(0),
                    r["vlan_id"].as_u64(),
                    r["packet_size"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, want, "{hook}:\n{}", done.stdout);
    }
}
