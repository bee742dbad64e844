//! What the programs need from a packet, whichever hook it came through: XDP (`xdp_md`)
//! and TC (`__sk_buff`) differ only in how a packet's length, bytes, interface and queue
//! are read, which [`Packet`] abstracts. [`Now`] is the packet's time, read once.

use core::{cell::Cell, ffi::c_void};

use aya_ebpf::{
    EbpfContext,
    helpers::generated::{
        bpf_ktime_get_boot_ns, bpf_skb_cgroup_id, bpf_skb_load_bytes, bpf_xdp_get_buff_len,
        bpf_xdp_load_bytes,
    },
    programs::{TcContext, XdpContext},
};

/// The packet's time: `bpf_ktime_get_boot_ns()`, read at most once however many parts of a
/// run want it (in `both` mode, the flow entry and the sample). The clock read is the
/// dearest single thing a packet costs here (≈ 24 ns of a sampled packet's ≈ 55 on the
/// bench machine, `lfence; rdtsc` under its hypervisor; BENCHMARKS.md).
pub struct Now(Cell<u64>);

impl Now {
    /// Not read yet.
    #[inline(always)]
    pub const fn new() -> Self {
        Self(Cell::new(0))
    }

    /// The time, read from the clock the first time only (the boot-time clock is never 0).
    #[inline(always)]
    pub fn get(&self) -> u64 {
        let t = self.0.get();
        if t != 0 {
            return t;
        }
        // SAFETY: no arguments.
        let t = unsafe { bpf_ktime_get_boot_ns() };
        self.0.set(t);
        t
    }
}

/// What the programs need from a packet, whichever hook it came through.
pub trait Packet: EbpfContext {
    /// The frame's full length: all XDP fragments; for an skb, `skb->len` (for a GSO skb on
    /// egress that is the whole super-packet, before the NIC or the stack segments it).
    fn wire_len(&self) -> u32;
    /// Copies the frame's first `len` bytes to `dst`; 0 on success, a negative errno else.
    ///
    /// # Safety
    /// `dst` must point at `len` writable bytes.
    unsafe fn load(&self, dst: *mut c_void, len: u32) -> i64;
    fn ifindex(&self) -> u32;
    fn queue(&self) -> u32;
    /// Whether [`pull`](Self::pull) can bring more of the frame into the linear part.
    const PULLS: bool;
    /// Start and end of the part of the frame readable in place (direct packet access).
    fn linear(&self) -> (usize, usize);
    /// Makes the first `len` bytes linear (skb only); false when it could not.
    fn pull(&self, len: u32) -> bool;
    /// The VLAN id of an outer 802.1Q/802.1ad tag the kernel took out of the frame into
    /// the skb's metadata (on receive it always does, before TC ingress; on transmit with
    /// VLAN offload): the tag was on the wire but is not in the bytes. XDP: never.
    fn vlan_tag(&self) -> Option<u16>;
    /// The cgroup v2 id of the packet's socket (`bpf_skb_cgroup_id`); 0 without a socket.
    /// XDP: never one.
    fn cgroup_id(&self) -> u64;
}

/// The cgroup id a packet going `dir` is attributed to: its socket's on egress (one helper
/// call: callers ask only for packets they keep), 0 on ingress, where no socket is known yet.
#[inline(always)]
pub fn cgroup_of<P: Packet>(ctx: &P, dir: flowmetrix_common::Direction) -> u64 {
    match dir {
        flowmetrix_common::Direction::Egress => ctx.cgroup_id(),
        flowmetrix_common::Direction::Ingress => 0,
    }
}

impl Packet for XdpContext {
    #[inline(always)]
    fn wire_len(&self) -> u32 {
        // SAFETY: `self.ctx` is the program's own xdp_md. (Not `data_end - data`: a
        // frame may still come in fragments, BPF_PROG_TEST_RUN's of 9000 bytes do.)
        unsafe { bpf_xdp_get_buff_len(self.ctx) as u32 }
    }

    #[inline(always)]
    unsafe fn load(&self, dst: *mut c_void, len: u32) -> i64 {
        // SAFETY: the caller's `dst` holds `len` bytes; `self.ctx` is our xdp_md.
        unsafe { bpf_xdp_load_bytes(self.ctx, 0, dst, len) }
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.ingress_ifindex() as u32
    }

    #[inline(always)]
    fn queue(&self) -> u32 {
        self.rx_queue_index()
    }

    const PULLS: bool = false;

    #[inline(always)]
    fn linear(&self) -> (usize, usize) {
        (self.data(), self.data_end())
    }

    #[inline(always)]
    fn pull(&self, _len: u32) -> bool {
        false
    }

    #[inline(always)]
    fn vlan_tag(&self) -> Option<u16> {
        None
    }

    #[inline(always)]
    fn cgroup_id(&self) -> u64 {
        0
    }
}

impl Packet for TcContext {
    #[inline(always)]
    fn wire_len(&self) -> u32 {
        self.skb.len()
    }

    #[inline(always)]
    unsafe fn load(&self, dst: *mut c_void, len: u32) -> i64 {
        // SAFETY: the caller's `dst` holds `len` bytes; `skb` is the program's own context.
        unsafe { bpf_skb_load_bytes(self.skb.skb as *const c_void, 0, dst, len) }
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: reading a field of the program's own context.
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn queue(&self) -> u32 {
        // SAFETY: reading a field of the program's own context.
        unsafe { (*self.skb.skb).queue_mapping }
    }

    const PULLS: bool = true;

    #[inline(always)]
    fn linear(&self) -> (usize, usize) {
        (self.data(), self.data_end())
    }

    #[inline(always)]
    fn pull(&self, len: u32) -> bool {
        self.pull_data(len).is_ok()
    }

    #[inline(always)]
    fn vlan_tag(&self) -> Option<u16> {
        // SAFETY: reading fields of the program's own context.
        let (present, tci) = unsafe { ((*self.skb.skb).vlan_present, (*self.skb.skb).vlan_tci) };
        (present != 0).then_some((tci & 0x0fff) as u16)
    }

    #[inline(always)]
    fn cgroup_id(&self) -> u64 {
        // SAFETY: the helper takes the program's own context.
        unsafe { bpf_skb_cgroup_id(self.skb.skb) }
    }
}
