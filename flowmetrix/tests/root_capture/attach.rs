//! A second collector on an interface that already has one: the error names the program
//! that holds it and the process, not the kernel's "File exists". Root: a network
//! namespace of this test's own (not the shared test hosts, so this file stands alone).

use crate::common;

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// A namespace holding a veth pair, deleted on drop.
struct Netns {
    name: String,
    iface: String,
}

impl Netns {
    /// A fresh one; panics where not root ([`common::require_root`]).
    fn new() -> Self {
        common::require_root();
        let id = std::process::id() % 100_000;
        let ns = Self {
            name: format!("fmx-attach-{id}"),
            iface: format!("fxat{id}a"),
        };
        let peer = format!("fxat{id}b");
        for args in [
            vec!["netns", "add", &ns.name],
            vec![
                "-n", &ns.name, "link", "add", &ns.iface, "type", "veth", "peer", "name", &peer,
            ],
            vec!["-n", &ns.name, "link", "set", &ns.iface, "up"],
            vec!["-n", &ns.name, "link", "set", &peer, "up"],
        ] {
            let out = Command::new("ip").args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ns
    }

    fn collector(&self) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.name,
            env!("CARGO_BIN_EXE_flowmetrix"),
            "-i",
            &self.iface,
        ])
        .args(["--output", "none", "--stats-interval", "1h"])
        .stdin(Stdio::null());
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Kills the first collector however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_second_collector_names_the_program_and_process_already_attached() {
    let ns = Netns::new();
    let mut first = ns.collector().stderr(Stdio::piped()).spawn().unwrap();
    let stderr = first.stderr.take().unwrap();
    let first = Running(first);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the first collector attaches");
        if line.contains("XDP attached") {
            break;
        }
    }
    let prog_id = {
        let out = Command::new("ip")
            .args(["-n", &ns.name, "-d", "link", "show", &ns.iface])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split("prog/xdp id ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no XDP program in: {text}"))
            .to_owned()
    };

    let second = ns.collector().output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    // `ip netns exec` runs the collector as a child: the pid is the collector's own.
    let pid = first.0.id();
    let collector_pid = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| pid.to_string());
    assert_eq!(
        errors,
        [format!(
            "error: interface {} already has an XDP program (flowmetrix, id {prog_id}): is another collector running? (process {collector_pid}, flowmetrix, holds it: stop it and the program detaches)",
            ns.iface
        )],
        "{err}"
    );
    assert!(!err.contains("File exists"), "{err}");
    drop(first);
}
