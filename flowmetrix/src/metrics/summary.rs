//! The numbers of one run (the exit summary line) and the loss equation over them.

use std::sync::atomic::Ordering::Relaxed;

use super::{
    counters::{Counters, FlowCounters, SinkFigures},
    dns::{DnsCounters, DnsSummary},
    kernel::{DIRECTIONS, KernelStats},
};

/// The flows part of the summary (`--mode flows|both`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlowSummary {
    pub rows: u64,
    /// The flow table's own sink figures.
    pub sink: SinkFigures,
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
    /// How-well figures that found no row (`flows::health`).
    pub health_unmatched: u64,
    /// TCP handshakes the kernel's full state map could not take (printed when not 0).
    pub handshakes_full: u64,
    /// Local sockets' updates the kernel's full socket map refused (`--tcp-health`; printed
    /// when not 0).
    pub tcp_sockets_full: u64,
    /// `--drops on` (the drop program ran): the kernel's drops, all reasons.
    pub drops: Option<DropFigures>,
}

/// The kernel's drops in the summary's flows part (`--drops on`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DropFigures {
    /// Every reason's drops.
    pub total: u64,
    /// Drops the full per-interval map could not put on a flow row (in their reason's total).
    pub map_full: u64,
    /// Drops whose reason the full reasons map could not take (in no reason's total;
    /// printed when not 0).
    pub reasons_full: u64,
}

impl FlowSummary {
    pub fn new(kernel: &KernelStats, f: &FlowCounters) -> Self {
        let k = kernel.directions[0]
            .flows
            .zip(kernel.directions[1].flows, |a, b| a + b);
        Self {
            rows: f.rows.load(Relaxed),
            sink: SinkFigures::of(&f.sink),
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
            health_unmatched: f.health_unmatched.load(Relaxed),
            handshakes_full: f.handshakes_full.load(Relaxed),
            tcp_sockets_full: f.tcp_sockets_full.load(Relaxed),
            drops: f.drops.on.load(Relaxed).then(|| DropFigures {
                total: f.drops.total(),
                map_full: f.drops.map_full.load(Relaxed),
                reasons_full: f.drops.reasons_full.load(Relaxed),
            }),
        }
    }

    /// Flow rows unaccounted for: 0 when every row was written or counted as lost.
    pub fn unaccounted(&self) -> i128 {
        self.sink.unaccounted(self.rows)
    }
}

impl FlowSummary {
    /// The flows part, name and number, in the order printed; the spool's figures only
    /// when a spool could take rows.
    fn fields(&self, spool: bool) -> Vec<(&'static str, u64)> {
        let mut v = self.sink.fields(self.rows, spool);
        v.extend([
            ("packets", self.packets),
            ("bytes", self.bytes),
            ("events", self.events),
            ("unkeyed", self.unkeyed),
            ("unkeyed bytes", self.unkeyed_bytes),
            ("overflow", self.overflow),
            ("overflow bytes", self.overflow_bytes),
            ("map peak", self.map_peak),
            ("map max", self.map_max),
            ("collect errors", self.collect_errors),
            ("health unmatched", self.health_unmatched),
        ]);
        if self.handshakes_full != 0 {
            v.push(("handshakes full", self.handshakes_full));
        }
        if self.tcp_sockets_full != 0 {
            v.push(("tcp sockets full", self.tcp_sockets_full));
        }
        if let Some(d) = self.drops {
            v.extend([("kernel drops", d.total), ("drop map full", d.map_full)]);
            if d.reasons_full != 0 {
                v.push(("drop reasons full", d.reasons_full));
            }
        }
        v
    }
}

impl std::fmt::Display for FlowSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&join(&self.fields(true)))
    }
}

/// `name N, name N, …`
fn join(fields: &[(&str, u64)]) -> String {
    fields
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which parts of the summary apply to a run: the others are left out of the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Packet rows are made (`--mode packets|both`): the sampled … write errors figures.
    pub packets: bool,
    /// The directions captured (ingress, egress); none for a file, which has no direction.
    pub directions: [bool; 2],
    /// A disk spool takes the rows GreptimeDB cannot: the spooled, replayed and spool lost
    /// figures.
    pub spool: bool,
}

