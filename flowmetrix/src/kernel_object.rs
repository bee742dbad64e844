//! The kernel programs (`flowmetrix-ebpf`), embedded so the binary is self-contained. They
//! are built (nightly Rust and bpf-linker, through build.rs) only with the `ebpf` feature,
//! which `cargo xtask build/run/dist/test` turn on; a binary built without it replays
//! `--pcap` files but cannot capture.

/// Capture was asked of a binary built without the kernel programs.
#[derive(Debug, thiserror::Error)]
#[error(
    "this binary was built without the kernel programs: build it with `cargo xtask build` \
     (or `cargo build --features ebpf`); --pcap replay needs none"
)]
pub struct NotBuiltIn;

#[cfg(feature = "ebpf")]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowmetrix"));

/// The eBPF object (the XDP and TC programs and their maps), to load with aya.
pub fn object() -> Result<&'static [u8], NotBuiltIn> {
    #[cfg(feature = "ebpf")]
    return Ok(OBJECT);
    #[cfg(not(feature = "ebpf"))]
    Err(NotBuiltIn)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_object_is_there_exactly_with_the_feature() {
        let object = super::object();
        assert_eq!(object.is_ok(), cfg!(feature = "ebpf"));
        if let Err(e) = object {
            assert!(e.to_string().contains("cargo xtask build"), "{e}");
        }
    }
}
