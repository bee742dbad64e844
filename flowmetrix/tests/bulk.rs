//! The bulk write path (`--write-path bulk`, Arrow Flight DoPut) against the in-process test
//! endpoint (tests/common/flight.rs): every row exactly once, a batch refused mid-stream and
//! a dropped stream resent without duplicates, an outage through the spool (replayed by row
//! insert), a missing table and a wrong password as one line each. No root needed.

#[path = "common/data.rs"]
mod data;
#[path = "common/endpoint/mod.rs"]
#[allow(dead_code)]
mod endpoint;
#[path = "common/sink_harness.rs"]
mod sink_harness;

use std::{
    io::Write,
    path::PathBuf,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use endpoint::Endpoint;
use flowmetrix::sink::{
    SinkConfig,
    greptime::{GreptimeConfig, SCHEMA, SpoolConfig, WritePath},
};
use sink_harness::{Harness, assert_exactly, rows, wait_until};
use tonic::Code;

/// Everything the sinks of this test binary log.
fn log() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    static INIT: OnceLock<()> = OnceLock::new();
    let log = LOG.get_or_init(Mutex::default);
    INIT.get_or_init(|| {
        struct W;
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                LOG.get().unwrap().lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(|| W)
            .finish();
        tracing::subscriber::set_global_default(sub).unwrap();
    });
    log
}

/// Log lines that contain every one of `words`.
fn lines_with(words: &[&str]) -> Vec<String> {
    String::from_utf8_lossy(&log().lock().unwrap())
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_owned)
        .collect()
}

fn cfg(endpoint: &Endpoint, table: &str) -> GreptimeConfig {
    GreptimeConfig {
        flush_interval: Duration::from_millis(100),
        max_in_flight: 4,
        write_path: WritePath::Bulk,
        table: table.into(),
        ..data::greptime([endpoint.addr])
    }
}

/// The table as the DDL step (or an earlier run) left it.
fn create(endpoint: &Endpoint, table: &str) {
    let cols: Vec<(&str, greptime_proto::v1::ColumnDataType)> =
        SCHEMA.iter().map(|c| (c.name, c.data_type)).collect();
    endpoint.create_table("public", table, &cols);
}

/// The sink under test: `c`'s GreptimeDB output, logging to [`log`].
fn start(c: GreptimeConfig) -> Harness {
    log();
    Harness::start(SinkConfig::Greptime(Box::new(c)), 100_000)
}

/// Waits for the start-up check (USE, ALTER … append_mode) that finds the table.
fn ready(endpoint: &Endpoint) {
    assert!(wait_until(Duration::from_secs(5), || endpoint.sql().len() >= 2));
    std::thread::sleep(Duration::from_millis(50));
}

#[test]
fn every_row_arrives_once_by_bulk_into_a_table_that_exists() {
    let endpoint = Endpoint::start(None);
    create(&endpoint, "t_all");
    let mut h = start(cfg(&endpoint, "t_all"));
    ready(&endpoint);
    h.offer_batches(0..20, 100, Duration::ZERO);
    h.offer(rows(2_000..2_042)); // a partial batch, sent at shutdown
    h.finish();
    assert_exactly(&endpoint, "t_all", 0..2_042);
    assert_eq!(endpoint.bulk_rows("t_all"), 2_042, "all by bulk");
    assert_eq!(endpoint.bulk_counts().1, 1, "one stream, kept open");
    assert_eq!(
        (h.get(|c| &c.written), h.get(|c| &c.write_errors)),
        (2_042, 0)
    );
    h.assert_accounted(2_042);
}

#[test]
fn a_new_table_is_created_by_its_ddl_and_every_row_goes_by_bulk() {
    let endpoint = Endpoint::start(None);
    let mut h = start(cfg(&endpoint, "t_ddl"));
    ready(&endpoint);
    h.offer_batches(0..10, 100, Duration::ZERO);
    h.finish();
    assert_exactly(&endpoint, "t_ddl", 0..1_000);
    assert_eq!(endpoint.bulk_rows("t_ddl"), 1_000, "all by bulk");
    h.assert_accounted(1_000);
}

#[test]
fn with_no_create_table_a_new_table_gets_its_first_rows_by_row_insert_then_bulk() {
    let endpoint = Endpoint::start(None);
    let mut c = cfg(&endpoint, "t_new");
    c.ddl.create_tables = false;
    let mut h = start(c);
    ready(&endpoint);
    h.offer(rows(0..100));
    assert!(wait_until(Duration::from_secs(5), || endpoint
        .row_keys("t_new")
        .len()
        == 100));
    h.offer_batches(1..10, 100, Duration::ZERO);
    h.finish();
    assert_exactly(&endpoint, "t_new", 0..1_000);
    let bulk = endpoint.bulk_rows("t_new");
    assert!((800..=900).contains(&bulk), "{bulk} rows by bulk");
    h.assert_accounted(1_000);
}

