//! The spool's columnar records: a batch of rows as one Arrow IPC stream (its schema, with
//! the column roles the bulk path sends, and one record batch), built straight from the
//! records by the same column getters as the row insert ([`crate::schema::arrow`]). A
//! fraction of what encoding each row as a protobuf insert costs, written with one `write`.
//! On replay a record becomes the very row insert [`crate::schema::encode`] makes of the
//! same rows (pinned by a test), and goes the row path's way.

use std::io::Cursor;

use arrow_ipc::{reader::StreamReader, writer::StreamWriter};
use greptimedb_ingester::{
    api::v1::{
        ColumnDataType, ColumnSchema, Row, RowInsertRequest, RowInsertRequests, Rows, SemanticType,
        Value, value::ValueData,
    },
    arrow_array::{
        Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt8Array, UInt16Array,
        UInt32Array, UInt64Array,
    },
    arrow_schema::{DataType, TimeUnit},
    bulk::GREPTIME_SEMANTIC_TYPE_KEY,
};

/// Why a batch has no columnar record, or a record no insert.
#[derive(Debug, thiserror::Error)]
pub enum ColumnsError {
    #[error("spool: {0}")]
    Arrow(String),
    #[error("spool: a columnar record holds no batch")]
    Empty,
    #[error("spool: column {0} has a type no insert takes")]
    Type(String),
}

fn arrow(e: impl std::fmt::Display) -> ColumnsError {
    ColumnsError::Arrow(e.to_string())
}

/// One batch as an Arrow IPC stream (schema, batch, end).
pub fn to_ipc(batch: &RecordBatch) -> Result<Vec<u8>, ColumnsError> {
    let mut w = StreamWriter::try_new(
        Vec::with_capacity(batch.get_array_memory_size() + 4096),
        &batch.schema(),
    )
    .map_err(arrow)?;
    w.write(batch).map_err(arrow)?;
    w.finish().map_err(arrow)?;
    w.into_inner().map_err(arrow)
}

/// The batch of an Arrow IPC stream.
pub fn from_ipc(bytes: &[u8]) -> Result<RecordBatch, ColumnsError> {
    let mut r = StreamReader::try_new(Cursor::new(bytes), None).map_err(arrow)?;
    r.next().ok_or(ColumnsError::Empty)?.map_err(arrow)
}

/// `batch` cut into parts of at most `limit` bytes encoded (none smaller than a row), each
/// encoded, with its rows.
pub fn ipc_parts(batch: &RecordBatch, limit: usize) -> Result<Vec<(Vec<u8>, u64)>, ColumnsError> {
    let whole = to_ipc(batch)?;
    let rows = batch.num_rows();
    if whole.len() <= limit || rows <= 1 {
        return Ok(vec![(whole, rows as u64)]);
    }
    let parts = whole.len().div_ceil(limit.max(1)).clamp(1, rows);
    let per = rows.div_ceil(parts);
    (0..rows)
        .step_by(per)
        .map(|at| {
            let n = per.min(rows - at);
            Ok((to_ipc(&batch.slice(at, n))?, n as u64))
        })
        .collect()
}

