//! A bounded on-disk spool of GreptimeDB inserts, for when GreptimeDB is away or slower
//! than the capture.
//!
//! Inserts are appended to segment files (`seg-<seq>.spool`) as checksummed records:
//! `magic u32 | payload length u32 | crc32 u32 | rows u32 | payload` (little-endian), the
//! payload being the protobuf `RowInsertRequests` as the ingester sends it. Segments are
//! replayed oldest first and deleted only once GreptimeDB acknowledged all their records.
//! When the spool would exceed its size limit the oldest segment is dropped and its rows
//! counted as lost. A torn or corrupt record (power loss mid-write) is found by its
//! checksum: the records before it are replayed, the rest counted, the file quarantined
//! (renamed `.bad`).

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use greptimedb_ingester::api::v1::RowInsertRequests;
use prost::Message as _;
use tracing::{info, warn};

use crate::metrics::Counters;

const MAGIC: u32 = 0x464d_5831; // "FMX1"
const HEADER: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {path}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("spool file {path}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A closed segment waiting to be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    pub bytes: u64,
    pub rows: u64,
}

#[derive(Debug)]
struct Active {
    seg: Segment,
    file: File,
}

#[derive(Debug, Default)]
struct Inner {
    closed: VecDeque<Segment>,
    active: Option<Active>,
    /// Taken for replay: on disk (and counted) until acknowledged.
    replaying: Option<Segment>,
    bytes: u64,
    next_seq: u64,
}

/// What one segment holds, as read back: its bytes and where its good records are, each
/// decoded only when it is sent (a decoded insert is several times its encoded size).
#[derive(Debug, Default)]
pub struct Contents {
    bytes: Vec<u8>,
    /// Good records, in order: payload range and row count.
    pub records: Vec<(std::ops::Range<usize>, u64)>,
    /// Rows in records that were damaged (torn, corrupt) and cannot be replayed.
    pub damaged_rows: u64,
    pub damaged: bool,
}

impl Contents {
    /// The insert of good record `i`.
    pub fn request(&self, i: usize) -> Option<RowInsertRequests> {
        let (range, _) = self.records.get(i)?;
        RowInsertRequests::decode(self.bytes.get(range.clone())?).ok()
    }

    /// Rows in the good records from `i` on.
    pub fn rows_from(&self, i: usize) -> u64 {
        self.records.iter().skip(i).map(|r| r.1).sum()
    }
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    inner: Mutex<Inner>,
    counters: Arc<Counters>,
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:016}.spool"))
}

