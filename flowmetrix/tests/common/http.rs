//! The tests' HTTP client (ureq, plain HTTP): `/metrics` scrapes and a live GreptimeDB's SQL
//! API. Included by path where a suite does not take all of `common`.
#![allow(dead_code)] // each test binary uses a different part

use std::time::Duration;

/// A client that answers within `within`, never goes through a proxy (the tests speak to
/// loopback and namespaces), and gives every status as a value.
pub fn agent(within: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(within))
        .proxy(None)
        .http_status_as_error(false)
        .build()
        .into()
}

/// Status code and body of `GET url` over a fresh connection, within `within`.
pub fn get(url: &str, within: Duration) -> (u16, String) {
    let mut resp = agent(within)
        .get(url)
        .header("Connection", "close")
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: no answer within {within:?}: {e}"));
    let body = resp
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (resp.status().as_u16(), body)
}
