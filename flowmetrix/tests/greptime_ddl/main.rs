//! Tables and rollups by DDL, and several endpoints, through the library against the
//! in-process test endpoint on loopback (no root needed): the exact DDL on an empty
//! database, a second run that changes nothing, a table of the Go original used as it is and
//! extended, a type clash counted with one error line (`tables`), and an endpoint stopped
//! mid-stream or down at start without a row lost or doubled (`outages`); the rollups
//! against a real GreptimeDB (`live_rollups`).

#[path = "../common/mod.rs"]
mod common;

mod live_rollups;
mod outages;
mod tables;

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use common::endpoint::{Endpoint, Event};
use common::logs::Logs;
use flowmetrix::{
    metrics::Counters,
    queue,
    record::{PacketRecord, UnixNanos},
    sink::greptime::{
        Endpoints, FLOW_SCHEMA, GreptimeConfig, SCHEMA, SpoolConfig,
        columns::DNS_SCHEMA,
        ddl::{self, STATEMENT_TIMEOUT},
        encode, prepare,
        retry::REQUEST_TIMEOUT,
    },
};
use greptime_proto::v1::{ColumnDataType, SemanticType};

fn cfg(endpoints: &[&Endpoint]) -> GreptimeConfig {
    GreptimeConfig {
        batch_size: 10,
        flush_interval: Duration::from_millis(20),
        ttl: Some("7d".into()),
        shutdown_timeout: Duration::from_secs(3),
        ..common::data::greptime(endpoints.iter().map(|e| e.addr))
    }
}

fn row(i: u32) -> PacketRecord {
    PacketRecord {
        src_ip: Some("10.0.0.1".parse().unwrap()),
        sample_rate: 1,
        host: "node-1".into(),
        ..common::data::packet(i)
    }
}

/// On this thread, so that its log lines are captured by [`Logs`].
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs the whole writer over `rows` (sent in chunks of 10, `pause` apart, with `during`
/// called after chunk `at`), then shuts it down; returns its counters.
fn run_writer(
    c: &GreptimeConfig,
    n: u32,
    pause: Duration,
    at: u32,
    during: impl FnOnce(),
) -> Arc<Counters> {
    let counters = Arc::new(Counters::default());
    runtime().block_on(async {
        let (tx, rx) = queue::bounded(100_000);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let sink = tokio::spawn(flowmetrix::sink::greptime::run(
            c.clone(),
            rx,
            Arc::clone(&counters),
            Default::default(),
            stop_rx,
            None,
        ));
        let mut during = Some(during);
        for chunk in 0..n.div_ceil(10) {
            let rows: Vec<_> = (chunk * 10..(chunk * 10 + 10).min(n)).map(row).collect();
            tx.try_send(rows).unwrap();
            if chunk == at
                && let Some(f) = during.take()
            {
                // Blocks this runtime a moment (the endpoint's own runs on).
                f();
            }
            tokio::time::sleep(pause).await;
        }
        drop(tx);
        stop.send_replace(true);
        sink.await.unwrap().unwrap();
    });
    counters
}
