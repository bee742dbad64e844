//! Memory stays bounded whatever the rate: rows offered as fast as this thread can make
//! them to a sink whose GreptimeDB stalls (answers nothing) or is away, with and without a
//! spool, on the bulk and the row-insert path. A counting global allocator in this test
//! binary measures the heap's peak above where it stood before the sink started; the loss
//! equation (written + write errors + queue drops + spooled = offered) must hold exactly.
//! No root needed.

#[path = "common/data.rs"]
mod data;
#[path = "common/endpoint/mod.rs"]
#[allow(dead_code)]
mod endpoint;
#[path = "common/sink_harness.rs"]
#[allow(dead_code)]
mod sink_harness;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use endpoint::Endpoint;
use flowmetrix::{
    record::{MacAddr, PacketRecord, UnixNanos},
    sink::{
        SinkConfig,
        greptime::{GreptimeConfig, SCHEMA, SpoolConfig, WritePath},
    },
};
use sink_harness::{Harness, wait_until};

/// The system allocator, counting the bytes held now and the most held at once.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller promised for `layout`.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = HELD.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as the caller promised for `ptr` and `layout`.
        unsafe { System.dealloc(ptr, layout) };
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as the caller promised for `ptr`, `layout` and `new_size`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grown = new_size - layout.size();
                let now = HELD.fetch_add(grown, Ordering::Relaxed) + grown;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                HELD.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// One scenario at a time: the counts are the whole process's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The heap a stalled sink may hold above its start, defaults as the command line's
/// (`--queue-size 32768`, `--batch-size 1024`, `--max-in-flight 4`): the process's peak RSS
/// must stay under 64 MiB, code, stacks and the runtime included.
const HEAP_LIMIT: usize = 48 << 20;

/// Rows offered in each scenario: many times what any queue holds.
const OFFERED: u32 = CHUNK * 3_000;
/// Rows a drain of the ring hands over at once.
const CHUNK: u32 = 512;

/// A row as capture makes it: addresses, ports, the shared host and interface names.
fn row(i: u32, host: &Arc<str>, interface: &Arc<str>) -> PacketRecord {
    PacketRecord {
        ts: UnixNanos(1_795_000_000_000_000_000 + i64::from(i)),
        host: Arc::clone(host),
        interface: Arc::clone(interface),
        packet_size: 60,
        ether_type: 0x0800,
        src_mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
        dst_mac: Some(MacAddr([2, 0, 0, 0, 0, 2])),
        protocol: Some(17),
        src_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8))),
        dst_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1))),
        src_port: Some(10_000 + (i % 50_000) as u16),
        dst_port: Some(53),
        ..PacketRecord::default()
    }
}

/// A spool directory of this test's own, removed when dropped (also when the test fails).
struct SpoolDir(PathBuf);

