//! Root tier: the kernel programs themselves, loaded into this process and run on frames
//! with BPF_PROG_TEST_RUN (tests/common/xdp.rs). Built with `--features root-tests`
//! (`cargo xtask test`); fails, not skips, where not root.

#[path = "../common/mod.rs"]
mod common;

mod flows;
mod handshake;
mod maps;
mod packets;

/// The cgroup v2 id of this process: the inode number of its cgroup's directory.
pub fn own_cgroup_id() -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line");
    let root = flowmetrix::attribution::cgroup_root().expect("a cgroup2 mount");
    std::fs::metadata(root.join(path.trim_start_matches('/')))
        .unwrap()
        .ino()
}
