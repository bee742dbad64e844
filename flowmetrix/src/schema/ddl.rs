//! The DDL text of the tables and rollups: `CREATE TABLE` from a table's column list
//! (types, roles, indexes, key order), every identifier quoted (the parser takes
//! `application` and `bytes` for keywords), and the per-minute rollups as `CREATE FLOW`.

use std::fmt::Write as _;

use greptimedb_ingester::api::v1::{ColumnDataType, SemanticType};

pub use super::columns::Index;
use super::columns::{
    BYTES, Column, DNS_LATENCY_US, DNS_RCODE, DROP_BYTES, DROP_PACKETS, DROP_REASON, Def, PACKETS,
    shared::{
        APPLICATION, DIRECTION, DST_IP, HOST, INTERFACE, NAMESPACE, POD, PROTOCOL, SRC_IP, TS,
    },
};

/// The default table of flow rows.
pub const FLOW_TABLE: &str = "flow_data";

/// The default table of DNS transactions.
pub const DNS_TABLE: &str = "dns_data";

/// The primary key of a table: its tags, in their declared key order.
pub fn primary_key<R>(columns: &[Column<R>]) -> Vec<&'static str> {
    let mut tags: Vec<&Def> = columns
        .iter()
        .map(|c| &c.def)
        .filter(|d| d.semantic == SemanticType::Tag)
        .collect();
    tags.sort_by_key(|d| d.key);
    tags.into_iter().map(|d| d.name).collect()
}

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
pub(crate) const BLOOM: &str =
    "SKIPPING INDEX WITH(false_positive_rate = '0.01', granularity = '10240', type = 'BLOOM')";

