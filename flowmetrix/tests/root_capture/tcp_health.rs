//! Local TCP sockets' health live (`--tcp-health`, root tier): a bulk transfer from the
//! collector's namespace (A, the sender) to B over the veth, B's input dropping a share of
//! its segments at random with nft: the sender's flow row carries exactly the retransmitted
//! segments the kernel counted for the socket (`tcpi_total_retrans`) and a plausible
//! smoothed RTT; `--tcp-health off` and a kernel without the hooks leave both null, the
//! flows exact; with a 50 ms delay line the RTT is the path's.

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    time::Duration,
};

use serde_json::Value;

use crate::common::{
    self, MAC_A, MAC_B, NetPair,
    delay::{DelayLine, Line},
    in_netns, mac_str, must,
};

/// A's and B's addresses in subnet `net` (each test its own: the hooks see every socket of
/// the host, so two tests' sockets must never share a key).
fn addrs(net: u8) -> (String, String) {
    (format!("10.88.{net}.1"), format!("10.88.{net}.2"))
}
const PORT: u16 = 5001;
/// Bytes sent A → B.
const BULK: usize = 16 << 20;

/// Addresses on both ends (ARP is off on the pair: each end knows the other's MAC), and B's
/// input dropping `loss_percent` of the segments to [`PORT`] at random.
fn addressed(subnet: u8, loss_percent: u32) -> NetPair {
    let net = NetPair::new();
    let (a, b) = addrs(subnet);
    for (ns, ifname, addr, peer, mac) in [
        (&net.ns_a, &net.if_a, &a, &b, MAC_B),
        (&net.ns_b, &net.if_b, &b, &a, MAC_A),
    ] {
        must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        let cidr = format!("{addr}/24");
        must(&["ip", "-n", ns, "addr", "add", &cidr, "dev", ifname]);
        let mac = mac_str(mac);
        must(&[
            "ip", "-n", ns, "neigh", "add", peer, "lladdr", &mac, "dev", ifname,
        ]);
    }
    if loss_percent > 0 {
        for rule in [
            "add table inet loss".to_owned(),
            "add chain inet loss input { type filter hook input priority 0 ; }".to_owned(),
            format!(
                "add rule inet loss input tcp dport {PORT} numgen random mod 100 < {loss_percent} drop"
            ),
        ] {
            let mut args = vec!["ip", "netns", "exec", &net.ns_b, "nft"];
            args.extend(rule.split(' '));
            must(&args);
        }
    }
    net
}

/// What the sender's kernel says of its socket once the transfer is over.
struct Sent {
    local_port: u16,
    total_retrans: u32,
    rtt_us: u32,
}

/// Sends [`BULK`] bytes from A to B, then closes both ways and waits until B has read all
/// and closed: nothing is in flight any more when the socket's figures are read.
fn transfer(net: &NetPair, subnet: u8) -> Sent {
    let (_, b) = addrs(subnet);
    let to = b.clone();
    let listener = in_netns(&net.ns_b, move || {
        TcpListener::bind((to.as_str(), PORT)).expect("listen in B")
    });
    let reader = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        let mut buf = vec![0; 1 << 16];
        let mut total = 0;
        loop {
            match c.read(&mut buf).expect("read") {
                0 => break,
                n => total += n,
            }
        }
        total
    });
    let mut s = in_netns(&net.ns_a, move || {
        TcpStream::connect((b.as_str(), PORT)).expect("connect from A")
    });
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let chunk = vec![0x5a; 1 << 20];
    for _ in 0..BULK / chunk.len() {
        s.write_all(&chunk).expect("send");
    }
    s.shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(reader.join().expect("reader"), BULK);
    // B closed after reading everything: its FIN acknowledges ours.
    assert_eq!(s.read(&mut [0; 16]).expect("B's FIN"), 0);
    // SAFETY: a tcp_info the size the kernel is told, for getsockopt to fill.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid socket and buffer.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    Sent {
        local_port: s.local_addr().unwrap().port(),
        total_retrans: info.tcpi_total_retrans,
        rtt_us: info.tcpi_rtt,
    }
}

/// What one run gives: the rows of the connection, what the kernel said of the socket, the
/// summary, stderr, and the collector's interface.
struct Run {
    rows: Vec<Value>,
    sent: Sent,
    summary: common::Summary,
    stderr: String,
    ifname: String,
}

/// Runs the collector on A (`--mode flows`, 1 s intervals, `extra` arguments and `env`)
/// around one transfer.
fn run(subnet: u8, loss_percent: u32, extra: &[&str], env: &[(&str, &str)]) -> Run {
    run_delayed(subnet, loss_percent, extra, env, None)
}

