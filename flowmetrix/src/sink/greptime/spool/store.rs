//! The spool's store: the segments on disk, appends, and the size limit. When the spool
//! would exceed it the oldest data is dropped first — quarantined files, then the oldest
//! segment, the one being replayed included — and its rows counted as lost. A failed
//! append (disk full) leaves the segment as it was.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use greptimedb_ingester::api::v1::{RowInsertRequest, RowInsertRequests, Rows};
use prost::Message as _;
use tracing::warn;

use super::{
    accounting::{RowsPerTable, TableCounters},
    format::{columns_record, pending_rows, record_bytes, seg_path, seq_of},
    lock::{SpoolError, lock},
};
use crate::{metrics::Counters, throttle::Throttled};

/// Quarantined (`.bad`) files kept for inspection; older ones are deleted.
pub const MAX_BAD_FILES: usize = 4;

/// A closed segment waiting to be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    /// Bytes of it that are ours (a failed append may have left more behind).
    pub bytes: u64,
    /// Rows in records not yet done, per table.
    pub rows: RowsPerTable,
}

#[derive(Debug)]
pub struct Active {
    pub seg: Segment,
    file: File,
}

/// The segment the replayer holds.
#[derive(Debug)]
pub struct Replaying {
    pub seg: Segment,
    /// Rows of it done (written or refused).
    pub done: RowsPerTable,
    /// Rows of the record being sent now.
    pub in_flight: RowsPerTable,
    /// Dropped for room while being replayed: the replayer stops at its next record.
    pub evicted: bool,
    /// Renamed `.bad`: kept (not deleted) once replayed; its records end here.
    pub quarantined: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Inner {
    pub closed: VecDeque<Segment>,
    pub active: Option<Active>,
    pub replaying: Option<Replaying>,
    /// Quarantined files, oldest first, with their sizes.
    pub bad: VecDeque<(PathBuf, u64)>,
    pub bytes: u64,
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

/// A bounded on-disk spool of GreptimeDB inserts (see the module `spool`).
pub struct Spool {
    pub(super) dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    inner: Mutex<Inner>,
    /// The spool's own counters, and the tables counted apart ([`Spool::add_table`]).
    pub(super) counters: TableCounters,
    /// Held for the spool's life: the directory lock.
    _lock: File,
    full: Throttled,
    pub(super) failed: Throttled,
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
        let spool = Self {
            dir: dir.to_owned(),
            max_bytes,
            // Several segments fit in the limit, so dropping the oldest frees room.
            // Small enough to read back whole without a memory spike.
            segment_bytes: (max_bytes / 8).clamp(4096, 8 << 20),
            inner: Mutex::new(inner),
            counters: TableCounters::new(counters),
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn publish(&self) {
        let inner = self.lock();
        let segments = inner.closed.len()
            + inner.bad.len()
            + usize::from(inner.active.is_some())
            + usize::from(inner.replaying.as_ref().is_some_and(|r| !r.evicted));
        Counters::set(&self.counters.own().spool_bytes, inner.bytes);
        Counters::set(&self.counters.own().spool_segments, segments as u64);
    }

    /// Bytes on disk now.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Rows on disk not yet replayed.
    pub fn rows(&self) -> u64 {
        self.lock().rows()
    }

    /// Counts the spooled, replayed and lost rows of inserts for `table` in `counters`
    /// instead of the spool's own (which keep the gauges, and the rows of every other
    /// table, and of records whose table cannot be read). Rows lost in bulk — a segment
    /// dropped for room or damaged — are counted against their own tables too.
    pub fn add_table(&self, table: &str, counters: Arc<Counters>) {
        self.counters.add(table, counters);
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
        self.append_record(table_name, rows, || record_bytes(database, req, rows));
    }

    /// The most bytes one record should hold: a batch larger than that is cut (see
    /// [`Spool::append`]).
    pub fn part_limit(&self) -> usize {
        (self.segment_bytes / 2) as usize
    }

    /// Appends one columnar record (`FMX3`): `rows` rows of `table` for `database`, as the
    /// Arrow IPC stream `ipc` (at most [`Spool::part_limit`] bytes, as
    /// [`super::columns::ipc_parts`] cuts it). Never fails the caller, as [`Spool::append`].
    pub fn append_columns(&self, database: &str, table: &str, ipc: &[u8], rows: u64) {
        self.append_record(Some(table), rows, || {
            columns_record(database, table, ipc, rows)
        });
    }

    /// Counts `rows` of `table_name` as spooled and appends the record `record` makes, with
    /// one write; rows that cannot be kept are counted as lost.
    fn append_record(&self, table_name: Option<&str>, rows: u64, record: impl FnOnce() -> Vec<u8>) {
        let table = self.counters.of(table_name);
        Counters::add(&table.spooled, rows);
        let lose = |rows| Counters::add(&table.spool_lost, rows);
        let record = record();
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
                            rows: RowsPerTable::default(),
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
                (path, bytes, RowsPerTable::default())
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
            self.counters.lose(&rows);
            self.full.warn(format_args!(
                "spool full ({} bytes): dropped the oldest data, {} rows lost",
                self.max_bytes,
                rows.total()
            ));
        }
    }

    pub(super) fn close_active(inner: &mut Inner) {
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
}
