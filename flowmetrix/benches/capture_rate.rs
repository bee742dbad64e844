//! Lossless 1:1 capture on veth: FlowMetrix against tcpdump, side by side in one run.
//!
//! A sender of our own (one AF_PACKET socket per thread, `sendmmsg` batches, qdisc bypass,
//! each thread pinned to its own CPU) sends a fixed count of 60-byte UDP frames from one
//! namespace to the other, paced per rate step, then as fast as one thread and as fast as
//! two threads can. At each step, in turn on the receiving veth: nothing (the host's own
//! cost), an empty XDP program (what attaching any XDP program costs on veth), FlowMetrix
//! (`--sample-rate 1`, `--output none` and to the GreptimeDB test endpoint), `tcpdump -w
//! /dev/null` and `tcpdump -w FILE`. Every cell is repeated; the table shows medians.
//!
//! - recorded: FlowMetrix rows decoded (`--output none`), or written + spooled (endpoint);
//!   tcpdump's "packets captured". Lossless: every frame sent, in every repetition.
//! - CPU: the tool's own user+system time per million frames; host: the whole machine's
//!   busy time per million frames above the run with nothing listening (so it includes
//!   the kernel's work for the tool: the XDP program and veth's XDP path, or the AF_PACKET
//!   copy; for the endpoint variant it also includes the test endpoint, in this process).
//! - RSS: the tool's peak resident set (VmHWM), which for FlowMetrix includes the ring
//!   buffer's mapping (the kernel maps its data pages twice: 16 MiB for the default 8M).
//!
//! Then FlowMetrix's peak RSS with the endpoint stalled, and with it away, at the fastest
//! rate, with where the resident memory was at its peak (`/proc/PID/smaps` every 100 ms).
//! Needs root. `cargo xtask bench` (or `cargo bench --bench capture_rate`);
//! `FLOWMETRIX_BENCH_REPS=1` for a quick look; `FLOWMETRIX_BENCH_ONLY=none` for the
//! `--output none` and tcpdump rows only, `FLOWMETRIX_BENCH_ONLY=stalled` for the stalled
//! and away parts alone, `FLOWMETRIX_BENCH_ONLY=endpoint` for the steps to the endpoint alone
//! (each collector's memory at its peak on stderr).

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    io::Read as _,
    os::fd::{AsRawFd as _, OwnedFd},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aya::programs::{Xdp, XdpMode};
use common::{MAC_A, MAC_B, NetPair, endpoint::Endpoint, in_netns, packet_socket};
use etherparse::PacketBuilder;
use flowmetrix::kernel_object;
use flowmetrix_common::{BASELINE_PROGRAM_NAME, SAMPLES_MAP};

/// Repetitions of every cell (the table shows medians); `FLOWMETRIX_BENCH_REPS` overrides.
const REPS: usize = 3;
/// Frames per `sendmmsg` call.
const BATCH: usize = 32;

struct Step {
    /// Frames per second in all; `None`: as fast as the threads can.
    rate: Option<u64>,
    threads: usize,
    count: u64,
}

const STEPS: [Step; 6] = [
    Step::paced(100_000),
    Step::paced(250_000),
    Step::paced(500_000),
    Step::paced(750_000),
    Step::flat(1),
    Step::flat(2),
];

impl Step {
    /// Two seconds' worth at `rate` from one thread.
    const fn paced(rate: u64) -> Self {
        Self {
            rate: Some(rate),
            threads: 1,
            count: 2 * rate,
        }
    }

    const fn flat(threads: usize) -> Self {
        Self {
            rate: None,
            threads,
            count: 2_000_000,
        }
    }

    fn label(&self) -> String {
        match self.rate {
            Some(r) => format!("{} k/s", r / 1000),
            None => format!("max, {} thread{}", self.threads, plural(self.threads)),
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A 60-byte UDP/IPv4 frame from `b` to `a`.
fn frame() -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_B, MAC_A)
        .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
        .udp(40_000, 9999)
        .write(&mut v, &[0u8; 18])
        .expect("build the frame");
    assert_eq!(v.len(), 60);
    v
}

/// Sending sockets on `b`'s veth, one per thread.
struct Sender {
    sockets: Vec<OwnedFd>,
}

impl Sender {
    fn new(net: &NetPair, threads: usize) -> Self {
        let sockets = (0..threads)
            .map(|_| {
                let ifname = net.if_b.clone();
                in_netns(&net.ns_b, move || open_socket(&ifname))
            })
            .collect();
        Self { sockets }
    }

