//! A real GreptimeDB, when the environment names one:
//!
//! - `FLOWMETRIX_TEST_GREPTIMEDB`: its gRPC endpoint, `host:port` (e.g. `127.0.0.1:4001`);
//! - `FLOWMETRIX_TEST_GREPTIMEDB_HTTP`: its HTTP endpoint, `host:port` (default: the gRPC
//!   host with port 4000), used to read rows back with `POST /v1/sql`;
//! - `FLOWMETRIX_GREPTIME_USERNAME` / `FLOWMETRIX_GREPTIME_PASSWORD`, if it needs them
//!   (passed to the collector as they are).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    time::Duration,
};

use serde_json::{Map, Value};

pub struct Live {
    pub grpc: SocketAddr,
    http: SocketAddr,
    auth: Option<String>,
    /// The user and password, for a collector run through the library.
    pub user: Option<(String, String)>,
}

/// What a live test prints when it does not run: one line.
pub fn skipped(test: &str) {
    eprintln!(
        "skipped {test}: FLOWMETRIX_TEST_GREPTIMEDB is not set (live tier; see README, Test)"
    );
}

/// A table name no earlier run used: `fm_live_<what>_<pid>_<unix seconds>`.
pub fn fresh_table(what: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("fm_live_{what}_{}_{secs}", std::process::id())
}

fn resolve(s: &str) -> SocketAddr {
    s.to_socket_addrs()
        .unwrap_or_else(|e| panic!("cannot resolve {s}: {e}"))
        .next()
        .unwrap_or_else(|| panic!("{s} has no address"))
}

/// Standard base64 (with padding), as HTTP basic authentication wants it.
pub fn base64(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Live {
    pub fn from_env() -> Option<Self> {
        let grpc = std::env::var("FLOWMETRIX_TEST_GREPTIMEDB").ok()?;
        let http = std::env::var("FLOWMETRIX_TEST_GREPTIMEDB_HTTP").unwrap_or_else(|_| {
            let host = grpc.rsplit_once(':').map_or(grpc.as_str(), |(h, _)| h);
            format!("{host}:4000")
        });
        let user = match (
            std::env::var("FLOWMETRIX_GREPTIME_USERNAME"),
            std::env::var("FLOWMETRIX_GREPTIME_PASSWORD"),
        ) {
            (Ok(u), Ok(p)) => Some((u, p)),
            _ => None,
        };
        let auth = user
            .as_ref()
            .map(|(u, p)| base64(format!("{u}:{p}").as_bytes()));
        Some(Self {
            grpc: resolve(&grpc),
            http: resolve(&http),
            auth,
            user,
        })
    }

    /// Runs one SQL statement through `POST /v1/sql` and returns its rows as objects.
    pub fn sql(&self, db: &str, query: &str) -> Vec<Map<String, Value>> {
        let body = format!("sql={}", url_encode(query));
        let mut req = format!(
            "POST /v1/sql?db={db} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            self.http,
            body.len()
        );
        if let Some(a) = &self.auth {
            req.push_str(&format!("Authorization: Basic {a}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        let mut s =
            TcpStream::connect_timeout(&self.http, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let text = String::from_utf8_lossy(&resp);
        let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert!(head.contains(" 200 "), "{query}: {head}\n{body}");
        let records = &v["output"][0]["records"];
        let names: Vec<String> = records["schema"]["column_schemas"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| c["name"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        records["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        names
                            .iter()
                            .cloned()
                            .zip(r.as_array().cloned().unwrap_or_default())
                            .collect()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
