//! `--tcp-health` (with `--mode flows|both`): the socket field offsets looked up in the
//! running kernel's BTF before load (Rust eBPF has no CO-RE), then the two tracing programs
//! loaded and attached — `fentry/tcp_rcv_established` and the BTF tracepoint
//! `tcp_retransmit_skb` (see `flowmetrix-ebpf/src/tcp.rs`).
//!
//! A kernel without what they need (no BTF, no such function or tracepoint, a program the
//! verifier refuses) turns the part off with one line naming what is missing; the capture
//! and the flow rows go on, their `tcp_retransmits` and `tcp_rtt_us` null. Both programs run
//! or neither: a retransmit count of 0 must mean none, not "not watched".

use std::path::PathBuf;

use aya::{
    Btf, Ebpf, Endianness,
    programs::{BtfTracePoint, FEntry},
};
use flowmetrix_common::tcp::{
    SockOffsets, TCP_RETRANSMIT_PROGRAM, TCP_RETRANSMIT_TRACEPOINT, TCP_RTT_FUNCTION,
    TCP_RTT_PROGRAM, TCP_SOCKET_ENTRIES,
};
use tracing::{info, warn};

use super::config::CaptureConfig;
use crate::{
    flows::tcp::{TcpSocketError, TcpSockets},
    kernel_btf::{BtfError, KernelBtf, VMLINUX},
};

/// Test hook: the BTF file to read instead of the running kernel's (one that is not there,
/// or lacks the socket structs, makes the start-up probe fail as on such a kernel).
pub const TCP_HEALTH_BTF_ENV: &str = "FLOWMETRIX_TCP_HEALTH_BTF";

/// Why the part is off.
#[derive(Debug, thiserror::Error)]
pub enum TcpHealthOff {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("cannot read the kernel's BTF at {path} for the programs")]
    LoadBtf {
        path: String,
        #[source]
        source: aya::BtfError,
    },
    #[error("the {what} was refused")]
    Program {
        what: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("the kernel object lacks the program {0}")]
    Missing(&'static str),
    #[error(transparent)]
    Maps(#[from] TcpSocketError),
}

/// The start-up probe: what to hand the programs at load, and whether they may run.
pub struct Probe {
    /// The BTF file read (None: the part is off by the settings).
    btf: Option<PathBuf>,
    offsets: Result<SockOffsets, TcpHealthOff>,
}

impl Probe {
    /// Looks the offsets up when `cfg` asks for the part.
    pub fn new(cfg: &CaptureConfig) -> Self {
        if !cfg.flows.is_some_and(|f| f.tcp_health) {
            return Self {
                btf: None,
                offsets: Ok(SockOffsets::default()),
            };
        }
        let path = std::env::var_os(TCP_HEALTH_BTF_ENV)
            .map_or_else(|| PathBuf::from(VMLINUX), PathBuf::from);
        let offsets = KernelBtf::read(&path)
            .and_then(|btf| sock_offsets(&btf))
            .map_err(TcpHealthOff::from);
        Self {
            btf: Some(path),
            offsets,
        }
    }

    /// The offsets for the programs' global (zeros when off: the programs are not loaded).
    pub fn offsets(&self) -> SockOffsets {
        self.offsets.as_ref().copied().unwrap_or_default()
    }

    /// Entries of each socket map: the kernel's minimum when the part does not run.
    pub fn map_entries(&self) -> u32 {
        if self.btf.is_some() && self.offsets.is_ok() {
            TCP_SOCKET_ENTRIES
        } else {
            1
        }
    }

    /// Loads and attaches the programs in the loaded `ebpf`, and takes their maps. None when
    /// the part is off: by the settings, or (one line says why) by the kernel.
    pub fn start(self, ebpf: &mut Ebpf) -> Option<TcpSockets> {
        let path = self.btf?;
        let started = self.offsets.and_then(|_| attach(ebpf, &path));
        match started {
            Ok(s) => {
                info!(
                    "tcp health: retransmits and smoothed RTT of local sockets ({TCP_RETRANSMIT_TRACEPOINT}, {TCP_RTT_FUNCTION})"
                );
                Some(s)
            }
            Err(e) => {
                warn!(
                    "tcp health off: {}; tcp_retransmits and tcp_rtt_us stay null, the rest runs",
                    chain(&e)
                );
                None
            }
        }
    }
}

/// `e` and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}

fn attach(ebpf: &mut Ebpf, path: &std::path::Path) -> Result<TcpSockets, TcpHealthOff> {
    let btf = if path == std::path::Path::new(VMLINUX) {
        Btf::from_sys_fs()
    } else {
        Btf::parse_file(path, Endianness::default())
    }
    .map_err(|source| TcpHealthOff::LoadBtf {
        path: path.display().to_string(),
        source,
    })?;
    let refused = |what: String| move |source| TcpHealthOff::Program { what, source };
    let rtt: &mut FEntry = ebpf
        .program_mut(TCP_RTT_PROGRAM)
        .ok_or(TcpHealthOff::Missing(TCP_RTT_PROGRAM))?
        .try_into()
        .map_err(refused(format!("fentry program on {TCP_RTT_FUNCTION}")))?;
    rtt.load(TCP_RTT_FUNCTION, &btf)
        .and_then(|()| rtt.attach().map(drop))
        .map_err(refused(format!("fentry program on {TCP_RTT_FUNCTION}")))?;
    let retransmit: &mut BtfTracePoint = ebpf
        .program_mut(TCP_RETRANSMIT_PROGRAM)
        .ok_or(TcpHealthOff::Missing(TCP_RETRANSMIT_PROGRAM))?
        .try_into()
        .map_err(refused(format!(
            "BTF tracepoint program on {TCP_RETRANSMIT_TRACEPOINT}"
        )))?;
    let attached = retransmit
        .load(TCP_RETRANSMIT_TRACEPOINT, &btf)
        .and_then(|()| retransmit.attach().map(drop));
    if let Err(e) = attached {
        // Neither runs: unload the first (its link goes with it).
        if let Some(p) = ebpf.program_mut(TCP_RTT_PROGRAM)
            && let Ok(rtt) = <&mut FEntry>::try_from(p)
        {
            let _ = rtt.unload();
        }
        return Err(refused(format!(
            "BTF tracepoint program on {TCP_RETRANSMIT_TRACEPOINT}"
        ))(e));
    }
    Ok(TcpSockets::from_ebpf(ebpf)?)
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
                tcp_health,
            }),
        }
    }

    #[test]
    fn the_probe_is_on_with_the_running_kernel_off_by_setting_or_without_btf() {
        let on = Probe::new(&cfg(true));
        assert!(on.offsets.is_ok());
        assert_eq!(on.map_entries(), TCP_SOCKET_ENTRIES);
        assert_eq!(on.offsets().family, 16);

        let off = Probe::new(&cfg(false));
        assert!(off.btf.is_none());
        assert_eq!(
            (off.map_entries(), off.offsets()),
            (1, SockOffsets::default())
        );

        let missing = Path::new("/nonexistent/vmlinux");
        let e = KernelBtf::read(missing)
            .and_then(|b| sock_offsets(&b))
            .map_err(TcpHealthOff::from)
            .unwrap_err();
        let line = chain(&e);
        assert!(
            line.starts_with("cannot read the kernel's BTF at /nonexistent/vmlinux"),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }
}