impl Default for Shape {
    /// Every part.
    fn default() -> Self {
        Self {
            packets: true,
            directions: [true; 2],
            spool: true,
        }
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
    /// Rows not printed because the reader of stdout left: it asked for no more, so they
    /// are not lost, but the loss equation counts them.
    pub unread: u64,
    /// `--mode flows|both`: printed as a `; flows: …` part after the others.
    pub flows: Option<FlowSummary>,
    /// `--mode flows|both`: the DNS transactions, a `; dns: …` part after the flows.
    pub dns: Option<DnsSummary>,
}

impl Summary {
    /// With the flows part.
    pub fn with_flows(mut self, f: &FlowCounters) -> Self {
        self.flows = Some(FlowSummary::new(&self.kernel, f));
        self
    }

    /// With the DNS part.
    pub fn with_dns(mut self, d: &DnsCounters) -> Self {
        self.dns = Some(DnsSummary::new(d, &self.kernel));
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
            unread: c.unread.load(Relaxed),
            flows: None,
            dns: None,
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
            - i128::from(self.unread)
    }
}

impl Summary {
    /// The totals, name and number, in the order printed.
    fn fields(&self, shape: &Shape) -> Vec<(&'static str, u64)> {
        let mut v = vec![("seen", self.kernel.seen)];
        if shape.packets {
            v.extend([
                ("sampled", self.kernel.sampled),
                ("ring drops", self.kernel.ring_drops),
                ("decoded", self.decoded),
                ("decode errors", self.decode_errors),
                ("queue drops", self.queue_drops),
                ("written", self.written),
                ("write errors", self.write_errors),
            ]);
            // Only in a run whose reader left (`| head`).
            if self.unread > 0 {
                v.push(("unread", self.unread));
            }
            if shape.spool {
                v.extend([
                    ("spooled", self.spooled),
                    ("replayed", self.replayed),
                    ("spool lost", self.spool_lost),
                ]);
            }
        } else if self.kernel.ring_drops > 0 {
            v.push(("ring drops", self.kernel.ring_drops));
        }
        v
    }

    /// Each captured direction's figures, by name.
    fn direction_fields(&self, shape: &Shape) -> Vec<(&'static str, Vec<(&'static str, u64)>)> {
        DIRECTIONS
            .iter()
            .zip(shape.directions)
            .filter(|(_, captured)| *captured)
            .map(|(&(d, name), _)| {
                let k = self.kernel.direction(d);
                let mut v = vec![("seen", k.seen)];
                if shape.packets {
                    v.extend([("sampled", k.sampled), ("ring drops", k.ring_drops)]);
                }
                (name, v)
            })
            .collect()
    }

    /// The summary line's text with only the parts of `shape`: `seen N, sampled N, …;
    /// ingress: seen N sampled N ring drops N; …; flows: rows N, …`.
    pub fn text(&self, shape: &Shape) -> String {
        let mut out = join(&self.fields(shape));
        for (name, fields) in self.direction_fields(shape) {
            let figures: Vec<String> = fields.iter().map(|(k, n)| format!("{k} {n}")).collect();
            out.push_str(&format!("; {name}: {}", figures.join(" ")));
        }
        if let Some(flows) = &self.flows {
            out.push_str(&format!("; flows: {}", join(&flows.fields(shape.spool))));
        }
        if let Some(dns) = &self.dns {
            out.push_str(&format!("; dns: {}", join(&dns.fields(shape.spool))));
        }
        out
    }

    /// The same parts as one JSON object (`--log-format json`): names with `_` for spaces,
    /// the directions and the flows part as objects of their own.
    pub fn json(&self, shape: &Shape) -> serde_json::Value {
        let object = |fields: &[(&str, u64)]| {
            serde_json::Value::Object(
                fields
                    .iter()
                    .map(|(k, n)| (k.replace(' ', "_"), serde_json::Value::from(*n)))
                    .collect(),
            )
        };
        let mut out = object(&self.fields(shape));
        if let serde_json::Value::Object(map) = &mut out {
            for (name, fields) in self.direction_fields(shape) {
                map.insert(name.to_owned(), object(&fields));
            }
            if let Some(flows) = &self.flows {
                map.insert("flows".to_owned(), object(&flows.fields(shape.spool)));
            }
            if let Some(dns) = &self.dns {
                map.insert("dns".to_owned(), object(&dns.fields(shape.spool)));
            }
        }
        out
    }

