//! GreptimeDB away for 60 s during a steady 10 000 rows/s run: capture never stops, memory
//! stays bounded, and afterwards every row has arrived exactly once.

mod common;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use common::{endpoint::Endpoint, frames::udp_frame, wait_until};

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
fn sixty_second_outage_at_ten_thousand_rows_per_second_loses_nothing() {
    const RATE: u64 = 10_000;
    const BEFORE: Duration = Duration::from_secs(5);
    const OUTAGE: Duration = Duration::from_secs(60);
    const AFTER: Duration = Duration::from_secs(10);

    let net = net_pair_or_skip!();
    let endpoint = Endpoint::start(Some(&net.ns_a));
    endpoint.keys_only();
    let collector = net.collector().greptime(&endpoint).start();
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
}
