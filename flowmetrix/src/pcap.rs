//! Frames from a pcap or pcapng file (`--pcap FILE`), for replay through the same
//! offset → decode → sink path as live capture.

use std::{fs::File, path::Path};

use pcap_parser::{
    Block, Linktype, PcapBlockOwned, PcapError, create_reader, traits::PcapReaderIterator,
};

use crate::record::UnixNanos;

#[derive(Debug, thiserror::Error)]
pub enum PcapFileError {
    #[error("cannot open {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a pcap or pcapng file")]
    NotPcap { path: String },
    #[error("{path} is truncated: it ends inside a record after {frames} frames")]
    Truncated { path: String, frames: u64 },
    #[error("{path} is corrupt after {frames} frames ({detail})")]
    Corrupt {
        path: String,
        frames: u64,
        detail: String,
    },
    #[error("{path}: link type {linktype} is not Ethernet; only Ethernet captures can be replayed")]
    LinkType { path: String, linktype: i32 },
}

/// One frame from the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    pub ts: UnixNanos,
    /// Length on the wire (`origlen`); the bytes may be fewer.
    pub wire_len: u32,
}

/// Per pcapng interface: link type and timestamp units.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: Linktype,
    /// Timestamp units per second.
    resolution: u64,
    offset_s: i64,
}

pub struct PcapFrames {
    reader: Box<dyn PcapReaderIterator + Send>,
    st: State,
}

/// What the blocks read so far said.
struct State {
    path: String,
    /// Legacy pcap: link type and whether timestamps are in nanoseconds.
    legacy: Option<(Linktype, bool)>,
    interfaces: Vec<Interface>,
    frames: u64,
}

const BUFFER: usize = 1 << 20;

impl PcapFrames {
    pub fn open(path: &Path) -> Result<Self, PcapFileError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| PcapFileError::Open {
            path: name.clone(),
            source,
        })?;
        let reader = create_reader(BUFFER, file).map_err(|e| match e {
            PcapError::Eof | PcapError::HeaderNotRecognized | PcapError::Incomplete(_) => {
                PcapFileError::NotPcap { path: name.clone() }
            }
            other => PcapFileError::Corrupt {
                path: name.clone(),
                frames: 0,
                detail: format!("{other:?}"),
            },
        })?;
        Ok(Self {
            reader,
            st: State {
                path: name,
                legacy: None,
                interfaces: Vec::new(),
                frames: 0,
            },
        })
    }

    /// Frames read so far.
    pub fn frames(&self) -> u64 {
        self.st.frames
    }

    /// Copies the next frame's bytes into `buf`; `None` at the end of the file.
    pub fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<Option<FrameInfo>, PcapFileError> {
        loop {
            let (consumed, info) = match self.reader.next() {
                Ok((consumed, block)) => {
                    let info = self.st.block(block, buf)?;
                    (consumed, info)
                }
                Err(PcapError::Eof) => return Ok(None),
                Err(PcapError::Incomplete(_)) => {
                    let st = &self.st;
                    self.reader.refill().map_err(|e| match e {
                        PcapError::Eof | PcapError::UnexpectedEof | PcapError::Incomplete(_) => {
                            PcapFileError::Truncated {
                                path: st.path.clone(),
                                frames: st.frames,
                            }
                        }
                        other => st.corrupt(format!("{other:?}")),
                    })?;
                    continue;
                }
                Err(PcapError::UnexpectedEof) => {
                    return Err(PcapFileError::Truncated {
                        path: self.st.path.clone(),
                        frames: self.st.frames,
                    });
                }
                Err(e) => return Err(self.st.corrupt(format!("{e:?}"))),
            };
            self.reader.consume(consumed);
            if let Some(info) = info {
                self.st.frames += 1;
                return Ok(Some(info));
            }
        }
    }
}

