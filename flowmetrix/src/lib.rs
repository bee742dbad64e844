//! FlowMetrix: XDP packet sampler → ring buffer → decoder → batches → output.
//!
//! Data flows one way: [`capture`] (kernel) → [`ring`] → [`offset`] + [`decode`] (+ [`app`])
//! → [`pipeline`] batches → [`sink`].

pub mod app;
pub mod capture;
pub mod cli;
pub mod config;
pub mod decode;
pub mod metrics;
pub mod offset;
pub mod pcap;
pub mod pipeline;
pub mod queue;
pub mod record;
pub mod ring;
pub mod sink;
