//! Counters for every place a sample or row can be lost, named for the place.
//!
//! The kernel keeps its own per-CPU counters (`seen`, `sampled`, `ring_drops`), per
//! direction (their sums are the totals the summary and the unlabelled metrics show); userspace
//! stages count here. When everything has drained:
//! `sampled == ring_drops + decode_errors + queue_drops + write_errors + written + spooled`.
//!
//! [`exposition`] turns them into the Prometheus page at scrape time, [`http`] serves it.

pub mod exposition;
pub mod http;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};

pub use flowmetrix_common::Direction;

pub use http::{Limits, MAX_CONNECTIONS, READ_TIMEOUT, serve, serve_with};

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
    pub write_seconds: Histogram,
}

/// The flows stage's counters (`--mode flows|both`). The flow table's own sink counters
/// (written, write errors, queue drops, spooled, …) are in `sink`, a [`Counters`] of its own;
/// when everything has drained, `rows == sink.written + sink.write_errors +
/// sink.queue_drops + sink.spooled`.
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
    /// counts these: [`FlowKernelStats`]).
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
}

/// Upper bounds (seconds) of the write-latency histogram buckets.
pub const WRITE_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

/// A Prometheus-style histogram with fixed buckets, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last one is +Inf.
    counts: [AtomicU64; WRITE_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = WRITE_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(WRITE_BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Cumulative counts per bucket (the last is +Inf, the total), and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut total = 0;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                total += c.load(Relaxed);
                total
            })
            .collect();
        (cumulative, self.sum_micros.load(Relaxed) as f64 / 1e6)
    }

    /// Counts per bucket (not cumulative; the last is +Inf), and the sum in seconds.
    pub fn buckets(&self) -> ([u64; WRITE_BUCKETS.len() + 1], f64) {
        (
            std::array::from_fn(|i| self.counts[i].load(Relaxed)),
            self.sum_micros.load(Relaxed) as f64 / 1e6,
        )
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

/// Kernel counters of one direction, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DirectionStats {
    pub seen: u64,
    pub sampled: u64,
    pub ring_drops: u64,
    /// Flows mode (zero otherwise).
    pub flows: FlowKernelStats,
}

/// The kernel's flow counters of one direction (`CpuStats::flow_*`), summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlowKernelStats {
    /// Packets the flow parser could not key, and their bytes.
    pub unkeyed: u64,
    pub unkeyed_bytes: u64,
    /// Packets sent as flow events through the ring because the flow map was full.
    pub events: u64,
    /// Packets neither the map nor the ring could take, and their bytes.
    pub overflow: u64,
    pub overflow_bytes: u64,
}

impl FlowKernelStats {
    /// Each counter of `self` and `other` combined by `f`.
    pub fn zip(self, other: Self, f: impl Fn(u64, u64) -> u64) -> Self {
        Self {
            unkeyed: f(self.unkeyed, other.unkeyed),
            unkeyed_bytes: f(self.unkeyed_bytes, other.unkeyed_bytes),
            events: f(self.events, other.events),
            overflow: f(self.overflow, other.overflow),
            overflow_bytes: f(self.overflow_bytes, other.overflow_bytes),
        }
    }
}

impl DirectionStats {
    /// Each counter of `self` and `other` combined by `f`.
    pub fn zip(self, other: Self, f: impl Fn(u64, u64) -> u64 + Copy) -> Self {
        Self {
            seen: f(self.seen, other.seen),
            sampled: f(self.sampled, other.sampled),
            ring_drops: f(self.ring_drops, other.ring_drops),
            flows: self.flows.zip(other.flows, f),
        }
    }

    pub fn add(&mut self, other: &Self) {
        *self = self.zip(*other, |a, b| a + b);
    }
}

/// Kernel counters of one interface, by direction (indexed by [`Direction`]). Over every
/// interface (those gone included, and `other` for packets of interfaces that had no
/// counters of their own) they add up to [`KernelStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceStats {
    pub interface: Arc<str>,
    pub directions: [DirectionStats; 2],
}

