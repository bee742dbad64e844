//! Replay: the oldest segment is read back and its records sent one by one. Each record
//! GreptimeDB acknowledged (or refused for good) is marked done in place (its magic becomes
//! `FMXD`), so a collector killed during a replay resumes after the last acknowledged
//! record; a segment is deleted once every record is done. A torn or corrupt record (power
//! loss mid-write) is found by its checksum: the records before it are replayed, the rest
//! counted, the file quarantined (renamed `.bad`, counted in the limit, at most
//! [`MAX_BAD_FILES`] kept).

use std::{
    fs::{self, OpenOptions},
    os::unix::fs::FileExt as _,
};

use tracing::warn;

use super::{
    accounting::RowsPerTable,
    format::{Contents, DONE, Record, parse_segment, seg_path},
    store::{MAX_BAD_FILES, Replaying, Segment, Spool},
};
use crate::metrics::Counters;

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

impl Spool {
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
                done: RowsPerTable::default(),
                in_flight: RowsPerTable::default(),
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
                Contents::unreadable()
            }
        };
        // What the headers said may differ from what the checksums allow.
        let good = contents.table_rows();
        if contents.damaged {
            let bad = seg.path.with_extension("bad");
            let _ = fs::rename(&seg.path, &bad);
            let damaged = seg.rows.minus(&good);
            contents.damaged_rows = damaged.total();
            self.counters.lose(&damaged);
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
                r.in_flight = RowsPerTable::of(record.table.as_deref(), record.rows);
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
        r.in_flight = RowsPerTable::default();
        let table = self.counters.of(record.table.as_deref());
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
                    self.counters.lose(&seg.rows);
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
