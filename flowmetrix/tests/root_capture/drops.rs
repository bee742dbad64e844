//! Kernel drops by reason (`--drops`, root tier): the collector's host drops packets — SYNs
//! to one port by a firewall rule, datagrams to a closed port, datagrams it sends out by a
//! firewall rule — and each flow row carries its drops with the reason the running kernel
//! names; `--drops off` and a kernel without the hook leave the columns null, the flows
//! exact.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use serde_json::Value;

use crate::common::{self, MAC_A, MAC_B, NetPair, mac_str, must};

/// The collector's host (`ns_a`) and the client (`ns_b`).
const HOST: [u8; 4] = [10, 88, 0, 1];
const CLIENT: [u8; 4] = [10, 88, 0, 2];
/// The port the firewall drops SYNs to, and one nothing listens on.
const FIREWALLED: u16 = 7070;
const CLOSED: u16 = 9;
/// The client's UDP port.
const CLIENT_PORT: u16 = 40_010;

fn ip4(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

/// Addresses on both ends, neighbours set by hand (ARP is off on the pair), and the
/// firewall: SYNs to [`FIREWALLED`] dropped on input, datagrams to the client's port
/// [`CLOSED`] dropped on output.
fn hosts() -> NetPair {
    let net = NetPair::new();
    for (ns, ifname, me, peer, peer_mac) in [
        (&net.ns_a, &net.if_a, HOST, CLIENT, MAC_B),
        (&net.ns_b, &net.if_b, CLIENT, HOST, MAC_A),
    ] {
        let me = format!("{}/24", ip4(me));
        must(&["ip", "-n", ns, "addr", "add", &me, "dev", ifname]);
        let (peer, mac) = (ip4(peer), mac_str(peer_mac));
        must(&[
            "ip", "-n", ns, "neigh", "add", &peer, "lladdr", &mac, "dev", ifname,
        ]);
    }
    let nft = |rule: &str| {
        let mut args = vec!["ip", "netns", "exec", &net.ns_a, "nft"];
        args.extend(rule.split(' '));
        must(&args);
    };
    nft("add table inet fmxdrops");
    nft("add chain inet fmxdrops input { type filter hook input priority 0 ; }");
    nft("add chain inet fmxdrops output { type filter hook output priority 0 ; }");
    nft(&format!(
        "add rule inet fmxdrops input tcp dport {FIREWALLED} drop"
    ));
    nft(&format!(
        "add rule inet fmxdrops output udp dport {CLIENT_PORT} drop"
    ));
    net
}

/// A connect from the client to the firewalled port, given up after 3.5 s: its SYN and
/// the retransmits within (at 1 s and 3 s).
fn connect_firewalled(net: &NetPair) {
    let to = SocketAddr::from((HOST, FIREWALLED));
    let res = common::in_netns(&net.ns_b, move || {
        TcpStream::connect_timeout(&to, Duration::from_millis(3_500))
    });
    assert!(res.is_err(), "the firewall let the connection through");
}

/// `n` datagrams from the client's [`CLIENT_PORT`] to the host's closed port.
fn datagrams_to_closed_port(net: &NetPair, n: usize) {
    common::in_netns(&net.ns_b, move || {
        let s = UdpSocket::bind(SocketAddr::from((CLIENT, CLIENT_PORT))).unwrap();
        for _ in 0..n {
            s.send_to(&[7; 100], SocketAddr::from((HOST, CLOSED)))
                .unwrap();
        }
    });
}

/// `n` frames tagged VLAN 100 from the client to the host's closed port: no VLAN device
/// takes them, so the kernel drops them with the tag already out of the packet.
fn tagged_frames(net: &NetPair, n: usize) {
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(MAC_B, MAC_A)
        .single_vlan(100u16.try_into().unwrap())
        .ipv4(CLIENT, HOST, 64)
        .udp(CLIENT_PORT + 1, CLOSED)
        .write(&mut f, &[0x55; 64])
        .unwrap();
    let sender = net.sender();
    for _ in 0..n {
        sender.send(&f);
    }
}

/// `n` datagrams the host sends to the client's port, which its firewall drops on output.
fn datagrams_out_firewalled(net: &NetPair, n: usize) {
    common::in_netns(&net.ns_a, move || {
        let s = UdpSocket::bind(SocketAddr::from((HOST, 40_020))).unwrap();
        for _ in 0..n {
            // The firewall's drop is EPERM to the sender.
            let _ = s.send_to(&[7; 60], SocketAddr::from((CLIENT, CLIENT_PORT)));
        }
    });
}

/// The rows, stderr and the collector's interface of a run with `args` and `env`, during
/// which `traffic` runs.
fn run(
    args: &[&str],
    env: &[(&str, &str)],
    traffic: impl FnOnce(&NetPair),
) -> (Vec<Value>, String, String) {
    let net = hosts();
    let mut all = vec![
        "--mode",
        "flows",
        "--flow-interval",
        "1s",
        "--output",
        "jsonl",
    ];
    all.extend_from_slice(args);
    let collector = net.collector().args(&all).env(env).start();
    traffic(&net);
    // The last drops' interval collected.
    std::thread::sleep(Duration::from_millis(1_500));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    // The summary says the kernel's drops exactly when the drop program ran.
    let s = done.summary();
    let flows = s.flows.as_ref().expect("a flows part");
    let ran = !args.contains(&"off") && !env.iter().any(|(k, _)| k.ends_with("DROPS_BTF"));
    assert_eq!(flows.contains_key("kernel drops"), ran, "{}", done.stderr);
    assert_eq!(flows.contains_key("drop map full"), ran, "{}", done.stderr);
    (done.rows(), done.stderr, net.if_a.clone())
}

/// The rows of one flow: `src` → `dst`, `protocol`, `direction`.
fn flow<'a>(
    rows: &'a [Value],
    src: ([u8; 4], Option<u16>),
    dst: ([u8; 4], u16),
    protocol: u8,
    direction: &str,
) -> Vec<&'a Value> {
    rows.iter()
        .filter(|r| {
            r["src_ip"] == ip4(src.0).as_str()
                && src.1.is_none_or(|p| r["src_port"] == p)
                && r["dst_ip"] == ip4(dst.0).as_str()
                && r["dst_port"] == dst.1
                && r["protocol"] == protocol
                && r["direction"] == direction
        })
        .collect()
}

