//! Workload attribution on the TC egress hook: two processes in two cgroups the test makes
//! under the cgroup2 tree — one named as containerd names a pod's container under the
//! systemd driver, one plain — send UDP out of the collector's namespace. Each row carries
//! its own sender's cgroup id (the directory's inode number) and, from the path, the
//! container id and pod UID; the plain cgroup's rows have none. In packet rows and in flow
//! rows; and an answer coming back to the pod's socket gets the pod's cgroup.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use serde_json::Value;

use crate::common;

const UID: &str = "5f1c8a3e-2b4d-4c6e-9f01-23456789abcd";
const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The test's cgroups, removed (deepest first) when dropped, whatever failed.
struct Cgroups {
    top: PathBuf,
    pod: PathBuf,
    plain: PathBuf,
}

impl Cgroups {
    fn new() -> Self {
        let root = flowmetrix::attribution::cgroup_root().expect("a cgroup2 mount");
        // One tree per test: the tests of this binary run at once.
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let top = root.join(format!("fmx-test-{}-{seq}", std::process::id()));
        let pod = top.join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{HEX}.scope",
            UID.replace('-', "_")
        ));
        let plain = top.join("plain");
        let c = Self { top, pod, plain };
        for d in [&c.pod, &c.plain] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        }
        c
    }

    fn id(dir: &Path) -> u64 {
        std::fs::metadata(dir).unwrap().ino()
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // rmdir each directory, deepest first (a cgroup is removed by rmdir, when empty).
        let mut dirs = Vec::new();
        let mut todo = vec![self.top.clone()];
        while let Some(d) = todo.pop() {
            if let Ok(entries) = std::fs::read_dir(&d) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        todo.push(e.path());
                    }
                }
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A shell in namespace `ns` that moves itself into cgroup `dir`, then sends `n` UDP
/// datagrams to 10.231.0.2:`port`, each from a new socket.
fn sender(ns: &str, dir: &Path, port: u16, n: u32) -> Child {
    let procs = dir.join("cgroup.procs");
    let script = format!(
        "echo $$ > '{}' || exit 1; for i in $(seq {n}); do echo x > /dev/udp/10.231.0.2/{port}; sleep 0.02; done",
        procs.display()
    );
    // nsenter, not `ip netns exec`: that one remounts /sys, without the cgroup mounts.
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["bash", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("bash")
}

/// Runs the collector with `args` while both processes send; its rows.
fn rows_with(args: &[&str], ready: &str) -> (Vec<Value>, u64, u64) {
    let cgroups = Cgroups::new();
    let net = common::NetPair::new();
    for cmd in [
        vec![
            "ip",
            "-n",
            &net.ns_a,
            "addr",
            "add",
            "10.231.0.1/24",
            "dev",
            &net.if_a,
        ],
        vec!["ip", "-n", &net.ns_a, "link", "set", "lo", "up"],
    ] {
        let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    }
    let collector = net.collector().args(args).ready(ready).start();
    let (pod_id, plain_id) = (Cgroups::id(&cgroups.pod), Cgroups::id(&cgroups.plain));
    let mut children = [
        sender(&net.ns_a, &cgroups.pod, 9001, 20),
        sender(&net.ns_a, &cgroups.plain, 9002, 20),
    ];
    for c in &mut children {
        assert!(c.wait().unwrap().success());
    }
    // The walk of the cgroup tree runs on a miss, in the background: let a second batch
    // find it done.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut children = [
        sender(&net.ns_a, &cgroups.pod, 9001, 20),
        sender(&net.ns_a, &cgroups.plain, 9002, 20),
    ];
    for c in &mut children {
        assert!(c.wait().unwrap().success());
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    (done.rows(), pod_id, plain_id)
}

fn check(rows: &[Value], pod_id: u64, plain_id: u64) {
    let of = |port: u64| -> Vec<&Value> {
        rows.iter()
            .filter(|r| r["dst_port"] == port && r["protocol"] == 17)
            .collect()
    };
    let (pod, plain) = (of(9001), of(9002));
    assert!(!pod.is_empty() && !plain.is_empty(), "{rows:#?}");
    for r in pod.iter().chain(&plain) {
        assert_eq!(r["direction"], "egress", "{r}");
    }
    // Every row: its own sender's cgroup.
    for r in &pod {
        assert_eq!(r["cgroup_id"], pod_id, "{r}");
    }
    for r in &plain {
        assert_eq!(r["cgroup_id"], plain_id, "{r}");
        assert_eq!(r["container_id"], Value::Null, "{r}");
        assert_eq!(r["pod_uid"], Value::Null, "{r}");
    }
    // Once the tree was walked, the pod's rows name its container and pod (no pod name
    // or namespace without --kube-metadata).
    let named: Vec<&&Value> = pod.iter().filter(|r| r["container_id"] == HEX).collect();
    assert!(!named.is_empty(), "{pod:#?}");
    for r in named {
        assert_eq!(r["pod_uid"], UID, "{r}");
        assert_eq!(r["pod"], Value::Null);
        assert_eq!(r["namespace"], Value::Null);
    }
}

#[test]
fn packet_rows_carry_their_senders_cgroup_container_and_pod() {
    let (rows, pod, plain) = rows_with(
        &["--direction", "egress", "--output", "jsonl"],
        "TC attached",
    );
    check(&rows, pod, plain);
}

#[test]
fn flow_rows_carry_their_senders_cgroup_container_and_pod() {
    let (rows, pod, plain) = rows_with(
        &[
            "--direction",
            "egress",
            "--mode",
            "flows",
            "--flow-interval",
            "1s",
            "--output",
            "jsonl",
        ],
        "TC attached",
    );
    let flows: Vec<Value> = rows
        .into_iter()
        .filter(|r| r.get("interval_ms").is_some())
        .collect();
    check(&flows, pod, plain);
}

/// The local port of the UDP socket in namespace `ns` connected to `remote` (`/proc/net/udp`
/// read there: `ADDR:PORT` in hex, the address in the kernel's byte order).
fn local_port(ns: &str, remote: ([u8; 4], u16)) -> Option<u16> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/udp"])
        .output()
        .ok()?;
    let want = format!("{:08X}:{:04X}", u32::from_ne_bytes(remote.0), remote.1);
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let local = f.nth(1)?;
        (f.next()? == want).then(|| u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok())?
    })
}

