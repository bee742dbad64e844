//! The VMware prefix: bytes some hypervisor taps put in front of the Ethernet header.
//!
//! `-offset N` skips N bytes of every frame (`-offset` alone: 24). Without it, 0.

use std::time::{Duration, Instant};

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacketSlice, EtherType, Ipv4HeaderSlice, Ipv6HeaderSlice,
};
use tracing::{info, warn};

use crate::record::{Direction, UnixNanos};

/// The prefix length `-offset` means when it is given without a value.
pub const VMWARE_DEFAULT: usize = 24;

/// Ethernet II header length: a frame shorter than offset + this has nothing to decode.
const ETHERNET_HEADER: usize = 14;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{len}-byte sample has no Ethernet header after a {offset}-byte offset")]
pub struct ShortForOffset {
    pub len: usize,
    pub offset: usize,
}

/// How the VMware prefix is found: a fixed length (`-offset N`, 0 without the flag), or
/// learned from the traffic (`-auto-detect`, [`AutoPrefix`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Fixed(usize),
    Auto,
}

impl Default for Prefix {
    fn default() -> Self {
        Self::Fixed(0)
    }
}

/// The frame without a `len`-byte prefix, and the wire length without it. A frame too short
/// to hold the prefix and an Ethernet header is an error, never decoded from garbage.
pub fn strip(frame: &[u8], wire_len: u32, len: usize) -> Result<(&[u8], u32), ShortForOffset> {
    if frame.len() < len + ETHERNET_HEADER {
        return Err(ShortForOffset {
            len: frame.len(),
            offset: len,
        });
    }
    let skipped = u32::try_from(len).unwrap_or(u32::MAX);
    Ok((&frame[len..], wire_len.saturating_sub(skipped)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_offset_is_identity() {
        let f = [7u8; 20];
        assert_eq!(strip(&f, 20, 0), Ok((&f[..], 20)));
    }

    #[test]
    fn skips_the_prefix_and_shortens_the_wire_length() {
        let f: Vec<u8> = (0..60).collect();
        let (rest, len) = strip(&f, 1000, 24).unwrap();
        assert_eq!(rest[0], 24);
        assert_eq!(rest.len(), 36);
        assert_eq!(len, 976);
    }

    #[test]
    fn too_short_frames_are_refused() {
        let f = [0u8; 37];
        assert_eq!(
            strip(&f, 37, 24),
            Err(ShortForOffset {
                len: 37,
                offset: 24
            })
        );
        assert!(strip(&[0u8; 38], 38, 24).is_ok());
    }
}

/// `-auto-detect`: learns the prefix length from the traffic.
///
/// Each candidate offset (0..=[`MAX_AUTO_OFFSET`]) scores one point per frame that reads
/// as a consistent packet there: a known EtherType (after up to two VLAN tags) and an IPv4
/// header with a valid checksum, an IPv6 header, or an Ethernet/IPv4 ARP packet, whose
/// length agrees with the frame's wire length. Frames are held (not decoded) while
/// learning, then all decoded at the chosen offset, so none is garbled by a wrong guess.
/// Once settled it keeps checking: when most recent frames stop reading as packets at that
/// offset, it says so and learns again.
#[derive(Debug)]
pub struct AutoPrefix {
    state: Learn,
}

/// Largest prefix considered.
pub const MAX_AUTO_OFFSET: usize = 64;
/// Decide once this many frames agree this well…
const QUICK_FRAMES: usize = 32;
const QUICK_SHARE: f64 = 0.9;
/// …or after this many frames, or this long with at least a few frames, whatever they say.
const MAX_FRAMES: usize = 100;
const MAX_WAIT: Duration = Duration::from_secs(5);
const MIN_FRAMES: usize = 4;
/// Settled: re-learn when fewer than this share of the last `WINDOW` frames read right.
const WINDOW: u32 = 64;
const RELEARN_BELOW: f64 = 0.25;

/// A frame held while learning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub bytes: Vec<u8>,
    pub wire_len: u32,
    pub ts: UnixNanos,
    pub direction: Direction,
}

#[derive(Debug)]
enum Learn {
    Learning {
        held: Vec<Held>,
        scores: Box<[u32; MAX_AUTO_OFFSET + 1]>,
        since: Option<Instant>,
    },
    Settled {
        offset: usize,
        seen: u32,
        good: u32,
    },
}

/// What to do with the frame just observed.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Held for now.
    Hold,
    /// Decode it at this offset.
    Use(usize),
    /// The offset is decided: decode these frames (the one just observed included) at it.
    Release { offset: usize, frames: Vec<Held> },
}

