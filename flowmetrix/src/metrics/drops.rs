//! Kernel drops by reason (`--drops on`): every reason's total since start, named by the
//! running kernel (`flowmetrix_kernel_drops_total{reason}`), and what the drop program's
//! maps could not take (on the page: [`super::exposition`]).

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::counter::ConstCounter,
};

#[derive(Debug, Default)]
pub struct DropCounters {
    /// Whether the drop program runs (the probe passed): the page shows the figures then.
    pub on: std::sync::atomic::AtomicBool,
    /// Drops by reason name, since start (the kernel's running totals).
    by_reason: Mutex<BTreeMap<String, u64>>,
    /// Drops the full per-interval map could not key to a flow (still in their reason's
    /// total).
    pub map_full: AtomicU64,
    /// Drops whose reason the full reasons map could not take (in no reason's total).
    pub reasons_full: AtomicU64,
    /// Drops on interfaces not watched, or of another network namespace (in their
    /// reason's total only).
    pub other_interface: AtomicU64,
}

impl DropCounters {
    /// Sets the totals to the kernel's (they only grow).
    pub fn set_totals(&self, totals: impl IntoIterator<Item = (String, u64)>) {
        let mut m = self.by_reason.lock().unwrap_or_else(|e| e.into_inner());
        for (reason, n) in totals {
            m.insert(reason, n);
        }
    }

    /// Every reason's drops together.
    pub fn total(&self) -> u64 {
        self.by_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }

    pub fn totals(&self) -> Vec<(String, u64)> {
        self.by_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(r, n)| (r.clone(), *n))
            .collect()
    }

    /// The page's part: `kernel_drops{reason}` and the losses.
    pub fn encode(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        if !self.on.load(Relaxed) {
            return Ok(());
        }
        let mut m = e.encode_descriptor(
            "kernel_drops",
            "Packets the kernel dropped (skb:kfree_skb), by the reason the running kernel names.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, n) in self.totals() {
            ConstCounter::new(n).encode(m.encode_family(&[("reason", reason.as_str())])?)?;
        }
        for (name, help, v) in [
            (
                "kernel_drops_map_full",
                "Kernel drops not put on a flow row: the drop map was full (still in their reason's total).",
                &self.map_full,
            ),
            (
                "kernel_drops_reasons_full",
                "Kernel drops in no reason's total: the reasons map was full.",
                &self.reasons_full,
            ),
            (
                "kernel_drops_other_interface",
                "Kernel drops on interfaces not watched or of another network namespace (in their reason's total only).",
                &self.other_interface,
            ),
        ] {
            let c = ConstCounter::new(v.load(Relaxed));
            c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{collector::Collector, registry::Registry};

    use super::*;

    #[derive(Debug)]
    struct Page(std::sync::Arc<DropCounters>);

    impl Collector for Page {
        fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
            self.0.encode(&mut e)
        }
    }

    fn page(d: &std::sync::Arc<DropCounters>) -> String {
        let mut r = Registry::with_prefix("flowmetrix");
        r.register_collector(Box::new(Page(std::sync::Arc::clone(d))));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        out
    }

    #[test]
    fn totals_by_reason_are_on_the_page_once_on() {
        let d = std::sync::Arc::new(DropCounters::default());
        d.set_totals([("NO_SOCKET".to_owned(), 10)]);
        assert!(!page(&d).contains("kernel_drops"));
        d.on.store(true, Relaxed);
        d.set_totals([
            ("NO_SOCKET".to_owned(), 12),
            ("NETFILTER_DROP".to_owned(), 3),
        ]);
        d.map_full.store(2, Relaxed);
        let p = page(&d);
        assert!(
            p.contains("flowmetrix_kernel_drops_total{reason=\"NO_SOCKET\"} 12"),
            "{p}"
        );
        assert!(
            p.contains("flowmetrix_kernel_drops_total{reason=\"NETFILTER_DROP\"} 3"),
            "{p}"
        );
        assert!(
            p.contains("flowmetrix_kernel_drops_map_full_total 2"),
            "{p}"
        );
    }
}
