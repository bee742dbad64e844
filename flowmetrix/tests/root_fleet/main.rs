//! Root tier: what a fleet installs, run the way a host with nothing else runs it — the
//! static binary alone in an empty root, and the OCI image's root filesystem — capturing on
//! a veth in a test namespace. Both are built once through `cargo xtask dist --target
//! x86_64-unknown-linux-musl` and `cargo xtask image` (one musl release build). Built with
//! `--features root-tests` (`cargo xtask test`); fails, not skips, where not root or where
//! the tools are missing.

#[path = "../common/mod.rs"]
mod common;

mod artifacts;
mod image;
mod jail;
mod startup;
mod static_binary;
