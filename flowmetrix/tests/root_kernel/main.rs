//! Root tier: the kernel programs themselves, loaded into this process and run on frames
//! with BPF_PROG_TEST_RUN (tests/common/xdp.rs). Built with `--features root-tests`
//! (`cargo xtask test`); fails, not skips, where not root.

#[path = "../common/mod.rs"]
mod common;

mod flows;
mod packets;
