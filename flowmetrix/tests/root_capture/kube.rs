//! `--kube-metadata` in the collector as the DaemonSet runs it: capturing live, it lists
//! this node's pods from the API server (a plain-HTTP stand-in inside the collector's
//! namespace, as `kubectl proxy` would be) and shows the index on `/metrics`.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::common::{NetPair, http_get_in, in_netns, wait_until};

/// Serves `list` to every request but a watch, which gets an empty answer; the request
/// lines seen.
fn api_server(listener: TcpListener, list: String) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            requests.lock().unwrap().push(line.trim_end().to_owned());
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                    break;
                }
            }
            let body = if line.contains("watch=1") { "" } else { &list };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    seen
}

#[test]
fn a_live_collector_lists_its_nodes_pods_and_counts_them_on_metrics() {
    let net = NetPair::new();
    let listener = in_netns(&net.ns_a, || TcpListener::bind("127.0.0.1:0").unwrap());
    let url = format!("http://{}", listener.local_addr().unwrap());
    let list = serde_json::json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"},
        "items": [
            {"metadata": {"uid": "u-1", "name": "checkout-7d9f", "namespace": "shop"}},
            {"metadata": {"uid": "u-2", "name": "cart-1", "namespace": "shop"}}
        ]
    })
    .to_string();
    let requests = api_server(listener, list);
    let collector = net
        .collector()
        .args(&["--output", "none", "--host-name", "node-1"])
        .args(&["--kube-metadata", "api", "--kube-url", &url])
        .args(&["--metrics-addr", "127.0.0.1:9464"])
        .start();
    let listed = wait_until(Duration::from_secs(10), || {
        http_get_in(&net.ns_a, "127.0.0.1:9464", "/metrics").contains("flowmetrix_kube_pods 2")
    });
    let page = http_get_in(&net.ns_a, "127.0.0.1:9464", "/metrics");
    assert!(listed, "{page}");
    assert!(
        page.contains("flowmetrix_kube_errors_total{reason=\"json\"} 0"),
        "{page}"
    );
    let seen = requests.lock().unwrap().clone();
    assert_eq!(
        seen[0],
        "GET /api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1 HTTP/1.1"
    );
    assert!(seen[1].contains("&watch=1&"), "{seen:?}");
    let finished = collector.interrupt();
    assert!(finished.status.success(), "{}", finished.stderr);
}
