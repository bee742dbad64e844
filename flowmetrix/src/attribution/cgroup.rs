//! Cgroup ids → cgroup paths → container ids and pod UIDs.
//!
//! The kernel gives a socket's cgroup as its cgroup v2 id, which is the inode number of the
//! cgroup's directory under the cgroup2 mount (found in `/proc/self/mountinfo`: on a pure
//! v2 host `/sys/fs/cgroup`, on a hybrid one `/sys/fs/cgroup/unified`). [`CgroupIndex`]
//! maps ids to paths by walking that tree on a thread of its own: a lookup never walks,
//! never waits; a miss is `None` and asks the thread for a walk, which runs at most once
//! every [`MIN_WALK_GAP`] (ids a walk did not find are not asked for again for
//! [`MISS_TTL`]). Each walk replaces the whole map, so cgroups gone are forgotten.
//!
//! [`ids`] reads a container id and a pod UID from a path, for the cgroupfs and systemd
//! drivers and the containerd, CRI-O, Docker and Podman namings.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

/// What a cgroup id stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupInfo {
    /// The path under the cgroup2 mount, starting with `/`.
    pub path: Box<str>,
    pub container_id: Option<Arc<str>>,
    pub pod_uid: Option<Arc<str>>,
}

/// The container id and pod UID a cgroup path names, each `None` when it names none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
}

/// Walks happen at most this often, however many misses ask for one.
pub const MIN_WALK_GAP: Duration = Duration::from_secs(2);
/// An id a walk did not find is not asked for again before this.
pub const MISS_TTL: Duration = Duration::from_secs(30);
/// Bounds of one walk: directories deep, and directories in all.
const MAX_DEPTH: usize = 32;
const MAX_DIRS: usize = 200_000;

/// Where the cgroup2 hierarchy is mounted, from the text of `/proc/self/mountinfo`: the
/// first `cgroup2` mount. `None` when there is none (a cgroup v1-only host).
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split(' ').nth(4)?;
        Some(PathBuf::from(unescape(mount_point)))
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The container id and pod UID in a cgroup path. The deepest component that names a
/// container gives its id; the component that names a pod gives its UID:
/// - containerd: `cri-containerd-<64 hex>.scope` (systemd driver), `<64 hex>` (cgroupfs:
///   `/kubepods/burstable/pod<uid>/<64 hex>`);
/// - CRI-O: `crio-<64 hex>.scope` (`crio-conmon-…` is its monitor, not the container);
/// - Docker: `docker-<64 hex>.scope`, `/docker/<64 hex>`; Podman: `libpod-<64 hex>.scope`;
/// - pods: `pod<uid>` (cgroupfs), `kubepods-<qos>-pod<uid with _ for ->.slice` and
///   `kubepods-pod<uid>.slice` (systemd; the underscores become dashes again). A UID is a
///   UUID, or 32 hex digits (static pods).
///
/// Anything else gives `None`s.
pub fn ids(path: &str) -> Ids {
    let mut out = Ids::default();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        if let Some(id) = container_of(c) {
            out.container_id = Some(id.to_ascii_lowercase());
        } else if let Some(uid) = pod_of(c) {
            out.pod_uid = Some(uid);
        }
    }
    out
}

fn container_of(c: &str) -> Option<&str> {
    if is_hex(c, 64) {
        return Some(c);
    }
    let base = c.strip_suffix(".scope").unwrap_or(c);
    ["cri-containerd-", "crio-", "docker-", "libpod-"]
        .iter()
        .find_map(|p| base.strip_prefix(p))
        .filter(|id| is_hex(id, 64))
}

