//! TCP handshakes in a `--pcap` replay (no root): the kernel's state machine runs on the
//! frames, so a replay gives `tcp_handshake_us` and `tcp_syn_retransmits` as a live capture
//! seen from the path does (SYN → ACK; a replay knows no sockets). Live: the root tier's
//! `root_capture/handshake.rs`.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{
    frames::{eth, write},
    pcap::{self, T0},
};
use serde_json::Value;

const CLIENT: [u8; 4] = [10, 5, 0, 1];
const SERVER: [u8; 4] = [10, 5, 0, 2];
const MS: Duration = Duration::from_millis(1);

/// A TCP segment client → server (`forward`) or back, from/to client port `port`.
fn seg(forward: bool, port: u16, flags: &str, payload: &[u8]) -> Vec<u8> {
    let (src, dst, sp, dp) = if forward {
        (CLIENT, SERVER, port, 80)
    } else {
        (SERVER, CLIENT, 80, port)
    };
    let mut b = eth().ipv4(src, dst, 64).tcp(sp, dp, 1000, 64_000);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(1),
            'P' => b.psh(),
            'R' => b.rst(),
            _ => panic!("flag {f}"),
        };
    }
    write(|v| b.write(v, payload).unwrap())
}

/// One answered connection (port 40 000) whose first SYN went unanswered, one never
/// answered (40 001, three SYNs), one refused (40 002, a SYN and an RST), spread over
/// 1-second intervals.
fn frames() -> Vec<(Duration, Vec<u8>)> {
    let at = |ms: u32| T0 + MS * ms;
    vec![
        (at(100), seg(true, 40_000, "S", b"")),
        (at(200), seg(true, 40_001, "S", b"")),
        (at(300), seg(true, 40_002, "S", b"")),
        (at(301), seg(false, 40_002, "RA", b"")),
        // The next second: the retransmitted SYNs; the first is answered.
        (at(1_100), seg(true, 40_000, "S", b"")),
        (at(1_130), seg(false, 40_000, "SA", b"")),
        (at(1_160), seg(true, 40_000, "A", b"")),
        (at(1_170), seg(true, 40_000, "AP", b"hello")),
        (at(1_200), seg(true, 40_001, "S", b"")),
        (at(1_210), seg(false, 40_000, "A", b"")),
        // Two seconds later.
        (at(3_200), seg(true, 40_001, "S", b"")),
    ]
}

/// Per (client port, server → client?, interval since T0 in s): latency and retransmits.
type Figures = BTreeMap<(u64, bool, u64), (Option<u64>, u64)>;

fn figures(rows: &[Value]) -> Figures {
    let t0 = T0.as_nanos() as i128;
    rows.iter()
        .map(|r| {
            assert_eq!(r["protocol"], 6, "{r}");
            let back = r["src_port"] == 80;
            let port = if back { &r["dst_port"] } else { &r["src_port"] };
            let interval = (common::frames::ts_nanos(r) - t0) / 1_000_000_000;
            (
                (port.as_u64().unwrap(), back, interval as u64),
                (
                    r["tcp_handshake_us"].as_u64(),
                    r["tcp_syn_retransmits"]
                        .as_u64()
                        .expect("a count on a TCP row"),
                ),
            )
        })
        .collect()
}

#[test]
fn a_replay_measures_handshakes_and_syn_retransmits_as_the_kernel_does() {
    let file = common::pcap::file(
        "handshake",
        "handshake.pcap",
        &pcap::ethernet(frames().iter().map(|(t, f)| (*t, f))),
    );
    let out = pcap::replay(
        &file,
        &[
            "--mode",
            "flows",
            "--flow-interval",
            "1s",
            "--output",
            "jsonl",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let got = figures(&pcap::json_lines(&out));
    // Rows are stamped with their interval's end.
    let want: Figures = [
        ((40_000, false, 1), (None, 0)),
        ((40_001, false, 1), (None, 0)),
        ((40_002, false, 1), (None, 0)),
        ((40_002, true, 1), (None, 0)),
        // Latest SYN (1.100 s) → ACK (1.160 s); one SYN retransmitted.
        ((40_000, false, 2), (Some(60_000), 1)),
        ((40_000, true, 2), (None, 0)),
        ((40_001, false, 2), (None, 1)),
        ((40_001, false, 4), (None, 1)),
    ]
    .into();
    assert_eq!(got, want, "{stderr}");
}

#[test]
fn handshakes_cost_nothing_in_packets_mode() {
    let file = common::pcap::file(
        "handshake",
        "packets.pcap",
        &pcap::ethernet(frames().iter().map(|(t, f)| (*t, f))),
    );
    let out = pcap::replay(&file, &["--mode", "packets", "--output", "jsonl"]);
    assert!(out.status.success());
    let rows = pcap::json_lines(&out);
    assert_eq!(rows.len(), frames().len());
    assert!(rows.iter().all(|r| r.get("tcp_handshake_us").is_none()));
}
