//! FlowMetrix: XDP packet sampler → ring buffer → decoder → batches → output.
//!
//! Data flows one way: [`cli`] reads the flags, the `FLOWMETRIX_*` environment and the config
//! file (the only module that knows clap) and [`settings`] turns them into typed settings for
//! each stage; the [`source`] ([`capture`] + [`ring`] in the kernel, [`watch`] for interfaces
//! coming and going, or a [`pcap`] file) yields samples; the decode stage ([`rows`]:
//! [`offset`] + [`decode`] + [`applications`], the port → application table) makes rows; the [`sink`]
//! batches and writes them. [`pipeline`] wires the stages and shuts them down; [`metrics`] and
//! [`status`] report on them.

pub mod applications;
pub mod capture;
pub mod cli;
pub mod decode;
pub mod flowmap;
pub mod flows;
pub mod metrics;
pub mod offset;
pub mod pcap;
pub mod pipeline;
pub mod queue;
pub mod record;
pub mod ring;
pub mod rows;
pub mod schema;
pub mod settings;
pub mod sink;
pub mod source;
pub mod status;
pub mod throttle;
pub mod watch;

/// The old path of [`applications`], kept for one merge so that code written against it still
/// builds; to be removed.
#[doc(hidden)]
pub use applications as app;