    /// Sends `count` frames from `threads` threads, at `rate` per second in all. A frame the
    /// veth pushes back (ENOBUFS: the receiving ring is full) is sent again, so every one
    /// counted was handed to the receiving end. Returns the achieved rate.
    fn send(&self, frame: &[u8], step: &Step) -> f64 {
        let start = Instant::now();
        std::thread::scope(|s| {
            for (i, fd) in self.sockets[..step.threads].iter().enumerate() {
                let share = step.count / step.threads as u64
                    + u64::from(i == 0) * (step.count % step.threads as u64);
                let rate = step.rate.map(|r| r as f64 / step.threads as f64);
                s.spawn(move || {
                    pin_to_cpu(i);
                    blast(fd, frame, share, rate);
                });
            }
        });
        step.count as f64 / start.elapsed().as_secs_f64()
    }
}

/// A sending socket on `ifname` that hands frames straight to the driver (no qdisc).
fn open_socket(ifname: &str) -> OwnedFd {
    let fd = packet_socket(ifname);
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and option value.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(rc, 0, "PACKET_QDISC_BYPASS");
    fd
}

fn pin_to_cpu(i: usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed cpu_set_t is valid; this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(i % cpus, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// One thread's share: `count` frames at `rate` per second (paced every 100 µs), or as fast
/// as the socket takes them.
fn blast(fd: &OwnedFd, frame: &[u8], count: u64, rate: Option<f64>) {
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr() as *mut libc::c_void,
        iov_len: frame.len(),
    };
    // SAFETY: zeroed msghdrs are valid; each points at the one iovec, which outlives them.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| unsafe {
            let mut m: libc::mmsghdr = std::mem::zeroed();
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < count {
        let due = rate.map_or(count, |r| {
            ((start.elapsed().as_secs_f64() * r) as u64).min(count)
        });
        if due <= sent {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        let n = (due - sent).min(BATCH as u64) as u32;
        // SAFETY: msgs holds BATCH valid headers; n <= BATCH.
        let rc = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), n, 0) };
        if rc > 0 {
            sent += rc as u64;
            continue;
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            // The veth's ring is full: this frame did not go; send it again.
            Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => std::thread::yield_now(),
            _ => panic!("sendmmsg: {err}"),
        }
    }
}

/// Busy seconds of the whole machine so far (user, nice, system, irq, softirq, steal).
fn host_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let line = stat.lines().next().unwrap_or_default();
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| v.get(i))
        .sum::<f64>()
        / 100.0
}

/// User+system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, r)| r.split(' ').collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / 100.0
}

/// Peak resident set of a process so far, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Frames the receiving veth took in so far.
fn rx_packets(net: &NetPair) -> u64 {
    let out = Command::new("ip")
        .args(["-n", &net.ns_a, "-s", "-j", "link", "show", &net.if_a])
        .output()
        .expect("ip link");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .expect("rx packets")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Nothing,
    EmptyXdp,
    Flowmetrix,
    FlowmetrixGreptime,
    Tcpdump,
    TcpdumpFile,
}

const TOOLS: [Tool; 6] = [
    Tool::Nothing,
    Tool::EmptyXdp,
    Tool::Flowmetrix,
    Tool::FlowmetrixGreptime,
    Tool::Tcpdump,
    Tool::TcpdumpFile,
];

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Self::Nothing => "nothing listening",
            Self::EmptyXdp => "empty XDP program",
            Self::Flowmetrix => "FlowMetrix --output none",
            Self::FlowmetrixGreptime => "FlowMetrix → test endpoint",
            Self::Tcpdump => "tcpdump -w /dev/null",
            Self::TcpdumpFile => "tcpdump -w FILE",
        }
    }
}