/// [`run`], B's packets to A going through a delay line of `delay` in B's namespace (the
/// side the collector does not watch).
fn run_delayed(
    subnet: u8,
    loss_percent: u32,
    extra: &[&str],
    env: &[(&str, &str)],
    delay: Option<Duration>,
) -> Run {
    let net = addressed(subnet, loss_percent);
    let (a, b) = addrs(subnet);
    let _line = delay.map(|delay| {
        DelayLine::start(&Line {
            ns: &net.ns_b,
            tun: &format!("{}t", net.if_b),
            to: a.parse().unwrap(),
            from: b.parse().unwrap(),
            out: &net.if_b,
            macs: (MAC_B, MAC_A),
            delay,
        })
    });
    let mut args = vec![
        "--mode",
        "flows",
        "--flow-interval",
        "1s",
        "--output",
        "jsonl",
    ];
    args.extend(extra);
    let ready = if args.contains(&"both") {
        "TC attached"
    } else {
        "XDP attached"
    };
    let collector = net.collector().args(&args).env(env).ready(ready).start();
    let sent = transfer(&net, subnet);
    // One more interval for the last segments' rows.
    std::thread::sleep(Duration::from_millis(1_300));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let port = u64::from(sent.local_port);
    let rows = done
        .rows()
        .into_iter()
        .filter(|r| r["src_port"] == port || r["dst_port"] == port)
        .collect();
    Run {
        rows,
        sent,
        summary: done.summary(),
        stderr: done.stderr,
        ifname: net.if_a.clone(),
    }
}

/// The connection's rows of `direction`, from `src` to `dst`, each checked field by field
/// (all but the figures under test and the counts, which the caller checks).
fn rows_of<'a>(
    rows: &'a [Value],
    direction: &str,
    (src, sport): (&str, u16),
    (dst, dport): (&str, u16),
    net_if: &str,
) -> Vec<&'a Value> {
    let picked: Vec<&Value> = rows
        .iter()
        .filter(|r| r["direction"] == direction && r["src_ip"] == src)
        .collect();
    for r in &picked {
        assert_eq!(r["interface"], net_if, "{r}");
        assert_eq!(
            (&r["dst_ip"], &r["src_port"], &r["dst_port"]),
            (&Value::from(dst), &Value::from(sport), &Value::from(dport)),
            "{r}"
        );
        assert_eq!(
            (&r["protocol"], &r["ether_type"]),
            (&6.into(), &2048.into())
        );
        assert_eq!(r["application"], "UNKNOWN", "{r}");
        assert!(r["packets"].as_u64().is_some_and(|p| p > 0), "{r}");
        assert!(r["bytes"].as_u64().is_some_and(|b| b > 0), "{r}");
        assert_eq!(r["interval_ms"].as_u64().map(|ms| ms <= 1_500), Some(true));
        // The drops part is on by default: its figures are measured (its own tests check them).
        assert!(r["drop_packets"].is_u64(), "{r}");
    }
    picked
}

fn sum(rows: &[&Value], column: &str) -> u64 {
    rows.iter().map(|r| r[column].as_u64().unwrap_or(0)).sum()
}

#[test]
fn a_lossy_bulk_transfer_puts_the_sockets_retransmits_and_rtt_on_the_senders_egress_row() {
    let Run {
        rows,
        sent,
        summary: s,
        stderr,
        ifname,
    } = run(1, 5, &["--direction", "both"], &[]);
    assert!(
        stderr.contains("tcp health: retransmits and smoothed RTT"),
        "{stderr}"
    );
    assert!(!stderr.contains("tcp health off"), "{stderr}");
    let (a, b) = addrs(1);
    let a = (a.as_str(), sent.local_port);
    let b = (b.as_str(), PORT);
    let out = rows_of(&rows, "egress", a, b, &ifname);
    let back = rows_of(&rows, "ingress", b, a, &ifname);
    assert!(!out.is_empty() && !back.is_empty(), "{rows:?}\n{stderr}");
    assert_eq!(out.len() + back.len(), rows.len(), "{rows:?}");
    // Every retransmitted segment the kernel counted for the socket, on its egress rows.
    assert!(sent.total_retrans > 0, "5% loss and no retransmit");
    assert_eq!(
        sum(&out, "tcp_retransmits"),
        u64::from(sent.total_retrans),
        "{rows:?}\n{stderr}"
    );
    for r in &out {
        assert!(r["tcp_retransmits"].is_u64(), "{r}");
    }
    // The largest smoothed RTT of an interval: on a veth, above 0 and far below a second.
    let rtt = out
        .iter()
        .filter_map(|r| r["tcp_rtt_us"].as_u64())
        .max()
        .expect("an RTT on the sender's rows");
    assert!(
        rtt > 0 && rtt < 1_000_000,
        "{rtt} (the socket ended at {})",
        sent.rtt_us
    );
    // The reverse rows (B's ACKs arriving) are not the local socket's sending direction.
    for r in &back {
        assert_eq!(r["tcp_retransmits"], 0, "{r}");
        assert!(r["tcp_rtt_us"].is_null(), "{r}");
    }
    // The flows are as exact as without the part.
    assert_eq!(s.flow("packets"), s.seen, "{stderr}");
    assert!(sum(&out, "bytes") > BULK as u64, "{rows:?}");
}

