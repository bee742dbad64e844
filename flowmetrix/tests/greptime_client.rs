//! The GreptimeDB client side through the library, against the in-process test endpoint on
//! loopback (no root needed): every answer of the real server is classified with the right
//! advice, the start-up check finds an unknown database, a dead endpoint leaves the rotation
//! once and comes back, and an outage is timed from its first failed attempt.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::endpoint::Endpoint;
use common::logs::Logs;
use flowmetrix::{
    metrics::Counters,
    queue,
    record::PacketRecord,
    sink::greptime::{Endpoints, Failure, GreptimeConfig, Problem, encode, retry::REQUEST_TIMEOUT},
};
use greptime_proto::v1::ColumnDataType;
use tonic::Code;

fn cfg(endpoints: &[&Endpoint]) -> GreptimeConfig {
    cfg_addrs(endpoints.iter().map(|e| e.addr.to_string()).collect())
}

fn cfg_addrs(endpoints: Vec<String>) -> GreptimeConfig {
    GreptimeConfig {
        batch_size: 10,
        flush_interval: Duration::from_millis(50),
        max_in_flight: 1,
        shutdown_timeout: Duration::from_secs(2),
        ..common::data::greptime(endpoints)
    }
}

fn row(i: u16) -> PacketRecord {
    common::data::packet(u32::from(i))
}

const HINTS: &[(&str, &str)] = &[("append_mode", "true")];

/// A runtime for the client; endpoints are made and dropped outside it (each has its own).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One insert of one row through a fresh pool for `cfg`.
fn insert_once(cfg: &GreptimeConfig, hints: &[(&str, &str)]) -> Result<u32, Failure> {
    runtime().block_on(async {
        let pool = Endpoints::connect(cfg).unwrap();
        pool.insert(None, &encode(&cfg.table, &[row(1)]), hints, REQUEST_TIMEOUT)
            .await
    })
}

fn fatal(res: Result<u32, Failure>) -> (Problem, String) {
    match res {
        Err(Failure::Fatal { kind, message }) => (kind, message),
        other => panic!("not fatal: {other:?}"),
    }
}

#[test]
fn unknown_database_is_told_apart_from_a_schema_conflict() {
    let endpoint = Endpoint::start(None);
    let mut c = cfg(&[&endpoint]);
    c.database = "nosuchdb".into();
    let (kind, message) = fatal(insert_once(&c, HINTS));
    assert_eq!(kind, Problem::UnknownDatabase);
    assert!(
        message.starts_with("Failed to find schema, schema info: nosuchdb; "),
        "{message}"
    );
    assert!(
        message.contains("CREATE DATABASE nosuchdb") && message.contains("--database"),
        "{message}"
    );
    assert!(!message.contains("drop"), "{message}");

    // Same gRPC code and greptime code (InvalidArgument, 1004), another problem.
    endpoint.create_table(
        "public",
        "packet_data",
        &[("protocol", ColumnDataType::String)],
    );
    let (kind, message) = fatal(insert_once(&cfg(&[&endpoint]), HINTS));
    assert_eq!(kind, Problem::SchemaConflict);
    assert!(
        message.starts_with("Invalid request to region 4398046511104(1024, 0), reason: column protocol expect type String(StringType), given: UINT8(5); "),
        "{message}"
    );
    assert!(
        message
            .contains("table packet_data has column protocol as String, flowmetrix writes UINT8")
            && message.contains("--table")
            && message.contains("DROP TABLE packet_data"),
        "{message}"
    );
    assert!(endpoint.rows("packet_data").is_empty());
}

#[test]
fn a_missing_table_the_server_will_not_create_is_named() {
    let endpoint = Endpoint::start(None);
    let mut c = cfg(&[&endpoint]);
    c.table = "probe_missing".into();
    let (kind, message) = fatal(insert_once(&c, &[("auto_create_table", "false")]));
    assert_eq!(kind, Problem::MissingTable);
    assert!(
        message.contains(
            "Table `probe_missing` does not exist, and `auto_create_table` hint is disabled"
        ) && message.contains("table probe_missing does not exist"),
        "{message}"
    );
    // With the default hints the insert creates it.
    assert_eq!(insert_once(&c, HINTS), Ok(1));
}

#[test]
fn credentials_answers_say_which_variable_to_fix() {
    let endpoint = Endpoint::start(None);
    endpoint.require_user("flow", "right");
    let with = |user: Option<&str>, password: &str| {
        let mut c = cfg(&[&endpoint]);
        c.username = user.map(str::to_owned);
        c.password = Some(password.to_owned());
        insert_once(&c, HINTS)
    };

    let (kind, message) = fatal(with(Some("flow"), "bad-secret"));
    assert_eq!(kind, Problem::WrongPassword);
    assert!(
        message.starts_with("Username and password does not match, username: flow; ")
            && message.contains("FLOWMETRIX_GREPTIME_PASSWORD"),
        "{message}"
    );
    assert!(!message.contains("bad-secret"), "password shown: {message}");

    let (kind, message) = fatal(with(None, ""));
    assert_eq!(kind, Problem::NoCredentials);
    assert!(
        message.starts_with("Not found http or grpc authorization header; ")
            && message.contains("FLOWMETRIX_GREPTIME_USERNAME"),
        "{message}"
    );

    // NotFound, the gRPC code of a missing table: the greptime code (7000) says "user".
    let (kind, message) = fatal(with(Some("nobody"), "x"));
    assert_eq!(kind, Problem::UnknownUser);
    assert!(
        message.starts_with("User not found, username: nobody; ")
            && message.contains("has no user nobody")
            && message.contains("FLOWMETRIX_GREPTIME_USERNAME"),
        "{message}"
    );

    assert_eq!(with(Some("flow"), "right"), Ok(1));
}

