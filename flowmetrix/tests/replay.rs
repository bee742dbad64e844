//! `--pcap`: a capture written by tcpdump during a netns run, replayed through the same
//! decode path, gives the same rows as the live capture of the same traffic (ts aside).

mod common;

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    NetPair,
    frames::{cases, send_cases, without_ts},
};
use serde_json::Value;

fn sorted(rows: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(|r| without_ts(r).to_string()).collect();
    v.sort();
    v
}

#[test]
fn replaying_tcpdumps_capture_gives_the_live_rows() {
    let net = NetPair::new();
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

    let collector = net.collector(&["--output", "jsonl"]);
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

/// A legacy pcap (Ethernet, microseconds) holding these frames, one second apart.
fn pcap_of(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&4u16.to_le_bytes());
    for word in [0u32, 0, 65535, 1] {
        v.extend_from_slice(&word.to_le_bytes());
    }
    for (i, f) in frames.iter().enumerate() {
        for word in [1_795_000_000 + i as u32, 0, f.len() as u32, f.len() as u32] {
            v.extend_from_slice(&word.to_le_bytes());
        }
        v.extend_from_slice(f);
    }
    v
}

#[test]
fn config_file_applications_add_and_override_port_names() {
    let dir = std::env::temp_dir().join(format!("fmx-apps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let udp = |dst: u16| {
        common::frames::write(|v| {
            common::frames::eth()
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(40_000, dst)
                .write(v, b"x")
                .unwrap()
        })
    };
    let pcap = dir.join("apps.pcap");
    std::fs::write(&pcap, pcap_of(&[udp(9999), udp(53), udp(80)])).unwrap();
    let cfg = dir.join("apps.toml");
    std::fs::write(
        &cfg,
        "[applications]\n9999 = \"MYAPP\"\n53 = \"RESOLVER\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .arg("--pcap")
        .arg(&pcap)
        .arg("--config")
        .arg(&cfg)
        .args(["--output", "jsonl"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let apps: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["application"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(apps, ["MYAPP", "RESOLVER", "HTTP"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `flowmetrix --pcap ARG --output jsonl -no-log` with `input` on its standard input.
fn replay_with_stdin(arg: &std::ffi::OsStr, input: &[u8]) -> (Option<i32>, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .arg("--pcap")
        .arg(arg)
        .args(["--output", "jsonl", "-no-log"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written from another thread in small pieces, as a pipe from tcpdump would be.
    let writer = std::thread::spawn(move || {
        for chunk in input.chunks(7) {
            if stdin.write_all(chunk).is_err() {
                break;
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pcap_dash_reads_the_capture_from_standard_input() {
    let udp = |dst: u16| {
        common::frames::write(|v| {
            common::frames::eth()
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(40_000, dst)
                .write(v, b"x")
                .unwrap()
        })
    };
    let bytes = pcap_of(&[udp(53), udp(80), udp(443)]);
    let (code, out, err) = replay_with_stdin("-".as_ref(), &bytes);
    assert_eq!(code, Some(0), "{err}");
    let apps: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["application"].to_string())
        .collect();
    assert_eq!(apps, ["\"DNS\"", "\"HTTP\"", "\"HTTPS\""]);
    let s = common::Summary::parse(&err).unwrap();
    assert_eq!((s.seen, s.written), (3, 3));

    // Cut short on standard input: the frames before the cut, then one sentence.
    let (code, out, err) = replay_with_stdin("-".as_ref(), &bytes[..bytes.len() - 5]);
    assert_eq!(code, Some(1));
    assert_eq!(out.lines().count(), 2);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        errors,
        ["error: standard input is truncated: it ends inside a record after 2 frames"],
        "{err}"
    );
}

#[test]
fn pcap_errors_are_plain_sentences() {
    let dir = std::env::temp_dir().join(format!("fmx-pcap-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (code, out, err) = replay_with_stdin(dir.as_os_str(), b"");
    assert_eq!((code, out.as_str()), (Some(1), ""));
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        errors,
        [format!(
            "error: {} is a directory, not a pcap or pcapng file",
            dir.display()
        )],
        "{err}"
    );
    let text = dir.join("notes.txt");
    std::fs::write(&text, "not a capture, just some words in a file").unwrap();
    let (code, _, err) = replay_with_stdin(text.as_os_str(), b"");
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "error: {} is not a pcap or pcapng file",
            text.display()
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_is_heard_while_standard_input_holds_back_the_file() {
    // No root needed: a replay attaches nothing.
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .args(["--pcap", "-", "--output", "none"])
        .stdin(Stdio::piped()) // open, silent: the file header never comes
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let sent = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "no exit after Ctrl+C"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("summary: seen 0, sampled 0"), "{err}");
}
