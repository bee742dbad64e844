//! The disk spool: rows GreptimeDB could not take wait on disk and arrive later, exactly
//! once — across Ctrl+C, kill -9 and damaged files.

use crate::common;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::Duration,
};

use common::{Summary, endpoint::Endpoint, frames::udp_frame, wait_for_rows, wait_until};
use tonic::Code;

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect()
        })
        .unwrap_or_default()
}

/// The rows at the endpoint are exactly `ports`, each once.
fn assert_exactly_once(endpoint: &Endpoint, ports: impl Iterator<Item = u32>) {
    let keys = endpoint.row_keys("packet_data");
    let unique: HashSet<(i64, u32)> = keys.iter().copied().collect();
    assert_eq!(unique.len(), keys.len(), "duplicates arrived");
    let mut got: Vec<u32> = keys.iter().map(|k| k.1).collect();
    let mut want: Vec<u32> = ports.collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got.len(), want.len(), "rows at the endpoint");
    assert!(got == want, "other rows arrived");
}

fn port(i: u32) -> u32 {
    10_000 + i % 50_000
}

#[test]
fn ctrl_c_with_greptimedb_down_spools_the_queue_and_the_next_run_delivers_it() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    let spool = net.spool_dir();
    endpoint.fail_next(usize::MAX, Code::Unavailable);
    let first = net.collector().greptime(&endpoint).start();
    net.send_udp(0..5_000);
    std::thread::sleep(Duration::from_millis(300));
    let done = first.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let s = done.summary();
    assert_eq!(
        (s.written, s.write_errors, s.queue_drops),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!(
        s.spooled, 5_000,
        "the summary says where the rows went: {s:?}"
    );
    assert!(!files(&spool, "spool").is_empty());

    endpoint.heal();
    let second = net.collector().greptime(&endpoint).start();
    wait_for_rows(&endpoint, "packet_data", 5_000, Duration::from_secs(20));
    let done = second.interrupt();
    let s2 = done.summary();
    assert_eq!(s2.replayed, 5_000, "{s2:?}\n{}", done.stderr);
    assert_exactly_once(&endpoint, (0..5_000).map(port));
    assert!(
        files(&spool, "spool").is_empty(),
        "acknowledged segments are deleted"
    );
}

#[test]
fn kill_9_while_greptimedb_is_down_then_a_restart_delivers_the_spool() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    let spool = net.spool_dir();
    endpoint.fail_next(usize::MAX, Code::Unavailable);
    let first = net.collector().greptime(&endpoint).start();
    net.send_udp(0..3_000);
    std::thread::sleep(Duration::from_millis(1_000));
    let _ = first.stop_with(libc::SIGKILL);
    assert!(!files(&spool, "spool").is_empty());

    endpoint.heal();
    let second = net.collector().greptime(&endpoint).start();
    wait_for_rows(&endpoint, "packet_data", 3_000, Duration::from_secs(20));
    let done = second.interrupt();
    assert_eq!(done.summary().replayed, 3_000, "{}", done.stderr);
    assert_exactly_once(&endpoint, (0..3_000).map(port));
}

#[test]
fn a_spool_torn_between_runs_delivers_the_good_records_and_counts_the_rest() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    let spool = net.spool_dir();
    endpoint.fail_next(usize::MAX, Code::Unavailable);
    let first = net
        .collector()
        .greptime(&endpoint)
        .args(&["--batch-size", "100"])
        .start();
    for chunk in 0..20 {
        net.send_udp(chunk * 100..(chunk + 1) * 100);
        std::thread::sleep(Duration::from_millis(150)); // one record per flush
    }
    let s1 = first.interrupt().summary();
    assert_eq!(s1.spooled, 2_000, "{s1:?}");
    // Power loss mid-write: the last record is cut short.
    let segs = files(&spool, "spool");
    let last = segs.iter().max().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 10)
        .unwrap();

    endpoint.heal();
    let second = net.collector().greptime(&endpoint).start();
    // At most the torn record (100 rows) is lost; the rest arrives.
    wait_for_rows(&endpoint, "packet_data", 1_900, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let done = second.interrupt();
    let s: Summary = done.summary();
    assert!(
        s.spool_lost > 0 && s.spool_lost <= 100,
        "one damaged record: {s:?}"
    );
    assert_eq!(s.replayed + s.spool_lost, 2_000, "{s:?}\n{}", done.stderr);
    assert_eq!(endpoint.row_keys("packet_data").len() as u64, s.replayed);
    assert_eq!(
        files(&spool, "bad").len(),
        1,
        "the damaged segment is quarantined"
    );
    assert!(done.stderr.contains("damaged"), "{}", done.stderr);
}

#[test]
fn a_spool_smaller_than_the_outage_drops_the_oldest_and_counts_them() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    let spool = net.spool_dir();
    endpoint.fail_next(usize::MAX, Code::Unavailable);
    let limit: u64 = 256 << 10;
    let first = net
        .collector()
        .greptime(&endpoint)
        .args(&["--spool-max-bytes", "256K", "--batch-size", "200"])
        .start();
    let sender = net.sender();
    let mut max_on_disk = 0;
    for chunk in 0..40u32 {
        for i in chunk * 500..(chunk + 1) * 500 {
            sender.send(&udp_frame(i));
        }
        std::thread::sleep(Duration::from_millis(120));
        // A segment dropped between the listing and its metadata is gone: not on disk.
        let on_disk: u64 = std::fs::read_dir(&spool)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        max_on_disk = max_on_disk.max(on_disk);
    }
    let s1 = first.interrupt().summary();
    assert!(
        max_on_disk <= limit,
        "spool grew to {max_on_disk} bytes (limit {limit})"
    );
    assert!(s1.spool_lost > 0, "{s1:?}");
    assert_eq!(s1.spooled, s1.sampled, "{s1:?}");

    endpoint.heal();
    let second = net
        .collector()
        .greptime(&endpoint)
        .args(&["--spool-max-bytes", "256K"])
        .start();
    wait_until(Duration::from_secs(20), || {
        files(&spool, "spool").is_empty()
    });
    let s2 = second.interrupt().summary();
    // Every spooled row either arrived or was counted as dropped for space, exactly.
    assert_eq!(s2.replayed + s1.spool_lost, s1.spooled, "{s1:?} {s2:?}");
    assert_eq!(endpoint.row_keys("packet_data").len() as u64, s2.replayed);
}
