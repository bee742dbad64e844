use std::collections::BTreeMap;

use greptimedb_ingester::api::v1::SemanticType;

use super::*;
use crate::schema::Column;

#[test]
fn packet_data_ddl_is_the_documented_one() {
    let sql = create_table("packet_data", SCHEMA, Some("7d"), &[]);
    let bloom = BLOOM;
    let expected = format!(
        r#"CREATE TABLE IF NOT EXISTS "packet_data" (
  "ts" TIMESTAMP(9) NOT NULL,
  "host" STRING NULL INVERTED INDEX,
  "interface" STRING NULL INVERTED INDEX,
  "direction" STRING NULL INVERTED INDEX,
  "application" STRING NULL INVERTED INDEX,
  "packet_type" STRING NULL INVERTED INDEX,
  "packet_size" SMALLINT UNSIGNED NULL,
  "ether_type" SMALLINT UNSIGNED NULL,
  "src_mac" STRING NULL,
  "dst_mac" STRING NULL,
  "vlan_id" SMALLINT UNSIGNED NULL,
  "protocol" TINYINT UNSIGNED NULL INVERTED INDEX,
  "src_ip" STRING NULL {bloom},
  "dst_ip" STRING NULL {bloom},
  "src_port" SMALLINT UNSIGNED NULL,
  "dst_port" SMALLINT UNSIGNED NULL INVERTED INDEX,
  "tcp_flags" TINYINT UNSIGNED NULL,
  "tunnel" STRING NULL,
  "inner_src_ip" STRING NULL,
  "inner_dst_ip" STRING NULL,
  "inner_protocol" TINYINT UNSIGNED NULL,
  "inner_src_port" SMALLINT UNSIGNED NULL,
  "inner_dst_port" SMALLINT UNSIGNED NULL,
  "mpls_labels" STRING NULL,
  "sample_rate" INT UNSIGNED NULL,
  "cgroup_id" BIGINT UNSIGNED NULL,
  "container_id" STRING NULL {bloom},
  "pod_uid" STRING NULL {bloom},
  "pod" STRING NULL {bloom},
  "namespace" STRING NULL INVERTED INDEX,
  TIME INDEX ("ts"),
  PRIMARY KEY ("host", "interface", "direction", "application", "packet_type")
)
ENGINE=mito
WITH(append_mode = 'true', ttl = '7d')"#
    );
    assert_eq!(sql, expected);
    assert_eq!(
        bloom,
        "SKIPPING INDEX WITH(false_positive_rate = '0.01', granularity = '10240', type = 'BLOOM')"
    );
}

#[test]
fn flow_data_ddl_is_the_documented_one() {
    let sql = create_table("flow_data", FLOW_SCHEMA, None, &[]);
    let bloom = BLOOM;
    let expected = format!(
        r#"CREATE TABLE IF NOT EXISTS "flow_data" (
  "ts" TIMESTAMP(9) NOT NULL,
  "host" STRING NULL INVERTED INDEX,
  "interface" STRING NULL INVERTED INDEX,
  "direction" STRING NULL INVERTED INDEX,
  "application" STRING NULL INVERTED INDEX,
  "vlan_id" SMALLINT UNSIGNED NULL,
  "ether_type" SMALLINT UNSIGNED NULL,
  "src_ip" STRING NULL {bloom},
  "dst_ip" STRING NULL {bloom},
  "protocol" TINYINT UNSIGNED NULL INVERTED INDEX,
  "src_port" SMALLINT UNSIGNED NULL,
  "dst_port" SMALLINT UNSIGNED NULL INVERTED INDEX,
  "packets" BIGINT UNSIGNED NULL,
  "bytes" BIGINT UNSIGNED NULL,
  "first_seen" TIMESTAMP(9) NULL,
  "last_seen" TIMESTAMP(9) NULL,
  "tcp_flags" TINYINT UNSIGNED NULL,
  "interval_ms" INT UNSIGNED NULL,
  "tcp_handshake_us" BIGINT UNSIGNED NULL,
  "tcp_syn_retransmits" INT UNSIGNED NULL,
  "tcp_retransmits" INT UNSIGNED NULL,
  "tcp_rtt_us" BIGINT UNSIGNED NULL,
  "drop_packets" BIGINT UNSIGNED NULL,
  "drop_bytes" BIGINT UNSIGNED NULL,
  "drop_reason" STRING NULL INVERTED INDEX,
  "cgroup_id" BIGINT UNSIGNED NULL,
  "container_id" STRING NULL {bloom},
  "pod_uid" STRING NULL {bloom},
  "pod" STRING NULL {bloom},
  "namespace" STRING NULL INVERTED INDEX,
  TIME INDEX ("ts"),
  PRIMARY KEY ("host", "interface", "direction", "application")
)
ENGINE=mito
WITH(append_mode = 'true')"#
    );
    assert_eq!(sql, expected);
}

