//! The static binary copied alone into an empty directory and run chrooted there: with no
//! libc and no loader in that root, a dynamically linked binary could not even start.

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf, time::Duration};

use crate::{
    artifacts,
    common::{
        NetPair,
        endpoint::{Endpoint, TestPki},
        wait_for_rows,
    },
    jail,
};

/// An empty root holding only the static binary.
pub fn root_with_binary() -> jail::EmptyRoot {
    let root = jail::EmptyRoot::new();
    let inside = root.0.join("flowmetrix");
    std::fs::copy(artifacts::static_binary(), &inside).expect("copy the binary");
    std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    root
}

#[test]
fn the_static_binary_alone_in_an_empty_root_captures_udp_rows() {
    let root = root_with_binary();
    let net = NetPair::new();
    assert_eq!(
        jail::files(&root.0),
        ["flowmetrix"],
        "the root holds the binary only"
    );

    let (ok, stdout, stderr) = jail::run(&net, &root.0, "/flowmetrix", &["--version"]);
    assert!(ok, "--version in the empty root: {stderr}");
    assert_eq!(
        stdout.trim(),
        format!("flowmetrix {}", env!("CARGO_PKG_VERSION"))
    );

    let collector = jail::collector(
        &net,
        &root.0,
        "/flowmetrix",
        &["--sample-rate", "1", "--output", "jsonl"],
    );
    jail::assert_rows_for_udp(&net, collector, 200);
}

/// TLS to GreptimeDB is rustls with ring, compiled in: with no OpenSSL and no CA store in
/// the root, the binary still connects with a client certificate (the PEM files it is
/// given) and writes every row.
#[test]
fn the_static_binary_alone_writes_to_greptimedb_over_tls() {
    let root = root_with_binary();
    let net = NetPair::new();
    let pki = TestPki::new();
    let endpoint = Endpoint::start_tls(Some(&net.ns_a), &pki);
    std::fs::create_dir(root.0.join("pki")).expect("mkdir pki");
    let mut inside: Vec<String> = Vec::new();
    for (from, name) in [
        (&pki.ca, "ca.pem"),
        (&pki.client_cert, "client.pem"),
        (&pki.client_key, "client.key"),
    ] {
        std::fs::copy(from, root.0.join("pki").join(name)).expect("copy a PEM file");
        inside.push(PathBuf::from("/pki").join(name).display().to_string());
    }
    let addr = endpoint.addr.to_string();
    let collector = jail::collector(
        &net,
        &root.0,
        "/flowmetrix",
        &[
            "--greptime-endpoint",
            &addr,
            "--flush-interval",
            "100ms",
            "--tls-ca-file",
            &inside[0],
            "--tls-cert-file",
            &inside[1],
            "--tls-key-file",
            &inside[2],
        ],
    );
    net.send_udp(0..100);
    let all = wait_for_rows(&endpoint, "packet_data", 100, Duration::from_secs(20));
    let done = collector.interrupt();
    assert!(done.status.success(), "{}", done.stderr);
    assert!(all, "{}", done.stderr);
    assert!(!done.stderr.contains("WARN"), "{}", done.stderr);
    assert_eq!(endpoint.rows("packet_data").len(), 100, "{}", done.stderr);
}
