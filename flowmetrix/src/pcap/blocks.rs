//! What each block of a pcap or pcapng file says: link types (one per pcapng interface),
//! timestamp units, interface names and FCS lengths, and the frames themselves.

use pcap_parser::{Block, Linktype, PcapBlockOwned};

use super::{FrameInfo, PcapFileError};
use crate::{decode::Link, record::UnixNanos};

/// Per pcapng interface: link type, name and timestamp units.
#[derive(Debug, Clone)]
struct Interface {
    link: Link,
    /// `if_name`, when given.
    name: Option<std::sync::Arc<str>>,
    /// Bytes of FCS at the end of each frame (0: none).
    fcs: u32,
    /// Timestamp units per second.
    resolution: u64,
    offset_s: i64,
}

/// What the blocks read so far said.
pub(super) struct State {
    /// The file's name in errors.
    pub(super) path: String,
    /// Legacy pcap: link type, FCS bytes per frame and whether timestamps are in
    /// nanoseconds.
    legacy: Option<(Link, u32, bool)>,
    interfaces: Vec<Interface>,
    /// Frames read so far.
    pub(super) frames: u64,
}

/// Copies a frame's captured bytes (`caplen` of `data`) into `buf`, without the `fcs`
/// trailing bytes of a frame that has them; returns its length on the wire, without them too.
fn fill(buf: &mut Vec<u8>, data: &[u8], caplen: u32, origlen: u32, fcs: u32) -> u32 {
    let wire_len = origlen.saturating_sub(fcs);
    let captured = data.len().min(caplen as usize);
    let keep = if fcs == 0 {
        captured
    } else {
        captured.min(wire_len as usize)
    };
    buf.clear();
    buf.extend_from_slice(data.get(..keep).unwrap_or_default());
    wire_len
}

/// A pcap header's FCS length: when bit 28 of the link-type field is set, bits 29–31 count
/// the 16-bit words of FCS at the end of every frame.
fn legacy_fcs(field: Linktype) -> u32 {
    let field = field.0 as u32;
    if field & (1 << 28) != 0 {
        (field >> 29) * 2
    } else {
        0
    }
}

