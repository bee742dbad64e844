//! `--mode flows|both` (issue 18). No-root tier: pcaps replayed by the real binary give
//! exact flow rows (JSON lines and GreptimeDB), intervals by packet time. The root tier
//! (real traffic in network namespaces, the kernel's flow maps) is at the bottom.

mod common;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

use common::{
    MAC_A, MAC_B, Summary,
    endpoint::Endpoint,
    frames::{eth, udp4, write},
};
use etherparse::PacketBuilder;
use serde_json::Value;

const SEC: u64 = 1_000_000_000;
/// 2026-11-18T11:06:40Z, a multiple of 10 s.
const T0: u64 = 1_795_000_000 * SEC;

/// A classic Ethernet pcap of `frames` at their times (ns since the epoch), written to a
/// file of this test process's own.
fn pcap(name: &str, frames: &[(u64, Vec<u8>)]) -> PathBuf {
    common::pcap::file("flows", name, &pcap_bytes(frames))
}

/// The bytes of a classic Ethernet pcap of `frames` ([`pcap`]).
fn pcap_bytes(frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
    common::pcap::ethernet(frames.iter().map(|(ts, f)| (Duration::from_nanos(*ts), f)))
}

fn udp(src_port: u16, dst_port: u16, payload: usize) -> Vec<u8> {
    udp4(
        (MAC_B, MAC_A),
        ([10, 1, 0, 1], src_port),
        ([10, 1, 0, 2], dst_port),
        &vec![0; payload],
    )
}

fn tcp6(flags_syn: bool, payload: usize) -> Vec<u8> {
    let b = eth()
        .ipv6([0xfd; 16], [0xfe; 16], 64)
        .tcp(40_000, 443, 1, 1000);
    let b = if flags_syn { b.syn() } else { b.ack(1).psh() };
    write(|v| b.write(v, &vec![0; payload]).unwrap())
}

fn vlan_udp() -> Vec<u8> {
    write(|v| {
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .single_vlan(100u16.try_into().unwrap())
            .ipv4([10, 2, 0, 1], [10, 2, 0, 2], 64)
            .udp(5353, 53)
            .write(v, &[0; 30])
            .unwrap()
    })
}

fn arp() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x08, 0x06]);
    f.extend_from_slice(&[0; 46]);
    f
}

/// Per flow (name, interval end): packets and bytes.
type Flows = BTreeMap<(String, u64), (u64, u64)>;

/// The frames, and per flow the packets and bytes they must give.
fn traffic() -> (Vec<(u64, Vec<u8>)>, Flows) {
    let a = udp(40_000, 53, 20);
    let syn = tcp6(true, 0);
    let data = tcp6(false, 100);
    let frames = vec![
        (T0 + SEC, a.clone()),
        (T0 + 2 * SEC, syn.clone()),
        (T0 + 3 * SEC, a.clone()),
        (T0 + 4 * SEC, data.clone()),
        (T0 + 5 * SEC, vlan_udp()),
        (T0 + 6 * SEC, arp()),
        (T0 + 7 * SEC, a[..20].to_vec()), // IP header cut short: not keyed
        // The next interval: flow a again; the TCP flow is idle.
        (T0 + 12 * SEC, a.clone()),
        // Two intervals later (none in between).
        (T0 + 31 * SEC, data.clone()),
    ];
    let n = |f: &[u8]| f.len() as u64;
    let mut want = BTreeMap::new();
    let end = |k: u64| T0 + k * 10 * SEC;
    want.insert(("udp".into(), end(1)), (2, 2 * n(&a)));
    want.insert(("tcp6".into(), end(1)), (2, n(&syn) + n(&data)));
    want.insert(("vlan".into(), end(1)), (1, n(&vlan_udp())));
    want.insert(("arp".into(), end(1)), (1, n(&arp())));
    want.insert(("udp".into(), end(2)), (1, n(&a)));
    want.insert(("tcp6".into(), end(4)), (1, n(&data)));
    (frames, want)
}

