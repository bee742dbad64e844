//! Frames from a pcap or pcapng file (`--pcap FILE`), for replay through the same
//! offset → decode → sink path as live capture. Each frame carries its link type (pcapng
//! keeps one per interface); a trailing FCS the file declares is taken off.
//!
//! - [`input`]: the bytes under the reader (a file or standard input);
//! - [`blocks`]: what each block says (link types, timestamps, FCS, interface names).

mod blocks;
mod input;
#[cfg(test)]
mod test_files;

use std::{
    fs::File,
    io::Read,
    path::Path,
    sync::{Arc, Mutex},
};

use pcap_parser::{PcapError, create_reader, traits::PcapReaderIterator};

use crate::{decode::Link, record::UnixNanos};

use blocks::State;
use input::{Input, Seen, is_capture_magic};

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

pub struct PcapFrames {
    reader: Box<dyn PcapReaderIterator + Send>,
    /// The input's last I/O error.
    seen: Arc<Mutex<Seen>>,
    st: State,
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
            st: State::new(name),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcap::test_files::{assert_clear, legacy, pcapng, write_tmp};

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
}
