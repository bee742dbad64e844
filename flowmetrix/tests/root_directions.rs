//! Both directions on a real link (root tier): a ping from the sender's namespace to the
//! collector's, with the collector sampling ingress and egress; TC programs attached through
//! TCX gone however the collector exits; the clsact (netlink) fallback forced, its filters
//! removed at exit, and left by kill -9 to be cleaned up by the next start.

mod common;

use std::{process::Command, time::Duration};

use aya::programs::{SchedClassifier, TcAttachType};
use common::{NetPair, wait_until};
use flowmetrix_common::{TC_EGRESS_PROGRAM_NAME, TC_INGRESS_PROGRAM_NAME};
use serde_json::Value;

/// The collector's end (`if_a`, in `ns_a`) and the pinging end (`if_b`).
const ADDR_A: &str = "10.99.0.2";
const ADDR_B: &str = "10.99.0.1";
const ECHOES: usize = 5;

/// One test of this file at a time: the clsact path leaves a stale filter alone while any
/// other process holds a program of ours (another collector may be using it), so a collector
/// of a test running beside the stale-filter test would keep it from being cleaned up.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn must(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn output(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Gives both ends an address and the other's MAC as a permanent neighbour, so a ping needs
/// no ARP: the link carries the echoes and nothing else (IPv6 is off).
fn addresses(net: &NetPair) {
    for (ns, ifname, mine, peer, peer_mac) in [
        (&net.ns_a, &net.if_a, ADDR_A, ADDR_B, common::MAC_B),
        (&net.ns_b, &net.if_b, ADDR_B, ADDR_A, common::MAC_A),
    ] {
        must(&["ip", "-n", ns, "link", "set", ifname, "arp", "on"]);
        must(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{mine}/24"),
            "dev",
            ifname,
        ]);
        must(&[
            "ip",
            "-n",
            ns,
            "neigh",
            "replace",
            peer,
            "lladdr",
            &common::mac_str(peer_mac),
            "dev",
            ifname,
            "nud",
            "permanent",
        ]);
    }
}

/// `ECHOES` pings from B to A, each answered.
fn ping(net: &NetPair) {
    let count = ECHOES.to_string();
    must(&[
        "ip", "netns", "exec", &net.ns_b, "ping", "-q", "-c", &count, "-i", "0.2", "-W", "2",
        ADDR_A,
    ]);
}

