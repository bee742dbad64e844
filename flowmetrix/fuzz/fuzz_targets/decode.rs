//! Any bytes, as a sample from the ring (or a pcap), through offset and decode: never a
//! panic, and what comes out is consistent with what went in.
#![no_main]

use flowmetrix::{
    app::Applications,
    decode::{FrameMeta, decode},
    offset::strip,
    record::UnixNanos,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&offset, frame)) = data.split_first() else {
        return;
    };
    let wire_len = frame.len() as u32 + u32::from(offset);
    let Ok((frame, wire_len)) = strip(frame, wire_len, usize::from(offset % 64)) else {
        return;
    };
    let meta = FrameMeta {
        ts: UnixNanos(0),
        wire_len,
        sample_rate: 1,
    };
    if let Ok(row) = decode(frame, meta, &Applications::default()) {
        // Ports only with a transport protocol, inner columns only inside a tunnel.
        if row.src_port.is_some() {
            assert!(matches!(row.protocol, Some(6 | 17)), "{row:?}");
        }
        if row.tunnel.is_none() {
            assert!(row.inner_src_ip.is_none() && row.inner_protocol.is_none(), "{row:?}");
        }
        let _ = row.ts.to_rfc3339();
    }
});
