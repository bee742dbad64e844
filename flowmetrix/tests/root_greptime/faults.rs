//! Faults a user's trial found (issue 16), each reproduced with the real binary in network
//! namespaces (root tier): a disk that fills in the middle of a spool record, two collectors
//! on one spool directory, a full spool, a stalled spool disk while capture runs, and an
//! interface deleted under the collector. The loss equation is checked in every one.

use crate::common;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{NetPair, Summary, endpoint::Endpoint, frames::udp_frame, wait_until};

/// `sampled = ring drops + decode errors + queue drops + write errors + written + spooled`.
fn assert_equation(s: &Summary) {
    assert_eq!(
        s.sampled,
        s.ring_drops + s.decode_errors + s.queue_drops + s.write_errors + s.written + s.spooled,
        "loss equation: {s:?}"
    );
}

fn port(i: u32) -> u32 {
    10_000 + i % 50_000
}

/// The distinct src ports at the endpoint, each row once.
fn ports_once(endpoint: &Endpoint) -> Vec<u32> {
    let keys = endpoint.row_keys("packet_data");
    let unique: HashSet<(i64, u32)> = keys.iter().copied().collect();
    assert_eq!(unique.len(), keys.len(), "duplicates arrived");
    let mut ports: Vec<u32> = keys.iter().map(|k| k.1).collect();
    ports.sort_unstable();
    ports
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(name: &str, size: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("fmx-tmpfs-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs");
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().metadata().unwrap().len()).sum())
        .unwrap_or(0)
}

/// The collector writing to `endpoint` with its spool in `dir`.
fn on_spool(net: &NetPair, endpoint: &Endpoint, dir: &str) -> common::Collector {
    let addr = endpoint.addr.to_string();
    let args = [
        "--greptime-endpoint",
        &addr,
        "--flush-interval",
        "100ms",
        "--spool-dir",
        dir,
    ];
    net.collector().args(&args).start()
}

#[test]
fn a_disk_that_fills_mid_record_loses_only_the_rows_it_counts() {
    let net = common::NetPair::new();
    let disk = Tmpfs::new("full", "1m");
    let spool = disk.0.join("spool");
    let spool_arg = spool.to_str().unwrap().to_owned();
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; 700 << 10]).unwrap();

    let endpoint = Endpoint::start(Some(&net.ns_a));
    endpoint.refuse_for(Duration::from_secs(3600));
    let collector = on_spool(&net, &endpoint, &spool_arg);
    net.send_udp(0..4_000);
    std::thread::sleep(Duration::from_secs(2));
    std::fs::remove_file(&filler).unwrap();
    net.send_udp(4_000..7_000);
    std::thread::sleep(Duration::from_secs(2));
    let done = collector.interrupt();
    // Rows were lost: exit 3 (the last line says how many).
    assert_eq!(done.status.code(), Some(3), "{}", done.stderr);
    let first = done.summary();
    assert_equation(&first);
    assert_eq!(first.sampled, 7_000, "{first:?}");
    assert!(first.spool_lost > 0, "the full disk lost rows: {first:?}");

    // GreptimeDB back, a second run: every row the spool kept arrives, once; nothing is
    // found damaged.
    let endpoint = Endpoint::start(Some(&net.ns_a));
    let collector = on_spool(&net, &endpoint, &spool_arg);
    let kept = first.spooled - first.spool_lost;
    assert!(wait_until(Duration::from_secs(30), || {
        endpoint.row_keys("packet_data").len() as u64 >= kept
    }));
    let done = collector.interrupt();
    assert!(!done.stderr.contains("damaged"), "{}", done.stderr);
    let second = done.summary();
    assert_eq!(
        (second.replayed, second.spool_lost),
        (kept, 0),
        "{second:?}"
    );
    let ports = ports_once(&endpoint);
    assert_eq!(ports.len() as u64, kept);
    assert!(
        ports.iter().any(|&p| p >= port(4_000)),
        "rows sent after the disk had room again arrived"
    );
    assert!(dir_bytes(&spool) < 1 << 20);
}

