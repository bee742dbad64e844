//! The tables and rollups, created by DDL at start-up over the gRPC SQL call.
//!
//! Each table is declared once, as a column list ([`SCHEMA`] for `packet_data`,
//! [`FLOW_SCHEMA`] for `flow_data`) plus its design ([`Design`]: primary key, indexes); the
//! `CREATE TABLE` text is generated from that, every identifier quoted (the parser takes
//! `application` and `bytes` for keywords). The design follows GreptimeDB's data-modelling
//! guidance: at most five low-cardinality tags as the primary key, IP addresses as fields
//! with a BLOOM skipping index, inverted indexes on the low-cardinality columns queries
//! filter by, append mode (every sampled packet is kept) and the TTL in `WITH`. The
//! per-minute rollups are Flows (`CREATE FLOW IF NOT EXISTS … SINK TO …`, 1.0 grammar) whose
//! sink tables the flow engine creates. Everything is `IF NOT EXISTS`: an existing table or
//! flow is used as it is, so a second run changes nothing.

use std::{fmt::Write as _, sync::Arc, time::Duration};

use greptimedb_ingester::api::v1::{ColumnDataType, SemanticType};
use tracing::{info, warn};

use super::{
    endpoints::{Endpoints, StatementError},
    schema::{Column, FLOW_SCHEMA, SCHEMA},
    settings::GreptimeConfig,
};

/// How the start-up DDL is set up (`--no-create-table`, `--no-rollups`,
/// `--partition-hosts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdlOptions {
    /// Create the tables when they do not exist (`--no-create-table`: the first insert
    /// creates them, without indexes).
    pub create_tables: bool,
    /// Create the per-minute rollups (Flows) when they do not exist.
    pub rollups: bool,
    /// Flow rows are written (the `--mode` of issue 18): create `flow_data` and its rollups.
    pub flows: bool,
    /// The table of flow rows.
    pub flow_table: String,
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
            partition_hosts: Vec::new(),
        }
    }
}

/// The default table of flow rows.
pub const FLOW_TABLE: &str = "flow_data";

/// An index on one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    /// Value → rows: for low-cardinality columns queries filter on.
    Inverted,
    /// A bloom filter per granule: equality lookups of high-cardinality values (IPs).
    Bloom,
}

/// How a table is laid out beyond its columns.
#[derive(Debug, Clone, Copy)]
pub struct Design {
    /// The tags, in primary-key order.
    pub primary_key: &'static [&'static str],
    pub indexes: &'static [(&'static str, Index)],
}

/// `packet_data`: host, interface, direction, application and packet type are the few,
/// low-cardinality series keys every dashboard groups by; IPs are fields with a bloom
/// filter; protocol and destination port get inverted indexes for `WHERE` filters.
pub const PACKET_DESIGN: Design = Design {
    primary_key: &[
        "host",
        "interface",
        "direction",
        "application",
        "packet_type",
    ],
    indexes: &[
        ("host", Index::Inverted),
        ("interface", Index::Inverted),
        ("direction", Index::Inverted),
        ("application", Index::Inverted),
        ("packet_type", Index::Inverted),
        ("protocol", Index::Inverted),
        ("dst_port", Index::Inverted),
        ("src_ip", Index::Bloom),
        ("dst_ip", Index::Bloom),
    ],
};

/// `flow_data`: the same keys without the packet type.
pub const FLOW_DESIGN: Design = Design {
    primary_key: &["host", "interface", "direction", "application"],
    indexes: &[
        ("host", Index::Inverted),
        ("interface", Index::Inverted),
        ("direction", Index::Inverted),
        ("application", Index::Inverted),
        ("protocol", Index::Inverted),
        ("dst_port", Index::Inverted),
        ("src_ip", Index::Bloom),
        ("dst_ip", Index::Bloom),
    ],
};

/// `"name"`, with inner quotes doubled.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with inner quotes doubled.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The SQL type of a column type we write.
pub fn sql_type(t: ColumnDataType) -> &'static str {
    use ColumnDataType as T;
    match t {
        T::TimestampNanosecond => "TIMESTAMP(9)",
        T::TimestampMillisecond => "TIMESTAMP(3)",
        T::Uint8 => "TINYINT UNSIGNED",
        T::Uint16 => "SMALLINT UNSIGNED",
        T::Uint32 => "INT UNSIGNED",
        T::Uint64 => "BIGINT UNSIGNED",
        T::Int64 => "BIGINT",
        _ => "STRING",
    }
}

/// The SKIPPING INDEX options, as `SHOW CREATE TABLE` prints them.
const BLOOM: &str =
    "SKIPPING INDEX WITH(false_positive_rate = '0.01', granularity = '10240', type = 'BLOOM')";

