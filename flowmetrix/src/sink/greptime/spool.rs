//! A bounded on-disk spool of GreptimeDB inserts, for when GreptimeDB is away or slower
//! than the capture.
//!
//! Inserts are appended to segment files (`seg-<seq>.spool`) as checksummed records:
//! `magic u32 | payload length u32 | crc32 u32 | rows u32 | payload` (little-endian). The
//! payload is the database name (a length byte, then the name) and the protobuf
//! `RowInsertRequests` (which names the table) as the ingester sends it, so a record is
//! replayed where it was meant to go whatever the later run is told. Records of the first
//! format (`FMX1`, the insert alone) replay into the run's own database.
//!
//! Segments are replayed oldest first. Each record GreptimeDB acknowledged (or refused for
//! good) is marked done in place (its magic becomes `FMXD`), so a collector killed during a
//! replay resumes after the last acknowledged record; a segment is deleted once every record
//! is done. When the spool would exceed its size limit the oldest data is dropped first —
//! quarantined files, then the oldest segment, the one being replayed included — and its
//! rows counted as lost. A failed append (disk full) leaves the segment as it was. A torn or
//! corrupt record (power loss mid-write) is found by its checksum: the records before it are
//! replayed, the rest counted, the file quarantined (renamed `.bad`, counted in the limit,
//! at most [`MAX_BAD_FILES`] kept).
//!
//! The directory is locked (`flock` on `lock`, which holds the owner's pid): a second
//! collector on the same directory is refused with the pid of the one that has it.
//!
//! Accounting: every row handed to [`Spool::append`] counts as `spooled`; each is later
//! `replayed`, counted as `spool lost` (dropped for room, damaged, refused by GreptimeDB on
//! replay, not writable), or still on disk at exit ([`Spool::rows`]). This holds for each
//! table on its own: a segment knows its rows per table ([`TableRows`]; for a segment an
//! earlier run left, from the table name at the start of each record's insert), so rows lost
//! in bulk — a segment dropped for room, a damaged one — are counted against the table they
//! belonged to ([`Spool::add_table`]). The on-disk format is unchanged by this.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    os::{fd::AsRawFd as _, unix::fs::FileExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use greptimedb_ingester::api::v1::{RowInsertRequest, RowInsertRequests, Rows};
use prost::Message as _;
use tracing::{info, warn};

use crate::{metrics::Counters, throttle::Throttled};

/// A record of the first format: the insert alone.
const MAGIC_V1: u32 = 0x464d_5831; // "FMX1"
/// A record: database name and insert.
const MAGIC: u32 = 0x464d_5832; // "FMX2"
/// A record that is done: acknowledged, or refused for good.
const DONE: u32 = 0x464d_5844; // "FMXD"
const HEADER: usize = 16;
const LOCK_FILE: &str = "lock";
/// Quarantined (`.bad`) files kept for inspection; older ones are deleted.
pub const MAX_BAD_FILES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {path}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "spool directory {path} is in use by another collector (pid {holder}): give this one its own --spool-dir, or --no-spool"
    )]
    Locked { path: String, holder: String },
}

/// Rows per table, by the table name their inserts give (`None`: a record whose table
/// could not be read, counted with the spool's own counters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRows(Vec<(Option<String>, u64)>);

impl TableRows {
    pub fn of(table: Option<&str>, rows: u64) -> Self {
        let mut t = Self::default();
        t.add(table, rows);
        t
    }

    pub fn add(&mut self, table: Option<&str>, rows: u64) {
        if rows == 0 {
            return;
        }
        match self.0.iter_mut().find(|(t, _)| t.as_deref() == table) {
            Some((_, n)) => *n += rows,
            None => self.0.push((table.map(str::to_owned), rows)),
        }
    }

    /// The rows of `table`.
    pub fn get(&self, table: Option<&str>) -> u64 {
        self.0
            .iter()
            .find(|(t, _)| t.as_deref() == table)
            .map_or(0, |(_, n)| *n)
    }

    /// What `self` holds beyond `other`, table by table (never below zero).
    pub fn minus(&self, other: &Self) -> Self {
        let mut out = Self::default();
        for (t, n) in &self.0 {
            out.add(t.as_deref(), n.saturating_sub(other.get(t.as_deref())));
        }
        out
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Option<&str>, u64)> {
        self.0.iter().map(|(t, n)| (t.as_deref(), *n))
    }
}

/// A closed segment waiting to be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    /// Bytes of it that are ours (a failed append may have left more behind).
    pub bytes: u64,
    /// Rows in records not yet done, per table.
    pub rows: TableRows,
}

/// One good record of a segment, not yet done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Where its header starts in the file.
    pub at: u64,
    /// The protobuf insert, within [`Contents`]' bytes.
    insert: std::ops::Range<usize>,
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
    /// The insert of good record `i`.
    pub fn request(&self, i: usize) -> Option<RowInsertRequests> {
        let r = self.records.get(i)?;
        RowInsertRequests::decode(self.bytes.get(r.insert.clone())?).ok()
    }

    /// Rows in the good records from `i` on.
    pub fn rows_from(&self, i: usize) -> u64 {
        self.records.iter().skip(i).map(|r| r.rows).sum()
    }

    /// Rows in the good records, per table.
    pub fn table_rows(&self) -> TableRows {
        let mut t = TableRows::default();
        for r in &self.records {
            t.add(r.table.as_deref(), r.rows);
        }
        t
    }
}

/// How a replayed record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed {
    /// GreptimeDB acknowledged it.
    Written,
    /// GreptimeDB refused it for good: its rows are lost.
    Refused,
    /// Not written this time; it will be tried again.
    Failed,
}

#[derive(Debug)]
struct Active {
    seg: Segment,
    file: File,
}

