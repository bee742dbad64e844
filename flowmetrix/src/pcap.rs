//! Frames from a pcap or pcapng file (`--pcap FILE`), for replay through the same
//! offset → decode → sink path as live capture. Each frame carries its link type (pcapng
//! keeps one per interface); a trailing FCS the file declares is taken off.

use std::{
    fs::File,
    io::Read,
    path::Path,
    sync::{Arc, Mutex},
};

use pcap_parser::{
    Block, Linktype, PcapBlockOwned, PcapError, create_reader, traits::PcapReaderIterator,
};

use crate::{decode::Link, record::UnixNanos};

/// Every error is one sentence about the file, never a parser's internal name.
#[derive(Debug, thiserror::Error)]
pub enum PcapFileError {
    #[error("cannot open {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is a directory, not a pcap or pcapng file")]
    IsDirectory { path: String },
    #[error("{path} is empty, not a pcap or pcapng file")]
    Empty { path: String },
    #[error("{path} is not a pcap or pcapng file")]
    NotPcap { path: String },
    #[error("{path} is truncated: it ends inside its file header")]
    TruncatedHeader { path: String },
    #[error("{path} is truncated: it ends inside a record after {frames} frames")]
    Truncated { path: String, frames: u64 },
    #[error("cannot read {path} after {frames} frames")]
    Read {
        path: String,
        frames: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt after {frames} frames: {detail}")]
    Corrupt {
        path: String,
        frames: u64,
        detail: String,
    },
    #[error(
        "{path} has unsupported link type {linktype}{name}: replayed are Ethernet (1), Linux cooked captures (113, 276), raw IP (101, 228, 229) and BSD loopback (0, 108)"
    )]
    LinkType {
        path: String,
        linktype: u16,
        name: String,
    },
}

/// What `--pcap -` reads.
pub const STDIN: &str = "-";

/// The file (or standard input) under the pcap reader: it keeps the last I/O error, which
/// the parser replaces by a bare "read error", and the first bytes, to tell a truncated
/// header from something that is no capture at all. Its first read returns at least a
/// file header's worth of bytes, also from a pipe that delivers them a few at a time.
struct Input {
    inner: Box<dyn Read + Send>,
    first: bool,
    seen: Arc<Mutex<Seen>>,
}

#[derive(Default)]
struct Seen {
    error: Option<std::io::Error>,
    head: Vec<u8>,
}

/// More than a pcap (24) or pcapng (28) file header.
const HEAD: usize = 64;

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = if self.first { HEAD.min(buf.len()) } else { 1 };
        let mut n = 0;
        while n < want.max(1) {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = e.kind();
                    if let Ok(mut seen) = self.seen.lock() {
                        seen.error = Some(e);
                    }
                    return Err(kind.into());
                }
            }
            if !self.first {
                break;
            }
        }
        if self.first {
            self.first = false;
            if let Ok(mut seen) = self.seen.lock() {
                seen.head = buf[..n.min(4)].to_vec();
            }
        }
        Ok(n)
    }
}

/// The magic numbers a pcap (either byte order, µs or ns) or pcapng file starts with.
fn is_capture_magic(head: &[u8]) -> bool {
    let Ok(m) = <[u8; 4]>::try_from(head) else {
        return false;
    };
    [0xa1b2_c3d4u32, 0xa1b2_3c4d, 0x0a0d_0d0a]
        .iter()
        .any(|magic| m == magic.to_le_bytes() || m == magic.to_be_bytes())
}

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

pub struct PcapFrames {
    reader: Box<dyn PcapReaderIterator + Send>,
    /// The input's last I/O error.
    seen: Arc<Mutex<Seen>>,
    st: State,
}

/// What the blocks read so far said.
struct State {
    path: String,
    /// Legacy pcap: link type, FCS bytes per frame and whether timestamps are in
    /// nanoseconds.
    legacy: Option<(Link, u32, bool)>,
    interfaces: Vec<Interface>,
    frames: u64,
}

const BUFFER: usize = 1 << 20;

impl PcapFrames {
    /// Opens a capture file, or standard input for `-`.
    pub fn open(path: &Path) -> Result<Self, PcapFileError> {
        let (name, inner) = Self::input(path)?;
        Self::from_reader(name, inner)
    }

    fn input(path: &Path) -> Result<(String, Box<dyn Read + Send>), PcapFileError> {
        let stdin = path.as_os_str() == STDIN;
        let name = if stdin {
            "standard input".to_owned()
        } else {
            path.display().to_string()
        };
        let inner: Box<dyn Read + Send> = if stdin {
            Box::new(std::io::stdin())
        } else {
            let file = File::open(path).map_err(|source| PcapFileError::Open {
                path: name.clone(),
                source,
            })?;
            if file.metadata().is_ok_and(|m| m.is_dir()) {
                return Err(PcapFileError::IsDirectory { path: name });
            }
            Box::new(file)
        };
        Ok((name, inner))
    }

