//! The fallback for rows no socket names: a host-side veth belongs to the pod at its other
//! end. Best effort, from `/proc` and sysfs alone:
//! - the interface may be one of a pair when it is virtual (no `device` in sysfs) and not
//!   loopback; its `iflink` is the peer's ifindex. Each namespace numbers its interfaces on
//!   its own, so a pair numbered alike at both ends (2 ↔ 2, as two fresh namespaces have)
//!   says nothing about which namespace is the peer's: left null;
//! - the peer's network namespace is the one, among the namespaces of the processes in
//!   `/proc` (leaving out ours and PID 1's), whose sysfs (`/proc/PID/root/sys/class/net`, as
//!   a container or `ip netns exec` mounts it) has an interface whose `ifindex` is our
//!   `iflink` and whose `iflink` is our `ifindex` — the only one: when several namespaces
//!   match (their numbers collide, as in namespaces numbered alike), none is taken;
//! - its cgroup is that of a process in that namespace: one whose cgroup path names a
//!   container if there is one (in a pod, every container shares the namespace), else the
//!   lowest PID's. Its id is its directory's inode under the cgroup2 mount.
//!
//! It runs on the attribution thread ([`super::Worker`]), never in a stage; answers are
//! cached for [`VETH_TTL`].

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use super::cgroup;

/// How long an interface's answer (a cgroup, or none) is kept.
pub const VETH_TTL: Duration = Duration::from_secs(60);
/// Processes looked at, at most, in one search.
const MAX_PROCS: usize = 100_000;
/// Processes of the matched namespace whose cgroups are read, at most.
const MAX_MEMBERS: usize = 64;

/// Where the search reads: `/proc`, `/sys/class/net` and the cgroup2 mount (other roots in
/// tests).
#[derive(Debug, Clone)]
pub struct Roots {
    pub proc: PathBuf,
    pub class_net: PathBuf,
    pub cgroup: PathBuf,
}

impl Roots {
    pub fn host(cgroup: PathBuf) -> Self {
        Self {
            proc: "/proc".into(),
            class_net: "/sys/class/net".into(),
            cgroup,
        }
    }
}

