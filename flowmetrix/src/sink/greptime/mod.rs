//! GreptimeDB: rows into `packet_data` through the official `greptimedb-ingester` (gRPC).
//!
//! The table schema is declared once, here ([`SCHEMA`]); the insert creates the table with
//! it, append-only (request hint), so rows with equal tags and timestamp are all kept.
//! Rows are batched by size and by time, a bounded number of requests is in flight, and
//! retriable failures (unavailable, timeout, reset) are retried with capped exponential
//! backoff and jitter until they succeed or the shutdown deadline passes. Failures that a
//! retry cannot fix (authentication, unknown database, schema conflict) are reported once
//! with what to do, and their rows counted as write errors.

mod client;
pub mod endpoints;
pub mod retry;
mod schema;
mod settings;
mod writer;

pub use endpoints::{AllDown, Chosen, EndpointState, Endpoints};
pub use retry::{Failure, Problem, classify, classify_status};
pub use schema::{Column, SCHEMA, column_schemas, encode, encode_row};
pub use settings::{Compression, GreptimeConfig, SpoolConfig, Tls};
pub use writer::run;
