//! Local TCP sockets' health (`--tcp-health`, `--mode flows|both`), counted per socket
//! (local → remote) in `TCPSOCK{generation & 1}`, the generation being the flow maps' (so
//! userspace reads the idle map after the same flip and grace period as the flows):
//! - [`tcp_rtt`], the raw tracepoint `tcp_probe`, which `tcp_rcv_established` fires first
//!   thing for every segment an established local socket takes (the event an `fentry` on
//!   that function sees, without the BTF trampolines some kernels lack): the largest
//!   `srtt_us >> 3` of the interval;
//! - [`tcp_retransmit`], the raw tracepoint `tcp_retransmit_skb`: the segments of the skb
//!   it retransmitted (`tcp_skb_cb.tcp_gso_segs`), as the kernel's `total_retrans` counts.
//!   Its first argument is the socket on every kernel, so no format file is read; 6.17 added
//!   an `err` argument after the skb and fires it for failed attempts too, which are skipped
//!   (`TCP_RETRANSMIT_ERR`, set from the tracepoint's prototype in BTF).
//!
//! Socket fields are read with `bpf_probe_read_kernel` at the offsets userspace found in
//! the running kernel's BTF ([`SockOffsets`], a load-time constant). A socket the full map
//! cannot take is counted in `TCPSTATS`. Both hooks run with the socket locked, so one
//! socket's value is never updated from two CPUs at once; the retransmit count is still an
//! atomic add (two network namespaces may hold sockets of one address pair).