impl Default for AutoPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl AutoPrefix {
    pub fn new() -> Self {
        Self {
            state: Self::learning(),
        }
    }

    fn learning() -> Learn {
        Learn::Learning {
            held: Vec::new(),
            scores: Box::new([0; MAX_AUTO_OFFSET + 1]),
            since: None,
        }
    }

    /// The offset in use, once settled.
    pub fn offset(&self) -> Option<usize> {
        match self.state {
            Learn::Settled { offset, .. } => Some(offset),
            Learn::Learning { .. } => None,
        }
    }

    /// [`observe_in`](Self::observe_in) for an ingress frame.
    pub fn observe(&mut self, frame: &[u8], wire_len: u32, ts: UnixNanos, now: Instant) -> Step {
        self.observe_in(frame, wire_len, ts, Direction::Ingress, now)
    }

    /// Takes in one frame; what to do with it (and with the frames held so far).
    pub fn observe_in(
        &mut self,
        frame: &[u8],
        wire_len: u32,
        ts: UnixNanos,
        direction: Direction,
        now: Instant,
    ) -> Step {
        match &mut self.state {
            Learn::Settled { offset, seen, good } => {
                let offset = *offset;
                *seen += 1;
                *good += u32::from(plausible(frame, offset, wire_len));
                if *seen >= WINDOW {
                    let share = f64::from(*good) / f64::from(*seen);
                    if share < RELEARN_BELOW {
                        warn!(
                            "auto-detect: only {:.0}% of the last {} frames read as packets at offset {offset}; learning the prefix again",
                            share * 100.0,
                            *seen
                        );
                        self.state = Self::learning();
                        return self.observe_in(frame, wire_len, ts, direction, now);
                    }
                    (*seen, *good) = (0, 0);
                }
                Step::Use(offset)
            }
            Learn::Learning {
                held,
                scores,
                since,
            } => {
                let since = *since.get_or_insert(now);
                for (off, score) in scores.iter_mut().enumerate() {
                    *score += u32::from(plausible(frame, off, wire_len));
                }
                held.push(Held {
                    bytes: frame.to_vec(),
                    wire_len,
                    ts,
                    direction,
                });
                let n = held.len();
                let (best, score) = best(scores);
                let share = f64::from(score) / n as f64;
                let decide = (n >= QUICK_FRAMES && share >= QUICK_SHARE)
                    || n >= MAX_FRAMES
                    || (n >= MIN_FRAMES && now.duration_since(since) >= MAX_WAIT);
                if decide {
                    Step::Release {
                        offset: best,
                        frames: self.settle(best, score, n),
                    }
                } else {
                    Step::Hold
                }
            }
        }
    }

    /// At the end of input: decide with whatever frames are held.
    pub fn finish(&mut self) -> Option<(usize, Vec<Held>)> {
        let Learn::Learning { held, scores, .. } = &self.state else {
            return None;
        };
        if held.is_empty() {
            return None;
        }
        let n = held.len();
        let (best, score) = best(scores);
        Some((best, self.settle(best, score, n)))
    }

    fn settle(&mut self, offset: usize, score: u32, n: usize) -> Vec<Held> {
        let confidence = f64::from(score) / n as f64 * 100.0;
        if score == 0 {
            warn!("auto-detect: no frame of {n} reads as a packet at any offset; using 0");
        } else {
            info!(
                "auto-detect: prefix is {offset} bytes ({confidence:.0}% of {n} frames read as packets there)"
            );
        }
        let offset = if score == 0 { 0 } else { offset };
        match std::mem::replace(
            &mut self.state,
            Learn::Settled {
                offset,
                seen: 0,
                good: 0,
            },
        ) {
            Learn::Learning { held, .. } => held,
            Learn::Settled { .. } => Vec::new(),
        }
    }
}

