//! The static binary copied alone into an empty directory and run chrooted there: with no
//! libc and no loader in that root, a dynamically linked binary could not even start.

use std::os::unix::fs::PermissionsExt as _;

use crate::{artifacts, common::NetPair, jail};

#[test]
fn the_static_binary_alone_in_an_empty_root_captures_udp_rows() {
    let bin = artifacts::static_binary();
    let net = NetPair::new();
    let root = jail::EmptyRoot::new();
    let inside = root.0.join("flowmetrix");
    std::fs::copy(&bin, &inside).expect("copy the binary");
    std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o755)).expect("chmod");
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
