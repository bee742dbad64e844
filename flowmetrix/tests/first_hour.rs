//! What a new user meets in the first hour, no-root tier: the real binary on pcaps. A run
//! that lost rows exits 3 and its last line says how many and why; a second Ctrl+C gives
//! up the wait for GreptimeDB at once and counts what it gave up; the summary prints only
//! the parts that apply, and is JSON under `--log-format json`; a reader of the JSON lines
//! that leaves (`| head`) ends the run quietly.

mod common;

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{Summary, endpoint::Endpoint, frames::udp_frame, pcap};
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

    // A runtime error (a file that is not a capture; a missing one is a usage error, found
    // before logging starts).
    let damaged = std::env::temp_dir().join(format!(
        "fmx-first-hour-damaged-{}.pcap",
        std::process::id()
    ));
    std::fs::write(&damaged, b"not a capture file at all").unwrap();
    let out = run(&["--pcap", damaged.to_str().unwrap(), "--log-format", "json"]);
    std::fs::remove_file(&damaged).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last: Value =
        serde_json::from_str(last_line(&stderr)).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(
        last["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("fmx-first-hour-damaged-")),
        "{last}"
    );
}

/// A run on a pcap from standard input, ended by signals: its standard error, line by
/// line as it comes.
struct Live {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<String>,
}

impl Live {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
            .args(["--pcap", "-"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&pcap_header()).unwrap();
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
        Self {
            child,
            stdin,
            lines,
            reader,
        }
    }

    /// Frames `0..n`; more than the reader's first block, so that rows are made while
    /// standard input stays open.
    fn feed(&mut self, n: u32) {
        for i in 0..n {
            self.stdin.write_all(&pcap_record(i)).unwrap();
        }
        self.stdin.flush().unwrap();
    }

    /// Waits (at most 10 s) for a line of standard error containing `needle`.
    fn wait_for(&self, needle: &str) -> String {
        let limit = Instant::now() + Duration::from_secs(10);
        loop {
            let left = limit.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {needle:?}: {e}"),
            }
        }
    }

    fn sigint(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
    }

    /// Ctrl+C; the line about the wait; Ctrl+C again: the run must end within `limit`.
    /// Its exit code and standard error.
    fn interrupt_twice(mut self, limit: Duration) -> (Option<i32>, String) {
        self.sigint();
        let notice = self.wait_for("stopping: waiting up to 60s for GreptimeDB at");
        assert!(notice.contains("Ctrl+C again"), "{notice}");
        self.sigint();
        let sent = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                sent.elapsed() < limit,
                "no exit {limit:?} after the second Ctrl+C"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        (status.code(), self.reader.join().unwrap())
    }
}

/// The run gave up every row it made, counted them, and said so last.
fn assert_all_given_up(code: Option<i32>, stderr: &str) {
    assert_eq!(code, Some(LOST), "{stderr}");
    let s = Summary::parse(stderr).unwrap_or_else(|| panic!("no summary:\n{stderr}"));
    assert!(s.decoded > 0, "{stderr}");
    assert_eq!((s.written, s.write_errors), (0, s.decoded), "{stderr}");
    let last = last_line(stderr);
    assert!(
        last.starts_with(&format!("error: {} rows lost", s.decoded))
            && last.ends_with("given up at the second Ctrl+C"),
        "{stderr}"
    );
}

#[test]
fn a_second_ctrl_c_gives_up_the_wait_at_once_and_counts_what_it_gave_up() {
    let db = closed_port();
    let args = [
        "--greptime-endpoint",
        &db,
        "--no-spool",
        "--shutdown-timeout",
        "60s",
    ];
    let mut run = Live::start(&args);
    run.feed(3_000);
    std::thread::sleep(Duration::from_millis(700));
    let (code, stderr) = run.interrupt_twice(Duration::from_secs(3));
    assert_all_given_up(code, &stderr);
}

#[test]
fn a_second_ctrl_c_does_not_wait_for_an_insert_in_flight() {
    given_up_in_flight("rows");
}

#[test]
fn a_second_ctrl_c_does_not_wait_for_a_bulk_write_in_flight() {
    given_up_in_flight("bulk");
}

fn given_up_in_flight(write_path: &str) {
    let endpoint = Endpoint::start(None);
    let addr = endpoint.addr.to_string();
    let args = [
        "--greptime-endpoint",
        &addr,
        "--no-spool",
        "--shutdown-timeout",
        "60s",
        "--flush-interval",
        "100ms",
        "--write-path",
        write_path,
    ];
    let mut run = Live::start(&args);
    run.feed(3_000);
    run.wait_for("is ready");
    let written = endpoint.rows("packet_data").len() as u64;
    let limit = Instant::now() + Duration::from_secs(10);
    while (endpoint.rows("packet_data").len() as u64) < 2_000 && Instant::now() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    // GreptimeDB stops answering: the next insert is in flight for its whole 10 s budget.
    endpoint.stall(Some(Duration::from_secs(60)));
    run.feed(3_000);
    std::thread::sleep(Duration::from_millis(700));
    let (code, stderr) = run.interrupt_twice(Duration::from_secs(3));
    assert_eq!(code, Some(LOST), "{stderr}");
    let s = Summary::parse(&stderr).unwrap_or_else(|| panic!("no summary:\n{stderr}"));
    assert!(s.written >= written && s.write_errors > 0, "{stderr}");
    assert_eq!(s.written + s.write_errors, s.decoded, "{stderr}");
    assert!(
        last_line(&stderr).ends_with("given up at the second Ctrl+C"),
        "{stderr}"
    );
}

