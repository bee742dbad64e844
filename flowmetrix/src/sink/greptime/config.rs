//! What the GreptimeDB sink is told: where, as whom, how to batch, the start-up DDL, and its
//! spool. Imports nothing of the sink: every other part reads it.

use std::time::Duration;

use crate::schema::ddl::{DNS_TABLE, FLOW_TABLE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// How rows go to GreptimeDB: bulk writes (Arrow Flight) into a table that exists, with row
/// inserts (gRPC) for the rest (see `bulk.rs`; the default, the faster by BENCHMARKS.md), or
/// row inserts only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePath {
    Rows,
    Bulk,
}

/// Where and how to write.
#[derive(Clone)]
pub struct GreptimeConfig {
    /// `host:port` of GreptimeDB's gRPC endpoint(s).
    pub endpoints: Vec<String>,
    pub database: String,
    pub table: String,
    pub username: Option<String>,
    /// Never logged.
    pub password: Option<String>,
    pub compression: Compression,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Table TTL (`7d`, …): in the `WITH` of the tables the collector creates, and a hint
    /// for a table an insert creates.
    pub ttl: Option<String>,
    pub max_in_flight: usize,
    pub shutdown_timeout: Duration,
    /// TLS to the server, when set.
    pub tls: Option<Tls>,
    /// Where rows wait on disk while GreptimeDB is away or the queue is full.
    pub spool: Option<SpoolConfig>,
    /// The tables and rollups created at start-up.
    pub ddl: DdlOptions,
    pub write_path: WritePath,
}

/// How the start-up DDL is set up (`--no-create-table`, `--no-rollups`,
/// `--partition-hosts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdlOptions {
    /// Create the tables when they do not exist (`--no-create-table`: the first insert
    /// creates them, without indexes).
    pub create_tables: bool,
    /// Create the per-minute rollups (Flows) when they do not exist.
    pub rollups: bool,
    /// Flow and DNS rows are written (`--mode flows|both`): create `flow_data`, `dns_data`
    /// and their rollups.
    pub flows: bool,
    /// The table of flow rows.
    pub flow_table: String,
    /// The table of DNS transactions.
    pub dns_table: String,
    /// Split points of the `host` partitioning of a fleet's tables (empty: one partition).
    pub partition_hosts: Vec<String>,
}

impl Default for DdlOptions {
    fn default() -> Self {
        Self {
            create_tables: true,
            rollups: true,
            flows: false,
            flow_table: FLOW_TABLE.to_owned(),
            dns_table: DNS_TABLE.to_owned(),
            partition_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    pub dir: std::path::PathBuf,
    pub max_bytes: u64,
    /// Test hook: a stalled disk, as a delay before every append.
    pub stall: Option<Duration>,
}

/// PEM files for TLS. The ingester connects with a client certificate, so all three are
/// needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub ca_file: std::path::PathBuf,
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

impl std::fmt::Debug for GreptimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GreptimeConfig")
            .field("endpoints", &self.endpoints)
            .field("database", &self.database)
            .field("table", &self.table)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "******"))
            .field("compression", &self.compression)
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("ttl", &self.ttl)
            .field("max_in_flight", &self.max_in_flight)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("tls", &self.tls)
            .field("spool", &self.spool)
            .field("ddl", &self.ddl)
            .field("write_path", &self.write_path)
            .finish()
    }
}

impl GreptimeConfig {
    /// `table` in `public` on `endpoints`, every other setting at its flag's default (no
    /// credentials, TLS or spool).
    pub fn new(endpoints: Vec<String>, table: &str) -> Self {
        Self {
            endpoints,
            database: "public".into(),
            table: table.into(),
            username: None,
            password: None,
            compression: Compression::None,
            batch_size: 1024,
            flush_interval: Duration::from_secs(1),
            ttl: None,
            max_in_flight: 4,
            shutdown_timeout: Duration::from_secs(10),
            tls: None,
            spool: None,
            ddl: Default::default(),
            write_path: WritePath::Bulk,
        }
    }

    /// Request hints: the table the insert creates is append-only (GreptimeDB would
    /// otherwise keep one row per tags+timestamp) and carries the TTL when one is set.
    pub fn hints(&self) -> Vec<(&'static str, String)> {
        let mut hints = vec![("append_mode", "true".to_owned())];
        if let Some(ttl) = &self.ttl {
            hints.push(("ttl", ttl.clone()));
        }
        hints
    }

    pub fn describe(&self) -> String {
        format!(
            "GreptimeDB at {} (database {}, table {})",
            self.endpoints.join(","),
            self.database,
            self.table
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn cfg() -> GreptimeConfig {
        GreptimeConfig {
            endpoints: vec!["127.0.0.1:4001".into()],
            database: "public".into(),
            table: "packet_data".into(),
            username: Some("u".into()),
            password: Some("secret".into()),
            compression: Compression::None,
            batch_size: 10,
            flush_interval: Duration::from_secs(1),
            ttl: Some("7d".into()),
            max_in_flight: 2,
            shutdown_timeout: Duration::from_secs(1),
            tls: None,
            spool: None,
            ddl: Default::default(),
            write_path: WritePath::Rows,
        }
    }

    #[test]
    fn hints_make_the_table_append_only_with_ttl() {
        assert_eq!(
            cfg().hints(),
            vec![("append_mode", "true".to_owned()), ("ttl", "7d".to_owned())]
        );
        let mut c = cfg();
        c.ttl = None;
        assert_eq!(c.hints(), vec![("append_mode", "true".to_owned())]);
    }

    #[test]
    fn password_is_not_in_debug_output() {
        assert!(!format!("{:?}", cfg()).contains("secret"));
    }
}
