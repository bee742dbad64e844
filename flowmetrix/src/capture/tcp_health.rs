//! `--tcp-health` (with `--mode flows|both`): the socket field offsets looked up in the
//! running kernel's BTF before load (Rust eBPF has no CO-RE), then the two raw tracepoint
//! programs loaded and attached — `tcp_probe` (fired by `tcp_rcv_established` for every
//! segment) and `tcp_retransmit_skb` (see `flowmetrix-ebpf/src/tcp.rs`).
//!
//! A kernel without what they need (no BTF, no such tracepoint, a program the verifier
//! refuses) turns the part off with one line naming what is missing; the capture and the
//! flow rows go on, their `tcp_retransmits` and `tcp_rtt_us` null. Both programs run or
//! neither: a retransmit count of 0 must mean none, not "not watched".

use std::path::PathBuf;

use aya::{Ebpf, programs::RawTracePoint};
use flowmetrix_common::tcp::{
    SOCK_HEAD, SockOffsets, TCP_RETRANSMIT_PROGRAM, TCP_RETRANSMIT_TRACEPOINT, TCP_RTT_PROGRAM,
    TCP_RTT_TRACEPOINT, TCP_SOCKET_ENTRIES,
};
use tracing::{info, warn};

use super::config::CaptureConfig;
use crate::{
    flows::tcp::{TcpSocketError, TcpSockets},
    kernel_btf::{BtfError, KernelBtf, VMLINUX},
};

/// Test hook: the BTF file to read instead of the running kernel's (one that is not there,
/// or lacks the socket structs or the tracepoints, makes the start-up probe fail as on such
/// a kernel).
pub const TCP_HEALTH_BTF_ENV: &str = "FLOWMETRIX_TEST_TCP_HEALTH_BTF";

/// Why the part is off.
#[derive(Debug, thiserror::Error)]
pub enum TcpHealthOff {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("the program on tracepoint {tracepoint} was refused")]
    Program {
        tracepoint: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("the kernel object lacks the program {0}")]
    Missing(&'static str),
    #[error(transparent)]
    Maps(#[from] TcpSocketError),
}

/// What the programs are told at load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hooks {
    pub offsets: SockOffsets,
    /// `tcp_retransmit_skb` passes an `err` argument (6.17+).
    pub retransmit_err: bool,
}

/// The start-up probe: what to hand the programs at load, and whether they may run.
pub struct Probe {
    /// Whether the settings ask for the part.
    wanted: bool,
    hooks: Result<Hooks, TcpHealthOff>,
}

impl Probe {
    /// Reads what the programs need from the kernel's BTF, when `cfg` asks for the part.
    pub fn new(cfg: &CaptureConfig) -> Self {
        if !cfg.flows.is_some_and(|f| f.tcp_health) {
            return Self {
                wanted: false,
                hooks: Ok(Hooks::default()),
            };
        }
        let path = std::env::var_os(TCP_HEALTH_BTF_ENV)
            .map_or_else(|| PathBuf::from(VMLINUX), PathBuf::from);
        let hooks = KernelBtf::read(&path)
            .and_then(|btf| hooks(&btf))
            .map_err(TcpHealthOff::from);
        Self {
            wanted: true,
            hooks,
        }
    }

    /// What the programs' globals hold (zeros when off: the programs are not loaded).
    pub fn hooks(&self) -> Hooks {
        self.hooks.as_ref().copied().unwrap_or_default()
    }

    /// Entries of each socket map: the kernel's minimum when the part does not run.
    pub fn map_entries(&self) -> u32 {
        if self.wanted && self.hooks.is_ok() {
            TCP_SOCKET_ENTRIES
        } else {
            1
        }
    }

    /// Loads and attaches the programs in the loaded `ebpf`, and takes their maps. None when
    /// the part is off: by the settings, or (one line says why) by the kernel.
    pub fn start(self, ebpf: &mut Ebpf) -> Option<TcpSockets> {
        if !self.wanted {
            return None;
        }
        match self.hooks.and_then(|_| attach(ebpf)) {
            Ok(s) => {
                info!(
                    "tcp health: retransmits and smoothed RTT of local sockets (tracepoints {TCP_RETRANSMIT_TRACEPOINT}, {TCP_RTT_TRACEPOINT})"
                );
                Some(s)
            }
            Err(e) => {
                warn!("{}", off_line(&e));
                None
            }
        }
    }
}

