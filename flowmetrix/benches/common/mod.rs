//! What the benches share: the IPv4/TCP frame they decode and the packet rows made of it.

use etherparse::PacketBuilder;
use flowmetrix::{
    applications::Applications,
    decode::{FrameMeta, decode},
    record::{PacketRecord, UnixNanos},
};

/// An Ethernet/IPv4/TCP frame with 100 bytes of payload.
pub fn tcp_frame() -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40_000, 443, 1, 1000)
        .ack(1)
        .write(&mut f, &[0; 100])
        .expect("a frame of fixed headers");
    f
}

/// The frame's capture metadata.
pub fn meta() -> FrameMeta {
    FrameMeta {
        ts: UnixNanos(1_795_000_000_000_000_000),
        wire_len: 154,
        sample_rate: 1,
    }
}

/// `n` rows decoded from [`tcp_frame`], 1 ns apart, each then changed by `each(i, row)`.
pub fn packet_rows(n: usize, each: impl Fn(usize, &mut PacketRecord)) -> Vec<PacketRecord> {
    let frame = tcp_frame();
    (0..n)
        .map(|i| {
            let mut r = decode(&frame, meta(), &Applications::default()).expect("decodes");
            r.ts = UnixNanos(r.ts.0 + i as i64);
            each(i, &mut r);
            r
        })
        .collect()
}
