//! FlowMetrix: XDP packet sampler → ring buffer → decoder → batches → output.
//!
//! Data flows one way: [`settings`] (from [`cli`] + [`config`]) set up the stages; the
//! [`source`] ([`capture`] + [`ring`] in the kernel, [`watch`] for interfaces coming and going, or a [`pcap`] file) yields samples; the
//! decode stage ([`rows`]: [`offset`] + [`decode`] + [`app`]) makes rows; the [`sink`]
//! batches and writes them. [`pipeline`] wires the stages and shuts them down; [`metrics`]
//! and [`status`] report on them.

pub mod app;
pub mod capture;
pub mod cli;
pub mod config;
pub mod decode;
pub mod flowmap;
pub mod flows;
pub mod kernel_object;
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
