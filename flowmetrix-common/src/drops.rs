//! Drops by reason (`--drops on`, in `--mode flows|both`): what the `skb:kfree_skb` program
//! (`flowmetrix-ebpf/src/drops.rs`) and the collector share.
//!
//! The program keys every dropped packet the way the XDP/TC programs key a flow
//! ([`FlowKey`]: interface, direction, addresses, ports, protocol; no VLAN) with its reason,
//! and counts it in `DROPS{generation & 1}` ([`DropKey`] → [`DropValue`]), the flow maps'
//! generation (read from `FLOWCFG`), so a drop is in its packet's interval. Every drop is also added
//! to its reason's running total in `DROPREASONS` (never cleared). What the maps cannot take
//! is counted per CPU in `DROPSTATS` ([`DROP_STAT_KEY_FULL`], …).
//!
//! The program cannot be relocated (no CO-RE for Rust eBPF): the byte offsets of the
//! `sk_buff` and `net_device` fields it reads come from the running kernel's BTF at start,
//! in the load-time global `DROP_OFFSETS` (indices `OFF_*`), and the reason values that are
//! not drops in `DROP_SKIP`.

use crate::flow_key::FlowKey;

/// The program (15 characters at most, the kernel's limit on a program's name).
pub const DROP_PROGRAM_NAME: &str = "flowmetrix_drop";
/// The tracepoint it attaches to (BTF-enabled raw tracepoint, `tp_btf/kfree_skb`).
pub const DROP_TRACEPOINT: &str = "kfree_skb";
/// The two per-interval maps ([`DropKey`] → [`DropValue`]).
pub const DROP_MAPS: [&str; 2] = ["DROPS0", "DROPS1"];
/// Entries of each of them: flows × reasons one interval holds; more are counted as full.
pub const DROP_MAX_ENTRIES: u32 = 16_384;
/// Reason value → drops since start (u64), shared, atomic adds; never cleared.
pub const DROP_REASONS_MAP: &str = "DROPREASONS";
/// Reasons [`DROP_REASONS_MAP`] holds (the kernel names ~120 core ones).
pub const DROP_REASONS_MAX: u32 = 1024;
/// Per-CPU u64 counters, indexed by `DROP_STAT_*`.
pub const DROP_STATS_MAP: &str = "DROPSTATS";
/// Drops the program saw (reasons that are drops only).
pub const DROP_STAT_SEEN: u32 = 0;
/// Drops the full per-interval map could not take (counted in their reason's total).
pub const DROP_STAT_KEY_FULL: u32 = 1;
/// Drops whose reason the full reasons map could not take.
pub const DROP_STAT_REASON_FULL: u32 = 2;
/// Drops on an interface the collector does not watch (or of another network namespace):
/// counted in their reason's total only.
pub const DROP_STAT_OTHER_IF: u32 = 3;
pub const DROP_STATS: u32 = 4;

/// The global of byte offsets (`[u32; OFFSETS]`), indexed by `OFF_*`.
pub const DROP_OFFSETS_GLOBAL: &str = "DROP_OFFSETS";
pub const OFF_SKB_LEN: usize = 0;
pub const OFF_SKB_PROTOCOL: usize = 1;
pub const OFF_SKB_DEV: usize = 2;
pub const OFF_SKB_HEAD: usize = 3;
pub const OFF_SKB_DATA: usize = 4;
pub const OFF_SKB_TAIL: usize = 5;
pub const OFF_SKB_NETWORK_HEADER: usize = 6;
pub const OFF_SKB_MAC_HEADER: usize = 7;
pub const OFF_SKB_IIF: usize = 8;
pub const OFF_DEV_IFINDEX: usize = 9;
/// `net_device.nd_net` (its `net` pointer is its first member).
pub const OFF_DEV_NET: usize = 10;
/// `net.ns.inum`: the network namespace's inode number.
pub const OFF_NET_INUM: usize = 11;
/// The collector's network namespace inode number (0: not checked).
pub const OFF_NETNS_INUM: usize = 12;
/// `sk_buff._skb_refdst` (the route, its low bit a flag) and `dst_entry.dev`: the device
/// of a packet this host sends that has none yet (dropped in a firewall's OUTPUT chain).
pub const OFF_SKB_REFDST: usize = 13;
pub const OFF_DST_DEV: usize = 14;
/// Where the block of `sk_buff` fields read at once starts (`len`, `protocol`, `head`,
/// `data`, `tail`, the header offsets, `skb_iif`: one read of [`SKB_BLOCK`] bytes, not
/// eight); [`NO_BLOCK`] when they do not fit in it (each is then read on its own).
pub const OFF_BLOCK: usize = 15;
/// `sk_buff.vlan_all`: non-zero when the kernel took a VLAN tag out of the packet into the
/// skb (4 bytes that were on the wire, as the flow counts them); [`NO_FIELD`] on a kernel
/// without it.
pub const OFF_SKB_VLAN: usize = 16;
pub const OFFSETS: usize = 17;
pub const NO_FIELD: u32 = u32::MAX;
pub const SKB_BLOCK: usize = 128;
pub const NO_BLOCK: u32 = u32::MAX;
/// Bytes of the packet from its network header read at once (the parser reads further
/// ones on their own).
pub const HEADER_BLOCK: usize = 128;
/// The global of the reason values that are not drops (`[u32; SKIPS]`; `u32::MAX`: unused):
/// `NOT_DROPPED_YET`, `CONSUMED`, `NOT_SPECIFIED` as the running kernel numbers them.
pub const DROP_SKIP_GLOBAL: &str = "DROP_SKIP";
pub const SKIPS: usize = 3;

// The kernel's limit on a program's name; every index inside its array.
const _: () = {
    assert!(DROP_PROGRAM_NAME.len() <= 15);
    assert!(OFF_SKB_VLAN < OFFSETS && DROP_STAT_OTHER_IF < DROP_STATS);
};

/// A dropped packet's flow and reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DropKey {
    /// As the XDP/TC programs key it, without the VLAN id: ingress on the interface it came
    /// in by (the skb has an input interface and is still on it), egress on the one it was
    /// leaving by.
    pub flow: FlowKey,
    /// `enum skb_drop_reason` (a subsystem's reason from 1 << 16 on).
    pub reason: u32,
    pub _pad: u32,
}

/// A [`DropKey`]'s drops in one interval.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropValue {
    pub packets: u64,
    /// The packet's length as dropped, with its link header when the skb still has it.
    pub bytes: u64,
    /// `bpf_ktime_get_boot_ns()` of the first and last drop (the flow maps' clock).
    pub first_ns: u64,
    pub last_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn drop_layouts_are_fixed() {
        assert_eq!(size_of::<FlowKey>(), 48);
        assert_eq!(size_of::<DropKey>(), 56);
        assert_eq!(offset_of!(DropKey, reason), 48);
        assert_eq!(size_of::<DropValue>(), 32);
        assert_eq!(offset_of!(DropValue, last_ns), 24);
    }
}
