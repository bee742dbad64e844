//! Row inserts against bulk writes (Arrow Flight DoPut) for the same rows: 100 000 packet
//! rows in batches of the default size (1024) through the whole GreptimeDB sink to the test
//! endpoint on loopback, into a table that exists; uncompressed, and with each path's
//! compression (gRPC zstd for rows; Arrow IPC zstd and LZ4 for bulk). The endpoint runs in
//! this process, so its own decoding (protobuf rows, or Arrow IPC) is inside both figures,
//! CPU included.
//!
//! Run with `cargo bench -p flowmetrix --bench write_path` (one of them: `-- bulk_lz4`);
//! figures go to BENCHMARKS.md.

#[path = "../tests/common/endpoint/mod.rs"]
#[allow(dead_code)]
mod endpoint;

mod common;

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use common::packet_rows;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowmetrix::{
    metrics::Counters,
    record::PacketRecord,
    sink::{
        self, SinkConfig, SinkSettings,
        greptime::{Compression, GreptimeConfig, SCHEMA, WritePath},
    },
};

const ROWS: usize = 100_000;
const BATCH: usize = 1024;

fn rows(n: usize) -> Vec<PacketRecord> {
    packet_rows(n, |i, r| r.src_port = Some((i % 60_000) as u16))
}

/// CPU time (user + system) of this process: collector and endpoint together.
fn cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    t(u.ru_utime) + t(u.ru_stime)
}

fn bench_write_path(c: &mut Criterion) {
    let endpoint = endpoint::Endpoint::start(None);
    endpoint.keys_only();
    let cols: Vec<(&str, greptime_proto::v1::ColumnDataType)> =
        SCHEMA.iter().map(|c| (c.name, c.data_type)).collect();
    endpoint.create_table("public", "bench", &cols);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let chunks: Vec<Vec<PacketRecord>> = rows(ROWS).chunks(BATCH).map(<[_]>::to_vec).collect();
    let mut g = c.benchmark_group("write_path");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(10);
    for (name, path, compression) in [
        ("rows", WritePath::Rows, Compression::None),
        ("bulk", WritePath::Bulk, Compression::None),
        ("rows_zstd", WritePath::Rows, Compression::Zstd),
        ("bulk_zstd", WritePath::Bulk, Compression::Zstd),
        // `--compression gzip` is LZ4 on the bulk path (Arrow IPC has no gzip).
        ("bulk_lz4", WritePath::Bulk, Compression::Gzip),
    ] {
        let cfg = GreptimeConfig {
            batch_size: BATCH,
            compression,
            flush_interval: Duration::from_millis(100),
            shutdown_timeout: Duration::from_secs(30),
            write_path: path,
            ..GreptimeConfig::new(vec![endpoint.addr.to_string()], "bench")
        };
        let (mut cpu_total, mut runs) = (Duration::ZERO, 0u32);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let counters = Arc::new(Counters::default());
                    let (stop, stop_rx) = tokio::sync::watch::channel(false);
                    runtime.block_on(async {
                        let settings = SinkSettings {
                            output: SinkConfig::Greptime(Box::new(cfg.clone())),
                            queue_rows: ROWS * 2,
                        };
                        let sink::Sink {
                            packets: input,
                            task,
                            ..
                        } = sink::start(
                            settings,
                            Arc::clone(&counters),
                            Default::default(),
                            stop_rx,
                        )
                        .unwrap();
                        // The start-up check finds the table: bulk from the first batch.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let (start, cpu0) = (Instant::now(), cpu());
                        for chunk in &chunks {
                            input.offer(chunk.clone());
                        }
                        drop(input);
                        stop.send_replace(true);
                        task.await.unwrap().unwrap();
                        total += start.elapsed();
                        cpu_total += cpu() - cpu0;
                        runs += 1;
                    });
                    let written = counters.written.load(Ordering::Relaxed) as usize;
                    assert_eq!(written, ROWS);
                }
                total
            })
        });
        eprintln!(
            "write_path/{name}: CPU {:.1} ms per {ROWS} rows (collector and endpoint), {:.2} µs per row",
            cpu_total.as_secs_f64() * 1e3 / f64::from(runs.max(1)),
            cpu_total.as_secs_f64() * 1e6 / f64::from(runs.max(1)) / ROWS as f64
        );
    }
    g.finish();
}

criterion_group!(benches, bench_write_path);
criterion_main!(benches);
