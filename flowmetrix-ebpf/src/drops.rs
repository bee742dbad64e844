//! Drops by reason (`--drops on`): a BTF-enabled raw tracepoint on `skb:kfree_skb` (args:
//! skb, location, reason, …). Every packet the kernel frees with a reason that is a drop
//! (not one of the `DROP_SKIP` values: `NOT_DROPPED_YET`, `CONSUMED`, `NOT_SPECIFIED`) is
//! added to its reason's total, then keyed like a flow and counted in
//! `DROPS{generation & 1}` when it belongs to an interface the collector watches (see
//! `flowmetrix_common::drops`).
//!
//! The skb is read with `bpf_probe_read_kernel` at the offsets userspace read from the
//! running kernel's BTF (`DROP_OFFSETS`): Rust eBPF has no CO-RE. Direction and interface:
//! an skb that came in by an interface and is still on it (`skb_iif` = `dev->ifindex`) is
//! an ingress drop there; any other skb (sent by this host, or forwarded and already on its
//! way out) an egress drop on `skb->dev`, or, before it has one (a firewall's OUTPUT
//! chain), on its route's device. The key is read from the network header by the flow
//! parser's `parse_ip`, so it is the XDP/TC key of that packet but for the VLAN id (the
//! tag is gone by then).
//!
//! Only `kfree_skb` runs it: a packet that is not dropped never pays for it. The kernel
//! does not nest a tracing program on a CPU (a drop while it runs there is skipped and
//! counted as the program's `recursion_misses`), so one per-CPU scratch buffer
//! (`DROPBUF`) serves every run.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering::Relaxed, atomic_xadd},
    ptr::read_volatile,
};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_probe_read_kernel,
        generated::{self as helper, bpf_ktime_get_boot_ns},
    },
    macros::{btf_tracepoint, map},
    maps::{HashMap, PerCpuArray},
    programs::BtfTracePointContext,
};
use flowmetrix_common::{
    Direction,
    drops::{
        DROP_MAX_ENTRIES, DROP_REASONS_MAX, DROP_STAT_KEY_FULL, DROP_STAT_OTHER_IF,
        DROP_STAT_REASON_FULL, DROP_STAT_SEEN, DROP_STATS, DropKey, DropValue, HEADER_BLOCK,
        NO_BLOCK, NO_FIELD, OFF_BLOCK, OFF_DEV_IFINDEX, OFF_DEV_NET, OFF_DST_DEV, OFF_NET_INUM,
        OFF_NETNS_INUM, OFF_SKB_DATA, OFF_SKB_DEV, OFF_SKB_HEAD, OFF_SKB_IIF, OFF_SKB_LEN,
        OFF_SKB_MAC_HEADER, OFF_SKB_NETWORK_HEADER, OFF_SKB_PROTOCOL, OFF_SKB_REFDST, OFF_SKB_TAIL,
        OFF_SKB_VLAN, OFFSETS, SKB_BLOCK, SKIPS,
    },
    flow_key::{FLOW_CFG_GENERATION, FlowKey, Frame, MAX_L4_OFFSET, parse_ip},
};

use crate::{IFSLOT, flows::FLOWCFG};

/// Byte offsets of the fields read (`OFF_*`), from the running kernel's BTF; set at load.
#[unsafe(no_mangle)]
static DROP_OFFSETS: [u32; OFFSETS] = [0; OFFSETS];

/// Reason values that are not drops; set at load.
#[unsafe(no_mangle)]
static DROP_SKIP: [u32; SKIPS] = [u32::MAX; SKIPS];

#[map]
static DROPS0: HashMap<DropKey, DropValue> = HashMap::with_max_entries(DROP_MAX_ENTRIES, 0);
#[map]
static DROPS1: HashMap<DropKey, DropValue> = HashMap::with_max_entries(DROP_MAX_ENTRIES, 0);
#[map]
static DROPREASONS: HashMap<u32, u64> = HashMap::with_max_entries(DROP_REASONS_MAX, 0);

/// Bytes after the header copy, so that an access at a masked offset (below 128) of up to
/// 40 bytes (an IPv6 header) stays inside the value in the verifier's eyes.
const SLACK: usize = 64;

/// Per CPU: the copies of the skb's fields ([`SKB_BLOCK`] bytes) and of its headers
/// ([`HEADER_BLOCK`]) one run reads from.
#[map]
static DROPBUF: PerCpuArray<[u64; (SKB_BLOCK + HEADER_BLOCK + SLACK) / 8]> =
    PerCpuArray::with_max_entries(1, 0);
#[map]
static DROPSTATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_STATS, 0);

