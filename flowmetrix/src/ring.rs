//! Drain the kernel ring buffer asynchronously (tokio AsyncFd: no busy loop, no blocking
//! read) and turn each record into a header + frame bytes with a wall-clock timestamp.

use std::mem::size_of;

use aya::maps::{MapData, RingBuf};
// The kernel's direction (the ring record's number), not the rows' `record::Direction`.
use flowmetrix_common::{
    Direction as KernelDirection, SAMPLE_DNS_ONLY, SLOT_SIZES, SampleHeader, VLAN_PRESENT,
};
use tokio::io::{Interest, unix::AsyncFd};

use crate::sample::RecordError;

const HEADER_SIZE: usize = size_of::<SampleHeader>();

/// One record from the ring, borrowed.
#[derive(Debug)]
pub struct RawSample<'a> {
    pub header: SampleHeader,
    /// `header.direction`, checked.
    pub direction: KernelDirection,
    /// A DNS packet passed outside the sampling ([`SAMPLE_DNS_ONLY`]).
    pub dns_only: bool,
    /// The VLAN id of an outer tag the kernel took out of the frame (`header.vlan`):
    /// it was on the wire but is not in `frame` nor in `header.wire_len`.
    pub vlan: Option<u16>,
    pub frame: &'a [u8],
}

/// Validates a ring record and splits it into header and captured bytes.
pub fn parse_record(bytes: &[u8]) -> Result<RawSample<'_>, RecordError> {
    let slot = bytes.len().wrapping_sub(HEADER_SIZE);
    if bytes.len() < HEADER_SIZE || !SLOT_SIZES.contains(&slot) {
        return Err(RecordError::BadSize(bytes.len()));
    }
    let (head, data) = bytes.split_at(HEADER_SIZE);
    // SAFETY: `head` has exactly size_of::<SampleHeader>() bytes; SampleHeader is plain
    // #[repr(C)] integers, valid for any bit pattern; read_unaligned needs no alignment.
    let header = unsafe { head.as_ptr().cast::<SampleHeader>().read_unaligned() };
    let frame = data
        .get(..header.cap_len as usize)
        .ok_or(RecordError::BadCapLen(header.cap_len, slot))?;
    let direction = match header.direction & !SAMPLE_DNS_ONLY {
        d if d == KernelDirection::Ingress as u16 => KernelDirection::Ingress,
        d if d == KernelDirection::Egress as u16 => KernelDirection::Egress,
        _ => return Err(RecordError::BadDirection(header.direction)),
    };
    let vlan = (header.vlan & VLAN_PRESENT != 0).then_some(header.vlan & 0x0fff);
    Ok(RawSample {
        header,
        direction,
        dns_only: header.direction & SAMPLE_DNS_ONLY != 0,
        vlan,
        frame,
    })
}

/// Records one drain hands over at most: the rows made of them wait in memory until they
/// are handed to the sink, so a drain never outlasts a producer faster than it.
pub const MAX_DRAIN: usize = 8192;

/// The ring buffer, readable through tokio.
pub struct Ring {
    fd: AsyncFd<RingBuf<MapData>>,
    /// The last drain stopped at [`MAX_DRAIN`] with records left: readable at once.
    more: bool,
}

impl Ring {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, until it is
        // dropped, which happens only with the AsyncFd.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Self { fd, more: false })
    }

    /// Waits until the kernel has published records (at once when the last drain left
    /// some).
    pub async fn readable(&mut self) -> std::io::Result<()> {
        if std::mem::take(&mut self.more) {
            return Ok(());
        }
        let mut guard = self.fd.readable().await?;
        guard.clear_ready();
        Ok(())
    }

    /// The last drain stopped at [`MAX_DRAIN`] with records left.
    pub fn has_more(&self) -> bool {
        self.more
    }

    /// Hands the records available now to `f`, [`MAX_DRAIN`] at most; returns how many
    /// there were.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let ring = self.fd.get_mut();
        let mut n = 0;
        while n < MAX_DRAIN {
            let Some(item) = ring.next() else {
                return n;
            };
            f(&item);
            n += 1;
        }
        self.more = true;
        n
    }
}

