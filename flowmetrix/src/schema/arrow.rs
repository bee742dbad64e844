//! The Arrow form of a table's rows, as the bulk path sends them: the Arrow schema of a
//! column list (with the field metadata the ingester attaches) and one record batch built
//! straight from the rows, through the same column getters as the row insert.

use std::{collections::HashMap, fmt::Write as _, net::IpAddr, sync::Arc};

use greptimedb_ingester::{
    api::v1::{ColumnDataType, SemanticType},
    arrow_array::{
        ArrayRef, RecordBatch,
        builder::{
            StringBuilder, TimestampNanosecondBuilder, UInt8Builder, UInt16Builder, UInt32Builder,
            UInt64Builder,
        },
    },
    arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit},
    bulk::GREPTIME_SEMANTIC_TYPE_KEY,
};

use super::columns::{Column, Datum};

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("bulk path: column type {0} has no Arrow form here")]
    Unsupported(i32),
    #[error("bulk path: a row does not follow the column list ({0})")]
    Mismatch(String),
    #[error("bulk path: {0}")]
    Arrow(String),
}

/// The Arrow schema of a table's columns, with the field metadata the ingester attaches.
pub fn arrow_schema<R>(columns: &[Column<R>]) -> Result<SchemaRef, BulkError> {
    let fields = columns
        .iter()
        .map(|c| {
            let data_type = match c.data_type {
                ColumnDataType::TimestampNanosecond => {
                    DataType::Timestamp(TimeUnit::Nanosecond, None)
                }
                ColumnDataType::Uint8 => DataType::UInt8,
                ColumnDataType::Uint16 => DataType::UInt16,
                ColumnDataType::Uint32 => DataType::UInt32,
                ColumnDataType::Uint64 => DataType::UInt64,
                ColumnDataType::String => DataType::Utf8,
                other => return Err(BulkError::Unsupported(other as i32)),
            };
            let semantic = match c.semantic {
                SemanticType::Timestamp => "timestamp",
                SemanticType::Tag => "tag",
                SemanticType::Field => "field",
            };
            let nullable = semantic != "timestamp";
            Ok(
                Field::new(c.name, data_type, nullable).with_metadata(HashMap::from([(
                    GREPTIME_SEMANTIC_TYPE_KEY.to_owned(),
                    semantic.to_owned(),
                )])),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// The time index of a table: its first timestamp column.
pub fn time_index<R>(columns: &[Column<R>]) -> Option<usize> {
    columns
        .iter()
        .position(|c| c.semantic == SemanticType::Timestamp)
}

enum Builder {
    Ts(TimestampNanosecondBuilder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    Str(StringBuilder),
}

impl Builder {
    fn new(t: ColumnDataType, rows: usize) -> Self {
        match t {
            ColumnDataType::TimestampNanosecond => {
                Self::Ts(TimestampNanosecondBuilder::with_capacity(rows))
            }
            ColumnDataType::Uint8 => Self::U8(UInt8Builder::with_capacity(rows)),
            ColumnDataType::Uint16 => Self::U16(UInt16Builder::with_capacity(rows)),
            ColumnDataType::Uint32 => Self::U32(UInt32Builder::with_capacity(rows)),
            ColumnDataType::Uint64 => Self::U64(UInt64Builder::with_capacity(rows)),
            _ => Self::Str(StringBuilder::with_capacity(rows, rows * 16)),
        }
    }

    /// Appends one value; false when it is not of this column's type.
    fn push(&mut self, v: Datum<'_>) -> bool {
        use Datum as D;
        match (self, v) {
            (Self::Ts(b), D::Ts(x)) => b.append_value(x),
            (Self::U8(b), D::U8(x)) => b.append_value(x),
            (Self::U16(b), D::U16(x)) => b.append_value(x),
            (Self::U32(b), D::U32(x)) => b.append_value(x),
            (Self::U64(b), D::U64(x)) => b.append_value(x),
            (Self::Str(b), D::Str(x)) => b.append_value(x),
            // Text written into the array's buffer, then ended as one value: no String per
            // value. These Display impls do not fail.
            (Self::Str(b), D::Ip(IpAddr::V4(x))) => {
                let mut buf = [0u8; 15];
                b.append_value(ipv4_text(x.octets(), &mut buf));
            }
            (Self::Str(b), D::Ip(x)) => {
                let _ = write!(b, "{x}");
                b.append_value("");
            }
            (Self::Str(b), D::Mac(x)) => {
                let mut buf = [0u8; 17];
                b.append_value(mac_text(x.0, &mut buf));
            }
            (Self::Str(b), D::Labels(x)) => {
                let _ = write!(b, "{x}");
                b.append_value("");
            }
            (Self::Ts(_), D::Null) => return false,
            (Self::U8(b), D::Null) => b.append_null(),
            (Self::U16(b), D::Null) => b.append_null(),
            (Self::U32(b), D::Null) => b.append_null(),
            (Self::U64(b), D::Null) => b.append_null(),
            (Self::Str(b), D::Null) => b.append_null(),
            _ => return false,
        }
        true
    }

    fn finish(self) -> ArrayRef {
        match self {
            Self::Ts(mut b) => Arc::new(b.finish()),
            Self::U8(mut b) => Arc::new(b.finish()),
            Self::U16(mut b) => Arc::new(b.finish()),
            Self::U32(mut b) => Arc::new(b.finish()),
            Self::U64(mut b) => Arc::new(b.finish()),
            Self::Str(mut b) => Arc::new(b.finish()),
        }
    }
}

// The text of an IPv4 address and of a MAC address, as their `Display` writes it, by hand:
// through `std::fmt` each costs several times as much, and a row has up to four addresses
// (`cargo bench -p flowmetrix --bench pipeline -- arrow_batch`). IPv6 keeps `Display` (its
// zero compression and embedded IPv4 forms). Equal to `Display`: `text_is_display`.

/// `a.b.c.d` into `buf`.
fn ipv4_text(octets: [u8; 4], buf: &mut [u8; 15]) -> &str {
    let mut n = 0;
    for (i, o) in octets.into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if o >= 100 {
            buf[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            buf[n] = b'0' + o / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + o % 10;
        n += 1;
    }
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}

/// `aa:bb:cc:dd:ee:ff` (lowercase) into `buf`.
fn mac_text(bytes: [u8; 6], buf: &mut [u8; 17]) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.into_iter().enumerate() {
        buf[i * 3] = HEX[usize::from(b >> 4)];
        buf[i * 3 + 1] = HEX[usize::from(b & 0xf)];
        if i < 5 {
            buf[i * 3 + 2] = b':';
        }
    }
    std::str::from_utf8(&buf[..]).unwrap_or_default()
}

/// Rows as one record batch of `schema` (the Arrow schema of `columns`), each value read
/// from the row by its column, as the row insert reads it. A value that does not fit its
/// column, or a schema of other columns, is an error.
pub fn record_batch<R>(
    columns: &[Column<R>],
    rows: &[&R],
    schema: &SchemaRef,
) -> Result<RecordBatch, BulkError> {
    let mut arrays = Vec::with_capacity(columns.len());
    // Column by column: one builder and one getter at a time.
    for (i, c) in columns.iter().enumerate() {
        let mut b = Builder::new(c.data_type, rows.len());
        for row in rows {
            let v = c.get(row);
            if !b.push(v) {
                return Err(BulkError::Mismatch(format!(
                    "value {v:?} does not fit column {i} ({} {:?})",
                    c.name, c.data_type
                )));
            }
        }
        arrays.push(b.finish());
    }
    RecordBatch::try_new(Arc::clone(schema), arrays).map_err(|e| BulkError::Arrow(e.to_string()))
}

#[cfg(test)]
mod tests {
    use greptimedb_ingester::arrow_array::{
        Array, StringArray, TimestampNanosecondArray, UInt8Array, UInt16Array, UInt32Array,
        UInt64Array,
    };

    use greptimedb_ingester::api::v1::{Row, value::ValueData};

    use super::*;
    use crate::{
        record::{MacAddr, MplsLabels, PacketRecord, Tunnel, UnixNanos},
        schema::{Def, Table, columns::shared::TS},
    };

    #[test]
    fn text_is_display() {
        let mut buf = [0u8; 15];
        for o in [0u8, 1, 9, 10, 42, 99, 100, 101, 199, 200, 255] {
            for octets in [[o, 0, 0, 0], [10, o, 200, 7], [255, 255, o, o]] {
                let want = std::net::Ipv4Addr::from(octets).to_string();
                assert_eq!(ipv4_text(octets, &mut buf), want);
            }
        }
        let mut buf = [0u8; 17];
        for m in [[0u8; 6], [0xff; 6], [2, 0x1a, 0xb0, 0x0c, 0xde, 0xf9]] {
            assert_eq!(mac_text(m, &mut buf), MacAddr(m).to_string());
        }
    }

    /// Column `i` of row `r` as the row insert encodes it.
    fn cell(b: &RecordBatch, i: usize, r: usize) -> Option<ValueData> {
        let c = b.column(i);
        if c.is_null(r) {
            return None;
        }
        let any = c.as_any();
        Some(
            if let Some(a) = any.downcast_ref::<TimestampNanosecondArray>() {
                ValueData::TimestampNanosecondValue(a.value(r))
            } else if let Some(a) = any.downcast_ref::<UInt8Array>() {
                ValueData::U8Value(a.value(r).into())
            } else if let Some(a) = any.downcast_ref::<UInt16Array>() {
                ValueData::U16Value(a.value(r).into())
            } else if let Some(a) = any.downcast_ref::<UInt32Array>() {
                ValueData::U32Value(a.value(r))
            } else if let Some(a) = any.downcast_ref::<UInt64Array>() {
                ValueData::U64Value(a.value(r))
            } else if let Some(a) = any.downcast_ref::<StringArray>() {
                ValueData::StringValue(a.value(r).to_owned())
            } else {
                panic!("column {i}: {:?}", c.data_type())
            },
        )
    }

    /// Every column of `R`'s rows, as the Arrow batch built from the rows holds them,
    /// equals the row insert's value; the fields carry the roles.
    fn holds_what_the_row_insert_sends<R: Table>(rows: &[R]) {
        let schema = arrow_schema(R::COLUMNS).unwrap();
        let encoded: Vec<Row> = rows.iter().map(R::encode_row).collect();
        let refs: Vec<&R> = rows.iter().collect();
        let b = record_batch(R::COLUMNS, &refs, &schema).unwrap();
        assert_eq!(b.num_rows(), rows.len());
        assert_eq!(b.num_columns(), R::columns().len());
        for (r, want) in encoded.iter().enumerate() {
            for (i, c) in R::columns().iter().enumerate() {
                assert_eq!(
                    cell(&b, i, r),
                    want.values[i].value_data,
                    "{}",
                    c.column_name
                );
            }
        }
        for (f, c) in schema.fields().iter().zip(R::columns()) {
            assert_eq!(f.name(), &c.column_name);
            let semantic = &f.metadata()[GREPTIME_SEMANTIC_TYPE_KEY];
            let want = match SemanticType::try_from(c.semantic_type).unwrap() {
                SemanticType::Timestamp => "timestamp",
                SemanticType::Tag => "tag",
                SemanticType::Field => "field",
            };
            assert_eq!(semantic, want, "{}", c.column_name);
        }
    }

    #[test]
    fn the_arrow_batch_holds_exactly_what_the_row_insert_sends() {
        let extremes = PacketRecord {
            ts: UnixNanos(i64::MAX),
            packet_size: u16::MAX,
            ether_type: u16::MAX,
            src_mac: Some(MacAddr([0xff; 6])),
            dst_mac: Some(MacAddr([0; 6])),
            vlan_id: Some(4095),
            protocol: Some(u8::MAX),
            src_ip: Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()),
            dst_ip: Some("255.255.255.255".parse().unwrap()),
            src_port: Some(u16::MAX),
            dst_port: Some(0),
            tcp_flags: Some(u8::MAX),
            tunnel: Some(Tunnel::Ipip),
            inner_src_ip: Some("::ffff:10.0.0.1".parse().unwrap()),
            inner_protocol: Some(0),
            inner_src_port: Some(u16::MAX),
            mpls_labels: Some(MplsLabels::from([0xf_ffff; MplsLabels::MAX])),
            sample_rate: u32::MAX,
            host: "ünïcode \"host\"".into(),
            ..PacketRecord::default()
        };
        holds_what_the_row_insert_sends(&[
            crate::schema::columns::tests::record(),
            PacketRecord::default(),
            extremes,
            PacketRecord {
                ts: UnixNanos(i64::MIN),
                ..PacketRecord::default()
            },
        ]);
        let flow = crate::record::FlowRecord {
            ts: UnixNanos(1_795_000_010_000_000_000),
            host: "h".into(),
            interface: "eth0".into(),
            application: "DNS",
            vlan_id: Some(7),
            ether_type: 0x86dd,
            src_ip: Some("fd00::1".parse().unwrap()),
            dst_ip: Some("fd00::2".parse().unwrap()),
            protocol: 17,
            src_port: 40_000,
            dst_port: 53,
            packets: u64::MAX,
            bytes: 1 << 40,
            first_seen: UnixNanos(1),
            last_seen: UnixNanos(2),
            tcp_flags: 0x12,
            interval_ms: 10_000,
            health: Default::default(),
            direction: crate::record::Direction::Egress,
            workload: crate::record::Workload {
                cgroup_id: Some(u64::MAX),
                container_id: Some("c".repeat(64).into()),
                pod_uid: Some("u".into()),
                pod: Some("p".into()),
                namespace: Some("n".into()),
            },
        };
        let non_ip = crate::record::FlowRecord {
            vlan_id: None,
            src_ip: None,
            dst_ip: None,
            workload: crate::record::Workload::default(),
            ..flow.clone()
        };
        holds_what_the_row_insert_sends(&[flow, non_ip]);
        let answered = crate::schema::columns::tests::dns_record();
        let timeout = crate::record::DnsRecord {
            dns_rcode: "TIMEOUT".into(),
            dns_latency_us: None,
            dns_answers: None,
            ..answered.clone()
        };
        holds_what_the_row_insert_sends(&[answered, timeout]);
    }

    #[test]
    fn a_row_encoding_that_disagrees_with_the_columns_is_an_error_not_a_panic() {
        use greptimedb_ingester::api::v1::ColumnDataType as T;
        let bad: [Column<PacketRecord>; 2] = [
            Column::new(TS, |r| Datum::Ts(r.ts.0)),
            Column::new(Def::field("packet_size", T::Uint16), |_| {
                Datum::Str("not a u16")
            }),
        ];
        let schema = arrow_schema(&bad).unwrap();
        let row = crate::schema::columns::tests::record();
        let e = record_batch(&bad, &[&row], &schema).unwrap_err();
        assert!(e.to_string().contains("does not fit column 1"), "{e}");
        // A null time index.
        let no_time: [Column<PacketRecord>; 1] = [Column::new(TS, |_| Datum::Null)];
        let e = record_batch(&no_time, &[&row], &arrow_schema(&no_time).unwrap()).unwrap_err();
        assert!(e.to_string().contains("does not fit column 0"), "{e}");
        // A schema of other columns than the ones the values are read by.
        let e = record_batch(PacketRecord::COLUMNS, &[&row], &schema).unwrap_err();
        assert!(matches!(e, BulkError::Arrow(_)), "{e}");
    }
}
