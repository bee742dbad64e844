//! GreptimeDB away during a steady run: capture never stops, memory stays bounded, and
//! afterwards every row has arrived exactly once. (The sink's retry, outage and spool logic is
//! tested without root in tests/sink.rs; these run the real binary end to end.)

mod common;

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

#[test]
fn an_outage_in_a_steady_ten_thousand_rows_per_second_run_loses_nothing() {
    let net = net_pair_or_skip!();
    steady_run_with_an_outage(&net, &[]);
}

/// The same through bulk writes (`--write-path bulk`): the first rows create the table by row
/// insert, then bulk; the outage goes to the spool, replayed by row insert.
#[test]
fn an_outage_in_a_steady_run_by_bulk_writes_loses_nothing() {
    let net = net_pair_or_skip!();
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
    let net = net_pair_or_skip!();
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
