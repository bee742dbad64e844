//! What a new user meets in the first hour, root tier: the real binary on a veth pair.
//! A second collector on a TC hook the first holds is refused, naming the first.

mod common;

/// The collector's own pid: `ip netns exec` may run it as a child.
fn collector_pid(ip_pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{ip_pid}/task/{ip_pid}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| ip_pid.to_string())
}

#[test]
fn a_second_collector_on_the_same_tc_hook_is_refused_naming_the_first() {
    let net = net_pair_or_skip!();
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