    /// Rows lost, packet, flow and DNS rows together, by cause: not written (write errors),
    /// dropped on a full queue, dropped from the spool. Samples the kernel dropped (ring
    /// drops) never became rows and are not among them; nor are the rows not printed
    /// because the reader of stdout left (`unread`): nobody was there to lose them.
    pub fn lost(&self) -> Lost {
        let f = self.flows.unwrap_or_default().sink;
        let d = self.dns.unwrap_or_default().sink;
        Lost {
            write_errors: self.write_errors + f.write_errors + d.write_errors,
            queue_drops: self.queue_drops + f.queue_drops + d.queue_drops,
            spool_lost: self.spool_lost + f.spool_lost + d.spool_lost,
        }
    }
}

/// Rows a run lost, by cause ([`Summary::lost`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    pub write_errors: u64,
    pub queue_drops: u64,
    pub spool_lost: u64,
}

impl Lost {
    pub fn total(&self) -> u64 {
        self.write_errors + self.queue_drops + self.spool_lost
    }

    /// `N rows lost: …`, each cause with what it means; `spool`: whether a disk spool
    /// could take rows. None when nothing was lost.
    pub fn describe(&self, spool: bool) -> Option<String> {
        if self.total() == 0 {
            return None;
        }
        let mut why = Vec::new();
        if self.write_errors > 0 {
            why.push(format!(
                "{} not written ({})",
                self.write_errors,
                if spool {
                    "the output refused them or the exit deadline passed, and the spool could not take them"
                } else {
                    "the output refused them or was unreachable until the exit deadline, and no spool took them"
                }
            ));
        }
        if self.queue_drops > 0 {
            why.push(format!(
                "{} dropped on a full queue (the output fell behind)",
                self.queue_drops
            ));
        }
        if self.spool_lost > 0 {
            why.push(format!(
                "{} dropped from the disk spool (full, damaged, or past the exit deadline)",
                self.spool_lost
            ));
        }
        Some(format!("{} rows lost: {}", self.total(), why.join("; ")))
    }
}

