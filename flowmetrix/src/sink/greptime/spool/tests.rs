//! The spool's behaviour as a whole: appends, replay, restarts, damage and the size limit.

use std::{
    fs::{self, OpenOptions},
    path::{Path, PathBuf},
    sync::Arc,
};

use greptimedb_ingester::api::v1::{RowInsertRequest, RowInsertRequests, Rows};
use prost::Message as _;

use super::{
    Contents, MAX_BAD_FILES, Replayed, RowsPerTable, Spool,
    format::{MAGIC_V1, parse_segment, seg_path, table_in_prefix},
    lock::LOCK_FILE,
};
use crate::metrics::Counters;

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
                    value_data: Some(greptimedb_ingester::api::v1::value::ValueData::U32Value(i)),
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
fn two_tables(spool: &Spool, n: usize) -> RowsPerTable {
    let mut sent = RowsPerTable::default();
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
    let mut kept = RowsPerTable::default();
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
                    value_data: Some(greptimedb_ingester::api::v1::value::ValueData::StringValue(
                        "z".repeat(1500),
                    ),),
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

/// The replayer waits while rows still go to the spool (`spooled_within`): nothing was
/// spooled yet, rows were just now, and none for longer than the window.
#[test]
fn the_writer_says_whether_rows_went_to_the_spool_lately() {
    use std::time::{Duration, Instant};

    use super::thread::{Item, Payload, SpoolWriter, UnencodedRows};
    use crate::record::PacketRecord;

    let d = dir("lately");
    let counters = Arc::new(Counters::default());
    let spool = Arc::new(Spool::open(&d, 1 << 20, Arc::clone(&counters)).unwrap());
    let writer = SpoolWriter::start(Arc::clone(&spool), 1_000, Arc::clone(&counters), None);
    let window = Duration::from_millis(200);
    assert!(!writer.spooled_within(window), "nothing spooled yet");
    let item = Item {
        database: "public".into(),
        payload: Payload::Rows(Box::new(UnencodedRows {
            table: "packet_data".into(),
            rows: vec![PacketRecord::default(); 3],
        })),
    };
    assert!(writer.try_put(item).is_ok());
    assert!(writer.spooled_within(window), "rows just went to the spool");
    std::thread::sleep(window + Duration::from_millis(50));
    assert!(
        !writer.spooled_within(window),
        "none for longer than the window"
    );
    writer.finish(Instant::now() + Duration::from_secs(5));
    assert_eq!(Counters::get(&counters.spooled), 3);
    drop(writer);
    drop(spool);
    fs::remove_dir_all(d).unwrap();
}
