//! Capture files for the `--pcap` tests, written by `pcap-file` as libpcap and pcapng write
//! them (little-endian, microseconds).
#![allow(dead_code)] // each test binary uses a different part

use std::{borrow::Cow, path::PathBuf, time::Duration};

use pcap_file::{
    DataLink, Endianness,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
        },
    },
};

/// 2026-11-18T11:06:40Z, where the tests' captures start (a multiple of 10 s).
pub const T0: Duration = Duration::from_secs(1_795_000_000);

/// A classic pcap with this link-type field (the link type, and FCS bits above it) holding
/// `frames` at their times (since the epoch).
pub fn classic<B: AsRef<[u8]>>(
    link_field: u32,
    frames: impl IntoIterator<Item = (Duration, B)>,
) -> Vec<u8> {
    let header = PcapHeader {
        datalink: DataLink::from(link_field),
        endianness: Endianness::Little,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).expect("pcap header");
    for (ts, frame) in frames {
        let data = frame.as_ref();
        w.write_packet(&PcapPacket::new(ts, data.len() as u32, data))
            .expect("pcap record");
    }
    w.into_writer()
}

/// A classic Ethernet pcap of `frames` at their times.
pub fn ethernet<B: AsRef<[u8]>>(frames: impl IntoIterator<Item = (Duration, B)>) -> Vec<u8> {
    classic(1, frames)
}

/// `frames` one `step` apart from [`T0`].
pub fn spaced<B>(step: Duration, frames: impl IntoIterator<Item = B>) -> Vec<(Duration, B)> {
    frames
        .into_iter()
        .enumerate()
        .map(|(i, f)| (T0 + step * i as u32, f))
        .collect()
}

/// A pcapng with an interface of each of these link types and (interface, frame) packets,
/// each at 1 s past the epoch.
pub fn pcapng(linktypes: &[u16], packets: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut w = PcapNgWriter::with_endianness(Vec::new(), Endianness::Little).expect("pcapng");
    for &t in linktypes {
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::from(u32::from(t)),
            snaplen: 0,
            options: vec![],
        })
        .expect("pcapng interface");
    }
    for (interface_id, data) in packets {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: *interface_id,
            timestamp: Duration::from_secs(1),
            original_len: data.len() as u32,
            data: Cow::Borrowed(data),
            options: vec![],
        })
        .expect("pcapng packet");
    }
    w.into_inner()
}

/// Writes `bytes` to `name` in a directory of this test process's own (`tag` tells the
/// test files apart); its path.
pub fn file(tag: &str, name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fmx-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("pcap directory");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("pcap file");
    path
}

/// `flowmetrix --pcap FILE ARGS…` run to its end.
pub fn replay(file: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .arg("--pcap")
        .arg(file)
        .args(args)
        .output()
        .expect("run flowmetrix")
}

/// The JSON lines a run wrote on its standard output.
pub fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}
