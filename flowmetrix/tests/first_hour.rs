//! What a new user meets in the first hour, no-root tier: the real binary on pcaps. A run
//! that lost rows exits 3 and its last line says how many and why; a second Ctrl+C gives
//! up the wait for GreptimeDB at once and counts what it gave up; the summary prints only
//! the parts that apply, and is JSON under `--log-format json`.

mod common;

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{Summary, frames::udp_frame};
use serde_json::Value;

/// The exit code of a run that lost rows.
const LOST: i32 = 3;

/// A classic pcap (Ethernet, microseconds) of `n` UDP frames, one a millisecond.
fn pcap_bytes(n: u32) -> Vec<u8> {
    let mut out = pcap_header();
    for i in 0..n {
        out.extend(pcap_record(i));
    }
    out
}

fn pcap_header() -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for w in [0u32, 0, 65_535, 1] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

fn pcap_record(i: u32) -> Vec<u8> {
    let frame = udp_frame(i);
    let mut out = Vec::new();
    for w in [
        1_795_000_000u32,
        i * 1_000,
        frame.len() as u32,
        frame.len() as u32,
    ] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&frame);
    out
}

/// A file of this test process's own holding `bytes`.
fn file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fmx-first-hour-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A loopback address nothing listens on (a port just closed).
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn last_line(stderr: &str) -> &str {
    stderr.lines().last().unwrap_or_default()
}

