//! Types shared by the XDP and TC programs (`flowmetrix-ebpf`) and the collector (`flowmetrix`).
//!
//! Everything here is `#[repr(C)]` and crosses the kernel/user boundary byte for byte, so
//! sizes and field offsets are pinned by the tests at the bottom of this file.
#![no_std]

pub mod drops;
pub mod flow_key;
pub mod handshake;
pub mod tcp;

/// Largest number of frame bytes one sample can carry (the compiled maximum of `--snaplen`).
/// A power of two, so the XDP program can bound copy lengths with a mask.
pub const MAX_SNAPLEN: usize = 256;

/// Default bytes captured per sample: a 24-byte VMware prefix + Ethernet (14) + two VLAN
/// tags (8) + IPv6 (40) + a TCP header with the largest options (60) = 146, rounded up so a
/// VXLAN-encapsulated IPv6/TCP packet still shows its inner ports.
pub const DEFAULT_SNAPLEN: u32 = 192;

// Checked at compile time: the XDP program masks lengths with MAX_SNAPLEN - 1, the issue
// asks for at least 256 bytes, and the default must cover the headers listed above.
const _: () = {
    assert!(MAX_SNAPLEN.is_power_of_two());
    assert!(MAX_SNAPLEN <= u16::MAX as usize);
    assert!(MAX_SNAPLEN >= 256);
    assert!(DEFAULT_SNAPLEN as usize <= MAX_SNAPLEN);
    assert!(DEFAULT_SNAPLEN >= 24 + 14 + 8 + 40 + 60);
};

/// Name of the ring buffer map that carries [`Sample`]s to userspace.
pub const SAMPLES_MAP: &str = "SAMPLES";
/// Name of the per-CPU array of [`CpuStats`]: one entry per interface slot and
/// [`Direction`], at [`stats_index`]. Slot 0 counts packets of interfaces that have no slot.
pub const STATS_MAP: &str = "STATS";
/// Directions: ingress, egress.
pub const DIRECTIONS: u32 = 2;
/// Interface slots in [`STATS_MAP`], slot 0 (no slot) included: at most this many less one
/// interfaces are counted apart at once.
pub const IF_SLOTS: u32 = 512;
/// Name of the array that gives an interface's slot, indexed by ifindex (0: no slot). Set by
/// userspace when it attaches to an interface, cleared when it detaches.
pub const IF_SLOT_MAP: &str = "IFSLOT";
/// Entries of [`IF_SLOT_MAP`]: interfaces with a larger ifindex are counted in slot 0.
pub const MAX_IFINDEX: u32 = 1 << 16;

/// The [`STATS_MAP`] entry of interface slot `slot`, direction `dir`.
#[inline(always)]
pub const fn stats_index(slot: u32, dir: Direction) -> u32 {
    slot * DIRECTIONS + dir as u32
}
/// Name of the global holding the sampling rate N (1 in N packets is sampled).
pub const SAMPLE_RATE_GLOBAL: &str = "SAMPLE_RATE";
/// Name of the global holding the snap length in bytes (1..=MAX_SNAPLEN).
pub const SNAPLEN_GLOBAL: &str = "SNAPLEN";
/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "flowmetrix";
/// Name of the do-nothing XDP program benchmarks compare against.
pub const BASELINE_PROGRAM_NAME: &str = "flowmetrix_baseline";
/// Name of the TC (sched_cls) program for the ingress hook (`--ingress-hook tc`). Program
/// names are kept within the kernel's 15 characters, so they show whole in `tc filter show`
/// and program listings.
pub const TC_INGRESS_PROGRAM_NAME: &str = "flowmetrix_in";
/// Name of the TC program for the egress hook.
pub const TC_EGRESS_PROGRAM_NAME: &str = "flowmetrix_eg";
/// Name of the do-nothing TC program benchmarks compare against.
pub const TC_BASELINE_PROGRAM_NAME: &str = "flowmetrix_nop";

/// Which way a packet went through the interface, as the kernel records it in
/// [`SampleHeader::direction`] and indexes [`STATS_MAP`] with.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress = 0,
    Egress = 1,
}

