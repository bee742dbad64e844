//! What can stop the GreptimeDB sink from starting: everything else it meets at run time is
//! retried, spooled or counted, not returned.

#[derive(Debug, thiserror::Error)]
pub enum GreptimeError {
    #[error("cannot set up TLS to GreptimeDB: {0}")]
    Tls(String),
}
