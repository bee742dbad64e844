//! What each block of a pcap or pcapng file says: link types (one per pcapng interface),
//! timestamp units, interface names and FCS lengths, and the frames themselves.

use pcap_parser::{Block, Linktype, PcapBlockOwned};

use super::error::PcapFileError;
use crate::{decode::Link, record::UnixNanos};

/// One frame from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameInfo {
    pub ts: UnixNanos,
    /// Length on the wire (`origlen`, less any FCS); the bytes may be fewer.
    pub wire_len: u32,
    /// What the frame starts with.
    pub link: Link,
    /// The name of the interface it was captured on, when the file says (pcapng `if_name`).
    pub interface: Option<std::sync::Arc<str>>,
}

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