/// The segment the replayer holds.
#[derive(Debug)]
struct Replaying {
    seg: Segment,
    /// Rows of it done (written or refused).
    done: TableRows,
    /// Rows of the record being sent now.
    in_flight: TableRows,
    /// Dropped for room while being replayed: the replayer stops at its next record.
    evicted: bool,
    /// Renamed `.bad`: kept (not deleted) once replayed; its records end here.
    quarantined: Option<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    closed: VecDeque<Segment>,
    active: Option<Active>,
    replaying: Option<Replaying>,
    /// Quarantined files, oldest first, with their sizes.
    bad: VecDeque<(PathBuf, u64)>,
    bytes: u64,
    next_seq: u64,
}

impl Inner {
    fn rows(&self) -> u64 {
        self.closed.iter().map(|s| s.rows.total()).sum::<u64>()
            + self.active.as_ref().map_or(0, |a| a.seg.rows.total())
            + self
                .replaying
                .as_ref()
                .filter(|r| !r.evicted)
                .map_or(0, |r| r.seg.rows.minus(&r.done).total())
    }
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    inner: Mutex<Inner>,
    counters: Arc<Counters>,
    /// Tables other than the first whose rows are counted apart ([`Spool::add_table`]).
    tables: Mutex<Vec<(String, Arc<Counters>)>>,
    /// Held for the spool's life: the directory lock.
    _lock: File,
    full: Throttled,
    failed: Throttled,
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:016}.spool"))
}

fn seq_of(path: &Path, ext: &str) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix("seg-")?
        .strip_suffix(ext)?
        .parse()
        .ok()
}

