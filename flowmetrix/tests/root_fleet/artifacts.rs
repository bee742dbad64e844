//! The static binary and the image, built once per test run through the xtask verbs that
//! make them for users (so the tests check what ships, not a copy of the build steps).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use crate::common;

pub const MUSL: &str = "x86_64-unknown-linux-musl";

/// The image's name in the local store, as `cargo xtask image` tags it.
pub fn image_tag() -> String {
    format!("localhost/flowmetrix:{}", env!("CARGO_PKG_VERSION"))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether `cmd` is on PATH.
pub fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(cmd).is_file()))
}

/// Panics, naming the fix, unless every command of `tools` is installed.
fn require_tools(tools: &[&str]) {
    common::require_root();
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    assert!(
        missing.is_empty(),
        "{} missing: run `cargo xtask setup` (as root) to install them",
        missing.join(", ")
    );
}

/// `cargo xtask ARGS` in the workspace; panics with its output when it fails.
fn xtask(args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace())
        .arg("xtask")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo xtask {args:?}: {e}"));
    assert!(
        out.status.success(),
        "cargo xtask {} failed ({}); if a tool is missing, run `cargo xtask setup`:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `target/dist/x86_64-unknown-linux-musl/flowmetrix`, built (once) by `cargo xtask dist
/// --target x86_64-unknown-linux-musl`.
pub fn static_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            require_tools(&["musl-gcc"]);
            xtask(&["dist", "--target", MUSL]);
            workspace()
                .join("target/dist")
                .join(MUSL)
                .join("flowmetrix")
        })
        .clone()
}

/// The image `flowmetrix:VERSION`, built (once) by `cargo xtask image` after
/// [`static_binary`], whose build it reuses.
pub fn image() -> String {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            require_tools(&["buildah"]);
            static_binary();
            xtask(&["image"]);
            image_tag()
        })
        .clone()
}
