//! The spool's on-disk format: segment files (`seg-<seq>.spool`) of checksummed records,
//! `magic u32 | payload length u32 | crc32 u32 | rows u32 | payload` (little-endian). The
//! payload is the database name (a length byte, then the name) and the protobuf
//! `RowInsertRequests` (which names the table) as the ingester sends it. Records of the first
//! format (`FMX1`, the insert alone) replay into the run's own database; a record that is
//! done has the magic `FMXD`. A columnar record (`FMX3`, what the spool writes since
//! 2026-12-06) holds, after the database name, the table name (a length byte, then the
//! name) and the rows as one Arrow IPC stream ([`super::columns`]); the older records are
//! read and replayed as before.

use std::{
    fs::File,
    io::{Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
};

use greptimedb_ingester::api::v1::RowInsertRequests;
use prost::{
    Message as _,
    encoding::{WireType, decode_varint},
};

use super::accounting::RowsPerTable;

/// A record of the first format: the insert alone.
pub const MAGIC_V1: u32 = 0x464d_5831; // "FMX1"
/// A record: database name and insert.
pub const MAGIC: u32 = 0x464d_5832; // "FMX2"
/// A columnar record: database name, table name and the rows as Arrow IPC.
pub const MAGIC_COLUMNS: u32 = 0x464d_5833; // "FMX3"
/// A record that is done: acknowledged, or refused for good.
pub const DONE: u32 = 0x464d_5844; // "FMXD"
pub const HEADER: usize = 16;

/// One good record of a segment, not yet done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Where its header starts in the file.
    pub at: u64,
    /// The protobuf insert (or, columnar, the Arrow IPC stream), within [`Contents`]' bytes.
    insert: std::ops::Range<usize>,
    /// An `FMX3` record: the rows are Arrow IPC.
    columnar: bool,
    pub rows: u64,
    /// The database it was meant for; `None` for a first-format record.
    pub database: Option<String>,
    /// The table its insert is for.
    pub table: Option<String>,
}

/// What one segment holds, as read back: its bytes and its good records not yet done, each
/// decoded only when it is sent (a decoded insert is several times its encoded size).
#[derive(Debug, Default)]
pub struct Contents {
    bytes: Vec<u8>,
    pub records: Vec<Record>,
    /// Rows in records that were damaged (torn, corrupt) and cannot be replayed.
    pub damaged_rows: u64,
    pub damaged: bool,
    /// Where the intact records end (the damage begins).
    pub good_len: usize,
}

impl Contents {
    /// A segment that could not be read at all: damaged, no records.
    pub fn unreadable() -> Self {
        Self {
            damaged: true,
            ..Default::default()
        }
    }

    /// The insert of good record `i`.
    pub fn request(&self, i: usize) -> Option<RowInsertRequests> {
        let r = self.records.get(i)?;
        let body = self.bytes.get(r.insert.clone())?;
        if r.columnar {
            let batch = super::columns::from_ipc(body).ok()?;
            return super::columns::insert_of(r.table.as_deref()?, &batch).ok();
        }
        RowInsertRequests::decode(body).ok()
    }

    /// Good record `i` again, for `database` instead of its own.
    pub fn record_for(&self, i: usize, database: &str) -> Option<Vec<u8>> {
        let r = self.records.get(i)?;
        let body = self.bytes.get(r.insert.clone())?;
        Some(if r.columnar {
            columns_record(database, r.table.as_deref().unwrap_or(""), body, r.rows)
        } else {
            record_with_insert(database, body, r.rows)
        })
    }

    /// What follows the intact records: the damage, kept as it is.
    pub fn damaged_tail(&self) -> &[u8] {
        self.bytes.get(self.good_len..).unwrap_or_default()
    }

    /// Rows in the good records from `i` on.
    pub fn rows_from(&self, i: usize) -> u64 {
        self.records.iter().skip(i).map(|r| r.rows).sum()
    }

    /// Rows in the good records, per table.
    pub fn table_rows(&self) -> RowsPerTable {
        let mut t = RowsPerTable::default();
        for r in &self.records {
            t.add(r.table.as_deref(), r.rows);
        }
        t
    }
}

