//! The `packet_data` and `flow_data` schemas, each declared once, and the encoding of rows into inserts.

use greptimedb_ingester::api::v1::{
    ColumnDataType, ColumnSchema, Row, SemanticType, Value, value::ValueData,
};

use crate::record::{MacAddr, PacketRecord};

/// One column of a table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub data_type: ColumnDataType,
    pub semantic: SemanticType,
}

pub(super) const fn col(
    name: &'static str,
    data_type: ColumnDataType,
    semantic: SemanticType,
) -> Column {
    Column {
        name,
        data_type,
        semantic,
    }
}

/// The `packet_data` table, in [`PacketRecord`] field order. `ts` is the time index, in
/// nanoseconds; `packet_type`, `application`, `host`, `interface` and `direction` are tags
/// (the primary key of [`super::ddl::PACKET_DESIGN`]); IPs and ports are fields. Columns
/// added later (`vlan_id`, `tunnel`, `inner_*`, `mpls_labels`, `host`, `interface`,
/// `direction`) are added to an existing table by GreptimeDB's insert, and a table whose
/// columns have other roles (the Go original made `src_ip` and `dst_port` tags) is written
/// as it is ([`crate::sink::greptime::shapes`]).
pub const SCHEMA: [Column; 25] = {
    use ColumnDataType as T;
    use SemanticType::{Field, Tag, Timestamp};
    [
        col("ts", T::TimestampNanosecond, Timestamp),
        col("packet_size", T::Uint16, Field),
        col("ether_type", T::Uint16, Field),
        col("src_mac", T::String, Field),
        col("dst_mac", T::String, Field),
        col("vlan_id", T::Uint16, Field),
        col("protocol", T::Uint8, Field),
        col("src_ip", T::String, Field),
        col("dst_ip", T::String, Field),
        col("src_port", T::Uint16, Field),
        col("dst_port", T::Uint16, Field),
        col("tcp_flags", T::Uint8, Field),
        col("packet_type", T::String, Tag),
        col("application", T::String, Tag),
        col("tunnel", T::String, Field),
        col("inner_src_ip", T::String, Field),
        col("inner_dst_ip", T::String, Field),
        col("inner_protocol", T::Uint8, Field),
        col("inner_src_port", T::Uint16, Field),
        col("inner_dst_port", T::Uint16, Field),
        col("mpls_labels", T::String, Field),
        col("sample_rate", T::Uint32, Field),
        col("host", T::String, Tag),
        col("interface", T::String, Tag),
        col("direction", T::String, Tag),
    ]
};

/// The `flow_data` table, in [`crate::record::FlowRecord`] field order. `ts` (the interval's end) is the
/// time index; `host`, `interface`, `direction` and `application` are tags.
pub const FLOW_SCHEMA: [Column; 18] = {
    use ColumnDataType as T;
    use SemanticType::{Field, Tag, Timestamp};
    [
        col("ts", T::TimestampNanosecond, Timestamp),
        col("host", T::String, Tag),
        col("interface", T::String, Tag),
        col("direction", T::String, Tag),
        col("application", T::String, Tag),
        col("vlan_id", T::Uint16, Field),
        col("ether_type", T::Uint16, Field),
        col("src_ip", T::String, Field),
        col("dst_ip", T::String, Field),
        col("protocol", T::Uint8, Field),
        col("src_port", T::Uint16, Field),
        col("dst_port", T::Uint16, Field),
        col("packets", T::Uint64, Field),
        col("bytes", T::Uint64, Field),
        col("first_seen", T::TimestampNanosecond, Field),
        col("last_seen", T::TimestampNanosecond, Field),
        col("tcp_flags", T::Uint8, Field),
        col("interval_ms", T::Uint32, Field),
    ]
};

