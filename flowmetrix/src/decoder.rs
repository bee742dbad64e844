//! The decode stage: samples → rows. The VMware prefix is taken off (fixed, or learned by
//! `-auto-detect`, which holds frames until it has decided), then each frame is decoded
//! into a [`PacketRecord`] with the port → application table it was given. What cannot
//! become a row is counted as a decode error. The prefix is an Ethernet matter: frames of
//! other link types (from a pcap file) are decoded as they are, with one warning when a
//! prefix was asked for.

use std::{collections::VecDeque, sync::Arc, time::Instant};

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::{
    applications::Applications,
    attribution::Resolver,
    decode::{self, FrameMeta, Link},
    metrics::Counters,
    offset::{self, AutoPrefix, Prefix, Step},
    record::{Direction, PacketRecord, UnixNanos},
    sample::{RecordError, Sample, SourceInfo},
};

/// What the decode stage is told.
#[derive(Debug, Clone, Default)]
pub struct DecodeSettings {
    pub prefix: Prefix,
    pub applications: Arc<Applications>,
    /// The `host` column (`--host-name`, by default the host's name).
    pub host: Arc<str>,
}

/// Where a frame came from besides its bytes: interface, the VLAN tag the kernel took out
/// of the bytes, the cgroup id of its socket (0: none).
type Origin = (Arc<str>, Option<u16>, u64);

pub struct Decoder {
    prefix: Prefix,
    /// Learning or checking the prefix (`Prefix::Auto` only).
    learner: Option<Box<AutoPrefix>>,
    applications: Arc<Applications>,
    sample_rate: u32,
    host: Arc<str>,
    /// For samples that do not say their interface.
    interface: Arc<str>,
    /// The interface, kernel VLAN tag ([`Sample::vlan`]) and cgroup id of each frame
    /// `-auto-detect` holds, in order.
    held: VecDeque<Origin>,
    /// Which workload each row belongs to (live capture).
    attribution: Option<Resolver>,
    counters: Arc<Counters>,
    warned: bool,
    /// Whether the prefix was said to be ignored for a non-Ethernet frame.
    warned_prefix: bool,
    /// `-auto-detect`: the prefix learned, for the flows stage ([`Decoder::learned_prefix`]).
    learned: watch::Sender<Option<usize>>,
    /// What `learned` holds (looked at for every frame: without its lock).
    told: Option<usize>,
}

impl Decoder {
    pub fn new(settings: DecodeSettings, source: &SourceInfo, counters: Arc<Counters>) -> Self {
        Self {
            learner: (settings.prefix == Prefix::Auto).then(Box::default),
            prefix: settings.prefix,
            applications: settings.applications,
            sample_rate: source.sample_rate,
            host: settings.host,
            interface: Arc::clone(&source.interface),
            held: VecDeque::new(),
            attribution: None,
            counters,
            warned: false,
            warned_prefix: false,
            learned: watch::Sender::new(None),
            told: None,
        }
    }

    /// Rows get their [`crate::record::Workload`] from `resolver`.
    pub fn attribute_with(&mut self, resolver: Resolver) {
        self.attribution = Some(resolver);
    }

    /// `-auto-detect`: the prefix as it is learned (`None` while learning), as the kernel's
    /// flow keys need it. None with a fixed prefix: the kernel was loaded with it.
    pub fn learned_prefix(&self) -> Option<watch::Receiver<Option<usize>>> {
        self.learns_prefix().then(|| self.learned.subscribe())
    }

