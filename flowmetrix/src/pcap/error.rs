//! What can be wrong with a capture file: one sentence each.

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