#[test]
fn a_replay_spools_only_where_told_and_the_spool_can_be_listed_sent_elsewhere_and_dropped() {
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

    // --replay-to sends them to another database: the next run replays them there.
    let out = run(&["spool", "--spool-dir", dir, "--replay-to", "trial"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("10 rows") && stdout.contains("database trial"),
        "{stdout}"
    );
    let out = run(&["spool", "--spool-dir", dir]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[1..lines.len() - 1]
            .iter()
            .all(|l| l.contains("trial")),
        "{stdout}"
    );
    let endpoint = Endpoint::start(None);
    endpoint.add_database("trial");
    // A replay ends with its file: a run replays what it can meanwhile, the next the rest.
    let empty = format!("spool {dir}: empty\n");
    for _ in 0..5 {
        let out = run(&[
            "--pcap",
            path,
            "--greptime-endpoint",
            &endpoint.addr.to_string(),
            "--spool-dir",
            dir,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if String::from_utf8_lossy(&run(&["spool", "--spool-dir", dir]).stdout) == empty {
            break;
        }
    }
    let replayed: usize = endpoint
        .received()
        .iter()
        .filter(|r| r.database == "trial" && r.table == "packet_data")
        .map(|r| r.rows.len())
        .sum();
    assert_eq!(replayed, 10);
    assert_eq!(
        String::from_utf8_lossy(&run(&["spool", "--spool-dir", dir]).stdout),
        empty
    );

    // --drop discards what a later run spooled.
    let out = run(&with_spool);
    assert!(out.status.success());
    let out = run(&["spool", "--spool-dir", dir, "--drop"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("dropped 5 rows"), "{stdout}");
    let out = run(&["spool", "--spool-dir", dir]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("spool {dir}: empty\n")
    );
    let _ = std::fs::remove_dir_all(&spool);
}

/// `flowmetrix --pcap FILE --output jsonl ARGS… | head -2`: standard output a pipe whose
/// reader leaves after two lines. Its exit status, standard error, and the two lines.
fn head_2(file: &std::path::Path, args: &[&str]) -> (Option<i32>, String, Vec<String>) {
    use std::io::{BufRead as _, Read as _};
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .arg("--pcap")
        .arg(file)
        .args(["--output", "jsonl"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        lines.push(line);
    }
    drop(stdout); // the reader leaves: the pipe is closed
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("no exit 30 s after the reader left");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.code(), errors.join().unwrap(), lines)
}

#[test]
fn a_reader_that_leaves_ends_the_run_quietly_with_exit_0() {
    // Far more output than a pipe holds, so the collector meets the closed pipe.
    let frames = pcap::spaced(Duration::from_micros(10), (0..20_000).map(udp_frame));
    let file = pcap::file("first-hour-head", "head.pcap", &pcap::ethernet(frames));

    let (code, stderr, lines) = head_2(&file, &[]);
    for line in &lines {
        let row: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(row["packet_size"].is_u64(), "{line}");
    }
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.lines().any(|l| l.starts_with("error:")), "{stderr}");
    let s = Summary::parse(&stderr).unwrap_or_else(|| panic!("no summary:\n{stderr}"));
    assert_eq!(s.write_errors, 0, "{stderr}");
    // The rows not printed are a figure of their own, and the loss equation holds.
    assert!(s.unread > 0, "{stderr}");
    assert_eq!(s.written + s.unread, s.decoded, "{stderr}");
    assert!(s.decoded <= 20_000, "{stderr}");

    // With flow rows too: neither table counts a write error.
    let (code, stderr, _) = head_2(&file, &["--mode", "both"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.lines().any(|l| l.starts_with("error:")), "{stderr}");
    let s = Summary::parse(&stderr).unwrap_or_else(|| panic!("no summary:\n{stderr}"));
    assert_eq!(s.write_errors, 0, "{stderr}");
    assert_eq!(s.flow("write errors"), 0, "{stderr}");
    let unread = s.flows.as_ref().and_then(|f| f.get("unread")).copied();
    assert_eq!(
        s.flow("written") + unread.unwrap_or(0),
        s.flow("rows"),
        "{stderr}"
    );
    assert_eq!(s.written + s.unread, s.decoded, "{stderr}");
}
