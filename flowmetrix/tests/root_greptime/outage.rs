//! GreptimeDB away during a steady run: capture never stops, memory stays bounded, and
//! afterwards every row has arrived exactly once. (The sink's retry, outage and spool logic is
//! tested without root in tests/sink.rs; these run the real binary end to end.)

use crate::common;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use common::{NetPair, endpoint::Endpoint, frames::udp_frame, wait_until};

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// By row inserts (`--write-path rows`).
#[test]
fn an_outage_in_a_steady_ten_thousand_rows_per_second_run_loses_nothing() {
    let net = common::NetPair::new();
    steady_run_with_an_outage(&net, &["--write-path", "rows"]);
}

/// The same through bulk writes (`--write-path bulk`, the default): the table is made by the
/// start-up DDL, then every batch goes by bulk; the outage goes to the spool, replayed by row
/// insert.
#[test]
fn an_outage_in_a_steady_run_by_bulk_writes_loses_nothing() {
    let net = common::NetPair::new();
    let bulk = steady_run_with_an_outage(&net, &["--write-path", "bulk"]);
    assert!(bulk > 0, "no batch came by bulk");
}

/// Returns how many batches came by bulk writes.
fn steady_run_with_an_outage(net: &NetPair, args: &[&str]) -> usize {
    const RATE: u64 = 10_000;
    const BEFORE: Duration = Duration::from_secs(3);
    const OUTAGE: Duration = Duration::from_secs(15);
    const AFTER: Duration = Duration::from_secs(5);

    let endpoint = Endpoint::start(Some(&net.ns_a));
    endpoint.keys_only();
    let collector = net.collector().greptime(&endpoint).args(args).start();
    let pid = collector.pid();

    // 100 frames every 10 ms, on a schedule.
    let sender = net.sender();
    let start = Instant::now();
    let total = BEFORE + OUTAGE + AFTER;
    let mut sent: u32 = 0;
    let mut outage_started = false;
    let mut max_rss = 0;
    let mut next_rss = start;
    while start.elapsed() < total {
        let due = (start.elapsed().as_millis() as u64 * RATE / 1_000) as u32;
        while sent < due {
            sender.send(&udp_frame(sent));
            sent += 1;
        }
        if !outage_started && start.elapsed() >= BEFORE {
            endpoint.refuse_for(OUTAGE);
            outage_started = true;
        }
        if Instant::now() >= next_rss {
            max_rss = max_rss.max(rss_kib(pid));
            next_rss += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The spool drains after the outage: wait for every row.
    wait_until(Duration::from_secs(60), || {
        max_rss = max_rss.max(rss_kib(pid));
        endpoint.row_keys("packet_data").len() >= sent as usize
    });
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let s = done.summary();

    assert_eq!(s.seen, u64::from(sent), "capture saw every frame: {s:?}");
    assert_eq!(
        (
            s.ring_drops,
            s.decode_errors,
            s.queue_drops,
            s.write_errors,
            s.spool_lost
        ),
        (0, 0, 0, 0, 0),
        "{s:?}"
    );
    assert!(s.spooled > 0 && s.spooled == s.replayed, "{s:?}");
    let keys = endpoint.row_keys("packet_data");
    let unique: HashSet<(i64, u32)> = keys.iter().copied().collect();
    assert_eq!(unique.len(), keys.len(), "duplicates: {s:?}");
    assert_eq!(keys.len(), sent as usize, "{s:?}");
    let mut ports: Vec<u32> = keys.iter().map(|k| k.1).collect();
    let mut want: Vec<u32> = (0..sent).map(|i| 10_000 + i % 50_000).collect();
    ports.sort_unstable();
    want.sort_unstable();
    assert!(
        ports == want,
        "the rows that arrived are not the frames sent"
    );
    assert!(max_rss < 200 * 1024, "collector RSS reached {max_rss} KiB");
    eprintln!("sent {sent}, spooled {}, peak RSS {max_rss} KiB", s.spooled);
    endpoint.bulk_counts().0
}

/// Frames `0..` at 2 000 a second for `secs`, with `at(second, sent)` called once a second;
/// then waits (up to 60 s) until `arrived()` counts every frame. Returns how many were sent.
fn steady_frames(
    net: &NetPair,
    secs: u64,
    mut at: impl FnMut(u64, u32),
    arrived: impl Fn() -> usize,
) -> u32 {
    const RATE: u64 = 2_000;
    let sender = net.sender();
    let start = Instant::now();
    let mut sent: u32 = 0;
    let mut second = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        let due = (start.elapsed().as_millis() as u64 * RATE / 1_000) as u32;
        while sent < due {
            sender.send(&udp_frame(sent));
            sent += 1;
        }
        if start.elapsed() >= Duration::from_secs(second) {
            at(second, sent);
            second += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_until(Duration::from_secs(60), || arrived() >= sent as usize);
    sent
}

/// Every frame sent arrived once, among these keys; nothing lost or counted twice.
fn exactly_once(keys: &[(i64, u32)], sent: u32, s: &common::Summary) {
    assert_eq!(s.seen, u64::from(sent), "capture saw every frame: {s:?}");
    assert_eq!(
        s.sampled,
        s.ring_drops + s.decode_errors + s.queue_drops + s.write_errors + s.written + s.spooled,
        "loss equation: {s:?}"
    );
    assert_eq!(
        (
            s.ring_drops,
            s.decode_errors,
            s.queue_drops,
            s.write_errors,
            s.spool_lost
        ),
        (0, 0, 0, 0, 0),
        "{s:?}"
    );
    let unique: HashSet<(i64, u32)> = keys.iter().copied().collect();
    assert_eq!(unique.len(), keys.len(), "duplicates: {s:?}");
    assert_eq!(keys.len(), sent as usize, "{s:?}");
    let mut ports: Vec<u32> = keys.iter().map(|k| k.1).collect();
    let mut want: Vec<u32> = (0..sent).map(|i| 10_000 + i % 50_000).collect();
    ports.sort_unstable();
    want.sort_unstable();
    assert!(
        ports == want,
        "the rows that arrived are not the frames sent"
    );
}

/// Bulk batches refused while row inserts fail too (GreptimeDB 1.0's form: `Unknown`, no
/// code): the refused batch goes to the row path, which spools it; the batches in flight
/// behind it are sent again; the spool is replayed. Every row once.
#[test]
fn bulk_batches_refused_while_row_inserts_fail_go_to_the_spool_and_arrive_once() {
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    endpoint.keys_only();
    let collector = net
        .collector()
        .greptime(&endpoint)
        .args(&["--write-path", "bulk"])
        .start();
    let mut bulk_before = 0;
    let sent = steady_frames(
        &net,
        6,
        |second, _| {
            if second == 2 {
                bulk_before = endpoint.bulk_counts().0;
                // More failures than bulk can take by itself (at most 4 batches in flight,
                // each sent 3 times): some land on row inserts, whose batches are spooled.
                endpoint.fail_next(16, tonic::Code::Unavailable);
            }
        },
        || endpoint.row_keys("packet_data").len(),
    );
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let s = done.summary();
    assert!(bulk_before > 0, "bulk before the refusals: {s:?}");
    assert!(s.spooled > 0 && s.spooled == s.replayed, "{s:?}");
    assert!(
        done.stderr
            .contains("bulk write to table packet_data refused"),
        "{}",
        done.stderr
    );
    exactly_once(&endpoint.row_keys("packet_data"), sent, &s);
}

/// Two endpoints on the bulk path (two frontends of one cluster: the table exists on both);
/// one goes away mid-stream for 3 s and comes back: its stream's unanswered batches are
/// sent again on the other, the fail-over is logged once, no row is lost or written twice,
/// and bulk goes on on both.
#[test]
fn two_endpoints_by_bulk_one_stopped_mid_stream_and_restarted_loses_and_doubles_no_row() {
    let net = common::NetPair::new();
    let a = Endpoint::start(Some(&net.ns_a));
    let b = Endpoint::start(Some(&net.ns_a));
    let cols: Vec<(&str, greptime_proto::v1::ColumnDataType)> = flowmetrix::sink::greptime::SCHEMA
        .iter()
        .map(|c| (c.name, c.data_type))
        .collect();
    for e in [&a, &b] {
        e.keys_only();
        e.create_table("public", "packet_data", &cols);
    }
    let b_addr = b.addr.to_string();
    let collector = net
        .collector()
        .greptime(&a)
        .args(&["--greptime-endpoint", &b_addr, "--write-path", "bulk"])
        .start();
    let mut b_before = (0, 0);
    let sent = steady_frames(
        &net,
        8,
        |second, _| {
            if second == 2 {
                b_before = b.bulk_counts();
                b.refuse_for(Duration::from_secs(3));
            }
        },
        || a.row_keys("packet_data").len() + b.row_keys("packet_data").len(),
    );
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let s = done.summary();
    let mut keys = a.row_keys("packet_data");
    keys.extend(b.row_keys("packet_data"));
    exactly_once(&keys, sent, &s);
    assert_eq!(s.spooled, 0, "never all down: nothing spooled: {s:?}");
    let lines = |what: &str| {
        done.stderr
            .lines()
            .filter(|l| l.contains(&format!("endpoint {b_addr} {what}")))
            .count()
    };
    assert_eq!(lines("is down"), 1, "{}", done.stderr);
    assert_eq!(lines("answers again"), 1, "{}", done.stderr);
    assert!(
        b_before.0 > 0,
        "b took bulk batches before it went: {b_before:?}, a {:?}\n{}",
        a.bulk_counts(),
        done.stderr
    );
    let (b_after, b_streams) = b.bulk_counts();
    assert!(
        b_after > b_before.0 && b_streams > b_before.1,
        "b took bulk batches on a new stream after it came back: {:?} → {:?}",
        b_before,
        (b_after, b_streams)
    );
    assert!(a.bulk_counts().0 > 0, "a took bulk batches");
}

/// `frames` sent `rate` per second, in `sendmmsg` batches every 100 µs, each frame handed
/// to the receiving end (ENOBUFS is retried). Returns the achieved rate.
fn send_paced(net: &NetPair, frames: &[Vec<u8>], total: usize, rate: f64) -> f64 {
    use std::os::fd::AsRawFd as _;
    let ifname = net.if_b.clone();
    let fd = common::in_netns(&net.ns_b, move || common::packet_socket(&ifname));
    let mut iovs: Vec<libc::iovec> = frames
        .iter()
        .map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        })
        .collect();
    const BATCH: usize = 64;
    let start = Instant::now();
    let mut sent = 0usize;
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * rate) as usize).min(total);
        if due <= sent {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        let n = (due - sent).min(BATCH);
        // SAFETY: zeroed msghdrs are valid; each points at one iovec of `iovs`, which
        // outlives the call.
        let mut msgs: Vec<libc::mmsghdr> = (0..n)
            .map(|k| unsafe {
                let mut m: libc::mmsghdr = std::mem::zeroed();
                m.msg_hdr.msg_iov = &mut iovs[(sent + k) % frames.len()];
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: `msgs` holds n valid headers.
        let rc = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
        if rc > 0 {
            sent += rc as usize;
            continue;
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => std::thread::yield_now(),
            _ => panic!("sendmmsg: {err}"),
        }
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// 10 s at 100 000 frames/s with GreptimeDB away: every frame spooled, none lost, all in
/// GreptimeDB once it is back. A debug build (plain `cargo test`) runs it at 20 000/s; the
/// figure in BENCHMARKS.md is the release build's (`cargo xtask bench` runs it so).
#[test]
fn ten_seconds_at_a_steady_rate_with_greptimedb_away_all_arrive_later() {
    const RATE: f64 = if cfg!(debug_assertions) {
        20_000.0
    } else {
        100_000.0
    };
    const TOTAL: usize = RATE as usize * 10;
    let net = common::NetPair::new();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    endpoint.keys_only();
    let collector = net.collector().greptime(&endpoint).start();
    let pid = collector.pid();
    endpoint.refuse_for(Duration::from_secs(12));
    // 50 000 distinct frames (by source port), each sent 20 times: (ts, port) tells rows apart.
    let frames: Vec<Vec<u8>> = (0..50_000).map(udp_frame).collect();
    let achieved = send_paced(&net, &frames, TOTAL, RATE);
    let mut max_rss = rss_kib(pid);
    let deadline = Instant::now() + Duration::from_secs(120);
    while endpoint.row_keys("packet_data").len() < TOTAL && Instant::now() < deadline {
        max_rss = max_rss.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(250));
    }
    let waited = deadline - Duration::from_secs(120);
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let s = done.summary();
    assert_eq!(s.seen, TOTAL as u64, "{s:?}");
    assert_eq!(
        s.sampled,
        s.ring_drops + s.decode_errors + s.queue_drops + s.write_errors + s.written + s.spooled,
        "loss equation: {s:?}"
    );
    assert_eq!(s.ring_drops, 0, "{s:?}");
    assert_eq!(
        (s.queue_drops, s.write_errors, s.spool_lost),
        (0, 0, 0),
        "{s:?}"
    );
    assert!(s.spooled > 0 && s.replayed == s.spooled, "{s:?}");
    let keys = endpoint.row_keys("packet_data");
    let unique: HashSet<(i64, u32)> = keys.iter().copied().collect();
    assert_eq!(keys.len(), TOTAL, "every frame arrived: {s:?}");
    eprintln!(
        "outage at {RATE}/s: sent {TOTAL} at {achieved:.0}/s; spooled {}, written live {}, ring drops {}, \
         duplicates {}, all in GreptimeDB {:.1} s after the last frame; peak RSS {} KiB",
        s.spooled,
        s.written,
        s.ring_drops,
        keys.len() - unique.len(),
        waited.elapsed().as_secs_f64(),
        max_rss
    );
    assert_eq!(unique.len(), keys.len(), "duplicates");
}