/// One tool's run at one step.
#[derive(Clone, Copy, Default)]
struct Run {
    achieved: f64,
    arrived: u64,
    recorded: Option<u64>,
    cpu: f64,
    host: f64,
    rss_mib: f64,
}

/// A listener being measured, and how to stop it and read what it recorded.
enum Listener {
    None,
    /// Attached while this lives.
    Xdp {
        _ebpf: Box<aya::Ebpf>,
    },
    Collector(common::Collector, Option<Box<Endpoint>>),
    Tcpdump(Child, Option<std::path::PathBuf>),
}

impl Listener {
    fn start(tool: Tool, net: &NetPair) -> Self {
        match tool {
            Tool::Nothing => Self::None,
            Tool::EmptyXdp => Self::Xdp {
                _ebpf: Box::new(attach_empty_xdp(net)),
            },
            Tool::Flowmetrix => Self::Collector(
                net.collector()
                    .args(&["--sample-rate", "1", "--output", "none"])
                    .start(),
                None,
            ),
            Tool::FlowmetrixGreptime => {
                let _ = std::fs::remove_dir_all(net.spool_dir());
                let ep = Endpoint::start(Some(&net.ns_a));
                ep.keys_only();
                let c = net
                    .collector()
                    .greptime(&ep)
                    .args(&["--sample-rate", "1"])
                    .start();
                Self::Collector(c, Some(Box::new(ep)))
            }
            Tool::Tcpdump => Self::Tcpdump(tcpdump(net, None), None),
            Tool::TcpdumpFile => {
                let path = std::env::temp_dir().join(format!("{}.pcap", net.ns_a));
                Self::Tcpdump(tcpdump(net, Some(&path)), Some(path))
            }
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Self::Collector(c, _) => Some(c.pid() as u32),
            Self::Tcpdump(child, _) => Some(child.id()),
            Self::None | Self::Xdp { .. } => None,
        }
    }

    /// How long to wait after the last frame before reading the counters: FlowMetrix drains
    /// its ring every 20 ms; tcpdump's libpcap hands over a partly filled block after its
    /// 1 s timeout.
    fn settle(&self) -> Duration {
        match self {
            Self::None | Self::Xdp { .. } => Duration::from_millis(200),
            Self::Collector(_, None) => Duration::from_millis(500),
            Self::Collector(_, Some(_)) => Duration::from_secs(2),
            Self::Tcpdump(..) => Duration::from_millis(1500),
        }
    }

    /// Stops the listener; what it recorded.
    fn stop(self) -> Option<u64> {
        match self {
            Self::None | Self::Xdp { .. } => None,
            Self::Collector(c, ep) => {
                let s = c.interrupt().summary();
                drop(ep);
                // Rows delivered, or on disk waiting for the database.
                Some((s.written + s.spooled).saturating_sub(s.spool_lost))
            }
            Self::Tcpdump(mut child, file) => {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let _ = child.wait();
                if let Some(f) = file {
                    let _ = std::fs::remove_file(f);
                }
                err.lines()
                    .find_map(|l| l.strip_suffix(" packets captured"))
                    .and_then(|n| n.trim().parse().ok())
            }
        }
    }
}

fn attach_empty_xdp(net: &NetPair) -> aya::Ebpf {
    let ifname = net.if_a.clone();
    in_netns(&net.ns_a, move || {
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries(SAMPLES_MAP, 1 << 20)
            .load(kernel_object::object().expect("the kernel programs (--features ebpf)"))
            .expect("load the XDP object");
        let prog: &mut Xdp = ebpf
            .program_mut(BASELINE_PROGRAM_NAME)
            .and_then(|p| p.try_into().ok())
            .expect("the baseline program");
        prog.load().expect("load the baseline program");
        prog.attach(&ifname, XdpMode::Driver)
            .expect("attach the baseline program");
        ebpf
    })
}

