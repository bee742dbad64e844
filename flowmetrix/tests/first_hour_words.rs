//! What a new user meets in the first hour, run as the binary without root: the words of
//! `--help`, of usage and config-file errors, of a start without privileges or without
//! GreptimeDB, and the exit codes (2: usage or config, 1: runtime).

use std::{path::PathBuf, process::Command};

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run_cmd(mut cmd: Command) -> Ran {
    // Only what the test gives: no FLOWMETRIX_* from the caller's environment.
    for (k, _) in std::env::vars() {
        if k.starts_with("FLOWMETRIX_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn flowmetrix(args: &[&str]) -> Ran {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowmetrix"));
    cmd.args(args);
    run_cmd(cmd)
}

fn temp(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("fmx-first-hour-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// One `error:` line, exit 2, and it says `want`.
fn usage_error(ran: &Ran, want: &str) {
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert_eq!(ran.stdout, "");
    assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
    assert!(
        ran.stderr.starts_with("error: ") && ran.stderr.contains(want),
        "wanted {want:?} in:\n{}",
        ran.stderr
    );
}

#[test]
fn help_shows_examples_and_where_the_man_page_comes_from() {
    let ran = flowmetrix(&["--help"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let help = ran.stdout;
    for want in [
        "Examples:",
        "flowmetrix -i eth0 --output jsonl",
        "flowmetrix --generate man|bash|zsh|fish",
        "standard input",
        "Linux cooked, raw IP and loopback",
        "created at start if missing",
        "Durations take a unit",
    ] {
        assert!(help.contains(want), "{want:?} not in --help:\n{help}");
    }
    for gone in ["(as before)", "created by the first insert", "(Ethernet)"] {
        assert!(!help.contains(gone), "{gone:?} still in --help");
    }
    // The man page has the examples in its own section, not twice.
    let man = flowmetrix(&["--generate", "man"]).stdout;
    assert_eq!(man.matches("Examples:").count(), 0, "{man}");
    assert!(man.contains("flowmetrix \\-\\-generate bash"), "{man}");
    let exit = &man[man.find(".SH \"EXIT STATUS\"").unwrap()..];
    assert!(exit.contains("a pcap file"), "{exit}");
}

#[test]
fn command_line_mistakes_get_the_useful_one_line_answer() {
    usage_error(
        &flowmetrix(&["-i", "lo", "-offset", "-3"]),
        "invalid value '-3' for '--offset [<BYTES>]': -3 is not in 0..=",
    );
    usage_error(
        &flowmetrix(&["-i", "lo", "--sample-rat", "5"]),
        "unexpected argument '--sample-rat': did you mean '--sample-rate'?",
    );
    usage_error(
        &flowmetrix(&["-i", "lo", "-sample-rat", "5"]),
        "unexpected argument '-sample-rat': did you mean '--sample-rate'?",
    );
    // One rule for every duration: a number and a unit.
    for (flag, value) in [
        ("--flow-interval", "5"),
        ("--shutdown-timeout", "10"),
        ("--ttl", "7"),
    ] {
        usage_error(
            &flowmetrix(&["-i", "lo", flag, value]),
            &format!("'{value}' has no unit"),
        );
    }
    usage_error(
        &flowmetrix(&["-i", "lo", "--greptime-endpoint", "127.0.0.1:99999"]),
        "port 99999 is out of range (1-65535)",
    );
    // A name that does not exist is a usage error, an interface's or a file's.
    usage_error(
        &flowmetrix(&["-i", "fmx-nosuch3"]),
        "no such interface: fmx-nosuch3",
    );
    usage_error(
        &flowmetrix(&["--pcap", "/nonexistent/trial.pcap", "--output", "none"]),
        "no such pcap file: /nonexistent/trial.pcap",
    );
}

/// Under `--log-format json` a usage error is one JSON object, as the log lines are, exit 2:
/// a flag's error (found before the flags are read), a setting's (after), and a missing
/// interface's.
#[test]
fn under_json_logs_usage_errors_are_one_json_object() {
    for (args, want) in [
        (
            &["--log-format", "json", "-i", "lo", "--sample-rat", "5"][..],
            "did you mean '--sample-rate'?",
        ),
        (
            &["--log-format=json", "-i", "lo", "--ttl", "7"],
            "'7' has no unit",
        ),
        (
            &["-i", "fmx-nosuch4", "--log-format", "json"],
            "no such interface: fmx-nosuch4",
        ),
    ] {
        let ran = flowmetrix(args);
        assert_eq!(ran.code, Some(2), "{}", ran.stderr);
        assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
        let line: serde_json::Value = serde_json::from_str(&ran.stderr)
            .unwrap_or_else(|e| panic!("{e}: not JSON: {}", ran.stderr));
        assert_eq!(line["level"], "ERROR", "{line}");
        let message = line["fields"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(want), "wanted {want:?} in {line}");
    }
}

#[test]
fn config_file_mistakes_name_the_file_line_and_key() {
    let cases: [(&str, &str); 6] = [
        (
            "interface = \"lo\"\nsample-rate = \"100\"\n",
            "line 2: sample-rate: expected a number, not a string (write it without quotes: 100)",
        ),
        (
            "interface = 5\n",
            "line 1: interface: expected a string, not a number (in quotes: \"5\")",
        ),
        (
            "interface = \"lo\"\nflow-interval = 10\n",
            "line 2: flow-interval: expected a duration in quotes, with its unit (such as \"10s\")",
        ),
        (
            "interface = \"lo\"\n\nsampel-rate = 10\n",
            "line 3: unknown key 'sampel-rate'; did you mean 'sample-rate'?",
        ),
        (
            "interface = \"lo\"\npassword = \"secret\"\n",
            "line 2: unknown key 'password': the password is never read from a file; set FLOWMETRIX_GREPTIME_PASSWORD",
        ),
        ("interface = \"lo\"\n[applications\n", ", line 2, column "),
    ];
    let file = temp("cfg.toml", b"");
    let cfg = file.to_str().unwrap();
    for (text, want) in cases {
        std::fs::write(&file, text).unwrap();
        let ran = flowmetrix(&["--config", cfg, "--output", "none"]);
        usage_error(&ran, &format!("error: config file {cfg}"));
        assert!(ran.stderr.contains(want), "{text:?}: {}", ran.stderr);
        assert!(!ran.stderr.contains("secret"), "{}", ran.stderr);
    }
    // The parser's reason is kept.
    std::fs::write(&file, "interface = \"lo\"\n[applications\n").unwrap();
    let ran = flowmetrix(&["--config", cfg]);
    assert!(ran.stderr.contains("expected `]`"), "{}", ran.stderr);
    std::fs::remove_file(file).unwrap();
}

/// Needs the kernel programs in the binary (feature `ebpf`, on in `cargo xtask test`): without
/// them the binary says so before it asks the kernel for anything.
#[cfg(feature = "ebpf")]
#[test]
fn without_privileges_the_capabilities_are_named_not_a_map() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let have_setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    assert!(
        !root || have_setpriv,
        "root, and no setpriv (util-linux) to drop privileges with: install util-linux"
    );
    for (direction, programs) in [
        ("egress", "TC programs"),
        ("ingress", "XDP program"),
        ("both", "XDP and TC programs"),
    ] {
        let args = ["-i", "lo", "--direction", direction, "--output", "none"];
        let cmd = if root {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
                env!("CARGO_BIN_EXE_flowmetrix"),
            ]);
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        };
        let mut cmd = cmd;
        cmd.args(args).arg("-no-log");
        let ran = run_cmd(cmd);
        assert_eq!(ran.code, Some(1), "{direction}: {}", ran.stderr);
        assert_eq!(
            ran.stderr,
            format!(
                "error: cannot load the {programs}: not permitted (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)\n"
            ),
            "{direction}"
        );
    }
}

#[test]
fn a_start_without_greptimedb_is_one_line_with_the_address_once() {
    // An empty pcap file: the start-up check runs, nothing is to be written.
    let mut pcap = Vec::new();
    for field in [0xa1b2_c3d4_u32.to_le_bytes().to_vec(), vec![2, 0, 4, 0]] {
        pcap.extend(field);
    }
    pcap.extend([0u8; 8]);
    pcap.extend(65_535_u32.to_le_bytes());
    pcap.extend(1_u32.to_le_bytes());
    let file = temp("empty.pcap", &pcap);
    let ran = flowmetrix(&[
        "--pcap",
        file.to_str().unwrap(),
        "--greptime-endpoint",
        "127.0.0.1:1",
        "--no-spool",
        "--shutdown-timeout",
        "1s",
    ]);
    std::fs::remove_file(file).unwrap();
    let about: Vec<&str> = ran
        .stderr
        .lines()
        .filter(|l| l.contains("127.0.0.1:1"))
        .collect();
    assert_eq!(about.len(), 1, "{}", ran.stderr);
    let line = about[0];
    assert_eq!(line.matches("127.0.0.1:1").count(), 1, "{line}");
    assert!(
        line.contains("retrying (rows wait in the queue meanwhile; the tables and rollups are created when GreptimeDB first answers)"),
        "{line}"
    );
    assert!(!ran.stderr.contains("rows wait for that"), "{}", ran.stderr);
}