#[btf_tracepoint(function = "kfree_skb")]
pub fn flowmetrix_drop(ctx: BtfTracePointContext) -> i32 {
    let reason = ctx.arg::<u64>(2) as u32;
    // SAFETY: reading a global set before load.
    let skip = unsafe { read_volatile(&DROP_SKIP) };
    if reason == skip[0] || reason == skip[1] || reason == skip[2] {
        return 0;
    }
    let skb = ctx.arg::<u64>(0) as usize;
    if skb == 0 {
        return 0;
    }
    stat(DROP_STAT_SEEN);
    total(reason);
    // SAFETY: reading a global set before load.
    let off = unsafe { read_volatile(&DROP_OFFSETS) };
    let Some((flow, bytes)) = key_of(skb, &off) else {
        stat(DROP_STAT_OTHER_IF);
        return 0;
    };
    let key = DropKey {
        flow,
        reason,
        _pad: 0,
    };
    // The flow maps' generation: a drop is in the interval its packet was counted in.
    let generation = FLOWCFG.get(FLOW_CFG_GENERATION).copied().unwrap_or(0);
    let map = if generation & 1 == 0 {
        &DROPS0
    } else {
        &DROPS1
    };
    // SAFETY: no arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if !add(map, &key, bytes, now) {
        stat(DROP_STAT_KEY_FULL);
    }
    0
}

/// A `T` read from kernel memory at `p`.
#[inline(always)]
fn read<T: Copy>(p: usize) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one fails, never faults.
    unsafe { bpf_probe_read_kernel(p as *const T) }.ok()
}

/// The skb's linear data from its network header on: its first [`HEADER_BLOCK`] bytes
/// copied at once into `copy` (where they could be), the rest read where it is.
struct Skb {
    base: usize,
    len: usize,
    /// The copy (a per-CPU map value), 0: none.
    copy: usize,
}

impl Frame for Skb {
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if off > MAX_L4_OFFSET + 64 || off + N > self.len {
            return None;
        }
        if self.copy != 0 && off + N <= HEADER_BLOCK {
            // SAFETY: inside the map value: `off + N` ≤ HEADER_BLOCK (checked just above),
            // and the verifier sees `off` < HEADER_BLOCK, with [`SLACK`] bytes after.
            return Some(unsafe {
                ((self.copy + below_block(off)) as *const [u8; N]).read_unaligned()
            });
        }
        read::<[u8; N]>(self.base + off)
    }
}

/// The `sk_buff` fields read from the block: the copy at `block` (a map value) of the skb's
/// bytes from `lo` on, or each read where it is (`lo` is [`NO_BLOCK`]).
struct Fields {
    skb: usize,
    lo: u32,
    block: usize,
}

impl Fields {
    #[inline(always)]
    fn get<T: Copy>(&self, off: u32) -> Option<T> {
        if self.lo == NO_BLOCK || self.block == 0 {
            return read::<T>(self.skb + off as usize);
        }
        let rel = off.wrapping_sub(self.lo) as usize;
        if rel > SKB_BLOCK - size_of::<T>() {
            return None;
        }
        // SAFETY: inside the map value (checked just above; the verifier sees `rel` <
        // SKB_BLOCK).
        Some(unsafe { ((self.block + below_block(rel)) as *const T).read_unaligned() })
    }
}

/// `i`, which the caller checked to be below 128 ([`SKB_BLOCK`], [`HEADER_BLOCK`]), masked
/// so that the verifier sees it too: LLVM would drop a mask written in Rust after the
/// caller's check, and the verifier does not always carry that check over to the register
/// the access uses.
#[inline(always)]
fn below_block(mut i: usize) -> usize {
    const _: () = assert!(SKB_BLOCK == 128 && HEADER_BLOCK == 128);
    // SAFETY: arithmetic on a register.
    unsafe { core::arch::asm!("{i} &= 127", i = inout(reg) i, options(pure, nomem, nostack)) };
    i
}

/// Copies `len` bytes of kernel memory at `src` to `dst`; false when the kernel refused.
#[inline(always)]
fn copy(dst: usize, src: usize, len: u32) -> bool {
    // SAFETY: `dst` is a map value of at least `len` bytes; the helper checks `src`.
    unsafe { helper::bpf_probe_read_kernel(dst as *mut c_void, len, src as *const c_void) == 0 }
}