    /// Reads a capture from `inner`, named `name` in errors.
    pub fn from_reader(name: String, inner: Box<dyn Read + Send>) -> Result<Self, PcapFileError> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let input = Input {
            inner,
            first: true,
            seen: Arc::clone(&seen),
        };
        let reader = create_reader(BUFFER, input).map_err(|e| {
            let mut seen = seen
                .lock()
                .map(|mut s| std::mem::take(&mut *s))
                .unwrap_or_default();
            let path = name.clone();
            match e {
                PcapError::Eof => PcapFileError::Empty { path },
                PcapError::Incomplete(_) if is_capture_magic(&seen.head) => {
                    PcapFileError::TruncatedHeader { path }
                }
                PcapError::ReadError => match seen.error.take() {
                    Some(source) => PcapFileError::Read {
                        path,
                        frames: 0,
                        source,
                    },
                    None => PcapFileError::NotPcap { path },
                },
                _ => PcapFileError::NotPcap { path },
            }
        })?;
        Ok(Self {
            reader,
            seen,
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
                    let refilled = self.reader.refill().map_err(|e| reason(&e));
                    if let Err(why) = refilled {
                        return Err(self.error(why));
                    }
                    continue;
                }
                Err(e) => {
                    let why = reason(&e);
                    return Err(self.error(why));
                }
            };
            self.reader.consume(consumed);
            if let Some(info) = info {
                self.st.frames += 1;
                return Ok(Some(info));
            }
        }
    }

    fn error(&self, why: Reason) -> PcapFileError {
        let (path, frames) = (self.st.path.clone(), self.st.frames);
        match why {
            Reason::Truncated => PcapFileError::Truncated { path, frames },
            Reason::Read => match self.seen.lock().ok().and_then(|mut s| s.error.take()) {
                Some(source) => PcapFileError::Read {
                    path,
                    frames,
                    source,
                },
                None => self.st.corrupt("a read failed".into()),
            },
            Reason::Corrupt(detail) => self.st.corrupt(detail.into()),
        }
    }
}

