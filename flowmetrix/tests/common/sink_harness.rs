//! A sink on its own runtime, as the collector runs it, and numbered rows to offer it: for
//! the no-root sink suites (`tests/sink.rs`, `tests/bulk.rs`), which include this file and
//! `endpoint/` by path.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use flowmetrix::{
    metrics::Counters,
    record::PacketRecord,
    sink::{self, Sink, SinkConfig, SinkSettings},
};
use tokio::sync::watch;

use crate::endpoint::Endpoint;

pub use crate::data::{packet as row, packets as rows};

/// A sink on its own runtime, as the collector runs it.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    sink: Option<Sink>,
    stop: watch::Sender<bool>,
    pub counters: Arc<Counters>,
}

impl Harness {
    pub fn start(output: SinkConfig, queue_rows: usize) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let counters = Arc::new(Counters::default());
        let (stop, stop_rx) = watch::channel(false);
        let sink = runtime
            .block_on(async {
                sink::start(
                    SinkSettings { output, queue_rows },
                    Arc::clone(&counters),
                    Default::default(),
                    stop_rx,
                )
            })
            .expect("sink starts");
        Self {
            runtime,
            sink: Some(sink),
            stop,
            counters,
        }
    }

    pub fn offer(&self, rows: Vec<PacketRecord>) {
        let _guard = self.runtime.enter();
        self.sink.as_ref().unwrap().packets.offer(rows);
    }

    /// As at Ctrl+C: capture stops, the input closes, the sink finishes within its deadline.
    /// Offers rows in batches of `size`, batch `k` of `batches` being rows
    /// `k * size..(k + 1) * size`, pausing `pause` after each.
    pub fn offer_batches(&self, batches: std::ops::Range<u32>, size: u32, pause: Duration) {
        for k in batches {
            self.offer(rows(k * size..(k + 1) * size));
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
    }

    pub fn finish(&mut self) -> Duration {
        let started = Instant::now();
        self.stop.send_replace(true);
        let Sink { packets, task, .. } = self.sink.take().unwrap();
        drop(packets);
        self.runtime
            .block_on(task)
            .expect("the sink task does not panic")
            .expect("the sink ends without error");
        started.elapsed()
    }

    pub fn get(&self, f: impl Fn(&Counters) -> &std::sync::atomic::AtomicU64) -> u64 {
        Counters::get(f(&self.counters))
    }

    /// Each of `offered` rows is accounted for exactly once.
    pub fn assert_accounted(&self, offered: u64) {
        let c = &self.counters;
        let (written, errors, drops, spooled) = (
            Counters::get(&c.written),
            Counters::get(&c.write_errors),
            Counters::get(&c.queue_drops),
            Counters::get(&c.spooled),
        );
        assert_eq!(
            written + errors + drops + spooled,
            offered,
            "written {written} + write errors {errors} + queue drops {drops} + spooled {spooled}"
        );
    }
}

pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// The rows of `table` at the endpoint are exactly the rows numbered `want`, each once.
pub fn assert_exactly(endpoint: &Endpoint, table: &str, want: std::ops::Range<u32>) {
    let keys = endpoint.row_keys(table);
    let unique: HashSet<(i64, u32)> = keys.iter().copied().collect();
    assert_eq!(unique.len(), keys.len(), "duplicates arrived");
    let want: HashSet<(i64, u32)> = want
        .map(|i| {
            let r = row(i);
            (r.ts.0, u32::from(r.src_port.unwrap()))
        })
        .collect();
    assert_eq!(unique.len(), want.len(), "rows at the endpoint");
    assert!(unique == want, "other rows arrived");
}