/// `CREATE TABLE IF NOT EXISTS` for `table` with these columns and design.
pub fn create_table(
    table: &str,
    columns: &[Column],
    design: &Design,
    ttl: Option<&str>,
    partition_hosts: &[String],
) -> String {
    let mut defs: Vec<String> = columns
        .iter()
        .map(|c| {
            let mut def = format!("{} {}", quote(c.name), sql_type(c.data_type));
            def.push_str(if c.semantic == SemanticType::Timestamp {
                " NOT NULL"
            } else {
                " NULL"
            });
            match design.indexes.iter().find(|(n, _)| *n == c.name) {
                Some((_, Index::Inverted)) => def.push_str(" INVERTED INDEX"),
                Some((_, Index::Bloom)) => {
                    def.push(' ');
                    def.push_str(BLOOM);
                }
                None => {}
            }
            def
        })
        .collect();
    if let Some(ts) = columns
        .iter()
        .find(|c| c.semantic == SemanticType::Timestamp)
    {
        defs.push(format!("TIME INDEX ({})", quote(ts.name)));
    }
    let key: Vec<String> = design.primary_key.iter().map(|k| quote(k)).collect();
    defs.push(format!("PRIMARY KEY ({})", key.join(", ")));
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {}\n)",
        quote(table),
        defs.join(",\n  ")
    );
    if let Some(p) = partition(partition_hosts) {
        let _ = write!(sql, "\n{p}");
    }
    sql.push_str("\nENGINE=mito\nWITH(append_mode = 'true'");
    if let Some(ttl) = ttl {
        let _ = write!(sql, ", ttl = {}", literal(ttl));
    }
    sql.push(')');
    sql
}

/// `PARTITION ON COLUMNS ("host") (…)` from split points: one partition below the first,
/// one between each two, one from the last on.
pub fn partition(splits: &[String]) -> Option<String> {
    if splits.is_empty() {
        return None;
    }
    let host = quote("host");
    let mut rules = vec![format!("{host} < {}", literal(&splits[0]))];
    for w in splits.windows(2) {
        rules.push(format!(
            "{host} >= {} AND {host} < {}",
            literal(&w[0]),
            literal(&w[1])
        ));
    }
    rules.push(format!(
        "{host} >= {}",
        literal(splits.last().map_or("", String::as_str))
    ));
    Some(format!(
        "PARTITION ON COLUMNS ({host}) (\n  {}\n)",
        rules.join(",\n  ")
    ))
}

/// One rollup: a flow and the table it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollup {
    pub flow: String,
    pub sink: String,
    pub sql: String,
}

/// The per-minute window column of every rollup.
const MINUTE: &str = "date_bin(INTERVAL '1 minutes', \"ts\")";

fn rollup(source: &str, suffix: &str, keys: &[&str], sums: &str, comment: &str) -> Rollup {
    let sink = format!("{source}_{suffix}");
    let flow = format!("{sink}_flow");
    let keys: Vec<String> = keys.iter().map(|k| quote(k)).collect();
    let sql = format!(
        "CREATE FLOW IF NOT EXISTS {} SINK TO {} COMMENT {} AS SELECT {}, {MINUTE} AS \"minute\", {sums} FROM {} GROUP BY {}, \"minute\"",
        quote(&flow),
        quote(&sink),
        literal(comment),
        keys.join(", "),
        quote(source),
        keys.join(", ")
    );
    Rollup { flow, sink, sql }
}

/// Packets and bytes of sampled packet rows: each row stands for `sample_rate` packets of
/// its size. Cast before multiplying: `packet_size * sample_rate` in UInt32 wraps.
pub const SAMPLED_SUMS: &str = "sum(CAST(\"sample_rate\" AS BIGINT UNSIGNED)) AS \"packets\", sum(CAST(\"packet_size\" AS BIGINT UNSIGNED) * \"sample_rate\") AS \"bytes\"";

/// Packets and bytes of flow rows: exact counts.
pub const FLOW_SUMS: &str = "sum(\"packets\") AS \"packets\", sum(\"bytes\") AS \"bytes\"";

/// The rollups of the packet table (and of the flow table when flows are on).
pub fn rollups(packet_table: &str, flow_table: Option<&str>) -> Vec<Rollup> {
    let by = ["host", "interface", "direction", "application", "protocol"];
    let talkers = ["host", "direction", "src_ip", "dst_ip"];
    let mut out = vec![
        rollup(
            packet_table,
            "1m",
            &by,
            SAMPLED_SUMS,
            "flowmetrix: packets and bytes per minute, scaled by sample_rate",
        ),
        rollup(
            packet_table,
            "talkers_1m",
            &talkers,
            SAMPLED_SUMS,
            "flowmetrix: packets and bytes per minute and address pair, scaled by sample_rate",
        ),
    ];
    if let Some(flows) = flow_table {
        out.push(rollup(
            flows,
            "1m",
            &by,
            FLOW_SUMS,
            "flowmetrix: exact packets and bytes per minute",
        ));
        out.push(rollup(
            flows,
            "talkers_1m",
            &talkers,
            FLOW_SUMS,
            "flowmetrix: exact packets and bytes per minute and address pair",
        ));
    }
    out
}