#[test]
fn the_primary_keys_are_the_declared_tags_and_every_index_names_a_column() {
    fn check<R>(columns: &[Column<R>]) {
        let primary_key = primary_key(columns);
        assert!(primary_key.len() <= 5, "GreptimeDB: at most 5 tags");
        let mut tags: Vec<&str> = columns
            .iter()
            .filter(|c| c.semantic == SemanticType::Tag)
            .map(|c| c.name)
            .collect();
        let mut key = primary_key.to_vec();
        tags.sort_unstable();
        key.sort_unstable();
        assert_eq!(
            tags, key,
            "the rows declare exactly the key columns as tags"
        );
        for c in columns {
            let (name, index) = (c.name, c.index);
            if index == Some(Index::Bloom) {
                assert_eq!(c.semantic, SemanticType::Field, "{name}: IPs are fields");
            }
        }
    }
    check(SCHEMA);
    check(FLOW_SCHEMA);
    assert_eq!(
        primary_key(SCHEMA),
        [
            "host",
            "interface",
            "direction",
            "application",
            "packet_type"
        ]
    );
    assert_eq!(
        primary_key(FLOW_SCHEMA),
        ["host", "interface", "direction", "application"]
    );
    let names: Vec<&str> = FLOW_SCHEMA.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "ts",
            "host",
            "interface",
            "direction",
            "application",
            "vlan_id",
            "ether_type",
            "src_ip",
            "dst_ip",
            "protocol",
            "src_port",
            "dst_port",
            "packets",
            "bytes",
            "first_seen",
            "last_seen",
            "tcp_flags",
            "interval_ms",
            "tcp_handshake_us",
            "tcp_syn_retransmits",
            "tcp_retransmits",
            "tcp_rtt_us",
            "drop_packets",
            "drop_bytes",
            "drop_reason",
            "cgroup_id",
            "container_id",
            "pod_uid",
            "pod",
            "namespace"
        ]
    );
}

#[test]
fn partitioning_by_host_splits_at_the_given_points() {
    assert_eq!(partition(&[]), None);
    let splits = ["g".to_owned(), "p".to_owned()];
    assert_eq!(
        partition(&splits).unwrap(),
        "PARTITION ON COLUMNS (\"host\") (\n  \"host\" < 'g',\n  \"host\" >= 'g' AND \"host\" < 'p',\n  \"host\" >= 'p'\n)"
    );
    let sql = create_table("packet_data", SCHEMA, None, &splits);
    assert!(
        sql.ends_with(
            ")\nPARTITION ON COLUMNS (\"host\") (\n  \"host\" < 'g',\n  \"host\" >= 'g' AND \"host\" < 'p',\n  \"host\" >= 'p'\n)\nENGINE=mito\nWITH(append_mode = 'true')"
        ),
        "{sql}"
    );
    assert_eq!(
        partition(&["o'neil".to_owned()]).unwrap(),
        "PARTITION ON COLUMNS (\"host\") (\n  \"host\" < 'o''neil',\n  \"host\" >= 'o''neil'\n)"
    );
}