/// `if_name` (option 2): the interface's name, when it is printable UTF-8.
fn idb_name(options: &[pcap_parser::PcapNGOption<'_>]) -> Option<std::sync::Arc<str>> {
    const IF_NAME: u16 = 2;
    let bytes = options
        .iter()
        .find(|o| o.code.0 == IF_NAME)?
        .as_bytes()
        .ok()?;
    let name = std::str::from_utf8(bytes)
        .ok()?
        .trim_end_matches('\0')
        .trim();
    (!name.is_empty() && name.len() <= 255 && name.chars().all(|c| !c.is_control()))
        .then(|| name.into())
}

/// `if_fcslen` (option 13): the FCS length of every frame on the interface. The
/// specification says bits; some writers put bytes. Either reading of 2 or 4 bytes is taken.
fn idb_fcs(options: &[pcap_parser::PcapNGOption<'_>]) -> u32 {
    const IF_FCSLEN: u16 = 13;
    let value = options
        .iter()
        .find(|o| o.code.0 == IF_FCSLEN)
        .and_then(|o| o.as_bytes().ok()?.first().copied());
    match value {
        Some(v @ (2 | 4)) => u32::from(v),
        Some(v @ (16 | 32)) => u32::from(v) / 8,
        _ => 0,
    }
}

/// `epb_flags` (option 2) bits 5–8: this packet's FCS length in bytes, when given.
fn epb_fcs(options: &[pcap_parser::PcapNGOption<'_>]) -> Option<u32> {
    const EPB_FLAGS: u16 = 2;
    let flags = options
        .iter()
        .find(|o| o.code.0 == EPB_FLAGS)?
        .as_u32_le()
        .ok()?;
    Some((flags >> 5) & 0xf).filter(|&n| n != 0)
}

impl State {
    /// Nothing read yet from the file named `path`.
    pub(super) fn new(path: String) -> Self {
        Self {
            path,
            legacy: None,
            interfaces: Vec::new(),
            frames: 0,
        }
    }

    pub(super) fn corrupt(&self, detail: String) -> PcapFileError {
        PcapFileError::Corrupt {
            path: self.path.clone(),
            frames: self.frames,
            detail,
        }
    }

    /// The link type in a file's field: its lower 16 bits (a pcap header keeps the FCS
    /// length above them).
    fn link(&self, linktype: Linktype) -> Result<Link, PcapFileError> {
        let number = (linktype.0 as u32 & 0xffff) as u16;
        if let Some(link) = Link::from_linktype(number) {
            Ok(link)
        } else {
            // pcap-parser names the link types it knows (IEEE802_11, …).
            let name = Linktype(i32::from(number)).to_string();
            let name = if name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                format!(" ({name})")
            } else {
                String::new()
            };
            Err(PcapFileError::LinkType {
                path: self.path.clone(),
                linktype: number,
                name,
            })
        }
    }

    /// Handles one block; returns frame info (with `buf` filled) for packet blocks.
    pub(super) fn block(
        &mut self,
        block: PcapBlockOwned<'_>,
        buf: &mut Vec<u8>,
    ) -> Result<Option<FrameInfo>, PcapFileError> {
        match block {
            PcapBlockOwned::LegacyHeader(h) => {
                let link = self.link(h.network)?;
                self.legacy = Some((link, legacy_fcs(h.network), h.is_nanosecond_precision()));
                Ok(None)
            }
            PcapBlockOwned::Legacy(b) => {
                let (link, fcs, nanos) = self.legacy.unwrap_or((Link::Ethernet, 0, false));
                let frac = i64::from(b.ts_usec) * if nanos { 1 } else { 1_000 };
                Ok(Some(FrameInfo {
                    ts: UnixNanos(i64::from(b.ts_sec) * 1_000_000_000 + frac),
                    wire_len: fill(buf, b.data, b.caplen, b.origlen, fcs),
                    link,
                    interface: None,
                }))
            }
            PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                self.interfaces.clear();
                Ok(None)
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                let link = self.link(idb.linktype)?;
                let resolution = idb
                    .ts_resolution()
                    .filter(|&r| r > 0)
                    .ok_or_else(|| self.corrupt("invalid timestamp resolution".into()))?;
                self.interfaces.push(Interface {
                    link,
                    name: idb_name(&idb.options),
                    fcs: idb_fcs(&idb.options),
                    resolution,
                    offset_s: idb.ts_offset(),
                });
                Ok(None)
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                let iface = self
                    .interfaces
                    .get(epb.if_id as usize)
                    .cloned()
                    .ok_or_else(|| {
                        self.corrupt(format!("packet on undeclared interface {}", epb.if_id))
                    })?;
                let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                let secs = i64::try_from(units / iface.resolution)
                    .unwrap_or(i64::MAX)
                    .saturating_add(iface.offset_s);
                let frac = (units % iface.resolution) as i128 * 1_000_000_000
                    / i128::from(iface.resolution);
                let fcs = epb_fcs(&epb.options).unwrap_or(iface.fcs);
                Ok(Some(FrameInfo {
                    ts: UnixNanos(
                        secs.saturating_mul(1_000_000_000)
                            .saturating_add(frac as i64),
                    ),
                    wire_len: fill(buf, epb.data, epb.caplen, epb.origlen, fcs),
                    link: iface.link,
                    interface: iface.name,
                }))
            }
            PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                // Of the first interface; no timestamp: the best we have is none (0).
                let iface = self.interfaces.first().cloned().ok_or_else(|| {
                    self.corrupt("packet before any interface is declared".into())
                })?;
                Ok(Some(FrameInfo {
                    ts: UnixNanos(0),
                    wire_len: fill(buf, spb.data, spb.origlen, spb.origlen, iface.fcs),
                    link: iface.link,
                    interface: iface.name,
                }))
            }
            PcapBlockOwned::NG(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcap::{
        PcapFrames,
        test_files::{
            assert_clear, legacy, legacy_whole, options, pcapng_multi, read_all, write_tmp,
        },
    };

    #[test]
    fn unsupported_link_types_are_refused() {
        let mut bytes = legacy(&[(1, 0, &[0; 20])]);
        bytes[20..24].copy_from_slice(&239u32.to_le_bytes()); // netfilter log
        let p = write_tmp("nflog.pcap", &bytes);
        let mut f = PcapFrames::open(&p).unwrap();
        let e = f.next_frame(&mut Vec::new()).unwrap_err();
        assert!(
            matches!(e, PcapFileError::LinkType { linktype: 239, .. }),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "{} has unsupported link type 239 (NFLOG): replayed are Ethernet (1), Linux cooked captures (113, 276), raw IP (101, 228, 229) and BSD loopback (0, 108)",
                p.display()
            )
        );
        std::fs::write(&p, {
            let mut b = legacy(&[(1, 0, &[0; 20])]);
            b[20..24].copy_from_slice(&4000u32.to_le_bytes());
            b
        })
        .unwrap();
        let e = PcapFrames::open(&p)
            .unwrap()
            .next_frame(&mut Vec::new())
            .unwrap_err();
        assert_clear(&e);
        assert!(e.to_string().contains("unsupported link type 4000:"), "{e}");
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn every_replayed_link_type_reaches_the_frames() {
        for link in Link::ALL {
            let frames = read_all(legacy_whole(u32::from(link.linktype()), &[&[9; 30]]));
            assert_eq!(frames.len(), 1);
            assert_eq!(
                (frames[0].0.link, frames[0].0.wire_len),
                (link, 30),
                "{link}"
            );
            assert_eq!(frames[0].1, [9; 30]);
        }
    }

    #[test]
    fn fcs_bits_in_the_link_type_field_strip_the_fcs() {
        let frame: Vec<u8> = (0..64).collect();
        // F bit (28) set, 2 16-bit words (bits 29-31): a 4-byte FCS; link type Ethernet.
        let field = (2 << 29) | (1 << 28) | 1;
        let frames = read_all(legacy_whole(field, &[&frame]));
        assert_eq!(frames[0].0.link, Link::Ethernet);
        assert_eq!(frames[0].0.wire_len, 60);
        assert_eq!(frames[0].1, frame[..60]);
        // Length bits without the F bit: no FCS. Reserved bits: ignored.
        let frames = read_all(legacy_whole((2 << 29) | 1, &[&frame]));
        assert_eq!((frames[0].0.wire_len, frames[0].1.len()), (64, 64));
        let frames = read_all(legacy_whole((0x3ff << 16) | 113, &[&frame]));
        assert_eq!(frames[0].0.link, Link::LinuxSll);
        // A record cut before its FCS keeps what it has; the wire length loses the FCS.
        let mut bytes = legacy(&[(1, 0, &frame[..40])]);
        bytes[20..24].copy_from_slice(&((2u32 << 29) | (1 << 28) | 1).to_le_bytes());
        let frames = read_all(bytes);
        assert_eq!((frames[0].0.wire_len, frames[0].1.len()), (136, 40));
        // A 2-byte FCS on a frame shorter than it: nothing left, no panic.
        let frames = read_all(legacy_whole((1 << 29) | (1 << 28) | 1, &[&[1]]));
        assert_eq!((frames[0].0.wire_len, frames[0].1.len()), (0, 0));
    }

    #[test]
    fn pcapng_interfaces_keep_their_own_link_type_and_fcs() {
        let frame: Vec<u8> = (0..64).collect();
        let bytes = pcapng_multi(
            &[
                (1, Vec::new()),
                (276, Vec::new()),
                (1, options(&[(13, &[4])])),    // if_fcslen: 4
                (101, options(&[(13, &[32])])), // if_fcslen in bits
            ],
            &[
                (0, &frame, Vec::new()),
                (1, &frame, Vec::new()),
                (2, &frame, Vec::new()),
                (3, &frame, Vec::new()),
                // epb_flags with an FCS length of 2 (bits 5-8) overrides the interface's.
                (2, &frame, options(&[(2, &(2u32 << 5).to_le_bytes())])),
                (0, &frame, options(&[(2, &(4u32 << 5).to_le_bytes())])),
            ],
        );
        let got: Vec<(Link, u32, usize)> = read_all(bytes)
            .into_iter()
            .map(|(i, b)| (i.link, i.wire_len, b.len()))
            .collect();
        assert_eq!(
            got,
            [
                (Link::Ethernet, 64, 64),
                (Link::LinuxSll2, 64, 64),
                (Link::Ethernet, 60, 60),
                (Link::RawIp, 60, 60),
                (Link::Ethernet, 62, 62),
                (Link::Ethernet, 60, 60),
            ]
        );
    }

    #[test]
    fn pcapng_interfaces_keep_their_names() {
        let frame: Vec<u8> = (0..64).collect();
        let bytes = pcapng_multi(
            &[
                (1, options(&[(2, b"eth3")])), // if_name
                (1, Vec::new()),
                (1, options(&[(2, b"bad\x01name")])),
            ],
            &[
                (0, &frame, Vec::new()),
                (1, &frame, Vec::new()),
                (2, &frame, Vec::new()),
            ],
        );
        let names: Vec<Option<String>> = read_all(bytes)
            .into_iter()
            .map(|(i, _)| i.interface.map(|n| n.to_string()))
            .collect();
        assert_eq!(names, [Some("eth3".to_owned()), None, None]);
    }

    #[test]
    fn an_unsupported_pcapng_interface_is_refused() {
        let bytes = pcapng_multi(&[(1, Vec::new()), (105, Vec::new())], &[]);
        let mut f =
            PcapFrames::from_reader("x".into(), Box::new(std::io::Cursor::new(bytes))).unwrap();
        let e = f.next_frame(&mut Vec::new()).unwrap_err();
        assert!(
            matches!(e, PcapFileError::LinkType { linktype: 105, .. }),
            "{e}"
        );
    }

    #[test]
    fn a_huge_pcapng_timestamp_saturates() {
        let mut bytes = pcapng_multi(&[(1, Vec::new())], &[(0, &[1; 20], Vec::new())]);
        // The EPB's timestamp words (after SHB 28 + IDB 20 + EPB type, length, if_id).
        let at = 28 + 20 + 12;
        bytes[at..at + 8].copy_from_slice(&[0xff; 8]);
        let frames = read_all(bytes);
        assert_eq!(frames[0].0.ts, UnixNanos(i64::MAX));
    }
}