fn sum(rows: &[&Value], field: &str) -> u64 {
    rows.iter().map(|r| r[field].as_u64().unwrap_or(0)).sum()
}

/// Every row of a flow is the collector's interface's, IPv4, and its drops (if any) are for
/// `reason`; their sums.
fn drops_of(rows: &[&Value], interface: &str, reason: &str) -> (u64, u64, u64, u64) {
    assert!(!rows.is_empty(), "no rows");
    for r in rows {
        assert_eq!(r["interface"], interface, "{r}");
        assert_eq!(r["ether_type"], 0x0800, "{r}");
        let dropped = r["drop_packets"].as_u64().expect("drop_packets measured");
        assert!(r["drop_bytes"].as_u64().is_some(), "{r}");
        if dropped > 0 {
            assert_eq!(r["drop_reason"], reason, "{r}");
        } else {
            assert_eq!(r["drop_reason"], Value::Null, "{r}");
        }
    }
    (
        sum(rows, "packets"),
        sum(rows, "bytes"),
        sum(rows, "drop_packets"),
        sum(rows, "drop_bytes"),
    )
}

#[test]
fn drops_go_on_their_flow_rows_with_the_reason_the_kernel_names() {
    let (rows, stderr, interface) = run(&["--direction", "both"], &[], |net| {
        datagrams_to_closed_port(net, 10);
        datagrams_out_firewalled(net, 4);
        tagged_frames(net, 3);
        connect_firewalled(net);
    });
    assert!(!stderr.contains("drops by reason are off"), "{stderr}");
    // Every drop below is in the kernel's total (the host may drop more of its own).
    let summary = common::Summary::parse(&stderr).unwrap();
    assert!(summary.flow("kernel drops") >= 10 + 3 + 4 + 2, "{stderr}");
    assert_eq!(summary.flow("drop map full"), 0, "{stderr}");

    // Ten datagrams to a closed port: ten NO_SOCKET drops of their ingress flow, every
    // byte (the link header included, as the flow counts them).
    let udp = flow(
        &rows,
        (CLIENT, Some(CLIENT_PORT)),
        (HOST, CLOSED),
        17,
        "ingress",
    );
    let (packets, bytes, dropped, dropped_bytes) = drops_of(&udp, &interface, "NO_SOCKET");
    assert_eq!((packets, dropped), (10, 10), "{udp:?}");
    assert_eq!(dropped_bytes, bytes, "{udp:?}");
    assert_eq!(bytes, 10 * (14 + 20 + 8 + 100), "{udp:?}");
    assert!(udp.iter().all(|r| r["vlan_id"].is_null()), "{udp:?}");

    // Frames tagged for a VLAN the host has no device for: dropped as for another host, on
    // the row of their tagged flow (the VLAN id is not part of a drop's key). The kernel
    // has cleared the tag from the skb by then: their bytes lack its 4.
    let tagged = flow(
        &rows,
        (CLIENT, Some(CLIENT_PORT + 1)),
        (HOST, CLOSED),
        17,
        "ingress",
    );
    let (packets, bytes, dropped, dropped_bytes) = drops_of(&tagged, &interface, "OTHERHOST");
    assert_eq!((packets, dropped), (3, 3), "{tagged:?}");
    assert_eq!(bytes, 3 * (18 + 20 + 8 + 64), "{tagged:?}");
    assert_eq!(dropped_bytes, 3 * (14 + 20 + 8 + 64), "{tagged:?}");
    assert!(tagged.iter().all(|r| r["vlan_id"] == 100), "{tagged:?}");

    // SYNs to the firewalled port: each one the client sent reached the interface and was
    // dropped by the rule (NETFILTER_DROP), on the SYNs' own flow.
    let syn = flow(&rows, (CLIENT, None), (HOST, FIREWALLED), 6, "ingress");
    let (syns, syn_bytes, dropped, dropped_bytes) = drops_of(&syn, &interface, "NETFILTER_DROP");
    assert!(
        syns >= 2,
        "the SYN and its retransmits within 3.5 s: {syn:?}"
    );
    assert_eq!(dropped, syns, "{syn:?}");
    assert_eq!(dropped_bytes, syn_bytes, "{syn:?}");
    assert!(
        syn.iter().all(|r| r["tcp_flags"] == 0x02),
        "SYNs only: {syn:?}"
    );
    // The same flow shows the attempt's retransmitted SYNs (the handshake part), and no
    // handshake latency: none completed.
    let retransmits: u64 = syn
        .iter()
        .map(|r| r["tcp_syn_retransmits"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(retransmits, syns - 1, "{syn:?}");
    assert!(
        syn.iter().all(|r| r["tcp_handshake_us"].is_null()),
        "{syn:?}"
    );

    // Datagrams the host sends, dropped in its OUTPUT chain before the egress hook saw
    // them: a row of their own on the egress side, no packets, four drops.
    let out = flow(
        &rows,
        (HOST, Some(40_020)),
        (CLIENT, CLIENT_PORT),
        17,
        "egress",
    );
    let (packets, _, dropped, dropped_bytes) = drops_of(&out, &interface, "NETFILTER_DROP");
    assert_eq!((packets, dropped), (0, 4), "{out:?}");
    assert_eq!(
        dropped_bytes,
        4 * (20 + 8 + 60),
        "no link header yet: {out:?}"
    );

    // Nothing else was dropped on the interface: the other rows say 0.
    for r in &rows {
        let ours = [FIREWALLED, CLOSED, CLIENT_PORT]
            .iter()
            .any(|p| r["dst_port"] == *p);
        if !ours {
            assert_eq!(r["drop_packets"], 0, "{r}");
        }
    }
}

/// The rows of `n` datagrams to the closed port, each checked but for the drop columns.
fn closed_port_rows(rows: &[Value], interface: &str) -> Vec<Value> {
    let udp = flow(
        rows,
        (CLIENT, Some(CLIENT_PORT)),
        (HOST, CLOSED),
        17,
        "ingress",
    );
    for r in &udp {
        assert_eq!(r["interface"], interface, "{r}");
        assert_eq!(r["ether_type"], 0x0800, "{r}");
    }
    udp.into_iter().cloned().collect()
}

#[test]
fn drops_off_leaves_the_drop_columns_null() {
    let (rows, stderr, interface) = run(&["--drops", "off"], &[], |net| {
        datagrams_to_closed_port(net, 10);
    });
    assert!(!stderr.contains("drops by reason"), "{stderr}");
    let udp = closed_port_rows(&rows, &interface);
    assert_eq!(
        sum(&udp.iter().collect::<Vec<_>>(), "packets"),
        10,
        "{udp:?}"
    );
    for r in &rows {
        for c in ["drop_packets", "drop_bytes", "drop_reason"] {
            assert_eq!(r[c], Value::Null, "{c}: {r}");
        }
    }
}

/// `max_entries` of each drop map the process `pid` holds, from its file descriptors
/// (`/proc/PID/fdinfo`'s `map_id`) and the kernel's names of its maps.
fn drop_map_entries(pid: i32) -> Vec<u32> {
    let names: std::collections::HashMap<u32, (String, u32)> = aya::maps::loaded_maps()
        .flatten()
        .map(|m| {
            let name = m.name_as_str().unwrap_or_default().to_owned();
            (m.id(), (name, m.max_entries()))
        })
        .collect();
    let mut found = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(info) = std::fs::read_to_string(e.unwrap().path()) else {
            continue;
        };
        let id = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:")?.trim().parse::<u32>().ok());
        if let Some((name, entries)) = id.and_then(|id| names.get(&id))
            && flowmetrix_common::drops::DROP_MAPS.contains(&name.as_str())
        {
            found.push(*entries);
        }
    }
    found
}

/// The two drop maps take their entries only when the part runs: the kernel's minimum with
/// `--drops off` and in packets mode.
#[test]
fn drop_maps_are_sized_only_when_the_part_runs() {
    let net = hosts();
    for (args, entries) in [
        (
            &["--mode", "flows"][..],
            flowmetrix_common::drops::DROP_MAX_ENTRIES,
        ),
        (&["--mode", "flows", "--drops", "off"][..], 1),
        (&["--mode", "packets"][..], 1),
    ] {
        let mut all = vec!["--output", "jsonl"];
        all.extend_from_slice(args);
        let collector = net.collector().args(&all).start();
        assert_eq!(
            drop_map_entries(collector.pid()),
            [entries, entries],
            "{args:?}"
        );
        let done = collector.interrupt();
        assert!(done.status.success(), "{args:?}: {}", done.stderr);
    }
}

#[test]
fn a_kernel_without_the_hook_gives_one_line_and_exact_flows() {
    // The probe reads a file that is no BTF, as on a kernel built without it.
    let (rows, stderr, interface) = run(
        &[],
        &[("FLOWMETRIX_TEST_DROPS_BTF", "/proc/self/cmdline")],
        |net| datagrams_to_closed_port(net, 10),
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("drops by reason are off"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("cannot read the kernel's BTF"),
        "{stderr}"
    );
    let udp = closed_port_rows(&rows, &interface);
    let udp: Vec<&Value> = udp.iter().collect();
    assert_eq!(sum(&udp, "packets"), 10, "{udp:?}");
    assert_eq!(sum(&udp, "bytes"), 10 * (14 + 20 + 8 + 100), "{udp:?}");
    for r in &rows {
        for c in ["drop_packets", "drop_bytes", "drop_reason"] {
            assert_eq!(r[c], Value::Null, "{c}: {r}");
        }
    }
}

/// The drop program's runs and their time from the collector's file descriptors
/// (`/proc/PID/fdinfo`, with `kernel.bpf_stats_enabled=1`): the one tracing program it holds.
fn drop_program_stats(pid: i32) -> (u64, u64) {
    let mut found = None;
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(info) = std::fs::read_to_string(e.unwrap().path()) else {
            continue;
        };
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
        };
        // BPF_PROG_TYPE_TRACING.
        if field("prog_type:") == Some(26) {
            found = Some((
                field("run_cnt:").unwrap_or(0),
                field("run_time_ns:").unwrap_or(0),
            ));
        }
    }
    found.expect("the collector holds the drop program")
}

