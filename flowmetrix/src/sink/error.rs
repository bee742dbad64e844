//! What stops a sink.

use crate::sink::greptime::{GreptimeError, spool::SpoolError};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write to stdout")]
    Stdout(#[source] std::io::Error),
    #[error(transparent)]
    Greptime(#[from] GreptimeError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}