/// What a parser error means for the file.
enum Reason {
    Truncated,
    Read,
    Corrupt(&'static str),
}

fn reason<I>(e: &PcapError<I>) -> Reason {
    match e {
        PcapError::Eof | PcapError::UnexpectedEof | PcapError::Incomplete(_) => Reason::Truncated,
        PcapError::ReadError => Reason::Read,
        PcapError::BufferTooSmall => {
            Reason::Corrupt("a record claims to be larger than 1 MiB (its length field is damaged)")
        }
        PcapError::HeaderNotRecognized => {
            Reason::Corrupt("a section does not start with a pcap or pcapng header")
        }
        PcapError::NomError(..) | PcapError::OwnedNomError(..) => {
            Reason::Corrupt("a record's header does not parse (it is damaged)")
        }
    }
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
    fn corrupt(&self, detail: String) -> PcapFileError {
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
    fn block(
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

    /// Every error is a sentence about the file: no parser-internal names leak.
    fn assert_clear(e: &PcapFileError) {
        let text = e.to_string();
        for internal in [
            "ReadError",
            "BufferTooSmall",
            "NomError",
            "Incomplete",
            "UnexpectedEof",
            "HeaderNotRecognized",
            "Linktype(",
        ] {
            assert!(!text.contains(internal), "{text}");
        }
    }

    #[test]
    fn a_directory_is_named_as_one() {
        let dir = std::env::temp_dir().join(format!("fmx-{}-dir.pcap", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = PcapFrames::open(&dir).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "{} is a directory, not a pcap or pcapng file",
                dir.display()
            )
        );
        std::fs::remove_dir(dir).unwrap();
    }

    #[test]
    fn empty_and_header_only_files_say_so() {
        let p = write_tmp("empty.pcap", b"");
        let e = PcapFrames::open(&p).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!("{} is empty, not a pcap or pcapng file", p.display())
        );
        let header = legacy(&[]);
        std::fs::write(&p, &header[..10]).unwrap();
        let e = PcapFrames::open(&p).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "{} is truncated: it ends inside its file header",
                p.display()
            )
        );
        std::fs::write(&p, b"short").unwrap();
        let e = PcapFrames::open(&p).err().unwrap();
        assert!(matches!(e, PcapFileError::NotPcap { .. }), "{e}");
        // A file of only a header holds no frames: that is not an error.
        std::fs::write(&p, &header).unwrap();
        let mut f = PcapFrames::open(&p).unwrap();
        assert!(f.next_frame(&mut Vec::new()).unwrap().is_none());
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn a_damaged_record_length_is_corruption_after_the_good_frames() {
        let mut bytes = legacy(&[(10, 5, &[1; 60]), (11, 0, &[2; 42])]);
        // The second record's caplen (after 24 + 16 + 60 bytes, then ts_sec and ts_usec).
        let at = 24 + 16 + 60 + 8;
        bytes[at..at + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        bytes.extend_from_slice(&[0; 2 << 20]);
        let p = write_tmp("huge.pcap", &bytes);
        let mut f = PcapFrames::open(&p).unwrap();
        let mut buf = Vec::new();
        assert!(f.next_frame(&mut buf).unwrap().is_some());
        let e = f.next_frame(&mut buf).unwrap_err();
        assert_clear(&e);
        assert_eq!(
            e.to_string(),
            format!(
                "{} is corrupt after 1 frames: a record claims to be larger than 1 MiB (its length field is damaged)",
                p.display()
            )
        );
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn a_pipe_that_trickles_bytes_still_reads() {
        /// Gives one byte per read, as a slow pipe may.
        struct Trickle(std::io::Cursor<Vec<u8>>);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(1);
                self.0.read(&mut buf[..n])
            }
        }
        let bytes = legacy(&[(10, 5, &[1; 60])]);
        let mut input = Input {
            inner: Box::new(Trickle(std::io::Cursor::new(bytes))),
            first: true,
            seen: Arc::default(),
        };
        let mut buf = [0u8; 1024];
        assert_eq!(input.read(&mut buf).unwrap(), HEAD);
        assert_eq!(input.read(&mut buf).unwrap(), 1, "later reads pass through");
    }

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

    /// A legacy pcap with this link-type field whose records are whole (caplen = origlen).
    fn legacy_whole(field: u32, frames: &[&[u8]]) -> Vec<u8> {
        let records: Vec<(u32, u32, &[u8])> = frames.iter().map(|f| (1, 0, *f)).collect();
        let mut bytes = legacy(&records);
        bytes[20..24].copy_from_slice(&field.to_le_bytes());
        let mut at = 24;
        for f in frames {
            bytes[at + 12..at + 16].copy_from_slice(&(f.len() as u32).to_le_bytes());
            at += 16 + f.len();
        }
        bytes
    }

    fn read_all(bytes: Vec<u8>) -> Vec<(FrameInfo, Vec<u8>)> {
        let mut f =
            PcapFrames::from_reader("test".into(), Box::new(std::io::Cursor::new(bytes))).unwrap();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(info) = f.next_frame(&mut buf).unwrap() {
            out.push((info, buf.clone()));
        }
        out
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

    /// One pcapng block.
    fn block(v: &mut Vec<u8>, kind: u32, body: &[u8]) {
        let len = 12 + body.len() as u32;
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(body);
        v.extend_from_slice(&len.to_le_bytes());
    }

    /// Options (code, value), padded, with the end-of-options mark.
    fn options(opts: &[(u16, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        for (code, value) in opts {
            v.extend_from_slice(&code.to_le_bytes());
            v.extend_from_slice(&(value.len() as u16).to_le_bytes());
            v.extend_from_slice(value);
            v.resize(v.len().div_ceil(4) * 4, 0);
        }
        v.extend_from_slice(&[0; 4]);
        v
    }

    /// A pcapng with these interfaces (link type, options) and packets (interface, frame,
    /// options).
    fn pcapng_multi(ifaces: &[(u16, Vec<u8>)], packets: &[(u32, &[u8], Vec<u8>)]) -> Vec<u8> {
        let mut v = Vec::new();
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        block(&mut v, 0x0a0d_0d0a, &shb);
        for (linktype, opts) in ifaces {
            let mut idb = Vec::new();
            idb.extend_from_slice(&linktype.to_le_bytes());
            idb.extend_from_slice(&0u16.to_le_bytes());
            idb.extend_from_slice(&0u32.to_le_bytes());
            idb.extend_from_slice(opts);
            block(&mut v, 1, &idb);
        }
        for (if_id, data, opts) in packets {
            let mut epb = Vec::new();
            epb.extend_from_slice(&if_id.to_le_bytes());
            epb.extend_from_slice(&0u32.to_le_bytes());
            epb.extend_from_slice(&1_000_000u32.to_le_bytes());
            epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
            epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
            epb.extend_from_slice(data);
            epb.resize(epb.len().div_ceil(4) * 4, 0);
            epb.extend_from_slice(opts);
            block(&mut v, 6, &epb);
        }
        v
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