    /// One sample (or a ring record that was not one): its rows, if any, go to `out`.
    pub fn push(&mut self, sample: Result<Sample<'_>, RecordError>, out: &mut Vec<PacketRecord>) {
        let s = match sample {
            Ok(s) => s,
            Err(e) => return self.not_decoded(&e),
        };
        if s.link != Link::Ethernet {
            if self.prefix != Prefix::Fixed(0) && !self.warned_prefix {
                let flag = match self.prefix {
                    Prefix::Auto => "-auto-detect",
                    Prefix::Fixed(_) => "-offset",
                };
                warn!(
                    "{flag} applies to Ethernet frames only; ignored for {}",
                    s.link
                );
                self.warned_prefix = true;
            }
            let interface = Arc::clone(s.interface.unwrap_or(&self.interface));
            let frame = (s.frame, s.wire_len, s.ts, s.direction);
            return self.decode_at(s.link, 0, frame, (interface, s.vlan, s.cgroup_id), out);
        }
        let step = match (&mut self.learner, self.prefix) {
            (Some(auto), _) => {
                let step = auto.observe_in(s.frame, s.wire_len, s.ts, s.direction, Instant::now());
                let offset = auto.offset();
                if self.told != offset {
                    self.told = offset;
                    self.learned.send_replace(offset);
                }
                step
            }
            (None, Prefix::Fixed(len)) => Step::Use(len),
            (None, Prefix::Auto) => Step::Use(0),
        };
        let interface = Arc::clone(s.interface.unwrap_or(&self.interface));
        match step {
            Step::Hold => self.held.push_back((interface, s.vlan, s.cgroup_id)),
            Step::Use(len) => {
                let frame = (s.frame, s.wire_len, s.ts, s.direction);
                let origin = (interface, s.vlan, s.cgroup_id);
                self.decode_at(Link::Ethernet, len, frame, origin, out);
            }
            Step::Release { offset, frames } => {
                self.held.push_back((interface, s.vlan, s.cgroup_id));
                self.release(offset, frames, out);
            }
        }
    }

    /// The prefix before the Ethernet header: `-offset`'s, or the one `-auto-detect` has
    /// learned (`None` while it is still learning).
    /// Whether the prefix is learned from the traffic (`-auto-detect`).
    pub fn learns_prefix(&self) -> bool {
        self.prefix == Prefix::Auto
    }

    pub fn prefix(&self) -> Option<usize> {
        match (self.prefix, &self.learner) {
            (Prefix::Fixed(n), _) => Some(n),
            (Prefix::Auto, Some(l)) => l.offset(),
            (Prefix::Auto, None) => Some(0),
        }
    }

    /// At the end of input: decides the prefix for frames `-auto-detect` still holds, and
    /// decodes them.
    pub fn finish(&mut self, out: &mut Vec<PacketRecord>) {
        let Some((offset, frames)) = self.learner.as_mut().and_then(|a| a.finish()) else {
            return;
        };
        self.release(offset, frames, out);
    }

    fn release(&mut self, offset: usize, frames: Vec<offset::Held>, out: &mut Vec<PacketRecord>) {
        for held in frames {
            let interface = self
                .held
                .pop_front()
                .unwrap_or_else(|| (Arc::clone(&self.interface), None, 0));
            let frame = (&held.bytes[..], held.wire_len, held.ts, held.direction);
            self.decode_at(Link::Ethernet, offset, frame, interface, out);
        }
        self.held.clear();
    }

    /// Decodes `frame` (bytes, wire length, time, direction) after a prefix of `prefix`, as
    /// seen on `interface` with `vlan`, the tag the kernel took out of the bytes (if any),
    /// sent by a socket in cgroup `cgroup_id` (0: none).
    fn decode_at(
        &mut self,
        link: Link,
        prefix: usize,
        (frame, wire_len, ts, direction): (&[u8], u32, UnixNanos, Direction),
        (interface, vlan, cgroup_id): Origin,
        out: &mut Vec<PacketRecord>,
    ) {
        // No combinators here: each one would move the ~200-byte row once more; the row is
        // made where it stays, at the end of `out`.
        // The prefix (and its check for a whole Ethernet header) is for Ethernet only.
        let stripped = match link {
            Link::Ethernet => offset::strip(frame, wire_len, prefix),
            _ => Ok((frame, wire_len)),
        };
        let (frame, wire_len) = match stripped {
            Ok(f) => f,
            Err(e) => return self.not_decoded(&e),
        };
        let meta = FrameMeta {
            ts,
            wire_len,
            sample_rate: self.sample_rate,
        };
        let origin = decode::Origin {
            host: Arc::clone(&self.host),
            interface,
            direction,
        };
        match decode::decode_onto(link, frame, meta, &self.applications, origin, out) {
            Ok(row) => {
                // A tag the kernel moved into the skb's metadata was the outer one on the
                // wire: it is the row's VLAN (a tag still in the bytes is an inner one), and
                // its 4 bytes count in the packet's size.
                if let Some(id) = vlan {
                    row.vlan_id = Some(id);
                    row.packet_size = row.packet_size.saturating_add(4);
                }
                match &self.attribution {
                    Some(a) => a.packet(row, cgroup_id, Instant::now()),
                    None => row.workload.cgroup_id = (cgroup_id != 0).then_some(cgroup_id),
                }
                Counters::add(&self.counters.decoded, 1);
            }
            Err(e) => self.not_decoded(&e),
        }
    }

