//! What an SRE runs it with: Prometheus metrics, the status line, JSON logs, and clear
//! start-up errors.

use crate::common;

use std::{process::Command, time::Duration};

use common::{Ran, http_get_in, wait_until};

/// `name value` lines of a Prometheus text page.
fn metric(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in:\n{page}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_match_the_rows_and_the_exit_summary() {
    let net = common::NetPair::new();
    let collector = net
        .collector()
        .args(&[
            "--output",
            "jsonl",
            "--sample-rate",
            "2",
            "--metrics-addr",
            "127.0.0.1:9464",
            "--stats-interval",
            "1s",
        ])
        .start();
    net.send_udp(0..2_000);
    // The kernel counters are read at the scrape: wait until the page shows all frames,
    // and every sample through the ring, decoded and written.
    let mut page = String::new();
    wait_until(Duration::from_secs(10), || {
        page = http_get_in(&net.ns_a, "127.0.0.1:9464", "/metrics");
        let m = |name: &str| metric(&page, &format!("flowmetrix_{name}"));
        m("packets_seen_total") == 2_000
            && m("packets_sampled_total")
                == m("ring_drops_total") + m("samples_decoded_total") + m("decode_errors_total")
            && m("samples_decoded_total")
                == m("rows_written_total") + m("queue_drops_total") + m("write_errors_total")
    });
    std::thread::sleep(Duration::from_millis(1_200)); // one status line at least
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let s = done.summary();
    let rows = done.rows().len() as u64;

    assert_eq!(metric(&page, "flowmetrix_packets_seen_total"), s.seen);
    assert_eq!(metric(&page, "flowmetrix_packets_sampled_total"), s.sampled);
    assert_eq!(metric(&page, "flowmetrix_ring_drops_total"), s.ring_drops);
    assert_eq!(metric(&page, "flowmetrix_samples_decoded_total"), s.decoded);
    assert_eq!(metric(&page, "flowmetrix_rows_written_total"), rows);
    assert_eq!(metric(&page, "flowmetrix_rows_written_total"), s.written);
    assert_eq!(metric(&page, "flowmetrix_queue_drops_total"), s.queue_drops);
    assert_eq!(
        metric(&page, "flowmetrix_write_errors_total"),
        s.write_errors
    );
    assert_eq!(metric(&page, "flowmetrix_sample_rate"), 2);
    assert_eq!(metric(&page, "flowmetrix_snaplen_bytes"), 192);
    assert!(page.contains("# TYPE flowmetrix_write_duration_seconds histogram"));
    assert!(
        done.stderr
            .lines()
            .any(|l| l.contains("INFO") && l.contains("sampled ") && l.contains("/s, written ")),
        "no status line:\n{}",
        done.stderr
    );
    // And one for the direction that saw packets, with its rates.
    assert!(
        done.stderr.lines().any(|l| l.contains("INFO")
            && l.contains("ingress: seen ")
            && l.contains("/s, sampled ")),
        "no ingress status line:\n{}",
        done.stderr
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let net = common::NetPair::new();
    let collector = net
        .collector()
        .args(&["--output", "none", "--log-format", "json"])
        .ready("XDP attached")
        .start();
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let logs: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| !l.starts_with("summary: "))
        .collect();
    assert!(logs.len() >= 2, "{}", done.stderr);
    for l in logs {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{l}"
        );
    }
}

#[test]
fn startup_errors_are_one_clear_line() {
    let net = common::NetPair::new();
    let iface = net.if_a.clone();

    // Not root: the kernel refuses the program; say what is needed. Exit 1 (runtime).
    let Ran {
        code, stderr: err, ..
    } = net.run_in(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ],
        &["-i", &iface, "--output", "none", "-no-log"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("CAP_BPF"),
        "{err}"
    );

    // The interface is down.
    let down = Command::new("ip")
        .args(["-n", &net.ns_a, "link", "set", &iface, "down"])
        .status()
        .unwrap();
    assert!(down.success());
    let Ran {
        code, stderr: err, ..
    } = net.run_in(&[], &["-i", &iface, "--output", "none", "-no-log"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        err,
        format!("error: interface {iface} is down (ip link set {iface} up)\n")
    );

    // Native XDP where the driver has none (loopback).
    let Ran {
        code, stderr: err, ..
    } = net.run_in(
        &[],
        &[
            "-i",
            "lo",
            "--xdp-mode",
            "native",
            "--output",
            "none",
            "-no-log",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot attach XDP to lo in native mode") && err.contains("--xdp-mode skb"),
        "{err}"
    );

    // A metrics address that cannot be bound.
    let up = Command::new("ip")
        .args(["-n", &net.ns_a, "link", "set", &iface, "up"])
        .status()
        .unwrap();
    assert!(up.success());
    let Ran {
        code, stderr: err, ..
    } = net.run_in(
        &[],
        &[
            "-i",
            &iface,
            "--output",
            "none",
            "-no-log",
            "--metrics-addr",
            "192.0.2.1:9464",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with("error: cannot serve metrics on 192.0.2.1:9464: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