#[test]
fn without_egress_the_figures_go_on_the_reverse_ingress_row() {
    let Run {
        rows,
        sent,
        stderr,
        ifname,
        ..
    } = run(2, 5, &[], &[]);
    let (a, b) = addrs(2);
    let a = (a.as_str(), sent.local_port);
    let b = (b.as_str(), PORT);
    let back = rows_of(&rows, "ingress", b, a, &ifname);
    assert_eq!(back.len(), rows.len(), "{rows:?}");
    assert!(sent.total_retrans > 0);
    assert_eq!(
        sum(&back, "tcp_retransmits"),
        u64::from(sent.total_retrans),
        "{rows:?}\n{stderr}"
    );
    assert!(
        back.iter()
            .any(|r| r["tcp_rtt_us"].as_u64().is_some_and(|us| us > 0))
    );
}

#[test]
fn with_a_50_ms_delay_one_way_the_rtt_is_the_paths() {
    let Run {
        rows,
        sent,
        stderr,
        ifname,
        ..
    } = run_delayed(
        5,
        0,
        &["--direction", "both"],
        &[],
        Some(Duration::from_millis(50)),
    );
    let (a, b) = addrs(5);
    let out = rows_of(
        &rows,
        "egress",
        (a.as_str(), sent.local_port),
        (b.as_str(), PORT),
        &ifname,
    );
    let rtt: Vec<u64> = out
        .iter()
        .filter_map(|r| r["tcp_rtt_us"].as_u64())
        .collect();
    assert!(!rtt.is_empty(), "{rows:?}\n{stderr}");
    // The line delays B's packets by 50 ms (and waits at most 10 ms more to send them).
    for us in &rtt {
        assert!((45_000..=90_000).contains(us), "{rtt:?}");
    }
    assert!(
        (45_000..=90_000).contains(&u64::from(sent.rtt_us)),
        "{}",
        sent.rtt_us
    );
    assert_eq!(sum(&out, "tcp_retransmits"), u64::from(sent.total_retrans));
}

#[test]
fn tcp_health_off_leaves_the_columns_null() {
    let Run {
        rows,
        summary: s,
        stderr,
        ..
    } = run(3, 0, &["--direction", "both", "--tcp-health", "off"], &[]);
    assert!(!rows.is_empty(), "{stderr}");
    for r in &rows {
        assert!(r["tcp_retransmits"].is_null(), "{r}");
        assert!(r["tcp_rtt_us"].is_null(), "{r}");
    }
    assert!(!stderr.contains("tcp health"), "{stderr}");
    assert_eq!(s.flow("packets"), s.seen, "{stderr}");
}

#[test]
fn a_kernel_without_the_hooks_says_so_in_one_line_and_the_flows_still_run() {
    let Run {
        rows,
        summary: s,
        stderr,
        ..
    } = run(
        4,
        5,
        &["--direction", "both"],
        &[("FLOWMETRIX_TEST_TCP_HEALTH_BTF", "/nonexistent/vmlinux")],
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tcp health"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("WARN")
            && lines[0]
                .contains("tcp health off: cannot read the kernel's BTF at /nonexistent/vmlinux")
            && lines[0].contains("tcp_retransmits and tcp_rtt_us stay null"),
        "{}",
        lines[0]
    );
    assert!(!rows.is_empty(), "{stderr}");
    for r in &rows {
        assert!(r["tcp_retransmits"].is_null(), "{r}");
        assert!(r["tcp_rtt_us"].is_null(), "{r}");
    }
    // Every packet on the interface in exactly one flow row.
    assert_eq!(s.flow("packets"), s.seen, "{stderr}");
    assert_eq!(s.flow("unkeyed"), 0, "{stderr}");
}

/// The programs' cost per event (BENCHMARKS.md): run time over run count from the kernel's
/// BPF statistics (`BPF_ENABLE_STATS`, on while this test holds it, as `sysctl
/// kernel.bpf_stats_enabled=1`), over a lossy bulk transfer: `tcp_rtt` runs for every
/// segment the sockets take, `tcp_retransmit` for every retransmit. Run alone:
/// `cargo test -p flowmetrix --features root-tests --test root_capture tcp_health::cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: run it alone, by name"]
fn cost_per_event() {
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    let net = addressed(9, 2);
    let collector = net
        .collector()
        .args(&[
            "--mode",
            "flows",
            "--direction",
            "both",
            "--output",
            "jsonl",
        ])
        .ready("TC attached")
        .start();
    let mut sent = Vec::new();
    for _ in 0..4 {
        sent.push(transfer(&net, 9).total_retrans);
    }
    let mut seen = std::collections::BTreeMap::new();
    for p in aya::programs::loaded_programs().flatten() {
        let name = p.name_as_str().unwrap_or_default().to_owned();
        if name == "tcp_rtt" || name == "tcp_retransmit" {
            let e = seen.entry(name).or_insert((0u64, 0u64));
            e.0 += p.run_count();
            e.1 += u64::try_from(p.run_time().as_nanos()).unwrap_or(u64::MAX);
        }
    }
    drop(stats);
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    println!(
        "4 transfers of {} MiB, 2% loss; retransmitted segments {sent:?}",
        BULK >> 20
    );
    for (name, (runs, ns)) in &seen {
        assert!(*runs > 0, "{name} never ran");
        println!(
            "{name}: {runs} runs, {:.1} ns a run",
            *ns as f64 / *runs as f64
        );
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}