/// The column schemas of an insert into a table of these columns.
pub fn column_schemas(columns: &[Column]) -> Vec<ColumnSchema> {
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

fn value(v: Option<ValueData>) -> Value {
    Value { value_data: v }
}

fn string(s: impl ToString) -> Option<ValueData> {
    Some(ValueData::StringValue(s.to_string()))
}

fn mac(m: Option<MacAddr>) -> Option<ValueData> {
    m.and_then(string)
}

/// One row, values in [`SCHEMA`] order.
pub fn encode_row(r: &PacketRecord) -> Row {
    let u8v = |v: Option<u8>| v.map(|v| ValueData::U8Value(v.into()));
    let u16v = |v: Option<u16>| v.map(|v| ValueData::U16Value(v.into()));
    Row {
        values: vec![
            value(Some(ValueData::TimestampNanosecondValue(r.ts.0))),
            value(u16v(Some(r.packet_size))),
            value(u16v(Some(r.ether_type))),
            value(mac(r.src_mac)),
            value(mac(r.dst_mac)),
            value(u16v(r.vlan_id)),
            value(u8v(r.protocol)),
            value(r.src_ip.and_then(string)),
            value(r.dst_ip.and_then(string)),
            value(u16v(r.src_port)),
            value(u16v(r.dst_port)),
            value(u8v(r.tcp_flags)),
            value(string(r.packet_type.as_str())),
            value(string(r.application)),
            value(r.tunnel.and_then(|t| string(t.as_str()))),
            value(r.inner_src_ip.and_then(string)),
            value(r.inner_dst_ip.and_then(string)),
            value(u8v(r.inner_protocol)),
            value(u16v(r.inner_src_port)),
            value(u16v(r.inner_dst_port)),
            value(r.mpls_labels.as_ref().and_then(string)),
            value(Some(ValueData::U32Value(r.sample_rate))),
            value(string(&*r.host)),
            value(string(&*r.interface)),
            value(string(r.direction.as_str())),
        ],
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::{COLUMNS, MplsLabels, PacketType, Tunnel, UnixNanos};

    /// A packet row with every column set.
    pub(crate) fn record() -> PacketRecord {
        PacketRecord {
            ts: UnixNanos(1_795_000_000_123_456_789),
            packet_size: 1514,
            ether_type: 0x0800,
            src_mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
            dst_mac: Some(MacAddr([2, 0, 0, 0, 0, 2])),
            protocol: Some(6),
            src_ip: Some("10.0.0.1".parse().unwrap()),
            dst_ip: Some("10.0.0.2".parse().unwrap()),
            src_port: Some(40_000),
            dst_port: Some(443),
            tcp_flags: Some(0x18),
            packet_type: PacketType::Ipv4,
            application: "HTTPS",
            vlan_id: Some(100),
            tunnel: Some(Tunnel::Vxlan),
            inner_src_ip: Some("fd00::1".parse().unwrap()),
            inner_dst_ip: Some("fd00::2".parse().unwrap()),
            inner_protocol: Some(17),
            inner_src_port: Some(5353),
            inner_dst_port: Some(53),
            mpls_labels: Some(MplsLabels::from([16, 1001])),
            sample_rate: 10,
            host: "node-1".into(),
            interface: "eth0".into(),
            direction: crate::record::Direction::Egress,
        }
    }

    #[test]
    fn schema_matches_the_record_columns_in_order() {
        let names: Vec<&str> = SCHEMA.iter().map(|c| c.name).collect();
        assert_eq!(names, COLUMNS);
        let tags: Vec<&str> = SCHEMA
            .iter()
            .filter(|c| c.semantic == SemanticType::Tag)
            .map(|c| c.name)
            .collect();
        assert_eq!(
            tags,
            [
                "packet_type",
                "application",
                "host",
                "interface",
                "direction"
            ]
        );
        let ts: Vec<&Column> = SCHEMA
            .iter()
            .filter(|c| c.semantic == SemanticType::Timestamp)
            .collect();
        assert_eq!(ts.len(), 1);
        assert_eq!(ts[0].name, "ts");
    }

    /// Whether a value may be stored in a column of this type.
    fn fits(v: &ValueData, t: ColumnDataType) -> bool {
        matches!(
            (v, t),
            (
                ValueData::TimestampNanosecondValue(_),
                ColumnDataType::TimestampNanosecond
            ) | (ValueData::U8Value(0..=255), ColumnDataType::Uint8)
                | (ValueData::U16Value(0..=65535), ColumnDataType::Uint16)
                | (ValueData::U32Value(_), ColumnDataType::Uint32)
                | (ValueData::StringValue(_), ColumnDataType::String)
        )
    }

    #[test]
    fn every_value_has_its_column_type() {
        let row = encode_row(&record());
        assert_eq!(row.values.len(), SCHEMA.len());
        for (v, c) in row.values.iter().zip(SCHEMA) {
            let v = v.value_data.as_ref().expect("all set in this record");
            assert!(
                fits(v, c.data_type),
                "{}: {v:?} in {:?}",
                c.name,
                c.data_type
            );
        }
        let json = serde_json::to_value(record()).unwrap();
        let text = |i: usize| match &row.values[i].value_data {
            Some(ValueData::StringValue(s)) => s.clone(),
            other => panic!("{other:?}"),
        };
        for (i, c) in SCHEMA.iter().enumerate() {
            if c.data_type == ColumnDataType::String {
                assert_eq!(json[c.name], text(i), "{}", c.name);
            }
        }
    }

    #[test]
    fn absent_values_are_null() {
        let r = PacketRecord {
            ts: record().ts,
            ..PacketRecord::default()
        };
        let row = encode_row(&r);
        for name in [
            "src_mac",
            "dst_mac",
            "mpls_labels",
            "protocol",
            "src_ip",
            "dst_ip",
            "src_port",
            "dst_port",
            "tcp_flags",
        ] {
            let i = SCHEMA.iter().position(|c| c.name == name).unwrap();
            assert_eq!(row.values[i].value_data, None, "{name}");
        }
    }
}
