//! Test hosts for kernel-path tests: two network namespaces joined by a veth pair, the real
//! binary running in one, raw frames sent from the other. Names are unique per process and
//! test; everything is deleted on drop, also when the test fails.
#![allow(dead_code)] // each test binary uses a different part

pub mod data;
pub mod delay;
pub mod endpoint;
pub mod frames;
pub mod http;
pub mod live;
pub mod logs;
pub mod pcap;
pub mod xdp;

use std::{
    ffi::CString,
    io::{BufRead as _, BufReader, Read as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

pub const MAC_A: [u8; 6] = [0x02, 0xfe, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0xfe, 0, 0, 0, 0x0b];

pub fn mac_str(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Panics unless this process runs as root: every root-tier test (network namespaces, the
/// real binary attached to an interface, BPF) calls it first, through [`NetPair::new`] or
/// directly, so that one that cannot run fails and says why instead of passing unrun. The
/// root tier is built only with `--features root-tests` (`cargo xtask test`); `cargo test`
/// leaves it out.
pub fn require_root() {
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let test = std::thread::current()
        .name()
        .unwrap_or("a root-tier test")
        .to_owned();
    assert!(
        root,
        "{test} needs root: it creates network namespaces and loads XDP (run `cargo xtask \
         test` as root, or `cargo xtask test unit` / `cargo test` for the tests that need no \
         root)"
    );
}

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

fn must(args: &[&str]) {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces, `a` (where the collector runs, on `if_a`) and `b` (the sender, `if_b`).
/// IPv6 is disabled and ARP off on both ends, so the kernel sends nothing of its own: every
/// frame on the link is one the test sent.
pub struct NetPair {
    pub ns_a: String,
    pub ns_b: String,
    pub if_a: String,
    pub if_b: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl NetPair {
    /// A fresh pair; panics where not root ([`require_root`]).
    pub fn new() -> Self {
        require_root();
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let pair = Self {
            ns_a: format!("fmx-{id}-a"),
            ns_b: format!("fmx-{id}-b"),
            if_a: format!("fx{id}a"),
            if_b: format!("fx{id}b"),
        };
        // From here on Drop cleans up, whatever fails next.
        for ns in [&pair.ns_a, &pair.ns_b] {
            must(&["ip", "netns", "add", ns]);
            for key in ["all", "default"] {
                let k = format!("net.ipv6.conf.{key}.disable_ipv6=1");
                must(&["ip", "netns", "exec", ns, "sysctl", "-qw", &k]);
            }
        }
        must(&[
            "ip",
            "link",
            "add",
            &pair.if_a,
            "address",
            &mac_str(MAC_A),
            "netns",
            &pair.ns_a,
            "type",
            "veth",
            "peer",
            "name",
            &pair.if_b,
            "address",
            &mac_str(MAC_B),
            "netns",
            &pair.ns_b,
        ]);
        // Loopback in ns_a: the GreptimeDB test endpoint listens there.
        must(&["ip", "-n", &pair.ns_a, "link", "set", "lo", "up"]);
        for (ns, ifname) in [(&pair.ns_a, &pair.if_a), (&pair.ns_b, &pair.if_b)] {
            must(&["ip", "-n", ns, "link", "set", ifname, "arp", "off", "up"]);
        }
        pair
    }

    /// `ip link` output for the collector's interface.
    pub fn link_a(&self) -> String {
        String::from_utf8_lossy(&sh(&["ip", "-n", &self.ns_a, "link", "show", &self.if_a]).stdout)
            .into_owned()
    }

    /// Whether an XDP program is attached to `if_a`.
    pub fn xdp_attached(&self) -> bool {
        self.link_a().contains("xdp")
    }

    /// A raw socket on `if_b` that sends whole Ethernet frames.
    pub fn sender(&self) -> FrameSender {
        let ifname = self.if_b.clone();
        // A socket belongs to the namespace it was created in: create it there, use it
        // from anywhere.
        in_netns(&self.ns_b, move || FrameSender {
            fd: packet_socket(&ifname),
        })
    }

    /// A raw socket on interface `ifname` of namespace `ns` that sends whole Ethernet frames
    /// (on `if_a`: frames leaving the collector's interface, for its egress hook).
    pub fn sender_on(&self, ns: &str, ifname: &str) -> FrameSender {
        let ifname = ifname.to_owned();
        in_netns(ns, move || FrameSender {
            fd: packet_socket(&ifname),
        })
    }

    /// The collector to run in `ns_a` on `if_a`: add arguments, environment, a GreptimeDB
    /// endpoint, then [`start`](CollectorBuilder::start) it.
    pub fn collector(&self) -> CollectorBuilder<'_> {
        CollectorBuilder {
            net: self,
            args: Vec::new(),
            env: Vec::new(),
            ready: "XDP attached".into(),
        }
    }

    /// Sends UDP frames `udp_frame(i)` for each `i` in `range` from `if_b`
    /// ([`FrameSender::send_udp`]).
    pub fn send_udp(&self, range: std::ops::Range<u32>) {
        self.sender().send_udp(range);
    }

    /// Runs `pre… flowmetrix args…` in `ns_a` to its end (`pre` wraps the binary, e.g.
    /// `setpriv …`; `args` name no interface unless the caller does).
    pub fn run_in(&self, pre: &[&str], args: &[&str]) -> Ran {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns_a])
            .args(pre)
            .arg(env!("CARGO_BIN_EXE_flowmetrix"))
            .args(args)
            .output()
            .expect("run flowmetrix");
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A spool directory of this pair's own.
    pub fn spool_dir(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("fmx-spool-{}", self.ns_a))
    }
}

/// A finished run of the binary ([`NetPair::run_in`]).
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// What [`NetPair::collector`] will start.
pub struct CollectorBuilder<'a> {
    net: &'a NetPair,
    args: Vec<String>,
    env: Vec<(String, String)>,
    ready: String,
}

impl CollectorBuilder<'_> {
    /// More command-line arguments (after `-i IFACE`).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// More environment variables.
    pub fn env(mut self, env: &[(&str, &str)]) -> Self {
        self.env
            .extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self
    }

    /// Start-up is done when a log line contains `needle` (default: "XDP attached").
    pub fn ready(mut self, needle: &str) -> Self {
        self.ready = needle.to_owned();
        self
    }

    /// Writes to this GreptimeDB test endpoint, with a spool directory of the pair's own
    /// and a short flush interval (these come before the other arguments).
    pub fn greptime(mut self, endpoint: &endpoint::Endpoint) -> Self {
        let spool = self.net.spool_dir().to_string_lossy().into_owned();
        let addr = endpoint.addr.to_string();
        let mut args: Vec<String> = [
            "--greptime-endpoint",
            &addr,
            "--flush-interval",
            "100ms",
            "--spool-dir",
            &spool,
        ]
        .map(str::to_owned)
        .into();
        args.append(&mut self.args);
        self.args = args;
        self
    }

    /// Spawns it and waits until it is ready.
    pub fn start(self) -> Collector {
        let mut cmd = Command::new("ip");
        cmd.envs(self.env)
            .args([
                "netns",
                "exec",
                &self.net.ns_a,
                env!("CARGO_BIN_EXE_flowmetrix"),
                "-i",
                &self.net.if_a,
            ])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Collector::start_until(cmd, &self.ready)
    }
}

/// Polls `done` until it holds or `limit` has passed; whether it held. The pause between
/// polls doubles from 10 ms to 250 ms: a short wait ends promptly, and a long one does not
/// keep taking the locks of what it watches (the endpoint's rows, say) from the collector.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(10);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Waits (at most `limit`) until the endpoint holds `n` rows of `table`; whether it does.
pub fn wait_for_rows(
    endpoint: &endpoint::Endpoint,
    table: &str,
    n: usize,
    limit: Duration,
) -> bool {
    wait_until(limit, || endpoint.row_keys(table).len() >= n)
}

impl Drop for NetPair {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.spool_dir());
        // Deleting a namespace destroys the veth end in it (and so its peer).
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

/// Runs `f` on a thread that entered network namespace `ns` (sockets it creates live there).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = CString::new(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        // SAFETY: plain syscalls with checked results, on this thread only.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            assert!(fd >= 0, "open netns: {}", std::io::Error::last_os_error());
            assert_eq!(libc::setns(fd, libc::CLONE_NEWNET), 0, "setns");
            libc::close(fd);
        }
        f()
    })
    .join()
    .expect("netns thread")
}

