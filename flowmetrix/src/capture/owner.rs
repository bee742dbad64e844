//! Who holds an interface's XDP hook: asked of the kernel when attaching fails, so that the
//! error names the program (and the process) instead of saying "File exists". And who
//! holds a TC hook with a program of ours: the kernel lets a second TCX program attach
//! beside the first, so a second collector would write every packet twice; it is asked
//! before attaching, and refused.

use std::{ffi::OsStr, os::unix::ffi::OsStrExt as _};

use aya::programs::{ProgramInfo, links::LinkType, loaded_links, loaded_programs};

use rtnetlink::{
    packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload},
    packet_route::{
        RouteNetlinkMessage,
        link::{LinkAttribute, LinkMessage, LinkXdp},
    },
    sys::{Socket, protocols::NETLINK_ROUTE},
};

use super::error::CaptureError;

pub struct XdpOwner {
    id: u32,
    name: String,
    holder: Holder,
}

enum Holder {
    /// A bpf_link that this process holds open (another collector).
    Process { pid: u32, comm: String },
    /// A bpf_link no process holds: pinned in bpffs.
    Pinned { link: u32 },
    /// Attached through netlink (`ip link set dev X xdp obj …`).
    Netlink,
}

impl XdpOwner {
    pub fn error(&self, iface: &str) -> CaptureError {
        let hint = match &self.holder {
            Holder::Process { pid, comm } => format!(
                ": is another collector running? (process {pid}, {comm}, holds it: stop it and the program detaches)"
            ),
            Holder::Pinned { link } => format!(
                ": is another collector running? (bpf_link {link} holds it, pinned: detach it with `bpftool link detach id {link}`)"
            ),
            Holder::Netlink => {
                format!(": detach it with `ip link set dev {iface} xdp off`")
            }
        };
        CaptureError::AlreadyAttached {
            iface: iface.to_owned(),
            program: self.name.clone(),
            id: self.id,
            hint,
        }
    }
}

/// The XDP program attached to interface `ifindex` (in this network namespace), if any.
pub fn attached_program(ifindex: u32) -> Option<XdpOwner> {
    let id = xdp_prog_id(ifindex)?;
    let name = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .as_ref()
        .and_then(ProgramInfo::name_as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or("unnamed")
        .to_owned();
    let link = loaded_links()
        .filter_map(Result::ok)
        .find(|l| l.program_id() == id && matches!(l.link_type(), Ok(LinkType::Xdp)))
        .map(|l| l.id());
    let holder = match link {
        Some(link) => link_holder(link).map_or(Holder::Pinned { link }, |(pid, comm)| {
            Holder::Process { pid, comm }
        }),
        None => Holder::Netlink,
    };
    Some(XdpOwner { id, name, holder })
}

/// The process holding bpf_link `link` open: its pid and command name.
fn link_holder(link: u32) -> Option<(u32, String)> {
    let want = format!("link_id:\t{link}\n");
    bpf_link_holder(|_, _| true, |info| info.contains(&want))
}

/// The first process `looked_at(pid, its /proc dir)` accepts that holds a bpf_link whose
/// fdinfo `wanted` accepts: its pid and command name.
fn bpf_link_holder(
    looked_at: impl Fn(u32, &std::path::Path) -> bool,
    wanted: impl Fn(&str) -> bool,
) -> Option<(u32, String)> {
    for proc in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let Some(pid) = proc
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !looked_at(pid, &proc.path()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            let is_link = std::fs::read_link(fd.path())
                .is_ok_and(|t| t.as_os_str() == OsStr::from_bytes(b"anon_inode:bpf_link"));
            if !is_link {
                continue;
            }
            let info = proc.path().join("fdinfo").join(fd.file_name());
            if std::fs::read_to_string(info).is_ok_and(|i| wanted(&i)) {
                let comm = std::fs::read_to_string(proc.path().join("comm"))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_default();
                return Some((pid, comm));
            }
        }
    }
    None
}

/// The kernel's numbers of the TCX hooks (`enum bpf_attach_type`).
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// Another collector on a TC hook: its process, and the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcOwner {
    pub pid: u32,
    pub comm: String,
    pub program: String,
}

/// Another process (in this network namespace) holding a TCX link of a program named
/// `program` on interface `ifindex`'s ingress or `egress` hook: a collector already
/// capturing there.
pub fn tcx_holder(ifindex: u32, egress: bool, program: &str) -> Option<TcOwner> {
    // The kernel keeps 15 characters of a program's name.
    let short = &program[..program.len().min(15)];
    let ids: Vec<u32> = loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(short))
        .map(|p| p.id())
        .collect();
    if ids.is_empty() {
        return None;
    }
    let attach_type = if egress {
        BPF_TCX_EGRESS
    } else {
        BPF_TCX_INGRESS
    };
    let me = std::process::id();
    let my_net = std::fs::read_link("/proc/self/ns/net").ok();
    // An ifindex means an interface in one network namespace only.
    let (pid, comm) = bpf_link_holder(
        |pid, proc| pid != me && std::fs::read_link(proc.join("ns/net")).ok() == my_net,
        |info| tcx_link_matches(info, &ids, ifindex, attach_type),
    )?;
    Some(TcOwner {
        pid,
        comm,
        program: short.to_owned(),
    })
}

