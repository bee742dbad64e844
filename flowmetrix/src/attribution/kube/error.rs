//! Why a read of the pod list failed.

use std::time::Duration;

/// Why a read of the pod list failed; each is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    #[error("no ServiceAccount token: {0}")]
    Token(String),
    #[error("the cluster CA: {0}")]
    Ca(String),
    #[error("cannot connect to {0}")]
    Connect(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP {status}{hint}")]
    Status { status: u16, hint: &'static str },
    #[error("not a pod list: {0}")]
    Json(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP: {0}")]
    Http(String),
}

impl KubeError {
    /// Its place in [`crate::metrics::KUBE_ERROR_REASONS`].
    pub fn reason(&self) -> usize {
        match self {
            Self::Token(_) => 0,
            Self::Ca(_) => 1,
            Self::Connect(_) => 2,
            Self::Tls(_) => 3,
            Self::Status { .. } => 4,
            Self::Json(_) => 5,
            Self::Timeout(_) => 6,
            Self::Http(_) => 7,
        }
    }
}