#[test]
fn rollups_are_named_and_written_in_the_1_0_grammar() {
    let r = rollups("packet_data", None);
    let names: Vec<(&str, &str)> = r
        .iter()
        .map(|r| (r.flow.as_str(), r.sink.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("packet_data_1m_flow", "packet_data_1m"),
            ("packet_data_talkers_1m_flow", "packet_data_talkers_1m"),
            ("packet_data_workloads_1m_flow", "packet_data_workloads_1m")
        ]
    );
    assert_eq!(
        r[0].sql,
        "CREATE FLOW IF NOT EXISTS \"packet_data_1m_flow\" SINK TO \"packet_data_1m\" COMMENT 'flowmetrix: packets and bytes per minute, scaled by sample_rate' AS SELECT \"host\", \"interface\", \"direction\", \"application\", \"protocol\", date_bin(INTERVAL '1 minutes', \"ts\") AS \"minute\", sum(CAST(\"sample_rate\" AS BIGINT UNSIGNED)) AS \"packets\", sum(CAST(\"packet_size\" AS BIGINT UNSIGNED) * \"sample_rate\") AS \"bytes\" FROM \"packet_data\" GROUP BY \"host\", \"interface\", \"direction\", \"application\", \"protocol\", \"minute\""
    );
    assert!(r[1].sql.contains(
        "AS SELECT \"host\", \"direction\", \"src_ip\", \"dst_ip\", date_bin(INTERVAL '1 minutes', \"ts\") AS \"minute\""
    ));
    let with_flows = rollups("packet_data", Some("flow_data"));
    assert_eq!(with_flows.len(), 6);
    assert_eq!(with_flows[2].sink, "flow_data_1m");
    assert_eq!(
        with_flows[2].sql,
        "CREATE FLOW IF NOT EXISTS \"flow_data_1m_flow\" SINK TO \"flow_data_1m\" COMMENT 'flowmetrix: exact packets and bytes per minute' AS SELECT \"host\", \"interface\", \"direction\", \"application\", \"protocol\", date_bin(INTERVAL '1 minutes', \"ts\") AS \"minute\", sum(\"packets\") AS \"packets\", sum(\"bytes\") AS \"bytes\" FROM \"flow_data\" GROUP BY \"host\", \"interface\", \"direction\", \"application\", \"protocol\", \"minute\""
    );
    assert_eq!(with_flows[3].sink, "flow_data_talkers_1m");
    assert!(r[2].sql.contains(
        "AS SELECT \"host\", \"direction\", \"namespace\", \"pod\", date_bin(INTERVAL '1 minutes', \"ts\") AS \"minute\""
    ));
    assert_eq!(with_flows[5].sink, "flow_data_workloads_1m");
}

// A tiny evaluator of the rollups' SELECT, with SQL's integer types: a product is computed
// in the wider of its operands' types and wraps there (DataFusion's arithmetic), CAST
// widens, sum() adds in 64 bits. It runs the very text the collector sends.

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum V {
    /// An unsigned integer and its width in bits.
    U(u64, u32),
    Ts(i64),
    S(String),
}

#[derive(Debug, Clone)]
enum E {
    Col(String),
    Cast(Box<E>, u32),
    Mul(Box<E>, Box<E>),
    Sum(Box<E>),
    Bin(i64, Box<E>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Quoted(String),
    Word(String),
    Str(String),
    Open,
    Close,
    Comma,
    Star,
}

fn lex(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            ' ' => {}
            '(' => out.push(Tok::Open),
            ')' => out.push(Tok::Close),
            ',' => out.push(Tok::Comma),
            '*' => out.push(Tok::Star),
            '"' | '\'' => {
                let mut t = String::new();
                for d in it.by_ref() {
                    if d == c {
                        break;
                    }
                    t.push(d);
                }
                out.push(if c == '"' {
                    Tok::Quoted(t)
                } else {
                    Tok::Str(t)
                });
            }
            _ => {
                let mut t = c.to_string();
                while let Some(&d) = it.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' {
                        t.push(d);
                        it.next();
                    } else {
                        break;
                    }
                }
                out.push(Tok::Word(t));
            }
        }
    }
    out
}

struct P(Vec<Tok>, usize);

