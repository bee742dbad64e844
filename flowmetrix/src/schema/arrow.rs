//! The Arrow form of a table's rows, as the bulk path sends them: the Arrow schema of an
//! insert's columns (with the field metadata the ingester attaches) and one record batch of
//! rows.

use std::{collections::HashMap, sync::Arc};

use greptimedb_ingester::{
    api::v1::{ColumnDataType, ColumnSchema, Row, SemanticType, value::ValueData},
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

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("bulk path: column type {0} has no Arrow form here")]
    Unsupported(i32),
    #[error("bulk path: row encoding does not follow the column list ({0})")]
    Mismatch(String),
    #[error("bulk path: {0}")]
    Arrow(String),
}

/// The Arrow schema of an insert's column schemas, with the field metadata the ingester
/// attaches.
pub fn arrow_schema(columns: &[ColumnSchema]) -> Result<SchemaRef, BulkError> {
    let fields = columns
        .iter()
        .map(|c| {
            let data_type = match ColumnDataType::try_from(c.datatype) {
                Ok(ColumnDataType::TimestampNanosecond) => {
                    DataType::Timestamp(TimeUnit::Nanosecond, None)
                }
                Ok(ColumnDataType::Uint8) => DataType::UInt8,
                Ok(ColumnDataType::Uint16) => DataType::UInt16,
                Ok(ColumnDataType::Uint32) => DataType::UInt32,
                Ok(ColumnDataType::Uint64) => DataType::UInt64,
                Ok(ColumnDataType::String) => DataType::Utf8,
                _ => return Err(BulkError::Unsupported(c.datatype)),
            };
            let semantic = SemanticType::try_from(c.semantic_type);
            let semantic = match semantic {
                Ok(SemanticType::Timestamp) => "timestamp",
                Ok(SemanticType::Tag) => "tag",
                _ => "field",
            };
            let nullable = semantic != "timestamp";
            Ok(
                Field::new(&c.column_name, data_type, nullable).with_metadata(HashMap::from([(
                    GREPTIME_SEMANTIC_TYPE_KEY.to_owned(),
                    semantic.to_owned(),
                )])),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// The time index of an insert's rows: its first timestamp column.
pub fn time_index(columns: &[ColumnSchema]) -> Option<usize> {
    columns
        .iter()
        .position(|c| c.semantic_type == SemanticType::Timestamp as i32)
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
    fn new(t: &DataType, rows: usize) -> Self {
        match t {
            DataType::Timestamp(..) => Self::Ts(TimestampNanosecondBuilder::with_capacity(rows)),
            DataType::UInt8 => Self::U8(UInt8Builder::with_capacity(rows)),
            DataType::UInt16 => Self::U16(UInt16Builder::with_capacity(rows)),
            DataType::UInt32 => Self::U32(UInt32Builder::with_capacity(rows)),
            DataType::UInt64 => Self::U64(UInt64Builder::with_capacity(rows)),
            _ => Self::Str(StringBuilder::with_capacity(rows, rows * 16)),
        }
    }

    /// Appends one value of the row insert's encoding; false when it is not of this
    /// column's type (or does not fit it).
    fn push(&mut self, v: Option<&ValueData>) -> bool {
        use ValueData as V;
        match (self, v) {
            (Self::Ts(b), Some(V::TimestampNanosecondValue(x))) => b.append_value(*x),
            (Self::U8(b), Some(V::U8Value(x))) => match u8::try_from(*x) {
                Ok(x) => b.append_value(x),
                Err(_) => return false,
            },
            (Self::U16(b), Some(V::U16Value(x))) => match u16::try_from(*x) {
                Ok(x) => b.append_value(x),
                Err(_) => return false,
            },
            (Self::U32(b), Some(V::U32Value(x))) => b.append_value(*x),
            (Self::U64(b), Some(V::U64Value(x))) => b.append_value(*x),
            (Self::Str(b), Some(V::StringValue(x))) => b.append_value(x),
            (Self::Ts(_), None) => return false,
            (Self::U8(b), None) => b.append_null(),
            (Self::U16(b), None) => b.append_null(),
            (Self::U32(b), None) => b.append_null(),
            (Self::U64(b), None) => b.append_null(),
            (Self::Str(b), None) => b.append_null(),
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

/// Rows as the row insert encodes them ([`Table::encode_row`]), as one record batch of
/// `schema` (that insert's columns): one encoding of a row for both paths.
pub fn record_batch(rows: &[&Row], schema: &SchemaRef) -> Result<RecordBatch, BulkError> {
    let mut builders: Vec<Builder> = schema
        .fields()
        .iter()
        .map(|f| Builder::new(f.data_type(), rows.len()))
        .collect();
    for row in rows {
        if row.values.len() != builders.len() {
            return Err(BulkError::Mismatch(format!(
                "a row gave {} values for {} columns",
                row.values.len(),
                builders.len()
            )));
        }
        for (i, (b, v)) in builders.iter_mut().zip(&row.values).enumerate() {
            if !b.push(v.value_data.as_ref()) {
                return Err(BulkError::Mismatch(format!(
                    "value {:?} does not fit column {i} ({})",
                    v.value_data,
                    schema.field(i).data_type()
                )));
            }
        }
    }
    let arrays: Vec<ArrayRef> = builders.into_iter().map(Builder::finish).collect();
    RecordBatch::try_new(Arc::clone(schema), arrays).map_err(|e| BulkError::Arrow(e.to_string()))
}

#[cfg(test)]
mod tests {
    use greptimedb_ingester::arrow_array::{
        Array, StringArray, TimestampNanosecondArray, UInt8Array, UInt16Array, UInt32Array,
        UInt64Array,
    };

    use super::*;
    use crate::{
        record::{PacketRecord, UnixNanos},
        schema::Table,
    };

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

    /// Every column of `R`'s rows, as the Arrow batch holds them, equals the row insert's
    /// value; the fields carry the roles.
    fn holds_what_the_row_insert_sends<R: Table>(rows: &[R]) {
        let schema = arrow_schema(R::columns()).unwrap();
        let encoded: Vec<Row> = rows.iter().map(R::encode_row).collect();
        let refs: Vec<&Row> = encoded.iter().collect();
        let b = record_batch(&refs, &schema).unwrap();
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
        holds_what_the_row_insert_sends(&[
            crate::schema::columns::tests::record(),
            PacketRecord::default(),
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
            direction: crate::record::Direction::Egress,
        };
        let non_ip = crate::record::FlowRecord {
            vlan_id: None,
            src_ip: None,
            dst_ip: None,
            ..flow.clone()
        };
        holds_what_the_row_insert_sends(&[flow, non_ip]);
    }

    #[test]
    fn a_row_encoding_that_disagrees_with_the_columns_is_an_error_not_a_panic() {
        let schema = arrow_schema(PacketRecord::columns()).unwrap();
        let mut row = crate::schema::columns::tests::record().encode_row();
        row.values[1].value_data = Some(ValueData::StringValue("not a u16".into()));
        let e = record_batch(&[&row], &schema).unwrap_err();
        assert!(e.to_string().contains("does not fit column 1"), "{e}");
        row.values.pop();
        let e = record_batch(&[&row], &schema).unwrap_err();
        assert!(e.to_string().contains("values for"), "{e}");
    }
}