#[test]
fn server_side_retriable_codes_are_retried_without_dropping_the_endpoint() {
    let endpoint = Endpoint::start(None);
    let c = cfg(&[&endpoint]);
    for (code, gt, msg) in [
        (Code::ResourceExhausted, 6001, "Rate limit exceeded"),
        (Code::ResourceExhausted, 4009, "Region is busy"),
        (Code::Unavailable, 4008, "Region not ready"),
        (Code::Unavailable, 4010, "Table unavailable"),
        (Code::Unavailable, 5000, "Storage is unavailable"),
        (Code::Internal, 1003, "Internal error"),
    ] {
        endpoint.fail_next_with(1, code, gt, msg);
        runtime().block_on(async {
            let pool = Endpoints::connect(&c).unwrap();
            let res = pool
                .insert(
                    None,
                    &encode("packet_data", &[row(1)]),
                    HINTS,
                    REQUEST_TIMEOUT,
                )
                .await;
            assert_eq!(
                res,
                Err(Failure::Retry {
                    why: format!("{msg} (GreptimeDB code {gt})"),
                    endpoint: false
                }),
                "{gt}"
            );
            // The server answered: the endpoint stays in rotation, the next try lands.
            assert!(pool.states()[0].up, "{gt}");
            assert_eq!(
                pool.insert(
                    None,
                    &encode("packet_data", &[row(2)]),
                    HINTS,
                    REQUEST_TIMEOUT
                )
                .await,
                Ok(1)
            );
        });
    }
    // A plan error travels as Internal too, but with 3000: not retriable.
    endpoint.fail_next_with(
        1,
        Code::Internal,
        3000,
        "Failed to plan SQL: No field named host",
    );
    let (kind, _) = fatal(insert_once(&c, HINTS));
    assert_eq!(kind, Problem::Other(Code::Internal, Some(3000)));
}

#[test]
fn startup_check_finds_an_unknown_database_that_an_empty_insert_does_not() {
    let endpoint = Endpoint::start(None);
    let rt = runtime();
    let mut c = cfg(&[&endpoint]);
    c.database = "nosuchdb".into();
    rt.block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        let results = pool.check(Duration::from_secs(3)).await;
        assert_eq!(results.len(), 1);
        let (addr, res) = &results[0];
        assert_eq!(addr, &endpoint.addr.to_string());
        let Err(Failure::Fatal { kind, message }) = res else {
            panic!("{res:?}")
        };
        assert_eq!(*kind, Problem::UnknownDatabase);
        assert!(message.contains("CREATE DATABASE nosuchdb"), "{message}");
        assert!(pool.states()[0].up, "the endpoint answered");
    });
    assert_eq!(endpoint.sql(), vec!["USE \"nosuchdb\"".to_owned()]);

    // An existing database passes (the server refuses to return USE's empty result over
    // this call, without a greptime code: that is the success answer).
    endpoint.add_database("flows");
    c.database = "flows".into();
    rt.block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        let results = pool.check(Duration::from_secs(3)).await;
        assert_eq!(results[0].1, Ok(()));
    });

    // Credentials are checked by the same request.
    endpoint.require_user("flow", "right");
    c.username = Some("flow".into());
    c.password = Some("wrong".into());
    rt.block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        let results = pool.check(Duration::from_secs(3)).await;
        assert!(
            matches!(
                &results[0].1,
                Err(Failure::Fatal {
                    kind: Problem::WrongPassword,
                    ..
                })
            ),
            "{:?}",
            results[0].1
        );
    });
}

