//! The GreptimeDB sink against the in-process test endpoint (not a database: a gRPC server on
//! greptime-proto's own `GreptimeDatabase` trait, see tests/common/endpoint/), through the
//! library API: batching, retries, an outage with the spool, replay in order, torn spool
//! records, fatal errors, the shutdown flush, a stalled spool disk. No root needed.
//!
//! Every test checks the sink's part of the loss equation: each row handed to the sink is
//! written, a write error, a queue drop or spooled — and each spooled row replayed, lost by
//! the spool, or still on disk.

#[path = "common/data.rs"]
mod data;
#[path = "common/endpoint/mod.rs"]
#[allow(dead_code)]
mod endpoint;
#[path = "common/sink_harness.rs"]
mod sink_harness;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use endpoint::Endpoint;
use flowmetrix::sink::{
    SinkConfig,
    greptime::{GreptimeConfig, SpoolConfig, WritePath, spool::Spool},
};
use greptime_proto::v1::ColumnDataType;
use sink_harness::{Harness, assert_exactly, rows, wait_until};
use tonic::Code;

fn cfg(endpoint: &Endpoint) -> GreptimeConfig {
    data::greptime([endpoint.addr])
}

fn spool_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fmx-sinktest-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn with_spool(mut c: GreptimeConfig, dir: &std::path::Path) -> GreptimeConfig {
    c.spool = Some(SpoolConfig {
        dir: dir.to_owned(),
        max_bytes: 64 << 20,
        stall: None,
    });
    c
}

#[test]
fn rows_go_in_full_batches_and_a_partial_one_after_the_flush_interval() {
    let endpoint = Endpoint::start(None);
    let h = Harness::start(SinkConfig::Greptime(Box::new(cfg(&endpoint))), 10_000);
    h.offer_batches(0..25, 10, Duration::ZERO);
    assert!(wait_until(Duration::from_secs(5), || endpoint
        .row_keys("packet_data")
        .len()
        == 250));
    let sizes: Vec<usize> = endpoint.received().iter().map(|r| r.rows.len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 250);
    let mut sorted = sizes.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [50, 100, 100],
        "two full batches, then the rest once due"
    );
    // The endpoint has them; the last answer may still be on its way back.
    assert!(wait_until(Duration::from_secs(5), || h.get(|c| &c.written) == 250));
    h.assert_accounted(250);
    assert_exactly(&endpoint, "packet_data", 0..250);
}

#[test]
fn a_partial_batch_is_written_at_shutdown_without_waiting_for_its_interval() {
    let endpoint = Endpoint::start(None);
    let mut c = cfg(&endpoint);
    c.flush_interval = Duration::from_secs(60);
    let mut h = Harness::start(SinkConfig::Greptime(Box::new(c)), 10_000);
    h.offer(rows(0..7));
    let took = h.finish();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert_exactly(&endpoint, "packet_data", 0..7);
    h.assert_accounted(7);
}

#[test]
fn retriable_failures_are_retried_until_written() {
    let endpoint = Endpoint::start(None);
    // The row path's retries (a refused bulk batch goes to the row path: tests/bulk.rs).
    let c = GreptimeConfig {
        write_path: WritePath::Rows,
        ..cfg(&endpoint)
    };
    let mut h = Harness::start(SinkConfig::Greptime(Box::new(c)), 10_000);
    // After the start-up work (USE, the DDL, and last ALTER … append_mode), the next three
    // inserts fail.
    assert!(wait_until(Duration::from_secs(5), || endpoint
        .sql()
        .iter()
        .any(|s| s.starts_with("ALTER TABLE"))));
    endpoint.fail_next(3, Code::Unavailable);
    h.offer(rows(0..100));
    assert!(wait_until(Duration::from_secs(10), || endpoint
        .row_keys("packet_data")
        .len()
        == 100));
    h.finish();
    assert!(h.get(|c| &c.write_retries) >= 3);
    assert_eq!(
        (h.get(|c| &c.written), h.get(|c| &c.write_errors)),
        (100, 0)
    );
    assert_exactly(&endpoint, "packet_data", 0..100);
    h.assert_accounted(100);
}

