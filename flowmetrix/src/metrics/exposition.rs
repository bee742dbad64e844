//! The `/metrics` page: a `prometheus-client` registry whose one collector reads the
//! [`Registry`]'s atomics at scrape time (no second set of counters to keep in step).
//!
//! Encoded in the Prometheus text format 0.0.4, so every name, `# TYPE` line and `le` label is
//! what the hand-written page had. `prometheus-client` appends `_total` to counter names
//! itself, so counters are declared without it; no metric is given a unit (that would append a
//! suffix too): the unit is already part of each name.

use std::{fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

use super::{
    counters::{Counters, FlowCounters, KUBE_ERROR_REASONS, KubeCounters, SinkFigures},
    dns::DnsSummary,
    kernel::{DIRECTIONS, DirectionStats},
    registry::Registry,
    summary::FlowSummary,
};

/// Every metric name starts with this, then `_`.
pub const PREFIX: &str = "flowmetrix";

/// `Content-Type` of the page.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

impl Registry {
    /// The `/metrics` page, in the Prometheus text format (0.0.4).
    pub fn render(self: &Arc<Self>) -> String {
        encode(&exposition(Arc::clone(self)))
    }
}

/// The `prometheus-client` registry that serves `registry`.
pub fn exposition(registry: Arc<Registry>) -> prometheus_client::registry::Registry {
    let mut r = prometheus_client::registry::Registry::with_prefix(PREFIX);
    r.register_collector(Box::new(Scrape(registry)));
    r
}

/// The page for `r`, in the Prometheus text format.
pub fn encode(r: &prometheus_client::registry::Registry) -> String {
    let mut out = String::with_capacity(4096);
    // Writing to a String cannot fail, and every value here is encodable.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, r);
    out
}

/// Reads the counters when a scrape encodes it.
#[derive(Debug)]
struct Scrape(Arc<Registry>);

/// Declared without `_total`: the encoder appends it.
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let m = ConstCounter::new(v);
    m.encode(e.encode_descriptor(name, help, None, m.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let m = ConstGauge::new(v);
    m.encode(e.encode_descriptor(name, help, None, m.metric_type())?)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let c = &self.0.counters;
        // The userspace counters first, the last stage first, then the kernel's: each
        // number read counts only what the ones read after it had counted already, so that
        // `sampled - ring_drops - decoded - ...` is never negative on the page.
        let get = Counters::get;
        let written = get(&c.written);
        let write_errors = get(&c.write_errors);
        let unread = get(&c.unread);
        let spooled = get(&c.spooled);
        let spool_replayed = get(&c.spool_replayed);
        let spool_lost = get(&c.spool_lost);
        let queue_drops = get(&c.queue_drops);
        let decode_errors = get(&c.decode_errors);
        let decoded = get(&c.decoded);
        let (k, interfaces) = self.0.fresh_kernel();
        let g = self.0.gauges;
        let e = &mut e;
        counter(
            e,
            "packets_seen",
            "Packets the programs ran on, all CPUs, both directions.",
            k.seen,
        )?;
        counter(
            e,
            "packets_sampled",
            "Packets the sampler chose.",
            k.sampled,
        )?;
        counter(
            e,
            "ring_drops",
            "Sampled packets lost because the kernel ring buffer was full.",
            k.ring_drops,
        )?;
        counter(e, "samples_decoded", "Samples turned into rows.", decoded)?;
        counter(
            e,
            "decode_errors",
            "Samples that could not be turned into a row.",
            decode_errors,
        )?;
        counter(
            e,
            "queue_drops",
            "Rows dropped because the queue to the output was full.",
            queue_drops,
        )?;
        gauge(
            e,
            "queue_depth_rows",
            "Rows waiting for the output.",
            get(&c.queue_depth),
        )?;
        counter(e, "rows_written", "Rows the output accepted.", written)?;
        counter(
            e,
            "write_errors",
            "Rows the output failed to write.",
            write_errors,
        )?;
        counter(
            e,
            "write_retries",
            "Write attempts that failed and were retried.",
            get(&c.write_retries),
        )?;
        counter(
            e,
            "spooled_rows",
            "Rows put in the disk spool (GreptimeDB away, or the queue full).",
            spooled,
        )?;
        counter(
            e,
            "spool_replayed_rows",
            "Rows from the spool that GreptimeDB acknowledged (they may be from an earlier run).",
            spool_replayed,
        )?;
        counter(
            e,
            "spool_lost_rows",
            "Rows the spool lost: dropped for space, or damaged on disk.",
            spool_lost,
        )?;
        gauge(
            e,
            "spool_bytes",
            "Size of the spool on disk.",
            get(&c.spool_bytes),
        )?;
        gauge(
            e,
            "spool_segments",
            "Segment files in the spool.",
            get(&c.spool_segments),
        )?;
        gauge(
            e,
            "sample_rate",
            "1 in N packets is sampled.",
            u64::from(g.sample_rate),
        )?;
        gauge(
            e,
            "snaplen_bytes",
            "Bytes captured per sample.",
            u64::from(g.snaplen),
        )?;

        let h = c.write_seconds.histogram();
        h.encode(e.encode_descriptor(
            "write_duration_seconds",
            "Time to write one batch, retries included.",
            None,
            h.metric_type(),
        )?)?;

        // A gauge with a label (not an OpenMetrics info, which would be renamed `_info`).
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        let mut m = e.encode_descriptor(
            "build_info",
            "FlowMetrix version.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        ConstGauge::new(1u64).encode(m.encode_family(&version)?)?;

        // The kernel counters again, split by direction (the unlabelled ones are their sums).
        type Field = fn(&DirectionStats) -> u64;
        let split: [(&str, &str, Field); 3] = [
            (
                "packets_seen_by_direction",
                "Packets the programs ran on, all CPUs, by direction.",
                |d| d.seen,
            ),
            (
                "packets_sampled_by_direction",
                "Packets the sampler chose, by direction.",
                |d| d.sampled,
            ),
            (
                "ring_drops_by_direction",
                "Sampled packets lost because the kernel ring buffer was full, by direction.",
                |d| d.ring_drops,
            ),
        ];
        for (name, help, field) in &split {
            let mut m = e.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (d, label) in DIRECTIONS {
                let labels = [("direction", label)];
                ConstCounter::new(field(&k.direction(d))).encode(m.encode_family(&labels)?)?;
            }
        }

        // Added after the page's first design, so after it: the rows the reader of stdout
        // never took, the last term of the loss equation.
        counter(
            e,
            "rows_unread",
            "Rows not printed because the reader of stdout left (not a loss: it ended the run).",
            unread,
        )?;

        // And by interface (they add up to the unlabelled ones too).
        if !interfaces.is_empty() {
            for (name, help, field) in &split {
                let name = name.replace("_by_direction", "_by_interface");
                let help = help.replace(", by direction.", ", by interface and direction.");
                let mut m = e.encode_descriptor(
                    &name,
                    &help,
                    None,
                    prometheus_client::metrics::MetricType::Counter,
                )?;
                for i in &interfaces {
                    for (d, label) in DIRECTIONS {
                        let labels = [("interface", &*i.interface), ("direction", label)];
                        ConstCounter::new(field(&i.directions[d as usize]))
                            .encode(m.encode_family(&labels)?)?;
                    }
                }
            }
        }
        if let Some(f) = &self.0.flows {
            flows(e, &FlowSummary::new(&k, f), f)?;
        }
        if let Some(d) = &self.0.dns {
            dns(e, &DnsSummary::new(d, &k))?;
        }
        if c.kube.is_on() {
            kube(e, &c.kube)?;
        }
        Ok(())
    }
}

/// `--kube-metadata`: the pod index and the failed reads of the pod list, by reason.
fn kube(e: &mut DescriptorEncoder, k: &KubeCounters) -> fmt::Result {
    counter(
        e,
        "kube_updates",
        "Pod lists and watch events taken into the pod index.",
        Counters::get(&k.updates),
    )?;
    gauge(
        e,
        "kube_pods",
        "Pods in the pod index.",
        Counters::get(&k.pods),
    )?;
    let mut m = e.encode_descriptor(
        "kube_errors",
        "Failed reads of the pod list, by reason (the index keeps the last good list).",
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (reason, n) in KUBE_ERROR_REASONS.iter().zip(&k.errors) {
        ConstCounter::new(Counters::get(n)).encode(m.encode_family(&[("reason", *reason)])?)?;
    }
    Ok(())
}

/// `--mode flows|both`: the flow rows and the packets counted in them.
fn flows(e: &mut DescriptorEncoder, s: &FlowSummary, f: &FlowCounters) -> fmt::Result {
    counter(
        e,
        "flow_rows",
        "Flow rows made (one per flow and interval).",
        s.rows,
    )?;
    sink_figures(e, "flow", "Flow", &s.sink)?;
    let counters: [(&str, &str, u64); 6] = [
        ("flow_packets", "Packets counted in flow rows.", s.packets),
        (
            "flow_bytes",
            "Bytes (wire length less any prefix) counted in flow rows.",
            s.bytes,
        ),
        (
            "flow_events",
            "Packets the full flow map could not take, counted through the ring.",
            s.events,
        ),
        (
            "flow_unkeyed_packets",
            "Packets the flow parser could not key.",
            s.unkeyed,
        ),
        (
            "flow_overflow_packets",
            "Packets neither the flow map nor the ring could take.",
            s.overflow,
        ),
        (
            "flow_overflow_bytes",
            "Bytes of the packets neither the flow map nor the ring could take.",
            s.overflow_bytes,
        ),
    ];
    for (name, help, v) in counters {
        counter(e, name, help, v)?;
    }
    counter(
        e,
        "flow_unkeyed_bytes",
        "Bytes of the packets the flow parser could not key.",
        s.unkeyed_bytes,
    )?;
    counter(
        e,
        "flow_collect_errors",
        "Collections of the kernel's flow maps that failed.",
        Counters::get(&f.collect_errors),
    )?;
    counter(
        e,
        "flow_health_unmatched",
        "Handshakes that found no flow row to go on.",
        Counters::get(&f.health_unmatched),
    )?;
    counter(
        e,
        "flow_handshakes_full",
        "TCP handshakes not measured: the kernel's handshake state map was full.",
        Counters::get(&f.handshakes_full),
    )?;
    counter(
        e,
        "flow_tcp_sockets_full",
        "Local TCP sockets' updates the full socket map could not take (--tcp-health).",
        Counters::get(&f.tcp_sockets_full),
    )?;
    gauge(
        e,
        "flow_map_entries",
        "Entries of the flow map at the last collection.",
        s.map_entries,
    )?;
    gauge(
        e,
        "flow_map_max_entries",
        "Size of each flow map (--flow-max-entries).",
        s.map_max,
    )?;
    f.drops.encode(e)
}

/// What became of a table's rows (flow rows, DNS rows): `{prefix}_rows_written`, … with
/// help texts about `{what}` rows.
fn sink_figures(
    e: &mut DescriptorEncoder,
    prefix: &str,
    what: &str,
    s: &SinkFigures,
) -> fmt::Result {
    for (name, help, v) in [
        ("rows_written", "rows the output accepted.", s.written),
        (
            "write_errors",
            "rows the output failed to write.",
            s.write_errors,
        ),
        (
            "queue_drops",
            "rows dropped because the queue to the output was full.",
            s.queue_drops,
        ),
        (
            "rows_unread",
            "rows not printed because the reader of stdout left.",
            s.unread,
        ),
        ("spooled_rows", "rows put in the disk spool.", s.spooled),
        (
            "spool_replayed_rows",
            "rows from the spool that GreptimeDB acknowledged.",
            s.replayed,
        ),
    ] {
        counter(e, &format!("{prefix}_{name}"), &format!("{what} {help}"), v)?;
    }
    Ok(())
}

/// The DNS counters on `/metrics`, `flowmetrix_dns_*`.
fn dns(e: &mut DescriptorEncoder, s: &DnsSummary) -> fmt::Result {
    counter(
        e,
        "dns_rows",
        "DNS rows made (answered transactions and timeouts).",
        s.rows,
    )?;
    sink_figures(e, "dns", "DNS", &s.sink)?;
    let counters: [(&str, &str, u64); 9] = [
        ("dns_queries", "DNS queries seen.", s.queries),
        (
            "dns_timeouts",
            "DNS queries with no answer within --dns-timeout.",
            s.timeouts,
        ),
        (
            "dns_unmatched_answers",
            "DNS answers to no query seen.",
            s.unmatched_answers,
        ),
        (
            "dns_repeated_queries",
            "DNS queries repeated with the same id before the answer (the first one's time is kept).",
            s.repeated_queries,
        ),
        (
            "dns_table_full",
            "DNS queries that found the table of waiting queries full (no row for them).",
            s.table_full,
        ),
        (
            "dns_malformed",
            "Packets on a DNS port whose message could not be read.",
            s.malformed,
        ),
        (
            "dns_kernel_copies",
            "DNS packets the kernel passed to the ring outside the sampling (flows mode).",
            s.kernel_copies,
        ),
        (
            "dns_ring_drops",
            "DNS packets the kernel could not pass: the ring had no room.",
            s.ring_drops,
        ),
        (
            "dns_pending_at_end",
            "DNS queries still waiting at the end, younger than the timeout (no row for them).",
            s.pending_at_end,
        ),
    ];
    for (name, help, v) in counters {
        counter(e, name, help, v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{kernel::KernelStats, registry::Gauges, summary::Summary};

    #[test]
    fn a_scrape_reads_the_kernel_after_userspace_so_the_equation_holds() {
        let r = Arc::new(Registry::default());
        // The tick's snapshot is old: 1 sampled, where userspace has decoded 5 since.
        r.set_kernel(KernelStats {
            sampled: 1,
            ..Default::default()
        });
        Counters::add(&r.counters.decoded, 5);
        // Live, the kernel is read at the scrape; decoding goes on while it is read.
        let counters = Arc::clone(&r.counters);
        r.read_kernel_with(Some(Box::new(move || {
            let sampled = Counters::get(&counters.decoded) + 2; // 2 in the ring
            Counters::add(&counters.decoded, 3); // decoded while the kernel was read
            Some((
                KernelStats {
                    seen: sampled,
                    sampled,
                    ..Default::default()
                },
                Vec::new(),
            ))
        })));
        let page = r.render();
        let v = |name: &str| value(&page, name).unwrap_or_else(|| panic!("{page}"));
        let (sampled, decoded) = (
            v("flowmetrix_packets_sampled_total"),
            v("flowmetrix_samples_decoded_total"),
        );
        assert_eq!((sampled, decoded), (7, 5), "{page}");
        // Without a reader (a replay), the latest snapshot.
        r.read_kernel_with(None);
        r.set_kernel(KernelStats {
            sampled: 20,
            ..Default::default()
        });
        let page = r.render();
        assert_eq!(value(&page, "flowmetrix_packets_sampled_total"), Some(20));
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
    fn kube_metrics_are_on_the_page_only_with_kube_metadata() {
        let r = Arc::new(Registry::default());
        assert!(!r.render().contains("kube"));
        let k = &r.counters.kube;
        k.on.store(true, std::sync::atomic::Ordering::Relaxed);
        Counters::add(&k.updates, 3);
        Counters::set(&k.pods, 17);
        Counters::add(&k.errors[4], 2);
        let text = r.render();
        assert_eq!(value(&text, "flowmetrix_kube_updates_total"), Some(3));
        assert_eq!(value(&text, "flowmetrix_kube_pods"), Some(17));
        assert!(
            text.contains("flowmetrix_kube_errors_total{reason=\"status\"} 2"),
            "{text}"
        );
        assert!(text.contains("flowmetrix_kube_errors_total{reason=\"token\"} 0"));
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
                // The rows the reader of stdout never took (added with the stop on a
                // closed stdout).
                "# TYPE flowmetrix_rows_unread_total counter",
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
            (&c.written, 56),
            (&c.write_errors, 7),
            (&c.spooled, 23),
            (&c.spool_replayed, 11),
            (&c.spool_lost, 13),
            (&c.unread, 4),
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
            unread,
            flows: _,
            dns: _,
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
            ("flowmetrix_rows_unread_total", unread),
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
                + page("flowmetrix_rows_unread_total")
        );
    }

    #[test]
    fn spool_gauges_are_read_at_scrape_time() {
        let r = Arc::new(Registry::default());
        let page = exposition(Arc::clone(&r));
        Counters::set(&r.counters.spool_bytes, 4096);
        Counters::set(&r.counters.spool_segments, 2);
        Counters::set(&r.counters.queue_depth, 7);
        let text = encode(&page);
        assert_eq!(value(&text, "flowmetrix_spool_bytes"), Some(4096));
        assert_eq!(value(&text, "flowmetrix_spool_segments"), Some(2));
        assert_eq!(value(&text, "flowmetrix_queue_depth_rows"), Some(7));
        Counters::set(&r.counters.spool_segments, 1);
        let text = encode(&page);
        assert_eq!(value(&text, "flowmetrix_spool_segments"), Some(1));
    }
}