use core::{
    intrinsics::{AtomicOrdering::Relaxed, atomic_xadd},
    mem::MaybeUninit,
    ptr::read_volatile,
};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    macros::{map, raw_tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use flowmetrix_common::{
    flow_key::FLOW_CFG_GENERATION,
    tcp::{
        AF_INET, AF_INET6, SOCK_HEAD, SockOffsets, TCP_SOCKET_ENTRIES, TCP_STAT_FULL,
        TCP_STATS_ENTRIES, TcpSocketKey, TcpSocketValue,
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
    skb_gso_segs: 0,
    _pad: 0,
};

/// 1 when `tcp_retransmit_skb` has the `err` argument (6.17+): events with an error are
/// attempts that sent nothing. Set by userspace at load time.
#[unsafe(no_mangle)]
static TCP_RETRANSMIT_ERR: u32 = 0;

#[raw_tracepoint(tracepoint = "tcp_probe")]
pub fn tcp_rtt(ctx: RawTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let _ = try_rtt(sk);
    0
}

#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn tcp_retransmit(ctx: RawTracePointContext) -> i32 {
    // SAFETY: a global set before load (a constant to the verifier, which then never sees
    // the third argument read on a kernel whose tracepoint has two).
    if unsafe { read_volatile(&TCP_RETRANSMIT_ERR) } != 0 {
        let err: i64 = ctx.arg(2);
        if err != 0 {
            return 0;
        }
    }
    let sk: *const u8 = ctx.arg(0);
    let skb: *const u8 = ctx.arg(1);
    let _ = try_retransmit(sk, skb);
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

/// The head of `struct sock` (its `sock_common`), read in one helper call.
#[repr(C, align(8))]
struct Head([u8; SOCK_HEAD as usize]);

/// The u16 at `off` of `h` (`off` is a load-time constant: the verifier sees a fixed stack
/// offset, and the bounds check away).
#[inline(always)]
fn u16_at(h: &Head, off: u32) -> Result<u16, ()> {
    let off = off as usize;
    match (h.0.get(off), h.0.get(off + 1)) {
        (Some(a), Some(b)) => Ok(u16::from_ne_bytes([*a, *b])),
        _ => Err(()),
    }
}

/// `dst.len()` bytes at `off` of `h` into `dst`.
#[inline(always)]
fn copy_at(h: &Head, off: u32, dst: &mut [u8]) -> Result<(), ()> {
    let off = off as usize;
    let src = h.0.get(off..off + dst.len()).ok_or(())?;
    dst.copy_from_slice(src);
    Ok(())
}

/// A [`TcpSocketKey`] on an 8-byte boundary, so it can be zeroed a word at a time.
#[repr(C, align(8))]
struct Key8(TcpSocketKey);

/// The socket's key, local → remote, into `k`; Err for a family other than IPv4 and IPv6.
///
/// The socket's fields come from one read of the head of `struct sock` (one helper call
/// instead of five or six: the calls were most of the program's cost). `k` is zeroed with
/// five volatile 8-byte stores and the addresses are copied into it in place: a key built from a constant (`[a, b, c, d, 0, …]`) made LLVM copy the zeros from
/// `.rodata`, which also holds the load-time globals, and the copy came from the wrong place
/// once relocated; a plain zeroing becomes a call to `memset`.
#[inline(always)]
fn key_of(sk: *const u8, o: &SockOffsets, k: &mut Key8) -> Result<(), ()> {
    const WORDS: usize = size_of::<TcpSocketKey>() / 8;
    const _: () = assert!(size_of::<TcpSocketKey>() == WORDS * 8);
    let words = (k as *mut Key8).cast::<u64>();
    for i in 0..WORDS {
        // SAFETY: inside `k`, 8-byte aligned.
        unsafe { words.add(i).write_volatile(0) };
    }
    let mut head = MaybeUninit::<Head>::uninit();
    // SAFETY: the helper writes all SOCK_HEAD bytes or fails (then nothing reads them); a
    // kernel read that fails rather than faults.
    let h = unsafe {
        let buf =
            core::slice::from_raw_parts_mut(head.as_mut_ptr().cast::<u8>(), SOCK_HEAD as usize);
        bpf_probe_read_kernel_buf(sk, buf).map_err(|_| ())?;
        &*head.as_ptr()
    };
    let k = &mut k.0;
    k.family = u16_at(h, o.family)?;
    k.local_port = u16_at(h, o.num)?;
    k.remote_port = u16::from_be(u16_at(h, o.dport)?);
    match k.family {
        AF_INET => {
            copy_at(h, o.rcv_saddr, &mut k.local_addr[..4])?;
            copy_at(h, o.daddr, &mut k.remote_addr[..4])?;
        }
        AF_INET6 if o.v6_daddr != 0 => {
            copy_at(h, o.v6_rcv_saddr, &mut k.local_addr)?;
            copy_at(h, o.v6_daddr, &mut k.remote_addr)?;
        }
        _ => return Err(()),
    }
    Ok(())
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
    let mut key = MaybeUninit::<Key8>::uninit();
    // SAFETY: key_of writes every byte before anything reads it.
    let key = unsafe { &mut *key.as_mut_ptr() };
    key_of(sk, &o, key)?;
    let key = &key.0;
    let fresh = TcpSocketValue {
        retransmits: 0,
        rtt_us: rtt,
    };
    if let Some(v) = upsert(key, &fresh)? {
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
fn try_retransmit(sk: *const u8, skb: *const u8) -> Result<(), ()> {
    let o = offsets();
    let mut key = MaybeUninit::<Key8>::uninit();
    // SAFETY: key_of writes every byte before anything reads it.
    let key = unsafe { &mut *key.as_mut_ptr() };
    key_of(sk, &o, key)?;
    let key = &key.0;
    // The segments this event sent (a GSO skb holds several; 0 is never stored, but read
    // as one).
    let segs = u32::from(read::<u16>(skb, o.skb_gso_segs)?).max(1);
    let fresh = TcpSocketValue {
        retransmits: segs,
        rtt_us: 0,
    };
    if let Some(v) = upsert(key, &fresh)? {
        // SAFETY: a live, 4-byte aligned map value.
        unsafe { atomic_xadd::<u32, u32, { Relaxed }>(&raw mut (*v).retransmits, segs) };
    }
    Ok(())
}