/// Kernel counters summed over CPUs: the totals, and the same split by direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KernelStats {
    /// Totals over both directions.
    pub seen: u64,
    pub sampled: u64,
    pub ring_drops: u64,
    /// Indexed by [`Direction`] (ingress, egress); they add up to the totals.
    pub directions: [DirectionStats; 2],
}

/// The directions in [`KernelStats::directions`] order, with their label values.
pub const DIRECTIONS: [(Direction, &str); 2] = [
    (Direction::Ingress, "ingress"),
    (Direction::Egress, "egress"),
];

impl KernelStats {
    /// Totals computed from the per-direction counters.
    pub fn from_directions(directions: [DirectionStats; 2]) -> Self {
        let [i, e] = directions;
        Self {
            seen: i.seen + e.seen,
            sampled: i.sampled + e.sampled,
            ring_drops: i.ring_drops + e.ring_drops,
            directions,
        }
    }

    /// The counters of direction `d`.
    pub fn direction(&self, d: Direction) -> DirectionStats {
        self.directions[d as usize]
    }
}

/// The flows part of the summary (`--mode flows|both`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlowSummary {
    pub rows: u64,
    pub written: u64,
    pub write_errors: u64,
    pub queue_drops: u64,
    pub spooled: u64,
    pub replayed: u64,
    pub spool_lost: u64,
    pub packets: u64,
    pub bytes: u64,
    pub events: u64,
    /// The kernel's (live) and the replay's together.
    pub unkeyed: u64,
    pub unkeyed_bytes: u64,
    pub overflow: u64,
    pub overflow_bytes: u64,
    /// Entries at the last collection (gauge), and the most any collection found.
    pub map_entries: u64,
    pub map_peak: u64,
    pub map_max: u64,
    pub collect_errors: u64,
}

impl FlowSummary {
    pub fn new(kernel: &KernelStats, f: &FlowCounters) -> Self {
        let k = kernel.directions[0]
            .flows
            .zip(kernel.directions[1].flows, |a, b| a + b);
        let s = &f.sink;
        Self {
            rows: f.rows.load(Relaxed),
            written: s.written.load(Relaxed),
            write_errors: s.write_errors.load(Relaxed),
            queue_drops: s.queue_drops.load(Relaxed),
            spooled: s.spooled.load(Relaxed),
            replayed: s.spool_replayed.load(Relaxed),
            spool_lost: s.spool_lost.load(Relaxed),
            packets: f.packets.load(Relaxed),
            bytes: f.bytes.load(Relaxed),
            events: f.events.load(Relaxed),
            unkeyed: k.unkeyed + f.unkeyed.load(Relaxed),
            unkeyed_bytes: k.unkeyed_bytes + f.unkeyed_bytes.load(Relaxed),
            overflow: k.overflow,
            overflow_bytes: k.overflow_bytes,
            map_entries: f.map_entries.load(Relaxed),
            map_peak: f.map_peak.load(Relaxed),
            map_max: f.map_max.load(Relaxed),
            collect_errors: f.collect_errors.load(Relaxed),
        }
    }

    /// Flow rows unaccounted for: 0 when every row was written or counted as lost.
    pub fn unaccounted(&self) -> i128 {
        i128::from(self.rows)
            - i128::from(self.written)
            - i128::from(self.write_errors)
            - i128::from(self.queue_drops)
            - i128::from(self.spooled)
    }
}

impl std::fmt::Display for FlowSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rows {}, written {}, write errors {}, queue drops {}, spooled {}, replayed {}, spool lost {}, packets {}, bytes {}, events {}, unkeyed {}, unkeyed bytes {}, overflow {}, overflow bytes {}, map peak {}, map max {}, collect errors {}",
            self.rows,
            self.written,
            self.write_errors,
            self.queue_drops,
            self.spooled,
            self.replayed,
            self.spool_lost,
            self.packets,
            self.bytes,
            self.events,
            self.unkeyed,
            self.unkeyed_bytes,
            self.overflow,
            self.overflow_bytes,
            self.map_peak,
            self.map_max,
            self.collect_errors
        )
    }
}