#[test]
fn a_dead_endpoint_leaves_the_rotation_once_and_comes_back_when_it_answers() {
    let live = Endpoint::start(None);
    let flaky = Endpoint::start(None);
    // Connections to it are refused for 2 s from now.
    flaky.refuse_for(Duration::from_secs(2));
    let flaky_addr = flaky.addr.to_string();
    let c = cfg(&[&flaky, &live]);
    let (logs, _guard) = Logs::capture();
    runtime().block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        // The first pick is the dead one: that request goes on to the live one, and so
        // does every later one, without another try at the dead one.
        for i in 0..20 {
            let res = pool
                .insert(
                    None,
                    &encode("packet_data", &[row(i)]),
                    HINTS,
                    REQUEST_TIMEOUT,
                )
                .await;
            assert_eq!(res, Ok(1), "insert {i}");
        }
        let states = pool.states();
        assert_eq!((states[0].up, states[0].failures), (false, 1), "{states:?}");
        assert_eq!((states[1].up, states[1].failures), (true, 0));
        assert_eq!(live.rows("packet_data").len(), 20);
        let down = logs.lines_with(&format!("endpoint {flaky_addr} is down"));
        assert_eq!(down.len(), 1, "{}", logs.text());
        assert!(down[0].contains("WARN"), "{}", down[0]);

        // The probe puts it back once it answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pool.states()[0].up && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(pool.states()[0].up, "{}", logs.text());
        for i in 20..40 {
            let res = pool
                .insert(
                    None,
                    &encode("packet_data", &[row(i)]),
                    HINTS,
                    REQUEST_TIMEOUT,
                )
                .await;
            assert_eq!(res, Ok(1), "insert {i}");
        }
    });
    // Back in rotation: requests are spread over both again.
    let (to_flaky, to_live) = (
        flaky.rows("packet_data").len(),
        live.rows("packet_data").len(),
    );
    assert_eq!(to_flaky + to_live, 40);
    assert_eq!((to_flaky, to_live), (10, 30), "round robin over both");
    assert_eq!(
        logs.lines_with(&format!("endpoint {flaky_addr} answers again"))
            .len(),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(logs.lines_with("is down").len(), 1, "{}", logs.text());
}

#[test]
fn all_endpoints_down_is_one_retriable_failure_naming_each() {
    // Ports nothing listens on.
    let dead: Vec<String> = (0..2)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        })
        .collect();
    let c = cfg_addrs(dead.clone());
    runtime().block_on(async {
        let pool = Endpoints::connect(&c).unwrap();
        let res = pool
            .insert(
                None,
                &encode("packet_data", &[row(1)]),
                HINTS,
                REQUEST_TIMEOUT,
            )
            .await;
        assert!(
            matches!(res, Err(Failure::Retry { endpoint: true, .. })),
            "{res:?}"
        );
        assert!(pool.states().iter().all(|s| !s.up && s.failures == 1));
        // Now nothing is tried: the answer is at once, naming every endpoint.
        let started = Instant::now();
        let Err(Failure::Retry { why, .. }) = pool
            .insert(
                None,
                &encode("packet_data", &[row(2)]),
                HINTS,
                REQUEST_TIMEOUT,
            )
            .await
        else {
            panic!()
        };
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(
            why.starts_with("every GreptimeDB endpoint is down"),
            "{why}"
        );
        assert!(dead.iter().all(|d| why.contains(d.as_str())), "{why}");
        assert!(pool.states().iter().all(|s| s.failures == 1));
    });
}

/// Item 7: a request that stalls until the 10 s request timeout, then a server that is
/// back: "writable again after" counts from when the first failed request was sent, not
/// from when it failed.
#[test]
fn an_outage_is_timed_from_its_first_failed_attempt() {
    let endpoint = Endpoint::start(None);
    let stall = REQUEST_TIMEOUT + Duration::from_secs(2);
    let c = cfg(&[&endpoint]);
    let (logs, _guard) = Logs::capture();
    let counters = Arc::new(Counters::default());
    let mut stalled_at = Instant::now();
    runtime().block_on(async {
        let (tx, rx) = queue::bounded(1000);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let sink = tokio::spawn(flowmetrix::sink::greptime::run(
            c.clone(),
            rx,
            Arc::clone(&counters),
            Default::default(),
            stop_rx,
            None,
        ));
        // A first row lands (and the start-up check is done) before the server stalls.
        tx.try_send(vec![row(1)]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while endpoint.rows("packet_data").is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(endpoint.rows("packet_data").len(), 1, "{}", logs.text());
        endpoint.stall(Some(stall));
        stalled_at = Instant::now();
        tx.try_send(vec![row(2)]).unwrap();
        tokio::time::sleep(stall).await;
        endpoint.stall(None);
        let deadline = Instant::now() + Duration::from_secs(15);
        while logs.lines_with("writable again").is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(tx);
        stop.send_replace(true);
        sink.await.unwrap().unwrap();
    });
    let lines = logs.lines_with("writable again after");
    assert_eq!(lines.len(), 1, "{}", logs.text());
    let secs: f64 = lines[0]
        .split("writable again after ")
        .nth(1)
        .and_then(|s| s.trim().strip_suffix('s'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{}", lines[0]));
    // The failed request was sent right after the stall began; it failed 10 s later.
    assert!(
        secs >= stall.as_secs_f64() - 0.5 && secs <= stalled_at.elapsed().as_secs_f64(),
        "outage {secs}s for a {stall:?} stall:\n{}",
        logs.text()
    );
    assert_eq!(logs.lines_with("retrying").len(), 1, "{}", logs.text());
}

#[test]
fn live_mode_basic_auth_encoding_is_standard_base64() {
    assert_eq!(common::live::base64(b"user:pass"), "dXNlcjpwYXNz");
    assert_eq!(common::live::base64(b"a"), "YQ==");
    assert_eq!(common::live::base64(b"ab"), "YWI=");
}
