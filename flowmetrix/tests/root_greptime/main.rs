//! Root tier: the real binary capturing in network namespaces and writing to the GreptimeDB
//! test endpoint — columns and types, errors at start, outages, the disk spool and its
//! faults. Built with `--features root-tests` (`cargo xtask test`); fails, not skips, where
//! not root.

#[path = "../common/mod.rs"]
mod common;

mod faults;
mod greptime;
mod outage;
mod spool;
