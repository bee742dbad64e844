//! The tables and rollups the start-up step makes: on an empty database, a second time, on
//! the Go original's table, after the insert added their columns; the endpoint's answers to
//! DDL mistakes and unquoted keywords; a type clash.

use super::*;

#[test]
fn an_empty_database_gets_the_tables_and_the_rollups_and_a_second_run_changes_nothing() {
    let endpoint = Endpoint::start(None);
    let c = cfg(&[&endpoint]);
    let rt = runtime();
    let done = rt.block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        prepare(&pool, &c, true).await
    });
    assert_eq!(done.tables, ["packet_data", "flow_data", "dns_data"]);
    assert_eq!(
        done.rollups,
        [
            "packet_data_1m",
            "packet_data_talkers_1m",
            "flow_data_1m",
            "flow_data_talkers_1m",
            "packet_data_workloads_1m",
            "flow_data_workloads_1m",
            "dns_data_1m",
            "flow_data_drops_1m"
        ]
    );
    assert!(
        done.failed.is_empty() && done.pending.is_empty(),
        "{done:?}"
    );
    // Exactly the documented statements, in order, each once.
    let mut expected: Vec<String> = ddl::tables(&c, true)
        .into_iter()
        .flat_map(|t| [t.create, t.add_columns])
        .collect();
    expected.extend(
        ddl::rollups("packet_data", Some("flow_data"))
            .into_iter()
            .chain([ddl::dns_rollup("dns_data"), ddl::drop_rollup("flow_data")])
            .map(|r| r.sql),
    );
    assert_eq!(endpoint.sql(), expected);
    assert!(expected[0].contains("WITH(append_mode = 'true', ttl = '7d')"));

    // The tables have the rows' column types and roles: the primary key is the tags.
    let types = endpoint.column_types("public", "packet_data");
    let want: Vec<(String, ColumnDataType)> = SCHEMA
        .iter()
        .map(|c| (c.name.to_owned(), c.data_type))
        .collect();
    assert_eq!(types, want);
    let roles = endpoint.roles("public", "packet_data");
    let tags: BTreeSet<&str> = roles
        .iter()
        .filter(|(_, r)| **r == SemanticType::Tag)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        tags,
        BTreeSet::from([
            "host",
            "interface",
            "direction",
            "application",
            "packet_type"
        ])
    );
    assert_eq!(roles["src_ip"], SemanticType::Field);
    assert_eq!(roles["ts"], SemanticType::Timestamp);
    assert!(endpoint.append_only("public", "packet_data"));
    assert!(endpoint.append_only("public", "flow_data"));
    assert_eq!(endpoint.column_types("public", "flow_data").len(), 30);
    assert!(endpoint.append_only("public", "dns_data"));
    let want: Vec<(String, ColumnDataType)> = DNS_SCHEMA
        .iter()
        .map(|c| (c.name.to_owned(), c.data_type))
        .collect();
    assert_eq!(endpoint.column_types("public", "dns_data"), want);
    let flows = endpoint.flows("public");
    assert_eq!(flows.len(), 8);
    // The flow engine made the sink tables.
    assert_eq!(
        endpoint.tables("public"),
        [
            "dns_data",
            "dns_data_1m",
            "flow_data",
            "flow_data_1m",
            "flow_data_drops_1m",
            "flow_data_talkers_1m",
            "flow_data_workloads_1m",
            "packet_data",
            "packet_data_1m",
            "packet_data_talkers_1m",
            "packet_data_workloads_1m"
        ]
    );

    // A second run: the same IF NOT EXISTS statements, and nothing changes.
    let before = (
        endpoint.tables("public"),
        endpoint.column_types("public", "packet_data"),
        endpoint.roles("public", "packet_data"),
        endpoint.flows("public"),
    );
    let again = rt.block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        let again = prepare(&pool, &c, true).await;
        // And rows fit the table as created.
        let res = pool
            .insert(
                None,
                &encode("packet_data", &[row(1), row(2)]),
                &[],
                REQUEST_TIMEOUT,
            )
            .await;
        assert_eq!(res, Ok(2));
        again
    });
    assert_eq!(again, done);
    assert_eq!(endpoint.sql()[expected.len()..], expected[..]);
    let after = (
        endpoint.tables("public"),
        endpoint.column_types("public", "packet_data"),
        endpoint.roles("public", "packet_data"),
        endpoint.flows("public"),
    );
    assert_eq!(before, after);
}

