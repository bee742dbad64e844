//! Test hosts for kernel-path tests: two network namespaces joined by a veth pair, the real
//! binary running in one, raw frames sent from the other. Names are unique per process and
//! test; everything is deleted on drop, also when the test fails.
#![allow(dead_code)] // each test binary uses a different part

pub mod endpoint;
pub mod frames;
pub mod live;

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

pub fn require_root() {
    // SAFETY: no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "kernel-path tests need root: they create network namespaces and attach XDP"
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

    /// Runs the collector in `ns_a` on `if_a` with these extra arguments, and waits until
    /// it says XDP is attached.
    pub fn collector(&self, args: &[&str]) -> Collector {
        self.spawn(args, &[], "XDP attached")
    }

    /// Like [`collector`](Self::collector), waiting for a log line containing `ready`.
    pub fn collector_until(&self, args: &[&str], ready: &str) -> Collector {
        self.spawn(args, &[], ready)
    }

    /// Like [`collector`](Self::collector), with extra environment variables.
    pub fn collector_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Collector {
        self.spawn(args, env, "XDP attached")
    }

    fn spawn(&self, args: &[&str], env: &[(&str, &str)], ready: &str) -> Collector {
        let mut cmd = Command::new("ip");
        cmd.envs(env.iter().copied())
            .args([
                "netns",
                "exec",
                &self.ns_a,
                env!("CARGO_BIN_EXE_flowmetrix"),
                "-i",
                &self.if_a,
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Collector::start_until(cmd, ready)
    }

    /// The collector writing to a GreptimeDB test endpoint, with a spool directory of this
    /// pair's own and a short flush interval.
    pub fn greptime_collector(
        &self,
        endpoint: &endpoint::Endpoint,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Collector {
        let addr = endpoint.addr.to_string();
        let spool = self.spool_dir();
        let spool = spool.to_str().unwrap();
        let mut args = vec![
            "--greptime-endpoint",
            &addr,
            "--flush-interval",
            "100ms",
            "--spool-dir",
            spool,
        ];
        args.extend_from_slice(extra);
        self.spawn(&args, env, "XDP attached")
    }

    /// A spool directory of this pair's own.
    pub fn spool_dir(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("fmx-spool-{}", self.ns_a))
    }
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

/// `GET path` from inside namespace `ns`; the response body.
pub fn http_get_in(ns: &str, addr: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let (addr, path) = (addr.to_owned(), path.to_owned());
    in_netns(ns, move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_owned()
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
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
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
}

impl Summary {
    pub fn parse(stderr: &str) -> Option<Self> {
        let line = stderr.lines().find_map(|l| l.strip_prefix("summary: "))?;
        let mut s = Self::default();
        for part in line.split(", ") {
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
    fn start_until(mut cmd: Command, ready: &str) -> Self {
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

    fn wait_for_line(&self, needle: &str, timeout: Duration) {
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