/// The `CREATE TABLE` statements for this run, in order.
pub fn tables(cfg: &GreptimeConfig, flows_on: bool) -> Vec<(String, String)> {
    let ttl = cfg.ttl.as_deref();
    let splits = &cfg.ddl.partition_hosts;
    let mut out = vec![(
        cfg.table.clone(),
        create_table(&cfg.table, &SCHEMA, &PACKET_DESIGN, ttl, splits),
    )];
    if flows_on {
        let t = &cfg.ddl.flow_table;
        out.push((
            t.clone(),
            create_table(t, &FLOW_SCHEMA, &FLOW_DESIGN, ttl, splits),
        ));
    }
    out
}

/// What the start-up DDL did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Tables created or already there.
    pub tables: Vec<String>,
    /// Rollups created or already there.
    pub rollups: Vec<String>,
    /// Rollups whose source lacks a column yet (an older table, before the first insert
    /// adds it): tried again later.
    pub pending: Vec<String>,
    /// What failed, one line each (already logged).
    pub failed: Vec<String>,
    /// No endpoint answered (not logged): the statements from there on did not run, and
    /// the whole step is worth running again once an endpoint answers.
    pub unreachable: Option<String>,
}

/// How long each statement may take.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often, and how many times, a rollup waiting for its source's columns is tried again.
pub const PENDING_RETRY: Duration = Duration::from_secs(10);
pub const PENDING_TRIES: u32 = 60;

/// Creates the tables (unless `--no-create-table`) and the rollups (unless `--no-rollups`)
/// that do not exist, each statement once on one endpoint in rotation (not once per
/// endpoint). `flows_on`: flow rows are written, so `flow_data` and its rollups are made
/// too. Failures GreptimeDB answered are logged, one line each, and capture goes on (the
/// first insert then creates a missing table without indexes). When no endpoint answers,
/// it stops there and says so in [`Prepared::unreachable`], unlogged: the caller runs it
/// again later. A rollup whose source table lacks a column (an older table the first
/// insert has yet to extend) is tried again in the background.
pub async fn prepare(pool: &Arc<Endpoints>, cfg: &GreptimeConfig, flows_on: bool) -> Prepared {
    let mut done = Prepared::default();
    if cfg.ddl.create_tables {
        for (table, sql) in tables(cfg, flows_on) {
            match pool.execute(&sql, STATEMENT_TIMEOUT).await {
                Ok(()) => done.tables.push(table),
                Err(e) if e.unreachable => {
                    done.unreachable = Some(e.to_string());
                    return done;
                }
                Err(e) => {
                    warn!(
                        "cannot create table {table} ({e}): the first insert creates it, without its indexes; or create it yourself (see README, Tables)"
                    );
                    done.failed.push(format!("table {table}: {e}"));
                }
            }
        }
    }
    if cfg.ddl.rollups {
        let flow_table = flows_on.then_some(cfg.ddl.flow_table.as_str());
        let mut later = Vec::new();
        for r in rollups(&cfg.table, flow_table) {
            match pool.execute(&r.sql, STATEMENT_TIMEOUT).await {
                Ok(()) => done.rollups.push(r.sink),
                Err(e) if e.code == Some(PLAN_ERROR) => {
                    done.pending.push(r.sink.clone());
                    later.push(r);
                }
                Err(e) if e.unreachable => {
                    done.unreachable = Some(e.to_string());
                    return done;
                }
                Err(e) => {
                    warn!(
                        "cannot create rollup {} ({e}): long time ranges read the raw table; run --no-rollups to skip",
                        r.sink
                    );
                    done.failed.push(format!("rollup {}: {e}", r.sink));
                }
            }
        }
        if !later.is_empty() {
            info!(
                "rollups {} wait for columns their source table lacks yet (the first insert adds them); trying again every {}s",
                done.pending.join(", "),
                PENDING_RETRY.as_secs()
            );
            tokio::spawn(retry_pending(Arc::downgrade(pool), later));
        }
    }
    if done.failed.is_empty() {
        info!(
            "tables {} and rollups {} are in place",
            list(&done.tables),
            list(&done.rollups)
        );
    }
    done
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}

/// GreptimeDB's PlanQuery code: a flow over a missing table or column.
const PLAN_ERROR: u32 = 3000;

async fn retry_pending(pool: std::sync::Weak<Endpoints>, mut pending: Vec<Rollup>) {
    for _ in 0..PENDING_TRIES {
        tokio::time::sleep(PENDING_RETRY).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut still = Vec::new();
        for r in pending {
            match pool.execute(&r.sql, STATEMENT_TIMEOUT).await {
                Ok(()) => info!("rollup {} is in place", r.sink),
                Err(e) if e.code == Some(PLAN_ERROR) || e.unreachable => still.push(r),
                Err(e) => warn!("cannot create rollup {} ({e})", r.sink),
            }
        }
        if still.is_empty() {
            return;
        }
        pending = still;
    }
    for r in pending {
        warn!(
            "cannot create rollup {}: its source table still lacks a column; create it yourself (see README, Rollups): {}",
            r.sink, r.sql
        );
    }
}

impl std::fmt::Display for StatementError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "{} (GreptimeDB code {code})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

#[cfg(test)]
mod tests;