fn pod_of(c: &str) -> Option<String> {
    let uid = if let Some(slice) = c.strip_suffix(".slice") {
        // kubepods-besteffort-pod<uid>.slice, kubepods-pod<uid>.slice
        if !slice.starts_with("kubepods-") {
            return None;
        }
        let (_, uid) = slice.rsplit_once("-pod")?;
        uid.replace('_', "-")
    } else {
        c.strip_prefix("pod")?.to_owned()
    };
    (is_uuid(&uid) || is_hex(&uid, 32)).then(|| uid.to_ascii_lowercase())
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Every cgroup under `root`: id (the directory's inode number) → its path and ids. Stops
/// at [`MAX_DEPTH`] and [`MAX_DIRS`]; directories that cannot be read are left out.
pub fn walk(root: &Path) -> HashMap<u64, Arc<CgroupInfo>> {
    let mut out = HashMap::new();
    let mut todo = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = todo.pop() {
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        let path: Box<str> = if rel.is_empty() {
            "/".into()
        } else {
            rel.as_str().into()
        };
        let found = ids(&path);
        out.insert(
            meta.ino(),
            Arc::new(CgroupInfo {
                path,
                container_id: found.container_id.map(Into::into),
                pod_uid: found.pod_uid.map(Into::into),
            }),
        );
        if out.len() >= MAX_DIRS || depth >= MAX_DEPTH {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            // Not following links: a cgroup is a directory.
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            todo.push((e.path(), format!("{rel}/{name}"), depth + 1));
        }
    }
    out
}

/// Cgroup ids → [`CgroupInfo`], shared by the stages (reads) and the thread that walks the
/// tree ([`super::Worker`]).
#[derive(Debug, Clone, Default)]
pub struct CgroupIndex {
    map: Arc<RwLock<HashMap<u64, Arc<CgroupInfo>>>>,
}

impl CgroupIndex {
    /// What the last walk found for `id`; never waits for a walk.
    pub fn get(&self, id: u64) -> Option<Arc<CgroupInfo>> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    pub(super) fn replace(&self, map: HashMap<u64, Arc<CgroupInfo>>) {
        *self.map.write().unwrap_or_else(PoisonError::into_inner) = map;
    }
}

/// The walking side: when the last walk ran and which ids it did not find.
#[derive(Debug)]
pub(super) struct Walker {
    pub root: PathBuf,
    last: Option<Instant>,
    missing: HashMap<u64, Instant>,
}

impl Walker {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            last: None,
            missing: HashMap::new(),
        }
    }

    /// Asked for `wanted` ids the index lacks: walks (after waiting out [`MIN_WALK_GAP`]
    /// since the last walk) unless every one of them was missed less than [`MISS_TTL`] ago.
    pub fn serve(&mut self, index: &CgroupIndex, wanted: &[u64]) {
        let now = Instant::now();
        self.missing
            .retain(|_, at| now.duration_since(*at) < MISS_TTL);
        let fresh: Vec<u64> = wanted
            .iter()
            .copied()
            .filter(|id| !self.missing.contains_key(id) && index.get(*id).is_none())
            .collect();
        if fresh.is_empty() {
            return;
        }
        if let Some(last) = self.last {
            let since = last.elapsed();
            if since < MIN_WALK_GAP {
                std::thread::sleep(MIN_WALK_GAP - since);
            }
        }
        let map = walk(&self.root);
        self.last = Some(Instant::now());
        for id in fresh {
            if !map.contains_key(&id) && self.missing.len() < 100_000 {
                self.missing.insert(id, Instant::now());
            }
        }
        index.replace(map);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "5f1c8a3e-2b4d-4c6e-9f01-23456789abcd";

    fn both(path: &str) -> (Option<String>, Option<String>) {
        let i = ids(path);
        (i.container_id, i.pod_uid)
    }

    #[test]
    fn containerd_and_the_systemd_driver() {
        let under = UID.replace('-', "_");
        for qos in ["besteffort-", "burstable-", ""] {
            let path = format!(
                "/kubepods.slice/kubepods-{qos}slice/kubepods-{qos}pod{under}.slice/cri-containerd-{HEX}.scope"
            )
            .replace("kubepods-slice/", "");
            assert_eq!(both(&path), (Some(HEX.into()), Some(UID.into())), "{path}");
        }
    }

    #[test]
    fn containerd_and_the_cgroupfs_driver() {
        let path = format!("/kubepods/burstable/pod{UID}/{HEX}");
        assert_eq!(both(&path), (Some(HEX.into()), Some(UID.into())));
        let path = format!("/kubepods/pod{UID}/{HEX}");
        assert_eq!(both(&path), (Some(HEX.into()), Some(UID.into())));
        // The pod's own cgroup: a pod, no container.
        assert_eq!(
            both(&format!("/kubepods/besteffort/pod{UID}")),
            (None, Some(UID.into()))
        );
    }

    #[test]
    fn cri_o_docker_and_podman() {
        let under = UID.replace('-', "_");
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice/crio-{HEX}.scope"
        );
        assert_eq!(both(&path), (Some(HEX.into()), Some(UID.into())));
        // conmon, CRI-O's monitor process, is not the container.
        let path = format!("/kubepods.slice/kubepods-pod{under}.slice/crio-conmon-{HEX}.scope");
        assert_eq!(both(&path), (None, Some(UID.into())));
        assert_eq!(
            both(&format!("/system.slice/docker-{HEX}.scope")),
            (Some(HEX.into()), None)
        );
        assert_eq!(both(&format!("/docker/{HEX}")), (Some(HEX.into()), None));
        assert_eq!(
            both(&format!("/machine.slice/libpod-{HEX}.scope/container")),
            (Some(HEX.into()), None)
        );
        // Upper-case hex is the same id.
        assert_eq!(
            both(&format!("/docker/{}", HEX.to_uppercase())),
            (Some(HEX.into()), None)
        );
    }

    #[test]
    fn a_static_pods_uid_is_32_hex_digits() {
        let uid = &HEX[..32];
        assert_eq!(
            both(&format!("/kubepods/pod{uid}/{HEX}")),
            (Some(HEX.into()), Some(uid.into()))
        );
        assert_eq!(
            both(&format!("/kubepods.slice/kubepods-pod{uid}.slice")),
            (None, Some(uid.into()))
        );
    }

    #[test]
    fn other_paths_name_nothing_and_never_panic() {
        for path in [
            "",
            "/",
            "//",
            "/user.slice/user-1000.slice/session-3.scope",
            "/system.slice/ssh.service",
            "/init.scope",
            "/docker",
            "/docker/abc",
            &format!("/docker/{}", &HEX[1..]),
            &format!("/docker/{HEX}0"),
            &format!("/docker-{HEX}.scope.extra"),
            "/kubepods/podnot-a-uid",
            "/pod",
            "/kubepods-pod.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            &format!("/notkube-pod{}.slice", UID.replace('-', "_")),
            "/\u{e9}\u{e9}\u{e9}/pod\u{1F600}",
            &format!("/cri-containerd-{}.scope", "g".repeat(64)),
            "/kubepods/pod5f1c8a3e-2b4d-4c6e-9f01-23456789abcdXX",
            "/kubepods/pod5f1c8a3e_2b4d_4c6e_9f01_23456789abcd",
        ] {
            assert_eq!(both(path), (None, None), "{path:?}");
        }
    }

    #[test]
    fn the_cgroup2_mount_is_read_from_mountinfo() {
        let hybrid = "25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw\n\
            33 25 0:28 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n\
            34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate\n\
            35 33 0:30 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,name=systemd\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        // Optional fields vary in number; the mount point is the fifth field all the same.
        let escaped = "30 25 0:26 / /mnt/my\\040cg rw shared:4 master:1 - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(escaped), Some(PathBuf::from("/mnt/my cg")));
        for bad in [
            "",
            "garbage",
            "1 2 3 - cgroup2",
            "35 33 0:30 / /x rw - cgroup cgroup rw",
            " - cgroup2 x",
        ] {
            assert_eq!(cgroup2_mount(bad), None, "{bad:?}");
        }
        assert_eq!(unescape("a\\0"), "a\\0");
        assert_eq!(unescape("\\134x"), "\\x");
    }

    /// A scratch directory, removed when dropped.
    pub(crate) struct Scratch(pub PathBuf);

    impl Scratch {
        pub fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "flowmetrix-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_walk_maps_each_directorys_inode_to_its_path() {
        let s = Scratch::new("walk");
        let pod = format!("kubepods/besteffort/pod{UID}/{HEX}");
        std::fs::create_dir_all(s.0.join(&pod)).unwrap();
        std::fs::create_dir_all(s.0.join("plain")).unwrap();
        std::fs::write(s.0.join("plain/cgroup.procs"), "").unwrap();
        let ino = |p: &str| std::fs::metadata(s.0.join(p)).unwrap().ino();
        let map = walk(&s.0);
        assert_eq!(map.len(), 6, "{map:?}");
        let c = &map[&ino(&pod)];
        assert_eq!(&*c.path, format!("/{pod}"));
        assert_eq!(c.container_id.as_deref(), Some(HEX));
        assert_eq!(c.pod_uid.as_deref(), Some(UID));
        assert_eq!(&*map[&ino("plain")].path, "/plain");
        assert_eq!(map[&ino("plain")].container_id, None);
        assert_eq!(&*map[&ino("")].path, "/");
        assert!(walk(&s.0.join("nosuch")).is_empty());
    }

    #[test]
    fn the_walker_walks_for_new_ids_and_not_again_for_missing_ones() {
        let s = Scratch::new("walker");
        std::fs::create_dir_all(s.0.join("a")).unwrap();
        let a = std::fs::metadata(s.0.join("a")).unwrap().ino();
        let index = CgroupIndex::default();
        let mut w = Walker::new(s.0.clone());
        assert_eq!(index.get(a), None);
        w.serve(&index, &[a, 1]);
        assert_eq!(index.get(a).map(|c| c.path.clone()), Some("/a".into()));
        // 1 was not found: asking again does not walk (the new directory stays unknown).
        std::fs::create_dir_all(s.0.join("b")).unwrap();
        let b = std::fs::metadata(s.0.join("b")).unwrap().ino();
        let t = Instant::now();
        w.serve(&index, &[1, a]);
        assert!(t.elapsed() < MIN_WALK_GAP, "no walk, no wait");
        assert_eq!(index.get(b), None);
        // A new id walks, after the gap.
        w.serve(&index, &[b]);
        assert!(t.elapsed() >= MIN_WALK_GAP - Duration::from_millis(50));
        assert_eq!(index.get(b).map(|c| c.path.clone()), Some("/b".into()));
    }
}
