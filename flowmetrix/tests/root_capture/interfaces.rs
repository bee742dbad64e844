//! Many interfaces (issue 12): `-i` lists and patterns, interfaces that appear after start
//! and go away while captured, and the kernel's counters per interface. Root tier.

use crate::common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::NetPair;
use serde_json::Value;

fn must(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A veth pair of the test's own, `name` in the collector's namespace and its peer in the
/// sender's (deleted with the namespaces, or by [`Extra::delete`]).
struct Extra<'a> {
    net: &'a NetPair,
    name: String,
    peer: String,
}

impl<'a> Extra<'a> {
    fn add(net: &'a NetPair, name: &str) -> Self {
        let peer = format!("{name}p");
        must(&[
            "ip", "link", "add", name, "netns", &net.ns_a, "type", "veth", "peer", "name", &peer,
            "netns", &net.ns_b,
        ]);
        for (ns, ifname) in [(&net.ns_a, name), (&net.ns_b, peer.as_str())] {
            must(&["ip", "-n", ns, "link", "set", ifname, "arp", "off", "up"]);
        }
        Self {
            net,
            name: name.to_owned(),
            peer,
        }
    }

    /// Sends `n` UDP frames from the peer, so they arrive on `name`.
    fn send(&self, n: u32) {
        self.net
            .sender_on(&self.net.ns_b, &self.peer)
            .send_udp(0..n);
    }

    fn delete(&self) {
        must(&["ip", "-n", &self.net.ns_b, "link", "del", &self.peer]);
    }
}

/// bpf_links the collector `pid` holds open (one per interface and hook).
fn links_held(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf_link")
        })
        .count()
}

/// `name{labels} value` lines of a metrics page: the sum of those whose labels contain
/// `label` (all of them with ""), and how many there were.
fn metric(page: &str, name: &str, label: &str) -> (u64, usize) {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter(|(k, _)| {
            k.split_once('{').map_or(*k, |(n, _)| n) == name
                && (label.is_empty() || k.contains(label))
        })
        .fold((0, 0), |(sum, n), (_, v)| {
            (sum + v.trim().parse::<u64>().unwrap(), n + 1)
        })
}

fn rows_on(rows: &[Value], iface: &str) -> usize {
    rows.iter().filter(|r| r["interface"] == iface).count()
}

#[test]
fn a_pattern_takes_interfaces_that_appear_and_lets_go_of_those_that_go() {
    let net = NetPair::new();
    // Unique to this pair: `fx<id>a` is the pair's own; ours are `fv<id>…`.
    let id = net
        .if_a
        .trim_start_matches("fx")
        .trim_end_matches('a')
        .to_owned();
    let pattern = format!("fv{id}*");
    let c = net
        .collector()
        .args(&[
            "-i",
            &pattern,
            "--output",
            "jsonl",
            "--metrics-addr",
            "127.0.0.1:9465",
        ])
        .start();
    let baseline_links = links_held(c.pid());
    assert_eq!(baseline_links, 1, "XDP on the pair's interface");

    // Appears after start: captured within 2 s of coming up.
    let up = Instant::now();
    let new = Extra::add(&net, &format!("fv{id}n"));
    c.wait_for_line(
        &format!("XDP attached interface=\"{}\"", new.name),
        Duration::from_secs(2),
    );
    assert!(up.elapsed() < Duration::from_secs(2));
    assert_eq!(links_held(c.pid()), baseline_links + 1, "one more link");
    new.send(500);
    net.send_udp(0..300);

    // Goes away while captured: logged and detached, no error, no link left.
    std::thread::sleep(Duration::from_millis(300));
    new.delete();
    c.wait_for_line("interface went away; detaching", Duration::from_secs(2));
    assert!(
        common::wait_until(Duration::from_secs(2), || links_held(c.pid())
            == baseline_links),
        "the deleted interface's link is gone"
    );
    // Still running, still capturing on the pair.
    net.send_udp(300..400);
    std::thread::sleep(Duration::from_millis(1500));
    let page = common::http_get_in(&net.ns_a, "127.0.0.1:9465", "/metrics");
    for (total, split) in [
        (
            "flowmetrix_packets_seen_total",
            "flowmetrix_packets_seen_by_interface_total",
        ),
        (
            "flowmetrix_packets_sampled_total",
            "flowmetrix_packets_sampled_by_interface_total",
        ),
        (
            "flowmetrix_ring_drops_total",
            "flowmetrix_ring_drops_by_interface_total",
        ),
    ] {
        assert_eq!(
            metric(&page, total, "").0,
            metric(&page, split, "").0,
            "{split}:\n{page}"
        );
    }
    let seen = "flowmetrix_packets_seen_by_interface_total";
    let on_new = format!("interface=\"{}\",direction=\"ingress\"", new.name);
    let on_pair = format!("interface=\"{}\",direction=\"ingress\"", net.if_a);
    assert_eq!(metric(&page, seen, &on_new), (500, 1), "{page}");
    assert_eq!(metric(&page, seen, &on_pair), (400, 1), "{page}");

    let done = c.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    assert!(!done.stderr.contains("ERROR"), "{}", done.stderr);
    let rows = done.rows();
    assert_eq!(rows_on(&rows, &new.name), 500);
    assert_eq!(rows_on(&rows, &net.if_a), 400);
    let s = done.summary();
    assert_eq!(s.seen, 900);
    assert_eq!(
        s.sampled,
        s.ring_drops + s.decode_errors + s.queue_drops + s.write_errors + s.written + s.spooled,
        "the loss equation: {s:?}"
    );
}

#[test]
fn a_list_of_interfaces_gives_rows_with_each_name() {
    let net = NetPair::new();
    let id = net
        .if_a
        .trim_start_matches("fx")
        .trim_end_matches('a')
        .to_owned();
    let one = Extra::add(&net, &format!("fw{id}x"));
    let two = Extra::add(&net, &format!("fw{id}y"));
    let list = format!("{},{}", one.name, two.name);
    let c = net
        .collector()
        .args(&["-i", &list, "--output", "jsonl"])
        .start();
    c.wait_for_line(
        &format!("XDP attached interface=\"{}\"", two.name),
        Duration::from_secs(5),
    );
    one.send(30);
    two.send(20);
    std::thread::sleep(Duration::from_millis(200));
    let done = c.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let rows = done.rows();
    assert_eq!(rows_on(&rows, &one.name), 30);
    assert_eq!(rows_on(&rows, &two.name), 20);
    assert_eq!(rows.len(), 50);
}

#[test]
fn a_named_interface_that_does_not_exist_is_a_usage_error_a_pattern_a_warning() {
    let net = NetPair::new();
    let ran = net.run_in(&[], &["-i", &format!("{},fmx-nosuch9", net.if_a)]);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("no such interface: fmx-nosuch9"),
        "{}",
        ran.stderr
    );

    let c = net
        .collector()
        .args(&["-i", "fmx-nomatch*", "--output", "jsonl"])
        .start();
    c.wait_for_line(
        "no interface matches -i fmx-nomatch*",
        Duration::from_secs(5),
    );
    let done = c.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
}
