//! The HTTP server for `/metrics`: hyper's HTTP/1 connection handling, with a bound on
//! connections held at once and a deadline for each request head.
//!
//! - At most [`MAX_CONNECTIONS`] connections at once. Past that, a new connection is answered
//!   `503` at once and closed, so a scraper fails fast instead of waiting in a queue.
//! - A connection that has not sent a whole request head within [`READ_TIMEOUT`] (on
//!   connecting, or between keep-alive requests) is closed; one that lives past
//!   [`MAX_LIFETIME`] is asked to finish its current response and closed.
//! - `GET /metrics` (any query) is the page; everything else is `404`.

use std::{
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::{debug, warn};

use super::{exposition, registry::Registry};

/// Connections served at once. Each one costs a task and at most [`MAX_HEAD_BYTES`] of buffer,
/// so this bounds the server at a few MiB; it is well above what scrapers open, and above the
/// 200 idle connections the tests hold open while a scrape must still answer.
pub const MAX_CONNECTIONS: usize = 256;

/// Time a connection has to send a whole request head (idle connections are closed after it).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a connection is kept, however busy.
pub const MAX_LIFETIME: Duration = Duration::from_secs(60);

/// Largest request head read (hyper's minimum read buffer).
pub const MAX_HEAD_BYTES: usize = 8192;

/// What a connection past the bound is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 22\r\nConnection: close\r\n\r\ntoo many connections\r\n";

/// The server's bounds; [`Limits::default`] is the documented one.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub read_timeout: Duration,
    pub max_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            read_timeout: READ_TIMEOUT,
            max_lifetime: MAX_LIFETIME,
        }
    }
}

/// Serves `GET /metrics` on `listener` with the default [`Limits`] until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    serve_with(listener, registry, Limits::default()).await;
}

/// Serves `GET /metrics` on `listener` within `limits` until the task is dropped.
pub async fn serve_with(listener: TcpListener, registry: Arc<Registry>, limits: Limits) {
    let page = Arc::new(exposition::exposition(registry));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut refusing = false;
    let mut accept_error_logged: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: say so now and then, and do not spin.
                if accept_error_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    warn!("metrics server cannot accept connections: {e}");
                    accept_error_logged = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if !refusing {
                warn!(
                    "metrics server has {} connections open; refusing new ones (503) until some close",
                    limits.max_connections
                );
                refusing = true;
            }
            refuse(&stream);
            continue;
        };
        refusing = false;
        let page = Arc::clone(&page);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = connection(stream, page, limits).await {
                debug!("metrics connection from {peer}: {e}");
            }
        });
    }
}

/// Answers `503` without waiting for anything: what the socket takes now is all it gets.
fn refuse(stream: &tokio::net::TcpStream) {
    // Read what already arrived, so closing sends FIN rather than a reset that would hide
    // the answer from the client.
    let mut buf = [0u8; 1024];
    while matches!(stream.try_read(&mut buf), Ok(n) if n > 0) {}
    let _ = stream.try_write(BUSY);
}

async fn connection(
    stream: tokio::net::TcpStream,
    page: Arc<prometheus_client::registry::Registry>,
    limits: Limits,
) -> Result<(), hyper::Error> {
    let service = hyper::service::service_fn(move |req| {
        let page = Arc::clone(&page);
        async move { Ok::<_, Infallible>(answer(&req, &page)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => done,
        () = tokio::time::sleep(limits.max_lifetime) => {
            conn.as_mut().graceful_shutdown();
            // A client that will not take its answer is dropped after one more read timeout.
            tokio::time::timeout(limits.read_timeout, conn).await.unwrap_or(Ok(()))
        }
    }
}

fn answer<B>(
    req: &Request<B>,
    page: &prometheus_client::registry::Registry,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) =
        if req.method() == Method::GET && req.uri().path() == "/metrics" {
            (
                StatusCode::OK,
                exposition::CONTENT_TYPE,
                exposition::encode(page),
            )
        } else {
            (
                StatusCode::NOT_FOUND,
                "text/plain",
                "try GET /metrics\n".to_owned(),
            )
        };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
