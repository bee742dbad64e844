//! `--pcap` against a live capture: a capture written by tcpdump during a netns run,
//! replayed through the same decode path, gives the same rows as the live capture of the
//! same traffic (ts aside).

use crate::common;

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::frames::{cases, send_cases, without_ts};
use serde_json::Value;

fn sorted(rows: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(|r| without_ts(r).to_string()).collect();
    v.sort();
    v
}

#[test]
fn replaying_tcpdumps_capture_gives_the_live_rows() {
    let net = common::NetPair::new();
    let dir = std::env::temp_dir().join(format!("fmx-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("live.pcap");

    // Immediate mode: each packet is written as it comes (otherwise the last block may
    // still be in the kernel ring when tcpdump is stopped); -Z root: write as root.
    let mut tcpdump = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.ns_a,
            "tcpdump",
            "--immediate-mode",
            "-Z",
            "root",
            "-n",
            "-U",
            "-i",
            &net.if_a,
            "-w",
        ])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump (cargo xtask setup installs it)");
    // tcpdump says "listening on …" once its socket is open.
    let mut err = BufReader::new(tcpdump.stderr.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !line.contains("listening on") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0 && Instant::now() < deadline,
            "tcpdump: {line}"
        );
    }

    let collector = net.collector().args(&["--output", "jsonl"]).start();
    let sender = net.sender();
    let cases = cases();
    send_cases(&sender, &cases);
    let live = collector.interrupt();
    assert!(live.status.success(), "{}", live.stderr);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tcpdump.id() as i32, libc::SIGINT) };
    tcpdump.wait().unwrap();

    let replay = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .arg("--pcap")
        .arg(&file)
        .args(["--output", "jsonl"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&replay.stdout);
    let stderr = String::from_utf8_lossy(&replay.stderr);
    assert!(replay.status.success(), "{stderr}");
    let replayed: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    assert_eq!(live.rows().len(), cases.len());
    assert_eq!(
        sorted(&replayed),
        sorted(&live.rows()),
        "replay differs from live"
    );
    let s = common::Summary::parse(&stderr).unwrap();
    assert_eq!(
        (s.seen, s.sampled, s.written),
        (cases.len() as u64, cases.len() as u64, cases.len() as u64)
    );

    // The same file cut in the middle of a record: the whole frames before the cut come
    // out, then one clear error line, exit 1.
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .arg("--pcap")
        .arg(&cut)
        .args(["--output", "jsonl", "-no-log"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rows = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(rows, cases.len() - 1, "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("truncated") && errors[0].contains(&format!("after {rows} frames")),
        "{stderr}"
    );

    std::fs::remove_dir_all(&dir).unwrap();
}
