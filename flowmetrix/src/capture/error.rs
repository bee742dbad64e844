//! What can go wrong loading and attaching the programs.

use aya::util::KernelVersion;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("no such interface: {0}")]
    NoSuchInterface(String),
    /// `what`: "XDP program", "TC program", or "capture programs" (all of them, with their
    /// maps).
    #[error("cannot load the {what}")]
    Load {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The kernel said EPERM: a capability is missing. Its own words (a map's name, which
    /// changes run to run) would not say which.
    #[error(
        "cannot load the {what}: not permitted (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
    )]
    NotPermitted { what: &'static str },
    #[error("interface {0} is down (ip link set {0} up)")]
    InterfaceDown(String),
    #[error("cannot attach XDP to {iface} in {mode} mode{hint}")]
    Attach {
        iface: String,
        mode: &'static str,
        hint: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("interface {iface} already has an XDP program ({program}, id {id}){hint}")]
    AlreadyAttached {
        iface: String,
        program: String,
        id: u32,
        hint: String,
    },
    #[error(
        "interface {iface} already has a collector's TC {direction} program ({program}): is another collector running? (process {pid}, {comm}, holds it: stop it, or two collectors write every packet twice)"
    )]
    TcTaken {
        iface: String,
        direction: &'static str,
        program: String,
        pid: u32,
        comm: String,
    },
    #[error("kernel {0} is too old: XDP bpf_link and BPF ring buffers need Linux 5.9 or later")]
    KernelTooOld(KernelVersion),
    #[error("the XDP object lacks {0}")]
    Missing(&'static str),
    #[error("cannot read the kernel counters")]
    Stats(#[source] aya::maps::MapError),
    #[error("cannot set up the flow maps")]
    Flows(#[source] crate::flows::kernel::FlowMapError),
    #[error("cannot attach the TC {direction} program to {iface} ({how}){hint}")]
    TcAttach {
        iface: String,
        direction: &'static str,
        how: &'static str,
        hint: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
