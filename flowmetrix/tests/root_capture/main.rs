//! Root tier: the real binary capturing on veth pairs in network namespaces — rows and
//! counters, attaching and detaching, interfaces coming and going, operations, flows, and
//! live capture against replay. Built with `--features root-tests` (`cargo xtask test`);
//! fails, not skips, where not root.

#[path = "../common/mod.rs"]
mod common;

mod attach;
mod attribution;
mod capture;
mod dns;
mod drops;
mod first_hour;
mod flows;
mod handshake;
mod interfaces;
mod kube;
mod lifecycle;
mod operations;
mod replay;
mod tcp_health;