/// The dropped packet's flow key and length, on a watched interface of our namespace.
#[inline(always)]
fn key_of(skb: usize, off: &[u32; OFFSETS]) -> Option<(FlowKey, u64)> {
    let at = |i: usize| skb + off[i] as usize;
    let mut dev = read::<u64>(at(OFF_SKB_DEV))? as usize;
    if dev == 0 {
        // Sent by this host, not on a device yet (a firewall's OUTPUT chain): the route's.
        let dst = read::<u64>(at(OFF_SKB_REFDST))? as usize & !1;
        if dst == 0 {
            return None;
        }
        dev = read::<u64>(dst + off[OFF_DST_DEV] as usize)? as usize;
        if dev == 0 {
            return None;
        }
    }
    let dev_ifindex = read::<i32>(dev + off[OFF_DEV_IFINDEX] as usize)? as u32;
    // The block of skb fields, at once.
    let buf = DROPBUF.get_ptr_mut(0).map(|b| b as usize);
    let lo = off[OFF_BLOCK];
    let block = match buf {
        Some(b) if lo != NO_BLOCK && copy(b, skb + lo as usize, SKB_BLOCK as u32) => b,
        _ => 0,
    };
    let f = Fields { skb, lo, block };
    let iif = f.get::<i32>(off[OFF_SKB_IIF])? as u32;
    let (ifindex, dir) = if iif != 0 && iif == dev_ifindex {
        (iif, Direction::Ingress)
    } else {
        (dev_ifindex, Direction::Egress)
    };
    if IFSLOT.get(ifindex).copied().unwrap_or(0) == 0 {
        return None;
    }
    let netns = off[OFF_NETNS_INUM];
    if netns != 0 {
        let net = read::<u64>(dev + off[OFF_DEV_NET] as usize)? as usize;
        if net == 0 || read::<u32>(net + off[OFF_NET_INUM] as usize)? != netns {
            return None;
        }
    }
    let len: u32 = f.get(off[OFF_SKB_LEN])?;
    let head = f.get::<u64>(off[OFF_SKB_HEAD])? as usize;
    let data = f.get::<u64>(off[OFF_SKB_DATA])? as usize;
    let tail = f.get::<u32>(off[OFF_SKB_TAIL])? as usize;
    let network = usize::from(f.get::<u16>(off[OFF_SKB_NETWORK_HEADER])?);
    let mac: u16 = f.get(off[OFF_SKB_MAC_HEADER])?;
    // With its link header when the skb still has one in front of `data`, and the VLAN tag
    // the kernel took out of it.
    let mut bytes = u64::from(len);
    let vlan = off[OFF_SKB_VLAN];
    if vlan != NO_FIELD && f.get::<u32>(vlan)? != 0 {
        bytes += 4;
    }
    if mac != u16::MAX && head + usize::from(mac) < data {
        bytes += (data - head - usize::from(mac)) as u64;
    }
    let ether_type = u16::from_be(f.get::<u16>(off[OFF_SKB_PROTOCOL])?);
    let mut key = FlowKey::ZERO;
    key.ether_type = ether_type;
    if tail > network {
        let base = head + network;
        let headers = buf.map_or(0, |b| b + SKB_BLOCK);
        // The headers' first bytes at once (the allocation runs on past `tail`: the
        // skb's shared info follows its data).
        let headers = if headers != 0 && copy(headers, base, HEADER_BLOCK as u32) {
            headers
        } else {
            0
        };
        let frame = Skb {
            base,
            len: tail - network,
            copy: headers,
        };
        // Not keyed (a malformed header): the interface, direction and EtherType alone.
        parse_ip(&frame, 0, ether_type, &mut key);
    }
    key.ifindex = ifindex;
    key.direction = dir as u8;
    Some((key, bytes))
}

/// Adds one drop to `key`'s entry; false when the map had no room.
#[inline(always)]
fn add(map: &HashMap<DropKey, DropValue>, key: &DropKey, bytes: u64, now: u64) -> bool {
    if let Some(v) = map.get_ptr_mut(key) {
        bump(v, bytes, now);
        return true;
    }
    let fresh = DropValue {
        packets: 1,
        bytes,
        first_ns: now,
        last_ns: now,
    };
    match map.insert(key, &fresh, u64::from(BPF_NOEXIST)) {
        Ok(()) => true,
        // EEXIST: another CPU created it since the lookup.
        Err(-17) => match map.get_ptr_mut(key) {
            Some(v) => {
                bump(v, bytes, now);
                true
            }
            None => false,
        },
        Err(_) => false,
    }
}

#[inline(always)]
fn bump(v: *mut DropValue, bytes: u64, now: u64) {
    // SAFETY: a live, 8-byte aligned map value; every writer adds atomically.
    unsafe {
        atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*v).packets, 1);
        atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*v).bytes, bytes);
        (&raw mut (*v).last_ns).write_volatile(now);
    }
}

/// One more drop for `reason`'s running total.
#[inline(always)]
fn total(reason: u32) {
    if let Some(v) = DROPREASONS.get_ptr_mut(&reason) {
        // SAFETY: a live, 8-byte aligned map value, added to atomically.
        unsafe { atomic_xadd::<u64, u64, { Relaxed }>(v, 1) };
        return;
    }
    match DROPREASONS.insert(&reason, &1, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        Err(-17) => {
            if let Some(v) = DROPREASONS.get_ptr_mut(&reason) {
                // SAFETY: as above.
                unsafe { atomic_xadd::<u64, u64, { Relaxed }>(v, 1) };
            }
        }
        Err(_) => stat(DROP_STAT_REASON_FULL),
    }
}

#[inline(always)]
fn stat(i: u32) {
    if let Some(c) = DROPSTATS.get_ptr_mut(i) {
        // SAFETY: this CPU's entry; a tracepoint program does not nest on a CPU (a nested
        // run is skipped by the kernel's recursion check).
        unsafe { *c += 1 };
    }
}
