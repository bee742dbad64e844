//! GreptimeDB: rows into `packet_data` through the official `greptimedb-ingester` (gRPC).
//!
//! The table schema is declared once, here ([`SCHEMA`]); the insert creates the table with
//! it, append-only (request hint), so rows with equal tags and timestamp are all kept.
//! Rows are batched by size and by time, a bounded number of requests is in flight, and
//! retriable failures (unavailable, timeout, reset) are retried with capped exponential
//! backoff and jitter until they succeed or the shutdown deadline passes. Failures that a
//! retry cannot fix (authentication, unknown database, schema conflict) are reported once
//! with what to do, and their rows counted as write errors.

pub mod bulk;
mod client;
pub mod ddl;
pub mod endpoints;
pub mod retry;
mod settings;
pub mod shapes;
pub mod spool;
pub mod spool_writer;
mod writer;

use std::sync::Arc;

use tracing::warn;

use crate::{metrics::Counters, sink::SinkError};

pub use crate::schema::{Column, FLOW_SCHEMA, SCHEMA, column_schemas, encode_row};
pub use crate::schema::{Table, encode};
pub use ddl::{DdlOptions, Prepared, prepare};
pub use endpoints::{AllDown, Chosen, EndpointState, Endpoints, StatementError};
pub use retry::{Failure, Problem, classify, classify_status};
pub use settings::{Compression, GreptimeConfig, SpoolConfig, Tls, WritePath};
pub use writer::{FlowTable, run, run_tables};

/// Opens the spool and starts its thread. A directory another collector holds is an error;
/// any other failure runs without a spool (logged): rows GreptimeDB cannot take are then
/// retried until the exit deadline.
pub fn open_spool(
    cfg: &SpoolConfig,
    capacity: usize,
    counters: &Arc<Counters>,
) -> Result<Option<Arc<spool_writer::SpoolWriter>>, SinkError> {
    match spool::Spool::open(&cfg.dir, cfg.max_bytes, Arc::clone(counters)) {
        Ok(s) => Ok(Some(Arc::new(spool_writer::SpoolWriter::start(
            Arc::new(s),
            capacity,
            Arc::clone(counters),
            cfg.stall,
        )))),
        Err(e @ spool::SpoolError::Locked { .. }) => Err(e.into()),
        Err(e) => {
            let cause = std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
            warn!(
                "{e}{cause}; running without a spool: rows GreptimeDB cannot take are retried until the exit deadline"
            );
            Ok(None)
        }
    }
}