/// Metadata the kernel writes in front of the captured bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleHeader {
    /// `bpf_ktime_get_boot_ns()` at capture: CLOCK_BOOTTIME in nanoseconds.
    pub ts_boot_ns: u64,
    /// The frame's full length on the wire (all XDP fragments), never truncated.
    pub wire_len: u32,
    /// How many bytes of `Sample::data` are valid (0..=the record's slot size).
    pub cap_len: u16,
    /// An outer 802.1Q/802.1ad tag the kernel took out of the frame into the skb's
    /// metadata (TC only: always so before TC ingress; on transmit with VLAN offload):
    /// [`VLAN_PRESENT`] | its VLAN id; 0: no such tag (XDP: never one). That tag was on the
    /// wire but is neither in the bytes nor in `wire_len`.
    pub vlan: u16,
    /// Interface index the frame arrived on (ingress) or leaves by (egress).
    pub ifindex: u32,
    /// Receive queue the frame arrived on (XDP: `rx_queue_index`; TC: the skb's
    /// `queue_mapping`, on egress the transmit queue), truncated to 16 bits.
    pub rx_queue: u16,
    /// A [`Direction`] as its u16 value (0 ingress, 1 egress).
    pub direction: u16,
    /// TC egress: the cgroup v2 id of the socket that sent the packet
    /// (`bpf_skb_cgroup_id`, the inode number of its cgroup directory); 0 when the packet
    /// has no socket (forwarded), and always 0 on ingress.
    pub cgroup_id: u64,
}

/// The bit of [`SampleHeader::vlan`] that says there is a tag (VLAN ids are 12 bits).
pub const VLAN_PRESENT: u16 = 0x8000;

/// One ring-buffer record: a header and the first `cap_len` bytes of the frame, in a slot
/// of `N` bytes. The XDP program picks the smallest of [`SLOT_SIZES`] that holds what it
/// copies, so a flood of minimum-size frames takes a third of the ring a full slot would.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Sample<const N: usize = MAX_SNAPLEN> {
    pub header: SampleHeader,
    pub data: [u8; N],
}

/// The data slot sizes a record can have, smallest first; the last is MAX_SNAPLEN. 192 is
/// [`DEFAULT_SNAPLEN`]'s: a frame longer than it takes a 224-byte record, not 288 (the ring
/// is written at memory bandwidth, so each record byte costs; BENCHMARKS.md).
pub const SLOT_SIZES: [usize; 4] = [64, 128, DEFAULT_SNAPLEN as usize, MAX_SNAPLEN];

/// Per-CPU, per-direction state of the programs: counters and the sampling countdown (so
/// each direction is sampled 1 in N on its own). Counters only grow; userspace sums them
/// over CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// Packets the program ran on.
    pub seen: u64,
    /// Packets chosen by the sampler (whether or not they reached the ring).
    pub sampled: u64,
    /// Sampled packets lost because the ring buffer had no room.
    pub ring_full: u64,
    /// Packets still to skip before the next sample on this CPU.
    pub countdown: u64,
    /// Samples submitted on this CPU since the last one that woke the reader.
    pub unwoken: u64,
    /// Flows mode: packets the flow parser could not key ([`flow_key`] rules), and their bytes.
    pub flow_unkeyed: u64,
    pub flow_unkeyed_bytes: u64,
    /// Flows mode: packets the full flow map could not take, sent as flow events through
    /// the ring instead.
    pub flow_events: u64,
    /// Flows mode: packets neither the map nor the event ring could take, and their bytes.
    pub flow_overflow: u64,
    pub flow_overflow_bytes: u64,
    /// Flows mode: DNS packets (UDP or TCP on a [`DNS_PORTS_GLOBAL`] port) passed to the
    /// ring for the DNS transactions because the sampler did not take them, and those the
    /// ring had no room for.
    pub dns_copies: u64,
    pub dns_ring_full: u64,
}

/// A sample's [`SampleHeader::direction`] carries its [`Direction`] in the low byte and
/// this bit for a DNS packet passed to the ring outside the sampling (flows mode): it is
/// read for the DNS transactions only, never made a packet row.
pub const SAMPLE_DNS_ONLY: u16 = 0x0100;

/// Name of the global holding the ports DNS is served on (`[u16; DNS_PORTS]`, 0: unused).
pub const DNS_PORTS_GLOBAL: &str = "DNS_PORTS";
/// How many ports it holds.
pub const DNS_PORTS: usize = 4;

/// Every this many samples a CPU looks at how full the ring is, and wakes the reader when
/// more than [`WAKEUP_BYTES_GLOBAL`] bytes wait; otherwise samples are submitted quietly and
/// the reader drains on its own timer ([`DRAIN_INTERVAL_MS`]).
pub const WAKEUP_EVERY: u64 = 64;
/// Name of the global holding that threshold (userspace sets a quarter of the ring).
pub const WAKEUP_BYTES_GLOBAL: &str = "WAKEUP_BYTES";

/// How often the reader drains the ring without being woken, in milliseconds.
pub const DRAIN_INTERVAL_MS: u64 = 20;

