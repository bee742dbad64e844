//! Counters for every place a sample or row can be lost, named for the place.
//!
//! The kernel keeps its own per-CPU counters (`seen`, `sampled`, `ring_drops`); userspace
//! stages count here. When everything has drained:
//! `sampled == ring_drops + decode_errors + queue_drops + write_errors + written`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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

/// Kernel counters summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KernelStats {
    pub seen: u64,
    pub sampled: u64,
    pub ring_drops: u64,
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
}

impl Summary {
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
        )
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
    pub counters: std::sync::Arc<Counters>,
    pub kernel: std::sync::Mutex<KernelStats>,
    pub gauges: Gauges,
}

impl Registry {
    pub fn kernel(&self) -> KernelStats {
        *self.kernel.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_kernel(&self, k: KernelStats) {
        *self.kernel.lock().unwrap_or_else(|e| e.into_inner()) = k;
    }

    /// The Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let k = self.kernel();
        let c = &self.counters;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP flowmetrix_{name} {help}");
            let _ = writeln!(out, "# TYPE flowmetrix_{name} {kind}");
            let _ = writeln!(out, "flowmetrix_{name} {value}");
        };
        metric(
            "packets_seen_total",
            "counter",
            "Packets the XDP program ran on, all CPUs.",
            k.seen,
        );
        metric(
            "packets_sampled_total",
            "counter",
            "Packets the sampler chose.",
            k.sampled,
        );
        metric(
            "ring_drops_total",
            "counter",
            "Sampled packets lost because the kernel ring buffer was full.",
            k.ring_drops,
        );
        metric(
            "samples_decoded_total",
            "counter",
            "Samples turned into rows.",
            c.decoded.load(Relaxed),
        );
        metric(
            "decode_errors_total",
            "counter",
            "Samples that could not be turned into a row.",
            c.decode_errors.load(Relaxed),
        );
        metric(
            "queue_drops_total",
            "counter",
            "Rows dropped because the queue to the output was full.",
            c.queue_drops.load(Relaxed),
        );
        metric(
            "queue_depth_rows",
            "gauge",
            "Rows waiting for the output.",
            c.queue_depth.load(Relaxed),
        );
        metric(
            "rows_written_total",
            "counter",
            "Rows the output accepted.",
            c.written.load(Relaxed),
        );
        metric(
            "write_errors_total",
            "counter",
            "Rows the output failed to write.",
            c.write_errors.load(Relaxed),
        );
        metric(
            "write_retries_total",
            "counter",
            "Write attempts that failed and were retried.",
            c.write_retries.load(Relaxed),
        );
        metric(
            "sample_rate",
            "gauge",
            "1 in N packets is sampled.",
            u64::from(self.gauges.sample_rate),
        );
        metric(
            "snaplen_bytes",
            "gauge",
            "Bytes captured per sample.",
            u64::from(self.gauges.snaplen),
        );
        let (buckets, sum) = c.write_seconds.snapshot();
        let _ = writeln!(
            out,
            "# HELP flowmetrix_write_duration_seconds Time to write one batch, retries included."
        );
        let _ = writeln!(out, "# TYPE flowmetrix_write_duration_seconds histogram");
        for (le, n) in WRITE_BUCKETS
            .iter()
            .map(|b| b.to_string())
            .chain(["+Inf".to_owned()])
            .zip(&buckets)
        {
            let _ = writeln!(
                out,
                "flowmetrix_write_duration_seconds_bucket{{le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(out, "flowmetrix_write_duration_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "flowmetrix_write_duration_seconds_count {}",
            buckets.last().copied().unwrap_or(0)
        );
        let _ = writeln!(out, "# HELP flowmetrix_build_info FlowMetrix version.");
        let _ = writeln!(out, "# TYPE flowmetrix_build_info gauge");
        let _ = writeln!(
            out,
            "flowmetrix_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, registry: std::sync::Arc<Registry>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let registry = std::sync::Arc::clone(&registry);
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut len = 0;
            // Read the request head (bounded), then answer and close.
            while len < buf.len() {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    conn.read(&mut buf[len..]),
                )
                .await
                {
                    Ok(Ok(n)) if n > 0 => len += n,
                    _ => break,
                }
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let (status, body) =
                if head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?") {
                    ("200 OK", registry.render())
                } else {
                    ("404 Not Found", "try /metrics\n".to_owned())
                };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_format() {
        let s = Summary {
            kernel: KernelStats {
                seen: 10,
                sampled: 9,
                ring_drops: 1,
            },
            decoded: 8,
            decode_errors: 0,
            queue_drops: 2,
            written: 5,
            write_errors: 0,
            spooled: 1,
            replayed: 3,
            spool_lost: 0,
        };
        assert_eq!(
            s.to_string(),
            "seen 10, sampled 9, ring drops 1, decoded 8, decode errors 0, queue drops 2, written 5, write errors 0, spooled 1, replayed 3, spool lost 0"
        );
        assert_eq!(s.unaccounted(), 0);
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
        let r = Registry {
            gauges: Gauges {
                sample_rate: 10,
                snaplen: 192,
            },
            ..Default::default()
        };
        r.set_kernel(KernelStats {
            seen: 100,
            sampled: 10,
            ring_drops: 1,
        });
        Counters::add(&r.counters.written, 9);
        let text = r.render();
        for line in [
            "flowmetrix_packets_seen_total 100",
            "flowmetrix_packets_sampled_total 10",
            "flowmetrix_ring_drops_total 1",
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
}
