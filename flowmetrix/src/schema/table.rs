//! The tables a sink writes: `packet_data` ([`PacketRecord`]), `flow_data`
//! ([`FlowRecord`]) and `dns_data` ([`DnsRecord`]). A [`Table`] is its column list; from it come the row insert (here), the
//! Arrow batch of the bulk path ([`super::arrow`]) and the JSON line ([`super::json`]).
//! The queue, the batcher, the write tasks and the counters are the same code for every
//! table, one set per table.

use std::sync::OnceLock;

use greptimedb_ingester::api::v1::{ColumnSchema, Row, RowInsertRequest, RowInsertRequests, Rows};

use super::columns::{Column, DNS_SCHEMA, FLOW_SCHEMA, SCHEMA};
use crate::record::{DnsRecord, FlowRecord, PacketRecord};

/// A kind of row and its table.
pub trait Table: serde::Serialize + Sized + Send + Sync + 'static {
    /// What its rows are called in log lines (`packet rows`, `flow rows`).
    const ROWS: &'static str;
    /// The table's columns, in order: everything else is derived from them.
    const COLUMNS: &'static [Column<Self>];
    /// The column schemas of an insert, in [`Table::encode_row`]'s value order.
    fn columns() -> &'static [ColumnSchema];

    /// The row insert's values of this row, in [`Table::COLUMNS`] order (made from the
    /// same lines as the list: see `table!` in [`super::columns`]).
    fn encode_row(&self) -> Row;

    /// Appends this row as one JSON line: keys are the column names, in order.
    fn write_json(&self, buf: &mut Vec<u8>) {
        // Serializing these plain rows into a Vec cannot fail.
        if serde_json::to_writer(&mut *buf, self).is_ok() {
            buf.push(b'\n');
        }
    }
}

/// `impl Table` for a row type: its rows' name and its column list.
macro_rules! tables {
    ($($rec:ty: $rows:literal, $columns:expr;)*) => {$(
        impl Table for $rec {
            const ROWS: &'static str = $rows;
            const COLUMNS: &'static [Column<Self>] = $columns;

            fn columns() -> &'static [ColumnSchema] {
                static C: OnceLock<Vec<ColumnSchema>> = OnceLock::new();
                C.get_or_init(|| column_schemas(Self::COLUMNS))
            }

            fn encode_row(&self) -> Row {
                Row {
                    values: self.insert_values(),
                }
            }
        }
    )*};
}

tables! {
    PacketRecord: "packet rows", SCHEMA;
    FlowRecord: "flow rows", FLOW_SCHEMA;
    DnsRecord: "DNS rows", DNS_SCHEMA;
}

/// The column schemas of an insert into a table of these columns.
pub fn column_schemas<R>(columns: &[Column<R>]) -> Vec<ColumnSchema> {
    columns
        .iter()
        .map(|c| ColumnSchema {
            column_name: c.name.to_owned(),
            datatype: c.data_type as i32,
            semantic_type: c.semantic as i32,
            ..Default::default()
        })
        .collect()
}

/// One row, values in [`Table::COLUMNS`] order.
pub fn encode_row<R: Table>(r: &R) -> Row {
    r.encode_row()
}

/// One row, each value read by its column's getter: what [`Table::encode_row`] must equal.
#[cfg(test)]
pub(crate) fn encode_row_by_columns<R>(columns: &[Column<R>], r: &R) -> Row {
    Row {
        values: columns
            .iter()
            .map(|c| super::columns::value(c.get(r)))
            .collect(),
    }
}