/// One record: header, database and protobuf insert.
fn record_bytes(database: &str, req: &RowInsertRequests, rows: u64) -> Vec<u8> {
    let db = database.as_bytes();
    let db = &db[..db.len().min(255)];
    let mut payload = Vec::with_capacity(1 + db.len() + req.encoded_len());
    payload.push(db.len() as u8);
    payload.extend_from_slice(db);
    req.encode(&mut payload)
        .unwrap_or_else(|_| unreachable!("a Vec grows as needed"));
    let mut record = Vec::with_capacity(HEADER + payload.len());
    for word in [
        MAGIC,
        u32::try_from(payload.len()).unwrap_or(u32::MAX),
        crc32fast::hash(&payload),
        u32::try_from(rows).unwrap_or(u32::MAX),
    ] {
        record.extend_from_slice(&word.to_le_bytes());
    }
    record.extend_from_slice(&payload);
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
        let known = matches!(magic, MAGIC | MAGIC_V1 | DONE);
        let intact = known
            && bytes
                .get(range.clone())
                .is_some_and(|p| crc32fast::hash(p) == crc);
        if !intact {
            out.damaged = true;
            // The header may be intact (a torn payload): count its rows.
            if matches!(magic, MAGIC | MAGIC_V1) {
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

/// A protobuf varint at `*at`, advancing it.
fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The table of the first insert of an encoded `RowInsertRequests`, from its first bytes
/// alone (prost writes fields in tag order: `inserts` = 1, and in it `table_name` = 1, left
/// out when empty): what decoding the whole insert gives, as [`split_payload`] does.
fn table_in_prefix(insert: &[u8]) -> Option<String> {
    const LEN_FIELD_1: u64 = (1 << 3) | 2;
    let mut at = 0;
    if varint(insert, &mut at)? != LEN_FIELD_1 {
        return None;
    }
    if varint(insert, &mut at)? == 0 || varint(insert, &mut at)? != LEN_FIELD_1 {
        return Some(String::new());
    }
    let n = usize::try_from(varint(insert, &mut at)?).ok()?;
    let name = insert.get(at..at.checked_add(n)?)?;
    Some(std::str::from_utf8(name).ok()?.to_owned())
}

/// Bytes of a record's payload read to find its table: the database name and the start of
/// the insert.
const PREFIX_BYTES: u64 = 1024;

/// Rows per table in the records of `path` not yet done, from the headers and the start of
/// each payload (checksums are checked when it is replayed).
fn pending_rows(path: &Path) -> std::io::Result<TableRows> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut at = 0;
    let mut rows = TableRows::default();
    let mut head = [0u8; HEADER];
    while at + HEADER as u64 <= len {
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut head)?;
        let (Some(magic), Some(size), Some(n)) = (word(&head, 0), word(&head, 4), word(&head, 12))
        else {
            break;
        };
        match magic {
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

/// Takes the directory's lock, or says who holds it.
fn lock(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let dir_err = |source| SpoolError::Dir {
        path: dir.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(dir_err)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(dir_err(e));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(SpoolError::Locked {
            path: dir.display().to_string(),
            holder: if holder.is_empty() {
                "unknown".into()
            } else {
                holder.into()
            },
        });
    }
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .map_err(dir_err)?;
    Ok(file)
}

impl Spool {
    /// Opens (creating) the spool in `dir`, taking up segments an earlier run left.
    pub fn open(dir: &Path, max_bytes: u64, counters: Arc<Counters>) -> Result<Self, SpoolError> {
        let dir_err = |source| SpoolError::Dir {
            path: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(dir_err)?;
        let lock = lock(dir)?;
        let mut found: Vec<Segment> = Vec::new();
        let mut bad: Vec<(u64, PathBuf, u64)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(dir_err)? {
            let path = entry.map_err(dir_err)?.path();
            let bytes = fs::metadata(&path).map_or(0, |m| m.len());
            if let Some(seq) = seq_of(&path, ".spool") {
                match pending_rows(&path) {
                    Ok(rows) if rows.total() == 0 && bytes > 0 => {
                        let _ = fs::remove_file(&path); // every record was done
                    }
                    Ok(rows) => found.push(Segment {
                        seq,
                        path,
                        bytes,
                        rows,
                    }),
                    Err(e) => warn!("spool: cannot read {}: {e}; left alone", path.display()),
                }
            } else if let Some(seq) = seq_of(&path, ".bad") {
                bad.push((seq, path, bytes));
            } else if seq_of(&path, ".tmp").is_some() {
                // An unfinished rewrite of an older version: the segment itself is intact.
                let _ = fs::remove_file(&path);
            }
        }
        found.sort_by_key(|s| s.seq);
        bad.sort_by_key(|b| b.0);
        while bad.len() > MAX_BAD_FILES {
            let (_, path, _) = bad.remove(0);
            let _ = fs::remove_file(&path);
        }
        let max_seq = found
            .iter()
            .map(|s| s.seq)
            .chain(bad.iter().map(|b| b.0))
            .max();
        let inner = Inner {
            bytes: found.iter().map(|s| s.bytes).sum::<u64>()
                + bad.iter().map(|b| b.2).sum::<u64>(),
            next_seq: max_seq.map_or(0, |s| s + 1),
            closed: found.into(),
            bad: bad.into_iter().map(|(_, p, b)| (p, b)).collect(),
            ..Default::default()
        };
        if !inner.closed.is_empty() {
            info!(
                "spool {}: {} rows in {} segment(s), {} bytes from an earlier run to replay",
                dir.display(),
                inner.rows(),
                inner.closed.len(),
                inner.bytes
            );
        }
        let spool = Self {
            dir: dir.to_owned(),
            max_bytes,
            // Several segments fit in the limit, so dropping the oldest frees room.
            // Small enough to read back whole without a memory spike.
            segment_bytes: (max_bytes / 8).clamp(4096, 8 << 20),
            inner: Mutex::new(inner),
            counters,
            tables: Mutex::new(Vec::new()),
            _lock: lock,
            full: Throttled::default(),
            failed: Throttled::default(),
        };
        spool.publish();
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self) {
        let inner = self.lock();
        let segments = inner.closed.len()
            + inner.bad.len()
            + usize::from(inner.active.is_some())
            + usize::from(inner.replaying.as_ref().is_some_and(|r| !r.evicted));
        Counters::set(&self.counters.spool_bytes, inner.bytes);
        Counters::set(&self.counters.spool_segments, segments as u64);
    }

    /// Bytes on disk now.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Rows on disk not yet replayed.
    pub fn rows(&self) -> u64 {
        self.lock().rows()
    }

    /// Counts `rows` as lost, each against its table's counters.
    fn lose(&self, rows: &TableRows) {
        for (table, n) in rows.iter() {
            Counters::add(&self.counters_of(table).spool_lost, n);
        }
    }

    /// Counts the spooled, replayed and lost rows of inserts for `table` in `counters`
    /// instead of the spool's own (which keep the gauges, and the rows of every other
    /// table, and of records whose table cannot be read). Rows lost in bulk — a segment
    /// dropped for room or damaged — are counted against their own tables too.
    pub fn add_table(&self, table: &str, counters: Arc<Counters>) {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((table.to_owned(), counters));
    }

    /// The counters of `table`'s rows.
    fn counters_of(&self, table: Option<&str>) -> Arc<Counters> {
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        table
            .and_then(|t| tables.iter().find(|(n, _)| n == t))
            .map_or_else(|| Arc::clone(&self.counters), |(_, c)| Arc::clone(c))
    }

    /// Appends one insert of `rows` rows for `database`. Never fails the caller: rows that
    /// cannot be kept are counted as lost. An insert larger than half a segment is split,
    /// so that a small spool is used to its limit and drops the oldest rows in small steps.
    pub fn append(&self, database: &str, req: &RowInsertRequests, rows: u64) {
        let limit = (self.segment_bytes / 2) as usize;
        match &req.inserts[..] {
            [one] if req.encoded_len() > limit && rows > 1 => {
                let Some(r) = one.rows.as_ref().filter(|r| r.rows.len() > 1) else {
                    return self.append_one(database, req, rows);
                };
                let parts = req.encoded_len().div_ceil(limit).clamp(1, r.rows.len());
                let per = r.rows.len().div_ceil(parts);
                for chunk in r.rows.chunks(per) {
                    let part = RowInsertRequests {
                        inserts: vec![RowInsertRequest {
                            table_name: one.table_name.clone(),
                            rows: Some(Rows {
                                schema: r.schema.clone(),
                                rows: chunk.to_vec(),
                            }),
                        }],
                    };
                    self.append_one(database, &part, chunk.len() as u64);
                }
            }
            _ => self.append_one(database, req, rows),
        }
    }

    fn append_one(&self, database: &str, req: &RowInsertRequests, rows: u64) {
        let table_name = req.inserts.first().map(|i| i.table_name.as_str());
        let table = self.counters_of(table_name);
        Counters::add(&table.spooled, rows);
        let lose = |rows| Counters::add(&table.spool_lost, rows);
        let record = record_bytes(database, req, rows);
        let len = record.len() as u64;
        if len > self.max_bytes {
            lose(rows);
            self.failed.warn(format_args!(
                "spool: a {len}-byte batch is larger than the whole spool ({} bytes); {rows} rows lost",
                self.max_bytes
            ));
            return;
        }
        let mut inner = self.lock();
        self.make_room(&mut inner, len);
        if inner.active.is_none() {
            let seq = inner.next_seq;
            inner.next_seq += 1;
            let path = seg_path(&self.dir, seq);
            match OpenOptions::new().create_new(true).append(true).open(&path) {
                Ok(file) => {
                    inner.active = Some(Active {
                        seg: Segment {
                            seq,
                            path,
                            bytes: 0,
                            rows: TableRows::default(),
                        },
                        file,
                    });
                }
                Err(e) => {
                    drop(inner);
                    lose(rows);
                    self.failed.warn(format_args!(
                        "spool: cannot create {}: {e}; {rows} rows lost",
                        path.display()
                    ));
                    return;
                }
            }
        }
        let Some(active) = inner.active.as_mut() else {
            return;
        };
        if let Err(e) = active.file.write_all(&record) {
            // Leave the segment as it was: nothing may follow a partial record.
            let path = active.seg.path.display().to_string();
            if active.file.set_len(active.seg.bytes).is_err() {
                // Cannot cut it back: no more appends to it; replay reads only our bytes.
                Self::close_active(&mut inner);
            }
            drop(inner);
            lose(rows);
            self.failed.warn(format_args!(
                "spool: cannot write {path}: {e}; {rows} rows lost"
            ));
            self.publish();
            return;
        }
        active.seg.bytes += len;
        active.seg.rows.add(table_name, rows);
        let full = active.seg.bytes >= self.segment_bytes;
        inner.bytes += len;
        if full {
            Self::close_active(&mut inner);
        }
        drop(inner);
        self.publish();
    }

    /// Drops the oldest data until `len` more bytes fit: quarantined files, then the
    /// segment being replayed, then closed segments, then the active one.
    fn make_room(&self, inner: &mut Inner, len: u64) {
        while inner.bytes + len > self.max_bytes {
            let (path, bytes, rows) = if let Some((path, bytes)) = inner.bad.pop_front() {
                (path, bytes, TableRows::default())
            } else if let Some(r) = inner.replaying.as_mut().filter(|r| !r.evicted) {
                // Taken from the front: older than every closed segment.
                r.evicted = true;
                let rows = r.seg.rows.minus(&r.done).minus(&r.in_flight);
                (r.seg.path.clone(), r.seg.bytes, rows)
            } else if let Some(oldest) = inner.closed.pop_front() {
                (oldest.path, oldest.bytes, oldest.rows)
            } else if let Some(active) = inner.active.take() {
                (active.seg.path, active.seg.bytes, active.seg.rows)
            } else {
                break;
            };
            let _ = fs::remove_file(&path);
            inner.bytes -= bytes.min(inner.bytes);
            self.lose(&rows);
            self.full.warn(format_args!(
                "spool full ({} bytes): dropped the oldest data, {} rows lost",
                self.max_bytes,
                rows.total()
            ));
        }
    }

    fn close_active(inner: &mut Inner) {
        if let Some(active) = inner.active.take() {
            let _ = active.file.sync_all();
            if active.seg.rows.total() > 0 {
                inner.closed.push_back(active.seg);
            } else {
                let _ = fs::remove_file(&active.seg.path);
                inner.bytes -= active.seg.bytes.min(inner.bytes);
            }
        }
    }

    /// Writes what is buffered to disk (at exit).
    pub fn sync(&self) {
        let mut inner = self.lock();
        Self::close_active(&mut inner);
    }

    /// Takes the oldest segment for replay (closing the active one if it is all there
    /// is), and reads it. Damage is counted and the file quarantined. Reads a file: call it
    /// where blocking is allowed.
    pub fn take_oldest(&self) -> Option<(Segment, Contents)> {
        let mut seg = {
            let mut inner = self.lock();
            if inner.replaying.is_some() {
                return None;
            }
            if inner.closed.is_empty() {
                Self::close_active(&mut inner);
            }
            let seg = inner.closed.pop_front()?;
            inner.replaying = Some(Replaying {
                seg: seg.clone(),
                done: TableRows::default(),
                in_flight: TableRows::default(),
                evicted: false,
                quarantined: None,
            });
            seg
        };
        let mut contents = match fs::read(&seg.path) {
            Ok(mut bytes) => {
                bytes.truncate(usize::try_from(seg.bytes).unwrap_or(usize::MAX));
                parse_segment(bytes)
            }
            Err(e) => {
                warn!("spool: cannot read {}: {e}", seg.path.display());
                Contents {
                    damaged: true,
                    ..Default::default()
                }
            }
        };
        // What the headers said may differ from what the checksums allow.
        let good = contents.table_rows();
        if contents.damaged {
            let bad = seg.path.with_extension("bad");
            let _ = fs::rename(&seg.path, &bad);
            let damaged = seg.rows.minus(&good);
            contents.damaged_rows = damaged.total();
            self.lose(&damaged);
            warn!(
                "spool: {} is damaged after {} good records; {} rows lost; kept as {}",
                seg.path.display(),
                contents.records.len(),
                contents.damaged_rows,
                bad.display()
            );
            seg.path = bad;
        }
        seg.rows = good;
        let mut inner = self.lock();
        if let Some(r) = inner.replaying.as_mut() {
            if r.evicted {
                // Dropped for room while it was read: its rows are counted already.
                drop(inner);
                return self.stopped_evicted();
            }
            r.seg = seg.clone();
            r.quarantined = contents.damaged.then_some(contents.good_len as u64);
        }
        Some((seg, contents))
    }

    fn stopped_evicted(&self) -> Option<(Segment, Contents)> {
        self.lock().replaying = None;
        self.publish();
        None
    }

    /// About to send `record` of the segment held for replay: false when the segment was
    /// dropped for room meanwhile (its rows are counted as lost; stop).
    pub fn begin(&self, record: &Record) -> bool {
        let mut inner = self.lock();
        match inner.replaying.as_mut() {
            Some(r) if !r.evicted => {
                r.in_flight = TableRows::of(record.table.as_deref(), record.rows);
                true
            }
            _ => {
                inner.replaying = None;
                drop(inner);
                self.publish();
                false
            }
        }
    }

    /// How the record [`Spool::begin`] announced went.
    pub fn finish(&self, record: &Record, how: Replayed) {
        let mut inner = self.lock();
        let Some(r) = inner.replaying.as_mut() else {
            return;
        };
        r.in_flight = TableRows::default();
        let table = self.counters_of(record.table.as_deref());
        match how {
            Replayed::Written => {
                Counters::add(&table.spool_replayed, record.rows);
            }
            Replayed::Refused => Counters::add(&table.spool_lost, record.rows),
            Replayed::Failed => {
                if r.evicted {
                    Counters::add(&table.spool_lost, record.rows);
                }
                return;
            }
        }
        r.done.add(record.table.as_deref(), record.rows);
        if !r.evicted {
            // Marked done in place: a restart resumes after it. Not synced: a power loss
            // may replay it once more.
            let marked = OpenOptions::new()
                .write(true)
                .open(&r.seg.path)
                .and_then(|f| f.write_all_at(&DONE.to_le_bytes(), record.at));
            if let Err(e) = marked {
                self.failed.warn(format_args!(
                    "spool: cannot mark a record of {} done ({e}); it may be sent again after a restart",
                    r.seg.path.display()
                ));
            }
        }
    }

    /// Every record of the segment held for replay is done: delete it (a quarantined one
    /// is kept, counted in the limit).
    pub fn done(&self) {
        let mut inner = self.lock();
        if let Some(r) = inner.replaying.take()
            && !r.evicted
        {
            if r.quarantined.is_some() {
                inner.bad.push_back((r.seg.path, r.seg.bytes));
                while inner.bad.len() > MAX_BAD_FILES {
                    if let Some((path, bytes)) = inner.bad.pop_front() {
                        let _ = fs::remove_file(&path);
                        inner.bytes -= bytes.min(inner.bytes);
                    }
                }
            } else {
                let _ = fs::remove_file(&r.seg.path);
                inner.bytes -= r.seg.bytes.min(inner.bytes);
            }
        }
        drop(inner);
        self.publish();
    }

    /// Replay stopped before the end of the segment: it stays on disk, first in line. Its
    /// done records are marked, so they are not sent again.
    pub fn put_back(&self) {
        let mut inner = self.lock();
        if let Some(r) = inner.replaying.take()
            && !r.evicted
        {
            let mut seg = r.seg;
            seg.rows = seg.rows.minus(&r.done);
            if let Some(good_len) = r.quarantined {
                // Good records remain in a `.bad` file: a segment again, cut before the
                // damage (its rows are counted as lost already, and must not be twice).
                let back = seg_path(&self.dir, seg.seq);
                let cut = OpenOptions::new()
                    .write(true)
                    .open(&seg.path)
                    .and_then(|f| f.set_len(good_len));
                if cut.is_ok() && fs::rename(&seg.path, &back).is_ok() {
                    inner.bytes -= (seg.bytes - good_len.min(seg.bytes)).min(inner.bytes);
                    seg.path = back;
                    seg.bytes = good_len;
                } else {
                    // Kept as it is: its good records are not replayed (counted as lost).
                    self.lose(&seg.rows);
                    inner.bad.push_back((seg.path, seg.bytes));
                    drop(inner);
                    self.publish();
                    return;
                }
            }
            inner.closed.push_front(seg);
        }
        drop(inner);
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(tag: &str, rows: usize) -> RowInsertRequests {
        RowInsertRequests {
            inserts: vec![RowInsertRequest {
                table_name: tag.to_owned(),
                rows: Some(Rows {
                    schema: vec![],
                    rows: vec![Default::default(); rows],
                }),
            }],
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fmx-spool-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn files(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != LOCK_FILE)
            .collect();
        v.sort();
        v
    }

    fn on_disk(d: &Path) -> u64 {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name() != LOCK_FILE)
            .map(|e| e.metadata().unwrap().len())
            .sum()
    }

    /// Replays everything, acknowledging each record; returns (table, rows, database).
    fn replay_all(spool: &Spool) -> Vec<(String, u64, Option<String>)> {
        let mut seen = Vec::new();
        while let Some((_, c)) = spool.take_oldest() {
            for (i, r) in c.records.iter().enumerate() {
                assert!(spool.begin(r));
                seen.push((
                    c.request(i).unwrap().inserts[0].table_name.clone(),
                    r.rows,
                    r.database.clone(),
                ));
                spool.finish(r, Replayed::Written);
            }
            spool.done();
        }
        seen
    }

    #[test]
    fn records_come_back_in_order_and_segments_are_deleted_when_done() {
        let d = dir("order");
        let counters = Arc::new(Counters::default());
        let spool = Spool::open(&d, 1 << 20, Arc::clone(&counters)).unwrap();
        for i in 0..5 {
            spool.append("public", &req(&format!("t{i}"), 3), 3);
        }
        assert_eq!(Counters::get(&counters.spooled), 15);
        assert_eq!(spool.rows(), 15);
        let seen: Vec<(String, u64)> = replay_all(&spool)
            .into_iter()
            .map(|(t, n, _)| (t, n))
            .collect();
        assert_eq!(
            seen,
            (0..5).map(|i| (format!("t{i}"), 3)).collect::<Vec<_>>()
        );
        assert_eq!(Counters::get(&counters.spool_replayed), 15);
        assert_eq!((spool.bytes(), spool.rows()), (0, 0));
        assert!(spool.take_oldest().is_none(), "nothing left to replay");
        assert!(files(&d).is_empty());
        drop(spool);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_later_run_replays_what_an_earlier_one_left() {
        let d = dir("restart");
        {
            let spool = Spool::open(&d, 1 << 20, Arc::default()).unwrap();
            spool.append("public", &req("a", 2), 2);
            spool.append("public", &req("b", 4), 4);
            // no sync: as after kill -9, the data was written with write(2)
        }
        let spool = Spool::open(&d, 1 << 20, Arc::default()).unwrap();
        assert_eq!(spool.rows(), 6);
        let (_, c) = spool.take_oldest().unwrap();
        assert_eq!(c.rows_from(0), 6);
        drop(spool);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn each_record_keeps_its_database_and_table() {
        let d = dir("target");
        let spool = Spool::open(&d, 1 << 20, Arc::default()).unwrap();
        spool.append("public", &req("packet_data", 1), 1);
        spool.append("db2", &req("t_mix", 2), 2);
        assert_eq!(
            replay_all(&spool),
            vec![
                ("packet_data".into(), 1, Some("public".into())),
                ("t_mix".into(), 2, Some("db2".into())),
            ]
        );
        drop(spool);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn first_format_records_are_still_replayed() {
        let d = dir("v1");
        fs::create_dir_all(&d).unwrap();
        let payload = req("old", 3).encode_to_vec();
        let mut rec = Vec::new();
        for w in [MAGIC_V1, payload.len() as u32, crc32fast::hash(&payload), 3] {
            rec.extend_from_slice(&w.to_le_bytes());
        }
        rec.extend_from_slice(&payload);
        fs::write(seg_path(&d, 7), &rec).unwrap();
        let spool = Spool::open(&d, 1 << 20, Arc::default()).unwrap();
        assert_eq!(replay_all(&spool), vec![("old".into(), 3, None)]);
        drop(spool);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_second_spool_on_the_same_directory_is_refused_naming_the_holder() {
        let d = dir("lock");
        let first = Spool::open(&d, 1 << 20, Arc::default()).unwrap();
        let Err(e) = Spool::open(&d, 1 << 20, Arc::default()) else {
            panic!("opened twice")
        };
        let msg = e.to_string();
        assert!(
            msg.contains(&d.display().to_string())
                && msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        Spool::open(&d, 1 << 20, Arc::default()).expect("free again once the first is gone");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_restart_during_replay_resumes_after_the_last_acknowledged_record() {
        let d = dir("resume");
        {
            let spool = Spool::open(&d, 1 << 20, Arc::default()).unwrap();
            for i in 0..4 {
                spool.append("public", &req(&format!("t{i}"), 1), 1);
            }
            let (_, c) = spool.take_oldest().unwrap();
            for r in &c.records[..3] {
                assert!(spool.begin(r));
                spool.finish(r, Replayed::Written);
            }
            // killed here: no put_back, no done
        }
        let spool = Spool::open(&d, 1 << 20, Arc::default()).unwrap();
        assert_eq!(spool.rows(), 1);
        let tables: Vec<String> = replay_all(&spool).into_iter().map(|t| t.0).collect();
        assert_eq!(tables, ["t3"]);
        drop(spool);
        fs::remove_dir_all(d).unwrap();
    }

    /// A segment of four 10-row records in `d`, the last cut inside its payload (as by a
    /// power loss); its path.
    fn torn_segment(d: &Path) -> PathBuf {
        {
            let spool = Spool::open(d, 1 << 20, Arc::default()).unwrap();
            for i in 0..4 {
                spool.append("public", &req(&format!("t{i}"), 10), 10);
            }
        }
        let path = seg_path(d, 0);
        let len = fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 7).unwrap();
        path
    }

    #[test]
    fn a_segment_torn_mid_record_gives_its_good_records_and_counts_the_rest() {
        let d = dir("torn");
        let counters = Arc::new(Counters::default());
        let path = torn_segment(&d);
        let spool = Spool::open(&d, 1 << 20, Arc::clone(&counters)).unwrap();
        let (_, c) = spool.take_oldest().unwrap();
        assert!(c.damaged);
        assert_eq!(c.records.len(), 3);
        assert_eq!(c.damaged_rows, 10);
        assert_eq!(Counters::get(&counters.spool_lost), 10);
        spool.done();
        assert!(path.with_extension("bad").exists(), "quarantined");
        assert_eq!(spool.bytes(), on_disk(&d), "the .bad file counts");
        drop(spool);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_damaged_segment_put_back_is_not_counted_twice() {
        let d = dir("torn-back");
        let counters = Arc::new(Counters::default());
        torn_segment(&d);
        {
            let spool = Spool::open(&d, 1 << 20, Arc::clone(&counters)).unwrap();
            let (_, c) = spool.take_oldest().unwrap();
            assert!(spool.begin(&c.records[0]));
            spool.finish(&c.records[0], Replayed::Written);
            spool.put_back(); // shutdown during the replay
            assert_eq!(spool.rows(), 20);
            assert_eq!(spool.bytes(), on_disk(&d));
        }
        assert_eq!(Counters::get(&counters.spool_lost), 10);
        let again = Arc::new(Counters::default());
        let spool = Spool::open(&d, 1 << 20, Arc::clone(&again)).unwrap();
        let tables: Vec<String> = replay_all(&spool).into_iter().map(|t| t.0).collect();
        assert_eq!(tables, ["t1", "t2"]);
        assert_eq!(
            Counters::get(&again.spool_lost),
            0,
            "the damage was counted once"
        );
        drop(spool);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn garbage_in_a_segment_is_detected_by_the_checksum() {
        let good = {
            let d = dir("crc");
            let spool = Spool::open(&d, 1 << 20, Arc::default()).unwrap();
            spool.append("public", &req("a", 1), 1);
            spool.append("public", &req("b", 1), 1);
            spool.sync();
            let b = fs::read(seg_path(&d, 0)).unwrap();
            drop(spool);
            fs::remove_dir_all(d).unwrap();
            b
        };
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let c = parse_segment(bad);
        assert_eq!((c.records.len(), c.damaged, c.damaged_rows), (1, true, 1));
        assert_eq!(parse_segment(good).records.len(), 2);
        assert!(parse_segment(vec![1, 2, 3]).damaged);
    }

    #[test]
    fn the_size_limit_holds_the_oldest_go_first_and_every_row_is_counted() {
        let d = dir("limit");
        let counters = Arc::new(Counters::default());
        let max = 64 * 1024;
        let spool = Spool::open(&d, max, Arc::clone(&counters)).unwrap();
        let mut appended = 0;
        let mut high = 0;
        // A replay is under way the whole time: its segment may be dropped too.
        let mut held: Option<Contents> = None;
        for i in 0..2_000 {
            spool.append("public", &req(&format!("t{i:05}"), 7), 7);
            appended += 7;
            if held.is_none() {
                held = spool.take_oldest().map(|(_, c)| c);
            }
            let disk = on_disk(&d);
            assert!(disk <= max, "{disk} bytes on disk > {max}");
            assert_eq!(spool.bytes(), disk);
            high = high.max(disk);
        }
        assert!(high > max * 9 / 10, "only {high} of {max} bytes used");
        assert!(
            !spool.begin(&held.as_ref().unwrap().records[0]),
            "the held segment was dropped for room"
        );
        let mut first = None;
        let mut kept = 0;
        while let Some((_, c)) = spool.take_oldest() {
            first.get_or_insert_with(|| c.request(0).unwrap().inserts[0].table_name.clone());
            for r in &c.records {
                assert!(spool.begin(r));
                spool.finish(r, Replayed::Written);
                kept += r.rows;
            }
            spool.done();
        }
        let lost = Counters::get(&counters.spool_lost);
        assert!(lost > 0);
        assert_eq!(kept + lost, appended, "every row kept or counted as lost");
        assert_eq!(Counters::get(&counters.spooled), appended);
        assert_eq!(Counters::get(&counters.spool_replayed), kept);
        // What is left is the newest rows, without a gap: the oldest went first.
        assert_eq!(first.unwrap(), format!("t{:05}", 2_000 - kept / 7));
        drop(spool);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_record_evicted_while_in_flight_is_counted_once() {
        let d = dir("inflight");
        let counters = Arc::new(Counters::default());
        let spool = Spool::open(&d, 64 * 1024, Arc::clone(&counters)).unwrap();
        spool.append("public", &req("a", 5), 5);
        spool.append("public", &req("b", 5), 5);
        let (_, c) = spool.take_oldest().unwrap();
        assert!(spool.begin(&c.records[0]));
        // Room is needed while "a" is in flight: the held segment goes.
        for i in 0..2_000 {
            spool.append("public", &req(&format!("n{i}"), 1), 1);
        }
        spool.finish(&c.records[0], Replayed::Written);
        assert!(!spool.begin(&c.records[1]), "b is gone with its segment");
        assert_eq!(Counters::get(&counters.spool_replayed), 5);
        let mut kept = 0;
        while let Some((_, c)) = spool.take_oldest() {
            for r in &c.records {
                assert!(spool.begin(r));
                spool.finish(r, Replayed::Written);
                kept += r.rows;
            }
            spool.done();
        }
        let lost = Counters::get(&counters.spool_lost);
        assert_eq!(5 + kept + lost, 2_010, "replayed + kept + lost = appended");
        drop(spool);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_large_insert_is_split_into_records_that_keep_every_row_in_order() {
        let d = dir("split");
        let counters = Arc::new(Counters::default());
        let spool = Spool::open(&d, 64 * 1024, Arc::clone(&counters)).unwrap();
        let mut big = req("t", 0);
        if let Some(rows) = big.inserts[0].rows.as_mut() {
            rows.rows = (0..4_000)
                .map(|i| greptimedb_ingester::api::v1::Row {
                    values: vec![greptimedb_ingester::api::v1::Value {
                        value_data: Some(greptimedb_ingester::api::v1::value::ValueData::U32Value(
                            i,
                        )),
                    }],
                })
                .collect();
        }
        assert!(big.encoded_len() > 4096);
        spool.append("public", &big, 4_000);
        assert_eq!(Counters::get(&counters.spooled), 4_000);
        let mut values = Vec::new();
        let mut records = 0;
        while let Some((_, c)) = spool.take_oldest() {
            for (i, r) in c.records.iter().enumerate() {
                assert!(spool.begin(r));
                let part = c.request(i).unwrap();
                let rows = &part.inserts[0].rows.as_ref().unwrap().rows;
                assert_eq!(rows.len() as u64, r.rows);
                values.extend(rows.iter().map(|row| row.values[0].value_data.clone()));
                records += 1;
                spool.finish(r, Replayed::Written);
            }
            spool.done();
        }
        assert!(records > 1, "split");
        let want: Vec<_> = (0..4_000)
            .map(|i| Some(greptimedb_ingester::api::v1::value::ValueData::U32Value(i)))
            .collect();
        assert_eq!(values, want);
        drop(spool);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn the_table_read_from_a_record_s_first_bytes_is_the_one_its_insert_names() {
        let long = "t".repeat(300);
        for table in ["packet_data", "flow_data", "", long.as_str()] {
            for rows in [0, 1, 50] {
                let bytes = req(table, rows).encode_to_vec();
                assert_eq!(table_in_prefix(&bytes).as_deref(), Some(table));
                let cut = &bytes[..bytes.len().min(1 + 2 + 1 + 2 + table.len())];
                assert_eq!(table_in_prefix(cut).as_deref(), Some(table), "prefix only");
            }
        }
        let none = RowInsertRequests { inserts: vec![] }.encode_to_vec();
        assert_eq!(table_in_prefix(&none), None);
        assert_eq!(table_in_prefix(&[0x0a, 0x05, 0x0a]), None, "torn");
    }

    /// Appends `n` records alternating between `packet_data` (3 rows) and `flow_data`
    /// (5 rows).
    fn two_tables(spool: &Spool, n: usize) -> TableRows {
        let mut sent = TableRows::default();
        for i in 0..n {
            let (t, rows) = if i % 2 == 0 {
                ("packet_data", 3)
            } else {
                ("flow_data", 5)
            };
            spool.append("public", &req(t, rows), rows as u64);
            sent.add(Some(t), rows as u64);
        }
        sent
    }

    /// Per table: (spooled, replayed, lost) of the spool's own counters (`packet_data`) and
    /// the flow table's.
    fn balance(own: &Counters, flows: &Counters) -> [(u64, u64, u64); 2] {
        [own, flows].map(|c| {
            (
                Counters::get(&c.spooled),
                Counters::get(&c.spool_replayed),
                Counters::get(&c.spool_lost),
            )
        })
    }

    #[test]
    fn rows_dropped_for_room_count_against_their_own_table() {
        let d = dir("per-table-room");
        let own = Arc::new(Counters::default());
        let flows = Arc::new(Counters::default());
        let spool = Spool::open(&d, 64 * 1024, Arc::clone(&own)).unwrap();
        spool.add_table("flow_data", Arc::clone(&flows));
        // A replay is under way: its segment is dropped too, with a record in flight.
        spool.append("public", &req("flow_data", 7), 7);
        spool.append("public", &req("packet_data", 2), 2);
        let (_, held) = spool.take_oldest().unwrap();
        assert!(spool.begin(&held.records[0]));
        let sent = two_tables(&spool, 4_000);
        spool.finish(&held.records[0], Replayed::Written);
        assert!(!spool.begin(&held.records[1]), "dropped for room");
        let mut kept = TableRows::default();
        while let Some((_, c)) = spool.take_oldest() {
            for r in &c.records {
                assert!(spool.begin(r));
                spool.finish(r, Replayed::Written);
                kept.add(r.table.as_deref(), r.rows);
            }
            spool.done();
        }
        let [p, f] = balance(&own, &flows);
        assert!(p.2 > 0 && f.2 > 0, "both tables lost rows: {p:?} {f:?}");
        assert_eq!(p.0, sent.get(Some("packet_data")) + 2);
        assert_eq!(f.0, sent.get(Some("flow_data")) + 7);
        assert_eq!(
            (p.1, f.1),
            (
                kept.get(Some("packet_data")),
                kept.get(Some("flow_data")) + 7
            )
        );
        // Each table balances on its own: spooled = replayed + lost (nothing left on disk).
        assert_eq!(p.0, p.1 + p.2, "packet_data {p:?}");
        assert_eq!(f.0, f.1 + f.2, "flow_data {f:?}");
        drop(spool);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_damaged_or_evicted_segment_of_an_earlier_run_counts_against_its_own_tables() {
        let d = dir("per-table-restart");
        {
            let spool = Spool::open(&d, 1 << 20, Arc::default()).unwrap();
            spool.add_table("flow_data", Arc::default());
            // 4 records: packet 3, flow 5, packet 3, flow 5; the last one torn below.
            two_tables(&spool, 4);
            spool.sync();
            for i in 0..6 {
                spool.append(
                    "public",
                    &req(if i % 2 == 0 { "flow_data" } else { "x" }, 1),
                    1,
                );
            }
        }
        let path = seg_path(&d, 0);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let own = Arc::new(Counters::default());
        let flows = Arc::new(Counters::default());
        let spool = Spool::open(&d, 1 << 20, Arc::clone(&own)).unwrap();
        spool.add_table("flow_data", Arc::clone(&flows));
        assert_eq!(spool.rows(), 16 + 6);
        let (_, c) = spool.take_oldest().unwrap();
        assert_eq!(c.damaged_rows, 5);
        assert_eq!(balance(&own, &flows)[1].2, 5, "the torn flow record");
        assert_eq!(balance(&own, &flows)[0].2, 0);
        spool.done();
        // The second segment, dropped for room by a tiny limit: 3 flow rows, 3 other.
        drop(spool);
        let own = Arc::new(Counters::default());
        let flows = Arc::new(Counters::default());
        let spool = Spool::open(&d, 4096, Arc::clone(&own)).unwrap();
        spool.add_table("flow_data", Arc::clone(&flows));
        let big = (0..40).fold(String::new(), |s, _| s + "y");
        let mut r = req(&big, 1);
        if let Some(rows) = r.inserts[0].rows.as_mut() {
            rows.rows = vec![
                greptimedb_ingester::api::v1::Row {
                    values: vec![greptimedb_ingester::api::v1::Value {
                        value_data: Some(
                            greptimedb_ingester::api::v1::value::ValueData::StringValue(
                                "z".repeat(1500),
                            ),
                        ),
                    }],
                };
                1
            ];
        }
        for _ in 0..4 {
            spool.append("public", &r, 1);
        }
        assert_eq!(Counters::get(&flows.spool_lost), 3, "evicted flow rows");
        assert!(Counters::get(&own.spool_lost) >= 3, "and the others");
        drop(spool);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn stale_tmp_files_go_and_bad_files_are_bounded() {
        let d = dir("leftovers");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("seg-0000000000000001.tmp"), b"").unwrap();
        for i in 0..(MAX_BAD_FILES as u64 + 3) {
            fs::write(d.join(format!("seg-{i:016}.bad")), [0u8; 100]).unwrap();
        }
        let spool = Spool::open(&d, 1 << 20, Arc::default()).unwrap();
        let left = files(&d);
        assert_eq!(left.len(), MAX_BAD_FILES, "{left:?}");
        assert!(left.iter().all(|f| f.ends_with(".bad")));
        assert_eq!(spool.bytes(), on_disk(&d));
        // New segments do not reuse a quarantined file's number.
        spool.append("public", &req("a", 1), 1);
        spool.sync();
        assert!(files(&d).contains(&format!("seg-{:016}.spool", MAX_BAD_FILES as u64 + 3)));
        drop(spool);
        fs::remove_dir_all(d).unwrap();
    }
}