pub fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:016}.spool"))
}

pub fn seq_of(path: &Path, ext: &str) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix("seg-")?
        .strip_suffix(ext)?
        .parse()
        .ok()
}

/// One record: header, database and protobuf insert.
pub fn record_bytes(database: &str, req: &RowInsertRequests, rows: u64) -> Vec<u8> {
    let mut payload = payload_head(database, req.encoded_len());
    req.encode(&mut payload)
        .unwrap_or_else(|_| unreachable!("a Vec grows as needed"));
    framed(&payload, rows)
}

/// One record for `database` around an insert already encoded (a record read back, sent
/// elsewhere).
pub fn record_with_insert(database: &str, insert: &[u8], rows: u64) -> Vec<u8> {
    let mut payload = payload_head(database, insert.len());
    payload.extend_from_slice(insert);
    framed(&payload, rows)
}

/// One columnar record for `database` and `table`: the rows as an Arrow IPC stream.
pub fn columns_record(database: &str, table: &str, ipc: &[u8], rows: u64) -> Vec<u8> {
    let t = table.as_bytes();
    let t = &t[..t.len().min(MAX_DATABASE_LEN)];
    let mut payload = payload_head(database, 1 + t.len() + ipc.len());
    payload.push(t.len() as u8);
    payload.extend_from_slice(t);
    payload.extend_from_slice(ipc);
    framed_as(MAGIC_COLUMNS, &payload, rows)
}

/// A payload's start: the database name's length and the name, with room for the insert.
fn payload_head(database: &str, insert_len: usize) -> Vec<u8> {
    let db = database.as_bytes();
    let db = &db[..db.len().min(MAX_DATABASE_LEN)];
    let mut payload = Vec::with_capacity(1 + db.len() + insert_len);
    payload.push(db.len() as u8);
    payload.extend_from_slice(db);
    payload
}

/// A length byte and that many bytes of UTF-8 at the start of `bytes`, and what follows.
fn short_name(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let n = usize::from(*bytes.first()?);
    let name = std::str::from_utf8(bytes.get(1..1 + n)?).ok()?;
    Some((name, bytes.get(1 + n..)?))
}

/// The longest database name a record holds (its length is one byte).
pub const MAX_DATABASE_LEN: usize = 255;

fn framed(payload: &[u8], rows: u64) -> Vec<u8> {
    framed_as(MAGIC, payload, rows)
}

fn framed_as(magic: u32, payload: &[u8], rows: u64) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER + payload.len());
    for word in [
        magic,
        u32::try_from(payload.len()).unwrap_or(u32::MAX),
        crc32fast::hash(payload),
        u32::try_from(rows).unwrap_or(u32::MAX),
    ] {
        record.extend_from_slice(&word.to_le_bytes());
    }
    record.extend_from_slice(payload);
    record
}