#[test]
fn flows_off_makes_no_flow_table_and_no_create_table_sends_no_ddl() {
    let endpoint = Endpoint::start(None);
    let c = cfg(&[&endpoint]);
    let rt = runtime();
    rt.block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        prepare(&pool, &c, false).await
    });
    assert_eq!(
        endpoint.tables("public"),
        [
            "packet_data",
            "packet_data_1m",
            "packet_data_talkers_1m",
            "packet_data_workloads_1m"
        ]
    );

    let endpoint = Endpoint::start(None);
    let mut c = cfg(&[&endpoint]);
    c.ddl.create_tables = false;
    c.ddl.rollups = false;
    let counters = run_writer(&c, 20, Duration::ZERO, u32::MAX, || {});
    assert_eq!(Counters::get(&counters.written), 20);
    // Today's behaviour: the start-up check, then the first insert creates the table.
    assert_eq!(
        endpoint.sql(),
        [
            "USE \"public\"",
            "ALTER TABLE \"packet_data\" SET 'append_mode' = 'true'"
        ]
    );
    assert!(endpoint.append_only("public", "packet_data"));
    assert!(endpoint.flows("public").is_empty());
}

#[test]
fn the_partitioned_table_of_a_fleet_is_created_with_its_split_points() {
    let endpoint = Endpoint::start(None);
    let mut c = cfg(&[&endpoint]);
    c.ddl.partition_hosts = vec!["node-3".into(), "node-6".into()];
    let rt = runtime();
    let done = rt.block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        prepare(&pool, &c, false).await
    });
    assert!(done.failed.is_empty(), "{done:?}");
    let sql = &endpoint.sql()[0];
    assert!(
        sql.contains(
            ")\nPARTITION ON COLUMNS (\"host\") (\n  \"host\" < 'node-3',\n  \"host\" >= 'node-3' AND \"host\" < 'node-6',\n  \"host\" >= 'node-6'\n)\nENGINE=mito\nWITH(append_mode = 'true', ttl = '7d')"
        ),
        "{sql}"
    );
    assert_eq!(
        endpoint.column_types("public", "packet_data").len(),
        SCHEMA.len()
    );
}

#[test]
fn the_endpoint_answers_ddl_mistakes_as_the_server_does() {
    let endpoint = Endpoint::start(None);
    let c = cfg(&[&endpoint]);
    runtime().block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        let e = pool
            .execute(
                "CREATE TABLE IF NOT EXISTS t (ts TIMESTAMP(9) NOT NULL, application STRING NULL, TIME INDEX (ts))",
                STATEMENT_TIMEOUT,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, Some(2000));
        assert_eq!(
            e.message,
            "Invalid SQL syntax: sql parser error: Cannot use keyword 'application' as column name. Hint: add quotes to the name."
        );
        // A rollup over a table that is not there, or a column it lacks: a plan error.
        let flow = &ddl::rollups("packet_data", None)[0].sql;
        let e = pool.execute(flow, STATEMENT_TIMEOUT).await.unwrap_err();
        assert_eq!(e.code, Some(3000));
        assert_eq!(
            e.message,
            "Failed to plan SQL: Table not found: greptime.public.packet_data"
        );
        pool.execute(
            "CREATE TABLE \"packet_data\" (\"ts\" TIMESTAMP(9) NOT NULL, TIME INDEX (\"ts\"))",
            STATEMENT_TIMEOUT,
        )
        .await
        .unwrap();
        let e = pool.execute(flow, STATEMENT_TIMEOUT).await.unwrap_err();
        assert_eq!(e.code, Some(3000));
        assert!(
            e.message
                .starts_with("Failed to plan SQL: No field named host. Valid fields are packet_data.ts"),
            "{}",
            e.message
        );
        pool.execute(
            "ALTER TABLE \"packet_data\" ADD COLUMN \"host\" STRING",
            STATEMENT_TIMEOUT,
        )
        .await
        .unwrap();
    });
    assert_eq!(endpoint.columns("public", "packet_data"), ["ts", "host"]);
}