/// The one line that says the part is off, and why (`e` and its causes).
fn off_line(e: &dyn std::error::Error) -> String {
    let mut out = format!("tcp health off: {e}");
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(s.lines().next().unwrap_or_default());
        }
        cause = c.source();
    }
    out.push_str("; tcp_retransmits and tcp_rtt_us stay null, the rest runs");
    out
}

fn attach(ebpf: &mut Ebpf) -> Result<TcpSockets, TcpHealthOff> {
    let mut attached = Vec::new();
    for (name, tracepoint) in [
        (TCP_RTT_PROGRAM, TCP_RTT_TRACEPOINT),
        (TCP_RETRANSMIT_PROGRAM, TCP_RETRANSMIT_TRACEPOINT),
    ] {
        let refused = |source| TcpHealthOff::Program { tracepoint, source };
        let result = ebpf
            .program_mut(name)
            .ok_or(TcpHealthOff::Missing(name))
            .and_then(|p| <&mut RawTracePoint>::try_from(p).map_err(refused))
            .and_then(|p| {
                p.load()
                    .and_then(|()| p.attach(tracepoint).map(drop))
                    .map_err(refused)
            });
        if let Err(e) = result {
            // Neither runs: unload what was attached (its link goes with it).
            for name in attached {
                if let Some(p) = ebpf.program_mut(name)
                    && let Ok(p) = <&mut RawTracePoint>::try_from(p)
                {
                    let _ = p.unload();
                }
            }
            return Err(e);
        }
        attached.push(name);
    }
    Ok(TcpSockets::from_ebpf(ebpf)?)
}

/// What the programs need from the kernel `btf` describes: the socket offsets, and whether
/// both tracepoints are there and `tcp_retransmit_skb` passes `err`.
pub fn hooks(btf: &KernelBtf) -> Result<Hooks, BtfError> {
    let rtt_args = btf.tracepoint_args(TCP_RTT_TRACEPOINT)?.len();
    let retransmit_args = btf.tracepoint_args(TCP_RETRANSMIT_TRACEPOINT)?.len();
    // Both pass (sk, skb, …): a kernel that changed that is not read blindly.
    if rtt_args < 2 || retransmit_args < 2 {
        return Err(BtfError::Missing(format!(
            "socket argument of tracepoints {TCP_RTT_TRACEPOINT} and {TCP_RETRANSMIT_TRACEPOINT}"
        )));
    }
    let offsets = sock_offsets(btf)?;
    if !in_head(&offsets) {
        return Err(BtfError::Missing(format!(
            "socket fields within the first {SOCK_HEAD} bytes of struct sock ({offsets:?})"
        )));
    }
    Ok(Hooks {
        offsets,
        retransmit_err: retransmit_args >= 3,
    })
}

/// Whether every `sock_common` field the programs read lies in the head they read in one go
/// ([`SOCK_HEAD`] bytes).
fn in_head(o: &SockOffsets) -> bool {
    let mut fields = vec![
        (o.family, 2),
        (o.daddr, 4),
        (o.rcv_saddr, 4),
        (o.dport, 2),
        (o.num, 2),
    ];
    if o.v6_daddr != 0 {
        fields.extend([(o.v6_daddr, 16), (o.v6_rcv_saddr, 16)]);
    }
    fields.iter().all(|&(at, len)| at + len <= SOCK_HEAD)
}

