//! What `/metrics` and the status line read: the shared counters, the latest kernel
//! snapshot and the settings shown as gauges.

use std::sync::Arc;

use super::{Counters, FlowCounters, InterfaceStats, KernelStats, exposition};

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
    use crate::metrics::{DirectionStats, Summary};

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
