//! Local TCP sockets' health (`--tcp-health`): retransmits (raw tracepoint
//! `tcp_retransmit_skb`) and smoothed RTT (raw tracepoint `tcp_probe`, fired by
//! `tcp_rcv_established`), counted per socket in one of two hash maps,
//! `TCPSOCK{generation & 1}`, under the flow maps' generation (read from the same config
//! map), so userspace collects them at the same flip and grace period as the flows.
//!
//! Rust eBPF has no CO-RE: the byte offsets of the socket fields the programs read come from
//! the running kernel's BTF at start, handed over in the load-time global [`SockOffsets`].

/// Names of the two socket maps (`TCPSOCK{generation & 1}`).
pub const TCP_SOCKET_MAPS: [&str; 2] = ["TCPSOCK0", "TCPSOCK1"];
/// Name of the per-CPU array counting what the full socket maps could not take, at
/// [`TCP_STAT_FULL`].
pub const TCP_STATS_MAP: &str = "TCPSTATS";
/// [`TCP_STATS_MAP`] entries.
pub const TCP_STAT_FULL: u32 = 0;
pub const TCP_STATS_ENTRIES: u32 = 1;
/// Name of the load-time global holding the [`SockOffsets`].
pub const TCP_OFFSETS_GLOBAL: &str = "TCP_OFFSETS";
/// Entries of each socket map: sockets that saw a segment or a retransmit in one interval.
pub const TCP_SOCKET_ENTRIES: u32 = 16_384;
/// The raw tracepoint program on `tcp_probe`, which `tcp_rcv_established` fires for every
/// segment a local socket takes in the established state.
pub const TCP_RTT_PROGRAM: &str = "tcp_rtt";
/// The tracepoint it is attached to.
pub const TCP_RTT_TRACEPOINT: &str = "tcp_probe";
/// The raw tracepoint program on `tcp_retransmit_skb`.
pub const TCP_RETRANSMIT_PROGRAM: &str = "tcp_retransmit";
/// The tracepoint it is attached to.
pub const TCP_RETRANSMIT_TRACEPOINT: &str = "tcp_retransmit_skb";
/// Name of the load-time global that says `tcp_retransmit_skb` has an `err` argument
/// (6.17+; u32, 0 or 1).
pub const TCP_RETRANSMIT_ERR_GLOBAL: &str = "TCP_RETRANSMIT_ERR";

/// `AF_INET` and `AF_INET6`, as `sock_common.skc_family` holds them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Bytes of the head of `struct sock` (its `sock_common`) the programs read in one go: every
/// socket field but `srtt_us` must lie inside (they do on every kernel so far, the IPv6
/// addresses ending at 88).
pub const SOCK_HEAD: u32 = 96;

/// Byte offsets, from the start of `struct sock` (`struct tcp_sock` starts with it), of the
/// fields the programs read. Addresses in network order, `skc_num` in host order,
/// `skc_dport` in network order. `v6_*` are 0 on a kernel without IPv6 (its sockets are then
/// skipped); every other offset is non-zero except `daddr`, which is 0 on every kernel so far.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    /// `skc_family` (u16).
    pub family: u32,
    /// `skc_daddr` (remote IPv4).
    pub daddr: u32,
    /// `skc_rcv_saddr` (local IPv4).
    pub rcv_saddr: u32,
    /// `skc_dport` (remote port, network order).
    pub dport: u32,
    /// `skc_num` (local port, host order).
    pub num: u32,
    /// `skc_v6_daddr` (remote IPv6).
    pub v6_daddr: u32,
    /// `skc_v6_rcv_saddr` (local IPv6).
    pub v6_rcv_saddr: u32,
    /// `tcp_sock.srtt_us` (smoothed RTT in µs, shifted left by 3).
    pub srtt_us: u32,
    /// From the start of `struct sk_buff`: `tcp_skb_cb.tcp_gso_segs` in its `cb` (u16, the
    /// segments the skb holds: what one retransmit event sent).
    pub skb_gso_segs: u32,
    pub _pad: u32,
}

/// A socket, local → remote, as the programs read it: ports in host order, IPv4 addresses in
/// the first four bytes (the rest zero), IPv6 ones whole (an IPv4-mapped address of a
/// dual-stack socket as the kernel holds it: userspace writes it as IPv4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpSocketKey {
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

impl TcpSocketKey {
    pub const ZERO: Self = Self {
        family: 0,
        local_port: 0,
        remote_port: 0,
        _pad: 0,
        local_addr: [0; 16],
        remote_addr: [0; 16],
    };
}

/// A socket's figures in one interval.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSocketValue {
    /// Retransmitted segments: each `tcp_retransmit_skb` event adds the segments of its skb
    /// (what the kernel's own `total_retrans` and `TcpRetransSegs` add).
    pub retransmits: u32,
    /// The largest smoothed RTT seen (`srtt_us >> 3`, µs); 0: none measured yet.
    pub rtt_us: u32,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, #[repr(C)], no padding (checked by the layout tests).
    unsafe impl aya::Pod for super::SockOffsets {}
    unsafe impl aya::Pod for super::TcpSocketKey {}
    unsafe impl aya::Pod for super::TcpSocketValue {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn socket_key_and_value_layout_is_fixed() {
        assert_eq!(size_of::<TcpSocketKey>(), 40);
        assert_eq!(offset_of!(TcpSocketKey, family), 0);
        assert_eq!(offset_of!(TcpSocketKey, local_port), 2);
        assert_eq!(offset_of!(TcpSocketKey, remote_port), 4);
        assert_eq!(offset_of!(TcpSocketKey, local_addr), 8);
        assert_eq!(offset_of!(TcpSocketKey, remote_addr), 24);
        assert_eq!(size_of::<TcpSocketValue>(), 8);
        assert_eq!(offset_of!(TcpSocketValue, rtt_us), 4);
    }

    #[test]
    fn sock_offsets_layout_is_fixed() {
        assert_eq!(size_of::<SockOffsets>(), 40);
        assert_eq!(offset_of!(SockOffsets, skb_gso_segs), 32);
        assert_eq!(offset_of!(SockOffsets, family), 0);
        assert_eq!(offset_of!(SockOffsets, v6_daddr), 20);
        assert_eq!(offset_of!(SockOffsets, srtt_us), 28);
    }
}