fn ts_of(row: &Value) -> u64 {
    let s = row["ts"].as_str().unwrap();
    let t = chrono::DateTime::parse_from_rfc3339(s).unwrap();
    t.timestamp_nanos_opt().unwrap() as u64
}

/// A flow row's name in [`traffic`], checking its key columns on the way.
fn flow_name(r: &Value) -> String {
    let s = |k: &str| r[k].as_str().map(str::to_owned);
    match (r["protocol"].as_u64(), r["ether_type"].as_u64()) {
        (Some(17), _) if r["vlan_id"] == 100 => {
            assert_eq!(
                (s("src_ip"), s("dst_ip")),
                (Some("10.2.0.1".into()), Some("10.2.0.2".into()))
            );
            assert_eq!(
                (r["src_port"].as_u64(), r["dst_port"].as_u64()),
                (Some(5353), Some(53))
            );
            assert_eq!(r["application"], "DNS");
            "vlan".into()
        }
        (Some(17), _) => {
            assert_eq!(r["vlan_id"], Value::Null, "{r}");
            assert_eq!(
                (s("src_ip"), s("dst_ip")),
                (Some("10.1.0.1".into()), Some("10.1.0.2".into()))
            );
            assert_eq!(r["application"], "DNS");
            assert_eq!(r["tcp_flags"], 0);
            "udp".into()
        }
        (Some(6), Some(0x86dd)) => {
            assert_eq!(
                s("src_ip").as_deref(),
                Some("fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd")
            );
            assert_eq!(
                (r["src_port"].as_u64(), r["dst_port"].as_u64()),
                (Some(40_000), Some(443))
            );
            assert_eq!(r["application"], "HTTPS");
            "tcp6".into()
        }
        (Some(0), Some(0x0806)) => {
            assert_eq!((&r["src_ip"], &r["dst_ip"]), (&Value::Null, &Value::Null));
            assert_eq!(r["application"], "UNKNOWN");
            "arp".into()
        }
        _ => panic!("unexpected flow row {r}"),
    }
}

/// The rows by (flow, interval end) → (packets, bytes), checking every row's other columns.
fn by_flow(rows: &[Value], file: &str) -> Flows {
    let mut got = BTreeMap::new();
    for r in rows {
        assert_eq!(r["interval_ms"], 10_000, "{r}");
        assert_eq!(
            (r["interface"].as_str(), r["direction"].as_str()),
            (Some(file), Some("ingress"))
        );
        let ts = ts_of(r);
        let first =
            chrono::DateTime::parse_from_rfc3339(r["first_seen"].as_str().unwrap()).unwrap();
        let last = chrono::DateTime::parse_from_rfc3339(r["last_seen"].as_str().unwrap()).unwrap();
        let (first, last) = (
            first.timestamp_nanos_opt().unwrap() as u64,
            last.timestamp_nanos_opt().unwrap() as u64,
        );
        assert!(ts - 10 * SEC <= first && first <= last && last < ts, "{r}");
        let prev = got.insert(
            (flow_name(r), ts),
            (r["packets"].as_u64().unwrap(), r["bytes"].as_u64().unwrap()),
        );
        assert!(prev.is_none(), "two rows for one flow and interval: {r}");
    }
    got
}

use common::pcap::{json_lines as lines, replay};

fn summary(out: &Output) -> Summary {
    let stderr = String::from_utf8_lossy(&out.stderr);
    Summary::parse(&stderr).unwrap_or_else(|| panic!("no summary:\n{stderr}"))
}

