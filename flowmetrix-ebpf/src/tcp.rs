//! Local TCP sockets' health (`--tcp-health`, `--mode flows|both`), counted per socket
//! (local → remote) in `TCPSOCK{generation & 1}`, the generation being the flow maps' (so
//! userspace reads the idle map after the same flip and grace period as the flows):
//! - [`tcp_rtt`], `fentry` on `tcp_rcv_established` (every segment an established local
//!   socket takes): the largest `srtt_us >> 3` of the interval;
//! - [`tcp_retransmit`], the BTF tracepoint `tcp_retransmit_skb`: one retransmit per event.
//!   Its first argument is the socket on every kernel (6.17 added an `err` argument after
//!   the skb), so no format file is read.
//!
//! Socket fields are read with `bpf_probe_read_kernel` at the offsets userspace found in
//! the running kernel's BTF ([`SockOffsets`], a load-time constant). A socket the full map
//! cannot take is counted in `TCPSTATS`. Both hooks run with the socket locked, so one
//! socket's value is never updated from two CPUs at once; the retransmit count is still an
//! atomic add (two network namespaces may hold sockets of one address pair).

use core::{
    intrinsics::{AtomicOrdering::Relaxed, atomic_xadd},
    ptr::read_volatile,
};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_probe_read_kernel,
    macros::{btf_tracepoint, fentry, map},
    maps::{HashMap, PerCpuArray},
    programs::{BtfTracePointContext, FEntryContext},
};
use flowmetrix_common::{
    flow_key::FLOW_CFG_GENERATION,
    tcp::{
        AF_INET, AF_INET6, SockOffsets, TCP_SOCKET_ENTRIES, TCP_STAT_FULL, TCP_STATS_ENTRIES,
        TcpSocketKey, TcpSocketValue,
    },
};

use crate::flows::FLOWCFG;

/// The two socket maps. Sized by userspace (the minimum when the part is off).
#[map]
static TCPSOCK0: HashMap<TcpSocketKey, TcpSocketValue> =
    HashMap::with_max_entries(TCP_SOCKET_ENTRIES, 0);
#[map]
static TCPSOCK1: HashMap<TcpSocketKey, TcpSocketValue> =
    HashMap::with_max_entries(TCP_SOCKET_ENTRIES, 0);

/// Sockets the full map could not take, per CPU ([`TCP_STAT_FULL`]).
#[map]
static TCPSTATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(TCP_STATS_ENTRIES, 0);

/// Where the socket fields are in this kernel. Set by userspace at load time.
#[unsafe(no_mangle)]
static TCP_OFFSETS: SockOffsets = SockOffsets {
    family: 0,
    daddr: 0,
    rcv_saddr: 0,
    dport: 0,
    num: 0,
    v6_daddr: 0,
    v6_rcv_saddr: 0,
    srtt_us: 0,
};

#[fentry(function = "tcp_rcv_established")]
pub fn tcp_rtt(ctx: FEntryContext) -> u32 {
    let sk: *const u8 = ctx.arg(0);
    let _ = try_rtt(sk);
    0
}

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit(ctx: BtfTracePointContext) -> u32 {
    let sk: *const u8 = ctx.arg(0);
    let _ = try_retransmit(sk);
    0
}

#[inline(always)]
fn offsets() -> SockOffsets {
    // SAFETY: a global set before load (a constant to the verifier).
    unsafe { read_volatile(&TCP_OFFSETS) }
}

#[inline(always)]
fn read<T>(sk: *const u8, off: u32) -> Result<T, ()> {
    // SAFETY: a kernel read through the helper, which fails rather than faults.
    unsafe { bpf_probe_read_kernel(sk.wrapping_add(off as usize).cast::<T>()) }.map_err(|_| ())
}

/// The socket's key, local → remote; Err for a family other than IPv4 and IPv6.
#[inline(always)]
fn key_of(sk: *const u8, o: &SockOffsets) -> Result<TcpSocketKey, ()> {
    let mut k = TcpSocketKey::ZERO;
    k.family = read::<u16>(sk, o.family)?;
    k.local_port = read::<u16>(sk, o.num)?;
    k.remote_port = u16::from_be(read::<u16>(sk, o.dport)?);
    match k.family {
        AF_INET => {
            let local: [u8; 4] = read(sk, o.rcv_saddr)?;
            let remote: [u8; 4] = read(sk, o.daddr)?;
            k.local_addr[..4].copy_from_slice(&local);
            k.remote_addr[..4].copy_from_slice(&remote);
        }
        AF_INET6 if o.v6_daddr != 0 => {
            k.local_addr = read(sk, o.v6_rcv_saddr)?;
            k.remote_addr = read(sk, o.v6_daddr)?;
        }
        _ => return Err(()),
    }
    Ok(k)
}

#[inline(always)]
fn socket_map() -> &'static HashMap<TcpSocketKey, TcpSocketValue> {
    let generation = FLOWCFG.get(FLOW_CFG_GENERATION).copied().unwrap_or(0);
    if generation & 1 == 0 {
        &TCPSOCK0
    } else {
        &TCPSOCK1
    }
}

/// The socket's value in this generation's map, inserted as `fresh` when absent (then
/// None: `fresh` is already what it should hold).
#[inline(always)]
fn upsert(key: &TcpSocketKey, fresh: &TcpSocketValue) -> Result<Option<*mut TcpSocketValue>, ()> {
    let map = socket_map();
    if let Some(v) = map.get_ptr_mut(key) {
        return Ok(Some(v));
    }
    match map.insert(key, fresh, u64::from(BPF_NOEXIST)) {
        Ok(()) => Ok(None),
        Err(_) => match map.get_ptr_mut(key) {
            // EEXIST: inserted meanwhile (another namespace's socket of the same pair).
            Some(v) => Ok(Some(v)),
            None => {
                if let Some(full) = TCPSTATS.get_ptr_mut(TCP_STAT_FULL) {
                    // SAFETY: this CPU's entry; the hooks do not nest on one CPU for it
                    // (counted, a rare miss at most).
                    unsafe { *full += 1 };
                }
                Err(())
            }
        },
    }
}

#[inline(always)]
fn try_rtt(sk: *const u8) -> Result<(), ()> {
    let o = offsets();
    let srtt: u32 = read(sk, o.srtt_us)?;
    // No RTT sample yet.
    if srtt == 0 {
        return Ok(());
    }
    let rtt = srtt >> 3;
    let key = key_of(sk, &o)?;
    let fresh = TcpSocketValue {
        retransmits: 0,
        rtt_us: rtt,
    };
    if let Some(v) = upsert(&key, &fresh)? {
        // SAFETY: a live map value; see the module doc for why no other CPU writes it.
        unsafe {
            let at = &raw mut (*v).rtt_us;
            if rtt > at.read_volatile() {
                at.write_volatile(rtt);
            }
        }
    }
    Ok(())
}

#[inline(always)]
fn try_retransmit(sk: *const u8) -> Result<(), ()> {
    let o = offsets();
    let key = key_of(sk, &o)?;
    let fresh = TcpSocketValue {
        retransmits: 1,
        rtt_us: 0,
    };
    if let Some(v) = upsert(&key, &fresh)? {
        // SAFETY: a live, 4-byte aligned map value.
        unsafe { atomic_xadd::<u32, u32, { Relaxed }>(&raw mut (*v).retransmits, 1) };
    }
    Ok(())
}
