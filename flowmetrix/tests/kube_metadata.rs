//! `--kube-metadata` against a local HTTPS server that serves pod lists as the API server
//! and the kubelet do: the index filled from a list, a change picked up (from a watch event,
//! and from the next poll), and every failure (403, garbage JSON, no token, a CA that does
//! not match, no answer) counted by reason while the last good index stays.

use std::{
    convert::Infallible,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use flowmetrix::{
    attribution::kube::{self, KubeSettings, KubeSource, PodIndex, PodMeta},
    metrics::{Counters, KUBE_ERROR_REASONS},
};
use futures_util::StreamExt as _;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, body::Bytes, body::Frame, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, watch};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    },
};

/// What the server answers; the test changes it while the task runs.
struct State {
    status: u16,
    list: String,
    /// Requests seen: path and query, and the `Authorization` header.
    requests: Vec<(String, Option<String>)>,
    /// The open watch, to send events down.
    watch: Option<mpsc::UnboundedSender<Bytes>>,
}

struct Server {
    url: String,
    state: Arc<Mutex<State>>,
    dir: PathBuf,
    ca: PathBuf,
    token: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pod_list(version: &str, pods: &[(&str, &str, &str)]) -> String {
    let items: Vec<_> = pods
        .iter()
        .map(|(uid, name, ns)| {
            serde_json::json!({
                "metadata": {"uid": uid, "name": name, "namespace": ns,
                             "labels": {"app": name}},
                "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i"}]},
                "status": {"phase": "Running", "podIP": "10.244.3.17"}
            })
        })
        .collect();
    serde_json::json!({
        "kind": "PodList", "apiVersion": "v1",
        "metadata": {"resourceVersion": version}, "items": items
    })
    .to_string()
}

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it.
fn pki(dir: &std::path::Path) -> (PathBuf, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    (ca_file, cert.pem(), key.serialize_pem())
}