impl P {
    fn next(&mut self) -> Tok {
        self.1 += 1;
        self.0[self.1 - 1].clone()
    }
    fn peek(&self) -> Option<&Tok> {
        self.0.get(self.1)
    }
    fn eat(&mut self, t: &Tok) {
        assert_eq!(&self.next(), t);
    }
    fn word(&mut self, w: &str) {
        assert_eq!(self.next(), Tok::Word(w.into()));
    }
    fn expr(&mut self) -> E {
        let mut e = self.term();
        while self.peek() == Some(&Tok::Star) {
            self.next();
            e = E::Mul(Box::new(e), Box::new(self.term()));
        }
        e
    }
    fn term(&mut self) -> E {
        match self.next() {
            Tok::Quoted(c) => E::Col(c),
            Tok::Word(w) if w == "CAST" => {
                self.eat(&Tok::Open);
                let e = self.expr();
                self.word("AS");
                self.word("BIGINT");
                self.word("UNSIGNED");
                self.eat(&Tok::Close);
                E::Cast(Box::new(e), 64)
            }
            Tok::Word(w) if w == "sum" => {
                self.eat(&Tok::Open);
                let e = self.expr();
                self.eat(&Tok::Close);
                E::Sum(Box::new(e))
            }
            Tok::Word(w) if w == "date_bin" => {
                self.eat(&Tok::Open);
                self.word("INTERVAL");
                assert_eq!(self.next(), Tok::Str("1 minutes".into()));
                self.eat(&Tok::Comma);
                let e = self.expr();
                self.eat(&Tok::Close);
                E::Bin(60_000_000_000, Box::new(e))
            }
            t => panic!("unexpected {t:?}"),
        }
    }
}

/// (alias, expression) of each item of the SELECT list of `sql`, and the source table.
fn select_list(sql: &str) -> (Vec<(String, E)>, String) {
    let body = sql.split_once(" AS SELECT ").unwrap().1;
    let (items, rest) = body.split_once(" FROM ").unwrap();
    let source = rest.split(' ').next().unwrap().trim_matches('"').to_owned();
    let mut p = P(lex(items), 0);
    let mut out = Vec::new();
    loop {
        let e = p.expr();
        let alias = if p.peek() == Some(&Tok::Word("AS".into())) {
            p.next();
            match p.next() {
                Tok::Quoted(a) => a,
                t => panic!("{t:?}"),
            }
        } else {
            match &e {
                E::Col(c) => c.clone(),
                _ => panic!("an expression without a name"),
            }
        };
        out.push((alias, e));
        if p.peek().is_none() {
            return (out, source);
        }
        p.eat(&Tok::Comma);
    }
}

fn eval(e: &E, row: &BTreeMap<&str, V>) -> V {
    match e {
        E::Col(c) => row[c.as_str()].clone(),
        E::Cast(e, bits) => match eval(e, row) {
            V::U(v, _) => V::U(v, *bits),
            v => panic!("cast of {v:?}"),
        },
        E::Mul(a, b) => match (eval(a, row), eval(b, row)) {
            (V::U(a, x), V::U(b, y)) => {
                let bits = x.max(y);
                let wide = u128::from(a) * u128::from(b);
                V::U((wide % (1u128 << bits)) as u64, bits)
            }
            v => panic!("product of {v:?}"),
        },
        E::Bin(width, e) => match eval(e, row) {
            V::Ts(t) => V::Ts(t - t.rem_euclid(*width)),
            v => panic!("date_bin of {v:?}"),
        },
        E::Sum(_) => panic!("nested aggregate"),
    }
}

/// Runs the rollup over `rows`: group key → (alias → value).
fn run(sql: &str, rows: &[BTreeMap<&str, V>]) -> BTreeMap<Vec<V>, BTreeMap<String, u64>> {
    let (items, _) = select_list(sql);
    let mut out: BTreeMap<Vec<V>, BTreeMap<String, u64>> = BTreeMap::new();
    for row in rows {
        let key: Vec<V> = items
            .iter()
            .filter(|(_, e)| !matches!(e, E::Sum(_)))
            .map(|(_, e)| eval(e, row))
            .collect();
        let sums = out.entry(key).or_default();
        for (alias, e) in &items {
            if let E::Sum(inner) = e {
                let V::U(v, _) = eval(inner, row) else {
                    panic!()
                };
                let acc = sums.entry(alias.clone()).or_default();
                *acc = acc.wrapping_add(v);
            }
        }
    }
    out
}

const MINUTE_NS: i64 = 60_000_000_000;

