//! What a new user meets in the first hour, root tier: the real binary on a veth pair.
//! A second collector on a TC hook the first holds is refused, naming the first.

use crate::common;

/// The collector's own pid: `ip netns exec` may run it as a child.
fn collector_pid(ip_pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{ip_pid}/task/{ip_pid}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| ip_pid.to_string())
}

#[test]
fn a_second_collector_on_the_same_tc_hook_is_refused_naming_the_first() {
    let net = common::NetPair::new();
    let first = net
        .collector()
        .args(&["--direction", "egress", "--output", "none"])
        .ready("TC attached")
        .start();
    let pid = collector_pid(first.pid());

    let iface = net.if_a.clone();
    // Bounded: a second collector that attached would run until stopped.
    let second = net.run_in(
        &["timeout", "10"],
        &["-i", &iface, "--direction", "egress", "--output", "none"],
    );
    assert_eq!(second.code, Some(1), "{}", second.stderr);
    let errors: Vec<&str> = second
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", second.stderr);
    assert!(
        errors[0].starts_with(&format!(
            "error: interface {iface} already has a collector's TC egress program"
        )) && errors[0].contains(&format!("(process {pid}, flowmetrix,")),
        "{}",
        errors[0]
    );

    // The first keeps running, and ends as usual.
    let done = first.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
}

#[test]
fn flows_mode_on_ingress_says_only_what_applies() {
    let net = common::NetPair::new();
    let collector = net
        .collector()
        .args(&[
            "--mode",
            "flows",
            "--output",
            "jsonl",
            "--stats-interval",
            "1s",
            "--flow-interval",
            "1s",
        ])
        .start();
    net.send_udp(0..200);
    std::thread::sleep(std::time::Duration::from_millis(2_500)); // two status lines
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let s = done.summary();
    assert_eq!(s.seen, 200, "{}", done.stderr);
    // Neither packet figures (no packet rows are made) nor egress (not captured).
    let line = done
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .unwrap();
    let (head, flows) = line.split_once("; flows: ").unwrap();
    assert_eq!(head, "seen 200; ingress: seen 200", "{line}");
    assert!(flows.starts_with("rows "), "{line}");
    // The status lines: the flows line, no packets line of zeros.
    let info = |needle: &str| {
        done.stderr
            .lines()
            .any(|l| l.contains("INFO") && l.contains(needle))
    };
    assert!(info("flows: rows "), "{}", done.stderr);
    assert!(!info("sampled "), "{}", done.stderr);
}

#[test]
fn without_tcx_a_second_collector_is_warned_that_packets_may_be_written_twice() {
    let net = common::NetPair::new();
    let args = [
        "--direction",
        "egress",
        "--tc-attach",
        "netlink",
        "--output",
        "none",
    ];
    let first = net.collector().args(&args).ready("TC attached").start();
    let pid = collector_pid(first.pid());
    let second = net.collector().args(&args).ready("TC attached").start();
    let done = second.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    assert!(
        done.stderr.lines().any(|l| l.contains("WARN")
            && l.contains(&format!("another collector (process {pid})"))
            && l.contains("written twice")),
        "{}",
        done.stderr
    );
    assert!(first.interrupt().status.success());
}
