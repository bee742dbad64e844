//! Test data the suites share: numbered packet records, and the GreptimeDB output they write
//! to test endpoints with (each suite changes what its timing needs). Included by path where
//! a suite does not take all of `common`.
#![allow(dead_code)] // each test binary uses a different part

use std::time::Duration;

use flowmetrix::{
    record::{PacketRecord, UnixNanos},
    sink::greptime::GreptimeConfig,
};

/// Packet record `i`: a UDP packet to DNS whose ts and src_port say which it is.
pub fn packet(i: u32) -> PacketRecord {
    PacketRecord {
        ts: UnixNanos(1_795_000_000_000_000_000 + i64::from(i)),
        packet_size: 60,
        src_port: Some(10_000 + (i % 50_000) as u16),
        dst_port: Some(53),
        protocol: Some(17),
        ..PacketRecord::default()
    }
}

/// Packet records `range`.
pub fn packets(range: std::ops::Range<u32>) -> Vec<PacketRecord> {
    range.map(packet).collect()
}

/// The GreptimeDB output to these endpoints (`host:port`), table `packet_data`: batches of
/// 100 flushed every 200 ms, two inserts in flight, 5 s to drain at exit.
pub fn greptime<A: ToString>(endpoints: impl IntoIterator<Item = A>) -> GreptimeConfig {
    GreptimeConfig {
        batch_size: 100,
        flush_interval: Duration::from_millis(200),
        max_in_flight: 2,
        shutdown_timeout: Duration::from_secs(5),
        ..GreptimeConfig::new(
            endpoints.into_iter().map(|e| e.to_string()).collect(),
            "packet_data",
        )
    }
}