fn number(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `ifindex` and `iflink` of an interface under a `class/net` directory.
fn link(class_net: &Path, name: &str) -> Option<(u32, u32)> {
    let dir = class_net.join(name);
    Some((number(&dir.join("ifindex"))?, number(&dir.join("iflink"))?))
}

fn netns(proc: &Path, pid: &str) -> Option<PathBuf> {
    std::fs::read_link(proc.join(pid).join("ns/net")).ok()
}

/// The cgroup id of the workload at the other end of interface `name`, if it is one of a
/// pair and its peer's namespace holds processes.
pub fn peer_cgroup(roots: &Roots, name: &str) -> Option<u64> {
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let (ifindex, iflink) = link(&roots.class_net, name)?;
    let physical = roots.class_net.join(name).join("device").exists();
    // A pair numbered alike at both ends (i ↔ i) cannot be told from the many namespaces
    // that number their first interface alike: left null.
    if physical || name == "lo" || iflink == 0 || iflink == ifindex {
        return None;
    }
    let skip = [netns(&roots.proc, "self"), netns(&roots.proc, "1")];
    // Namespace → its processes, lowest PID first.
    let mut spaces: BTreeMap<PathBuf, Vec<u32>> = BTreeMap::new();
    let mut pids: Vec<u32> = std::fs::read_dir(&roots.proc)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .take(MAX_PROCS)
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Some(ns) = netns(&roots.proc, &pid.to_string()) else {
            continue;
        };
        if skip.iter().any(|s| s.as_ref() == Some(&ns)) {
            continue;
        }
        spaces.entry(ns).or_default().push(pid);
    }
    let mut matched = spaces.into_values().filter(|members| {
        let class_net = roots
            .proc
            .join(members[0].to_string())
            .join("root/sys/class/net");
        std::fs::read_dir(&class_net).ok().is_some_and(|d| {
            d.flatten().any(|e| {
                e.file_name()
                    .to_str()
                    .filter(|n| *n != "lo")
                    .and_then(|n| link(&class_net, n))
                    .is_some_and(|(i, l)| i == iflink && l == ifindex)
            })
        })
    });
    // Indexes are per namespace: where two namespaces match, neither is known to be ours.
    let members = matched.next()?;
    if matched.next().is_some() {
        return None;
    }
    let paths: Vec<String> = members
        .iter()
        .take(MAX_MEMBERS)
        .filter_map(|pid| unified_path(&roots.proc.join(pid.to_string()).join("cgroup")))
        .collect();
    let path = paths
        .iter()
        .find(|p| cgroup::ids(p).container_id.is_some())
        .or(paths.first())?;
    let dir = roots.cgroup.join(path.trim_start_matches('/'));
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

/// The cgroup v2 path in a `/proc/PID/cgroup` file: its `0::PATH` line.
fn unified_path(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::cgroup::tests::Scratch;
    use std::os::unix::fs::symlink;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn iface(dir: &Path, name: &str, ifindex: u32, iflink: u32) {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ifindex"), format!("{ifindex}\n")).unwrap();
        std::fs::write(d.join("iflink"), format!("{iflink}\n")).unwrap();
    }

    /// A process `pid` in namespace `ns`, whose root shows interfaces `ifaces`, in cgroup
    /// `cg`.
    fn process(s: &Path, pid: u32, ns: &str, ifaces: &[(&str, u32, u32)], cg: &str) {
        let p = s.join("proc").join(pid.to_string());
        std::fs::create_dir_all(p.join("ns")).unwrap();
        symlink(format!("net:[{ns}]"), p.join("ns/net")).unwrap();
        let root = s.join(format!("root-{pid}"));
        for (n, i, l) in ifaces {
            iface(&root.join("sys/class/net"), n, *i, *l);
        }
        symlink(&root, p.join("root")).unwrap();
        std::fs::write(p.join("cgroup"), format!("0::{cg}\n")).unwrap();
        std::fs::create_dir_all(s.join("cg").join(cg.trim_start_matches('/'))).unwrap();
    }

    #[test]
    fn a_host_veth_maps_to_a_container_in_its_peers_namespace() {
        let s = Scratch::new("veth");
        let s = &s.0;
        let roots = Roots {
            proc: s.join("proc"),
            class_net: s.join("class_net"),
            cgroup: s.join("cg"),
        };
        // Ours: lxc1 (ifindex 7) paired with index 2 elsewhere; eth0 a NIC; lo.
        iface(&roots.class_net, "lxc1", 7, 2);
        iface(&roots.class_net, "eth0", 3, 3);
        std::fs::create_dir_all(roots.class_net.join("eth0/device")).unwrap();
        iface(&roots.class_net, "lxc2", 9, 2);
        iface(&roots.class_net, "lo", 1, 1);
        // Each namespace numbers its own: a pair may be 2 ↔ 2.
        iface(&roots.class_net, "veth9", 2, 2);
        std::fs::create_dir_all(roots.proc.join("self/ns")).unwrap();
        symlink("net:[1]", roots.proc.join("self/ns/net")).unwrap();
        process(s, 1, "1", &[("eth0", 3, 3)], "/init.scope");
        // Another pod whose eth0 has the same ifindex 2, paired with another host veth.
        process(s, 40, "50", &[("eth0", 2, 8)], "/kubepods/podx/other");
        // The pod: its sandbox (lowest PID, no container in the path) and a container.
        let sandbox = "/kubepods/besteffort/pod5f1c8a3e-2b4d-4c6e-9f01-23456789abcd";
        let container = format!("{sandbox}/{HEX}");
        process(s, 100, "60", &[("lo", 1, 1), ("eth0", 2, 7)], sandbox);
        process(s, 101, "60", &[], &container);
        // A pod whose eth0 is 2 ↔ 2 like veth9 (and a loopback numbered like ours).
        let other = format!(
            "/kubepods/besteffort/pod5f1c8a3e-2b4d-4c6e-9f01-23456789abce/{}",
            &HEX
        );
        process(
            s,
            200,
            "70",
            &[("lo", 1, 1), ("eth0", 2, 2), ("eth1", 3, 5)],
            &other,
        );
        // lxc3 (5 ↔ 3) pairs with that pod's eth1 (3 ↔ 5).
        iface(&roots.class_net, "lxc3", 5, 3);
        let ino = std::fs::metadata(roots.cgroup.join(container.trim_start_matches('/')))
            .unwrap()
            .ino();
        assert_eq!(peer_cgroup(&roots, "lxc1"), Some(ino));
        let ino9 = std::fs::metadata(roots.cgroup.join(other.trim_start_matches('/')))
            .unwrap()
            .ino();
        // Numbered alike at both ends: not told apart from other namespaces, none.
        assert_eq!(peer_cgroup(&roots, "veth9"), None);
        assert_eq!(peer_cgroup(&roots, "lxc3"), Some(ino9));
        // A second namespace that matches lxc3 as well: ambiguous, none.
        process(s, 300, "80", &[("eth1", 3, 5)], "/plain");
        assert_eq!(peer_cgroup(&roots, "lxc3"), None);
        assert_eq!(peer_cgroup(&roots, "lxc1"), Some(ino));
        // A NIC, loopback, unknown, no namespace at the other end, bad names: none.
        for name in ["eth0", "lo", "nosuch", "lxc2", "", "../x", "lxc1/.."] {
            assert_eq!(peer_cgroup(&roots, name), None, "{name}");
        }
        // Without the container, the lowest PID's cgroup.
        std::fs::remove_file(roots.proc.join("101/cgroup")).unwrap();
        let ino = std::fs::metadata(roots.cgroup.join(sandbox.trim_start_matches('/')))
            .unwrap()
            .ino();
        assert_eq!(peer_cgroup(&roots, "lxc1"), Some(ino));
        assert_eq!(unified_path(&roots.proc.join("nosuch")), None);
    }
}