fn ip(row: &Value, key: &str) -> String {
    row.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Rows from `src` to `dst`; each must say `direction` where rows carry that column.
fn rows_between(rows: &[Value], src: &str, dst: &str, direction: &str) -> usize {
    rows.iter()
        .filter(|r| ip(r, "src_ip") == src && ip(r, "dst_ip") == dst)
        .inspect(|r| {
            if let Some(d) = r.get("direction") {
                assert_eq!(d, direction, "{r}");
            }
        })
        .count()
}

/// The names of the TCX programs on `ifname` in `ns`, at hook `kind`.
fn tcx_programs(ns: &str, ifname: &str, kind: TcAttachType) -> Vec<String> {
    let ifname = ifname.to_owned();
    common::in_netns(ns, move || {
        let (_, programs) = SchedClassifier::query_tcx(&ifname, kind)
            .unwrap_or_else(|e| panic!("query TCX on {ifname}: {e}"));
        programs
            .iter()
            .map(|p| p.name_as_str().unwrap_or_default().to_owned())
            .collect()
    })
}

/// Our TC programs on `if_a`, attached through TCX: (ingress, egress).
fn ours_tcx(net: &NetPair) -> (bool, bool) {
    let has = |kind, name: &str| {
        tcx_programs(&net.ns_a, &net.if_a, kind)
            .iter()
            .any(|p| p == name)
    };
    (
        has(TcAttachType::Ingress, TC_INGRESS_PROGRAM_NAME),
        has(TcAttachType::Egress, TC_EGRESS_PROGRAM_NAME),
    )
}

/// `tc filter show` of `if_a`'s `hook` (ingress or egress): the clsact filters.
fn tc_filters(net: &NetPair, hook: &str) -> String {
    output(&[
        "tc", "-n", &net.ns_a, "filter", "show", "dev", &net.if_a, hook,
    ])
}

/// How many of our filters the clsact hook holds (one line each, naming the filter and
/// its program).
fn our_filters(net: &NetPair, hook: &str, name: &str) -> usize {
    tc_filters(net, hook)
        .lines()
        .filter(|l| l.contains(&format!(" {name} ")))
        .count()
}

#[test]
fn both_directions_give_a_request_row_in_and_a_reply_row_out_for_each_echo() {
    let _one_at_a_time = one_at_a_time();
    let net = common::NetPair::new();
    addresses(&net);
    let collector = net
        .collector()
        .args(&["--direction", "both", "--output", "jsonl"])
        .ready("TC attached")
        .start();
    assert!(
        net.xdp_attached(),
        "ingress stays on XDP:\n{}",
        net.link_a()
    );
    assert_eq!(ours_tcx(&net), (false, true), "egress on TCX");
    ping(&net);
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let rows = done.rows();
    assert_eq!(
        rows_between(&rows, ADDR_B, ADDR_A, "ingress"),
        ECHOES,
        "requests:\n{}",
        done.stdout
    );
    assert_eq!(
        rows_between(&rows, ADDR_A, ADDR_B, "egress"),
        ECHOES,
        "replies:\n{}",
        done.stdout
    );
    assert_eq!(rows.len(), 2 * ECHOES, "nothing else:\n{}", done.stdout);
    // A reply swaps the request's MACs too.
    for r in &rows {
        let (src, dst) = (ip(r, "src_mac"), ip(r, "dst_mac"));
        let want = if ip(r, "src_ip") == ADDR_B {
            (common::MAC_B, common::MAC_A)
        } else {
            (common::MAC_A, common::MAC_B)
        };
        assert_eq!(
            (src, dst),
            (common::mac_str(want.0), common::mac_str(want.1)),
            "{r}"
        );
        // And every other column of an ICMP echo captured on this host's interface.
        let host = common::frames::host_name();
        assert_eq!(r["interface"], net.if_a.as_str(), "{r}");
        assert_eq!(r["host"], host.as_str(), "{r}");
        assert_eq!(
            (
                &r["ether_type"],
                &r["protocol"],
                &r["packet_type"],
                &r["application"]
            ),
            (&2048.into(), &1.into(), &"IPv4".into(), &"UNKNOWN".into()),
            "{r}"
        );
        assert_eq!(r["packet_size"], 98, "56-byte echo payload: {r}");
        assert_eq!(r["sample_rate"], 1, "{r}");
        for null in [
            "src_port",
            "dst_port",
            "tcp_flags",
            "vlan_id",
            "tunnel",
            "inner_src_ip",
            "inner_dst_ip",
            "inner_protocol",
            "inner_src_port",
            "inner_dst_port",
            "mpls_labels",
        ] {
            assert!(r[null].is_null(), "{null}: {r}");
        }
        assert!(r["ts"].is_string(), "{r}");
    }
    let s = done.summary();
    let n = ECHOES as u64;
    assert_eq!((s.ingress.seen, s.ingress.sampled), (n, n), "{s:?}");
    assert_eq!((s.egress.seen, s.egress.sampled), (n, n), "{s:?}");
    assert_eq!(
        (s.seen, s.sampled, s.ring_drops),
        (
            s.ingress.seen + s.egress.seen,
            s.ingress.sampled + s.egress.sampled,
            0
        ),
        "the totals are the sums: {s:?}"
    );
    assert_eq!(s.written, 2 * n, "{s:?}");
    assert!(!net.xdp_attached(), "XDP left behind");
    assert_eq!(ours_tcx(&net), (false, false), "TCX left behind");
}

#[test]
fn egress_only_gives_only_the_replies() {
    let _one_at_a_time = one_at_a_time();
    let net = common::NetPair::new();
    addresses(&net);
    let collector = net
        .collector()
        .args(&["--direction", "egress", "--output", "jsonl"])
        .ready("TC attached")
        .start();
    assert!(!net.xdp_attached(), "no XDP for egress only");
    ping(&net);
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let rows = done.rows();
    assert_eq!(rows_between(&rows, ADDR_A, ADDR_B, "egress"), ECHOES);
    assert_eq!(rows.len(), ECHOES, "only replies:\n{}", done.stdout);
    let s = done.summary();
    assert_eq!(s.ingress, common::DirectionSummary::default(), "{s:?}");
    assert_eq!(s.egress.sampled, ECHOES as u64, "{s:?}");
}

#[test]
fn tc_ingress_hook_samples_the_requests_without_xdp() {
    let _one_at_a_time = one_at_a_time();
    let net = common::NetPair::new();
    addresses(&net);
    let collector = net
        .collector()
        .args(&["--ingress-hook", "tc", "--output", "jsonl"])
        .ready("TC attached")
        .start();
    assert!(!net.xdp_attached(), "no XDP with --ingress-hook tc");
    assert_eq!(ours_tcx(&net), (true, false));
    ping(&net);
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let rows = done.rows();
    assert_eq!(rows_between(&rows, ADDR_B, ADDR_A, "ingress"), ECHOES);
    assert_eq!(rows.len(), ECHOES, "only requests:\n{}", done.stdout);
    assert_eq!(ours_tcx(&net), (false, false));
}

#[test]
fn tcx_programs_are_gone_after_ctrl_c_sigterm_and_kill_9() {
    let _one_at_a_time = one_at_a_time();
    let net = common::NetPair::new();
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGKILL] {
        let collector = net
            .collector()
            .args(&[
                "--direction",
                "both",
                "--ingress-hook",
                "tc",
                "--output",
                "none",
            ])
            .ready("TC attached")
            .start();
        // The second hook is attached right after the first: wait for both.
        assert!(
            wait_until(Duration::from_secs(5), || ours_tcx(&net) == (true, true)),
            "signal {signal}: not attached"
        );
        let done = collector.stop_with(signal);
        if signal != libc::SIGKILL {
            assert!(done.status.success(), "signal {signal}: {}", done.stderr);
        }
        // Closing the last fd of a bpf_link detaches it; the kernel may finish that just
        // after the process is reaped.
        assert!(
            wait_until(Duration::from_secs(2), || ours_tcx(&net) == (false, false)),
            "signal {signal}: TCX programs left: ingress {:?}, egress {:?}",
            tcx_programs(&net.ns_a, &net.if_a, TcAttachType::Ingress),
            tcx_programs(&net.ns_a, &net.if_a, TcAttachType::Egress),
        );
        // Nothing went the clsact way either.
        assert_eq!(our_filters(&net, "egress", TC_EGRESS_PROGRAM_NAME), 0);
    }
}