async fn server(list: String) -> Server {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "fmx-kube-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = pki(&dir);
    let token = dir.join("token");
    std::fs::write(&token, "tok-1\n").unwrap();
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let state = Arc::new(Mutex::new(State {
        status: 200,
        list,
        requests: Vec::new(),
        watch: None,
    }));
    let shared = Arc::clone(&state);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let state = Arc::clone(&shared);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req| answer(Arc::clone(&state), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Server {
        url,
        state,
        dir,
        ca,
        token,
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(
    state: Arc<Mutex<State>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut s = state.lock().unwrap();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    s.requests.push((path.clone(), auth));
    let response = Response::builder().status(s.status);
    if s.status != 200 {
        let body = Full::new(Bytes::from_static(b"{\"kind\":\"Status\"}"));
        return Ok(response.body(body.boxed()).unwrap());
    }
    if path.contains("watch=1") {
        // Open until the test drops the sender: events as the test sends them.
        let (tx, rx) = mpsc::unbounded_channel();
        s.watch = Some(tx);
        let frames = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
            .map(|b| Ok::<_, Infallible>(Frame::data(b)));
        return Ok(response
            .body(BodyExt::boxed(StreamBody::new(frames)))
            .unwrap());
    }
    let body = Full::new(Bytes::from(s.list.clone()));
    Ok(response.body(body.boxed()).unwrap())
}

fn settings(server: &Server, source: KubeSource) -> KubeSettings {
    KubeSettings {
        source,
        url: server.url.clone(),
        node: "node-1".into(),
        token_file: Some(server.token.clone()),
        ca_file: Some(server.ca.clone()),
        refresh: Duration::from_millis(100),
        timeout: Duration::from_secs(5),
    }
}

fn meta(name: &str, namespace: &str) -> Option<PodMeta> {
    Some(PodMeta {
        name: name.into(),
        namespace: namespace.into(),
    })
}

fn errors(counters: &Counters, reason: &str) -> u64 {
    let i = KUBE_ERROR_REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap();
    Counters::get(&counters.kube.errors[i])
}

/// Waits (a few seconds at most) until `done`.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_api_server_list_fills_the_index_and_a_watch_event_changes_it() {
    let server = server(pod_list("41", &[("u-1", "checkout-7d9f", "shop")])).await;
    let index = PodIndex::default();
    let counters = Arc::new(Counters::default());
    let (stop, stopped) = watch::channel(false);
    let task = kube::start(
        settings(&server, KubeSource::Api),
        index.clone(),
        Arc::clone(&counters),
        stopped,
    );
    until("the list", || index.lookup("u-1").is_some()).await;
    assert_eq!(index.lookup("u-1"), meta("checkout-7d9f", "shop"));
    assert_eq!(index.lookup("u-2"), None);
    until("the watch", || server.state.lock().unwrap().watch.is_some()).await;
    {
        let s = server.state.lock().unwrap();
        let (list, auth) = &s.requests[0];
        assert_eq!(list, "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1");
        assert_eq!(auth.as_deref(), Some("Bearer tok-1"));
        let (watch, _) = &s.requests[1];
        assert_eq!(
            watch,
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&watch=1&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion=41"
        );
    }
    // The token is re-read for each request (the kubelet rotates it); a new pod comes by
    // the watch, in two pieces, and one goes: the list is not asked again.
    std::fs::write(&server.token, "tok-2").unwrap();
    let tx = server.state.lock().unwrap().watch.clone().unwrap();
    let added = r#"{"type":"ADDED","object":{"metadata":{"uid":"u-2","name":"cart-1","namespace":"shop","resourceVersion":"42"}}}"#;
    tx.send(Bytes::from(&added[..30])).unwrap();
    tx.send(Bytes::from(format!("{}\n", &added[30..]))).unwrap();
    until("the added pod", || index.lookup("u-2").is_some()).await;
    assert_eq!(index.lookup("u-2"), meta("cart-1", "shop"));
    let deleted = r#"{"type":"DELETED","object":{"metadata":{"uid":"u-1","name":"checkout-7d9f","namespace":"shop","resourceVersion":"43"}}}"#;
    tx.send(Bytes::from(format!("{deleted}\n"))).unwrap();
    until("the deleted pod", || index.lookup("u-1").is_none()).await;
    assert_eq!(server.state.lock().unwrap().requests.len(), 2);
    assert_eq!(Counters::get(&counters.kube.pods), 1);
    assert_eq!(Counters::get(&counters.kube.updates), 3);
    // The watch ends (410 Gone): a new list and a new watch, with the new token.
    server.state.lock().unwrap().list = pod_list("50", &[("u-3", "web-0", "front")]);
    tx.send(Bytes::from_static(
        b"{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410,\"message\":\"too old resource version\"}}\n",
    ))
    .unwrap();
    until("the new list", || index.lookup("u-3").is_some()).await;
    assert_eq!(index.lookup("u-2"), None);
    {
        let s = server.state.lock().unwrap();
        assert_eq!(s.requests[2].1.as_deref(), Some("Bearer tok-2"));
    }
    assert!(KUBE_ERROR_REASONS.iter().all(|r| errors(&counters, r) == 0));
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the task stops at shutdown")
        .unwrap();
}

#[tokio::test]
async fn the_kubelet_is_polled_and_403_or_garbage_keep_the_last_good_index() {
    let server = server(pod_list("1", &[("u-1", "checkout-7d9f", "shop")])).await;
    let index = PodIndex::default();
    let counters = Arc::new(Counters::default());
    let (_stop, stopped) = watch::channel(false);
    kube::start(
        settings(&server, KubeSource::Kubelet),
        index.clone(),
        Arc::clone(&counters),
        stopped,
    );
    until("the list", || index.lookup("u-1").is_some()).await;
    assert_eq!(server.state.lock().unwrap().requests[0].0, "/pods");
    // A change is picked up at the next poll.
    server.state.lock().unwrap().list = pod_list(
        "2",
        &[("u-1", "checkout-7d9f", "shop"), ("u-2", "cart-1", "shop")],
    );
    until("the change", || index.lookup("u-2").is_some()).await;
    assert_eq!(Counters::get(&counters.kube.pods), 2);
    server.state.lock().unwrap().status = 403;
    until("a 403", || errors(&counters, "status") >= 1).await;
    assert_eq!(index.lookup("u-2"), meta("cart-1", "shop"));
    {
        let mut s = server.state.lock().unwrap();
        s.status = 200;
        s.list = "{\"items\": [ garbage".into();
    }
    until("garbage", || errors(&counters, "json") >= 1).await;
    assert_eq!(index.lookup("u-1"), meta("checkout-7d9f", "shop"));
    assert_eq!(Counters::get(&counters.kube.pods), 2);
    // Back to good: the retry takes the new list.
    server.state.lock().unwrap().list = pod_list("3", &[("u-9", "api-0", "ops")]);
    until("the retry", || index.lookup("u-9").is_some()).await;
    assert_eq!(index.lookup("u-1"), None);
    assert_eq!(errors(&counters, "status"), 1);
}

#[tokio::test]
async fn no_token_a_foreign_ca_and_no_answer_are_counted_and_lookups_never_wait() {
    let server = server(pod_list("1", &[("u-1", "a", "b")])).await;
    let (_stop, stopped) = watch::channel(false);
    let start = |s: KubeSettings| {
        let index = PodIndex::default();
        let counters = Arc::new(Counters::default());
        kube::start(s, index.clone(), Arc::clone(&counters), stopped.clone());
        (index, counters)
    };
    let no_token = start(KubeSettings {
        token_file: Some(server.dir.join("nonexistent")),
        ..settings(&server, KubeSource::Api)
    });
    let other_dir = server.dir.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let (other_ca, _, _) = pki(&other_dir);
    let foreign_ca = start(KubeSettings {
        ca_file: Some(other_ca),
        ..settings(&server, KubeSource::Api)
    });
    let no_ca = start(KubeSettings {
        ca_file: Some(server.dir.join("nonexistent")),
        ..settings(&server, KubeSource::Api)
    });
    // Accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("https://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            held.push(c);
        }
    });
    let no_answer = start(KubeSettings {
        url: silent_url,
        timeout: Duration::from_millis(200),
        ..settings(&server, KubeSource::Api)
    });
    let refused = start(KubeSettings {
        url: "https://127.0.0.1:1".into(),
        ..settings(&server, KubeSource::Api)
    });
    for ((index, counters), reason) in [
        (&no_token, "token"),
        (&foreign_ca, "tls"),
        (&no_ca, "ca"),
        (&no_answer, "timeout"),
        (&refused, "connect"),
    ] {
        until(reason, || errors(counters, reason) >= 1).await;
        let t = Instant::now();
        assert_eq!(index.lookup("u-1"), None);
        assert!(
            t.elapsed() < Duration::from_millis(50),
            "{reason}: a lookup waited"
        );
        for other in KUBE_ERROR_REASONS.iter().filter(|r| **r != reason) {
            assert_eq!(
                errors(counters, other),
                0,
                "{reason}: also counted as {other}"
            );
        }
    }
    held.abort();
}