/// Whether a bpf_link's fdinfo is a TCX link of one of programs `ids` on `ifindex`'s
/// `attach_type` hook.
fn tcx_link_matches(fdinfo: &str, ids: &[u32], ifindex: u32, attach_type: u32) -> bool {
    let field = |name: &str| {
        fdinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim())
        })
    };
    // `attach_type:\t47 (egress)` on some kernels, a bare number on others.
    let number = |name: &str| {
        field(name)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok())
    };
    field("link_type") == Some("tcx")
        && number("prog_id").is_some_and(|id| ids.contains(&id))
        && number("ifindex") == Some(ifindex)
        && number("attach_type") == Some(attach_type)
}

/// The id of the XDP program on `ifindex`, asked with an RTM_GETLINK request.
fn xdp_prog_id(ifindex: u32) -> Option<u32> {
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    header.sequence_number = 1;
    let mut req = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(link)),
    );
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    let socket = Socket::new(NETLINK_ROUTE).ok()?;
    let timeout = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: a socket option on a socket we own, with a valid timeval and its length.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    if socket.send(&buf, 0).ok()? != buf.len() {
        return None;
    }
    let mut reply = Vec::with_capacity(64 << 10);
    socket.recv(&mut reply, 0).ok()?;
    parse_link_reply(&reply)
}

/// The XDP program id in an RTM_NEWLINK reply (none for an error or no program).
fn parse_link_reply(msg: &[u8]) -> Option<u32> {
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(msg).ok()?;
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = reply.payload else {
        return None;
    };
    let xdp = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Xdp(xdp) => Some(xdp),
        _ => None,
    })?;
    let mut ids = [None; 3];
    for x in xdp {
        let (slot, id) = match x {
            LinkXdp::ProgId(id) => (0, id),
            LinkXdp::DrvProgId(id) => (1, id),
            LinkXdp::SkbProgId(id) => (2, id),
            _ => continue,
        };
        ids[slot] = Some(*id).filter(|&id| id != 0);
    }
    ids.into_iter().flatten().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The attribute numbers of the kernel's if_link.h, to build a reply by hand.
    const IFLA_XDP: u16 = 43;
    const IFLA_XDP_PROG_ID: u16 = 4;
    const IFLA_XDP_SKB_PROG_ID: u16 = 6;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(4 + payload.len() as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    fn reply(attributes: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(32 + attributes.len() as u32).to_ne_bytes());
        v.extend_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
        v.extend_from_slice(&[0; 10]);
        v.extend_from_slice(&[0; 16]);
        v.extend_from_slice(attributes);
        v
    }

    #[test]
    fn a_tcx_link_is_matched_by_program_interface_and_hook() {
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\nlink_type:\ttcx\nlink_id:\t9\nprog_tag:\t0123456789abcdef\nprog_id:\t31\nifindex:\t4\nattach_type:\t47 (egress)\n";
        assert!(tcx_link_matches(info, &[30, 31], 4, BPF_TCX_EGRESS));
        assert!(
            !tcx_link_matches(info, &[30], 4, BPF_TCX_EGRESS),
            "another program"
        );
        assert!(
            !tcx_link_matches(info, &[31], 5, BPF_TCX_EGRESS),
            "another interface"
        );
        assert!(
            !tcx_link_matches(info, &[31], 4, BPF_TCX_INGRESS),
            "another hook"
        );
        let bare = info.replace("47 (egress)", "47");
        assert!(tcx_link_matches(&bare, &[31], 4, BPF_TCX_EGRESS));
        let xdp = info.replace("link_type:\ttcx", "link_type:\txdp");
        assert!(!tcx_link_matches(&xdp, &[31], 4, BPF_TCX_EGRESS), "not TCX");
    }

    #[test]
    fn the_program_id_is_read_from_the_nested_xdp_attribute() {
        let xdp = [attr(2, &[1]), attr(IFLA_XDP_PROG_ID, &42u32.to_ne_bytes())].concat();
        let msg = reply(&[attr(3, b"veth0\0"), attr(IFLA_XDP | 0x8000, &xdp)].concat());
        assert_eq!(parse_link_reply(&msg), Some(42));
        let skb_only = attr(IFLA_XDP, &attr(IFLA_XDP_SKB_PROG_ID, &7u32.to_ne_bytes()));
        assert_eq!(parse_link_reply(&reply(&skb_only)), Some(7));
        let none = attr(IFLA_XDP, &attr(2, &[0]));
        assert_eq!(parse_link_reply(&reply(&none)), None);
        assert_eq!(parse_link_reply(&reply(&attr(3, b"lo\0"))), None);
        assert_eq!(parse_link_reply(&msg[..20]), None, "short");
    }
}