/// The Go original's table: src_ip, dst_port, packet_type and application as tags, fewer
/// columns, no append mode.
fn go_original(endpoint: &Endpoint) {
    use ColumnDataType as T;
    use SemanticType::{Field, Tag, Timestamp};
    endpoint.create_table_with_roles(
        "public",
        "packet_data",
        &[
            ("ts", T::TimestampNanosecond, Timestamp),
            ("packet_size", T::Uint16, Field),
            ("ether_type", T::Uint16, Field),
            ("src_mac", T::String, Field),
            ("dst_mac", T::String, Field),
            ("protocol", T::Uint8, Field),
            ("src_ip", T::String, Tag),
            ("dst_ip", T::String, Field),
            ("src_port", T::Uint16, Field),
            ("dst_port", T::Uint16, Tag),
            ("tcp_flags", T::Uint8, Field),
            ("packet_type", T::String, Tag),
            ("application", T::String, Tag),
        ],
    );
}

#[test]
fn a_table_of_the_go_original_is_used_as_it_is_and_gains_the_new_columns() {
    let endpoint = Endpoint::start(None);
    go_original(&endpoint);
    let mut c = cfg(&[&endpoint]);
    c.ttl = None;
    let (logs, _guard) = Logs::capture();
    let counters = run_writer(&c, 100, Duration::from_millis(5), u32::MAX, || {});
    assert_eq!(Counters::get(&counters.written), 100, "{}", logs.text());
    assert_eq!(Counters::get(&counters.write_errors), 0);
    let keys: BTreeSet<_> = endpoint.row_keys("packet_data").into_iter().collect();
    assert_eq!(keys.len(), 100);
    assert_eq!(endpoint.row_keys("packet_data").len(), 100, "none twice");
    // Its roles are kept; the rows were declared to fit them, learned once per column.
    let roles = endpoint.roles("public", "packet_data");
    assert_eq!(roles["src_ip"], SemanticType::Tag);
    assert_eq!(roles["dst_port"], SemanticType::Tag);
    for col in ["src_ip", "dst_port"] {
        assert_eq!(
            logs.lines_with(&format!("has column {col} as a tag")).len(),
            1,
            "{}",
            logs.text()
        );
    }
    // The columns it lacked were added after its own: the fields by the start-up's ALTER
    // TABLE (in the row's order), then the tags by the insert.
    let cols = endpoint.columns("public", "packet_data");
    assert_eq!(cols.len(), SCHEMA.len());
    assert_eq!(
        &cols[13..],
        [
            "vlan_id",
            "tunnel",
            "inner_src_ip",
            "inner_dst_ip",
            "inner_protocol",
            "inner_src_port",
            "inner_dst_port",
            "mpls_labels",
            "sample_rate",
            "cgroup_id",
            "container_id",
            "pod_uid",
            "pod",
            "namespace",
            "host",
            "interface",
            "direction",
        ]
    );
    assert!(
        endpoint.append_only("public", "packet_data"),
        "made append-only"
    );
    // Its rollups wait for the columns it lacked at start, and are made once they exist.
    assert_eq!(
        logs.lines_with("wait for columns").len(),
        1,
        "{}",
        logs.text()
    );
    assert!(logs.lines_with("ERROR").is_empty(), "{}", logs.text());
}

#[test]
fn pending_rollups_are_made_once_the_insert_added_their_columns() {
    let endpoint = Endpoint::start(None);
    go_original(&endpoint);
    let c = cfg(&[&endpoint]);
    let (logs, _guard) = Logs::capture();
    runtime().block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        let done = prepare(&pool, &c, false).await;
        assert_eq!(
            done.pending,
            [
                "packet_data_1m",
                "packet_data_talkers_1m",
                "packet_data_workloads_1m"
            ]
        );
        assert!(endpoint.flows("public").is_empty());
        let res = pool
            .insert(
                None,
                &encode("packet_data", &[row(1)]),
                &[],
                REQUEST_TIMEOUT,
            )
            .await;
        assert_eq!(res, Ok(1));
        let deadline = Instant::now() + ddl::PENDING_RETRY * 2;
        while endpoint.flows("public").len() < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(endpoint.flows("public").len(), 3, "{}", logs.text());
    assert_eq!(logs.lines_with("is in place").len(), 3, "{}", logs.text());
}