#[test]
fn what_a_retry_cannot_fix_is_counted_as_write_errors() {
    // Wrong credentials, unknown database, a column of another type.
    let endpoint = Endpoint::start(None);
    endpoint.require_user("u", "right");
    let mut c = cfg(&endpoint);
    c.username = Some("u".into());
    c.password = Some("wrong".into());
    let mut h = Harness::start(SinkConfig::Greptime(Box::new(c)), 10_000);
    h.offer(rows(0..100));
    h.finish();
    assert_eq!(
        (h.get(|c| &c.written), h.get(|c| &c.write_errors)),
        (0, 100)
    );
    h.assert_accounted(100);

    let endpoint = Endpoint::start(None);
    let mut c = cfg(&endpoint);
    c.database = "nosuchdb".into();
    let mut h = Harness::start(SinkConfig::Greptime(Box::new(c)), 10_000);
    h.offer(rows(0..100));
    h.finish();
    assert_eq!(
        (h.get(|c| &c.written), h.get(|c| &c.write_errors)),
        (0, 100)
    );

    let endpoint = Endpoint::start(None);
    endpoint.create_table(
        "public",
        "packet_data",
        &[("protocol", ColumnDataType::String)],
    );
    let mut h = Harness::start(SinkConfig::Greptime(Box::new(cfg(&endpoint))), 10_000);
    h.offer(rows(0..100));
    h.finish();
    assert_eq!(
        (h.get(|c| &c.written), h.get(|c| &c.write_errors)),
        (0, 100)
    );
    assert!(endpoint.row_keys("packet_data").is_empty());
}