    fn not_decoded(&mut self, e: &dyn std::fmt::Display) {
        Counters::add(&self.counters.decode_errors, 1);
        if self.warned {
            debug!("sample not decoded: {e}");
        } else {
            warn!("sample not decoded: {e} (further ones are counted, logged at debug)");
            self.warned = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;

    use super::*;

    fn udp(dst_port: u16) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 9, 0, 1], [10, 9, 0, 2], 64)
            .udp(40_000, dst_port);
        let mut out = Vec::new();
        b.write(&mut out, &[0; 20]).unwrap();
        out
    }

    fn sample(frame: &[u8], ts: i64) -> Result<Sample<'_>, RecordError> {
        Ok(Sample {
            frame,
            wire_len: frame.len() as u32,
            vlan: None,
            ts: UnixNanos(ts),
            ifindex: 3,
            direction: Direction::Ingress,
            cgroup_id: 0,
            link: Link::Ethernet,
            interface: None,
            dns_only: false,
        })
    }

    fn info(rate: u32) -> SourceInfo {
        SourceInfo {
            interface: "veth7".into(),
            sample_rate: rate,
            snaplen: 192,
            waits: false,
        }
    }

    #[test]
    fn rows_carry_the_source_rate_and_the_table_given() {
        let counters = Arc::new(Counters::default());
        let settings = DecodeSettings {
            prefix: Prefix::Fixed(0),
            applications: Arc::new(Applications::new([(9000, "MINIO".to_owned())])),
            host: "node-3".into(),
        };
        let mut d = Decoder::new(settings, &info(10), Arc::clone(&counters));
        let mut out = Vec::new();
        let f = udp(9000);
        d.push(sample(&f, 5), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].application, "MINIO");
        assert_eq!(out[0].sample_rate, 10);
        assert_eq!(out[0].ts, UnixNanos(5));
        assert_eq!(out[0].dst_port, Some(9000));
        assert_eq!(
            (&*out[0].host, &*out[0].interface, out[0].direction),
            ("node-3", "veth7", Direction::Ingress)
        );
        // Another stage keeps its own table: no global.
        let mut plain = Decoder::new(DecodeSettings::default(), &info(1), Arc::default());
        plain.push(sample(&f, 5), &mut out);
        assert_eq!(out[1].application, "UNKNOWN");
        assert_eq!(Counters::get(&counters.decoded), 1);
    }

    #[test]
    fn a_fixed_prefix_is_stripped_and_short_frames_counted() {
        let counters = Arc::new(Counters::default());
        let settings = DecodeSettings {
            prefix: Prefix::Fixed(24),
            ..Default::default()
        };
        let mut d = Decoder::new(settings, &info(1), Arc::clone(&counters));
        let mut framed = vec![0xee; 24];
        framed.extend(udp(53));
        let mut out = Vec::new();
        d.push(sample(&framed, 1), &mut out);
        d.push(sample(&framed[..30], 2), &mut out);
        d.push(Err(RecordError::BadSize(3)), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].application, "DNS");
        assert_eq!(usize::from(out[0].packet_size), framed.len() - 24);
        assert_eq!(Counters::get(&counters.decode_errors), 2);
    }

    #[test]
    fn auto_detect_holds_frames_then_decodes_them_all_at_the_prefix_found() {
        let counters = Arc::new(Counters::default());
        let settings = DecodeSettings {
            prefix: Prefix::Auto,
            ..Default::default()
        };
        let mut d = Decoder::new(settings, &info(1), Arc::clone(&counters));
        let mut framed = vec![0u8; 16];
        framed.extend(udp(443));
        let mut out = Vec::new();
        for i in 0..3 {
            d.push(sample(&framed, i), &mut out);
        }
        assert!(out.is_empty(), "held while learning");
        d.finish(&mut out);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|r| r.application == "HTTPS"));
        assert_eq!(
            out.iter().map(|r| r.ts.0).collect::<Vec<_>>(),
            [0, 1, 2],
            "in order"
        );
    }

    /// Under TC the kernel has taken the outer tag out of the bytes (skb metadata): the row
    /// still has it as its VLAN, and its 4 bytes in the size; a tag left in the bytes is an
    /// inner one and does not replace it. The same after `-auto-detect` held the frames.
    #[test]
    fn a_tag_the_kernel_took_out_is_the_rows_vlan_and_counts_4_bytes() {
        let untagged = udp(53);
        let mut inner = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .single_vlan(12u16.try_into().unwrap())
            .ipv4([10, 9, 0, 1], [10, 9, 0, 2], 64)
            .udp(40_000, 53)
            .write(&mut inner, &[0; 20])
            .unwrap();
        let tagged = |frame, vlan, ts| {
            Ok(Sample {
                vlan,
                ..sample(frame, ts).unwrap()
            })
        };
        for prefix in [Prefix::Fixed(0), Prefix::Auto] {
            let counters = Arc::new(Counters::default());
            let settings = DecodeSettings {
                prefix,
                ..Default::default()
            };
            let mut d = Decoder::new(settings, &info(1), Arc::clone(&counters));
            let mut out = Vec::new();
            d.push(tagged(&untagged, Some(100), 1), &mut out);
            d.push(tagged(&inner, Some(300), 2), &mut out);
            d.push(tagged(&untagged, None, 3), &mut out);
            d.push(tagged(&inner, None, 4), &mut out);
            d.finish(&mut out);
            let got: Vec<_> = out
                .iter()
                .map(|r| (r.ts.0, r.vlan_id, usize::from(r.packet_size), r.application))
                .collect();
            assert_eq!(
                got,
                [
                    (1, Some(100), untagged.len() + 4, "DNS"),
                    (2, Some(300), inner.len() + 4, "DNS"),
                    (3, None, untagged.len(), "DNS"),
                    (4, Some(12), inner.len(), "DNS"),
                ],
                "{prefix:?}"
            );
        }
    }

    #[test]
    fn the_prefix_is_for_ethernet_frames_only() {
        let mut raw = Vec::new();
        PacketBuilder::ipv4([10, 9, 0, 1], [10, 9, 0, 2], 64)
            .udp(40_000, 53)
            .write(&mut raw, &[0; 4])
            .unwrap();
        let raw_sample = |ts| {
            Ok(Sample {
                link: Link::RawIp,
                ..sample(&raw, ts).unwrap()
            })
        };
        let counters = Arc::new(Counters::default());
        let settings = DecodeSettings {
            prefix: Prefix::Fixed(24),
            ..Default::default()
        };
        let mut d = Decoder::new(settings, &info(1), Arc::clone(&counters));
        let mut framed = vec![0xee; 24];
        framed.extend(udp(443));
        let mut out = Vec::new();
        d.push(raw_sample(1), &mut out);
        d.push(sample(&framed, 2), &mut out);
        d.push(raw_sample(3), &mut out);
        let got: Vec<_> = out
            .iter()
            .map(|r| (r.ts.0, r.application, r.src_mac.is_some()))
            .collect();
        assert_eq!(
            got,
            [(1, "DNS", false), (2, "HTTPS", true), (3, "DNS", false)]
        );
        assert!(d.warned_prefix);
        assert_eq!(Counters::get(&counters.decode_errors), 0);

        // -auto-detect holds Ethernet frames only; a 20-byte raw frame is no error either.
        let settings = DecodeSettings {
            prefix: Prefix::Auto,
            ..Default::default()
        };
        let mut d = Decoder::new(settings, &info(1), Arc::clone(&counters));
        let mut out = Vec::new();
        d.push(sample(&framed, 1), &mut out);
        d.push(raw_sample(2), &mut out);
        assert_eq!(out.iter().map(|r| r.ts.0).collect::<Vec<_>>(), [2]);
        d.finish(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].application, "HTTPS");

        // No prefix asked for: no warning.
        let mut d = Decoder::new(DecodeSettings::default(), &info(1), Arc::default());
        d.push(raw_sample(1), &mut Vec::new());
        assert!(!d.warned_prefix);
    }
}