fn tcpdump(net: &NetPair, file: Option<&std::path::Path>) -> Child {
    let out = file.map_or("/dev/null".into(), |f| f.display().to_string());
    let mut child = Command::new("ip")
        .args(["netns", "exec", &net.ns_a, "tcpdump", "-Z", "root", "-n"])
        .args(["-i", &net.if_a, "-w", &out])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump");
    let mut err = child.stderr.take().expect("stderr");
    let mut buf = [0u8; 256];
    let mut seen = String::new();
    while !seen.contains("listening on") {
        let n = err.read(&mut buf).unwrap_or(0);
        assert!(n > 0, "tcpdump: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    child.stderr = Some(err);
    // tcpdump says "listening on" before libpcap sets its (empty) filter, and setting a
    // filter flushes what the socket already holds: give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    child
}

fn measure(tool: Tool, net: &NetPair, sender: &Sender, frame: &[u8], step: &Step) -> Run {
    let listener = Listener::start(tool, net);
    let pid = listener.pid();
    let (rx0, host0) = (rx_packets(net), host_busy());
    let cpu0 = pid.map_or(0.0, cpu_seconds);
    // Where a collector's memory goes, with `FLOWMETRIX_BENCH_ONLY=endpoint` (on stderr).
    let sampler = pid
        .filter(|_| tool == Tool::FlowmetrixGreptime && only().as_deref() == Some("endpoint"))
        .map(Sampler::start);
    let achieved = sender.send(frame, step);
    std::thread::sleep(listener.settle());
    if let Some(s) = sampler {
        eprintln!(
            "{}, {}: at the peak: {}",
            step.label(),
            tool.name(),
            s.peak().show()
        );
    }
    let cpu = pid.map_or(0.0, cpu_seconds) - cpu0;
    let host = host_busy() - host0;
    let rss_mib = pid.map_or(0.0, peak_rss_mib);
    let arrived = rx_packets(net) - rx0;
    let recorded = listener.stop();
    Run {
        achieved,
        arrived,
        recorded,
        cpu,
        host,
        rss_mib,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Medians of one tool's runs at one step.
struct Cell {
    achieved: f64,
    recorded: Option<u64>,
    lossless: bool,
    cpu_per_m: f64,
    host_per_m: f64,
    rss_mib: f64,
}

fn cell(runs: &[Run], nothing_host: f64, count: u64) -> Cell {
    let per_m = |x: f64| x / (count as f64 / 1e6);
    Cell {
        achieved: median(runs.iter().map(|r| r.achieved).collect()),
        recorded: runs.iter().filter_map(|r| r.recorded).min(),
        lossless: runs
            .iter()
            .all(|r| r.recorded == Some(count) && r.arrived == count),
        cpu_per_m: per_m(median(runs.iter().map(|r| r.cpu).collect())),
        host_per_m: per_m(median(runs.iter().map(|r| r.host).collect()) - nothing_host),
        rss_mib: runs.iter().map(|r| r.rss_mib).fold(0.0, f64::max),
    }
}

/// Where a process's resident memory is, by kind of mapping (KiB), from `/proc/PID/smaps`.
#[derive(Clone, Default)]
struct Resident {
    total: u64,
    /// The main arena (`[heap]`).
    heap: u64,
    /// Anonymous mappings: other malloc arenas, large blocks mapped on their own, stacks.
    anon: u64,
    /// Anonymous mappings of a thread stack's size (2 MiB and the guard page, or 8 MiB).
    stacks: u64,
    /// The BPF ring buffer's maps (data pages mapped twice) and other BPF maps.
    bpf: u64,
    /// The binary's own mappings.
    binary: u64,
    /// Other files (libraries).
    files: u64,
    threads: u64,
    /// The largest anonymous mappings: (size, resident) in KiB.
    largest: Vec<(u64, u64)>,
}

impl Resident {
    fn of(pid: u32) -> Option<Self> {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
        let mut r = Self::default();
        let mut name = String::new();
        let mut size = 0;
        for line in smaps.lines() {
            let mut f = line.split_whitespace();
            let Some(first) = f.next() else { continue };
            if first.contains('-') && !first.ends_with(':') {
                // A mapping's header: range perms offset dev inode [name].
                name = f.nth(4).unwrap_or("").to_owned();
                continue;
            }
            let kib = || f.clone().next().and_then(|v| v.parse::<u64>().ok());
            match first {
                "Size:" => size = kib().unwrap_or(0),
                "Rss:" => {
                    let rss = kib().unwrap_or(0);
                    r.total += rss;
                    let slot = if name == "[heap]" {
                        &mut r.heap
                    } else if name.contains("bpf") {
                        &mut r.bpf
                    } else if name.ends_with("/flowmetrix") {
                        &mut r.binary
                    } else if name.starts_with('/') || name.starts_with('[') {
                        &mut r.files
                    } else if size == 2048 || size == 8192 {
                        &mut r.stacks
                    } else {
                        r.largest.push((size, rss));
                        &mut r.anon
                    };
                    *slot += rss;
                }
                _ => {}
            }
        }
        r.largest.sort_by_key(|&(_, rss)| std::cmp::Reverse(rss));
        r.largest.truncate(8);
        r.threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Some(r)
    }

    fn show(&self) -> String {
        let mib = |k: u64| k as f64 / 1024.0;
        let largest: Vec<String> = self
            .largest
            .iter()
            .map(|(s, r)| format!("{:.1}/{:.1}", mib(*r), mib(*s)))
            .collect();
        format!(
            "RSS {:.1} MiB: [heap] {:.1}, other anon {:.1} (largest, resident/size: {}), \
             stacks {:.1}, BPF maps {:.1}, binary {:.1}, other files {:.1}; {} threads",
            mib(self.total),
            mib(self.heap),
            mib(self.anon),
            largest.join(" "),
            mib(self.stacks),
            mib(self.bpf),
            mib(self.binary),
            mib(self.files),
            self.threads
        )
    }
}

/// Samples a process's resident memory every 100 ms until dropped; keeps the largest sample.
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Resident>>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = Resident::default();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                match Resident::of(pid) {
                    Some(r) if r.total > peak.total => peak = r,
                    Some(_) => {}
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// The largest sample.
    fn peak(mut self) -> Resident {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

/// Which part to run alone (`FLOWMETRIX_BENCH_ONLY`): `none` (the `--output none` and
/// tcpdump rows), `stalled` (the endpoint stalled, then away), `endpoint` (the steps to the
/// test endpoint); None: all of it.
fn only() -> Option<String> {
    let only = std::env::var("FLOWMETRIX_BENCH_ONLY").ok()?;
    if !["none", "stalled", "endpoint"].contains(&only.as_str()) {
        eprintln!("FLOWMETRIX_BENCH_ONLY={only}: not one of none, stalled, endpoint");
        std::process::exit(2);
    }
    Some(only)
}

/// What the endpoint does in [`database_down`].
#[derive(Clone, Copy)]
enum Down {
    /// Never answers, once the collector's start-up found the table.
    Stalled,
    /// Refuses connections from the start: the collector spools from the first batch.
    Away,
}

/// FlowMetrix's peak RSS at the fastest one-thread rate with the endpoint stalled or away,
/// and where its memory was at the peak.
fn database_down(net: &NetPair, sender: &Sender, frame: &[u8], down: Down) {
    let _ = std::fs::remove_dir_all(net.spool_dir());
    let ep = Endpoint::start(Some(&net.ns_a));
    let name = match down {
        Down::Stalled => {
            ep.keys_only();
            "stalled"
        }
        Down::Away => {
            ep.refuse_for(Duration::from_secs(3600));
            "away"
        }
    };
    let collector = net
        .collector()
        .greptime(&ep)
        .args(&["--sample-rate", "1"])
        .start();
    if let Down::Stalled = down {
        ep.stall(Some(Duration::from_secs(3600)));
    }
    let step = Step {
        rate: None,
        threads: 1,
        count: 4_000_000,
    };
    let sampler = Sampler::start(collector.pid() as u32);
    let achieved = sender.send(frame, &step);
    std::thread::sleep(Duration::from_secs(1));
    let rss = peak_rss_mib(collector.pid() as u32);
    let peak = sampler.peak();
    let s = collector.interrupt().summary();
    println!(
        "\nendpoint {name}: {} frames at {:.0}/s: peak RSS {rss:.1} MiB; \
         {} written, {} spooled, {} ring drops, {} queue drops, {} spool lost\n  at the peak: {}",
        step.count,
        achieved,
        s.written,
        s.spooled,
        s.ring_drops,
        s.queue_drops,
        s.spool_lost,
        peak.show()
    );
}

fn main() {
    let net = NetPair::new();
    let sender = Sender::new(&net, 2);
    let frame = frame();
    if only().as_deref() == Some("stalled") {
        database_down(&net, &sender, &frame, Down::Stalled);
        database_down(&net, &sender, &frame, Down::Away);
        return;
    }
    let reps = std::env::var("FLOWMETRIX_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(REPS);
    // `FLOWMETRIX_BENCH_ONLY=none`: the `--output none` and tcpdump rows only (and the
    // host's own cost they are measured above), without the stalled endpoint;
    // `FLOWMETRIX_BENCH_ONLY=endpoint`: the steps to the test endpoint alone.
    let tools: Vec<Tool> = match only().as_deref() {
        Some("none") => vec![
            Tool::Nothing,
            Tool::Flowmetrix,
            Tool::Tcpdump,
            Tool::TcpdumpFile,
        ],
        Some("endpoint") => vec![Tool::Nothing, Tool::FlowmetrixGreptime],
        _ => TOOLS.to_vec(),
    };
    println!("lossless capture on veth: 60-byte UDP frames, medians of {reps} runs\n");
    println!(
        "| step | listener | sent/s | recorded | lossless | CPU s/Mpkt | host s/Mpkt | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    // Highest lossless rate per tool.
    let mut best: Vec<(Tool, f64, f64)> = tools.iter().map(|&t| (t, 0.0, 0.0)).collect();
    let mut lossless_at_last = Vec::new();
    for (n, step) in STEPS.iter().enumerate() {
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); tools.len()];
        for _ in 0..reps {
            for (i, &tool) in tools.iter().enumerate() {
                runs[i].push(measure(tool, &net, &sender, &frame, step));
            }
        }
        let nothing_host = median(runs[0].iter().map(|r| r.host).collect());
        for (i, &tool) in tools.iter().enumerate() {
            let c = cell(&runs[i], nothing_host, step.count);
            let recorded = c.recorded.map_or("—".into(), |n| n.to_string());
            let (cpu, rss) = match c.recorded {
                Some(_) => (format!("{:.2}", c.cpu_per_m), format!("{:.1}", c.rss_mib)),
                None => ("—".into(), "—".into()),
            };
            let host = if tool == Tool::Nothing {
                format!("({:.2})", nothing_host / (step.count as f64 / 1e6))
            } else {
                format!("{:+.2}", c.host_per_m)
            };
            println!(
                "| {} | {} | {:.0} | {recorded} | {} | {cpu} | {host} | {rss} |",
                step.label(),
                tool.name(),
                c.achieved,
                if c.recorded.is_none() {
                    "—"
                } else if c.lossless {
                    "yes"
                } else {
                    "**no**"
                },
            );
            if c.lossless && c.achieved > best[i].1 {
                best[i] = (tool, c.achieved, c.cpu_per_m);
            }
            if c.lossless && n == STEPS.len() - 1 {
                lossless_at_last.push(tool);
            }
        }
    }
    // A tool lossless at the last step was limited by the sender, not by itself.
    let last = STEPS.len() - 1;
    println!("\nhighest lossless rate (CPU s/Mpkt there):");
    for (tool, rate, cpu) in best
        .iter()
        .filter(|b| b.0 != Tool::Nothing && b.0 != Tool::EmptyXdp)
    {
        let limit = if lossless_at_last.contains(tool) {
            format!(
                " — lossless at every step: the sender's limit ({})",
                STEPS[last].label()
            )
        } else {
            String::new()
        };
        println!("- {}: {rate:.0}/s ({cpu:.2}){limit}", tool.name());
    }
    if only().is_none() {
        database_down(&net, &sender, &frame, Down::Stalled);
        database_down(&net, &sender, &frame, Down::Away);
    }
}