fn word(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The database and insert range of a payload at `range`, if it is well-formed.
fn split_payload(
    bytes: &[u8],
    magic: u32,
    range: std::ops::Range<usize>,
) -> Option<(Option<String>, std::ops::Range<usize>, Option<String>)> {
    let payload = bytes.get(range.clone())?;
    if magic == MAGIC_COLUMNS {
        // Checked by its checksum; its Arrow is read when it is replayed.
        let (database, rest) = short_name(payload)?;
        let (table, ipc) = short_name(rest)?;
        let insert = range.end - ipc.len()..range.end;
        return Some((Some(database.to_owned()), insert, Some(table.to_owned())));
    }
    let (database, skip) = if magic == MAGIC_V1 {
        (None, 0)
    } else {
        let n = usize::from(*payload.first()?);
        let name = std::str::from_utf8(payload.get(1..1 + n)?).ok()?;
        (Some(name.to_owned()), 1 + n)
    };
    let insert = range.start + skip..range.end;
    let req = RowInsertRequests::decode(bytes.get(insert.clone())?).ok()?;
    let table = req.inserts.into_iter().next().map(|i| i.table_name);
    Some((database, insert, table))
}

/// Parses one segment's bytes into its good records not yet done, and what was damaged.
pub fn parse_segment(bytes: Vec<u8>) -> Contents {
    let mut out = Contents::default();
    let mut at = 0;
    while at < bytes.len() {
        let (Some(magic), Some(len), Some(crc), Some(rows)) = (
            word(&bytes, at),
            word(&bytes, at + 4),
            word(&bytes, at + 8),
            word(&bytes, at + 12),
        ) else {
            out.damaged = true; // a torn header: its rows are unknown
            break;
        };
        let range = at + HEADER..at + HEADER + len as usize;
        let known = matches!(magic, MAGIC | MAGIC_V1 | MAGIC_COLUMNS | DONE);
        let intact = known
            && bytes
                .get(range.clone())
                .is_some_and(|p| crc32fast::hash(p) == crc);
        if !intact {
            out.damaged = true;
            // The header may be intact (a torn payload): count its rows.
            if matches!(magic, MAGIC | MAGIC_V1 | MAGIC_COLUMNS) {
                out.damaged_rows += u64::from(rows);
            }
            break;
        }
        if magic != DONE {
            let Some((database, insert, table)) = split_payload(&bytes, magic, range.clone())
            else {
                out.damaged = true;
                out.damaged_rows += u64::from(rows);
                break;
            };
            out.records.push(Record {
                at: at as u64,
                insert,
                columnar: magic == MAGIC_COLUMNS,
                rows: u64::from(rows),
                database,
                table,
            });
        }
        at = range.end;
    }
    out.good_len = at;
    out.bytes = bytes;
    out
}

/// The table of the first insert of an encoded `RowInsertRequests`, from its first bytes
/// alone (prost writes fields in tag order: `inserts` = 1, and in it `table_name` = 1, left
/// out when empty): what decoding the whole insert gives, as [`split_payload`] does.
pub fn table_in_prefix(insert: &[u8]) -> Option<String> {
    const LEN_FIELD_1: u64 = (1 << 3) | WireType::LengthDelimited as u64;
    let mut buf = insert;
    let mut varint = || decode_varint(&mut buf).ok();
    if varint()? != LEN_FIELD_1 {
        return None;
    }
    if varint()? == 0 || varint()? != LEN_FIELD_1 {
        return Some(String::new());
    }
    let n = usize::try_from(varint()?).ok()?;
    let name = buf.get(..n)?;
    Some(std::str::from_utf8(name).ok()?.to_owned())
}

/// Bytes of a record's payload read to find its table: the database name and the start of
/// the insert.
const PREFIX_BYTES: u64 = 1024;

/// Rows per table in the records of `path` not yet done, from the headers and the start of
/// each payload (checksums are checked when it is replayed).
pub fn pending_rows(path: &Path) -> std::io::Result<RowsPerTable> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut at = 0;
    let mut rows = RowsPerTable::default();
    let mut head = [0u8; HEADER];
    while at + HEADER as u64 <= len {
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut head)?;
        let (Some(magic), Some(size), Some(n)) = (word(&head, 0), word(&head, 4), word(&head, 12))
        else {
            break;
        };
        match magic {
            MAGIC_COLUMNS => {
                let want = u64::from(size)
                    .min(PREFIX_BYTES)
                    .min(len - at - HEADER as u64);
                let mut prefix = vec![0u8; usize::try_from(want).unwrap_or(0)];
                f.read_exact(&mut prefix)?;
                let table = short_name(&prefix)
                    .and_then(|(_, rest)| short_name(rest))
                    .map(|(t, _)| t);
                rows.add(table, u64::from(n));
            }
            MAGIC | MAGIC_V1 => {
                let want = u64::from(size)
                    .min(PREFIX_BYTES)
                    .min(len - at - HEADER as u64);
                let mut prefix = vec![0u8; usize::try_from(want).unwrap_or(0)];
                f.read_exact(&mut prefix)?;
                let insert = if magic == MAGIC_V1 {
                    Some(&prefix[..])
                } else {
                    prefix
                        .first()
                        .and_then(|n| prefix.get(1 + usize::from(*n)..))
                };
                rows.add(insert.and_then(table_in_prefix).as_deref(), u64::from(n));
            }
            DONE => {}
            _ => break,
        }
        at += HEADER as u64 + u64::from(size);
    }
    Ok(rows)
}