/// The best-scoring offset; on a tie the smallest.
fn best(scores: &[u32; MAX_AUTO_OFFSET + 1]) -> (usize, u32) {
    scores.iter().enumerate().fold(
        (0, 0),
        |(bo, bs), (o, &s)| if s > bs { (o, s) } else { (bo, bs) },
    )
}

/// Whether `frame` reads as a consistent Ethernet packet after `offset` bytes.
pub fn plausible(frame: &[u8], offset: usize, wire_len: u32) -> bool {
    let Some(eth) = frame.get(offset..) else {
        return false;
    };
    if eth.len() < ETHERNET_HEADER {
        return false;
    }
    let mut l2 = 12;
    let mut ether_type = u16::from_be_bytes([eth[12], eth[13]]);
    for _ in 0..2 {
        if ether_type != 0x8100 && ether_type != 0x88a8 {
            break;
        }
        let Some(next) = eth.get(l2 + 4..l2 + 6) else {
            return false;
        };
        ether_type = u16::from_be_bytes([next[0], next[1]]);
        l2 += 4;
    }
    let l3 = &eth[l2 + 2..];
    // The frame on the wire: prefix + L2 header + network packet, perhaps padded to the
    // 60-byte minimum, perhaps with a 4-byte FCS.
    let fits = |net_len: usize| {
        let exact = offset + l2 + 2 + net_len;
        let wire = wire_len as usize;
        exact <= wire && wire <= exact.max(offset + 60) + 4
    };
    match EtherType(ether_type) {
        EtherType::IPV4 => Ipv4HeaderSlice::from_slice(l3).is_ok_and(|h| {
            h.header_checksum() == h.to_header().calc_header_checksum()
                && fits(usize::from(h.total_len()))
        }),
        EtherType::IPV6 => Ipv6HeaderSlice::from_slice(l3)
            .is_ok_and(|h| fits(40 + usize::from(h.payload_length()))),
        EtherType::ARP => ArpPacketSlice::from_slice(l3).is_ok_and(|a| {
            a.hw_addr_type() == ArpHardwareId::ETHERNET
                && a.proto_addr_type() == EtherType::IPV4
                && a.hw_addr_size() == 6
                && a.proto_addr_size() == 4
                && matches!(a.operation(), ArpOperation::REQUEST | ArpOperation::REPLY)
                && fits(28)
        }),
        _ => false,
    }
}

#[cfg(test)]
mod auto_tests {
    use etherparse::{ArpPacket, PacketBuilder};

    use super::*;

