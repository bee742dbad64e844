//! FlowMetrix: XDP packet sampler → ring buffer → decoder → batches → output.
//!
//! Data flows one way: [`settings`] (from [`cli`] + [`config`]) set up the stages; the
//! [`source`] ([`capture`] + [`ring`] in the kernel, [`watch`] for interfaces coming and
//! going, or a [`pcap`] file) yields [`sample`]s; the decode stage ([`decoder`], with
//! [`offset`], [`decode`] and [`app`]) makes packet rows; the [`flows`] stage counts flows
//! (live: the kernel's maps, on its own timer; in a replay: the frames) and makes flow
//! rows; the [`sink`] batches and writes both. [`pipeline`] wires the stages and shuts them
//! down; [`metrics`] and [`status`] report on them.

pub mod app;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decode;
pub mod decoder;
pub mod flows;
pub mod metrics;
pub mod offset;
pub mod pcap;
pub mod pipeline;
pub mod queue;
pub mod record;
pub mod ring;
pub mod sample;
pub mod schema;
pub mod settings;
pub mod sink;
pub mod source;
pub mod status;
pub mod throttle;
pub mod watch;