#[test]
fn a_second_collector_on_the_same_spool_is_refused_naming_the_first() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    let first = net.collector().greptime(&endpoint).start();
    let spool = net.spool_dir();
    // A replay beside the running service, on its default spool directory.
    let pcap = std::env::temp_dir().join(format!("fmx-one-{}.pcap", std::process::id()));
    std::fs::write(&pcap, one_frame_pcap()).unwrap();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.ns_a,
            env!("CARGO_BIN_EXE_flowmetrix"),
            "--pcap",
        ])
        .arg(&pcap)
        .args([
            "--greptime-endpoint",
            &endpoint.addr.to_string(),
            "--spool-dir",
        ])
        .arg(&spool)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        line.contains(&spool.display().to_string())
            && line.contains(&format!("pid {}", first.pid())),
        "{err}"
    );
    let done = first.interrupt();
    assert!(done.status.success());
    let _ = std::fs::remove_file(pcap);
}

/// A classic pcap file holding one UDP frame.
fn one_frame_pcap() -> Vec<u8> {
    common::pcap::ethernet([(common::pcap::T0, udp_frame(1))])
}

#[test]
fn a_full_spool_drops_the_oldest_rows_counts_each_and_uses_the_whole_limit() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    endpoint.refuse_for(Duration::from_secs(3600));
    let collector = net
        .collector()
        .greptime(&endpoint)
        .args(&["--spool-max-bytes", "256K"])
        .start();
    net.send_udp(0..10_000);
    std::thread::sleep(Duration::from_secs(2));
    let done = collector.interrupt();
    // Rows were lost: exit 3 (the last line says how many).
    assert_eq!(done.status.code(), Some(3), "{}", done.stderr);
    let s = done.summary();
    assert_equation(&s);
    assert_eq!(s.sampled, 10_000);
    assert!(s.spool_lost > 0 && s.spooled == 10_000, "{s:?}");
    let full_warnings = done.stderr.matches("spool full").count();
    assert!(
        full_warnings <= 2,
        "warnings are rate-limited: {full_warnings}"
    );
    let used = dir_bytes(&net.spool_dir());
    assert!(
        used > 200 << 10 && used <= 256 << 10,
        "{used} bytes of 256K used"
    );

    // What is left is the newest rows: a second run replays them.
    let endpoint = Endpoint::start(Some(&net.ns_a));
    let collector = net
        .collector()
        .greptime(&endpoint)
        .args(&["--spool-max-bytes", "256K"])
        .start();
    let kept = s.spooled - s.spool_lost;
    assert!(wait_until(Duration::from_secs(30), || {
        endpoint.row_keys("packet_data").len() as u64 >= kept
    }));
    let done = collector.interrupt();
    assert_eq!(done.summary().replayed, kept);
    let ports = ports_once(&endpoint);
    assert_eq!(ports.len() as u64, kept);
    // Rows reach the spool in two ways (the queue full, or a batch GreptimeDB refused), so
    // the spool's order may differ from capture order by the batches in flight to
    // GreptimeDB (--max-in-flight 4 × --batch-size 1024); beyond that the oldest went first.
    let in_flight = 4 * 1024;
    let oldest_kept = ports[0];
    let window_start = port(10_000 - (kept as u32 + in_flight));
    assert!(
        oldest_kept >= window_start,
        "a row older than the newest {kept} + {in_flight} was kept: port {oldest_kept} < {window_start}"
    );
    let newest = (10_000 - kept as u32..10_000).map(port);
    let missing_newest = newest.filter(|p| ports.binary_search(p).is_err()).count();
    assert!(
        missing_newest <= in_flight as usize,
        "{missing_newest} of the newest {kept} rows are gone"
    );
}

