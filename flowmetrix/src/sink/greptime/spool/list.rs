//! What a spool holds, for `flowmetrix spool` and the start-up line: per segment, the rows
//! not yet replayed by database and table, with their oldest and newest timestamps;
//! discarding all of it (`flowmetrix spool --drop`) or sending it to another database
//! (`flowmetrix spool --replay-to DB`), under the directory's lock so that a running
//! collector's spool is never touched.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use greptimedb_ingester::api::v1::{RowInsertRequests, SemanticType, value::ValueData};

use super::{
    format::{parse_segment, seq_of},
    lock::{SpoolError, lock},
};

/// Rows of one database and table in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub segment: String,
    /// `None`: a record of the first format, replayed into the run's own database.
    pub database: Option<String>,
    pub table: Option<String>,
    pub rows: u64,
    /// Nanoseconds since the epoch.
    pub oldest: Option<i64>,
    pub newest: Option<i64>,
}

/// A spool directory's contents.
#[derive(Debug, Default)]
pub struct Listing {
    pub dir: PathBuf,
    pub groups: Vec<Group>,
    /// Segment files (`.spool`) and damaged ones set aside (`.bad`).
    pub segments: usize,
    pub bad: usize,
    pub bytes: u64,
    /// When the oldest segment was last written.
    pub oldest_write: Option<SystemTime>,
}

impl Listing {
    pub fn rows(&self) -> u64 {
        self.groups.iter().map(|g| g.rows).sum()
    }
}

/// The spool files of `dir`: (path, is it a damaged one), oldest first. None when `dir`
/// does not exist.
fn files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf, bool)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if let Some(seq) = seq_of(&path, ".spool") {
            out.push((seq, path, false));
        } else if let Some(seq) = seq_of(&path, ".bad") {
            out.push((seq, path, true));
        }
    }
    out.sort_by_key(|f| f.0);
    Ok(out)
}

/// When the oldest segment of `dir` was last written (from the files' times alone).
pub fn oldest_write(dir: &Path) -> Option<SystemTime> {
    files(dir)
        .ok()?
        .iter()
        .filter(|(_, _, bad)| !bad)
        .filter_map(|(_, p, _)| fs::metadata(p).and_then(|m| m.modified()).ok())
        .min()
}

/// The start-up line of a spool an earlier run left: `rows` rows, `segments` files, to be
/// replayed into `output`.
pub fn earlier_run(dir: &Path, rows: u64, output: &str) -> String {
    let written = oldest_write(dir)
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or(String::new(), |d| {
            format!(", the oldest written {} ago,", age(d))
        });
    format!(
        "spool {}: {rows} rows from an earlier run{written} go to {output}, each into the database and table it was written for, with its original timestamps (`flowmetrix spool` lists them, `flowmetrix spool --replay-to DB` sends them to another database, `flowmetrix spool --drop` discards them)",
        dir.display()
    )
}

