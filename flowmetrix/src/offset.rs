//! The VMware prefix: bytes some hypervisor taps put in front of the Ethernet header.
//!
//! `-offset N` skips N bytes of every frame (`-offset` alone: 24). Without it, 0.

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

/// A fixed number of bytes to skip before the Ethernet header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offset(pub usize);

impl Offset {
    /// The frame without its prefix, and the wire length without it. A frame too short to
    /// hold the prefix and an Ethernet header is an error, never decoded from garbage.
    pub fn apply<'a>(
        &self,
        frame: &'a [u8],
        wire_len: u32,
    ) -> Result<(&'a [u8], u32), ShortForOffset> {
        let offset = self.0;
        if frame.len() < offset + ETHERNET_HEADER {
            return Err(ShortForOffset {
                len: frame.len(),
                offset,
            });
        }
        let skipped = u32::try_from(offset).unwrap_or(u32::MAX);
        Ok((&frame[offset..], wire_len.saturating_sub(skipped)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_offset_is_identity() {
        let f = [7u8; 20];
        assert_eq!(Offset(0).apply(&f, 20), Ok((&f[..], 20)));
    }

    #[test]
    fn skips_the_prefix_and_shortens_the_wire_length() {
        let f: Vec<u8> = (0..60).collect();
        let (rest, len) = Offset(24).apply(&f, 1000).unwrap();
        assert_eq!(rest[0], 24);
        assert_eq!(rest.len(), 36);
        assert_eq!(len, 976);
    }

    #[test]
    fn too_short_frames_are_refused() {
        let f = [0u8; 37];
        assert_eq!(
            Offset(24).apply(&f, 37),
            Err(ShortForOffset {
                len: 37,
                offset: 24
            })
        );
        assert!(Offset(24).apply(&[0u8; 38], 38).is_ok());
    }
}