/// One record: header and protobuf payload.
fn record_bytes(req: &RowInsertRequests, rows: u64) -> Vec<u8> {
    let payload = req.encode_to_vec();
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

/// Parses one segment's bytes into its good records and what was damaged.
pub fn parse_segment(bytes: Vec<u8>) -> Contents {
    let mut out = Contents::default();
    let mut at = 0;
    while at < bytes.len() {
        let word = |i: usize| {
            bytes
                .get(at + i * 4..at + i * 4 + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let (Some(magic), Some(len), Some(crc), Some(rows)) = (word(0), word(1), word(2), word(3))
        else {
            out.damaged = true; // a torn header: its rows are unknown
            break;
        };
        let range = at + HEADER..at + HEADER + len as usize;
        let valid = magic == MAGIC
            && bytes
                .get(range.clone())
                .is_some_and(|p| crc32fast::hash(p) == crc && RowInsertRequests::decode(p).is_ok());
        if !valid {
            out.damaged = true;
            // The header may be intact (a torn payload): count its rows.
            if magic == MAGIC {
                out.damaged_rows += u64::from(rows);
            }
            break;
        }
        at = range.end;
        out.records.push((range, u64::from(rows)));
    }
    out.bytes = bytes;
    out
}

impl Spool {
    /// Opens (creating) the spool in `dir`, taking up segments an earlier run left.
    pub fn open(dir: &Path, max_bytes: u64, counters: Arc<Counters>) -> Result<Self, SpoolError> {
        let dir_err = |source| SpoolError::Dir {
            path: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(dir_err)?;
        let mut found: Vec<Segment> = Vec::new();
        for entry in fs::read_dir(dir).map_err(dir_err)? {
            let path = entry.map_err(dir_err)?.path();
            let Some(seq) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("seg-")?.strip_suffix(".spool"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            found.push(Segment {
                seq,
                path,
                bytes,
                rows: 0, // counted when read back
            });
        }
        found.sort_by_key(|s| s.seq);
        let inner = Inner {
            bytes: found.iter().map(|s| s.bytes).sum(),
            next_seq: found.last().map_or(0, |s| s.seq + 1),
            closed: found.into(),
            ..Default::default()
        };
        if !inner.closed.is_empty() {
            info!(
                "spool {}: {} segment(s), {} bytes from an earlier run to replay",
                dir.display(),
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
        };
        spool.publish();
        Ok(spool)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self) {
        let inner = self.lock();
        let segments = inner.closed.len()
            + usize::from(inner.active.is_some())
            + usize::from(inner.replaying.is_some());
        Counters::set(&self.counters.spool_bytes, inner.bytes);
        Counters::set(&self.counters.spool_segments, segments as u64);
    }

    /// Bytes on disk now.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Appends one insert of `rows` rows. Never fails the caller: a record that cannot be
    /// written is counted as lost.
    pub fn append(&self, req: &RowInsertRequests, rows: u64) {
        let record = record_bytes(req, rows);
        let len = record.len() as u64;
        if len > self.max_bytes {
            warn!("spool: a {len}-byte batch is larger than the whole spool; {rows} rows lost");
            Counters::add(&self.counters.spool_lost, rows);
            return;
        }
        let mut inner = self.lock();
        // Make room: drop the oldest closed segments (never the one being replayed).
        while inner.bytes + len > self.max_bytes {
            let Some(oldest) = inner.closed.pop_front() else {
                break;
            };
            let rows = if oldest.rows > 0 {
                oldest.rows
            } else {
                fs::read(&oldest.path).map_or(0, |b| {
                    let c = parse_segment(b);
                    c.rows_from(0) + c.damaged_rows
                })
            };
            let _ = fs::remove_file(&oldest.path);
            inner.bytes -= oldest.bytes.min(inner.bytes);
            Counters::add(&self.counters.spool_lost, rows);
            warn!(
                "spool full ({} bytes): dropped the oldest segment, {rows} rows lost",
                self.max_bytes
            );
        }
        if inner.bytes + len > self.max_bytes {
            drop(inner);
            warn!("spool full: {rows} rows lost");
            Counters::add(&self.counters.spool_lost, rows);
            return;
        }
        if inner.active.is_none() {
            let seq = inner.next_seq;
            inner.next_seq += 1;
            let path = seg_path(&self.dir, seq);
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(file) => {
                    inner.active = Some(Active {
                        seg: Segment {
                            seq,
                            path,
                            bytes: 0,
                            rows: 0,
                        },
                        file,
                    });
                }
                Err(e) => {
                    drop(inner);
                    warn!(
                        "spool: cannot create {}: {e}; {rows} rows lost",
                        path.display()
                    );
                    Counters::add(&self.counters.spool_lost, rows);
                    return;
                }
            }
        }
        let Some(active) = inner.active.as_mut() else {
            return;
        };
        if let Err(e) = active.file.write_all(&record) {
            let path = active.seg.path.display().to_string();
            drop(inner);
            warn!("spool: cannot write {path}: {e}; {rows} rows lost");
            Counters::add(&self.counters.spool_lost, rows);
            return;
        }
        active.seg.bytes += len;
        active.seg.rows += rows;
        let full = active.seg.bytes >= self.segment_bytes;
        inner.bytes += len;
        Counters::add(&self.counters.spooled, rows);
        if full {
            Self::close_active(&mut inner);
        }
        drop(inner);
        self.publish();
    }

    fn close_active(inner: &mut Inner) {
        if let Some(active) = inner.active.take() {
            let _ = active.file.sync_all();
            if active.seg.rows > 0 {
                inner.closed.push_back(active.seg);
            } else {
                let _ = fs::remove_file(&active.seg.path);
            }
        }
    }

    /// Writes what is buffered to disk (at exit).
    pub fn sync(&self) {
        let mut inner = self.lock();
        Self::close_active(&mut inner);
    }

    /// Takes the oldest segment for replay (closing the active one if it is all there
    /// is), and reads it. Damage is counted and the file quarantined.
    pub fn take_oldest(&self) -> Option<(Segment, Contents)> {
        let seg = {
            let mut inner = self.lock();
            if inner.replaying.is_some() {
                return None;
            }
            if inner.closed.is_empty() {
                Self::close_active(&mut inner);
            }
            let seg = inner.closed.pop_front()?;
            inner.replaying = Some(seg.clone());
            seg
        };
        let contents = match fs::read(&seg.path) {
            Ok(bytes) => parse_segment(bytes),
            Err(e) => {
                warn!("spool: cannot read {}: {e}", seg.path.display());
                Contents {
                    damaged: true,
                    ..Default::default()
                }
            }
        };
        if contents.damaged {
            let bad = seg.path.with_extension("bad");
            let _ = fs::rename(&seg.path, &bad);
            Counters::add(&self.counters.spool_lost, contents.damaged_rows);
            warn!(
                "spool: {} is damaged after {} good records; {} rows lost; kept as {}",
                seg.path.display(),
                contents.records.len(),
                contents.damaged_rows,
                bad.display()
            );
        }
        Some((seg, contents))
    }

    /// Every record of `seg` was acknowledged: delete it.
    pub fn done(&self, seg: &Segment) {
        let _ = fs::remove_file(&seg.path);
        {
            let mut inner = self.lock();
            inner.replaying = None;
            inner.bytes -= seg.bytes.min(inner.bytes);
        }
        self.publish();
    }

    /// Replay of `seg` stopped at good record `next`: only the records not yet
    /// acknowledged stay on disk, so none is written twice after a restart.
    pub fn keep_rest(&self, mut seg: Segment, contents: &Contents, next: usize) {
        let mut buf = Vec::new();
        let mut rows = 0;
        for (range, n) in contents.records.iter().skip(next) {
            // The record as it was: header and payload.
            buf.extend_from_slice(&contents.bytes[range.start - HEADER..range.end]);
            rows += n;
        }
        if buf.is_empty() {
            self.done(&seg);
            return;
        }
        let tmp = seg.path.with_extension("tmp");
        let written = fs::write(&tmp, &buf)
            .and_then(|()| File::open(&tmp)?.sync_all())
            .and_then(|()| fs::rename(&tmp, &seg.path));
        if let Err(e) = written {
            warn!(
                "spool: cannot rewrite {}: {e}; its records may be sent again",
                seg.path.display()
            );
        } else {
            let mut inner = self.lock();
            inner.bytes = inner.bytes - seg.bytes.min(inner.bytes) + buf.len() as u64;
            seg.bytes = buf.len() as u64;
            seg.rows = rows;
        }
        self.put_back(seg);
        self.publish();
    }

    /// Replay of `seg` stopped before the end: it stays on disk for later.
    pub fn put_back(&self, seg: Segment) {
        let mut inner = self.lock();
        inner.replaying = None;
        if seg.path.exists() {
            inner.closed.push_front(seg);
        }
    }
}

#[cfg(test)]
mod tests {
    use greptimedb_ingester::api::v1::{RowInsertRequest, Rows};

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

    #[test]
    fn records_come_back_in_order_and_segments_are_deleted_when_done() {
        let d = dir("order");
        let counters = Arc::new(Counters::default());
        let spool = Spool::open(&d, 1 << 20, Arc::clone(&counters)).unwrap();
        for i in 0..5 {
            spool.append(&req(&format!("t{i}"), 3), 3);
        }
        assert_eq!(Counters::get(&counters.spooled), 15);
        let mut seen = Vec::new();
        while let Some((seg, c)) = spool.take_oldest() {
            assert!(!c.damaged);
            for (i, (_, n)) in c.records.iter().enumerate() {
                seen.push((c.request(i).unwrap().inserts[0].table_name.clone(), *n));
            }
            spool.done(&seg);
        }
        assert_eq!(
            seen,
            (0..5).map(|i| (format!("t{i}"), 3)).collect::<Vec<_>>()
        );
        assert_eq!(spool.bytes(), 0);
        assert!(spool.take_oldest().is_none(), "nothing left to replay");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_later_run_replays_what_an_earlier_one_left() {
        let d = dir("restart");
        {
            let spool = Spool::open(&d, 1 << 20, Arc::default()).unwrap();
            spool.append(&req("a", 2), 2);
            spool.append(&req("b", 4), 4);
            // no sync: as after kill -9, the data was written with write(2)
        }
        let spool = Spool::open(&d, 1 << 20, Arc::default()).unwrap();
        let (seg, c) = spool.take_oldest().unwrap();
        assert_eq!(c.rows_from(0), 6);
        spool.done(&seg);
        assert!(spool.take_oldest().is_none());
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_segment_torn_mid_record_gives_its_good_records_and_counts_the_rest() {
        let d = dir("torn");
        let counters = Arc::new(Counters::default());
        {
            let spool = Spool::open(&d, 1 << 20, Arc::default()).unwrap();
            for i in 0..4 {
                spool.append(&req(&format!("t{i}"), 10), 10);
            }
        }
        let path = seg_path(&d, 0);
        let len = fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 7).unwrap(); // cut inside the last record's payload
        let spool = Spool::open(&d, 1 << 20, Arc::clone(&counters)).unwrap();
        let (seg, c) = spool.take_oldest().unwrap();
        assert!(c.damaged);
        assert_eq!(c.records.len(), 3);
        assert_eq!(c.damaged_rows, 10);
        assert_eq!(Counters::get(&counters.spool_lost), 10);
        spool.done(&seg);
        assert!(path.with_extension("bad").exists(), "quarantined");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_partly_replayed_segment_keeps_only_the_rest() {
        let d = dir("rest");
        let spool = Spool::open(&d, 1 << 20, Arc::default()).unwrap();
        for i in 0..4 {
            spool.append(&req(&format!("t{i}"), 1), 1);
        }
        let (seg, c) = spool.take_oldest().unwrap();
        spool.keep_rest(seg, &c, 3);
        drop(spool);
        let spool = Spool::open(&d, 1 << 20, Arc::default()).unwrap();
        let (_, c) = spool.take_oldest().unwrap();
        assert_eq!(c.records.len(), 1);
        assert_eq!(c.request(0).unwrap().inserts[0].table_name, "t3");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn garbage_in_a_segment_is_detected_by_the_checksum() {
        let good = {
            let d = dir("crc");
            let spool = Spool::open(&d, 1 << 20, Arc::default()).unwrap();
            spool.append(&req("a", 1), 1);
            spool.append(&req("b", 1), 1);
            spool.sync();
            let b = fs::read(seg_path(&d, 0)).unwrap();
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
    fn the_size_limit_holds_and_dropped_rows_are_counted_exactly() {
        let d = dir("limit");
        let counters = Arc::new(Counters::default());
        let max = 64 * 1024;
        let spool = Spool::open(&d, max, Arc::clone(&counters)).unwrap();
        let mut appended = 0;
        for i in 0..2_000 {
            spool.append(&req(&format!("t{i:05}"), 7), 7);
            appended += 7;
            let on_disk: u64 = fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum();
            assert!(on_disk <= max, "{on_disk} bytes on disk > {max}");
            assert_eq!(spool.bytes(), on_disk);
        }
        let mut kept = 0;
        let mut first = None;
        while let Some((seg, c)) = spool.take_oldest() {
            first.get_or_insert_with(|| c.request(0).unwrap().inserts[0].table_name.clone());
            kept += c.rows_from(0);
            spool.done(&seg);
        }
        let lost = Counters::get(&counters.spool_lost);
        assert!(lost > 0);
        assert_eq!(kept + lost, appended, "every row kept or counted as lost");
        assert_ne!(first.as_deref(), Some("t00000"), "the oldest were dropped");
        fs::remove_dir_all(d).unwrap();
    }
}
