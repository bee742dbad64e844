//! Which failures a retry can fix, what to tell the user about the others, and how long to
//! wait between tries.
//!
//! GreptimeDB puts its own status code in the response metadata `x-greptime-err-code`
//! (`src/common/error/src/status_code.rs`); the gRPC code alone is ambiguous (an unknown
//! database, a column type clash and a missing table are all `InvalidArgument` 1004; an
//! unknown user is `NotFound` like a missing table). So the greptime code decides, then the
//! message; the gRPC code only when there is no greptime code (transport failures).

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};
use tonic::{Code, Status};

use super::config::GreptimeConfig;

/// How long one gRPC request may take before it counts as a (retriable) timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const BACKOFF_START: Duration = Duration::from_millis(100);
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// The waits between tries of one batch (or spool record): from [`BACKOFF_START`], doubling
/// up to [`BACKOFF_CAP`], without end (the shutdown deadline ends the tries), each with
/// jitter: uniform in [half, all) of the step. `backon` adds jitter upwards (a step `d`
/// waits in [d, 2d)), so its steps are half of ours.
pub fn backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(BACKOFF_START / 2)
        .with_max_delay(BACKOFF_CAP / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The metadata key that carries GreptimeDB's status code (decimal).
pub const GREPTIME_CODE_KEY: &str = "x-greptime-err-code";

/// GreptimeDB status codes (`StatusCode` in `src/common/error/src/status_code.rs`).
pub mod code {
    pub const INTERNAL: u32 = 1003;
    pub const INVALID_ARGUMENTS: u32 = 1004;
    pub const DEADLINE_EXCEEDED: u32 = 1008;
    pub const TABLE_NOT_FOUND: u32 = 4001;
    pub const DATABASE_NOT_FOUND: u32 = 4004;
    pub const REGION_NOT_READY: u32 = 4008;
    pub const REGION_BUSY: u32 = 4009;
    pub const TABLE_UNAVAILABLE: u32 = 4010;
    pub const STORAGE_UNAVAILABLE: u32 = 5000;
    pub const RUNTIME_RESOURCES_EXHAUSTED: u32 = 6000;
    pub const RATE_LIMITED: u32 = 6001;
    pub const USER_NOT_FOUND: u32 = 7000;
    pub const UNSUPPORTED_PASSWORD_TYPE: u32 = 7001;
    pub const USER_PASSWORD_MISMATCH: u32 = 7002;
    pub const AUTH_HEADER_NOT_FOUND: u32 = 7003;
    pub const INVALID_AUTH_HEADER: u32 = 7004;
    pub const ACCESS_DENIED: u32 = 7005;
    pub const PERMISSION_DENIED: u32 = 7006;
}

/// Codes a later try can succeed with: the server's own `is_retryable` set, plus rate
/// limiting (an overloaded server asks us to slow down, which backing off does).
const RETRIABLE: &[u32] = &[
    code::INTERNAL,
    code::DEADLINE_EXCEEDED,
    code::REGION_NOT_READY,
    code::REGION_BUSY,
    code::TABLE_UNAVAILABLE,
    code::STORAGE_UNAVAILABLE,
    code::RUNTIME_RESOURCES_EXHAUSTED,
    code::RATE_LIMITED,
];

/// What a retry cannot fix, one kind per thing the user has to do (each is logged once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    UnknownDatabase,
    /// A column of the table has another type than the one we write.
    SchemaConflict,
    /// The table does not exist and the server does not create it.
    MissingTable,
    WrongPassword,
    /// The server requires credentials and none (or unreadable ones) were sent.
    NoCredentials,
    UnknownUser,
    AccessDenied,
    /// Anything else: the gRPC code and the greptime code, if any.
    Other(Code, Option<u32>),
}

/// What to do about a failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Try again later (server unavailable, timeout, connection reset, overloaded).
    /// `endpoint`: the connection or the endpoint itself failed (no answer from GreptimeDB
    /// proper), so another endpoint may take the request now.
    Retry { why: String, endpoint: bool },
    /// A retry cannot help; the message says what to do.
    Fatal { kind: Problem, message: String },
}

impl Failure {
    pub fn is_retry(&self) -> bool {
        matches!(self, Self::Retry { .. })
    }
}