/// How many packets to skip before the next sample, for 1-in-`rate` sampling.
///
/// The skip is drawn uniformly from `0..=2*(rate-1)` (mean `rate-1`), so on average one
/// packet in `rate` is sampled, but not on a fixed stride that could alias with periodic
/// traffic (every tenth packet an ACK, say). `random` is a uniformly random u32.
#[inline(always)]
pub fn next_skip(rate: u32, random: u32) -> u64 {
    if rate <= 1 {
        return 0;
    }
    let span = rate.saturating_mul(2) - 1;
    (random % span) as u64
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, #[repr(C)], no padding (checked by the layout tests).
    unsafe impl aya::Pod for super::CpuStats {}
    unsafe impl aya::Pod for super::SampleHeader {}
    unsafe impl aya::Pod for super::flow_key::FlowKey {}
    unsafe impl aya::Pod for super::flow_key::FlowValue {}
    unsafe impl aya::Pod for super::flow_key::FlowEvent {}
    unsafe impl aya::Pod for super::handshake::HandshakeState {}
    unsafe impl aya::Pod for super::handshake::HandshakeStats {}
    unsafe impl aya::Pod for super::drops::DropKey {}
    unsafe impl aya::Pod for super::drops::DropValue {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn sample_header_layout_is_fixed() {
        assert_eq!(size_of::<SampleHeader>(), 32);
        assert_eq!(offset_of!(SampleHeader, cgroup_id), 24);
        assert_eq!(offset_of!(SampleHeader, ts_boot_ns), 0);
        assert_eq!(offset_of!(SampleHeader, wire_len), 8);
        assert_eq!(offset_of!(SampleHeader, cap_len), 12);
        assert_eq!(offset_of!(SampleHeader, ifindex), 16);
        assert_eq!(offset_of!(SampleHeader, rx_queue), 20);
        assert_eq!(offset_of!(SampleHeader, direction), 22);
        assert_eq!(offset_of!(SampleHeader, vlan), 14);
        assert_eq!(VLAN_PRESENT & 0x0fff, 0);
        assert_eq!(Direction::Ingress as u16, 0);
        assert_eq!(Direction::Egress as u16, 1);
        assert_eq!(DIRECTIONS, 2);
        assert_eq!(stats_index(0, Direction::Egress), 1);
        assert_eq!(stats_index(3, Direction::Ingress), 6);
        assert_eq!(
            stats_index(IF_SLOTS - 1, Direction::Egress),
            IF_SLOTS * DIRECTIONS - 1
        );
    }

    #[test]
    fn sample_layout_is_fixed_and_ring_aligned() {
        assert_eq!(offset_of!(Sample, data), 32);
        assert_eq!(size_of::<Sample>(), 32 + MAX_SNAPLEN);
        assert_eq!(size_of::<Sample<64>>(), 32 + 64);
        assert_eq!(size_of::<Sample<128>>(), 32 + 128);
        // bpf_ringbuf_reserve hands out 8-byte aligned records, and the XDP program masks
        // lengths with a slot size - 1.
        assert_eq!(8 % align_of::<Sample>(), 0);
        assert_eq!(size_of::<Sample<192>>(), 32 + 192);
        assert_eq!(SLOT_SIZES, [64, 128, 192, MAX_SNAPLEN]);
        assert!(SLOT_SIZES.contains(&(DEFAULT_SNAPLEN as usize)));
        for n in SLOT_SIZES {
            assert!(n % 8 == 0 && n <= MAX_SNAPLEN);
        }
        assert!(SLOT_SIZES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(SLOT_SIZES[SLOT_SIZES.len() - 1], MAX_SNAPLEN);
    }

    #[test]
    fn cpu_stats_layout_is_fixed() {
        assert_eq!(size_of::<CpuStats>(), 96);
        assert_eq!(offset_of!(CpuStats, flow_unkeyed), 40);
        assert_eq!(offset_of!(CpuStats, flow_events), 56);
        assert_eq!(offset_of!(CpuStats, flow_overflow_bytes), 72);
        assert_eq!(offset_of!(CpuStats, seen), 0);
        assert_eq!(offset_of!(CpuStats, sampled), 8);
        assert_eq!(offset_of!(CpuStats, ring_full), 16);
        assert_eq!(offset_of!(CpuStats, countdown), 24);
        assert_eq!(offset_of!(CpuStats, unwoken), 32);
    }

    #[test]
    fn rate_one_never_skips() {
        for r in [0, 1, 7, u32::MAX] {
            assert_eq!(next_skip(1, r), 0);
            assert_eq!(next_skip(0, r), 0);
        }
    }

    #[test]
    fn skips_average_rate_minus_one() {
        // Over every residue of the span, the mean skip is exactly rate-1.
        for rate in [2u32, 10, 1000] {
            let span = 2 * rate - 1;
            let total: u64 = (0..span).map(|r| next_skip(rate, r)).sum();
            assert_eq!(total, u64::from(span) * u64::from(rate - 1));
            assert_eq!(next_skip(rate, span - 1), u64::from(2 * (rate - 1)));
            assert_eq!(next_skip(rate, span), 0);
        }
    }
}
