//! Which workload a row belongs to: the cgroup a packet's socket is in, the container and
//! pod that cgroup belongs to, and on Kubernetes the pod's name and namespace. Used by the
//! decode stage (packet rows) and the flows stage (flow rows); it imports no stage.
//!
//! A row's cgroup id comes, in this order, from:
//! 1. the kernel: TC egress reads the sending socket's cgroup (`bpf_skb_cgroup_id`);
//! 2. the connection: an ingress row whose reversed 5-tuple (TCP, UDP) was seen leaving
//!    with a cgroup id within [`SOCKET_TTL`] gets that id ([`Sockets`], bounded);
//! 3. the host-side veth the row was seen on: the pod at its other end ([`veth`]).
//!
//! Left null: forwarded traffic (no local socket, on an interface that is no veth of a
//! pod), ingress before any egress of its connection was seen (and, with sampling, before
//! a sampled one), ingress on XDP alone (no egress hook), traffic that is neither TCP nor
//! UDP on a plain interface. The id becomes a path, container id and pod UID through
//! [`cgroup::CgroupIndex`] (a miss is null until the background walk has run), and a pod
//! UID a name and namespace through [`kube::PodIndex`] (`--kube-metadata`).

pub mod cgroup;
pub mod kube;
pub mod veth;

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        mpsc::{Receiver, RecvTimeoutError, SyncSender},
    },
    time::{Duration, Instant},
};

use tracing::{debug, info, warn};

use crate::record::{Direction, DnsRecord, FlowRecord, PacketRecord, Workload};
use cgroup::{CgroupIndex, Walker};
use kube::PodIndex;

/// How long a connection's cgroup, learned from its egress, is kept after it was last seen.
pub const SOCKET_TTL: Duration = Duration::from_secs(120);
/// Connections remembered at most.
pub const SOCKET_CAPACITY: usize = 65_536;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// A connection as the local end sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conn {
    pub protocol: u8,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
}

impl Conn {
    /// The connection of a TCP or UDP packet going `dir`; `None` for anything else.
    pub fn of(
        dir: Direction,
        protocol: u8,
        (src, src_port): (IpAddr, u16),
        (dst, dst_port): (IpAddr, u16),
    ) -> Option<Self> {
        if protocol != PROTO_TCP && protocol != PROTO_UDP {
            return None;
        }
        let (local, remote) = match dir {
            Direction::Egress => ((src, src_port), (dst, dst_port)),
            Direction::Ingress => ((dst, dst_port), (src, src_port)),
        };
        Some(Self {
            protocol,
            local,
            remote,
        })
    }
}

/// Connections → the cgroup of the socket seen sending on them: bounded
/// ([`SOCKET_CAPACITY`]), each kept [`SOCKET_TTL`] after its last egress. When full, expired
/// entries are swept (at most once a second); a connection that still finds no room is not
/// remembered.
#[derive(Debug, Default)]
pub struct Sockets {
    map: HashMap<Conn, (u64, Instant)>,
    swept: Option<Instant>,
}