#[test]
fn forced_clsact_fallback_captures_both_ways_and_removes_its_filters() {
    let _one_at_a_time = one_at_a_time();
    let net = common::NetPair::new();
    addresses(&net);
    let start = || {
        net.collector()
            .args(&[
                "--direction",
                "both",
                "--ingress-hook",
                "tc",
                "--tc-attach",
                "netlink",
                "--output",
                "jsonl",
            ])
            .ready("TC attached")
            .start()
    };
    let both = |what: &str| {
        assert!(
            wait_until(Duration::from_secs(5), || {
                our_filters(&net, "ingress", TC_INGRESS_PROGRAM_NAME) == 1
                    && our_filters(&net, "egress", TC_EGRESS_PROGRAM_NAME) == 1
            }),
            "{what}: want one filter of ours per hook:\ningress {}\negress {}",
            tc_filters(&net, "ingress"),
            tc_filters(&net, "egress")
        );
    };
    let none = |what: &str| {
        assert_eq!(
            (
                our_filters(&net, "ingress", TC_INGRESS_PROGRAM_NAME),
                our_filters(&net, "egress", TC_EGRESS_PROGRAM_NAME)
            ),
            (0, 0),
            "{what}: filters left:\ningress {}\negress {}",
            tc_filters(&net, "ingress"),
            tc_filters(&net, "egress")
        );
    };

    // Ctrl+C: rows both ways, filters removed.
    let collector = start();
    both("running");
    assert_eq!(ours_tcx(&net), (false, false), "forced: no TCX");
    ping(&net);
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let rows = done.rows();
    assert_eq!(rows_between(&rows, ADDR_B, ADDR_A, "ingress"), ECHOES);
    assert_eq!(rows_between(&rows, ADDR_A, ADDR_B, "egress"), ECHOES);
    assert_eq!(rows.len(), 2 * ECHOES, "{}", done.stdout);
    none("after Ctrl+C");

    // SIGTERM: removed too.
    let collector = start();
    both("running again");
    let done = collector.stop_with(libc::SIGTERM);
    assert!(done.status.success(), "{}", done.stderr);
    none("after SIGTERM");

    // kill -9 leaves netlink filters (nothing closes them): the next start removes them
    // and attaches its own, once; its exit removes those.
    let collector = start();
    both("before kill -9");
    let _ = collector.stop_with(libc::SIGKILL);
    both("after kill -9 the kernel keeps the filters");
    let collector = start();
    both("a new start replaced the stale filters");
    ping(&net);
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    assert!(
        done.stderr.contains("removed a stale"),
        "stale filters not reported:\n{}",
        done.stderr
    );
    // The stale programs sampled into a ring no one read: the rows are the new run's own.
    assert_eq!(done.rows().len(), 2 * ECHOES, "{}", done.stdout);
    none("after the last Ctrl+C");
}
