//! The replay reader's tests, on capture files written byte by byte (the layouts it must
//! handle, damaged ones included).

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    FrameInfo, PcapFileError, PcapFrames,
    input::{HEAD, Input},
};
use crate::{decode::Link, record::UnixNanos};

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

fn write_tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("fmx-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
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
    let mut f = PcapFrames::from_reader("x".into(), Box::new(std::io::Cursor::new(bytes))).unwrap();
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
