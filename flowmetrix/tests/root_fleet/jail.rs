//! Running a program chrooted into a root filesystem inside the test namespace, with only
//! `/proc` and `/sys` mounted there (the capture reads interfaces, CPUs and BTF from sysfs,
//! and bpf_link holders from procfs): no libc, no loader, no /dev. `ip netns exec` gives
//! the run its own mount namespace, so those mounts go away with it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::common::{Collector, NetPair};

/// Mounts procfs and the namespace's sysfs in the root `$1`, then execs `$2…` chrooted
/// there (the shell is the host's, outside the root).
const SCRIPT: &str = r#"root=$1; shift
mkdir -p "$root/proc" "$root/sys"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
exec chroot "$root" "$@""#;

/// `ip netns exec NS sh -ec SCRIPT sh ROOT ENTRY ARGS…`
pub fn command(ns: &str, root: &Path, entry: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "sh", "-ec", SCRIPT, "sh"])
        .arg(root)
        .arg(entry)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `entry args…` in `root` (in the collector's namespace) to its end: (success,
/// stdout, stderr).
pub fn run(net: &NetPair, root: &Path, entry: &str, args: &[&str]) -> (bool, String, String) {
    let out = command(&net.ns_a, root, entry, args)
        .output()
        .expect("run ip netns exec");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The collector `entry -i IF_A args…` started in `root` in the collector's namespace,
/// ready once XDP is attached.
pub fn collector(net: &NetPair, root: &Path, entry: &str, args: &[&str]) -> Collector {
    let mut all = vec!["-i", net.if_a.as_str()];
    all.extend_from_slice(args);
    Collector::start_until(command(&net.ns_a, root, entry, &all), "XDP attached")
}

/// Every file under `root` (directories left out), relative, sorted.
pub fn files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir)
            .expect("read a directory of the root")
            .flatten()
        {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, root, out);
            } else {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push(rel.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// An empty directory of this test's own, removed (with what was put in it) on drop.
pub struct EmptyRoot(pub PathBuf);

impl EmptyRoot {
    pub fn new() -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fmx-root-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the root directory");
        Self(dir)
    }
}

impl Drop for EmptyRoot {
    fn drop(&mut self) {
        // The mounts lived in the run's own mount namespace: here the directories are empty.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends `n` UDP frames (`udp_frame(0..n)`: 10.77.0.2:10000+i → 10.77.0.1:9999) from the
/// peer while `collector` (sampling every packet) runs, stops it, and checks one row a
/// frame with the right addresses, ports and interface.
pub fn assert_rows_for_udp(net: &NetPair, collector: Collector, n: u32) {
    net.send_udp(0..n);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let done = collector.interrupt();
    assert!(
        done.status.success(),
        "exit {:?}\n{}",
        done.status,
        done.stderr
    );
    let rows = done.rows();
    assert_eq!(rows.len(), n as usize, "{}\n{}", done.stdout, done.stderr);
    let mut ports: Vec<u64> = Vec::new();
    for r in &rows {
        assert_eq!(r["src_ip"], "10.77.0.2", "{r}");
        assert_eq!(r["dst_ip"], "10.77.0.1", "{r}");
        assert_eq!(r["dst_port"], 9999, "{r}");
        assert_eq!(r["interface"], net.if_a.as_str(), "{r}");
        ports.push(r["src_port"].as_u64().expect("src_port is a number"));
    }
    ports.sort_unstable();
    let sent: Vec<u64> = (0..u64::from(n)).map(|i| 10_000 + i).collect();
    assert_eq!(ports, sent, "one row per frame sent");
    assert_eq!(done.summary().written, u64::from(n));
}
