//! The rollups against a real GreptimeDB (the live tier).

use super::*;

/// The live check of the rollups (issue 14, acceptance 2), against a real GreptimeDB named
/// by FLOWMETRIX_TEST_GREPTIMEDB (and _HTTP; see tests/common/live.rs): sampled rows of
/// known sizes and rates over three minutes go through the writer into a fresh table, whose
/// DDL and rollups the start-up step creates; after `ADMIN FLUSH_FLOW`, the rollup's bytes
/// per minute are the sum of packet_size × sample_rate and its packets the sum of
/// sample_rate — as computed here, and as the server computes them from the raw rows. One
/// row's product (9000 × 1 000 000) does not fit 32 bits. Everything made is dropped.
/// Without the variable, one line says it did not run. No root needed.
#[test]
fn live_rollups_per_minute_are_the_sampled_sums() {
    let Some(live) = common::live::Live::from_env() else {
        common::live::skipped("live_rollups_per_minute_are_the_sampled_sums");
        return;
    };
    let table = common::live::fresh_table("rollup");
    let c = GreptimeConfig {
        endpoints: vec![live.grpc.to_string()],
        username: live.user.as_ref().map(|(u, _)| u.clone()),
        password: live.user.as_ref().map(|(_, p)| p.clone()),
        table: table.clone(),
        ttl: None,
        shutdown_timeout: Duration::from_secs(10),
        ..cfg(&[])
    };
    const MINUTE_NS: i64 = 60_000_000_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let first_minute = now / MINUTE_NS * MINUTE_NS - 5 * MINUTE_NS;
    // (minute, second, packet_size, sample_rate, protocol)
    let cases: &[(i64, i64, u16, u32, u8)] = &[
        (0, 1, 64, 1, 6),
        (0, 20, 1500, 100, 6),
        (0, 59, 9000, 1_000_000, 17),
        (1, 0, 100, 10, 17),
        (1, 30, 60, 1, 1),
        (2, 5, 1514, 512, 6),
        (2, 6, 1514, 512, 6),
        (2, 7, 40, 4096, 17),
    ];
    let rows: Vec<PacketRecord> = cases
        .iter()
        .enumerate()
        .map(|(i, &(m, s, size, rate, proto))| PacketRecord {
            ts: UnixNanos(first_minute + m * MINUTE_NS + s * 1_000_000_000 + i as i64),
            packet_size: size,
            protocol: Some(proto),
            src_port: Some(40_000 + i as u16),
            dst_port: Some(443),
            sample_rate: rate,
            host: "fm-live".into(),
            ..PacketRecord::default()
        })
        .collect();
    let mut want = std::collections::BTreeMap::<i64, (u64, u64)>::new();
    for &(m, _, size, rate, _) in cases {
        let e = want.entry(m).or_default();
        e.0 += u64::from(rate);
        e.1 += u64::from(size) * u64::from(rate);
    }
    let want: Vec<(u64, u64)> = want.into_values().collect();

    let counters = Arc::new(Counters::default());
    runtime().block_on(async {
        let (tx, rx) = queue::bounded(1_000);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let sink = tokio::spawn(flowmetrix::sink::greptime::run(
            c.clone(),
            rx,
            Arc::clone(&counters),
            Default::default(),
            stop_rx,
            None,
        ));
        tx.try_send(rows.clone()).unwrap();
        drop(tx);
        stop.send_replace(true);
        sink.await.unwrap().unwrap();
    });
    let written = Counters::get(&counters.written);

    let rollups = ddl::rollups(&table, None);
    let (flow, sink) = (&rollups[0].flow, &rollups[0].sink);
    let per_minute =
        |rows: Vec<serde_json::Map<String, serde_json::Value>>| -> Vec<(String, u64, u64)> {
            rows.iter()
                .map(|r| {
                    let n = |k: &str| {
                        r.get(k)
                            .and_then(serde_json::Value::as_u64)
                            .unwrap_or(u64::MAX)
                    };
                    (
                        r.get("minute").map(ToString::to_string).unwrap_or_default(),
                        n("packets"),
                        n("bytes"),
                    )
                })
                .collect()
        };
    let raw = per_minute(live.sql(
        "public",
        &format!(
            "SELECT date_bin(INTERVAL '1 minutes', \"ts\") AS \"minute\", {} FROM \"{table}\" GROUP BY \"minute\" ORDER BY \"minute\"",
            ddl::SAMPLED_SUMS
        ),
    ));
    let create = format!(
        "{:?}",
        live.sql("public", &format!("SHOW CREATE TABLE \"{table}\""))
    );
    // Flows compute in batches: flush, then read until the rollup has every minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    let rolled = loop {
        live.sql("public", &format!("ADMIN FLUSH_FLOW('{flow}')"));
        let rolled = per_minute(live.sql(
            "public",
            &format!(
                "SELECT \"minute\", sum(\"packets\") AS \"packets\", sum(\"bytes\") AS \"bytes\" FROM \"{sink}\" GROUP BY \"minute\" ORDER BY \"minute\""
            ),
        ));
        if rolled == raw || Instant::now() > deadline {
            break rolled;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    // Drop what this test made before asserting, so that a failure leaves nothing behind.
    for r in &rollups {
        live.sql("public", &format!("DROP FLOW IF EXISTS \"{}\"", r.flow));
        live.sql("public", &format!("DROP TABLE IF EXISTS \"{}\"", r.sink));
    }
    live.sql("public", &format!("DROP TABLE IF EXISTS \"{table}\""));

    assert_eq!(written, rows.len() as u64);
    assert!(
        create.contains("append_mode") && create.contains("SKIPPING INDEX"),
        "made by our DDL: {create}"
    );
    let sums = |v: &[(String, u64, u64)]| v.iter().map(|(_, p, b)| (*p, *b)).collect::<Vec<_>>();
    assert_eq!(sums(&raw), want, "the server's own sums over the raw rows");
    assert_eq!(rolled, raw, "the rollup, per minute");
}