impl State {
    fn corrupt(&self, detail: String) -> PcapFileError {
        PcapFileError::Corrupt {
            path: self.path.clone(),
            frames: self.frames,
            detail,
        }
    }

    fn ethernet_only(&self, linktype: Linktype) -> Result<(), PcapFileError> {
        if linktype == Linktype::ETHERNET {
            Ok(())
        } else {
            Err(PcapFileError::LinkType {
                path: self.path.clone(),
                linktype: linktype.0,
            })
        }
    }

    /// Handles one block; returns frame info (with `buf` filled) for packet blocks.
    fn block(
        &mut self,
        block: PcapBlockOwned<'_>,
        buf: &mut Vec<u8>,
    ) -> Result<Option<FrameInfo>, PcapFileError> {
        let mut copy = |data: &[u8], caplen: u32| {
            buf.clear();
            buf.extend_from_slice(&data[..data.len().min(caplen as usize)]);
        };
        match block {
            PcapBlockOwned::LegacyHeader(h) => {
                self.ethernet_only(h.network)?;
                self.legacy = Some((h.network, h.is_nanosecond_precision()));
                Ok(None)
            }
            PcapBlockOwned::Legacy(b) => {
                let nanos = self.legacy.is_some_and(|(_, ns)| ns);
                let frac = i64::from(b.ts_usec) * if nanos { 1 } else { 1_000 };
                copy(b.data, b.caplen);
                Ok(Some(FrameInfo {
                    ts: UnixNanos(i64::from(b.ts_sec) * 1_000_000_000 + frac),
                    wire_len: b.origlen,
                }))
            }
            PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                self.interfaces.clear();
                Ok(None)
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                self.ethernet_only(idb.linktype)?;
                let resolution = idb
                    .ts_resolution()
                    .ok_or_else(|| self.corrupt("invalid timestamp resolution".into()))?;
                self.interfaces.push(Interface {
                    linktype: idb.linktype,
                    resolution,
                    offset_s: idb.ts_offset(),
                });
                Ok(None)
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                let iface = *self.interfaces.get(epb.if_id as usize).ok_or_else(|| {
                    self.corrupt(format!("packet on undeclared interface {}", epb.if_id))
                })?;
                debug_assert_eq!(iface.linktype, Linktype::ETHERNET);
                let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                let secs = (units / iface.resolution) as i64 + iface.offset_s;
                let frac = (units % iface.resolution) as i128 * 1_000_000_000
                    / i128::from(iface.resolution);
                copy(epb.data, epb.caplen);
                Ok(Some(FrameInfo {
                    ts: UnixNanos(secs * 1_000_000_000 + frac as i64),
                    wire_len: epb.origlen,
                }))
            }
            PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                // No timestamp in a simple packet block: the best we have is none (0).
                copy(spb.data, spb.origlen);
                Ok(Some(FrameInfo {
                    ts: UnixNanos(0),
                    wire_len: spb.origlen,
                }))
            }
            PcapBlockOwned::NG(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy pcap (microseconds, Ethernet) with these (ts_sec, ts_usec, frame) records.
    fn legacy(records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&4u16.to_le_bytes());
        v.extend_from_slice(&0i32.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&65535u32.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        for (s, us, data) in records {
            v.extend_from_slice(&s.to_le_bytes());
            v.extend_from_slice(&us.to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32 + 100).to_le_bytes());
            v.extend_from_slice(data);
        }
        v
    }

    fn write_tmp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("fmx-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn reads_legacy_frames_with_time_and_wire_length() {
        let p = write_tmp("ok.pcap", &legacy(&[(10, 5, &[1; 60]), (11, 0, &[2; 42])]));
        let mut f = PcapFrames::open(&p).unwrap();
        let mut buf = Vec::new();
        let a = f.next_frame(&mut buf).unwrap().unwrap();
        assert_eq!(a.ts, UnixNanos(10_000_005_000));
        assert_eq!((a.wire_len, buf.len()), (160, 60));
        let b = f.next_frame(&mut buf).unwrap().unwrap();
        assert_eq!(
            (b.ts, buf.as_slice()),
            (UnixNanos(11_000_000_000), &[2u8; 42][..])
        );
        assert!(f.next_frame(&mut buf).unwrap().is_none());
        assert_eq!(f.frames(), 2);
        std::fs::remove_file(p).unwrap();
    }

