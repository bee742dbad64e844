//! The image `flowmetrix:VERSION` from the local store: a working container made from it
//! with buildah, its root filesystem mounted, and the image's own entrypoint run chrooted
//! there in the test namespace. (A container runtime is not used: `podman run` cannot set
//! its file limit on this kind of VM; the root filesystem and the entrypoint are what it
//! would run.)

use std::{path::PathBuf, process::Command};

use crate::{artifacts, common::NetPair, jail};

fn buildah(args: &[&str]) -> String {
    let out = Command::new("buildah")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run buildah {args:?}: {e}"));
    assert!(
        out.status.success(),
        "buildah {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A working container of the image, unmounted and removed on drop (also when the test
/// fails).
struct Container {
    name: String,
}

impl Container {
    fn from(image: &str) -> Self {
        // `--pull=never`: the image comes from the local store or not at all.
        let name = buildah(&["from", "--pull=never", "--quiet", image]);
        Self { name }
    }

    fn mount(&self) -> PathBuf {
        PathBuf::from(buildah(&["mount", &self.name]))
    }

    /// The image's entrypoint, as the runtime would run it.
    fn entrypoint(&self) -> Vec<String> {
        let json = buildah(&["inspect", "--type", "container", &self.name]);
        let inspect: serde_json::Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("buildah inspect: {e}"));
        serde_json::from_value(inspect["OCIv1"]["config"]["Entrypoint"].clone())
            .unwrap_or_else(|e| panic!("the entrypoint: {e}\n{json}"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        for verb in ["umount", "rm"] {
            let _ = Command::new("buildah").args([verb, &self.name]).output();
        }
    }
}

#[test]
fn the_image_root_filesystem_runs_its_entrypoint_and_captures_udp_rows() {
    let image = artifacts::image();
    let net = NetPair::new();
    // Dropped after the collector (declared before it): the process has left the root.
    let container = Container::from(&image);
    let rootfs = container.mount();
    assert_eq!(
        jail::files(&rootfs),
        ["etc/ssl/certs/ca-certificates.crt", "usr/bin/flowmetrix"],
        "FROM scratch: the binary and the CA bundle, nothing else"
    );
    let entrypoint = container.entrypoint();
    assert_eq!(entrypoint, ["/usr/bin/flowmetrix"]);

    let collector = jail::collector(
        &net,
        &rootfs,
        &entrypoint[0],
        &["--sample-rate", "1", "--output", "jsonl"],
    );
    jail::assert_rows_for_udp(&net, collector, 200);
}
