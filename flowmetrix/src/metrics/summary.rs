//! The numbers of one run (the exit summary line) and the loss equation over them.

use std::sync::atomic::Ordering::Relaxed;

use super::{
    counters::{Counters, FlowCounters},
    kernel::{DIRECTIONS, KernelStats},
};

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
}
