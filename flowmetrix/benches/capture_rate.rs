//! Lossless 1:1 capture rate on veth, FlowMetrix against tcpdump, side by side in one run.
//!
//! For each rate, a fixed count of frames (2 s worth) goes from one namespace to the other;
//! FlowMetrix (`--sample-rate 1 --output none`) and then `tcpdump -w /dev/null` listen on
//! the receiving end in turn. A rate is lossless for a tool when it recorded every frame.
//! CPU is the tool's own user+system time (the XDP program's run time is the kernel's, in
//! softirq, and is not in it: see the kernel table). Needs root. `cargo xtask bench`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    io::Read as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{FrameSender, NetPair, frames::udp_frame};

const SECONDS: u64 = 2;
const RATES: [u64; 7] = [25_000, 50_000, 100_000, 200_000, 300_000, 400_000, 600_000];

/// Sends `count` frames at `rate` per second (paced per millisecond); the achieved rate.
fn send(sender: &FrameSender, frame: &[u8], count: u64, rate: u64) -> f64 {
    let start = Instant::now();
    let mut sent = 0;
    while sent < count {
        let due = ((start.elapsed().as_micros() as u64 * rate) / 1_000_000).min(count);
        while sent < due {
            sender.send(frame);
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    count as f64 / start.elapsed().as_secs_f64()
}

/// user+system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, r)| r.split(' ').collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Sends the frames and lets the tool catch up: the achieved rate and the tool's CPU
/// seconds meanwhile.
fn measure(pid: u32, sender: &FrameSender, frame: &[u8], count: u64, rate: u64) -> (f64, f64) {
    let cpu0 = cpu_seconds(pid);
    let achieved = send(sender, frame, count, rate);
    std::thread::sleep(Duration::from_millis(500));
    (achieved, cpu_seconds(pid) - cpu0)
}

struct Outcome {
    recorded: u64,
    cpu: f64,
    achieved: f64,
}

fn run_flowmetrix(
    net: &NetPair,
    sender: &FrameSender,
    frame: &[u8],
    count: u64,
    rate: u64,
) -> Outcome {
    let collector = net.collector(&[
        "--sample-rate",
        "1",
        "--output",
        "none",
        "--ring-bytes",
        "64M",
    ]);
    let (achieved, cpu) = measure(collector.pid() as u32, sender, frame, count, rate);
    let s = collector.interrupt().summary();
    Outcome {
        recorded: s.written,
        cpu,
        achieved,
    }
}

fn run_tcpdump(
    net: &NetPair,
    sender: &FrameSender,
    frame: &[u8],
    count: u64,
    rate: u64,
) -> Outcome {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.ns_a,
            "tcpdump",
            "-Z",
            "root",
            "-n",
            "-i",
            &net.if_a,
            "-w",
            "/dev/null",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump");
    let mut err = child.stderr.take().unwrap();
    // Wait for "listening on" (tcpdump's first line).
    let mut buf = [0u8; 256];
    let mut seen = String::new();
    while !seen.contains("listening on") {
        let n = err.read(&mut buf).unwrap_or(0);
        assert!(n > 0, "tcpdump: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // tcpdump says "listening on" before libpcap sets its (empty) filter, and setting a
    // filter flushes what the socket already holds: give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id();
    let (achieved, cpu) = measure(pid, sender, frame, count, rate);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    let _ = child.wait();
    let recorded = rest
        .lines()
        .find_map(|l| l.strip_suffix(" packets captured"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    Outcome {
        recorded,
        cpu,
        achieved,
    }
}

fn main() {
    let net = NetPair::new();
    let sender = net.sender();
    let frame = udp_frame(1);
    println!("lossless capture on veth: {SECONDS} s of 64-byte-payload UDP frames per rate");
    println!(
        "{:>9} {:>11} | {:>10} {:>9} {:>12} | {:>10} {:>9} {:>12}",
        "rate/s",
        "achieved/s",
        "flowmetrix",
        "lossless",
        "CPU s/Mpkt",
        "tcpdump",
        "lossless",
        "CPU s/Mpkt"
    );
    for rate in RATES {
        let count = rate * SECONDS;
        let f = run_flowmetrix(&net, &sender, &frame, count, rate);
        let t = run_tcpdump(&net, &sender, &frame, count, rate);
        let per_m = |o: &Outcome| o.cpu / (count as f64 / 1e6);
        println!(
            "{rate:>9} {:>11.0} | {:>10} {:>9} {:>12.2} | {:>10} {:>9} {:>12.2}",
            f.achieved.min(t.achieved),
            f.recorded,
            f.recorded == count,
            per_m(&f),
            t.recorded,
            t.recorded == count,
            per_m(&t)
        );
    }
}
