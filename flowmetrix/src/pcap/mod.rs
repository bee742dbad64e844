//! Frames from a pcap or pcapng file (`--pcap FILE`), for replay through the same
//! offset → decode → sink path as live capture. Each frame carries its link type (pcapng
//! keeps one per interface); a trailing FCS the file declares is taken off.
//!
//! - `input`: the bytes under the reader (a file or standard input);
//! - `blocks`: what each block says (link types, timestamps, FCS, interface names);
//! - `error`: what can be wrong with the file, one sentence each.

mod blocks;
mod error;
mod input;
#[cfg(test)]
mod tests;

use std::{
    fs::File,
    io::Read,
    path::Path,
    sync::{Arc, Mutex},
};

use pcap_parser::{PcapError, create_reader, traits::PcapReaderIterator};

pub use blocks::FrameInfo;
use blocks::State;
pub use error::PcapFileError;
use input::{Input, Seen, is_capture_magic};

/// What `--pcap -` reads.
pub const STDIN: &str = "-";

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