#[test]
fn a_type_clash_is_one_clear_error_line_and_counted() {
    let endpoint = Endpoint::start(None);
    endpoint.create_table(
        "public",
        "packet_data",
        &[("dst_port", ColumnDataType::String)],
    );
    let c = cfg(&[&endpoint]);
    let (logs, _guard) = Logs::capture();
    let counters = run_writer(&c, 100, Duration::ZERO, u32::MAX, || {});
    assert_eq!(Counters::get(&counters.written), 0);
    assert_eq!(Counters::get(&counters.write_errors), 100);
    let errors = logs.lines_with("ERROR");
    assert_eq!(errors.len(), 1, "{}", logs.text());
    assert!(
        errors[0]
            .contains("table packet_data has column dst_port as String, flowmetrix writes UINT16"),
        "{}",
        errors[0]
    );
}

/// Every column name of both tables and of the rollup sinks, with whether GreptimeDB's
/// parser takes it for a keyword: an unquoted column name in sqlparser's `ALL_KEYWORDS`
/// is refused by `parse_column_def` (greptimedb `src/sql/src/parsers/create_parser.rs`;
/// the list is sqlparser's `src/keywords.rs`, GreptimeTeam's fork). A new column needs its
/// verdict here, checked against that list.
const COLUMN_NAMES: &[(&str, bool)] = &[
    ("application", true),
    ("bytes", true),
    ("cgroup_id", false),
    ("container_id", false),
    ("dns_answers", false),
    ("dns_errors", false),
    ("dns_id", false),
    ("dns_latency_us", false),
    ("dns_latency_us_max", false),
    ("dns_latency_us_sum", false),
    ("dns_qname", false),
    ("dns_qtype", false),
    ("dns_queries", false),
    ("dns_rcode", false),
    ("dns_timeouts", false),
    ("drop_bytes", false),
    ("drop_packets", false),
    ("drop_reason", false),
    ("dst_ip", false),
    ("dst_mac", false),
    ("dst_port", false),
    ("direction", false),
    ("ether_type", false),
    ("first_seen", false),
    ("host", false),
    ("inner_dst_ip", false),
    ("inner_dst_port", false),
    ("inner_protocol", false),
    ("inner_src_ip", false),
    ("inner_src_port", false),
    ("interface", false),
    ("interval_ms", false),
    ("last_seen", false),
    ("minute", true),
    ("mpls_labels", false),
    ("namespace", false),
    ("packet_size", false),
    ("packet_type", false),
    ("packets", false),
    ("pod", false),
    ("pod_uid", false),
    ("protocol", false),
    ("sample_rate", false),
    ("src_ip", false),
    ("src_mac", false),
    ("src_port", false),
    ("tcp_flags", false),
    ("tcp_handshake_us", false),
    ("tcp_retransmits", false),
    ("tcp_rtt_us", false),
    ("tcp_syn_retransmits", false),
    ("ts", false),
    ("tunnel", false),
    ("update_at", false),
    ("vlan_id", false),
];

