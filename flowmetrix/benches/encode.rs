//! Encoding of a batch of rows, per path: the row insert (protobuf rows), the Arrow record
//! batch of the bulk path, and JSON lines; 10 000 packet rows and 10 000 flow rows.
//!
//! Run with `cargo bench -p flowmetrix --bench encode` (one table: `-- encode_flow`).

mod common;

use std::hint::black_box;

use common::packet_rows;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowmetrix::{
    record::{Direction, FlowRecord, PacketRecord, UnixNanos},
    schema::{
        Table,
        arrow::{arrow_schema, record_batch},
        encode,
    },
    sink::jsonl,
};
use greptimedb_ingester::arrow_schema::SchemaRef;

const N: usize = 10_000;

fn packets() -> Vec<PacketRecord> {
    packet_rows(N, |i, r| {
        r.src_port = Some((i % 60_000) as u16);
        r.host = "node-1".into();
        r.interface = "eth0".into();
    })
}

fn flows() -> Vec<FlowRecord> {
    (0..N)
        .map(|i| FlowRecord {
            ts: UnixNanos(1_795_000_010_000_000_000),
            host: "node-1".into(),
            interface: "eth0".into(),
            direction: Direction::Ingress,
            application: "HTTPS",
            vlan_id: (i % 2 == 0).then_some(100),
            ether_type: 0x0800,
            src_ip: Some(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).into()),
            dst_ip: Some("10.0.0.2".parse().unwrap()),
            protocol: 6,
            src_port: (i % 60_000) as u16,
            dst_port: 443,
            packets: 12,
            bytes: 3_456,
            first_seen: UnixNanos(1_795_000_001_000_000_000),
            last_seen: UnixNanos(1_795_000_009_000_000_000),
            tcp_flags: 0x1b,
            interval_ms: 10_000,
            health: Default::default(),
            workload: Default::default(),
        })
        .collect()
}

fn arrow<R: Table>(rows: &[R], schema: &SchemaRef) -> usize {
    let refs: Vec<&R> = rows.iter().collect();
    record_batch(R::COLUMNS, &refs, schema).unwrap().num_rows()
}

fn json<R: Table>(rows: &[R], buf: &mut Vec<u8>) -> usize {
    buf.clear();
    rows.iter().for_each(|r| jsonl::encode(buf, r));
    buf.len()
}

fn bench<R: Table>(c: &mut Criterion, name: &str, rows: &[R]) {
    let mut g = c.benchmark_group(format!("encode_{name}"));
    g.throughput(Throughput::Elements(rows.len() as u64));
    let schema = arrow_schema(R::COLUMNS).unwrap();
    g.bench_function("arrow", |b| b.iter(|| arrow(black_box(rows), &schema)));
    let mut buf = Vec::with_capacity(1 << 22);
    g.bench_function("json", |b| b.iter(|| json(black_box(rows), &mut buf)));
    g.bench_function("row_insert", |b| b.iter(|| encode("t", black_box(rows))));
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench(c, "packet_10000", &packets());
    bench(c, "flow_10000", &flows());
}

criterion_group!(encode_benches, benches);
criterion_main!(encode_benches);