    fn frames() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for i in 0..40u16 {
            let mut f = Vec::new();
            match i % 4 {
                0 => PacketBuilder::ethernet2([2; 6], [4; 6])
                    .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                    .udp(1000 + i, 53)
                    .write(&mut f, &[i as u8; 30])
                    .unwrap(),
                1 => PacketBuilder::ethernet2([2; 6], [4; 6])
                    .ipv6([1; 16], [2; 16], 64)
                    .tcp(443, 1000 + i, 1, 100)
                    .ack(1)
                    .write(&mut f, &[0; 10])
                    .unwrap(),
                2 => PacketBuilder::ethernet2([2; 6], [4; 6])
                    .single_vlan(etherparse::VlanId::try_new(7).unwrap())
                    .ipv4([10, 0, 0, 3], [10, 0, 0, 4], 64)
                    .icmpv4_echo_request(1, i)
                    .write(&mut f, &[0; 8])
                    .unwrap(),
                _ => {
                    let arp = ArpPacket::new(
                        ArpHardwareId::ETHERNET,
                        EtherType::IPV4,
                        ArpOperation::REQUEST,
                        &[2; 6],
                        &[10, 0, 0, 1],
                        &[0; 6],
                        &[10, 0, 0, 2],
                    )
                    .unwrap();
                    PacketBuilder::ethernet2([2; 6], [0xff; 6])
                        .arp(arp)
                        .write(&mut f)
                        .unwrap();
                }
            }
            out.push(f);
        }
        out
    }

    /// A deterministic junk prefix.
    fn junk(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn learn(prefix: usize) -> (usize, usize) {
        let mut a = AutoPrefix::new();
        let now = Instant::now();
        for (i, f) in frames().iter().enumerate() {
            let framed = [junk(prefix, i as u32), f.clone()].concat();
            if let Step::Release { offset, frames } =
                a.observe(&framed, framed.len() as u32, UnixNanos(i as i64), now)
            {
                assert_eq!(frames.len(), i + 1, "every held frame is released");
                return (offset, i + 1);
            }
        }
        panic!("never decided for prefix {prefix}");
    }

    #[test]
    fn finds_24_16_and_0() {
        for prefix in [24, 16, 0, 4] {
            let (offset, after) = learn(prefix);
            assert_eq!(offset, prefix);
            assert!(after <= 100);
        }
    }

    #[test]
    fn plausibility_needs_a_consistent_length() {
        let f = &frames()[0];
        assert!(plausible(f, 0, f.len() as u32));
        assert!(plausible(f, 0, f.len() as u32 + 4), "FCS");
        assert!(!plausible(f, 0, f.len() as u32 + 100), "length disagrees");
        assert!(!plausible(f, 1, f.len() as u32));
        let short = &frames()[3]; // 42-byte ARP, padded to 60 on the wire
        assert!(plausible(short, 0, 60));
    }

    #[test]
    fn settled_offset_is_used_and_relearned_when_traffic_changes() {
        let mut a = AutoPrefix::new();
        let now = Instant::now();
        let frames = frames();
        let mut step = Step::Hold;
        for f in &frames {
            step = a.observe(f, f.len() as u32, UnixNanos(0), now);
            if matches!(step, Step::Release { .. }) {
                break;
            }
        }
        assert!(matches!(step, Step::Release { offset: 0, .. }));
        let f = &frames[0];
        assert_eq!(
            a.observe(f, f.len() as u32, UnixNanos(0), now),
            Step::Use(0)
        );
        // The hypervisor starts adding 24 bytes: after a window of bad frames, it re-learns.
        let mut relearned = false;
        for i in 0..(2 * WINDOW as usize + 100) {
            let framed = [junk(24, i as u32), frames[i % frames.len()].clone()].concat();
            if let Step::Release { offset, .. } =
                a.observe(&framed, framed.len() as u32, UnixNanos(0), now)
            {
                assert_eq!(offset, 24);
                relearned = true;
                break;
            }
        }
        assert!(relearned);
        assert_eq!(a.offset(), Some(24));
    }

    #[test]
    fn a_quiet_link_decides_after_a_few_frames_and_a_while() {
        let mut a = AutoPrefix::new();
        let t0 = Instant::now();
        let frames = frames();
        for f in &frames[..3] {
            assert_eq!(a.observe(f, f.len() as u32, UnixNanos(0), t0), Step::Hold);
        }
        let f = &frames[3];
        let later = t0 + MAX_WAIT;
        assert!(matches!(
            a.observe(f, f.len() as u32, UnixNanos(0), later),
            Step::Release { offset: 0, .. }
        ));
    }

    #[test]
    fn finish_releases_held_frames() {
        let mut a = AutoPrefix::new();
        let f = &frames()[0];
        assert_eq!(
            a.observe(f, f.len() as u32, UnixNanos(0), Instant::now()),
            Step::Hold
        );
        let (offset, held) = a.finish().unwrap();
        assert_eq!((offset, held.len()), (0, 1));
        assert!(a.finish().is_none());
    }

    #[test]
    fn nothing_plausible_settles_on_zero() {
        let mut a = AutoPrefix::new();
        let now = Instant::now();
        let mut last = Step::Hold;
        for i in 0..MAX_FRAMES {
            let f = junk(80, i as u32);
            last = a.observe(&f, 80, UnixNanos(0), now);
        }
        assert!(matches!(last, Step::Release { offset: 0, .. }));
    }
}
