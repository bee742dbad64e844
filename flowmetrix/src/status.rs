//! What the collector says while it runs: a status line every `--stats-interval` (rates,
//! the losses since the previous line, the queue depth, the spool) and one warning per
//! episode of falling behind, naming the stage and the setting to change.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::metrics::{Counters, DIRECTIONS, Registry, Summary};

/// An episode of drops ends after this long without new ones.
const QUIET: Duration = Duration::from_secs(10);

pub struct Status {
    every: Duration,
    last_at: Instant,
    last: Summary,
    ring: Episode,
    /// Packet rows are made (`--mode packets|both`): the packets line is printed.
    packets: bool,
}

impl Status {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last_at: Instant::now(),
            last: Summary::default(),
            ring: Episode::default(),
            packets: true,
        }
    }

    /// Without the packets line when no packet rows are made (`--mode flows`): its
    /// figures would all be 0 beside the flow rows.
    pub fn with_packets(mut self, packets: bool) -> Self {
        self.packets = packets;
        self
    }

    /// Called about once a second with fresh counters.
    pub fn tick(&mut self, registry: &Registry) {
        let now = Summary::new(registry.kernel(), &registry.counters);
        match self.ring.update(now.kernel.ring_drops, Instant::now()) {
            Some(true) => warn!(
                "the ring buffer is full: sampled packets are being dropped (raise --ring-bytes, or sample fewer with --sample-rate); counted as ring drops"
            ),
            Some(false) => info!("no ring drops for {QUIET:?}"),
            None => {}
        }
        let elapsed = self.last_at.elapsed();
        if elapsed < self.every {
            return;
        }
        let secs = elapsed.as_secs_f64();
        let d = |new: u64, old: u64| new.saturating_sub(old);
        let c = &registry.counters;
        if self.packets {
            self.packets_line(&now, c, secs);
        }
        for (dir, name) in DIRECTIONS {
            let (k, was) = (now.kernel.direction(dir), self.last.kernel.direction(dir));
            if k.seen > 0 && !self.packets {
                info!("{name}: seen {:.1}/s", d(k.seen, was.seen) as f64 / secs);
            } else if k.seen > 0 {
                info!(
                    "{name}: seen {:.1}/s, sampled {:.1}/s, ring drops {} since the last line",
                    d(k.seen, was.seen) as f64 / secs,
                    d(k.sampled, was.sampled) as f64 / secs,
                    d(k.ring_drops, was.ring_drops),
                );
            }
        }
        if let Some(f) = &registry.flows {
            let (now, was) = (
                crate::metrics::FlowSummary::new(&now.kernel, f),
                self.last.flows.unwrap_or_default(),
            );
            info!(
                "flows: rows {:.1}/s, written {:.1}/s, packets {:.1}/s; since the last line: flow events {}, unkeyed {}, overflow {}, write errors {}, queue drops {}, spooled {}; map {}/{} entries",
                d(now.rows, was.rows) as f64 / secs,
                d(now.sink.written, was.sink.written) as f64 / secs,
                d(now.packets, was.packets) as f64 / secs,
                d(now.events, was.events),
                d(now.unkeyed, was.unkeyed),
                d(now.overflow, was.overflow),
                d(now.sink.write_errors, was.sink.write_errors),
                d(now.sink.queue_drops, was.sink.queue_drops),
                d(now.sink.spooled, was.sink.spooled),
                now.map_entries,
                now.map_max,
            );
        }
        self.last = match &registry.flows {
            Some(f) => now.with_flows(f),
            None => now,
        };
        self.last_at = Instant::now();
    }

    /// The packets line: rates, and the losses since the previous line.
    fn packets_line(&self, now: &Summary, c: &Counters, secs: f64) {
        let d = |new: u64, old: u64| new.saturating_sub(old);
        info!(
            "sampled {:.1}/s, written {:.1}/s; since the last line: ring drops {}, decode errors {}, queue drops {}, write errors {}, spooled {}, replayed {}, spool lost {}; queue {} rows, spool {} bytes",
            d(now.kernel.sampled, self.last.kernel.sampled) as f64 / secs,
            d(now.written, self.last.written) as f64 / secs,
            d(now.kernel.ring_drops, self.last.kernel.ring_drops),
            d(now.decode_errors, self.last.decode_errors),
            d(now.queue_drops, self.last.queue_drops),
            d(now.write_errors, self.last.write_errors),
            d(now.spooled, self.last.spooled),
            d(now.replayed, self.last.replayed),
            d(now.spool_lost, self.last.spool_lost),
            Counters::get(&c.queue_depth),
            Counters::get(&c.spool_bytes),
        );
    }
}

/// Whether a loss counter is rising: an episode begins with its first increase and ends
/// after [`QUIET`] without one.
#[derive(Debug, Default)]
struct Episode {
    last_value: u64,
    last_rise: Option<Instant>,
}

impl Episode {
    /// `Some(true)` when an episode begins now, `Some(false)` when one ends.
    fn update(&mut self, value: u64, now: Instant) -> Option<bool> {
        let rose = value > self.last_value;
        self.last_value = value;
        match (rose, self.last_rise) {
            (true, None) => {
                self.last_rise = Some(now);
                Some(true)
            }
            (true, Some(_)) => {
                self.last_rise = Some(now);
                None
            }
            (false, Some(at)) if now.duration_since(at) >= QUIET => {
                self.last_rise = None;
                Some(false)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_episode() {
        let mut e = Episode::default();
        let t = Instant::now();
        assert_eq!(e.update(0, t), None);
        assert_eq!(e.update(5, t + Duration::from_secs(1)), Some(true));
        assert_eq!(e.update(9, t + Duration::from_secs(2)), None);
        assert_eq!(e.update(9, t + Duration::from_secs(5)), None);
        assert_eq!(e.update(9, t + Duration::from_secs(12)), Some(false));
        assert_eq!(e.update(10, t + Duration::from_secs(13)), Some(true));
    }
}