/// `GET path` from inside namespace `ns`; the response body (which must come with 200).
pub fn http_get_in(ns: &str, addr: &str, path: &str) -> String {
    let url = format!("http://{addr}{path}");
    in_netns(ns, move || {
        let (status, body) = http::get(&url, Duration::from_secs(30));
        assert_eq!(status, 200, "GET {url}: {body}");
        body
    })
}

/// An AF_PACKET socket in the calling thread's namespace, bound to `ifname`, that sends
/// whole Ethernet frames and receives nothing.
pub fn packet_socket(ifname: &str) -> OwnedFd {
    let name = CString::new(ifname).unwrap();
    // SAFETY: plain syscalls with checked results.
    unsafe {
        // Protocol 0: this socket receives nothing, it only sends.
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let ifindex = libc::if_nametoindex(name.as_ptr());
        assert!(ifindex > 0, "no interface {ifname}");
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        let rc = libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        fd
    }
}

pub struct FrameSender {
    fd: OwnedFd,
}

impl FrameSender {
    /// Sends UDP frames `udp_frame(i)` for each `i` in `range`, pausing 1 ms every 100
    /// frames to stay below veth's 256-frame XDP queue, so that every frame reaches the
    /// program.
    pub fn send_udp(&self, range: std::ops::Range<u32>) {
        for i in range {
            self.send(&frames::udp_frame(i));
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    pub fn send(&self, frame: &[u8]) {
        // SAFETY: valid fd and buffer.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The summary line's numbers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub seen: u64,
    pub sampled: u64,
    pub ring_drops: u64,
    pub decoded: u64,
    pub decode_errors: u64,
    pub queue_drops: u64,
    pub written: u64,
    pub write_errors: u64,
    pub spooled: u64,
    pub replayed: u64,
    pub spool_lost: u64,
    /// Rows not printed because the reader of stdout left (only printed when not 0).
    pub unread: u64,
    /// The kernel counters per direction (`; ingress: seen N sampled N ring drops N; …`).
    pub ingress: DirectionSummary,
    pub egress: DirectionSummary,
    /// `--mode flows|both`: the `; flows: rows N, written N, …` part, by name.
    pub flows: Option<std::collections::BTreeMap<String, u64>>,
    /// `--mode flows|both`: the `; dns: rows N, written N, …` part, by name.
    pub dns: Option<std::collections::BTreeMap<String, u64>>,
}

impl Summary {
    /// A number of the flows part (`rows`, `written`, `packets`, `unkeyed bytes`, …).
    pub fn flow(&self, name: &str) -> u64 {
        let flows = self.flows.as_ref().expect("the summary has a flows part");
        *flows
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in the flows part: {flows:?}"))
    }
}

/// The summary's numbers of one direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DirectionSummary {
    pub seen: u64,
    pub sampled: u64,
    pub ring_drops: u64,
}

impl DirectionSummary {
    /// `seen N sampled N ring drops N`, or `seen N` where no packet rows are made.
    fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("seen ")?;
        let Some((seen, rest)) = rest.split_once(" sampled ") else {
            return Some(Self {
                seen: rest.parse().ok()?,
                ..Self::default()
            });
        };
        let (sampled, ring_drops) = rest.split_once(" ring drops ")?;
        Some(Self {
            seen: seen.parse().ok()?,
            sampled: sampled.parse().ok()?,
            ring_drops: ring_drops.parse().ok()?,
        })
    }
}

impl Summary {
    pub fn parse(stderr: &str) -> Option<Self> {
        let line = stderr.lines().find_map(|l| l.strip_prefix("summary: "))?;
        let mut s = Self::default();
        let mut parts = line.split("; ");
        let totals = parts.next()?;
        for part in parts {
            let (name, counts) = part.split_once(": ")?;
            if name == "flows" || name == "dns" {
                let mut f = std::collections::BTreeMap::new();
                for item in counts.split(", ") {
                    let (k, n) = item.rsplit_once(' ')?;
                    f.insert(k.to_owned(), n.parse().ok()?);
                }
                if name == "flows" {
                    s.flows = Some(f);
                } else {
                    s.dns = Some(f);
                }
                continue;
            }
            let counts = DirectionSummary::parse(counts)?;
            match name {
                "ingress" => s.ingress = counts,
                "egress" => s.egress = counts,
                _ => return None,
            }
        }
        for part in totals.split(", ") {
            let (name, n) = part.rsplit_once(' ')?;
            let n: u64 = n.parse().ok()?;
            let slot = match name {
                "seen" => &mut s.seen,
                "sampled" => &mut s.sampled,
                "ring drops" => &mut s.ring_drops,
                "decoded" => &mut s.decoded,
                "decode errors" => &mut s.decode_errors,
                "queue drops" => &mut s.queue_drops,
                "written" => &mut s.written,
                "write errors" => &mut s.write_errors,
                "spooled" => &mut s.spooled,
                "replayed" => &mut s.replayed,
                "spool lost" => &mut s.spool_lost,
                "unread" => &mut s.unread,
                _ => return None,
            };
            *slot = n;
        }
        Some(s)
    }
}

pub struct Collector {
    child: Child,
    stderr_lines: mpsc::Receiver<String>,
    stderr_seen: Mutex<Vec<String>>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// From the signal to the process's exit.
    pub exit_time: Duration,
}

impl Finished {
    pub fn rows(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    pub fn summary(&self) -> Summary {
        Summary::parse(&self.stderr)
            .unwrap_or_else(|| panic!("no summary line in stderr:\n{}", self.stderr))
    }
}

impl Collector {
    /// Spawns `cmd` (stdout and stderr piped) and waits until a log line contains `ready`.
    pub fn start_until(mut cmd: Command, ready: &str) -> Self {
        let mut child = cmd.spawn().expect("spawn collector");
        let stderr = child.stderr.take().expect("stderr");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let c = Self {
            child,
            stderr_lines: rx,
            stderr_seen: Mutex::new(Vec::new()),
            stdout: Some(stdout),
        };
        c.wait_for_line(ready, Duration::from_secs(20));
        c
    }

    /// Waits (at most `timeout`) for a log line containing `needle`; panics without one.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.stderr_seen.lock().unwrap().push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "collector never logged {needle:?}; stderr so far:\n{}",
                    self.stderr_seen.lock().unwrap().join("\n")
                ),
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` and waits (at most 30 s) for the process to exit.
    pub fn stop_with(mut self, signal: i32) -> Finished {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), signal) };
        let sent = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(30),
                "collector did not exit"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let exit_time = sent.elapsed();
        let stdout = self.stdout.take().unwrap().join().unwrap();
        let mut lines = std::mem::take(&mut *self.stderr_seen.lock().unwrap());
        while let Ok(line) = self.stderr_lines.recv_timeout(Duration::from_secs(5)) {
            lines.push(line);
        }
        Finished {
            status,
            stdout,
            stderr: lines.join("\n"),
            exit_time,
        }
    }

    pub fn interrupt(self) -> Finished {
        self.stop_with(libc::SIGINT)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
