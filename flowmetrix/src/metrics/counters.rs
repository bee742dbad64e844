//! The userspace counters the stages share, and the write-duration histogram.
//!
//! The counters are plain atomics in one shared struct, not `prometheus-client`'s `Counter`
//! and `Gauge`: each of those is an `Arc` of its own (one allocation per counter and a
//! pointer chase per count, on the per-packet path of the decode stage), some of these are
//! gauges that are set, and the same numbers feed the exit summary and the status line. The
//! page reads them at scrape time through a collector of the crate's `ConstCounter` and
//! `ConstGauge` ([`super::exposition`]), the crate's way for values kept elsewhere. The
//! histogram, observed once per batch write, is the crate's own.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use prometheus_client::metrics::histogram::Histogram;

/// Userspace counters, shared by the pipeline stages.
#[derive(Debug, Default)]
pub struct Counters {
    /// Samples turned into rows.
    pub decoded: AtomicU64,
    /// Samples that could not be turned into a row (malformed record, frame too short).
    pub decode_errors: AtomicU64,
    /// Rows dropped because the queue to the output was full.
    pub queue_drops: AtomicU64,
    /// Rows the output accepted.
    pub written: AtomicU64,
    /// Rows the output failed to write.
    pub write_errors: AtomicU64,
    /// Rows not printed because the reader of stdout left (`… --output jsonl | head`): it
    /// asked for no more, so they are not a loss; they end the run as a Ctrl+C would.
    pub unread: AtomicU64,
    /// Write attempts that failed and were retried.
    pub write_retries: AtomicU64,
    /// Rows waiting in the queue to the output (gauge).
    pub queue_depth: AtomicU64,
    /// Rows put in the disk spool (GreptimeDB away, or the queue full).
    pub spooled: AtomicU64,
    /// Rows from the spool that GreptimeDB acknowledged.
    pub spool_replayed: AtomicU64,
    /// Rows the spool lost: dropped for space, or damaged on disk.
    pub spool_lost: AtomicU64,
    /// Spool size on disk (gauge).
    pub spool_bytes: AtomicU64,
    /// Spool segment files (gauge).
    pub spool_segments: AtomicU64,
    /// Time each batch write took, retries included.
    pub write_seconds: DurationHistogram,
    /// `--kube-metadata`: the pod list.
    pub kube: KubeCounters,
}

/// Why a read of the pod list failed (`--kube-metadata`), as the page labels it.
pub const KUBE_ERROR_REASONS: [&str; 8] = [
    "token", "ca", "connect", "tls", "status", "json", "timeout", "http",
];

/// `--kube-metadata`: how the pod list the attribution reads is kept (zero when it is off).
#[derive(Debug, Default)]
pub struct KubeCounters {
    /// `--kube-metadata` is on: the page shows these only then.
    pub on: AtomicBool,
    /// Pod lists and watch events taken into the index.
    pub updates: AtomicU64,
    /// Pod UIDs in the index (gauge): one a pod, two for a static pod (its own and its
    /// mirror's).
    pub pods: AtomicU64,
    /// Failed reads of the pod list, by reason ([`KUBE_ERROR_REASONS`]); the index keeps
    /// the last good list.
    pub errors: [AtomicU64; KUBE_ERROR_REASONS.len()],
}

impl KubeCounters {
    pub fn is_on(&self) -> bool {
        self.on.load(Relaxed)
    }
}

/// The flows stage's counters (`--mode flows|both`). The flow table's own sink counters
/// (written, write errors, queue drops, spooled, …) are in `sink`, a [`Counters`] of its own;
/// when everything has drained, `rows == sink.written + sink.write_errors +
/// sink.queue_drops + sink.spooled + sink.unread`.
#[derive(Debug, Default)]
pub struct FlowCounters {
    pub sink: Arc<Counters>,
    /// Flow rows made (one per flow and interval with packets).
    pub rows: AtomicU64,
    /// Packets and bytes in those rows.
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Flow events the collector took from the ring (packets the full map could not take).
    pub events: AtomicU64,
    /// Replay: frames the flow parser could not key, and their bytes (live, the kernel
    /// counts these: [`FlowKernelStats`](super::kernel::FlowKernelStats)).
    pub unkeyed: AtomicU64,
    pub unkeyed_bytes: AtomicU64,
    /// Entries of the flow map at the last collection, and its size (gauges).
    pub map_entries: AtomicU64,
    pub map_max: AtomicU64,
    /// The most entries any collection found (the exit summary's `map peak`).
    pub map_peak: AtomicU64,
    /// Collections of the kernel's maps that failed (their packets stay in the map for
    /// the next one, or are lost if the maps are gone).
    pub collect_errors: AtomicU64,
    /// Handshakes that found no flow row to go on ([`crate::flows::health`]).
    pub health_unmatched: AtomicU64,
    /// TCP handshakes the kernel's full state map could not take (not measured).
    pub handshakes_full: AtomicU64,
    /// Local sockets' updates the kernel's full socket map could not take
    /// (`--tcp-health`): their retransmits and RTT of that interval are missing.
    pub tcp_sockets_full: AtomicU64,
    /// Kernel drops by reason (`--drops on`).
    pub drops: super::drops::DropCounters,
}