/// The cost per drop event, and what a packet that is not dropped pays (BENCHMARKS.md):
///
///     cargo test -p flowmetrix --features root-tests --test root_capture \
///         drops::cost -- --ignored --nocapture
#[test]
#[ignore = "a measurement: run by hand"]
fn cost_per_drop_event() {
    const N: usize = 200_000;
    let stats_were = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").unwrap();
    let net = hosts();
    let collector = net
        .collector()
        .args(&["--mode", "flows", "--output", "none"])
        .start();
    let pid = collector.pid();
    // Delivered datagrams: a socket listens on the port, read as fast as they come.
    let listener = common::in_netns(&net.ns_a, || {
        UdpSocket::bind(SocketAddr::from((HOST, 5_000))).unwrap()
    });
    listener
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = [0; 200];
        let mut n = 0u64;
        while listener.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    let before = drop_program_stats(pid);
    common::in_netns(&net.ns_b, move || {
        let s = UdpSocket::bind(SocketAddr::from((CLIENT, 0))).unwrap();
        for i in 0..N {
            s.send_to(&[7; 100], SocketAddr::from((HOST, 5_000)))
                .unwrap();
            if i % 64 == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    });
    let delivered = reader.join().unwrap();
    let delivered_runs = drop_program_stats(pid);
    datagrams_to_closed_port(&net, N);
    let after = drop_program_stats(pid);
    let done = collector.interrupt();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", stats_were.trim()).unwrap();
    assert!(done.status.success(), "{}", done.stderr);
    let (runs, ns) = (after.0 - delivered_runs.0, after.1 - delivered_runs.1);
    println!(
        "delivered datagrams: {N} sent, {delivered} read, drop program runs {} (the socket buffer's overflow, if any)",
        delivered_runs.0 - before.0
    );
    println!(
        "dropped datagrams: {N} sent, drop program runs {runs}, {:.1} ns per drop event",
        ns as f64 / runs.max(1) as f64
    );
    assert!(runs >= N as u64, "{runs}");
    // A delivered datagram never runs the program: each run was an overflow drop.
    assert_eq!(delivered + (delivered_runs.0 - before.0), N as u64);
}

#[test]
fn drops_beyond_a_full_drop_map_are_counted_and_stay_in_their_reasons_total() {
    // A drop map of 16 entries, 40 flows dropped at once (in one interval, or two).
    let (rows, stderr, interface) =
        run(&[], &[("FLOWMETRIX_TEST_DROP_MAX_ENTRIES", "16")], |net| {
            common::in_netns(&net.ns_b, move || {
                for port in 0..40u16 {
                    let s = UdpSocket::bind(SocketAddr::from((CLIENT, 41_000 + port))).unwrap();
                    s.send_to(&[7; 100], SocketAddr::from((HOST, CLOSED)))
                        .unwrap();
                }
            });
        });
    let s = common::Summary::parse(&stderr).unwrap();
    let mut with_drops = 0;
    let mut without = 0;
    for port in 0..40u16 {
        let r = flow(
            &rows,
            (CLIENT, Some(41_000 + port)),
            (HOST, CLOSED),
            17,
            "ingress",
        );
        let (packets, _, dropped, _) = drops_of(&r, &interface, "NO_SOCKET");
        assert_eq!(packets, 1, "every flow counted: {r:?}");
        match dropped {
            1 => with_drops += 1,
            0 => without += 1,
            _ => panic!("{r:?}"),
        }
    }
    // 16 a interval on rows, the rest counted.
    assert!((16..=32).contains(&with_drops), "{with_drops}: {stderr}");
    assert_eq!(with_drops + without, 40);
    assert_eq!(s.flow("drop map full"), without, "{stderr}");
    assert!(s.flow("kernel drops") >= 40, "{stderr}");
}