/// The numbers of one run, printed at exit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub kernel: KernelStats,
    pub decoded: u64,
    pub decode_errors: u64,
    pub queue_drops: u64,
    pub written: u64,
    pub write_errors: u64,
    pub spooled: u64,
    pub replayed: u64,
    pub spool_lost: u64,
    /// `--mode flows|both`: printed as a `; flows: …` part after the others.
    pub flows: Option<FlowSummary>,
}

impl Summary {
    /// With the flows part.
    pub fn with_flows(mut self, f: &FlowCounters) -> Self {
        self.flows = Some(FlowSummary::new(&self.kernel, f));
        self
    }

    pub fn new(kernel: KernelStats, c: &Counters) -> Self {
        Self {
            kernel,
            decoded: c.decoded.load(Relaxed),
            decode_errors: c.decode_errors.load(Relaxed),
            queue_drops: c.queue_drops.load(Relaxed),
            written: c.written.load(Relaxed),
            write_errors: c.write_errors.load(Relaxed),
            spooled: c.spooled.load(Relaxed),
            replayed: c.spool_replayed.load(Relaxed),
            spool_lost: c.spool_lost.load(Relaxed),
            flows: None,
        }
    }

    /// Samples unaccounted for: 0 when every sample became a row or a counted loss.
    pub fn unaccounted(&self) -> i128 {
        i128::from(self.kernel.sampled)
            - i128::from(self.kernel.ring_drops)
            - i128::from(self.decode_errors)
            - i128::from(self.queue_drops)
            - i128::from(self.write_errors)
            - i128::from(self.written)
            - i128::from(self.spooled)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seen {}, sampled {}, ring drops {}, decoded {}, decode errors {}, queue drops {}, written {}, write errors {}, spooled {}, replayed {}, spool lost {}",
            self.kernel.seen,
            self.kernel.sampled,
            self.kernel.ring_drops,
            self.decoded,
            self.decode_errors,
            self.queue_drops,
            self.written,
            self.write_errors,
            self.spooled,
            self.replayed,
            self.spool_lost
        )?;
        for (d, name) in DIRECTIONS {
            let k = self.kernel.direction(d);
            write!(
                f,
                "; {name}: seen {} sampled {} ring drops {}",
                k.seen, k.sampled, k.ring_drops
            )?;
        }
        if let Some(flows) = &self.flows {
            write!(f, "; flows: {flows}")?;
        }
        Ok(())
    }
}

/// Settings shown as gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub sample_rate: u32,
    pub snaplen: u32,
}

/// What `/metrics` and the status line read: the userspace counters and the latest
/// snapshot of the kernel's.
#[derive(Debug, Default)]
pub struct Registry {
    pub counters: Arc<Counters>,
    pub kernel: std::sync::Mutex<KernelStats>,
    /// The kernel's counters per interface, read with `kernel`.
    pub interfaces: std::sync::Mutex<Vec<InterfaceStats>>,
    pub gauges: Gauges,
    /// `--mode flows|both`.
    pub flows: Option<Arc<FlowCounters>>,
}

