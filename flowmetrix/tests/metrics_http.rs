//! The `/metrics` HTTP server on loopback, no root needed: idle connections do not stop a
//! scrape, other paths are 404, idle connections are closed after the read timeout, and a
//! connection past the bound is answered 503 at once.

#[path = "common/http.rs"]
mod http;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use flowmetrix::metrics::{self, Counters, Gauges, KernelStats, Limits, Registry};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

async fn start(limits: Limits) -> (SocketAddr, Arc<Registry>) {
    let registry = Arc::new(Registry {
        gauges: Gauges {
            sample_rate: 4,
            snaplen: 128,
        },
        ..Default::default()
    });
    registry.set_kernel(KernelStats {
        seen: 40,
        sampled: 10,
        ring_drops: 0,
        ..Default::default()
    });
    Counters::add(&registry.counters.written, 10);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(metrics::serve_with(listener, Arc::clone(&registry), limits));
    (addr, registry)
}

/// Status code and body of `GET path` over a fresh connection, within `within`.
async fn get(addr: SocketAddr, path: &str, within: Duration) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || http::get(&url, within))
        .await
        .expect("GET")
}

/// Waits until the server closes `s` (EOF or reset), at most `within`; the time it took.
async fn closed_by_server(s: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("connection still open after {within:?}"));
    started.elapsed()
}

/// Reads one whole response (head and `Content-Length` body) from a kept-alive connection;
/// its status, or `None` if the server closed the connection first.
async fn read_response(s: &mut TcpStream) -> Option<u16> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("Content-Length");
            if got.len() >= end + 4 + len {
                return head.get(9..12).and_then(|c| c.parse().ok());
            }
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_answers_while_200_idle_connections_are_open() {
    let (addr, _registry) = start(Limits::default()).await;
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(addr).await.expect("idle connect"));
    }
    // Let the server accept all of them before the scrape.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let (status, body) = get(addr, "/metrics", Duration::from_secs(1)).await;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(1));
    for line in [
        "flowmetrix_packets_seen_total 40",
        "flowmetrix_packets_sampled_total 10",
        "flowmetrix_rows_written_total 10",
        "flowmetrix_sample_rate 4",
        "flowmetrix_snaplen_bytes 128",
        "flowmetrix_spooled_rows_total 0",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} missing:\n{body}");
    }

    // The 200 were still open during the scrape; the server closes them after the read
    // timeout (counted from when they connected).
    for s in &mut idle {
        closed_by_server(s, metrics::READ_TIMEOUT + Duration::from_secs(3)).await;
    }
    assert!(
        opened.elapsed() + Duration::from_millis(50) >= metrics::READ_TIMEOUT,
        "idle connections closed before the read timeout"
    );
}

#[tokio::test]
async fn other_paths_and_methods_are_404() {
    let (addr, _registry) = start(Limits::default()).await;
    for path in ["/", "/metricsx", "/metrics/", "/favicon.ico"] {
        let (status, _) = get(addr, path, Duration::from_secs(2)).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, body) = get(addr, "/metrics?name=x", Duration::from_secs(2)).await;
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE flowmetrix_queue_depth_rows gauge"));

    let url = format!("http://{addr}/metrics");
    let resp = tokio::task::spawn_blocking(move || {
        http::agent(Duration::from_secs(2))
            .post(&url)
            .header("Connection", "close")
            .send_empty()
            .expect("answer in time")
    })
    .await
    .expect("POST");
    assert_eq!(
        (resp.version(), resp.status().as_u16()),
        (ureq::http::Version::HTTP_11, 404),
        "{resp:?}"
    );
}

#[tokio::test]
async fn idle_and_half_sent_connections_are_closed_after_the_read_timeout() {
    let read_timeout = Duration::from_millis(500);
    let (addr, _registry) = start(Limits {
        read_timeout,
        ..Limits::default()
    })
    .await;
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut partial = TcpStream::connect(addr).await.expect("connect");
    partial
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send");
    let took = closed_by_server(&mut silent, Duration::from_secs(5)).await;
    assert!(took + Duration::from_millis(50) >= read_timeout, "{took:?}");
    closed_by_server(&mut partial, Duration::from_secs(5)).await;

    // A kept-alive connection that goes quiet after its answer is closed too.
    let mut kept = TcpStream::connect(addr).await.expect("connect");
    kept.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    assert_eq!(read_response(&mut kept).await, Some(200));
    closed_by_server(&mut kept, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn past_the_bound_a_scrape_fails_fast_then_works_once_one_closes() {
    let (addr, _registry) = start(Limits {
        max_connections: 4,
        ..Limits::default()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (status, body) = get(addr, "/metrics", Duration::from_secs(1)).await;
    assert_eq!(status, 503, "{body}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // One client leaves: its slot is free again.
    drop(idle.pop());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (status, _) = get(addr, "/metrics", Duration::from_secs(1)).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slot not released: still {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_busy_keep_alive_connection_is_closed_after_its_lifetime() {
    let max_lifetime = Duration::from_millis(400);
    let (addr, _registry) = start(Limits {
        max_lifetime,
        ..Limits::default()
    })
    .await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let mut answered = 0;
    // Well within the read timeout each time, so only the lifetime can end it.
    let closed = loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still open after 5 s"
        );
        if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .is_err()
        {
            break started.elapsed();
        }
        match tokio::time::timeout(Duration::from_secs(2), read_response(&mut s)).await {
            Ok(Some(status)) => {
                assert_eq!(status, 200);
                answered += 1;
            }
            _ => break started.elapsed(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(answered >= 2, "kept alive for {answered} answers");
    assert!(
        closed + Duration::from_millis(50) >= max_lifetime,
        "{closed:?}"
    );
}
