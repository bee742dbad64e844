//! GreptimeDB: rows into `packet_data` (and `flow_data`) through the official
//! `greptimedb-ingester` (gRPC row inserts, or Arrow Flight bulk writes).
//!
//! The tables' columns are declared once, in [`crate::schema`]; the start-up work creates the
//! tables with them by DDL, append-only, so rows with equal tags and timestamp are all kept.
//! Rows are batched by size and by time, a bounded number of requests is in flight, and
//! retriable failures (unavailable, timeout, reset) are retried with capped exponential
//! backoff and jitter until they succeed or the shutdown deadline passes. Failures that a
//! retry cannot fix (authentication, unknown database, schema conflict) are reported once
//! with what to do, and their rows counted as write errors.
//!
//! The layers, after the seams of Vector's `src/sinks/greptimedb/` (config, service, request
//! building, retry, the sink loop). Each imports only layers below it, never one above:
//!
//! ```text
//! writer   the sink loop: queue → batcher → write tasks (bulk first, then row inserts),
//!          retries, the hand-off to the spool, and the spool's replay
//! startup  the start-up work: USE check, DDL run, append mode; inserts wait for it
//! ddl      the CREATE TABLE / CREATE FLOW statements, run once on one endpoint
//! bulk     the Arrow Flight DoPut streams; what they cannot place goes back to the writer
//! service  the endpoints: connections (connect), rotation, health, probes, inserts, SQL,
//!          and the column roles learned from the server (shapes)
//! outage   the outage log: one line when writes fail, one when they work again
//! spool    rows on disk while GreptimeDB is away: format, lock, accounting, store, replay,
//!          the spool's own thread (spool::thread), and its listing for the user (spool::list)
//! retry    which failures a retry fixes, what to tell the user, and the backoff
//! error    what stops the sink from starting
//! config   what the sink is told
//! ```
//!
//! Below all of them, outside the sink: [`crate::schema`] (each table's columns, the row
//! insert, the Arrow batch and the DDL text derived from them).

pub mod bulk;
pub mod config;
pub mod ddl;
pub mod error;
pub mod outage;
pub mod retry;
pub mod service;
pub mod spool;
pub mod startup;
pub mod writer;

use std::sync::Arc;

use tracing::warn;

use crate::metrics::Counters;

pub use crate::schema::{Column, FLOW_SCHEMA, SCHEMA, column_schemas, columns, encode_row};
pub use crate::schema::{Table, encode};
pub use config::{Compression, DdlOptions, GreptimeConfig, SpoolConfig, Tls, WritePath};
pub use ddl::{Prepared, prepare};
pub use error::GreptimeError;
pub use retry::{Failure, Problem, classify, classify_status};
pub use service::{AllDown, Chosen, EndpointState, Endpoints, StatementError};
pub use writer::{DnsTable, FlowTable, MoreTables, TableRx, run};

/// Opens the spool and starts its thread. A directory another collector holds is an error;
/// any other failure runs without a spool (logged): rows GreptimeDB cannot take are then
/// retried until the exit deadline.
pub fn open_spool(
    cfg: &SpoolConfig,
    capacity: usize,
    counters: &Arc<Counters>,
) -> Result<Option<Arc<spool::thread::SpoolWriter>>, spool::SpoolError> {
    match spool::Spool::open(&cfg.dir, cfg.max_bytes, Arc::clone(counters)) {
        Ok(s) => Ok(Some(Arc::new(spool::thread::SpoolWriter::start(
            Arc::new(s),
            capacity,
            Arc::clone(counters),
            cfg.stall,
        )))),
        Err(e @ spool::SpoolError::Locked { .. }) => Err(e),
        Err(e) => {
            let cause = std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
            warn!(
                "{e}{cause}; running without a spool: rows GreptimeDB cannot take are retried until the exit deadline"
            );
            Ok(None)
        }
    }
}