impl std::ops::Deref for SpoolDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for SpoolDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spool_dir(name: &str) -> SpoolDir {
    let d = std::env::temp_dir().join(format!("fmx-memtest-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    SpoolDir(d)
}

/// The command line's defaults, but a short exit deadline.
fn cfg(endpoint: &Endpoint, path: WritePath, spool: Option<&PathBuf>) -> GreptimeConfig {
    GreptimeConfig {
        batch_size: 1024,
        flush_interval: Duration::from_secs(1),
        max_in_flight: 4,
        write_path: path,
        shutdown_timeout: Duration::from_secs(1),
        spool: spool.map(|dir| SpoolConfig {
            dir: dir.clone(),
            max_bytes: 1 << 30,
            stall: None,
        }),
        ..GreptimeConfig::new(vec![endpoint.addr.to_string()], "packet_data")
    }
}

/// Offers [`OFFERED`] rows as fast as they are made to a sink of `c` and returns the
/// heap's peak above its level before the sink started; checks the loss equation.
/// `away`: the endpoint refuses connections from the start; else it stalls once the sink's
/// start-up found the table.
fn peak_while_offering(endpoint: &Endpoint, c: GreptimeConfig, away: bool) -> (usize, Harness) {
    let host: Arc<str> = Arc::from("collector-host-01");
    let interface: Arc<str> = Arc::from("eth0");
    let base = HELD.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut h = Harness::start(SinkConfig::Greptime(Box::new(c)), 32_768);
    if !away {
        // Start-up (USE, ALTER … append_mode) found the table: bulk may go. Then the
        // endpoint stops answering.
        assert!(wait_until(Duration::from_secs(5), || endpoint.sql().len() >= 2));
        std::thread::sleep(Duration::from_millis(300));
        endpoint.stall(Some(Duration::from_secs(60)));
    }
    let mut i = 0;
    while i < OFFERED {
        let rows = (i..i + CHUNK).map(|k| row(k, &host, &interface)).collect();
        h.offer(rows);
        i += CHUNK;
    }
    // What was queued meets the stalled endpoint meanwhile: give it time to pile up.
    std::thread::sleep(Duration::from_secs(2));
    h.finish();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    eprintln!(
        "written {}, write errors {}, queue drops {}, spooled {}",
        h.get(|c| &c.written),
        h.get(|c| &c.write_errors),
        h.get(|c| &c.queue_drops),
        h.get(|c| &c.spooled)
    );
    h.assert_accounted(u64::from(OFFERED));
    (peak, h)
}

fn started(table_exists: bool) -> Endpoint {
    let endpoint = Endpoint::start(None);
    if table_exists {
        let cols: Vec<(&str, greptime_proto::v1::ColumnDataType)> =
            SCHEMA.iter().map(|c| (c.name, c.data_type)).collect();
        endpoint.create_table("public", "packet_data", &cols);
    }
    endpoint
}

fn check(what: &str, peak: usize) {
    eprintln!(
        "{what}: heap peak {:.1} MiB",
        peak as f64 / f64::from(1 << 20)
    );
    assert!(
        peak <= HEAP_LIMIT,
        "{what}: the heap grew by {:.1} MiB (limit {} MiB)",
        peak as f64 / f64::from(1 << 20),
        HEAP_LIMIT >> 20
    );
}

#[test]
fn a_stalled_endpoint_on_the_bulk_path_with_a_spool_keeps_memory_bounded() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let endpoint = started(true);
    let dir = spool_dir("bulk-stalled");
    let (peak, h) = peak_while_offering(
        &endpoint,
        cfg(&endpoint, WritePath::Bulk, Some(&dir)),
        false,
    );
    check("bulk, stalled, spool", peak);
    assert!(h.get(|c| &c.spooled) > 0, "rows went to the spool");
}

#[test]
fn a_stalled_endpoint_on_the_bulk_path_without_a_spool_keeps_memory_bounded() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let endpoint = started(true);
    let (peak, h) = peak_while_offering(&endpoint, cfg(&endpoint, WritePath::Bulk, None), false);
    check("bulk, stalled, no spool", peak);
    assert!(
        h.get(|c| &c.queue_drops) > 0,
        "what did not fit was dropped"
    );
}

#[test]
fn a_stalled_endpoint_on_the_row_path_with_a_spool_keeps_memory_bounded() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let endpoint = started(true);
    let dir = spool_dir("rows-stalled");
    let (peak, h) = peak_while_offering(
        &endpoint,
        cfg(&endpoint, WritePath::Rows, Some(&dir)),
        false,
    );
    check("rows, stalled, spool", peak);
    assert!(h.get(|c| &c.spooled) > 0, "rows went to the spool");
}

#[test]
fn an_endpoint_away_with_a_spool_keeps_memory_bounded() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let endpoint = started(true);
    endpoint.refuse_for(Duration::from_secs(120));
    let dir = spool_dir("away");
    let (peak, h) =
        peak_while_offering(&endpoint, cfg(&endpoint, WritePath::Bulk, Some(&dir)), true);
    check("bulk, away, spool", peak);
    assert!(h.get(|c| &c.spooled) > 0, "rows went to the spool");
}
