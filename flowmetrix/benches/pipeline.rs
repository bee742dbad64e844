//! Userspace costs per sample and per row: decode, row encoding for the ingester, and rows
//! sent through the GreptimeDB sink to the test endpoint on loopback.
//!
//! Run with `cargo xtask bench` (or `cargo bench --bench pipeline`); figures go to
//! BENCHMARKS.md.

#[path = "../tests/common/endpoint/mod.rs"]
#[allow(dead_code)]
mod endpoint;

mod common;

use std::{
    hint::black_box,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use common::{meta, packet_rows, tcp_frame};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowmetrix::{
    applications::Applications,
    decode::{Link, Origin, decode, decode_onto},
    metrics::Counters,
    record::{Direction, PacketRecord, UnixNanos},
    sink::{
        self, SinkConfig, SinkSettings,
        greptime::{self, GreptimeConfig},
    },
};

fn rows(n: usize) -> Vec<PacketRecord> {
    packet_rows(n, |_, _| {})
}

fn bench_decode(c: &mut Criterion) {
    let frame = tcp_frame();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    let apps = Applications::default();
    g.bench_function("ipv4_tcp_sample", |b| {
        b.iter(|| decode(black_box(&frame), meta(), &apps))
    });
    g.finish();
}

/// One drain of 8192 samples decoded into rows: into a fresh Vec (grown by doubling), and
/// into one with room for them (what the pipeline hands the next drain).
fn bench_drain(c: &mut Criterion) {
    const N: usize = 8192;
    let frame = tcp_frame();
    let apps = Applications::default();
    let mut g = c.benchmark_group("drain");
    g.throughput(Throughput::Elements(N as u64));
    let fill = |mut rows: Vec<PacketRecord>| {
        for _ in 0..N {
            if let Ok(r) = decode(black_box(&frame), meta(), &apps) {
                rows.push(r);
            }
        }
        rows
    };
    g.bench_function("decode_8192_into_a_new_vec", |b| {
        b.iter(|| fill(Vec::new()))
    });
    g.bench_function("decode_8192_into_a_sized_vec", |b| {
        b.iter(|| fill(Vec::with_capacity(N)))
    });
    // As the decode stage makes its rows: named after the host and interface. Decoded, then
    // named and pushed (the row made with empty names, then moved) …
    let (host, interface): (Arc<str>, Arc<str>) = (Arc::from("node-1"), Arc::from("eth0"));
    g.bench_function("decode_8192_then_name_and_push", |b| {
        b.iter(|| {
            let mut rows = Vec::with_capacity(N);
            for _ in 0..N {
                if let Ok(mut r) = decode(black_box(&frame), meta(), &apps) {
                    r.host = Arc::clone(&host);
                    r.interface = Arc::clone(&interface);
                    rows.push(r);
                }
            }
            rows
        })
    });
    // … and made in place at the end of the Vec, named as it is made.
    g.bench_function("decode_8192_onto_the_vec", |b| {
        b.iter(|| {
            let mut rows = Vec::with_capacity(N);
            for _ in 0..N {
                let origin = Origin {
                    host: Arc::clone(&host),
                    interface: Arc::clone(&interface),
                    direction: Direction::Ingress,
                };
                let _ = decode_onto(
                    Link::Ethernet,
                    black_box(&frame),
                    meta(),
                    &apps,
                    origin,
                    &mut rows,
                );
            }
            rows
        })
    });
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let batch = rows(1024);
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("greptime_rows_1024", |b| {
        b.iter(|| greptime::encode("packet_data", black_box(&batch)))
    });
    g.finish();
}

/// A spool record of one batch of 1024 rows, as the spool's thread makes it: the protobuf
/// insert of the older format (`FMX2`: every row encoded as the ingester's values), and the
/// columnar record (`FMX3`: the Arrow batch as IPC); then the columnar one appended to a
/// spool on disk (one write a record). The Arrow batch alone is what the bulk path builds.
fn bench_spool(c: &mut Criterion) {
    use flowmetrix::{
        schema::{
            Table,
            arrow::{arrow_schema, record_batch},
        },
        sink::greptime::spool::{Spool, columns, format},
    };
    let batch = rows(1024);
    let columnar = |batch: &[PacketRecord]| {
        let schema = arrow_schema(PacketRecord::COLUMNS).unwrap();
        let refs: Vec<&PacketRecord> = batch.iter().collect();
        let b = record_batch(PacketRecord::COLUMNS, &refs, &schema).unwrap();
        columns::ipc_parts(&b, 4 << 20).unwrap()
    };
    let mut g = c.benchmark_group("spool");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("protobuf_record_1024", |b| {
        b.iter(|| {
            let req = greptime::encode("packet_data", black_box(&batch));
            format::record_bytes("public", &req, 1024)
        })
    });
    g.bench_function("columnar_record_1024", |b| {
        b.iter(|| {
            let parts = columnar(black_box(&batch));
            format::columns_record("public", "packet_data", &parts[0].0, 1024)
        })
    });
    g.bench_function("arrow_batch_1024", |b| {
        let schema = arrow_schema(PacketRecord::COLUMNS).unwrap();
        b.iter(|| {
            let refs: Vec<&PacketRecord> = black_box(&batch).iter().collect();
            record_batch(PacketRecord::COLUMNS, &refs, &schema).unwrap()
        })
    });
    let dir = std::env::temp_dir().join(format!("fmx-bench-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spool = Spool::open(&dir, 256 << 20, Arc::new(Counters::default())).unwrap();
    g.bench_function("columnar_append_1024", |b| {
        b.iter(|| {
            for (ipc, n) in columnar(black_box(&batch)) {
                spool.append_columns("public", "packet_data", &ipc, n);
            }
        })
    });
    g.finish();
    drop(spool);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rows per second through the whole GreptimeDB sink (batching, ingester encoding, gRPC,
/// the endpoint's decoding and bookkeeping) on loopback.
fn bench_sink(c: &mut Criterion) {
    const ROWS: usize = 100_000;
    let endpoint = endpoint::Endpoint::start(None);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let batch = rows(1024);
    let cfg = GreptimeConfig {
        flush_interval: Duration::from_millis(100),
        shutdown_timeout: Duration::from_secs(30),
        ..GreptimeConfig::new(vec![endpoint.addr.to_string()], "bench")
    };
    let mut g = c.benchmark_group("greptime_sink");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(10);
    g.bench_function("rows_to_test_endpoint", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let counters = Arc::new(Counters::default());
                let (stop, stop_rx) = tokio::sync::watch::channel(false);
                let start = Instant::now();
                runtime.block_on(async {
                    let settings = SinkSettings {
                        output: SinkConfig::Greptime(Box::new(cfg.clone())),
                        queue_rows: ROWS,
                    };
                    let sink::Sink {
                        packets: input,
                        task,
                        ..
                    } = sink::start(settings, Arc::clone(&counters), Default::default(), stop_rx)
                        .unwrap();
                    for _ in 0..ROWS / batch.len() {
                        input.offer(batch.clone());
                    }
                    drop(input);
                    stop.send_replace(true);
                    task.await.unwrap().unwrap();
                });
                total += start.elapsed();
                let written = counters.written.load(Ordering::Relaxed) as usize;
                assert_eq!(written, ROWS / batch.len() * batch.len());
            }
            total
        })
    });
    g.finish();
}

/// One flows interval in userspace at 100 000 flows: a kernel collection merged into the
/// aggregator, turned into rows, and the rows encoded as the insert into `flow_data` (the
/// kernel side's `collect()` is in the kernel bench).
fn bench_flow_interval(c: &mut Criterion) {
    use flowmetrix::{
        flows::{Aggregator, kernel::Collected},
        metrics::FlowCounters,
        record::FlowRecord,
    };
    use flowmetrix_common::flow_key::{FlowKey, FlowValue};
    const FLOWS: u32 = 100_000;
    let collected = Collected {
        generation: 1,
        flows: (0..FLOWS)
            .map(|i| {
                let mut k = FlowKey::ZERO;
                k.src_addr[..4].copy_from_slice(&[10, 1, (i >> 8) as u8, i as u8]);
                k.dst_addr[..4].copy_from_slice(&[10, 2, 0, 1]);
                k.ifindex = 2;
                k.ether_type = 0x0800;
                k.protocol = 6;
                k.src_port = 40_000 + (i % 20_000) as u16;
                k.dst_port = 443;
                let v = FlowValue {
                    packets: 10,
                    bytes: 6_400,
                    first_seen_ns: 1_000,
                    last_seen_ns: 2_000,
                    tcp_flags: 0x18,
                    cgroup_id: 0,
                };
                (k, v)
            })
            .collect(),
        events: Vec::new(),
        map_entries: FLOWS as usize,
        max_entries: 131_072,
    };
    let name: Arc<str> = Arc::from("eth0");
    let mut agg = Aggregator::new(
        Arc::new(Applications::default()),
        Arc::from("host"),
        Arc::new(FlowCounters::default()),
    );
    let mut g = c.benchmark_group("flows");
    g.throughput(Throughput::Elements(u64::from(FLOWS)));
    g.sample_size(20);
    g.bench_function("interval_100k_flows", |b| {
        b.iter(|| {
            agg.add_collected(black_box(&collected));
            let rows: Vec<FlowRecord> = agg.rows(
                UnixNanos(1_795_000_010_000_000_000),
                Duration::from_secs(10),
                |ns| UnixNanos(ns as i64),
                |_| Arc::clone(&name),
            );
            black_box(greptime::encode("flow_data", &rows))
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_decode,
    bench_drain,
    bench_encode,
    bench_spool,
    bench_sink,
    bench_flow_interval
);
criterion_main!(benches);