/// Forwards the XDP program's log messages until the runtime shuts down.
pub fn spawn_logger(logger: crate::capture::EbpfLogger) -> std::io::Result<()> {
    // SAFETY: the logger owns its ring fd and keeps it open until dropped with the AsyncFd.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    tokio::spawn(async move {
        while let Ok(mut guard) = fd.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cap_len: u16, fill: u8) -> Vec<u8> {
        record_in(flowmetrix_common::MAX_SNAPLEN, cap_len, fill)
    }

    fn record_in(slot: usize, cap_len: u16, fill: u8) -> Vec<u8> {
        record_dir(slot, cap_len, fill, 0)
    }

    fn record_dir(slot: usize, cap_len: u16, fill: u8, direction: u16) -> Vec<u8> {
        record_with(
            SampleHeader {
                ts_boot_ns: 5,
                wire_len: 1500,
                cap_len,
                ifindex: 3,
                rx_queue: 1,
                direction,
                cgroup_id: 0x0102_0304_0506_0708,
                ..SampleHeader::default()
            },
            slot,
            fill,
        )
    }

    fn record_with(header: SampleHeader, slot: usize, fill: u8) -> Vec<u8> {
        let mut v = Vec::new();
        // SAFETY: SampleHeader is plain integers without padding.
        let head: [u8; size_of::<SampleHeader>()] = unsafe { std::mem::transmute(header) };
        v.extend_from_slice(&head);
        v.resize(HEADER_SIZE + slot, fill);
        v
    }

    #[test]
    fn parses_a_record() {
        let r = record(60, 0xab);
        let s = parse_record(&r).unwrap();
        assert_eq!(s.header.wire_len, 1500);
        assert_eq!(s.header.ifindex, 3);
        assert_eq!(s.header.rx_queue, 1);
        assert_eq!(s.header.cgroup_id, 0x0102_0304_0506_0708);
        assert_eq!(s.direction, KernelDirection::Ingress);
        assert_eq!(s.frame, &[0xab; 60][..]);
        assert_eq!(s.vlan, None);
        let r = record_dir(64, 10, 0, 1);
        assert_eq!(parse_record(&r).unwrap().direction, KernelDirection::Egress);
    }

    #[test]
    fn a_tag_outside_the_bytes_is_the_vlan() {
        let header = SampleHeader {
            wire_len: 60,
            cap_len: 60,
            vlan: VLAN_PRESENT | 100,
            ..SampleHeader::default()
        };
        let r = record_with(header, 64, 0);
        let s = parse_record(&r).unwrap();
        assert_eq!((s.vlan, s.header.wire_len), (Some(100), 60));
        // An id of 0 is a tag too (priority-tagged); no present bit is no tag.
        for (vlan, want) in [
            (VLAN_PRESENT, Some(0)),
            (VLAN_PRESENT | 4095, Some(4095)),
            (0, None),
            (100, None),
        ] {
            let r = record_with(SampleHeader { vlan, ..header }, 64, 0);
            assert_eq!(parse_record(&r).unwrap().vlan, want, "{vlan:#x}");
        }
    }

    #[test]
    fn a_dns_copy_keeps_its_direction_and_says_so() {
        let r = record_dir(64, 10, 1, KernelDirection::Egress as u16 | SAMPLE_DNS_ONLY);
        let s = parse_record(&r).unwrap();
        assert_eq!((s.direction, s.dns_only), (KernelDirection::Egress, true));
        let r = record_dir(64, 10, 1, KernelDirection::Egress as u16);
        assert!(!parse_record(&r).unwrap().dns_only);
    }

    #[test]
    fn rejects_an_unknown_direction() {
        let r = record_dir(64, 10, 0, 2);
        assert_eq!(parse_record(&r).unwrap_err(), RecordError::BadDirection(2));
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(
            parse_record(&[0; 10]).unwrap_err(),
            RecordError::BadSize(10)
        );
        let r = record(257, 0);
        assert_eq!(
            parse_record(&r).unwrap_err(),
            RecordError::BadCapLen(257, 256)
        );
        let r = record_in(64, 65, 0);
        assert_eq!(
            parse_record(&r).unwrap_err(),
            RecordError::BadCapLen(65, 64)
        );
        let r = record_in(100, 60, 0);
        assert_eq!(
            parse_record(&r).unwrap_err(),
            RecordError::BadSize(HEADER_SIZE + 100)
        );
    }

    #[test]
    fn parses_every_slot_size() {
        for slot in SLOT_SIZES {
            let r = record_in(slot, slot as u16, 0xcd);
            assert_eq!(parse_record(&r).unwrap().frame, &vec![0xcd; slot][..]);
            let r = record_in(slot, 0, 0xcd);
            assert!(parse_record(&r).unwrap().frame.is_empty());
        }
    }
}