/// The row insert into `table` of a batch: the insert [`crate::schema::encode`] makes of
/// the rows the batch was built from.
pub fn insert_of(table: &str, batch: &RecordBatch) -> Result<RowInsertRequests, ColumnsError> {
    let schema = batch.schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let datatype = match f.data_type() {
                DataType::Timestamp(TimeUnit::Nanosecond, _) => ColumnDataType::TimestampNanosecond,
                DataType::UInt8 => ColumnDataType::Uint8,
                DataType::UInt16 => ColumnDataType::Uint16,
                DataType::UInt32 => ColumnDataType::Uint32,
                DataType::UInt64 => ColumnDataType::Uint64,
                DataType::Utf8 => ColumnDataType::String,
                _ => return Err(ColumnsError::Type(f.name().clone())),
            };
            let semantic = match f
                .metadata()
                .get(GREPTIME_SEMANTIC_TYPE_KEY)
                .map(String::as_str)
            {
                Some("timestamp") => SemanticType::Timestamp,
                Some("tag") => SemanticType::Tag,
                _ => SemanticType::Field,
            };
            Ok(ColumnSchema {
                column_name: f.name().clone(),
                datatype: datatype as i32,
                semantic_type: semantic as i32,
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut rows: Vec<Row> = (0..batch.num_rows())
        .map(|_| Row {
            values: Vec::with_capacity(columns.len()),
        })
        .collect();
    for (i, column) in batch.columns().iter().enumerate() {
        let name = || ColumnsError::Type(schema.field(i).name().clone());
        let any = column.as_any();
        let cell: Box<dyn Fn(usize) -> ValueData> =
            if let Some(a) = any.downcast_ref::<TimestampNanosecondArray>() {
                Box::new(|r| ValueData::TimestampNanosecondValue(a.value(r)))
            } else if let Some(a) = any.downcast_ref::<UInt8Array>() {
                Box::new(|r| ValueData::U8Value(a.value(r).into()))
            } else if let Some(a) = any.downcast_ref::<UInt16Array>() {
                Box::new(|r| ValueData::U16Value(a.value(r).into()))
            } else if let Some(a) = any.downcast_ref::<UInt32Array>() {
                Box::new(|r| ValueData::U32Value(a.value(r)))
            } else if let Some(a) = any.downcast_ref::<UInt64Array>() {
                Box::new(|r| ValueData::U64Value(a.value(r)))
            } else if let Some(a) = any.downcast_ref::<StringArray>() {
                Box::new(|r| ValueData::StringValue(a.value(r).to_owned()))
            } else {
                return Err(name());
            };
        for (r, row) in rows.iter_mut().enumerate() {
            let value_data = (!column.is_null(r)).then(|| cell(r));
            row.values.push(Value { value_data });
        }
    }
    Ok(RowInsertRequests {
        inserts: vec![RowInsertRequest {
            table_name: table.to_owned(),
            rows: Some(Rows {
                schema: columns,
                rows,
            }),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        record::{MacAddr, MplsLabels, PacketRecord, Tunnel, UnixNanos, Workload},
        schema::{
            Table,
            arrow::{arrow_schema, record_batch},
            encode,
        },
    };

    fn rows() -> Vec<PacketRecord> {
        let full = PacketRecord {
            ts: UnixNanos(1_795_000_000_000_000_123),
            host: "node-1".into(),
            interface: "eth0".into(),
            application: "DNS",
            packet_size: 1500,
            ether_type: 0x86dd,
            src_mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
            dst_mac: Some(MacAddr([2, 0, 0, 0, 0, 2])),
            vlan_id: Some(100),
            protocol: Some(17),
            src_ip: Some("fd00::1".parse().unwrap()),
            dst_ip: Some("10.0.0.2".parse().unwrap()),
            src_port: Some(5353),
            dst_port: Some(53),
            tcp_flags: None,
            tunnel: Some(Tunnel::Vxlan),
            inner_src_ip: Some("192.168.0.1".parse().unwrap()),
            inner_dst_ip: Some("192.168.0.2".parse().unwrap()),
            inner_protocol: Some(6),
            inner_src_port: Some(1),
            inner_dst_port: Some(2),
            mpls_labels: Some(MplsLabels::default()),
            sample_rate: 10,
            workload: Workload {
                cgroup_id: Some(42),
                container_id: Some("ab".repeat(32).into()),
                pod_uid: None,
                pod: Some("p".into()),
                namespace: Some("n".into()),
            },
            ..PacketRecord::default()
        };
        vec![full, PacketRecord::default()]
    }

    fn batch(rows: &[PacketRecord]) -> RecordBatch {
        let schema = arrow_schema(PacketRecord::COLUMNS).unwrap();
        let refs: Vec<&PacketRecord> = rows.iter().collect();
        record_batch(PacketRecord::COLUMNS, &refs, &schema).unwrap()
    }

    #[test]
    fn a_record_replays_as_the_insert_of_its_rows() {
        let rows = rows();
        let bytes = to_ipc(&batch(&rows)).unwrap();
        let back = from_ipc(&bytes).unwrap();
        assert_eq!(
            insert_of("packet_data", &back).unwrap(),
            encode("packet_data", &rows)
        );
    }

    #[test]
    fn a_large_batch_is_cut_into_parts_that_hold_every_row_once() {
        let rows: Vec<PacketRecord> = (0..1000)
            .map(|i| PacketRecord {
                ts: UnixNanos(i),
                ..rows()[0].clone()
            })
            .collect();
        let b = batch(&rows);
        let whole = to_ipc(&b).unwrap().len();
        let parts = ipc_parts(&b, whole / 3).unwrap();
        assert!(parts.len() >= 3);
        assert_eq!(parts.iter().map(|p| p.1).sum::<u64>(), 1000);
        let mut again = Vec::new();
        for (bytes, n) in &parts {
            let part = from_ipc(bytes).unwrap();
            assert_eq!(part.num_rows() as u64, *n);
            again.extend(
                insert_of("t", &part).unwrap().inserts[0]
                    .rows
                    .clone()
                    .unwrap()
                    .rows,
            );
        }
        assert_eq!(
            again,
            encode("t", &rows).inserts[0].rows.clone().unwrap().rows
        );
        assert!(from_ipc(&[1, 2, 3]).is_err(), "no panic on bad bytes");
    }
}