/// A table an earlier release made, without the workload columns (`cgroup_id` …
/// `namespace`): bulk refuses batches with columns the table lacks, the row insert adds them
/// (as GreptimeDB does), and bulk carries the rest.
#[test]
fn a_table_without_the_workload_columns_gains_them_and_then_takes_bulk() {
    let endpoint = Endpoint::start(None);
    let new = ["cgroup_id", "container_id", "pod_uid", "pod", "namespace"];
    let cols: Vec<(&str, greptime_proto::v1::ColumnDataType)> = SCHEMA
        .iter()
        .filter(|c| !new.contains(&c.name))
        .map(|c| (c.name, c.data_type))
        .collect();
    endpoint.create_table("public", "t_old", &cols);
    let mut h = start(cfg(&endpoint, "t_old"));
    ready(&endpoint);
    h.offer_batches(0..10, 100, Duration::ZERO);
    h.finish();
    assert_exactly(&endpoint, "t_old", 0..1_000);
    let columns = endpoint.columns("public", "t_old");
    assert_eq!(columns[columns.len() - 5..], new, "added, in order");
    assert!(endpoint.bulk_rows("t_old") > 0, "bulk once they exist");
    h.assert_accounted(1_000);
}

fn refused_mid_stream(with_codes: bool, table: &str) {
    let endpoint = Endpoint::start(None);
    if with_codes {
        endpoint.bulk_errors_with_codes();
    }
    create(&endpoint, table);
    let mut h = start(cfg(&endpoint, table));
    ready(&endpoint);
    endpoint.fail_bulk_batch(3, Code::Unavailable, 5000, "storage unavailable");
    endpoint.drop_bulk_stream_at(12);
    h.offer(rows(0..3_000)); // 30 batches, four in flight
    assert!(wait_until(Duration::from_secs(10), || endpoint
        .row_keys(table)
        .len()
        >= 3_000));
    h.finish();
    assert_exactly(&endpoint, table, 0..3_000);
    let (_, streams) = endpoint.bulk_counts();
    assert!(
        streams >= 3,
        "{streams} streams: each failure opened a new one"
    );
    assert!(
        endpoint.bulk_rows(table) >= 2_000,
        "{} by bulk",
        endpoint.bulk_rows(table)
    );
    assert_eq!(
        (h.get(|c| &c.written), h.get(|c| &c.write_errors)),
        (3_000, 0)
    );
    h.assert_accounted(3_000);
}

#[test]
fn a_batch_refused_mid_stream_is_resent_and_nothing_is_duplicated() {
    refused_mid_stream(true, "t_refused_codes");
}

#[test]
fn a_batch_refused_mid_stream_by_greptimedb_1_0_is_resent_and_nothing_is_duplicated() {
    refused_mid_stream(false, "t_refused_1_0");
}

fn spool_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fmx-bulktest-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn an_outage_goes_to_the_spool_and_is_replayed_by_row_insert() {
    let endpoint = Endpoint::start(None);
    create(&endpoint, "t_outage");
    let dir = spool_dir("outage");
    let mut c = cfg(&endpoint, "t_outage");
    c.spool = Some(SpoolConfig {
        dir: dir.clone(),
        max_bytes: 64 << 20,
        stall: None,
    });
    let mut h = start(c);
    ready(&endpoint);
    h.offer(rows(0..200));
    assert!(wait_until(Duration::from_secs(5), || endpoint
        .row_keys("t_outage")
        .len()
        == 200));
    endpoint.refuse_for(Duration::from_secs(3));
    h.offer_batches(2..12, 100, Duration::from_millis(100));
    assert!(h.get(|c| &c.spooled) > 0, "rows went to the spool");
    assert!(wait_until(Duration::from_secs(20), || endpoint
        .row_keys("t_outage")
        .len()
        >= 1_200));
    h.offer(rows(1_200..1_300));
    assert!(wait_until(Duration::from_secs(5), || endpoint
        .row_keys("t_outage")
        .len()
        >= 1_300));
    h.finish();
    assert_exactly(&endpoint, "t_outage", 0..1_300);
    assert_eq!(h.get(|c| &c.spooled), h.get(|c| &c.spool_replayed));
    assert_eq!(
        (h.get(|c| &c.write_errors), h.get(|c| &c.spool_lost)),
        (0, 0)
    );
    assert!(
        endpoint.bulk_rows("t_outage") >= 300,
        "bulk before and after"
    );
    h.assert_accounted(1_300);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_missing_table_is_one_clear_line_and_its_rows_go_by_row_insert() {
    let endpoint = Endpoint::start(None);
    create(&endpoint, "t_missing");
    let mut h = start(cfg(&endpoint, "t_missing"));
    ready(&endpoint);
    endpoint.drop_table("public", "t_missing");
    h.offer_batches(0..10, 100, Duration::from_millis(20));
    h.finish();
    assert_exactly(&endpoint, "t_missing", 0..1_000);
    assert_eq!(
        (h.get(|c| &c.written), h.get(|c| &c.write_errors)),
        (1_000, 0)
    );
    let lines = lines_with(&[
        "bulk write to table t_missing refused",
        "Execute gRPC request error",
    ]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("existing table"), "{}", lines[0]);
}

#[test]
fn a_wrong_password_is_one_clear_line() {
    let endpoint = Endpoint::start(None);
    endpoint.require_user("u_bulk", "right");
    create(&endpoint, "t_auth");
    let mut c = cfg(&endpoint, "t_auth");
    c.username = Some("u_bulk".into());
    c.password = Some("wrong".into());
    let mut h = start(c);
    h.offer(rows(0..300));
    h.finish();
    assert_eq!(
        (h.get(|c| &c.written), h.get(|c| &c.write_errors)),
        (0, 300)
    );
    let lines = lines_with(&["password of user u_bulk is wrong"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
}