impl std::fmt::Display for Summary {
    /// Every part ([`Shape::default`]).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text(&Shape::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::kernel::{DirectionStats, FlowKernelStats};

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
            unread: 0,
            flows: None,
            dns: None,
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
                    ..Default::default()
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
            "rows 3, written 2, write errors 0, queue drops 1, spooled 0, replayed 0, spool lost 0, packets 7, bytes 700, events 2, unkeyed 3, unkeyed bytes 60, overflow 1, overflow bytes 100, map peak 9, map max 16, collect errors 1, health unmatched 0"
        );
        assert_eq!(s.flows.unwrap().unaccounted(), 0);
    }

    fn flows_run() -> Summary {
        let k = KernelStats::from_directions([
            DirectionStats {
                seen: 10,
                ..Default::default()
            },
            DirectionStats::default(),
        ]);
        let f = FlowCounters::default();
        Counters::add(&f.rows, 3);
        Counters::add(&f.sink.written, 3);
        Summary::new(k, &Counters::default()).with_flows(&f)
    }

    #[test]
    fn flows_mode_leaves_out_the_packet_figures() {
        let shape = Shape {
            packets: false,
            directions: [true, false],
            spool: true,
        };
        assert_eq!(
            flows_run().text(&shape),
            "seen 10; ingress: seen 10; flows: rows 3, written 3, write errors 0, queue drops 0, spooled 0, replayed 0, spool lost 0, packets 0, bytes 0, events 0, unkeyed 0, unkeyed bytes 0, overflow 0, overflow bytes 0, map peak 0, map max 0, collect errors 0, health unmatched 0"
        );
    }

    #[test]
    fn the_kernel_drops_end_the_flows_part_when_the_drop_program_ran() {
        let k = KernelStats::default();
        let f = FlowCounters::default();
        f.drops.on.store(true, Relaxed);
        f.drops.set_totals([
            ("NO_SOCKET".to_owned(), 10),
            ("NETFILTER_DROP".to_owned(), 3),
        ]);
        f.drops.map_full.store(1, Relaxed);
        let s = Summary::new(k, &Counters::default()).with_flows(&f);
        let text = s.text(&Shape::default());
        assert!(
            text.ends_with(
                "collect errors 0, health unmatched 0, kernel drops 13, drop map full 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn drops_no_reason_could_take_are_said_when_there_are_some() {
        let f = FlowCounters::default();
        f.drops.on.store(true, Relaxed);
        f.drops.set_totals([("NO_SOCKET".to_owned(), 10)]);
        f.drops.reasons_full.store(4, Relaxed);
        let s = Summary::new(KernelStats::default(), &Counters::default()).with_flows(&f);
        let text = s.text(&Shape::default());
        assert!(
            text.ends_with("kernel drops 10, drop map full 0, drop reasons full 4"),
            "{text}"
        );
    }

    #[test]
    fn only_captured_directions_and_no_spool_figures_without_a_spool() {
        let s = Summary {
            kernel: KernelStats::from_directions([
                DirectionStats {
                    seen: 4,
                    sampled: 4,
                    ..Default::default()
                },
                DirectionStats::default(),
            ]),
            decoded: 4,
            written: 4,
            ..Default::default()
        };
        let shape = Shape {
            packets: true,
            directions: [true, false],
            spool: false,
        };
        assert_eq!(
            s.text(&shape),
            "seen 4, sampled 4, ring drops 0, decoded 4, decode errors 0, queue drops 0, written 4, write errors 0; ingress: seen 4 sampled 4 ring drops 0"
        );
        // A file: no direction part.
        let file = Shape {
            directions: [false; 2],
            ..shape
        };
        assert!(!s.text(&file).contains("ingress"), "{}", s.text(&file));
        // The JSON object has the same parts.
        let j = s.json(&shape);
        assert_eq!(j["written"], 4);
        assert_eq!(j["ingress"]["sampled"], 4);
        assert!(
            j.get("egress").is_none() && j.get("spooled").is_none(),
            "{j}"
        );
        assert_eq!(flows_run().json(&Shape::default())["flows"]["rows"], 3);
    }

    #[test]
    fn lost_rows_are_counted_with_their_causes() {
        let mut s = flows_run();
        assert_eq!(s.lost().describe(false), None);
        s.write_errors = 5;
        s.spool_lost = 1;
        if let Some(f) = s.flows.as_mut() {
            f.sink.queue_drops = 2;
        }
        let lost = s.lost();
        assert_eq!(lost.total(), 8);
        let line = lost.describe(false).unwrap();
        assert!(line.starts_with("8 rows lost: 5 not written ("), "{line}");
        assert!(line.contains("no spool took them"), "{line}");
        assert!(line.contains("2 dropped on a full queue"), "{line}");
        assert!(line.contains("1 dropped from the disk spool"), "{line}");
    }

    /// Rows the reader of stdout never took (`| head`): a figure of their own, in the loss
    /// equation, but not a loss.
    #[test]
    fn unread_rows_balance_the_equation_and_are_not_lost() {
        let mut s = Summary {
            kernel: KernelStats::from_directions([
                DirectionStats {
                    seen: 10,
                    sampled: 10,
                    ..Default::default()
                },
                DirectionStats::default(),
            ]),
            decoded: 10,
            written: 4,
            unread: 6,
            ..Default::default()
        };
        assert_eq!(s.unaccounted(), 0);
        assert_eq!(s.lost().total(), 0);
        let shape = Shape {
            packets: true,
            directions: [false; 2],
            spool: false,
        };
        assert_eq!(
            s.text(&shape),
            "seen 10, sampled 10, ring drops 0, decoded 10, decode errors 0, queue drops 0, written 4, write errors 0, unread 6"
        );
        assert_eq!(s.json(&shape)["unread"], 6);
        let f = FlowCounters::default();
        Counters::add(&f.rows, 3);
        Counters::add(&f.sink.written, 1);
        Counters::add(&f.sink.unread, 2);
        s = s.with_flows(&f);
        let flows = s.flows.unwrap();
        assert_eq!(flows.unaccounted(), 0);
        assert!(
            s.text(&shape).contains(
                "; flows: rows 3, written 1, write errors 0, queue drops 0, unread 2, packets 0"
            ),
            "{}",
            s.text(&shape)
        );
        assert_eq!(s.lost().total(), 0);
        // A run whose reader stayed says nothing of it.
        s.unread = 0;
        let text = s.text(&shape);
        let (packets, _) = text.split_once("; flows").unwrap();
        assert!(!packets.contains("unread"), "{text}");
    }
}