#[test]
fn an_outage_goes_to_the_spool_and_is_replayed_once_it_ends() {
    let endpoint = Endpoint::start(None);
    let dir = spool_dir("outage");
    let mut h = Harness::start(
        SinkConfig::Greptime(Box::new(with_spool(cfg(&endpoint), &dir))),
        10_000,
    );
    h.offer(rows(0..200));
    assert!(wait_until(Duration::from_secs(5), || endpoint
        .row_keys("packet_data")
        .len()
        == 200));
    endpoint.refuse_for(Duration::from_secs(3));
    h.offer_batches(2..12, 100, Duration::from_millis(100));
    assert!(h.get(|c| &c.spooled) > 0, "rows went to the spool");
    assert!(wait_until(Duration::from_secs(20), || endpoint
        .row_keys("packet_data")
        .len()
        == 1_200));
    h.finish();
    assert_exactly(&endpoint, "packet_data", 0..1_200);
    assert_eq!(h.get(|c| &c.spooled), h.get(|c| &c.spool_replayed));
    assert_eq!(
        (h.get(|c| &c.write_errors), h.get(|c| &c.spool_lost)),
        (0, 0)
    );
    h.assert_accounted(1_200);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_spool_left_by_an_earlier_run_is_replayed_in_order_into_its_own_database() {
    let endpoint = Endpoint::start(None);
    endpoint.add_database("db2");
    let dir = spool_dir("earlier");
    {
        // An earlier run wrote for another database and table, then stopped.
        let spool = Spool::open(&dir, 64 << 20, Arc::default()).unwrap();
        for i in 0..5 {
            let req = flowmetrix::sink::greptime::encode("t_old", &rows(i * 10..i * 10 + 10));
            spool.append("db2", &req, 10);
        }
    }
    let mut c = with_spool(cfg(&endpoint), &dir);
    c.table = "t_new".into();
    let mut h = Harness::start(SinkConfig::Greptime(Box::new(c)), 10_000);
    assert!(wait_until(Duration::from_secs(10), || h
        .get(|c| &c.spool_replayed)
        == 50));
    h.finish();
    let got = endpoint.received();
    assert!(
        got.iter()
            .all(|r| r.database == "db2" && r.table == "t_old"),
        "replayed where it was meant to go"
    );
    let ts: Vec<i64> = endpoint.row_keys("t_old").iter().map(|k| k.0).collect();
    let want: Vec<i64> = rows(0..50).iter().map(|r| r.ts.0).collect();
    assert_eq!(ts, want, "oldest first, each once");
    assert!(endpoint.row_keys("t_new").is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_torn_spool_record_replays_the_good_ones_and_counts_the_rest() {
    let endpoint = Endpoint::start(None);
    let dir = spool_dir("torn");
    {
        let spool = Spool::open(&dir, 64 << 20, Arc::default()).unwrap();
        for i in 0..4 {
            let req = flowmetrix::sink::greptime::encode("packet_data", &rows(i * 10..i * 10 + 10));
            spool.append("public", &req, 10);
        }
    }
    let seg = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "spool"))
        .unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let mut h = Harness::start(
        SinkConfig::Greptime(Box::new(with_spool(cfg(&endpoint), &dir))),
        10_000,
    );
    assert!(wait_until(Duration::from_secs(10), || h
        .get(|c| &c.spool_replayed)
        == 30));
    h.finish();
    assert_eq!(h.get(|c| &c.spool_lost), 10);
    assert_exactly(&endpoint, "packet_data", 0..30);
    assert!(seg.with_extension("bad").exists(), "kept for inspection");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_stalled_spool_disk_never_makes_the_input_wait_and_shutdown_keeps_its_deadline() {
    let endpoint = Endpoint::start(None);
    let dir = spool_dir("stall");
    let mut c = with_spool(cfg(&endpoint), &dir);
    c.shutdown_timeout = Duration::from_secs(2);
    if let Some(s) = c.spool.as_mut() {
        s.stall = Some(Duration::from_millis(500));
    }
    endpoint.refuse_for(Duration::from_secs(30));
    let mut h = Harness::start(SinkConfig::Greptime(Box::new(c)), 1_000);
    let mut slowest = Duration::ZERO;
    let mut offered = 0;
    for i in 0..200 {
        let started = Instant::now();
        h.offer(rows(i * 100..i * 100 + 100));
        slowest = slowest.max(started.elapsed());
        offered += 100;
        std::thread::sleep(Duration::from_millis(5));
    }
    // A 500 ms disk stall per append; handing rows over never waits for it.
    assert!(
        slowest < Duration::from_millis(100),
        "an offer took {slowest:?}"
    );
    assert!(
        h.get(|c| &c.queue_drops) > 0,
        "what could not be queued is counted"
    );
    let took = h.finish();
    assert!(
        took < Duration::from_secs(2 + 2),
        "shutdown took {took:?} with a 2 s deadline"
    );
    h.assert_accounted(offered);
    // The spool's own balance: each spooled row is on disk or counted as lost.
    let spool = Spool::open(&dir, 64 << 20, Arc::default()).unwrap();
    assert_eq!(
        h.get(|c| &c.spooled),
        spool.rows() + h.get(|c| &c.spool_lost) + h.get(|c| &c.spool_replayed)
    );
    drop(spool);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn json_lines_and_none_count_what_they_cannot_take() {
    let mut h = Harness::start(SinkConfig::None, 10_000);
    h.offer(rows(0..10));
    h.finish();
    assert_eq!(h.get(|c| &c.written), 10);
    h.assert_accounted(10);
}

#[test]
fn an_existing_table_is_made_append_only_and_a_new_one_is_created_so() {
    // One created earlier without append mode (as the Go original did) …
    let endpoint = Endpoint::start(None);
    endpoint.create_table(
        "public",
        "packet_data",
        &[("ts", ColumnDataType::TimestampNanosecond)],
    );
    assert!(!endpoint.append_only("public", "packet_data"));
    let mut h = Harness::start(SinkConfig::Greptime(Box::new(cfg(&endpoint))), 10_000);
    assert!(wait_until(Duration::from_secs(5), || endpoint
        .append_only("public", "packet_data")));
    h.offer(rows(0..10));
    h.finish();
    assert_exactly(&endpoint, "packet_data", 0..10);
    assert!(
        endpoint
            .sql()
            .contains(&"ALTER TABLE \"packet_data\" SET 'append_mode' = 'true'".to_owned()),
        "{:?}",
        endpoint.sql()
    );
    // … and none yet: the first insert creates it append-only (the ALTER finds no table).
    let endpoint = Endpoint::start(None);
    let mut h = Harness::start(SinkConfig::Greptime(Box::new(cfg(&endpoint))), 10_000);
    assert!(wait_until(Duration::from_secs(5), || endpoint.sql().len() >= 2));
    h.offer(rows(0..10));
    h.finish();
    assert!(endpoint.append_only("public", "packet_data"));
    assert_exactly(&endpoint, "packet_data", 0..10);
}

#[test]
fn a_table_of_an_older_version_gains_the_new_columns_on_insert() {
    // As GreptimeDB does: an insert with columns the table lacks adds them; rows written
    // before have them null.
    let endpoint = Endpoint::start(None);
    let old: Vec<(&str, ColumnDataType)> = flowmetrix::sink::greptime::SCHEMA
        .iter()
        .filter(|c| !["host", "interface", "direction"].contains(&c.name))
        .map(|c| (c.name, c.data_type))
        .collect();
    endpoint.create_table("public", "packet_data", &old);
    let mut h = Harness::start(SinkConfig::Greptime(Box::new(cfg(&endpoint))), 10_000);
    h.offer(rows(0..10));
    h.finish();
    assert_eq!(h.get(|c| &c.written), 10);
    let cols = endpoint.columns("public", "packet_data");
    assert_eq!(cols.len(), old.len() + 3);
    assert_eq!(&cols[old.len()..], ["host", "interface", "direction"]);
    assert_exactly(&endpoint, "packet_data", 0..10);
}