#[test]
fn the_endpoint_refuses_unquoted_exactly_the_keywords_among_our_column_names() {
    let endpoint = Endpoint::start(None);
    let c = cfg(&[&endpoint]);
    runtime().block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        let done = prepare(&pool, &c, true).await;
        assert!(done.failed.is_empty(), "{done:?}");
        // Every name we use: the three tables and the sinks the flow engine made.
        let mut used: BTreeSet<String> = SCHEMA
            .iter()
            .map(|c| c.name.to_owned())
            .chain(FLOW_SCHEMA.iter().map(|c| c.name.to_owned()))
            .chain(DNS_SCHEMA.iter().map(|c| c.name.to_owned()))
            .collect();
        for sink in &done.rollups {
            used.extend(endpoint.columns("public", sink));
        }
        let pinned: BTreeSet<String> = COLUMN_NAMES.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(used, pinned, "every column name has its keyword verdict");

        for &(name, keyword) in COLUMN_NAMES {
            for written in [name.to_owned(), name.to_ascii_uppercase()] {
                let table = format!("kw_{name}");
                let create = format!(
                    "CREATE TABLE \"{table}\" (\"t0\" TIMESTAMP(9) NOT NULL, {written} STRING NULL, TIME INDEX (\"t0\"))"
                );
                let alter = format!("ALTER TABLE \"{table}\" ADD COLUMN {written}_2 STRING");
                let res = pool.execute(&create, STATEMENT_TIMEOUT).await;
                if keyword {
                    let e = res.unwrap_err();
                    assert_eq!(e.code, Some(2000), "{written}");
                    assert_eq!(
                        e.message,
                        format!(
                            "Invalid SQL syntax: sql parser error: Cannot use keyword '{written}' as column name. Hint: add quotes to the name."
                        )
                    );
                    // Quoted, it is a name like any other.
                    let quoted = create.replace(&format!(" {written} "), &format!(" \"{written}\" "));
                    pool.execute(&quoted, STATEMENT_TIMEOUT).await.unwrap();
                } else {
                    res.unwrap_or_else(|e| panic!("{written}: {e}"));
                }
                // A suffixed name is no keyword; ALTER ADD COLUMN parses its column alike.
                pool.execute(&alter, STATEMENT_TIMEOUT).await.unwrap();
                let e = pool
                    .execute(
                        // (IF NOT EXISTS: the column is there, which alone fails, 4002.)
                        &format!("ALTER TABLE \"{table}\" ADD COLUMN IF NOT EXISTS {written} STRING"),
                        STATEMENT_TIMEOUT,
                    )
                    .await;
                assert_eq!(e.is_err(), keyword, "{written}: {e:?}");
                endpoint.drop_table("public", &table);
            }
        }
    });
}

#[test]
fn an_older_flow_table_gains_the_newer_columns_and_a_second_run_changes_nothing() {
    // flow_data as an earlier FlowMetrix made it: without the how-well columns.
    const NEWER: [&str; 7] = [
        "tcp_handshake_us",
        "tcp_syn_retransmits",
        "tcp_retransmits",
        "tcp_rtt_us",
        "drop_packets",
        "drop_bytes",
        "drop_reason",
    ];
    let endpoint = Endpoint::start(None);
    let older: Vec<(&str, ColumnDataType, SemanticType)> = FLOW_SCHEMA
        .iter()
        .filter(|c| !NEWER.contains(&c.name))
        .map(|c| (c.name, c.data_type, c.semantic))
        .collect();
    endpoint.create_table_with_roles("public", "flow_data", &older);
    let c = cfg(&[&endpoint]);
    let rt = runtime();
    for _ in 0..2 {
        let done = rt.block_on(async {
            let pool = Endpoints::connect(&c).unwrap();
            prepare(&pool, &c, true).await
        });
        assert!(done.failed.is_empty(), "{done:?}");
        // Its own columns first, then the ones it lacked, each with the row's type, as fields.
        let mut want: Vec<&str> = older.iter().map(|c| c.0).collect();
        want.extend(NEWER);
        assert_eq!(endpoint.columns("public", "flow_data"), want);
        let types = endpoint.column_types("public", "flow_data");
        let roles = endpoint.roles("public", "flow_data");
        for c in FLOW_SCHEMA {
            assert!(
                types.contains(&(c.name.to_owned(), c.data_type)),
                "{}",
                c.name
            );
            assert_eq!(roles[c.name], c.semantic, "{}", c.name);
        }
    }
    // Without IF NOT EXISTS, a column that is there fails the statement, as on the server.
    rt.block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        let e = pool
            .execute(
                "ALTER TABLE \"flow_data\" ADD COLUMN \"drop_reason\" STRING NULL",
                STATEMENT_TIMEOUT,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, Some(4002));
        assert_eq!(
            e.message,
            "Column drop_reason already exists in table flow_data"
        );
    });
}
