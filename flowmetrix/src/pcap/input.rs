//! The bytes under the pcap reader: a file or standard input, read so that an I/O error and
//! the first bytes are kept for the error message.

use std::{
    io::Read,
    sync::{Arc, Mutex},
};

/// The file (or standard input) under the pcap reader: it keeps the last I/O error, which
/// the parser replaces by a bare "read error", and the first bytes, to tell a truncated
/// header from something that is no capture at all. Its first read returns at least a
/// file header's worth of bytes, also from a pipe that delivers them a few at a time.
pub(super) struct Input {
    pub(super) inner: Box<dyn Read + Send>,
    /// Before the first read.
    pub(super) first: bool,
    pub(super) seen: Arc<Mutex<Seen>>,
}

#[derive(Default)]
pub(super) struct Seen {
    /// The last I/O error.
    pub(super) error: Option<std::io::Error>,
    /// The first bytes (up to 4: the magic number).
    pub(super) head: Vec<u8>,
}

/// More than a pcap (24) or pcapng (28) file header.
pub(super) const HEAD: usize = 64;

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
pub(super) fn is_capture_magic(head: &[u8]) -> bool {
    let Ok(m) = <[u8; 4]>::try_from(head) else {
        return false;
    };
    [0xa1b2_c3d4u32, 0xa1b2_3c4d, 0x0a0d_0d0a]
        .iter()
        .any(|magic| m == magic.to_le_bytes() || m == magic.to_be_bytes())
}
