//! Which failures a retry can fix, and how long to wait between tries.

use std::time::Duration;

use tonic::Code;

use super::settings::GreptimeConfig;

/// How long one gRPC request may take before it counts as a (retriable) timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const BACKOFF_START: Duration = Duration::from_millis(100);
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// What to do about a failed write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Try again later (server unavailable, timeout, connection reset, overloaded).
    Retry(String),
    /// A retry cannot help; the message says what to do.
    Fatal { kind: Code, message: String },
}

/// Sorts an ingester error into retriable or fatal, with advice for the fatal ones.
pub fn classify(e: &greptimedb_ingester::Error, cfg: &GreptimeConfig) -> Failure {
    let greptimedb_ingester::Error::Server { status, .. } = e else {
        return if e.is_retriable() {
            Failure::Retry(e.to_string())
        } else {
            Failure::Fatal {
                kind: Code::InvalidArgument,
                message: e.to_string(),
            }
        };
    };
    let code = status.code();
    let msg = status.message();
    let advice = match code {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Cancelled
        | Code::Internal
        | Code::Unknown => {
            // Transport failures hide their cause (connection refused, reset, …) in the
            // source chain.
            let mut why = msg.to_owned();
            let mut source = std::error::Error::source(status.as_ref());
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !why.contains(&cause_text) {
                    why = format!("{why}: {cause_text}");
                }
                source = cause.source();
            }
            return Failure::Retry(why);
        }
        Code::Unauthenticated => {
            "check FLOWMETRIX_GREPTIME_USERNAME and FLOWMETRIX_GREPTIME_PASSWORD".to_owned()
        }
        Code::PermissionDenied => format!("the user may not write to database {}", cfg.database),
        Code::NotFound => format!(
            "create it first (CREATE DATABASE {}) or pick another with --database",
            cfg.database
        ),
        Code::InvalidArgument | Code::AlreadyExists | Code::FailedPrecondition => format!(
            "table {} exists with another schema: write to another table with --table, or drop it",
            cfg.table
        ),
        _ => "see the GreptimeDB server log".to_owned(),
    };
    Failure::Fatal {
        kind: code,
        message: format!("{msg}; {advice}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::greptime::settings::tests::cfg;

    #[test]
    fn errors_are_sorted_by_what_a_retry_can_do() {
        let server =
            |code, msg: &str| greptimedb_ingester::Error::from(tonic::Status::new(code, msg));
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
        ] {
            assert!(
                matches!(classify(&server(code, "x"), &cfg()), Failure::Retry(_)),
                "{code:?}"
            );
        }
        let Failure::Fatal { kind, message } = classify(
            &server(Code::Unauthenticated, "User password mismatch"),
            &cfg(),
        ) else {
            panic!()
        };
        assert_eq!(kind, Code::Unauthenticated);
        assert!(
            message.contains("FLOWMETRIX_GREPTIME_PASSWORD"),
            "{message}"
        );
        let Failure::Fatal { message, .. } = classify(
            &server(Code::NotFound, "Database not found: greptime.nope"),
            &cfg(),
        ) else {
            panic!()
        };
        assert!(message.contains("CREATE DATABASE public"), "{message}");
        let Failure::Fatal { message, .. } = classify(
            &server(Code::InvalidArgument, "column protocol type mismatch"),
            &cfg(),
        ) else {
            panic!()
        };
        assert!(
            message.contains("packet_data") && message.contains("protocol"),
            "{message}"
        );
    }
}