/// Ingress to a local socket: the answer to a datagram the pod's process sent gets the
/// process's cgroup from the connection seen leaving (`--direction both`, XDP ingress).
#[test]
fn an_answer_to_a_local_socket_gets_the_senders_cgroup() {
    let cgroups = Cgroups::new();
    let net = common::NetPair::new();
    let out = Command::new("ip")
        .args([
            "-n",
            &net.ns_a,
            "addr",
            "add",
            "10.231.0.1/24",
            "dev",
            &net.if_a,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let collector = net
        .collector()
        .args(&[
            "--direction",
            "both",
            "--mode",
            "flows",
            "--flow-interval",
            "1s",
            "--output",
            "jsonl",
        ])
        .ready(r#"direction="egress""#)
        .start();
    let pod_id = Cgroups::id(&cgroups.pod);
    // One socket, kept open: a datagram out, then a pause while the test answers it.
    let procs = cgroups.pod.join("cgroup.procs");
    let script = format!(
        "echo $$ > '{}' || exit 1; exec 3>/dev/udp/10.231.0.2/9003; echo x >&3; sleep 3",
        procs.display()
    );
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.ns_a))
        .args(["bash", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("bash");
    let mut port = None;
    assert!(common::wait_until(
        std::time::Duration::from_secs(2),
        || {
            port = local_port(&net.ns_a, ([10, 231, 0, 2], 9003));
            port.is_some()
        }
    ));
    let port = port.unwrap();
    let mut answer = Vec::new();
    etherparse::PacketBuilder::ethernet2(common::MAC_B, common::MAC_A)
        .ipv4([10, 231, 0, 2], [10, 231, 0, 1], 64)
        .udp(9003, port)
        .write(&mut answer, b"y")
        .unwrap();
    let sender = net.sender();
    for _ in 0..3 {
        sender.send(&answer);
    }
    assert!(child.wait().unwrap().success());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    let rows = done.rows();
    let flow = |dir: &str, src_port: u64, dst_port: u64| {
        rows.iter()
            .find(|r| {
                r["direction"] == dir && r["src_port"] == src_port && r["dst_port"] == dst_port
            })
            .unwrap_or_else(|| panic!("no {dir} flow {src_port} → {dst_port}: {rows:#?}"))
    };
    let out = flow("egress", u64::from(port), 9003);
    let back = flow("ingress", 9003, u64::from(port));
    assert_eq!(out["cgroup_id"], pod_id, "{out}");
    assert_eq!(back["cgroup_id"], pod_id, "{back}");
    assert_eq!(back["packets"], 3, "{back}");
}

/// The host-veth fallback: frames with no socket arriving on a veth whose peer's namespace
/// holds a process in the pod's cgroup are that pod's (once the background search found it).
#[test]
fn frames_from_a_veth_peers_namespace_get_its_process_cgroup() {
    let cgroups = Cgroups::new();
    let net = common::NetPair::new();
    // A process in the peer's namespace (with that namespace's /sys, as a pod has), moved
    // into the pod's cgroup by the test.
    // A pair of its own, numbered apart from every other test's (each namespace numbers
    // its interfaces from 2: pairs numbered alike are ambiguous, and left null).
    let index = 30_000 + std::process::id() % 20_000;
    let (host, pod) = (format!("fxh{index}"), format!("fxp{index}"));
    let (hi, pi) = (index.to_string(), (index + 1).to_string());
    for cmd in [
        vec![
            "ip", "link", "add", &host, "index", &hi, "netns", &net.ns_a, "type", "veth", "peer",
            "name", &pod, "index", &pi, "netns", &net.ns_b,
        ],
        vec![
            "ip", "-n", &net.ns_a, "link", "set", &host, "arp", "off", "up",
        ],
        vec![
            "ip", "-n", &net.ns_b, "link", "set", &pod, "arp", "off", "up",
        ],
    ] {
        let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    }
    let mut peer = Command::new("ip")
        .args(["netns", "exec", &net.ns_b, "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .expect("sleep");
    std::fs::write(cgroups.pod.join("cgroup.procs"), peer.id().to_string()).unwrap();
    let collector = net
        .collector()
        .args(&["-i", &host, "--output", "jsonl"])
        .ready("XDP attached")
        .start();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let sender = net.sender_on(&net.ns_b, &pod);
    sender.send_udp(0..5);
    // The search runs in the background on the first row that asks.
    std::thread::sleep(std::time::Duration::from_secs(3));
    sender.send_udp(5..10);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let done = collector.interrupt();
    let _ = peer.kill();
    let _ = peer.wait();
    assert!(done.status.success(), "{}", done.stderr);
    let rows = done.rows();
    let late: Vec<&Value> = rows
        .iter()
        .filter(|r| r["interface"] == host.as_str())
        .filter(|r| r["src_port"].as_u64().is_some_and(|p| p >= 10_005))
        .collect();
    assert!(!late.is_empty(), "{rows:#?}");
    let pod_id = Cgroups::id(&cgroups.pod);
    for r in late {
        assert_eq!(r["cgroup_id"], pod_id, "{r}");
        assert_eq!(r["container_id"], HEX, "{r}");
        assert_eq!(r["pod_uid"], UID, "{r}");
    }
}