#[test]
fn a_stalled_spool_disk_never_stalls_the_ring_and_ctrl_c_keeps_its_deadline() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    endpoint.refuse_for(Duration::from_secs(3600));
    let collector = net
        .collector()
        .greptime(&endpoint)
        .args(&["--queue-size", "2000", "--shutdown-timeout", "2s"])
        .env(&[("FLOWMETRIX_TEST_SPOOL_STALL_MS", "1000")])
        .start();
    net.send_udp(0..20_000);
    std::thread::sleep(Duration::from_millis(500));
    let done = collector.interrupt();
    // Rows were lost: exit 3 (the last line says how many).
    assert_eq!(done.status.code(), Some(3), "{}", done.stderr);
    let s = done.summary();
    assert_equation(&s);
    assert_eq!((s.sampled, s.ring_drops), (20_000, 0), "{s:?}");
    assert!(
        s.queue_drops > 0,
        "what could not be queued is counted: {s:?}"
    );
    assert!(
        done.exit_time < Duration::from_secs(2 + 3),
        "exit took {:?} with a 2 s deadline",
        done.exit_time
    );
}

#[test]
fn an_interface_deleted_under_the_collector_ends_it_with_an_error() {
    let net = common::NetPair::new();
    let collector = net.collector().args(&["--output", "none"]).start();
    net.send_udp(0..100);
    std::thread::sleep(Duration::from_millis(300));
    let ok = Command::new("ip")
        .args(["netns", "exec", &net.ns_a, "ip", "link", "del", &net.if_a])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let done = collector.stop_with(0); // no signal: it must exit by itself
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(
        done.stderr
            .lines()
            .any(|l| l.starts_with("error:") && l.contains(&net.if_a) && l.contains("went away")),
        "{}",
        done.stderr
    );
    let s = done.summary();
    assert_equation(&s);
    assert_eq!(s.written, 100);
}

#[test]
fn a_kill_during_replay_resumes_after_the_last_acknowledged_record() {
    let net = common::NetPair::new();
    let spool = net.spool_dir();
    let spool_arg = spool.to_str().unwrap().to_owned();
    // A first run spools 20 000 rows with GreptimeDB away.
    let endpoint = Endpoint::start(Some(&net.ns_a));
    endpoint.refuse_for(Duration::from_secs(3600));
    let collector = on_spool(&net, &endpoint, &spool_arg);
    net.send_udp(0..20_000);
    std::thread::sleep(Duration::from_secs(1));
    let first = collector.interrupt().summary();
    assert_eq!(first.spooled, 20_000, "{first:?}");

    // A second run replays slowly and is killed half-way.
    let endpoint = Endpoint::start(Some(&net.ns_a));
    endpoint.keys_only();
    endpoint.stall(Some(Duration::from_millis(100)));
    let collector = on_spool(&net, &endpoint, &spool_arg);
    assert!(wait_until(Duration::from_secs(60), || {
        endpoint.row_keys("packet_data").len() >= 5_000
    }));
    let killed = collector.stop_with(libc::SIGKILL);
    assert!(!killed.status.success());
    let before = endpoint.row_keys("packet_data").len();
    assert!(before < 20_000, "killed before the end ({before} rows)");

    // A third run replays the rest: each row once, but for the one record that may have
    // been in flight at the kill.
    endpoint.stall(None);
    let collector = on_spool(&net, &endpoint, &spool_arg);
    assert!(wait_until(Duration::from_secs(60), || {
        endpoint.row_keys("packet_data").len() >= 20_000
    }));
    std::thread::sleep(Duration::from_millis(500));
    let third = collector.interrupt().summary();
    let keys = endpoint.row_keys("packet_data");
    let unique: HashSet<(i64, u32)> = keys.iter().copied().collect();
    assert_eq!(unique.len(), 20_000, "every row arrived");
    let duplicates = keys.len() - unique.len();
    eprintln!(
        "kill -9 during replay: {before} rows before the kill, {} replayed after, {duplicates} duplicates",
        third.replayed
    );
    assert!(
        duplicates <= 1_024,
        "{duplicates} duplicates: more than one record was re-sent"
    );
}