impl Registry {
    pub fn kernel(&self) -> KernelStats {
        *self.kernel.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_kernel(&self, k: KernelStats) {
        *self.kernel.lock().unwrap_or_else(|e| e.into_inner()) = k;
    }

    pub fn interfaces(&self) -> Vec<InterfaceStats> {
        self.interfaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The kernel's counters, in total and per interface, from one reading.
    pub fn set_counters(&self, k: KernelStats, interfaces: Vec<InterfaceStats>) {
        // Per interface first: a scrape between the two sees totals no smaller than them.
        *self.interfaces.lock().unwrap_or_else(|e| e.into_inner()) = interfaces;
        self.set_kernel(k);
    }

    /// The `/metrics` page, in the Prometheus text format (0.0.4).
    pub fn render(self: &Arc<Self>) -> String {
        exposition::encode(&exposition::exposition(Arc::clone(self)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_format() {
        let s = Summary {
            kernel: KernelStats::from_directions([
                DirectionStats {
                    seen: 7,
                    sampled: 6,
                    ring_drops: 1,
                    ..Default::default()
                },
                DirectionStats {
                    seen: 3,
                    sampled: 3,
                    ring_drops: 0,
                    ..Default::default()
                },
            ]),
            decoded: 8,
            decode_errors: 0,
            queue_drops: 2,
            written: 5,
            write_errors: 0,
            spooled: 1,
            replayed: 3,
            spool_lost: 0,
            flows: None,
        };
        assert_eq!(
            s.to_string(),
            "seen 10, sampled 9, ring drops 1, decoded 8, decode errors 0, queue drops 2, written 5, write errors 0, spooled 1, replayed 3, spool lost 0; ingress: seen 7 sampled 6 ring drops 1; egress: seen 3 sampled 3 ring drops 0"
        );
        assert_eq!(s.unaccounted(), 0);
    }

    #[test]
    fn summary_line_appends_the_flows_part() {
        let mut k = KernelStats::from_directions([
            DirectionStats {
                seen: 10,
                flows: FlowKernelStats {
                    unkeyed: 1,
                    unkeyed_bytes: 60,
                    events: 2,
                    overflow: 1,
                    overflow_bytes: 100,
                },
                ..Default::default()
            },
            DirectionStats::default(),
        ]);
        k.directions[1].flows.unkeyed = 1;
        let f = FlowCounters::default();
        Counters::add(&f.rows, 3);
        Counters::add(&f.sink.written, 2);
        Counters::add(&f.sink.queue_drops, 1);
        Counters::add(&f.packets, 7);
        Counters::add(&f.bytes, 700);
        Counters::add(&f.events, 2);
        Counters::add(&f.unkeyed, 1);
        Counters::set(&f.map_entries, 4);
        Counters::set(&f.map_peak, 9);
        Counters::set(&f.map_max, 16);
        Counters::add(&f.collect_errors, 1);
        let s = Summary::new(k, &Counters::default()).with_flows(&f);
        let text = s.to_string();
        let (packets, flows) = text.split_once("; flows: ").unwrap();
        assert_eq!(packets, Summary::new(k, &Counters::default()).to_string());
        assert_eq!(
            flows,
            "rows 3, written 2, write errors 0, queue drops 1, spooled 0, replayed 0, spool lost 0, packets 7, bytes 700, events 2, unkeyed 3, unkeyed bytes 60, overflow 1, overflow bytes 100, map peak 9, map max 16, collect errors 1"
        );
        assert_eq!(s.flows.unwrap().unaccounted(), 0);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(std::time::Duration::from_micros(500));
        h.observe(std::time::Duration::from_millis(30));
        h.observe(std::time::Duration::from_secs(10));
        let (b, sum) = h.snapshot();
        assert_eq!(b.len(), WRITE_BUCKETS.len() + 1);
        assert_eq!(b[0], 1); // <= 1 ms
        assert_eq!(b[5], 2); // <= 50 ms
        assert_eq!(*b.last().unwrap(), 3);
        assert!((sum - 10.0305).abs() < 1e-6);
    }

    #[test]
    fn prometheus_text_names_every_stage() {
        let r = Arc::new(Registry {
            gauges: Gauges {
                sample_rate: 10,
                snaplen: 192,
            },
            ..Default::default()
        });
        r.set_kernel(KernelStats::from_directions([
            DirectionStats {
                seen: 60,
                sampled: 6,
                ring_drops: 1,
                ..Default::default()
            },
            DirectionStats {
                seen: 40,
                sampled: 4,
                ring_drops: 0,
                ..Default::default()
            },
        ]));
        Counters::add(&r.counters.written, 9);
        let text = r.render();
        for line in [
            "flowmetrix_packets_seen_total 100",
            "flowmetrix_packets_sampled_total 10",
            "flowmetrix_ring_drops_total 1",
            "flowmetrix_packets_seen_by_direction_total{direction=\"ingress\"} 60",
            "flowmetrix_packets_seen_by_direction_total{direction=\"egress\"} 40",
            "flowmetrix_packets_sampled_by_direction_total{direction=\"ingress\"} 6",
            "flowmetrix_packets_sampled_by_direction_total{direction=\"egress\"} 4",
            "flowmetrix_ring_drops_by_direction_total{direction=\"ingress\"} 1",
            "flowmetrix_ring_drops_by_direction_total{direction=\"egress\"} 0",
            "flowmetrix_rows_written_total 9",
            "flowmetrix_sample_rate 10",
            "flowmetrix_snaplen_bytes 192",
            "flowmetrix_write_duration_seconds_bucket{le=\"+Inf\"} 0",
            "# TYPE flowmetrix_queue_depth_rows gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(text.contains("flowmetrix_build_info{version="));
    }

    /// The value of the sample `name` (no labels) on `page`.
    fn value(page: &str, name: &str) -> Option<u64> {
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn names_and_types_are_the_same_as_before() {
        let r = Arc::new(Registry::default());
        let text = r.render();
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        assert_eq!(
            types,
            [
                // The names and types the hand-written page had, in its order…
                "# TYPE flowmetrix_packets_seen_total counter",
                "# TYPE flowmetrix_packets_sampled_total counter",
                "# TYPE flowmetrix_ring_drops_total counter",
                "# TYPE flowmetrix_samples_decoded_total counter",
                "# TYPE flowmetrix_decode_errors_total counter",
                "# TYPE flowmetrix_queue_drops_total counter",
                "# TYPE flowmetrix_queue_depth_rows gauge",
                "# TYPE flowmetrix_rows_written_total counter",
                "# TYPE flowmetrix_write_errors_total counter",
                "# TYPE flowmetrix_write_retries_total counter",
                // …then the spool's…
                "# TYPE flowmetrix_spooled_rows_total counter",
                "# TYPE flowmetrix_spool_replayed_rows_total counter",
                "# TYPE flowmetrix_spool_lost_rows_total counter",
                "# TYPE flowmetrix_spool_bytes gauge",
                "# TYPE flowmetrix_spool_segments gauge",
                // …and the rest as before.
                "# TYPE flowmetrix_sample_rate gauge",
                "# TYPE flowmetrix_snaplen_bytes gauge",
                "# TYPE flowmetrix_write_duration_seconds histogram",
                "# TYPE flowmetrix_build_info gauge",
                // The kernel counters per direction, last (added with egress capture).
                "# TYPE flowmetrix_packets_seen_by_direction_total counter",
                "# TYPE flowmetrix_packets_sampled_by_direction_total counter",
                "# TYPE flowmetrix_ring_drops_by_direction_total counter",
            ]
        );
        let buckets: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("flowmetrix_write_duration_seconds"))
            .collect();
        assert_eq!(
            buckets,
            [
                "flowmetrix_write_duration_seconds_bucket{le=\"0.001\"} 0",
                "flowmetrix_write_duration_seconds_bucket{le=\"0.0025\"} 0",
                "flowmetrix_write_duration_seconds_bucket{le=\"0.005\"} 0",
                "flowmetrix_write_duration_seconds_bucket{le=\"0.01\"} 0",
                "flowmetrix_write_duration_seconds_bucket{le=\"0.025\"} 0",
                "flowmetrix_write_duration_seconds_bucket{le=\"0.05\"} 0",
                "flowmetrix_write_duration_seconds_bucket{le=\"0.1\"} 0",
                "flowmetrix_write_duration_seconds_bucket{le=\"0.5\"} 0",
                "flowmetrix_write_duration_seconds_bucket{le=\"1\"} 0",
                "flowmetrix_write_duration_seconds_bucket{le=\"5\"} 0",
                "flowmetrix_write_duration_seconds_bucket{le=\"+Inf\"} 0",
                "flowmetrix_write_duration_seconds_sum 0.0",
                "flowmetrix_write_duration_seconds_count 0",
            ]
        );
        assert!(text.lines().any(|l| l
            == format!(
                "flowmetrix_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )));
    }

    #[test]
    fn histogram_on_the_page_is_cumulative() {
        let r = Arc::new(Registry::default());
        let h = &r.counters.write_seconds;
        h.observe(std::time::Duration::from_micros(500));
        h.observe(std::time::Duration::from_millis(30));
        h.observe(std::time::Duration::from_secs(10));
        let text = r.render();
        for line in [
            "flowmetrix_write_duration_seconds_bucket{le=\"0.001\"} 1",
            "flowmetrix_write_duration_seconds_bucket{le=\"0.025\"} 1",
            "flowmetrix_write_duration_seconds_bucket{le=\"0.05\"} 2",
            "flowmetrix_write_duration_seconds_bucket{le=\"5\"} 2",
            "flowmetrix_write_duration_seconds_bucket{le=\"+Inf\"} 3",
            "flowmetrix_write_duration_seconds_sum 10.0305",
            "flowmetrix_write_duration_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    /// Every number of the exit summary can be watched from Prometheus, so the loss equation
    /// can be checked there. A field added to `Summary` without a metric fails to compile here.
    #[test]
    fn every_summary_field_has_a_metric() {
        let r = Arc::new(Registry::default());
        r.set_kernel(KernelStats {
            seen: 1000,
            sampled: 100,
            ring_drops: 3,
            ..Default::default()
        });
        let c = &r.counters;
        for (counter, n) in [
            (&c.decoded, 95),
            (&c.decode_errors, 2),
            (&c.queue_drops, 5),
            (&c.written, 60),
            (&c.write_errors, 7),
            (&c.spooled, 23),
            (&c.spool_replayed, 11),
            (&c.spool_lost, 13),
        ] {
            Counters::add(counter, n);
        }
        let s = Summary::new(r.kernel(), c);
        assert_eq!(s.unaccounted(), 0);
        let Summary {
            kernel:
                KernelStats {
                    seen,
                    sampled,
                    ring_drops,
                    directions: _,
                },
            decoded,
            decode_errors,
            queue_drops,
            written,
            write_errors,
            spooled,
            replayed,
            spool_lost,
            flows: _,
        } = s;
        let text = r.render();
        let page = |name| value(&text, name).unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        for (name, want) in [
            ("flowmetrix_packets_seen_total", seen),
            ("flowmetrix_packets_sampled_total", sampled),
            ("flowmetrix_ring_drops_total", ring_drops),
            ("flowmetrix_samples_decoded_total", decoded),
            ("flowmetrix_decode_errors_total", decode_errors),
            ("flowmetrix_queue_drops_total", queue_drops),
            ("flowmetrix_rows_written_total", written),
            ("flowmetrix_write_errors_total", write_errors),
            ("flowmetrix_spooled_rows_total", spooled),
            ("flowmetrix_spool_replayed_rows_total", replayed),
            ("flowmetrix_spool_lost_rows_total", spool_lost),
        ] {
            assert_eq!(page(name), want, "{name}");
        }
        // The loss equation, from the page alone.
        assert_eq!(
            page("flowmetrix_packets_sampled_total"),
            page("flowmetrix_ring_drops_total")
                + page("flowmetrix_decode_errors_total")
                + page("flowmetrix_queue_drops_total")
                + page("flowmetrix_write_errors_total")
                + page("flowmetrix_rows_written_total")
                + page("flowmetrix_spooled_rows_total")
        );
    }

    #[test]
    fn spool_gauges_are_read_at_scrape_time() {
        let r = Arc::new(Registry::default());
        let page = exposition::exposition(Arc::clone(&r));
        Counters::set(&r.counters.spool_bytes, 4096);
        Counters::set(&r.counters.spool_segments, 2);
        Counters::set(&r.counters.queue_depth, 7);
        let text = exposition::encode(&page);
        assert_eq!(value(&text, "flowmetrix_spool_bytes"), Some(4096));
        assert_eq!(value(&text, "flowmetrix_spool_segments"), Some(2));
        assert_eq!(value(&text, "flowmetrix_queue_depth_rows"), Some(7));
        Counters::set(&r.counters.spool_segments, 1);
        let text = exposition::encode(&page);
        assert_eq!(value(&text, "flowmetrix_spool_segments"), Some(1));
    }
}
