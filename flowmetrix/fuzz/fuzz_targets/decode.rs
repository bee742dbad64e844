//! Any bytes, as a sample from the ring (or a pcap) of any link type, through offset and
//! decode: never a panic, and what comes out is consistent with what went in.
#![no_main]

use flowmetrix::{
    applications::Applications,
    decode::{FrameMeta, Link, decode_link},
    offset::strip,
    record::UnixNanos,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: the link type (half the inputs Ethernet, where MPLS, PPPoE and MACsec
    // live) and, for Ethernet, the -offset prefix.
    let Some((&head, frame)) = data.split_first() else {
        return;
    };
    let link = if head & 0x80 == 0 {
        Link::Ethernet
    } else {
        Link::ALL[usize::from(head & 0x7f) % Link::ALL.len()]
    };
    let wire_len = frame.len() as u32 + u32::from(head);
    let (frame, wire_len) = if link == Link::Ethernet {
        match strip(frame, wire_len, usize::from(head % 64)) {
            Ok(f) => f,
            Err(_) => return,
        }
    } else {
        (frame, wire_len)
    };
    let meta = FrameMeta {
        ts: UnixNanos(0),
        wire_len,
        sample_rate: 1,
    };
    if let Ok(row) = decode_link(link, frame, meta, &Applications::default()) {
        // Ports only with a transport protocol, inner columns only inside a tunnel.
        if row.src_port.is_some() {
            assert!(matches!(row.protocol, Some(6 | 17)), "{row:?}");
        }
        if row.tunnel.is_none() {
            assert!(row.inner_src_ip.is_none() && row.inner_protocol.is_none(), "{row:?}");
        }
        // MACs only where the link type has them.
        if !matches!(link, Link::Ethernet | Link::LinuxSll | Link::LinuxSll2) {
            assert!(row.src_mac.is_none() && row.dst_mac.is_none(), "{row:?}");
        }
        if let Some(labels) = row.mpls_labels {
            assert!(labels.as_slice().len() <= 8, "{row:?}");
            let _ = labels.to_string();
        }
        let _ = row.ts.to_rfc3339();
    }
});
