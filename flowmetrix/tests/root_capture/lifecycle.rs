//! Starting and stopping: Ctrl+C and SIGTERM detach and exit promptly even with no traffic,
//! SIGKILL leaves nothing attached, bad command lines fail with one line and exit code 2.

use crate::common;

use std::time::Duration;

use common::{Ran, wait_until};

#[test]
fn ctrl_c_with_no_traffic_exits_within_a_second_and_detaches() {
    let net = common::NetPair::new();
    let collector = net.collector().start();
    assert!(
        net.xdp_attached(),
        "no XDP on the link while running:\n{}",
        net.link_a()
    );
    let done = collector.interrupt();
    assert!(
        done.status.success(),
        "exit {:?}\n{}",
        done.status,
        done.stderr
    );
    assert!(
        done.exit_time < Duration::from_secs(1),
        "took {:?}",
        done.exit_time
    );
    assert!(!net.xdp_attached(), "XDP still attached:\n{}", net.link_a());
    let s = done.summary();
    assert_eq!((s.seen, s.written), (0, 0));
    assert_eq!(done.stdout, "");
}

#[test]
fn sigterm_detaches_and_exits_cleanly() {
    let net = common::NetPair::new();
    let collector = net.collector().args(&["--output", "none"]).start();
    let done = collector.stop_with(libc::SIGTERM);
    assert!(
        done.status.success(),
        "exit {:?}\n{}",
        done.status,
        done.stderr
    );
    assert!(
        done.exit_time < Duration::from_secs(1),
        "took {:?}",
        done.exit_time
    );
    assert!(!net.xdp_attached(), "XDP still attached:\n{}", net.link_a());
    done.summary();
}

#[test]
fn xdp_mode_skb_attaches_generic_and_native_attaches_driver() {
    let net = common::NetPair::new();
    for (mode, shown) in [("skb", "xdpgeneric"), ("native", "xdp ")] {
        let collector = net.collector().args(&["--xdp-mode", mode]).start();
        assert!(net.link_a().contains(shown), "{mode}: {}", net.link_a());
        let done = collector.interrupt();
        assert!(done.status.success(), "{}", done.stderr);
        assert!(
            done.stderr.contains(&format!("mode=\"{mode}\"")),
            "{}",
            done.stderr
        );
        assert!(!net.xdp_attached());
    }
}

#[test]
fn sigkill_leaves_no_program_attached() {
    let net = common::NetPair::new();
    let collector = net.collector().start();
    assert!(net.xdp_attached());
    let _ = collector.stop_with(libc::SIGKILL);
    // The bpf_link goes away with the process's last file descriptor.
    assert!(
        wait_until(Duration::from_secs(2), || !net.xdp_attached()),
        "XDP outlived SIGKILL:\n{}",
        net.link_a()
    );
}

#[test]
fn bad_command_lines_give_one_line_and_exit_2_with_nothing_attached() {
    let net = common::NetPair::new();
    let iface = net.if_a.clone();
    let cases: [(&[&str], &str); 5] = [
        (
            &["-i", "fmx-no-such-if0"],
            "no such interface: fmx-no-such-if0",
        ),
        (
            &["-i", &iface, "--sample-rate", "ten"],
            "invalid value 'ten' for '--sample-rate <N>'",
        ),
        (&["-i", &iface, "-sample-rate", "0"], "--sample-rate"),
        (
            &["-i", &iface, "--frobnicate"],
            "unexpected argument '--frobnicate'",
        ),
        (&[], "--interface <IFACE>"),
    ];
    for (args, want) in cases {
        let Ran {
            code,
            stdout,
            stderr,
        } = net.run_in(&[], args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: not one line:\n{stderr}"
        );
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr:?} lacks {want:?}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(stdout, "");
        assert!(!net.xdp_attached(), "{args:?} attached XDP");
    }
}