/// GreptimeDB's status code in an error answer, when the server put one there.
pub fn greptime_code(status: &Status) -> Option<u32> {
    status
        .metadata()
        .get(GREPTIME_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Sorts an ingester error into retriable or fatal, with advice for the fatal ones.
pub fn classify(e: &greptimedb_ingester::Error, cfg: &GreptimeConfig) -> Failure {
    match e {
        greptimedb_ingester::Error::Server { status, .. } => classify_status(status, cfg),
        // No request was sent (no channel, bad address, …): nothing GreptimeDB said.
        other if other.is_retriable() => Failure::Retry {
            why: other.to_string(),
            endpoint: true,
        },
        other => Failure::Fatal {
            kind: Problem::Other(Code::InvalidArgument, None),
            message: other.to_string(),
        },
    }
}

/// The same for a gRPC status (the ingester's errors carry one).
pub fn classify_status(status: &Status, cfg: &GreptimeConfig) -> Failure {
    let msg = status.message();
    let Some(gt) = greptime_code(status) else {
        return classify_transport(status, cfg);
    };
    if RETRIABLE.contains(&gt) {
        return Failure::Retry {
            why: format!("{msg} (GreptimeDB code {gt})"),
            endpoint: false,
        };
    }
    let user = cfg.username.as_deref().unwrap_or("");
    let (kind, advice) = match gt {
        code::INVALID_ARGUMENTS | code::DATABASE_NOT_FOUND | code::TABLE_NOT_FOUND => {
            invalid_request(gt, msg, status.code(), cfg)
        }
        code::USER_PASSWORD_MISMATCH => (
            Problem::WrongPassword,
            format!(
                "the password of user {user} is wrong: check FLOWMETRIX_GREPTIME_PASSWORD (and FLOWMETRIX_GREPTIME_USERNAME)"
            ),
        ),
        code::AUTH_HEADER_NOT_FOUND | code::INVALID_AUTH_HEADER | code::UNSUPPORTED_PASSWORD_TYPE => (
            Problem::NoCredentials,
            "the server requires a user: set FLOWMETRIX_GREPTIME_USERNAME (or --greptime-username) and FLOWMETRIX_GREPTIME_PASSWORD".to_owned(),
        ),
        code::USER_NOT_FOUND => (
            Problem::UnknownUser,
            format!(
                "the server has no user {user}: check FLOWMETRIX_GREPTIME_USERNAME (or --greptime-username)"
            ),
        ),
        code::ACCESS_DENIED | code::PERMISSION_DENIED => (
            Problem::AccessDenied,
            format!(
                "user {user} may not write to database {}: grant it, or use another user or --database",
                cfg.database
            ),
        ),
        other => (
            Problem::Other(status.code(), Some(other)),
            format!("GreptimeDB code {other}; see the GreptimeDB server log"),
        ),
    };
    Failure::Fatal {
        kind,
        message: format!("{msg}; {advice}"),
    }
}

/// A 1004 (or 4001/4004) answer: which of the invalid requests it is, from the message.
fn invalid_request(gt: u32, msg: &str, grpc: Code, cfg: &GreptimeConfig) -> (Problem, String) {
    let (db, table) = (&cfg.database, &cfg.table);
    if gt == code::DATABASE_NOT_FOUND || msg.contains("Failed to find schema") {
        return (
            Problem::UnknownDatabase,
            format!(
                "database {db} does not exist: create it (CREATE DATABASE {db}) or pick another with --database"
            ),
        );
    }
    if let Some((column, want, given)) = type_clash(msg) {
        return (
            Problem::SchemaConflict,
            format!(
                "table {table} has column {column} as {want}, flowmetrix writes {given}: write to another table with --table, or drop it (DROP TABLE {table})"
            ),
        );
    }
    if gt == code::TABLE_NOT_FOUND
        || (msg.contains("does not exist") && msg.contains("auto_create_table"))
    {
        return (
            Problem::MissingTable,
            format!(
                "table {table} does not exist and the server does not create it: create it, or allow auto_create_table"
            ),
        );
    }
    (
        Problem::Other(grpc, Some(gt)),
        format!(
            "GreptimeDB refused the rows for table {table} (code {gt}); see the GreptimeDB server log"
        ),
    )
}

/// `… reason: column x expect type UInt16(UInt16Type), given: STRING(12)` → (x, UInt16,
/// STRING).
fn type_clash(msg: &str) -> Option<(&str, &str, &str)> {
    let rest = &msg[msg.find("column ")? + "column ".len()..];
    let (column, rest) = rest.split_once(" expect type ")?;
    let (want, given) = rest.split_once(", given: ")?;
    Some((column, short_type(want), short_type(given)))
}

fn short_type(t: &str) -> &str {
    t.split('(').next().unwrap_or(t).trim()
}

/// No greptime code: a transport failure, a timeout, or an answer from something that is
/// not GreptimeDB's error path.
fn classify_transport(status: &Status, cfg: &GreptimeConfig) -> Failure {
    let msg = status.message();
    match status.code() {
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
            let mut source = std::error::Error::source(status);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !why.contains(&cause_text) {
                    why = format!("{why}: {cause_text}");
                }
                source = cause.source();
            }
            Failure::Retry {
                why,
                endpoint: true,
            }
        }
        // The bulk path answers a wrong password this way, without a code.
        Code::Unauthenticated => Failure::Fatal {
            kind: Problem::WrongPassword,
            message: format!(
                "{msg}; check FLOWMETRIX_GREPTIME_USERNAME and FLOWMETRIX_GREPTIME_PASSWORD"
            ),
        },
        other => Failure::Fatal {
            kind: Problem::Other(other, None),
            message: format!(
                "{msg}; unexpected answer from {}: is it GreptimeDB's gRPC port?",
                cfg.endpoints.join(",")
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::greptime::config::tests::cfg;

    fn server(code: Code, gt: Option<u32>, msg: &str) -> greptimedb_ingester::Error {
        let mut status = Status::new(code, msg);
        if let Some(gt) = gt {
            status
                .metadata_mut()
                .insert(GREPTIME_CODE_KEY, gt.to_string().parse().unwrap());
        }
        greptimedb_ingester::Error::from(status)
    }

    fn fatal(code: Code, gt: Option<u32>, msg: &str) -> (Problem, String) {
        match classify(&server(code, gt, msg), &cfg()) {
            Failure::Fatal { kind, message } => (kind, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_below_each_step() {
        let mut step = BACKOFF_START;
        for wait in backoff().take(12) {
            assert!(
                wait >= step / 2 && wait < step,
                "{wait:?} for a step of {step:?}"
            );
            step = (step * 2).min(BACKOFF_CAP);
        }
    }

    #[test]
    fn transport_failures_and_retriable_codes_are_retried() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Unknown] {
            assert_eq!(
                classify(&server(code, None, "x"), &cfg()),
                Failure::Retry {
                    why: "x".into(),
                    endpoint: true
                },
                "{code:?}"
            );
        }
        for (code, gt) in [
            (Code::ResourceExhausted, code::RATE_LIMITED),
            (Code::ResourceExhausted, code::REGION_BUSY),
            (Code::Unavailable, code::REGION_NOT_READY),
            (Code::Unavailable, code::TABLE_UNAVAILABLE),
            (Code::Unavailable, code::STORAGE_UNAVAILABLE),
            (Code::Internal, code::INTERNAL),
        ] {
            let f = classify(&server(code, Some(gt), "busy"), &cfg());
            assert!(
                matches!(&f, Failure::Retry { endpoint: false, why } if why.contains(&gt.to_string())),
                "{gt}: {f:?}"
            );
        }
        // Internal with a plan error (3000) is not retriable, whatever its gRPC code.
        let (kind, _) = fatal(Code::Internal, Some(3000), "Failed to plan SQL");
        assert_eq!(kind, Problem::Other(Code::Internal, Some(3000)));
    }

    #[test]
    fn one_code_three_problems_told_apart_by_the_message() {
        let (kind, message) = fatal(
            Code::InvalidArgument,
            Some(1004),
            "Failed to find schema, schema info: public",
        );
        assert_eq!(kind, Problem::UnknownDatabase);
        assert!(message.contains("CREATE DATABASE public"), "{message}");
        assert!(message.contains("--database"), "{message}");

        let (kind, message) = fatal(
            Code::InvalidArgument,
            Some(1004),
            "Invalid request to region 4398046511104(1024, 0), reason: column protocol expect type UInt8(UInt8Type), given: STRING(12)",
        );
        assert_eq!(kind, Problem::SchemaConflict);
        assert!(
            message.contains("table packet_data has column protocol as UInt8")
                && message.contains("writes STRING")
                && message.contains("--table"),
            "{message}"
        );

        let (kind, message) = fatal(
            Code::InvalidArgument,
            Some(1004),
            "Invalid InsertRequest, reason: Table `packet_data` does not exist, and `auto_create_table` hint is disabled",
        );
        assert_eq!(kind, Problem::MissingTable);
        assert!(
            message.contains("table packet_data does not exist"),
            "{message}"
        );
    }

    #[test]
    fn auth_answers_name_what_to_set() {
        let (kind, message) = fatal(
            Code::Unauthenticated,
            Some(7002),
            "Username and password does not match, username: u",
        );
        assert_eq!(kind, Problem::WrongPassword);
        assert!(
            message.contains("FLOWMETRIX_GREPTIME_PASSWORD"),
            "{message}"
        );
        let (kind, message) = fatal(
            Code::Unauthenticated,
            Some(7003),
            "Not found http or grpc authorization header",
        );
        assert_eq!(kind, Problem::NoCredentials);
        assert!(
            message.contains("FLOWMETRIX_GREPTIME_USERNAME"),
            "{message}"
        );
        // NotFound, like a missing table: the number tells them apart.
        let (kind, message) = fatal(Code::NotFound, Some(7000), "User not found, username: u");
        assert_eq!(kind, Problem::UnknownUser);
        assert!(message.contains("has no user u"), "{message}");
        let (kind, _) = fatal(Code::NotFound, Some(4001), "Table not found: packet_data");
        assert_eq!(kind, Problem::MissingTable);
        let (kind, _) = fatal(Code::PermissionDenied, Some(7005), "Access denied");
        assert_eq!(kind, Problem::AccessDenied);
    }
}