#[test]
fn a_pcap_replayed_in_flows_mode_gives_exact_flow_rows_and_no_packet_rows() {
    let (frames, want) = traffic();
    let file = pcap("flows.pcap", &frames);
    let out = replay(&file, &["--mode", "flows", "--output", "jsonl"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows = lines(&out);
    assert!(
        rows.iter().all(|r| r.get("interval_ms").is_some()),
        "only flow rows"
    );
    assert_eq!(by_flow(&rows, "flows.pcap"), want);
    let s = summary(&out);
    // No packet rows: nothing sampled, so the packet loss equation holds with zeros.
    assert_eq!(
        (s.seen, s.sampled, s.decoded, s.written),
        (9, 0, 0, 0),
        "{stderr}"
    );
    assert_eq!(s.flow("rows"), want.len() as u64);
    assert_eq!(s.flow("written"), want.len() as u64);
    let packets: u64 = want.values().map(|v| v.0).sum();
    let bytes: u64 = want.values().map(|v| v.1).sum();
    assert_eq!((s.flow("packets"), s.flow("bytes")), (packets, bytes));
    // Every frame is in a row or counted as not keyed.
    assert_eq!((s.flow("unkeyed"), s.flow("unkeyed bytes")), (1, 20));
    assert_eq!(s.flow("packets") + s.flow("unkeyed"), s.seen);
}

#[test]
fn both_mode_writes_packet_rows_and_flow_rows_told_apart_by_interval_ms() {
    let (frames, want) = traffic();
    let file = pcap("both.pcap", &frames);
    let out = replay(&file, &["--mode", "both", "--output", "jsonl"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let (flows, packets): (Vec<Value>, Vec<Value>) = lines(&out)
        .into_iter()
        .partition(|r| r.get("interval_ms").is_some());
    assert!(packets.iter().all(|r| r.get("packet_size").is_some()));
    assert_eq!(by_flow(&flows, "both.pcap"), want);
    let s = summary(&out);
    assert_eq!(packets.len() as u64, s.written, "{stderr}");
    assert_eq!(s.sampled, 9);
    assert_eq!(s.sampled, s.decode_errors + s.written, "{s:?}");
    assert_eq!(s.flow("written"), flows.len() as u64);
    // The packets mode summary line is unchanged: no flows part.
    let out = replay(&file, &["--output", "jsonl"]);
    assert!(summary(&out).flows.is_none());
    assert!(lines(&out).iter().all(|r| r.get("interval_ms").is_none()));
}

/// An Ethernet ARP request about IPv4: who has `target`? Tell `sender`.
fn arp_ipv4(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f.resize(60, 0);
    f
}

#[test]
fn an_arp_flow_row_carries_the_addresses_its_packet_row_has() {
    let frames = vec![
        (T0 + SEC, arp_ipv4([10, 1, 0, 1], [10, 1, 0, 2])),
        // A probe: sender 0.0.0.0.
        (T0 + 2 * SEC, arp_ipv4([0; 4], [10, 1, 0, 3])),
    ];
    let file = pcap("arp.pcap", &frames);
    let out = replay(&file, &["--mode", "both", "--output", "jsonl"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let (flows, packets): (Vec<Value>, Vec<Value>) = lines(&out)
        .into_iter()
        .partition(|r| r.get("interval_ms").is_some());
    assert_eq!((flows.len(), packets.len()), (2, 2), "{stderr}");
    let want = [("10.1.0.1", "10.1.0.2"), ("0.0.0.0", "10.1.0.3")];
    for (src, dst) in want {
        let p = packets
            .iter()
            .find(|r| r["dst_ip"] == dst)
            .unwrap_or_else(|| panic!("a packet row to {dst}: {packets:?}"));
        assert_eq!(
            (p["src_ip"].as_str(), p["ether_type"].as_u64()),
            (Some(src), Some(0x0806))
        );
        let f = flows
            .iter()
            .find(|r| r["dst_ip"] == dst)
            .unwrap_or_else(|| panic!("a flow row to {dst}: {flows:?}"));
        // Every column both rows have and that is the same kind of value in both (the
        // flow table's protocol and ports are never null: 0 there, null in the packet row).
        for c in [
            "host",
            "interface",
            "direction",
            "application",
            "vlan_id",
            "ether_type",
            "src_ip",
            "dst_ip",
        ] {
            assert_eq!(f[c], p[c], "{c}: flow row {f}, packet row {p}");
        }
        assert_eq!(
            (f["packets"].as_u64(), f["protocol"].as_u64()),
            (Some(1), Some(0))
        );
    }
}

#[test]
fn flow_rows_reach_greptimedb_with_their_types_next_to_packet_rows() {
    let (frames, want) = traffic();
    let file = pcap("greptime.pcap", &frames);
    let endpoint = Endpoint::start(None);
    let addr = endpoint.addr.to_string();
    let spool = std::env::temp_dir().join(format!("fmx-flows-spool-{}", std::process::id()));
    let out = replay(
        &file,
        &[
            "--mode",
            "both",
            "--greptime-endpoint",
            &addr,
            "--spool-dir",
            spool.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let flows = endpoint.rows("flow_data");
    assert_eq!(by_flow(&flows, "greptime.pcap"), want, "{stderr}");
    let s = summary(&out);
    assert_eq!(endpoint.rows("packet_data").len() as u64, s.written);
    assert_eq!(s.flow("written"), flows.len() as u64);
    assert_eq!(
        s.flow("rows"),
        s.flow("written") + s.flow("write errors") + s.flow("queue drops") + s.flow("spooled")
    );
    // The flow table's schema as declared: types and tags.
    let received = endpoint.received();
    let insert = received.iter().find(|r| r.table == "flow_data").unwrap();
    let names: Vec<&str> = insert
        .schema
        .iter()
        .map(|c| c.column_name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "ts",
            "host",
            "interface",
            "direction",
            "application",
            "vlan_id",
            "ether_type",
            "src_ip",
            "dst_ip",
            "protocol",
            "src_port",
            "dst_port",
            "packets",
            "bytes",
            "first_seen",
            "last_seen",
            "tcp_flags",
            "interval_ms",
            "tcp_handshake_us",
            "tcp_syn_retransmits",
            "tcp_retransmits",
            "tcp_rtt_us",
            "drop_packets",
            "drop_bytes",
            "drop_reason",
            "cgroup_id",
            "container_id",
            "pod_uid",
            "pod",
            "namespace"
        ]
    );
    let _ = std::fs::remove_dir_all(&spool);
}

/// Replays `file` into `endpoint` in `mode` with spool `spool` and `extra` arguments.
fn to_endpoint(
    file: &std::path::Path,
    endpoint: &Endpoint,
    spool: &std::path::Path,
    extra: &[&str],
) -> Output {
    let addr = endpoint.addr.to_string();
    let mut args = vec![
        "--mode",
        "both",
        "--greptime-endpoint",
        &addr,
        "--spool-dir",
        spool.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    replay(file, &args)
}

/// A run on a pcap from standard input that trickles one ARP frame every 50 ms until `done`
/// holds (or 30 s): the spool an earlier run left is replayed meanwhile (the ARP frames give
/// rows of their own, with interface `stdin`). Its output.
fn replay_spool(
    endpoint: &Endpoint,
    spool: &std::path::Path,
    mut done: impl FnMut() -> bool,
) -> Output {
    use std::io::Write as _;
    let header = pcap_bytes(&[]);
    let frame = pcap_bytes(&[(T0, arp())]).split_off(header.len());
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .args(["--pcap", "-", "--mode", "both", "--greptime-endpoint"])
        .arg(endpoint.addr.to_string())
        .arg("--spool-dir")
        .arg(spool)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&header).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() && std::time::Instant::now() < deadline {
        if stdin.write_all(&frame).is_err() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// The rows of `table` at `endpoint` from `interface`.
fn rows_from(endpoint: &Endpoint, table: &str, interface: &str) -> Vec<Value> {
    endpoint
        .rows(table)
        .into_iter()
        .filter(|r| r["interface"] == interface)
        .collect()
}

/// `(spooled, replayed, spool lost)` of the packet table and of the flow table.
fn spool_counts(s: &Summary) -> [(u64, u64, u64); 2] {
    [
        (s.spooled, s.replayed, s.spool_lost),
        (s.flow("spooled"), s.flow("replayed"), s.flow("spool lost")),
    ]
}

#[test]
fn an_outage_in_both_mode_spools_both_tables_and_replays_each_row_once() {
    let (frames, want) = traffic();
    let file = pcap("outage.pcap", &frames);
    let endpoint = Endpoint::start(None);
    let spool = std::env::temp_dir().join(format!("fmx-flows-outage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    endpoint.fail_next(usize::MAX, tonic::Code::Unavailable);
    let out = to_endpoint(&file, &endpoint, &spool, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let first = summary(&out);
    let packets = first.written + first.spooled;
    assert_eq!(
        spool_counts(&first),
        [(9, 0, 0), (want.len() as u64, 0, 0)],
        "every row of both tables spooled: {stderr}"
    );
    assert_eq!((first.written, first.flow("written")), (0, 0));

    endpoint.heal();
    let flows = want.len();
    let out = replay_spool(&endpoint, &spool, || {
        rows_from(&endpoint, "flow_data", "outage.pcap").len() >= flows
            && rows_from(&endpoint, "packet_data", "outage.pcap").len() as u64 >= packets
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let second = summary(&out);
    assert_eq!(
        spool_counts(&second),
        [(0, 9, 0), (0, want.len() as u64, 0)],
        "each table's rows replayed: {stderr}"
    );
    // Exactly once: `by_flow` refuses a second row for a flow and interval.
    assert_eq!(
        by_flow(
            &rows_from(&endpoint, "flow_data", "outage.pcap"),
            "outage.pcap"
        ),
        want
    );
    let packet_rows = rows_from(&endpoint, "packet_data", "outage.pcap");
    let unique: std::collections::BTreeSet<String> =
        packet_rows.iter().map(Value::to_string).collect();
    // The 9 frames are 8 distinct ones; the UDP frame `a` at three different times.
    assert_eq!((packet_rows.len(), unique.len()), (9, 9), "{packet_rows:?}");
    let _ = std::fs::remove_dir_all(&spool);
}

#[test]
fn a_spool_too_small_for_an_outage_counts_each_table_s_losses_against_it() {
    // 3 000 frames, one new flow each, 20 per 10 s interval: 3 000 packet rows and 3 000
    // flow rows, the flow rows written as the intervals close — both kinds in the spool
    // side by side, far more than 64 KiB of them.
    let frames: Vec<(u64, Vec<u8>)> = (0..3_000u64)
        .map(|i| (T0 + i * SEC / 2, udp(10_000 + i as u16, 53, 20)))
        .collect();
    let file = pcap("small-spool.pcap", &frames);
    let endpoint = Endpoint::start(None);
    let spool = std::env::temp_dir().join(format!("fmx-flows-small-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    endpoint.fail_next(usize::MAX, tonic::Code::Unavailable);
    let small = ["--spool-max-bytes", "64K", "--batch-size", "50"];
    let out = to_endpoint(&file, &endpoint, &spool, &small);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Rows were lost for room: exit 3.
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let [p1, f1] = spool_counts(&summary(&out));
    assert_eq!((p1.0, f1.0), (3_000, 3_000), "{stderr}");
    assert!(
        p1.2 > 0 && f1.2 > 0,
        "both tables lost rows for room: {p1:?} {f1:?}"
    );

    endpoint.heal();
    let out = replay_spool(&endpoint, &spool, || {
        std::fs::read_dir(&spool)
            .map(|d| {
                !d.filter_map(Result::ok)
                    .any(|e| e.path().extension().is_some_and(|x| x == "spool"))
            })
            .unwrap_or(true)
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    let [p2, f2] = spool_counts(&summary(&out));
    // Exit 3 only if this run lost rows too.
    let code = if p2.2 + f2.2 > 0 { 3 } else { 0 };
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    // Each table on its own: spooled = replayed + lost (nothing is left on disk).
    assert_eq!(p1.0, p2.1 + p1.2 + p2.2, "packet_data: {p1:?} {p2:?}");
    assert_eq!(f1.0, f2.1 + f1.2 + f2.2, "flow_data: {f1:?} {f2:?}");
    let file = "small-spool.pcap";
    assert_eq!(rows_from(&endpoint, "packet_data", file).len() as u64, p2.1);
    assert_eq!(rows_from(&endpoint, "flow_data", file).len() as u64, f2.1);
    let _ = std::fs::remove_dir_all(&spool);
}