/// Upper bounds (seconds) of the write-latency histogram buckets.
pub const WRITE_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

/// The time each batch write took: `prometheus-client`'s histogram over [`WRITE_BUCKETS`],
/// observed as a [`Duration`].
#[derive(Debug, Clone)]
pub struct DurationHistogram(Histogram);

impl Default for DurationHistogram {
    fn default() -> Self {
        Self(Histogram::new(WRITE_BUCKETS))
    }
}

// The crate's histogram keeps its sum, count and buckets under a lock that does not
// poison; a panic while it is held (none of its code panics) could at worst leave one
// observation half counted, which a histogram can bear. So the counters stay usable across
// a caught panic, as the plain atomics beside it are.
impl std::panic::RefUnwindSafe for DurationHistogram {}

impl DurationHistogram {
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }

    /// The histogram, to encode.
    pub fn histogram(&self) -> &Histogram {
        &self.0
    }
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn set(gauge: &AtomicU64, n: u64) {
        gauge.store(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = DurationHistogram::default();
        h.observe(std::time::Duration::from_micros(500));
        h.observe(std::time::Duration::from_millis(30));
        h.observe(std::time::Duration::from_secs(10));
        let (b, sum) = snapshot(&h);
        assert_eq!(b.len(), WRITE_BUCKETS.len() + 1);
        assert_eq!(b[0], 1); // <= 1 ms
        assert_eq!(b[5], 2); // <= 50 ms
        assert_eq!(*b.last().unwrap(), 3);
        assert!((sum - 10.0305).abs() < 1e-6);
    }

    /// Cumulative counts per bucket (the last is +Inf, the total), and the sum in seconds,
    /// as the histogram encodes them.
    fn snapshot(h: &DurationHistogram) -> (Vec<u64>, f64) {
        let mut r = prometheus_client::registry::Registry::default();
        r.register("h", "", h.histogram().clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        let value = |l: &str| l.rsplit(' ').next().unwrap_or_default().to_owned();
        let buckets = text
            .lines()
            .filter(|l| l.starts_with("h_bucket{"))
            .map(|l| value(l).parse().unwrap())
            .collect();
        let sum = text
            .lines()
            .find(|l| l.starts_with("h_sum "))
            .map(|l| value(l).parse().unwrap())
            .unwrap();
        (buckets, sum)
    }
}

/// What became of the rows of a table besides the packet table (flow rows, DNS rows), read
/// once from its [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkFigures {
    pub written: u64,
    pub write_errors: u64,
    pub queue_drops: u64,
    pub spooled: u64,
    pub replayed: u64,
    pub spool_lost: u64,
    /// Not printed: the reader of stdout left (not a loss).
    pub unread: u64,
}

impl SinkFigures {
    pub fn of(c: &Counters) -> Self {
        Self {
            written: c.written.load(Relaxed),
            write_errors: c.write_errors.load(Relaxed),
            queue_drops: c.queue_drops.load(Relaxed),
            spooled: c.spooled.load(Relaxed),
            replayed: c.spool_replayed.load(Relaxed),
            spool_lost: c.spool_lost.load(Relaxed),
            unread: c.unread.load(Relaxed),
        }
    }

    /// Of `rows` made, those unaccounted for: 0 when every row was written or counted.
    pub fn unaccounted(&self, rows: u64) -> i128 {
        i128::from(rows)
            - i128::from(self.written)
            - i128::from(self.write_errors)
            - i128::from(self.queue_drops)
            - i128::from(self.spooled)
            - i128::from(self.unread)
    }

    /// `rows`, then these figures, name and number, in the order printed; `unread` only in
    /// a run whose reader left (`| head`), the spool's figures only when a spool could take
    /// rows.
    pub fn fields(&self, rows: u64, spool: bool) -> Vec<(&'static str, u64)> {
        let mut v = vec![
            ("rows", rows),
            ("written", self.written),
            ("write errors", self.write_errors),
            ("queue drops", self.queue_drops),
        ];
        if self.unread > 0 {
            v.push(("unread", self.unread));
        }
        if spool {
            v.extend([
                ("spooled", self.spooled),
                ("replayed", self.replayed),
                ("spool lost", self.spool_lost),
            ]);
        }
        v
    }
}