impl Sockets {
    pub fn learn(&mut self, conn: Conn, cgroup_id: u64, now: Instant) {
        if self.map.len() >= SOCKET_CAPACITY && !self.map.contains_key(&conn) {
            if self
                .swept
                .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
            {
                return;
            }
            self.swept = Some(now);
            self.map
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < SOCKET_TTL);
            if self.map.len() >= SOCKET_CAPACITY {
                return;
            }
        }
        self.map.insert(conn, (cgroup_id, now));
    }

    pub fn find(&self, conn: &Conn, now: Instant) -> Option<u64> {
        self.map
            .get(conn)
            .filter(|(_, at)| now.saturating_duration_since(*at) < SOCKET_TTL)
            .map(|(id, _)| *id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What the attribution thread is asked for.
enum Request {
    Cgroup(u64),
    Veth(Arc<str>),
}

/// Interface name → the cgroup at the other end of its veth (None: none), with when it was
/// found out.
type VethCache = RwLock<HashMap<Arc<str>, (Option<u64>, Instant)>>;

struct Inner {
    cgroups: CgroupIndex,
    pods: PodIndex,
    sockets: Mutex<Sockets>,
    veths: VethCache,
    requests: SyncSender<Request>,
}

/// Fills rows' [`Workload`]s; shared by the stages (cheap to clone). Lookups never wait:
/// what is not known yet is asked of a thread of its own and is null until it answers.
#[derive(Clone)]
pub struct Resolver(Arc<Inner>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl Resolver {
    /// On this host: the cgroup2 tree at `root` (`--cgroup-root`), else this process's
    /// ([`cgroup_root`]). `None` (logged) when there is none: rows then carry the cgroup id
    /// alone.
    pub fn start(pods: PodIndex, root: Option<PathBuf>) -> Option<Self> {
        let root = match root {
            Some(r) if r.is_dir() => r,
            Some(r) => {
                warn!(
                    "--cgroup-root {}: not a directory: rows carry no container or pod (cgroup ids only)",
                    r.display()
                );
                return None;
            }
            None => {
                let Some(r) = cgroup_root() else {
                    info!("no cgroup2 mount: rows carry no container or pod (cgroup ids only)");
                    return None;
                };
                r
            }
        };
        debug!("cgroup2 tree at {}", root.display());
        Some(Self::with_roots(veth::Roots::host(root), pods))
    }

    /// With other roots (tests).
    pub fn with_roots(roots: veth::Roots, pods: PodIndex) -> Self {
        let (requests, rx) = std::sync::mpsc::sync_channel(256);
        let inner = Arc::new(Inner {
            cgroups: CgroupIndex::default(),
            pods,
            sockets: Mutex::default(),
            veths: RwLock::default(),
            requests,
        });
        let worker = Worker {
            walker: Walker::new(roots.cgroup.clone()),
            roots,
            cgroups: inner.cgroups.clone(),
            inner: Arc::downgrade(&inner),
        };
        let spawned = std::thread::Builder::new()
            .name("fmx-attribution".into())
            .spawn(move || worker.run(rx));
        if let Err(e) = spawned {
            info!("cannot start the attribution thread ({e}): containers and pods stay null");
        }
        Self(inner)
    }

    /// The workload of a packet row; `cgroup_id` is the kernel's (0: none).
    pub fn packet(&self, row: &mut PacketRecord, cgroup_id: u64, now: Instant) {
        let conn = match (
            row.protocol,
            row.src_ip,
            row.dst_ip,
            row.src_port,
            row.dst_port,
        ) {
            (Some(p), Some(s), Some(d), Some(sp), Some(dp)) => {
                Conn::of(row.direction, p, (s, sp), (d, dp))
            }
            _ => None,
        };
        let id = self.cgroup_of(row.direction, conn, cgroup_id, &row.interface, now);
        row.workload = self.workload(id);
    }

    /// The workload of a DNS row, its query's (the client is the source): the kernel's
    /// cgroup id it carries, else the connection's, else the veth's.
    pub fn dns(&self, row: &mut DnsRecord, now: Instant) {
        let conn = Conn::of(
            row.direction,
            row.protocol,
            (row.src_ip, row.src_port),
            (row.dst_ip, row.dst_port),
        );
        let kernel = row.workload.cgroup_id.unwrap_or(0);
        let id = self.cgroup_of(row.direction, conn, kernel, &row.interface, now);
        row.workload = self.workload(id);
    }

    /// The workloads of one interval's flow rows, whose `workload.cgroup_id` holds the
    /// kernel's: egress rows first, so that an ingress row finds the connection its egress
    /// in the same interval made known.
    pub fn flows(&self, rows: &mut [FlowRecord], now: Instant) {
        for pass in [Direction::Egress, Direction::Ingress] {
            for row in rows.iter_mut().filter(|r| r.direction == pass) {
                let conn = match (row.src_ip, row.dst_ip) {
                    (Some(s), Some(d)) => Conn::of(
                        row.direction,
                        row.protocol,
                        (s, row.src_port),
                        (d, row.dst_port),
                    ),
                    _ => None,
                };
                let kernel = row.workload.cgroup_id.unwrap_or(0);
                let id = self.cgroup_of(row.direction, conn, kernel, &row.interface, now);
                row.workload = self.workload(id);
            }
        }
    }

    fn cgroup_of(
        &self,
        dir: Direction,
        conn: Option<Conn>,
        kernel: u64,
        interface: &Arc<str>,
        now: Instant,
    ) -> Option<u64> {
        if kernel != 0 {
            if let (Direction::Egress, Some(c)) = (dir, conn) {
                self.sockets().learn(c, kernel, now);
            }
            return Some(kernel);
        }
        if let (Direction::Ingress, Some(c)) = (dir, conn)
            && let Some(id) = self.sockets().find(&c, now)
        {
            return Some(id);
        }
        self.veth(interface, now)
    }

    fn sockets(&self) -> std::sync::MutexGuard<'_, Sockets> {
        self.0
            .sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The cgroup at the other end of veth `interface`, if found out already.
    fn veth(&self, interface: &Arc<str>, now: Instant) -> Option<u64> {
        if interface.is_empty() {
            return None;
        }
        let cached = self
            .0
            .veths
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(interface)
            .copied();
        match cached {
            Some((id, at)) if now.saturating_duration_since(at) < veth::VETH_TTL => id,
            _ => {
                self.ask(Request::Veth(Arc::clone(interface)));
                cached.and_then(|(id, _)| id)
            }
        }
    }

    /// Asks the thread, never waiting: when its queue is full a later row asks again; when
    /// it is gone (it could not start) the answer stays null.
    fn ask(&self, r: Request) {
        let _ = self.0.requests.try_send(r);
    }

    /// The workload of cgroup `id`: what the index knows of it, and its pod's name.
    pub fn workload(&self, id: Option<u64>) -> Workload {
        let Some(id) = id else {
            return Workload::default();
        };
        let Some(info) = self.0.cgroups.get(id) else {
            self.ask(Request::Cgroup(id));
            return Workload {
                cgroup_id: Some(id),
                ..Workload::default()
            };
        };
        let pod = info
            .pod_uid
            .as_deref()
            .and_then(|uid| self.0.pods.lookup(uid));
        Workload {
            cgroup_id: Some(id),
            container_id: info.container_id.clone(),
            pod_uid: info.pod_uid.clone(),
            pod: pod.as_ref().map(|p| Arc::clone(&p.name)),
            namespace: pod.map(|p| p.namespace),
        }
    }
}

/// The thread that walks the cgroup tree and searches veth peers, as the stages ask.
struct Worker {
    walker: Walker,
    roots: veth::Roots,
    cgroups: CgroupIndex,
    inner: std::sync::Weak<Inner>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Request>) {
        loop {
            let first = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut ids = Vec::new();
            let mut names = Vec::new();
            for r in std::iter::once(first).chain(rx.try_iter()) {
                match r {
                    Request::Cgroup(id) => ids.push(id),
                    Request::Veth(n) => names.push(n),
                }
            }
            names.sort();
            names.dedup();
            for name in names {
                let Some(inner) = self.inner.upgrade() else {
                    return;
                };
                let fresh = inner
                    .veths
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&name)
                    .is_some_and(|(_, at)| at.elapsed() < veth::VETH_TTL);
                if fresh {
                    continue;
                }
                let id = veth::peer_cgroup(&self.roots, &name);
                if let Some(id) = id {
                    ids.push(id);
                }
                let mut veths = inner.veths.write().unwrap_or_else(PoisonError::into_inner);
                if veths.len() >= 4096 {
                    veths.clear();
                }
                veths.insert(name, (id, Instant::now()));
            }
            ids.sort_unstable();
            ids.dedup();
            self.walker.serve(&self.cgroups, &ids);
        }
    }
}

/// Where the cgroup2 tree can be read: the cgroup2 mount of this process's mount
/// namespace (`/proc/self/mountinfo`), else one seen through the root of PID 1 or of the
/// parent process (`ip netns exec` remounts `/sys` without the cgroup mounts; a container
/// may lack them too).
pub fn cgroup_root() -> Option<PathBuf> {
    let mount = |pid: &str| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
        cgroup::cgroup2_mount(&text)
    };
    if let Some(m) = mount("self") {
        return Some(m);
    }
    let parent = std::os::unix::process::parent_id().to_string();
    ["1", parent.as_str()].into_iter().find_map(|pid| {
        let m = mount(pid)?;
        let root = PathBuf::from(format!("/proc/{pid}/root")).join(m.strip_prefix("/").ok()?);
        root.is_dir().then_some(root)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::cgroup::tests::Scratch;
    use std::os::unix::fs::MetadataExt as _;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_ingress_connection_is_the_reverse_of_its_egress() {
        let out = Conn::of(
            Direction::Egress,
            17,
            (ip("10.0.0.1"), 4000),
            (ip("10.0.0.2"), 53),
        );
        let back = Conn::of(
            Direction::Ingress,
            17,
            (ip("10.0.0.2"), 53),
            (ip("10.0.0.1"), 4000),
        );
        assert_eq!(out, back);
        assert!(out.is_some());
        assert_eq!(
            Conn::of(
                Direction::Egress,
                1,
                (ip("10.0.0.1"), 8),
                (ip("10.0.0.2"), 0)
            ),
            None
        );
    }

    #[test]
    fn sockets_expire_and_stay_bounded() {
        let mut s = Sockets::default();
        let t0 = Instant::now();
        let c = |i: u32| Conn {
            protocol: 6,
            local: (IpAddr::from(std::net::Ipv4Addr::from(i)), 1),
            remote: (ip("10.0.0.9"), 2),
        };
        s.learn(c(1), 77, t0);
        assert_eq!(s.find(&c(1), t0 + Duration::from_secs(1)), Some(77));
        assert_eq!(s.find(&c(1), t0 + SOCKET_TTL), None, "expired");
        assert_eq!(s.find(&c(2), t0), None);
        for i in 0..SOCKET_CAPACITY as u32 + 10 {
            s.learn(c(i), 1, t0);
        }
        assert_eq!(s.len(), SOCKET_CAPACITY);
        // Full of live entries: a new one finds no room; once they expire, it does.
        s.learn(c(u32::MAX), 5, t0 + Duration::from_secs(2));
        assert_eq!(s.find(&c(u32::MAX), t0 + Duration::from_secs(2)), None);
        let later = t0 + SOCKET_TTL + Duration::from_secs(5);
        s.learn(c(u32::MAX), 5, later);
        assert_eq!(s.find(&c(u32::MAX), later), Some(5));
        assert_eq!(s.len(), 1);
    }

    fn flow(dir: Direction, src: (&str, u16), dst: (&str, u16), cgroup: Option<u64>) -> FlowRecord {
        FlowRecord {
            ts: Default::default(),
            host: "h".into(),
            interface: "".into(),
            direction: dir,
            application: "DNS",
            vlan_id: None,
            ether_type: 0x0800,
            src_ip: Some(ip(src.0)),
            dst_ip: Some(ip(dst.0)),
            protocol: 17,
            src_port: src.1,
            dst_port: dst.1,
            packets: 1,
            bytes: 1,
            first_seen: Default::default(),
            last_seen: Default::default(),
            tcp_flags: 0,
            interval_ms: 1,
            health: Default::default(),
            workload: Workload {
                cgroup_id: cgroup,
                ..Workload::default()
            },
        }
    }

    fn eventually(mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(10), "never");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn rows_get_their_cgroups_container_pod_and_name() {
        let s = Scratch::new("resolver");
        let uid = "5f1c8a3e-2b4d-4c6e-9f01-23456789abcd";
        let hex = "ab".repeat(32);
        let path = format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{hex}.scope",
            uid.replace('-', "_")
        );
        std::fs::create_dir_all(s.0.join(&path)).unwrap();
        let id = std::fs::metadata(s.0.join(&path)).unwrap().ino();
        let pods = PodIndex::default();
        pods.replace(HashMap::from([(
            uid.into(),
            kube::PodMeta {
                name: "checkout-7d9f".into(),
                namespace: "shop".into(),
            },
        )]));
        let roots = veth::Roots {
            proc: s.0.join("noproc"),
            class_net: s.0.join("nonet"),
            cgroup: s.0.clone(),
        };
        let r = Resolver::with_roots(roots, pods);
        // Not walked yet: the id alone; the walk comes in the background.
        assert_eq!(
            r.workload(Some(id)),
            Workload {
                cgroup_id: Some(id),
                ..Workload::default()
            }
        );
        eventually(|| r.workload(Some(id)).pod.is_some());
        let mut rows = vec![
            flow(
                Direction::Ingress,
                ("10.0.0.2", 53),
                ("10.0.0.1", 4000),
                None,
            ),
            flow(
                Direction::Egress,
                ("10.0.0.1", 4000),
                ("10.0.0.2", 53),
                Some(id),
            ),
            flow(
                Direction::Ingress,
                ("10.0.0.3", 53),
                ("10.0.0.1", 4000),
                None,
            ),
        ];
        r.flows(&mut rows, Instant::now());
        for row in &rows[..2] {
            let w = &row.workload;
            assert_eq!(w.cgroup_id, Some(id));
            assert_eq!(w.container_id.as_deref(), Some(hex.as_str()));
            assert_eq!(w.pod_uid.as_deref(), Some(uid));
            assert_eq!(w.pod.as_deref(), Some("checkout-7d9f"));
            assert_eq!(w.namespace.as_deref(), Some("shop"));
        }
        // Another peer: not the connection seen leaving.
        assert_eq!(rows[2].workload, Workload::default());
        // A packet row answering the connection gets it too; an unknown id is the id alone.
        let mut p = PacketRecord {
            protocol: Some(17),
            src_ip: Some(ip("10.0.0.2")),
            dst_ip: Some(ip("10.0.0.1")),
            src_port: Some(53),
            dst_port: Some(4000),
            ..PacketRecord::default()
        };
        r.packet(&mut p, 0, Instant::now());
        assert_eq!(p.workload.namespace.as_deref(), Some("shop"));
        p.direction = Direction::Egress;
        r.packet(&mut p, 1, Instant::now());
        assert_eq!(
            p.workload,
            Workload {
                cgroup_id: Some(1),
                ..Workload::default()
            }
        );
    }
}