    /// A pcapng with one Ethernet interface (microseconds) and these (ts_us, frame) packets.
    fn pcapng(records: &[(u64, &[u8])]) -> Vec<u8> {
        fn block(v: &mut Vec<u8>, kind: u32, body: &[u8]) {
            let len = 12 + body.len() as u32;
            v.extend_from_slice(&kind.to_le_bytes());
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(body);
            v.extend_from_slice(&len.to_le_bytes());
        }
        let mut v = Vec::new();
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        block(&mut v, 0x0a0d_0d0a, &shb);
        let mut idb = Vec::new();
        idb.extend_from_slice(&1u16.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes());
        block(&mut v, 1, &idb);
        for (ts, data) in records {
            let mut epb = Vec::new();
            epb.extend_from_slice(&0u32.to_le_bytes());
            epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
            epb.extend_from_slice(&(*ts as u32).to_le_bytes());
            epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
            epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
            epb.extend_from_slice(data);
            epb.resize(epb.len().div_ceil(4) * 4, 0);
            block(&mut v, 6, &epb);
        }
        v
    }

    #[test]
    fn reads_pcapng_enhanced_packets() {
        let p = write_tmp("ok.pcapng", &pcapng(&[(1_795_000_000_123_456, &[7; 61])]));
        let mut f = PcapFrames::open(&p).unwrap();
        let mut buf = Vec::new();
        let a = f.next_frame(&mut buf).unwrap().unwrap();
        assert_eq!(a.ts, UnixNanos(1_795_000_000_123_456_000));
        assert_eq!(
            (a.wire_len, buf.as_slice()),
            (61, &[7u8; 61][..]),
            "padding removed"
        );
        assert!(f.next_frame(&mut buf).unwrap().is_none());
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn a_truncated_file_errors_after_the_good_frames() {
        let mut bytes = legacy(&[(10, 5, &[1; 60]), (11, 0, &[2; 42])]);
        bytes.truncate(bytes.len() - 10);
        let p = write_tmp("cut.pcap", &bytes);
        let mut f = PcapFrames::open(&p).unwrap();
        let mut buf = Vec::new();
        assert!(f.next_frame(&mut buf).unwrap().is_some());
        let e = f.next_frame(&mut buf).unwrap_err();
        assert!(
            matches!(e, PcapFileError::Truncated { frames: 1, .. }),
            "{e}"
        );
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn not_a_pcap_and_missing_files_are_clear_errors() {
        let p = write_tmp("text.pcap", b"hello, this is not a capture file at all....");
        assert!(matches!(
            PcapFrames::open(&p),
            Err(PcapFileError::NotPcap { .. })
        ));
        std::fs::remove_file(p).unwrap();
        let e = PcapFrames::open(Path::new("/nonexistent/x.pcap"))
            .err()
            .unwrap();
        assert!(matches!(e, PcapFileError::Open { .. }), "{e}");
    }

    #[test]
    fn non_ethernet_captures_are_refused() {
        let mut bytes = legacy(&[(1, 0, &[0; 20])]);
        bytes[20..24].copy_from_slice(&113u32.to_le_bytes()); // Linux cooked capture
        let p = write_tmp("sll.pcap", &bytes);
        let mut f = PcapFrames::open(&p).unwrap();
        let e = f.next_frame(&mut Vec::new()).unwrap_err();
        assert!(
            matches!(e, PcapFileError::LinkType { linktype: 113, .. }),
            "{e}"
        );
        std::fs::remove_file(p).unwrap();
    }
}
