//! One GET at a time to the kubelet or the API server: HTTP/1.1 over TLS that trusts the
//! cluster's CA only, with the ServiceAccount's bearer token (re-read for each request: the
//! kubelet rotates it). hyper's client connection and tokio-rustls are what the gRPC stack
//! already builds on, so this adds no HTTP or TLS stack of its own; one connection per request
//! suits a list every few seconds or one long watch.

use std::{path::PathBuf, sync::Arc, time::Duration};

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{
    Request, StatusCode,
    body::{Bytes, Incoming},
    client::conn::http1,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::{
    TlsConnector,
    rustls::{
        self, ClientConfig, RootCertStore,
        pki_types::{CertificateDer, ServerName, pem::PemObject as _},
    },
};

use super::error::KubeError;

/// The most a pod list may hold (a node's hundred pods, full specs, are a few MiB).
pub(super) const MAX_BODY: usize = 64 << 20;

/// Where the pod list is read: `https://host:port` (or `http://` for a local proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    pub tls: bool,
    /// Without brackets.
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `https://HOST[:PORT]` or `http://HOST[:PORT]`, an IPv6 address in brackets; a path,
    /// if any, is ignored.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{url}: not an http:// or https:// URL"));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url}: no ']' after the IPv6 address"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("{url}: bad port '{p}'"))?,
            None if tls => 443,
            None => 80,
        };
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
        })
    }

    /// `host:port` for the `Host` header and messages, an IPv6 address in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A client for one endpoint.
pub(super) struct Client {
    endpoint: Endpoint,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    token_file: Option<PathBuf>,
    /// For connecting and for the response's head (and a list's whole body).
    pub timeout: Duration,
}

impl Client {
    /// Reads the CA now: a client is made again after a failure, so a CA that appears
    /// later is taken.
    pub fn new(
        endpoint: Endpoint,
        ca_file: Option<&std::path::Path>,
        token_file: Option<PathBuf>,
        timeout: Duration,
    ) -> Result<Self, KubeError> {
        let tls = match (endpoint.tls, ca_file) {
            (false, _) => None,
            (true, None) => {
                return Err(KubeError::Ca(
                    "an https:// endpoint needs the cluster's CA certificate".into(),
                ));
            }
            (true, Some(ca)) => {
                let pem = std::fs::read(ca)
                    .map_err(|e| KubeError::Ca(format!("cannot read {}: {e}", ca.display())))?;
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| {
                        KubeError::Ca(format!("{}: not a PEM certificate: {e}", ca.display()))
                    })?;
                    roots.add(cert).map_err(|e| {
                        KubeError::Ca(format!("{}: unusable certificate: {e}", ca.display()))
                    })?;
                }
                if roots.is_empty() {
                    return Err(KubeError::Ca(format!(
                        "{}: no certificate in it",
                        ca.display()
                    )));
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| KubeError::Tls(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let name = ServerName::try_from(endpoint.host.clone())
                    .map_err(|e| KubeError::Tls(format!("{}: {e}", endpoint.host)))?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(Self {
            endpoint,
            tls,
            token_file,
            timeout,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// GET `path`: the response's body once its status is 2xx; the connection and the
    /// head within [`Client::timeout`].
    pub async fn get(&self, path: &str) -> Result<Incoming, KubeError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.request(path))
            .await
            .map_err(|_| KubeError::Timeout(timeout))?
    }

    /// GET `path` and its whole body (at most [`MAX_BODY`]), within [`Client::timeout`].
    pub async fn get_all(&self, path: &str) -> Result<Bytes, KubeError> {
        let timeout = self.timeout;
        let all = async {
            let body = self.request(path).await?;
            Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| KubeError::Http(format!("reading the answer: {e}")))
        };
        tokio::time::timeout(timeout, all)
            .await
            .map_err(|_| KubeError::Timeout(timeout))?
    }

    async fn request(&self, path: &str) -> Result<Incoming, KubeError> {
        let mut req = Request::get(path)
            .header(hyper::header::HOST, self.endpoint.authority())
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(file) = &self.token_file {
            let token = std::fs::read_to_string(file)
                .map_err(|e| KubeError::Token(format!("cannot read {}: {e}", file.display())))?;
            req = req.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            );
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| KubeError::Http(e.to_string()))?;
        let addr = (self.endpoint.host.as_str(), self.endpoint.port);
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| KubeError::Connect(format!("{}: {e}", self.endpoint.authority())))?;
        let response = match &self.tls {
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| KubeError::Tls(format!("{}: {e}", self.endpoint.authority())))?;
                send(TokioIo::new(stream), req).await?
            }
            None => send(TokioIo::new(tcp), req).await?,
        };
        let status = response.status();
        if !status.is_success() {
            return Err(KubeError::Status {
                status: status.as_u16(),
                hint: hint(status),
            });
        }
        Ok(response.into_body())
    }
}

/// One request on a fresh HTTP/1.1 connection, which lives as long as its response's body.
async fn send<T>(
    io: TokioIo<T>,
    req: Request<Empty<Bytes>>,
) -> Result<hyper::Response<Incoming>, KubeError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(io)
        .await
        .map_err(|e| KubeError::Http(e.to_string()))?;
    tokio::spawn(async move {
        // The body's reader sees a broken connection as its own error.
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| KubeError::Http(e.to_string()))
}

/// What to do about a refusal.
fn hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => {
            ": the ServiceAccount token was not accepted (is the token mounted and current?)"
        }
        StatusCode::FORBIDDEN => {
            ": the ServiceAccount may not list pods here (see the ClusterRole in deploy/kubernetes/)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_their_default_ports() {
        let e = |u| Endpoint::parse(u);
        assert_eq!(
            e("https://10.96.0.1:443"),
            Ok(Endpoint {
                tls: true,
                host: "10.96.0.1".into(),
                port: 443
            })
        );
        assert_eq!(e("https://node-1").unwrap().port, 443);
        assert_eq!(e("http://127.0.0.1/").unwrap().port, 80);
        let v6 = e("https://[fd00::1]:6443/api").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("fd00::1", 6443));
        assert_eq!(v6.authority(), "[fd00::1]:6443");
        assert!(e("ftp://x").is_err());
        assert!(e("https://:443").is_err());
        assert!(e("https://h:99999").is_err());
    }
}
