//! FlowMetrix: XDP packet sampler → ring buffer → decoder → batches → output.
//!
//! Data flows one way: [`cli`] reads the flags, the `FLOWMETRIX_*` environment and the config
//! file (the only module that knows clap) and [`settings`] turns them into typed settings for
//! each stage; the [`source`] ([`capture`] + [`ring`] in the kernel, [`watch`] for interfaces
//! coming and going, or a [`pcap`] file) yields [`sample`]s; the decode stage ([`decoder`],
//! with [`offset`], [`decode`] and [`applications`], the port → application table) makes
//! packet rows; the [`flows`] stage counts flows (live: the kernel's maps, on its own timer;
//! in a replay: the frames) and makes flow rows; the [`sink`] batches and writes both, with
//! each table's columns from [`schema`]. [`pipeline`] wires the stages and shuts them down;
//! [`metrics`] and [`status`] report on them.

pub mod applications;
pub mod attribution;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod decode;
pub mod decoder;
pub mod dns;
pub mod flows;
pub mod kernel_btf;
pub mod kernel_object;
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