/// Where the socket fields the programs read are, in the kernel `btf` describes: from the
/// start of `struct sock` (whose `__sk_common` is a `struct sock_common`) and of `struct
/// tcp_sock`. The IPv6 addresses are 0 on a kernel without IPv6.
pub fn sock_offsets(btf: &KernelBtf) -> Result<SockOffsets, BtfError> {
    let common = btf.offset_of("sock", "__sk_common")?;
    let at = |field| Ok::<_, BtfError>(common + btf.offset_of("sock_common", field)?);
    let v6 = |field| match at(field) {
        Err(BtfError::Missing(_)) => Ok(0),
        other => other,
    };
    Ok(SockOffsets {
        family: at("skc_family")?,
        daddr: at("skc_daddr")?,
        rcv_saddr: at("skc_rcv_saddr")?,
        dport: at("skc_dport")?,
        num: at("skc_num")?,
        v6_daddr: v6("skc_v6_daddr")?,
        v6_rcv_saddr: v6("skc_v6_rcv_saddr")?,
        srtt_us: btf.offset_of("tcp_sock", "srtt_us")?,
        skb_gso_segs: btf.offset_of("sk_buff", "cb")?
            + btf.offset_of("tcp_skb_cb", "tcp_gso_segs")?,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::capture::config::{Directions, FlowsConfig, IngressHook, TcAttach, XdpMode};

    #[test]
    fn socket_offsets_come_from_the_running_kernel() {
        let btf = KernelBtf::running().unwrap_or_else(|e| {
            panic!("{e}: the tests read the running kernel's BTF (CONFIG_DEBUG_INFO_BTF)")
        });
        let o = sock_offsets(&btf).unwrap();
        // The head of struct sock_common has not moved since 2.6: the address pair, the
        // hash, the port pair, the family.
        assert_eq!((o.daddr, o.rcv_saddr), (0, 4), "{o:?}");
        assert_eq!((o.dport, o.num, o.family), (12, 14, 16), "{o:?}");
        // The IPv6 pair follows, 16 bytes apart; srtt_us is deep in tcp_sock.
        assert!(o.v6_daddr > o.family, "{o:?}");
        assert_eq!(o.v6_rcv_saddr, o.v6_daddr + 16, "{o:?}");
        assert!(o.srtt_us > 1_000, "{o:?}");
        // cb is 48 bytes, in the first cache lines of sk_buff; tcp_gso_segs follows seq and
        // end_seq.
        let cb = btf.offset_of("sk_buff", "cb").unwrap();
        assert_eq!(o.skb_gso_segs, cb + 8, "{o:?}");
        // All but srtt_us within the head the programs read in one go.
        assert!(in_head(&o), "{o:?}");
        assert!(!in_head(&SockOffsets {
            v6_rcv_saddr: SOCK_HEAD - 8,
            ..o
        }));
        assert!(in_head(&SockOffsets {
            v6_daddr: 0,
            v6_rcv_saddr: SOCK_HEAD,
            ..o
        }));
    }

    fn cfg(tcp_health: bool) -> CaptureConfig {
        CaptureConfig {
            interfaces: vec![],
            mode: XdpMode::Auto,
            sample_rate: 1,
            snaplen: 192,
            ring_bytes: 1 << 20,
            directions: Directions::Both,
            ingress_hook: IngressHook::Xdp,
            tc_attach: TcAttach::Auto,
            packets: false,
            flows: Some(FlowsConfig {
                max_entries: 64,
                prefix: Some(0),
                events_bytes: None,
                dns_ports: [53, 0, 0, 0],
                handshakes: true,
                tcp_health,
                drops: false,
            }),
        }
    }

    #[test]
    fn the_probe_is_on_with_the_running_kernel_off_by_setting_or_without_btf() {
        let on = Probe::new(&cfg(true));
        assert!(on.hooks.is_ok(), "{:?}", on.hooks.as_ref().err());
        assert_eq!(on.map_entries(), TCP_SOCKET_ENTRIES);
        assert_eq!(on.hooks().offsets.family, 16);

        let off = Probe::new(&cfg(false));
        assert!(!off.wanted);
        assert_eq!((off.map_entries(), off.hooks()), (1, Hooks::default()));

        let missing = Path::new("/nonexistent/vmlinux");
        let e = KernelBtf::read(missing)
            .and_then(|b| hooks(&b))
            .map_err(TcpHealthOff::from)
            .unwrap_err();
        let line = off_line(&e);
        assert!(
            line.starts_with(
                "tcp health off: cannot read the kernel's BTF at /nonexistent/vmlinux"
            ),
            "{line}"
        );
        assert!(line.ends_with("the rest runs"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn the_tracepoints_are_found_with_their_arguments() {
        let btf = KernelBtf::running().unwrap();
        // (sk, skb), and from 6.17 on (sk, skb, err).
        assert_eq!(btf.tracepoint_args(TCP_RTT_TRACEPOINT).unwrap().len(), 2);
        let retransmit = btf
            .tracepoint_args(TCP_RETRANSMIT_TRACEPOINT)
            .unwrap()
            .len();
        assert!((2..=3).contains(&retransmit), "{retransmit}");
        let h = hooks(&btf).unwrap();
        assert_eq!(h.retransmit_err, retransmit == 3);
        let e = btf.tracepoint_args("no_such_tracepoint").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the kernel's BTF has no tracepoint no_such_tracepoint"
        );
    }
}