#[test]
fn no_spool_and_no_database_exits_3_and_the_last_line_counts_the_lost_rows() {
    let pcap = file("no-spool.pcap", &pcap_bytes(5));
    let db = closed_port();
    let out = run(&[
        "--pcap",
        pcap.to_str().unwrap(),
        "--greptime-endpoint",
        &db,
        "--no-spool",
        "--shutdown-timeout",
        "1s",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(LOST), "{stderr}");
    let s = Summary::parse(&stderr).unwrap_or_else(|| panic!("no summary:\n{stderr}"));
    assert_eq!((s.written, s.write_errors), (0, 5), "{stderr}");
    let last = last_line(&stderr);
    assert!(
        last.starts_with("error: 5 rows lost: 5 not written") && last.contains("no spool"),
        "{stderr}"
    );
    // No spool: no spool figures in the summary.
    assert!(!stderr.contains("spooled"), "{stderr}");
}

#[test]
fn a_spool_that_cannot_be_made_and_no_database_exits_3() {
    let pcap = file("bad-spool.pcap", &pcap_bytes(5));
    // A directory under a file cannot be made, as root too.
    let blocker = file("not-a-dir", b"");
    let spool = blocker.join("spool");
    let db = closed_port();
    let out = run(&[
        "--pcap",
        pcap.to_str().unwrap(),
        "--greptime-endpoint",
        &db,
        "--spool-dir",
        spool.to_str().unwrap(),
        "--shutdown-timeout",
        "1s",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(LOST), "{stderr}");
    assert!(
        last_line(&stderr).starts_with("error: 5 rows lost: "),
        "{stderr}"
    );
}

#[test]
fn a_run_that_lost_nothing_exits_0_with_no_loss_line() {
    let pcap = file("clean.pcap", &pcap_bytes(5));
    let out = run(&["--pcap", pcap.to_str().unwrap(), "--output", "jsonl"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(last_line(&stderr).starts_with("summary: "), "{stderr}");
}

#[test]
fn the_summary_leaves_out_what_does_not_apply() {
    let pcap = file("parts.pcap", &pcap_bytes(5));
    let path = pcap.to_str().unwrap();
    // JSON lines: no spool, and a file has no direction.
    let out = run(&["--pcap", path, "--output", "jsonl"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.starts_with("summary: ")).unwrap();
    assert!(line.contains("written 5"), "{line}");
    for absent in ["spooled", "replayed", "spool lost", "egress", "ingress"] {
        assert!(!line.contains(absent), "{absent}: {line}");
    }
    // Flows mode: no packet figures before the flows part.
    let out = run(&["--pcap", path, "--output", "jsonl", "--mode", "flows"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.starts_with("summary: ")).unwrap();
    let (packets, flows) = line.split_once("; flows: ").unwrap();
    assert_eq!(packets, "summary: seen 5", "{line}");
    assert!(flows.starts_with("rows 5, written 5, "), "{line}");
    assert!(!flows.contains("spool"), "{line}");
}

#[test]
fn under_json_logs_the_summary_and_the_errors_are_json_objects() {
    let pcap = file("json.pcap", &pcap_bytes(3));
    let out = run(&[
        "--pcap",
        pcap.to_str().unwrap(),
        "--output",
        "jsonl",
        "--log-format",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary = lines
        .iter()
        .find(|v| v["fields"]["message"] == "summary")
        .unwrap_or_else(|| panic!("no summary object:\n{stderr}"));
    assert_eq!(summary["level"], "INFO");
    assert_eq!(summary["fields"]["summary"]["written"], 3, "{summary}");
    assert_eq!(
        summary["fields"]["summary"]["decode_errors"], 0,
        "{summary}"
    );

    let out = run(&["--pcap", "/nonexistent/x.pcap", "--log-format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last: Value =
        serde_json::from_str(last_line(&stderr)).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(
        last["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/nonexistent/x.pcap")),
        "{last}"
    );
}

#[test]
fn a_second_ctrl_c_gives_up_the_wait_at_once_and_counts_what_it_gave_up() {
    let db = closed_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .args([
            "--pcap",
            "-",
            "--greptime-endpoint",
            &db,
            "--no-spool",
            "--shutdown-timeout",
            "60s",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // More than the reader's first block, so that rows are made while stdin stays open.
    stdin.write_all(&pcap_bytes(3_000)).unwrap();
    stdin.flush().unwrap();
    // Stdin stays open: the run ends by the signals.
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    std::thread::sleep(Duration::from_millis(700));
    let sigint = || {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    };
    sigint();
    // The first Ctrl+C says what it waits for, and for how long.
    let said = Instant::now();
    let notice = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(5))
            .expect("a line about the wait after the first Ctrl+C");
        if line.contains("stopping: waiting up to 60s for GreptimeDB at") {
            break line;
        }
        assert!(said.elapsed() < Duration::from_secs(5));
    };
    assert!(notice.contains("Ctrl+C again"), "{notice}");
    sigint();
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "no exit after the second Ctrl+C"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = reader.join().unwrap();
    assert_eq!(status.code(), Some(LOST), "{stderr}");
    let s = Summary::parse(&stderr).unwrap_or_else(|| panic!("no summary:\n{stderr}"));
    assert!(s.decoded > 0, "{stderr}");
    // Every row made was given up, and counted.
    assert_eq!((s.written, s.write_errors), (0, s.decoded), "{stderr}");
    let last = last_line(&stderr);
    assert!(
        last.starts_with(&format!("error: {} rows lost", s.decoded))
            && last.ends_with("given up at the second Ctrl+C"),
        "{stderr}"
    );
}

#[test]
fn a_replay_spools_only_where_told_and_the_spool_can_be_listed_and_dropped() {
    let pcap = file("trial.pcap", &pcap_bytes(5));
    let path = pcap.to_str().unwrap();
    let db = closed_port();

    // No --spool-dir: the replay keeps out of the live collector's spool; its rows are lost,
    // and said to be.
    let out = run(&[
        "--pcap",
        path,
        "--greptime-endpoint",
        &db,
        "--shutdown-timeout",
        "1s",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(LOST), "{stderr}");
    assert!(!stderr.contains("spooled"), "{stderr}");

    // Asked for: the rows go to that spool, and a later run says they are there.
    let spool = std::env::temp_dir().join(format!("fmx-first-hour-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let dir = spool.to_str().unwrap();
    let with_spool = [
        "--pcap",
        path,
        "--greptime-endpoint",
        &db,
        "--spool-dir",
        dir,
        "--shutdown-timeout",
        "1s",
    ];
    let out = run(&with_spool);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(Summary::parse(&stderr).unwrap().spooled, 5, "{stderr}");
    let out = run(&with_spool);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("spool {dir}: 5 rows from an earlier run"))
            && stderr.contains(&format!("go to GreptimeDB at {db}"))
            && stderr.contains("flowmetrix spool --drop"),
        "{stderr}"
    );

    // `flowmetrix spool` lists them: 10 rows of packet_data in database public, with
    // their (pcap) timestamps.
    let out = run(&["spool", "--spool-dir", dir]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("SEGMENT"), "{stdout}");
    assert!(
        lines[1..lines.len() - 1]
            .iter()
            .all(|l| l.contains("public")
                && l.contains("packet_data")
                && l.contains("2026-11-18T")),
        "{stdout}"
    );
    assert!(
        lines[lines.len() - 1].starts_with(&format!("spool {dir}: 10 rows in ")),
        "{stdout}"
    );

    // --drop discards them.
    let out = run(&["spool", "--spool-dir", dir, "--drop"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("dropped 10 rows"), "{stdout}");
    let out = run(&["spool", "--spool-dir", dir]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("spool {dir}: empty\n")
    );
    let _ = std::fs::remove_dir_all(&spool);
}
