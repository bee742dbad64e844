//! The tables a sink writes: `packet_data` ([`PacketRecord`]) and `flow_data`
//! ([`FlowRecord`]). A [`Table`] says how its rows become a GreptimeDB insert (its schema,
//! declared once, next to the encoding) and, through serde, a JSON line; the queue, the
//! batcher, the write tasks and the counters are the same code for every table, one set per
//! table.

use std::sync::OnceLock;

use greptimedb_ingester::api::v1::{
    ColumnSchema, Row, RowInsertRequest, RowInsertRequests, Rows, Value, value::ValueData,
};

use super::columns::{self as schema, FLOW_SCHEMA};
use crate::record::{FlowRecord, PacketRecord};

/// A kind of row and its table.
pub trait Table: serde::Serialize + Send + Sync + 'static {
    /// What its rows are called in log lines (`packet rows`, `flow rows`).
    const ROWS: &'static str;
    /// The column schemas of an insert, in [`Table::encode_row`]'s value order.
    fn columns() -> &'static [ColumnSchema];
    fn encode_row(&self) -> Row;
}

impl Table for PacketRecord {
    const ROWS: &'static str = "packet rows";

    fn columns() -> &'static [ColumnSchema] {
        static C: OnceLock<Vec<ColumnSchema>> = OnceLock::new();
        C.get_or_init(|| schema::column_schemas(&schema::SCHEMA))
    }

    fn encode_row(&self) -> Row {
        schema::encode_row(self)
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

fn value(v: Option<ValueData>) -> Value {
    Value { value_data: v }
}

fn string(s: impl ToString) -> Option<ValueData> {
    Some(ValueData::StringValue(s.to_string()))
}

impl Table for FlowRecord {
    const ROWS: &'static str = "flow rows";

    fn columns() -> &'static [ColumnSchema] {
        static C: OnceLock<Vec<ColumnSchema>> = OnceLock::new();
        C.get_or_init(|| schema::column_schemas(&FLOW_SCHEMA))
    }

    fn encode_row(&self) -> Row {
        let u8v = |v: u8| Some(ValueData::U8Value(v.into()));
        let u16v = |v: u16| Some(ValueData::U16Value(v.into()));
        let u64v = |v: u64| Some(ValueData::U64Value(v));
        let ts = |t: crate::record::UnixNanos| Some(ValueData::TimestampNanosecondValue(t.0));
        Row {
            values: vec![
                value(ts(self.ts)),
                value(string(&*self.host)),
                value(string(&*self.interface)),
                value(string(self.direction.as_str())),
                value(string(self.application)),
                value(self.vlan_id.and_then(u16v)),
                value(u16v(self.ether_type)),
                value(self.src_ip.and_then(string)),
                value(self.dst_ip.and_then(string)),
                value(u8v(self.protocol)),
                value(u16v(self.src_port)),
                value(u16v(self.dst_port)),
                value(u64v(self.packets)),
                value(u64v(self.bytes)),
                value(ts(self.first_seen)),
                value(ts(self.last_seen)),
                value(u8v(self.tcp_flags)),
                value(Some(ValueData::U32Value(self.interval_ms))),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Direction, FLOW_COLUMNS, UnixNanos};
    use greptimedb_ingester::api::v1::{ColumnDataType, SemanticType};

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
        }
    }

    #[test]
    fn flow_schema_is_the_record_columns_in_order_with_their_types() {
        let names: Vec<&str> = FLOW_SCHEMA.iter().map(|c| c.name).collect();
        assert_eq!(names, FLOW_COLUMNS);
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
}
