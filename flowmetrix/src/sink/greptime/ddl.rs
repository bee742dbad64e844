//! The tables and rollups, created by DDL at start-up over the gRPC SQL call.
//!
//! Each table is declared once, as a column list ([`SCHEMA`] for `packet_data`,
//! [`FLOW_SCHEMA`] for `flow_data`: types, roles, indexes, key order); the
//! `CREATE TABLE` text is generated from that, every identifier quoted (the parser takes
//! `application` and `bytes` for keywords). The design follows GreptimeDB's data-modelling
//! guidance: at most five low-cardinality tags as the primary key, IP addresses as fields
//! with a BLOOM skipping index, inverted indexes on the low-cardinality columns queries
//! filter by, append mode (every sampled packet is kept) and the TTL in `WITH`. The
//! per-minute rollups are Flows (`CREATE FLOW IF NOT EXISTS … SINK TO …`, 1.0 grammar) whose
//! sink tables the flow engine creates. Everything is `IF NOT EXISTS`: an existing table or
//! flow is used as it is, so a second run changes nothing.

use std::{sync::Arc, time::Duration};

use tracing::{info, warn};

use super::{config::GreptimeConfig, service::Endpoints};
pub use crate::schema::ddl::*;
use crate::schema::{FLOW_SCHEMA, SCHEMA, columns::DNS_SCHEMA};

/// A table of this run: its `CREATE TABLE IF NOT EXISTS` and the `ALTER TABLE … ADD
/// COLUMN IF NOT EXISTS` that gives an older table the columns added since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDdl {
    pub name: String,
    pub create: String,
    pub add_columns: String,
}

/// The tables of this run, in order.
pub fn tables(cfg: &GreptimeConfig, flows_on: bool) -> Vec<TableDdl> {
    let ttl = cfg.ttl.as_deref();
    let splits = &cfg.ddl.partition_hosts;
    let mut out = vec![TableDdl {
        name: cfg.table.clone(),
        create: create_table(&cfg.table, SCHEMA, ttl, splits),
        add_columns: add_columns(&cfg.table, SCHEMA),
    }];
    if flows_on {
        let t = &cfg.ddl.flow_table;
        out.push(TableDdl {
            name: t.clone(),
            create: create_table(t, FLOW_SCHEMA, ttl, splits),
            add_columns: add_columns(t, FLOW_SCHEMA),
        });
        let t = &cfg.ddl.dns_table;
        out.push(TableDdl {
            name: t.clone(),
            create: create_table(t, DNS_SCHEMA, ttl, splits),
            add_columns: add_columns(t, DNS_SCHEMA),
        });
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
/// endpoint). `flows_on`: flow and DNS rows are written, so `flow_data`, `dns_data` and
/// their rollups are made too. Failures GreptimeDB answered are logged, one line each, and capture goes on (the
/// first insert then creates a missing table without indexes). When no endpoint answers,
/// it stops there and says so in [`Prepared::unreachable`], unlogged: the caller runs it
/// again later. A rollup whose source table lacks a column (an older table the first
/// insert has yet to extend) is tried again in the background.
pub async fn prepare(pool: &Arc<Endpoints>, cfg: &GreptimeConfig, flows_on: bool) -> Prepared {
    let mut done = Prepared::default();
    if cfg.ddl.create_tables {
        for TableDdl {
            name: table,
            create,
            add_columns,
        } in tables(cfg, flows_on)
        {
            match pool.execute(&create, STATEMENT_TIMEOUT).await {
                Ok(()) => {}
                Err(e) if e.unreachable => {
                    done.unreachable = Some(e.to_string());
                    return done;
                }
                Err(e) => {
                    warn!(
                        "cannot create table {table} ({e}): the first insert creates it, without its indexes; or create it yourself (see README, Tables)"
                    );
                    done.failed.push(format!("table {table}: {e}"));
                    continue;
                }
            }
            // The table is there; an older one gains the columns added since.
            match pool.execute(&add_columns, STATEMENT_TIMEOUT).await {
                Ok(()) => done.tables.push(table),
                Err(e) if e.unreachable => {
                    done.unreachable = Some(e.to_string());
                    return done;
                }
                Err(e) => {
                    warn!(
                        "cannot add the newer columns to table {table} ({e}): row inserts add them themselves, bulk writes into it fail until they exist; run with --write-path rows, or add them yourself (see README, Tables)"
                    );
                    done.failed.push(format!("columns of table {table}: {e}"));
                }
            }
        }
    }
    if cfg.ddl.rollups {
        let flow_table = flows_on.then_some(cfg.ddl.flow_table.as_str());
        let mut later = Vec::new();
        let dns = flows_on.then(|| dns_rollup(&cfg.ddl.dns_table));
        let drops = flow_table.map(drop_rollup);
        for r in rollups(&cfg.table, flow_table)
            .into_iter()
            .chain(dns)
            .chain(drops)
        {
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

#[cfg(test)]
mod tests;