/// `CREATE TABLE IF NOT EXISTS` for `table` with these columns: their types, indexes,
/// time index and primary key.
pub fn create_table<R>(
    table: &str,
    columns: &[Column<R>],
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
            match c.index {
                Some(Index::Inverted) => def.push_str(" INVERTED INDEX"),
                Some(Index::Bloom) => {
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
    let key: Vec<String> = primary_key(columns).into_iter().map(quote).collect();
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

/// `ALTER TABLE … ADD COLUMN IF NOT EXISTS` for every field of `columns`, in one statement:
/// a table made by an older FlowMetrix (or by the first insert) gains the columns added
/// since, which the bulk path needs (it never adds columns); a table that has them all is
/// left as it is. Without their indexes (GreptimeDB takes no index options on this path):
/// `SHOW CREATE TABLE` tells, and `ALTER TABLE t MODIFY COLUMN c SET INVERTED INDEX` adds one.
pub fn add_columns<R>(table: &str, columns: &[Column<R>]) -> String {
    let adds: Vec<String> = columns
        .iter()
        .filter(|c| c.semantic == SemanticType::Field)
        .map(|c| {
            format!(
                "ADD COLUMN IF NOT EXISTS {} {} NULL",
                quote(c.name),
                sql_type(c.data_type)
            )
        })
        .collect();
    format!("ALTER TABLE {} {}", quote(table), adds.join(", "))
}

/// `PARTITION ON COLUMNS ("host") (…)` from split points: one partition below the first,
/// one between each two, one from the last on.
pub fn partition(splits: &[String]) -> Option<String> {
    if splits.is_empty() {
        return None;
    }
    let host = quote(HOST.name);
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

fn rollup(source: &str, suffix: &str, keys: &[Def], sums: &str, comment: &str) -> Rollup {
    let sink = format!("{source}_{suffix}");
    let flow = format!("{sink}_flow");
    let keys: Vec<String> = keys.iter().map(|k| quote(k.name)).collect();
    // The per-minute window of every rollup.
    let minute = format!("date_bin(INTERVAL '1 minutes', {})", quote(TS.name));
    let sql = format!(
        "CREATE FLOW IF NOT EXISTS {} SINK TO {} COMMENT {} AS SELECT {}, {minute} AS \"minute\", {sums} FROM {} GROUP BY {}, \"minute\"",
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
fn flow_sums() -> String {
    let (packets, bytes) = (quote(PACKETS.name), quote(BYTES.name));
    format!("sum({packets}) AS {packets}, sum({bytes}) AS {bytes}")
}

/// Per minute, host and interface: DNS queries, errors (every rcode but `NOERROR`, timeouts
/// included), timeouts, and the answers' latency sum and maximum (the mean is
/// `dns_latency_us_sum / (dns_queries - dns_timeouts)`). Each name starts `dns_`: `queries`
/// is a keyword of GreptimeDB's SQL parser.
pub fn dns_rollup(dns_table: &str) -> Rollup {
    let (rcode, latency) = (quote(DNS_RCODE.name), quote(DNS_LATENCY_US.name));
    let sums = format!(
        "count(*) AS \"dns_queries\", \
         sum(CASE WHEN {rcode} != 'NOERROR' THEN 1 ELSE 0 END) AS \"dns_errors\", \
         sum(CASE WHEN {rcode} = 'TIMEOUT' THEN 1 ELSE 0 END) AS \"dns_timeouts\", \
         sum({latency}) AS \"dns_latency_us_sum\", max({latency}) AS \"dns_latency_us_max\""
    );
    rollup(
        dns_table,
        "1m",
        &[HOST, INTERFACE],
        &sums,
        "flowmetrix: DNS queries, errors, timeouts and latency per minute",
    )
}

/// Per minute, host, interface and reason: the kernel's drops (`--drops on`) from the flow
/// rows. Rows without drops fall in the null reason with sums of 0 (or null, `--drops
/// off`): `WHERE "drop_reason" IS NOT NULL` when reading.
pub fn drop_rollup(flow_table: &str) -> Rollup {
    let (packets, bytes) = (quote(DROP_PACKETS.name), quote(DROP_BYTES.name));
    rollup(
        flow_table,
        "drops_1m",
        &[HOST, INTERFACE, DROP_REASON],
        &format!("sum({packets}) AS {packets}, sum({bytes}) AS {bytes}"),
        "flowmetrix: kernel drops per minute and reason",
    )
}

/// The rollups of the packet table (and of the flow table when flows are on): per minute by
/// the shared tags and protocol (`_1m`), by address pair (`_talkers_1m`), and by workload
/// (`_workloads_1m`: namespace and pod, null for rows no pod is known for).
pub fn rollups(packet_table: &str, flow_table: Option<&str>) -> Vec<Rollup> {
    let by = [HOST, INTERFACE, DIRECTION, APPLICATION, PROTOCOL];
    let talkers = [HOST, DIRECTION, SRC_IP, DST_IP];
    let workloads = [HOST, DIRECTION, NAMESPACE, POD];
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
            &flow_sums(),
            "flowmetrix: exact packets and bytes per minute",
        ));
        out.push(rollup(
            flows,
            "talkers_1m",
            &talkers,
            &flow_sums(),
            "flowmetrix: exact packets and bytes per minute and address pair",
        ));
    }
    // Last, so that the older rollups keep their places.
    out.push(rollup(
        packet_table,
        "workloads_1m",
        &workloads,
        SAMPLED_SUMS,
        "flowmetrix: packets and bytes per minute, namespace and pod, scaled by sample_rate",
    ));
    if let Some(flows) = flow_table {
        out.push(rollup(
            flows,
            "workloads_1m",
            &workloads,
            &flow_sums(),
            "flowmetrix: exact packets and bytes per minute, namespace and pod",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::columns::DNS_SCHEMA;

    #[test]
    fn the_drop_rollup_sums_the_flow_rows_drops_by_reason() {
        let r = drop_rollup(FLOW_TABLE);
        assert_eq!(
            (r.flow.as_str(), r.sink.as_str()),
            ("flow_data_drops_1m_flow", "flow_data_drops_1m")
        );
        assert_eq!(
            r.sql,
            "CREATE FLOW IF NOT EXISTS \"flow_data_drops_1m_flow\" SINK TO \"flow_data_drops_1m\" COMMENT 'flowmetrix: kernel drops per minute and reason' AS SELECT \"host\", \"interface\", \"drop_reason\", date_bin(INTERVAL '1 minutes', \"ts\") AS \"minute\", sum(\"drop_packets\") AS \"drop_packets\", sum(\"drop_bytes\") AS \"drop_bytes\" FROM \"flow_data\" GROUP BY \"host\", \"interface\", \"drop_reason\", \"minute\""
        );
    }

    #[test]
    fn the_dns_table_and_its_rollup() {
        let sql = create_table(DNS_TABLE, DNS_SCHEMA, Some("30d"), &[]);
        for want in [
            "CREATE TABLE IF NOT EXISTS \"dns_data\" (",
            "\"dns_qname\" STRING NULL SKIPPING INDEX WITH(false_positive_rate = '0.01', granularity = '10240', type = 'BLOOM')",
            "\"src_ip\" STRING NULL SKIPPING INDEX",
            "\"dns_rcode\" STRING NULL INVERTED INDEX",
            "\"dns_latency_us\" BIGINT UNSIGNED NULL,",
            "TIME INDEX (\"ts\")",
            "PRIMARY KEY (\"host\", \"interface\", \"direction\")",
            "WITH(append_mode = 'true', ttl = '30d')",
        ] {
            assert!(sql.contains(want), "{want} not in\n{sql}");
        }
        let r = dns_rollup(DNS_TABLE);
        assert_eq!(
            (r.flow.as_str(), r.sink.as_str()),
            ("dns_data_1m_flow", "dns_data_1m")
        );
        assert_eq!(
            r.sql,
            "CREATE FLOW IF NOT EXISTS \"dns_data_1m_flow\" SINK TO \"dns_data_1m\" COMMENT 'flowmetrix: DNS queries, errors, timeouts and latency per minute' AS SELECT \"host\", \"interface\", date_bin(INTERVAL '1 minutes', \"ts\") AS \"minute\", count(*) AS \"dns_queries\", sum(CASE WHEN \"dns_rcode\" != 'NOERROR' THEN 1 ELSE 0 END) AS \"dns_errors\", sum(CASE WHEN \"dns_rcode\" = 'TIMEOUT' THEN 1 ELSE 0 END) AS \"dns_timeouts\", sum(\"dns_latency_us\") AS \"dns_latency_us_sum\", max(\"dns_latency_us\") AS \"dns_latency_us_max\" FROM \"dns_data\" GROUP BY \"host\", \"interface\", \"minute\""
        );
    }
}
