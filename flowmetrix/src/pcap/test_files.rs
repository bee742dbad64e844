//! Capture files for the tests, written byte by byte (the layouts the reader must handle,
//! damaged ones included).

use std::path::PathBuf;

use super::{FrameInfo, PcapFileError, PcapFrames};

/// A legacy pcap (microseconds, Ethernet) with these (ts_sec, ts_usec, frame) records.
pub(super) fn legacy(records: &[(u32, u32, &[u8])]) -> Vec<u8> {
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

pub(super) fn write_tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("fmx-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A pcapng with one Ethernet interface (microseconds) and these (ts_us, frame) packets.
pub(super) fn pcapng(records: &[(u64, &[u8])]) -> Vec<u8> {
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
pub(super) fn assert_clear(e: &PcapFileError) {
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
pub(super) fn legacy_whole(field: u32, frames: &[&[u8]]) -> Vec<u8> {
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

pub(super) fn read_all(bytes: Vec<u8>) -> Vec<(FrameInfo, Vec<u8>)> {
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
pub(super) fn block(v: &mut Vec<u8>, kind: u32, body: &[u8]) {
    let len = 12 + body.len() as u32;
    v.extend_from_slice(&kind.to_le_bytes());
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(body);
    v.extend_from_slice(&len.to_le_bytes());
}

/// Options (code, value), padded, with the end-of-options mark.
pub(super) fn options(opts: &[(u16, &[u8])]) -> Vec<u8> {
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
pub(super) fn pcapng_multi(
    ifaces: &[(u16, Vec<u8>)],
    packets: &[(u32, &[u8], Vec<u8>)],
) -> Vec<u8> {
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
