//! Counters for every place a sample or row can be lost, named for the place.
//!
//! The kernel keeps its own per-CPU counters (`seen`, `sampled`, `ring_drops`), per
//! direction (their sums are the totals the summary and the unlabelled metrics show); userspace
//! stages count here. When everything has drained:
//! `sampled == ring_drops + decode_errors + queue_drops + write_errors + written + spooled`.
//!
//! - [`counters`]: the userspace counters the stages share, and the write-duration histogram;
//! - [`kernel`]: the kernel's counters, by direction and interface;
//! - [`drops`]: kernel drops by reason (`--drops on`);
//! - [`dns`]: the DNS transactions' counters and their part of the summary and the page;
//! - [`summary`]: the exit summary line and the loss equation;
//! - [`registry`]: what the page and the status line read;
//! - [`exposition`] turns them into the Prometheus page at scrape time, [`http`] serves it.

pub mod counters;
pub mod dns;
pub mod drops;
pub mod exposition;
pub mod http;
pub mod kernel;
pub mod registry;
pub mod summary;

pub use counters::{
    Counters, DurationHistogram, FlowCounters, KUBE_ERROR_REASONS, KubeCounters, WRITE_BUCKETS,
};
pub use dns::{DnsCounters, DnsSummary};
pub use drops::DropCounters;
pub use flowmetrix_common::Direction;
pub use http::{Limits, MAX_CONNECTIONS, READ_TIMEOUT, serve, serve_with};
pub use kernel::{DIRECTIONS, DirectionStats, FlowKernelStats, InterfaceStats, KernelStats};
pub use registry::{Gauges, KernelReader, Registry};
pub use summary::{FlowSummary, Lost, Shape, Summary};