/// An insert of these rows into `table`.
pub fn encode<R: Table>(table: &str, rows: &[R]) -> RowInsertRequests {
    RowInsertRequests {
        inserts: vec![RowInsertRequest {
            table_name: table.to_owned(),
            rows: Some(Rows {
                schema: R::columns().to_vec(),
                rows: rows.iter().map(R::encode_row).collect(),
            }),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Direction, UnixNanos};
    use greptimedb_ingester::api::v1::{ColumnDataType, SemanticType, value::ValueData};

    fn flow() -> FlowRecord {
        FlowRecord {
            ts: UnixNanos(1_795_000_010_000_000_000),
            host: "node-1".into(),
            interface: "eth0".into(),
            direction: Direction::Ingress,
            application: "HTTPS",
            vlan_id: Some(100),
            ether_type: 0x86dd,
            src_ip: Some("fd00::1".parse().unwrap()),
            dst_ip: Some("fd00::2".parse().unwrap()),
            protocol: 6,
            src_port: 40_000,
            dst_port: 443,
            packets: 12,
            bytes: 3_456,
            first_seen: UnixNanos(1_795_000_001_000_000_000),
            last_seen: UnixNanos(1_795_000_009_000_000_000),
            tcp_flags: 0x1b,
            interval_ms: 10_000,
            health: crate::record::FlowHealth {
                tcp_handshake_us: Some(51_234),
                tcp_syn_retransmits: Some(1),
                tcp_retransmits: Some(3),
                tcp_rtt_us: Some(50_800),
                drop_packets: Some(2),
                drop_bytes: Some(120),
                drop_reason: Some("NETFILTER_DROP".into()),
            },
            workload: crate::record::Workload {
                cgroup_id: Some(4026),
                container_id: Some("ab".repeat(32).into()),
                pod_uid: Some("5f1c8a3e-2b4d-4c6e-9f01-23456789abcd".into()),
                pod: Some("checkout-7d9f".into()),
                namespace: Some("shop".into()),
            },
        }
    }

    #[test]
    fn flow_schema_is_the_record_columns_in_order_with_their_types() {
        let names: Vec<&str> = FLOW_SCHEMA.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "ts",
                "host",
                "interface",
                "direction",
                "application",
                "vlan_id",
                "ether_type",
                "src_ip",
                "dst_ip",
                "protocol",
                "src_port",
                "dst_port",
                "packets",
                "bytes",
                "first_seen",
                "last_seen",
                "tcp_flags",
                "interval_ms",
                "tcp_handshake_us",
                "tcp_syn_retransmits",
                "tcp_retransmits",
                "tcp_rtt_us",
                "drop_packets",
                "drop_bytes",
                "drop_reason",
                "cgroup_id",
                "container_id",
                "pod_uid",
                "pod",
                "namespace",
            ]
        );
        let tags: Vec<&str> = FLOW_SCHEMA
            .iter()
            .filter(|c| c.semantic == SemanticType::Tag)
            .map(|c| c.name)
            .collect();
        assert_eq!(tags, ["host", "interface", "direction", "application"]);
        let row = flow().encode_row();
        assert_eq!(row.values.len(), FLOW_SCHEMA.len());
        let json = serde_json::to_value(flow()).unwrap();
        for (v, c) in row.values.iter().zip(FLOW_SCHEMA) {
            let v = v.value_data.as_ref().expect("all set in this record");
            let fits = matches!(
                (v, c.data_type),
                (
                    ValueData::TimestampNanosecondValue(_),
                    ColumnDataType::TimestampNanosecond
                ) | (ValueData::U8Value(0..=255), ColumnDataType::Uint8)
                    | (ValueData::U16Value(0..=65535), ColumnDataType::Uint16)
                    | (ValueData::U32Value(_), ColumnDataType::Uint32)
                    | (ValueData::U64Value(_), ColumnDataType::Uint64)
                    | (ValueData::StringValue(_), ColumnDataType::String)
            );
            assert!(fits, "{}: {v:?} in {:?}", c.name, c.data_type);
            if let ValueData::StringValue(s) = v {
                assert_eq!(json[c.name], *s, "{}", c.name);
            }
        }
    }

    #[test]
    fn an_untagged_non_ip_flow_has_null_vlan_and_addresses() {
        let r = FlowRecord {
            vlan_id: None,
            src_ip: None,
            dst_ip: None,
            ..flow()
        };
        let row = r.encode_row();
        for name in ["vlan_id", "src_ip", "dst_ip"] {
            let i = FLOW_SCHEMA.iter().position(|c| c.name == name).unwrap();
            assert_eq!(row.values[i].value_data, None, "{name}");
        }
        let req = encode("flow_data", &[r]);
        assert_eq!(req.inserts[0].table_name, "flow_data");
        assert_eq!(
            req.inserts[0].rows.as_ref().unwrap().schema.len(),
            FLOW_SCHEMA.len()
        );
    }

    /// The row insert's values, made field by field from the list's lines, are the ones
    /// the list's getters give, for every column, set or null.
    #[test]
    fn the_row_insert_is_what_the_column_getters_read() {
        for r in [
            crate::schema::columns::tests::record(),
            PacketRecord::default(),
        ] {
            assert_eq!(r.encode_row(), encode_row_by_columns(SCHEMA, &r));
        }
        let non_ip = FlowRecord {
            vlan_id: None,
            src_ip: None,
            dst_ip: None,
            ..flow()
        };
        for r in [flow(), non_ip] {
            assert_eq!(r.encode_row(), encode_row_by_columns(FLOW_SCHEMA, &r));
        }
    }
}