fn packet(minute: i64, second: i64, size: u16, rate: u32) -> BTreeMap<&'static str, V> {
    let s = |v: &str| V::S(v.to_owned());
    BTreeMap::from([
        ("ts", V::Ts(minute * MINUTE_NS + second * 1_000_000_000)),
        ("host", s("node-1")),
        ("interface", s("eth0")),
        ("direction", s("ingress")),
        ("application", s("HTTPS")),
        ("protocol", V::U(6, 8)),
        ("src_ip", s("10.0.0.1")),
        ("dst_ip", s("10.0.0.2")),
        ("namespace", s("shop")),
        ("pod", s("checkout-7d9f")),
        ("packet_size", V::U(u64::from(size), 16)),
        ("sample_rate", V::U(u64::from(rate), 32)),
    ])
}

#[test]
fn per_minute_bytes_are_the_sum_of_size_times_sample_rate_without_wrapping() {
    // Sampled rows of known sizes over two minutes, at very different rates: the last
    // product (9000 × 1 000 000) does not fit 32 bits.
    let rows = [
        packet(100, 1, 1514, 100),
        packet(100, 30, 64, 100),
        packet(100, 59, 9000, 1_000_000),
        packet(100, 59, 100, 10),
        packet(101, 0, 1514, 1),
    ];
    for r in rollups("packet_data", None) {
        let (_, source) = select_list(&r.sql);
        assert_eq!(source, "packet_data");
        let got = run(&r.sql, &rows);
        assert_eq!(got.len(), 2, "{}: one group per minute here", r.sink);
        let minutes: Vec<_> = got.values().collect();
        let want = |rows: &[BTreeMap<&str, V>]| {
            let (mut packets, mut bytes) = (0u64, 0u64);
            for row in rows {
                let (V::U(size, _), V::U(rate, _)) = (&row["packet_size"], &row["sample_rate"])
                else {
                    panic!()
                };
                packets += rate;
                bytes += size * rate;
            }
            BTreeMap::from([("bytes".to_owned(), bytes), ("packets".to_owned(), packets)])
        };
        assert_eq!(*minutes[0], want(&rows[..4]), "{}", r.sink);
        assert_eq!(*minutes[1], want(&rows[4..]), "{}", r.sink);
        assert_eq!(minutes[0]["bytes"], 151_400 + 6_400 + 9_000_000_000 + 1_000);
        assert_eq!(minutes[0]["packets"], 1_000_210);
    }
    // Without the cast the product wraps in 32 bits, as the live server showed
    // (GREPTIMEDB.md: 410 066 408 for 9000 B × 1 000 000 + 100 B × 10).
    let uncast = "CREATE FLOW x SINK TO y AS SELECT \"host\", sum(\"packet_size\" * \"sample_rate\") AS \"bytes\" FROM \"packet_data\" GROUP BY \"host\"";
    let got = run(uncast, &rows[2..4]);
    assert_eq!(got.values().next().unwrap()["bytes"], 410_066_408);
    let cast = "CREATE FLOW x SINK TO y AS SELECT \"host\", sum(CAST(\"packet_size\" AS BIGINT UNSIGNED) * \"sample_rate\") AS \"bytes\" FROM \"packet_data\" GROUP BY \"host\"";
    let got = run(cast, &rows[2..4]);
    assert_eq!(got.values().next().unwrap()["bytes"], 9_000_001_000);
}

#[test]
fn flow_rollups_add_exact_counts() {
    let s = |v: &str| V::S(v.to_owned());
    let flow = |minute: i64, packets: u64, bytes: u64| {
        BTreeMap::from([
            ("ts", V::Ts(minute * MINUTE_NS + 5)),
            ("host", s("node-1")),
            ("interface", s("eth0")),
            ("direction", s("egress")),
            ("application", s("DNS")),
            ("protocol", V::U(17, 8)),
            ("src_ip", s("10.0.0.1")),
            ("dst_ip", s("10.0.0.53")),
            ("namespace", s("shop")),
            ("pod", s("checkout-7d9f")),
            ("packets", V::U(packets, 64)),
            ("bytes", V::U(bytes, 64)),
        ])
    };
    let rows = [flow(7, 3, 300), flow(7, 5, 5_000_000_000), flow(8, 1, 64)];
    let r = &rollups("packet_data", Some("flow_data"))[2];
    let got = run(&r.sql, &rows);
    let minutes: Vec<_> = got.values().collect();
    assert_eq!(minutes[0]["packets"], 8);
    assert_eq!(minutes[0]["bytes"], 5_000_000_300);
    assert_eq!(minutes[1]["packets"], 1);
}
