//! A real GreptimeDB, when the environment names one:
//!
//! - `FLOWMETRIX_TEST_GREPTIMEDB`: its gRPC endpoint, `host:port` (e.g. `127.0.0.1:4001`);
//! - `FLOWMETRIX_TEST_GREPTIMEDB_HTTP`: its HTTP endpoint, `host:port` (default: the gRPC
//!   host with port 4000), used to read rows back with `POST /v1/sql`;
//! - `FLOWMETRIX_GREPTIME_USERNAME` / `FLOWMETRIX_GREPTIME_PASSWORD`, if it needs them
//!   (passed to the collector as they are).

use std::{
    net::{SocketAddr, ToSocketAddrs},
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
        let url = format!("http://{}/v1/sql?db={db}", self.http);
        let mut req = super::http::agent(Duration::from_secs(30)).post(&url);
        if let Some(a) = &self.auth {
            req = req.header("Authorization", format!("Basic {a}"));
        }
        let mut resp = req
            .send_form([("sql", query)])
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        let status = resp.status();
        let body = resp
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(status, 200, "{query}: {body}");
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