/// Reads every segment of `dir` (none: an empty listing).
pub fn list(dir: &Path) -> std::io::Result<Listing> {
    let mut listing = Listing {
        dir: dir.to_owned(),
        ..Default::default()
    };
    for (_, path, bad) in files(dir)? {
        let meta = fs::metadata(&path)?;
        listing.bytes += meta.len();
        if bad {
            listing.bad += 1;
            continue;
        }
        listing.segments += 1;
        if let Ok(at) = meta.modified() {
            listing.oldest_write = Some(listing.oldest_write.map_or(at, |o| o.min(at)));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let contents = parse_segment(fs::read(&path)?);
        let mut groups: Vec<Group> = Vec::new();
        for (i, record) in contents.records.iter().enumerate() {
            let span = contents.request(i).as_ref().and_then(time_span);
            let group = match groups
                .iter_mut()
                .find(|g| g.database == record.database && g.table == record.table)
            {
                Some(g) => g,
                None => {
                    groups.push(Group {
                        segment: name.clone(),
                        database: record.database.clone(),
                        table: record.table.clone(),
                        rows: 0,
                        oldest: None,
                        newest: None,
                    });
                    groups.last_mut().expect("just pushed")
                }
            };
            group.rows += record.rows;
            if let Some((lo, hi)) = span {
                group.oldest = Some(group.oldest.map_or(lo, |o| o.min(lo)));
                group.newest = Some(group.newest.map_or(hi, |n| n.max(hi)));
            }
        }
        listing.groups.extend(groups);
    }
    Ok(listing)
}

/// The oldest and newest time index (ns since the epoch) of an insert's rows.
fn time_span(req: &RowInsertRequests) -> Option<(i64, i64)> {
    let mut span: Option<(i64, i64)> = None;
    for insert in &req.inserts {
        let Some(rows) = &insert.rows else { continue };
        let Some(ts) = rows
            .schema
            .iter()
            .position(|c| c.semantic_type == SemanticType::Timestamp as i32)
        else {
            continue;
        };
        for row in &rows.rows {
            let ns = match row.values.get(ts).and_then(|v| v.value_data.as_ref()) {
                Some(ValueData::TimestampNanosecondValue(n)) => *n,
                Some(ValueData::TimestampMicrosecondValue(n)) => n.saturating_mul(1_000),
                Some(ValueData::TimestampMillisecondValue(n)) => n.saturating_mul(1_000_000),
                Some(ValueData::TimestampSecondValue(n)) => n.saturating_mul(1_000_000_000),
                _ => continue,
            };
            span = Some(span.map_or((ns, ns), |(lo, hi)| (lo.min(ns), hi.max(ns))));
        }
    }
    span
}

/// Runs `change` on the spool `dir` under its lock (a spool a running collector holds is
/// refused with its pid), with the error for a failed file operation in it; nothing when
/// there is no such directory.
fn locked(
    dir: &Path,
    change: impl FnOnce(&dyn Fn(std::io::Error) -> SpoolError) -> Result<(u64, usize), SpoolError>,
) -> Result<(u64, usize), SpoolError> {
    if !dir.exists() {
        return Ok((0, 0));
    }
    let _lock = lock(dir)?;
    change(&|source| SpoolError::Dir {
        path: dir.display().to_string(),
        source,
    })
}

/// Discards every segment of `dir` (damaged ones too), under its lock: a spool a running
/// collector holds is refused with its pid. The rows and files dropped.
pub fn drop_all(dir: &Path) -> Result<(u64, usize), SpoolError> {
    locked(dir, |dir_err| drop_locked(dir, dir_err))
}

fn drop_locked(
    dir: &Path,
    dir_err: &dyn Fn(std::io::Error) -> SpoolError,
) -> Result<(u64, usize), SpoolError> {
    let listing = list(dir).map_err(dir_err)?;
    let mut removed = 0;
    for (_, path, _) in files(dir).map_err(dir_err)? {
        fs::remove_file(&path).map_err(dir_err)?;
        removed += 1;
    }
    Ok((listing.rows(), removed))
}

/// Makes every row of `dir`'s spool go to `database` instead of the database it was written
/// for, under its lock (a spool a running collector holds is refused with its pid): each
/// segment is written anew beside itself with the same inserts, synced, and renamed over
/// the old one, so a crash leaves either. Damage after a segment's intact records is kept as
/// it is (the replay counts its rows as lost). The rows and segments changed.
pub fn replay_to(dir: &Path, database: &str) -> Result<(u64, usize), SpoolError> {
    locked(dir, |dir_err| replay_to_locked(dir, database, dir_err))
}

fn replay_to_locked(
    dir: &Path,
    database: &str,
    dir_err: &dyn Fn(std::io::Error) -> SpoolError,
) -> Result<(u64, usize), SpoolError> {
    let (mut rows, mut changed) = (0, 0);
    for (_, path, bad) in files(dir).map_err(dir_err)? {
        if bad {
            continue;
        }
        let contents = parse_segment(fs::read(&path).map_err(dir_err)?);
        if contents.records.is_empty() {
            continue;
        }
        let mut bytes = Vec::new();
        for (i, record) in contents.records.iter().enumerate() {
            bytes.extend(contents.record_for(i, database).unwrap_or_default());
            rows += record.rows;
        }
        bytes.extend_from_slice(contents.damaged_tail());
        let fresh = path.with_extension("spool-new");
        let written = fs::File::create(&fresh).and_then(|mut f| {
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()
        });
        written
            .and_then(|()| fs::rename(&fresh, &path))
            .map_err(|e| {
                let _ = fs::remove_file(&fresh);
                dir_err(e)
            })?;
        changed += 1;
    }
    if changed > 0 {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(dir_err)?;
    }
    Ok((rows, changed))
}

/// A time as RFC 3339 in UTC, to the second.
fn rfc3339(ns: Option<i64>) -> String {
    ns.map(chrono::DateTime::from_timestamp_nanos).map_or_else(
        || "-".to_owned(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// A duration the way people say it: `3d 4h`, `2h 5m`, `7m 30s`, `12s`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m {}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h {}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3_600),
    }
}

impl std::fmt::Display for Listing {
    /// A table, one line per segment, database and table, then a total line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.groups.is_empty() && self.bad == 0 {
            return writeln!(f, "spool {}: empty", self.dir.display());
        }
        let rows: Vec<[String; 6]> = self
            .groups
            .iter()
            .map(|g| {
                [
                    g.segment.clone(),
                    g.database
                        .clone()
                        .unwrap_or_else(|| "(the run's)".to_owned()),
                    g.table.clone().unwrap_or_else(|| "?".to_owned()),
                    g.rows.to_string(),
                    rfc3339(g.oldest),
                    rfc3339(g.newest),
                ]
            })
            .collect();
        let head = ["SEGMENT", "DATABASE", "TABLE", "ROWS", "OLDEST", "NEWEST"].map(String::from);
        let mut width = head.clone().map(|h| h.len());
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        for r in std::iter::once(&head).chain(&rows) {
            let cells: Vec<String> = r
                .iter()
                .zip(width)
                .enumerate()
                .map(|(i, (c, w))| {
                    if i == 3 {
                        format!("{c:>w$}")
                    } else {
                        format!("{c:<w$}")
                    }
                })
                .collect();
            writeln!(f, "{}", cells.join("  ").trim_end())?;
        }
        let written = self
            .oldest_write
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map_or(String::new(), |d| {
                format!(", the oldest written {} ago", age(d))
            });
        write!(
            f,
            "spool {}: {} rows in {} segment(s), {} bytes{written}",
            self.dir.display(),
            self.rows(),
            self.segments,
            self.bytes,
        )?;
        if self.bad > 0 {
            write!(f, "; {} damaged file(s) set aside (.bad)", self.bad)?;
        }
        writeln!(f)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use greptimedb_ingester::api::v1::{
        ColumnDataType, ColumnSchema, Row, RowInsertRequest, Rows, Value,
    };

    use super::*;
    use crate::{metrics::Counters, sink::greptime::spool::Spool};

    /// 2023-01-01T00:00:00Z.
    const T: i64 = 1_672_531_200_000_000_000;

    fn insert(table: &str, ts: &[i64]) -> RowInsertRequests {
        RowInsertRequests {
            inserts: vec![RowInsertRequest {
                table_name: table.to_owned(),
                rows: Some(Rows {
                    schema: vec![ColumnSchema {
                        column_name: "ts".into(),
                        datatype: ColumnDataType::TimestampNanosecond as i32,
                        semantic_type: SemanticType::Timestamp as i32,
                        ..Default::default()
                    }],
                    rows: ts
                        .iter()
                        .map(|&n| Row {
                            values: vec![Value {
                                value_data: Some(ValueData::TimestampNanosecondValue(n)),
                            }],
                        })
                        .collect(),
                }),
            }],
        }
    }

    #[test]
    fn a_spool_is_listed_by_database_and_table_and_dropped_only_when_free() {
        let dir = std::env::temp_dir().join(format!("fmx-spool-list-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(list(&dir).unwrap().rows(), 0, "no directory: nothing");
        let spool = Spool::open(&dir, 1 << 20, Arc::new(Counters::default())).unwrap();
        let sec = 1_000_000_000;
        spool.append("public", &insert("packet_data", &[T + 5 * sec, T]), 2);
        spool.append("public", &insert("packet_data", &[T + 9 * sec]), 1);
        spool.append("trial", &insert("flow_data", &[T + sec]), 1);
        spool.sync();

        // A collector holds it: listing reads it, dropping is refused.
        let l = list(&dir).unwrap();
        assert_eq!(l.rows(), 4);
        let packets = l
            .groups
            .iter()
            .find(|g| g.table.as_deref() == Some("packet_data"))
            .unwrap();
        assert_eq!(packets.database.as_deref(), Some("public"));
        assert_eq!(
            (packets.rows, packets.oldest, packets.newest),
            (3, Some(T), Some(T + 9 * sec))
        );
        let text = l.to_string();
        assert!(text.starts_with("SEGMENT"), "{text}");
        assert!(
            text.contains("trial") && text.contains("2023-01-01T00:00:01Z"),
            "{text}"
        );
        assert!(text.contains(": 4 rows in 1 segment(s)"), "{text}");
        assert!(matches!(drop_all(&dir), Err(SpoolError::Locked { .. })));

        drop(spool);
        assert_eq!(drop_all(&dir).unwrap(), (4, 1));
        assert_eq!(list(&dir).unwrap().rows(), 0);
        assert!(list(&dir).unwrap().to_string().ends_with(": empty\n"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn replay_to_sends_every_pending_row_to_another_database_and_keeps_what_was_done() {
        use crate::sink::greptime::spool::Replayed;
        let dir = std::env::temp_dir().join(format!("fmx-spool-to-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(
            replay_to(&dir, "x").unwrap(),
            (0, 0),
            "no directory: nothing"
        );
        let spool = Spool::open(&dir, 1 << 20, Arc::new(Counters::default())).unwrap();
        spool.append("public", &insert("packet_data", &[T, T + 1]), 2);
        spool.append("trial", &insert("flow_data", &[T + 2]), 1);
        spool.append("public", &insert("packet_data", &[T + 3]), 1);
        // The first record was replayed already: it stays done.
        let (_, contents) = spool.take_oldest().unwrap();
        assert!(spool.begin(&contents.records[0]));
        spool.finish(&contents.records[0], Replayed::Written);
        spool.put_back();
        assert!(matches!(
            replay_to(&dir, "scratch"),
            Err(SpoolError::Locked { .. })
        ));
        drop(spool);

        assert_eq!(replay_to(&dir, "scratch").unwrap(), (2, 1));
        let l = list(&dir).unwrap();
        assert_eq!(l.rows(), 2);
        assert!(
            l.groups
                .iter()
                .all(|g| g.database.as_deref() == Some("scratch")),
            "{l}"
        );
        let flows = l
            .groups
            .iter()
            .find(|g| g.table.as_deref() == Some("flow_data"))
            .unwrap();
        assert_eq!((flows.rows, flows.oldest), (1, Some(T + 2)));
        // What a collector reads back: the same inserts, for the new database.
        let spool = Spool::open(&dir, 1 << 20, Arc::new(Counters::default())).unwrap();
        let (_, contents) = spool.take_oldest().unwrap();
        assert_eq!(contents.records.len(), 2);
        assert_eq!(contents.request(0), Some(insert("flow_data", &[T + 2])));
        assert_eq!(contents.request(1), Some(insert("packet_data", &[T + 3])));
        drop(spool);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn ages_are_said_in_two_units() {
        assert_eq!(age(Duration::from_secs(12)), "12s");
        assert_eq!(age(Duration::from_secs(450)), "7m 30s");
        assert_eq!(age(Duration::from_secs(7_500)), "2h 5m");
        assert_eq!(age(Duration::from_secs(3 * 86_400 + 4 * 3_600)), "3d 4h");
    }
}
