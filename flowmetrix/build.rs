//! With the `ebpf` feature, builds the kernel programs (flowmetrix-ebpf) with the pinned
//! nightly toolchain and bpf-linker and puts the object in OUT_DIR, where `kernel_object`
//! embeds it. Without it (a plain `cargo build` or `cargo test`), nothing: stable Rust
//! builds the rest, and the no-root tests need no BPF toolchain.

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "ebpf")]
    build_ebpf()?;
    Ok(())
}

#[cfg(feature = "ebpf")]
fn build_ebpf() -> anyhow::Result<()> {
    use std::path::Path;

    let ebpf_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../flowmetrix-ebpf");
    let toolchain_file = ebpf_dir.join("TOOLCHAIN");
    println!("cargo:rerun-if-changed={}", toolchain_file.display());
    // The program also compiles flowmetrix-common; aya-build only watches the eBPF crate.
    let common_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../flowmetrix-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let toolchain = std::fs::read_to_string(&toolchain_file)?;
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "flowmetrix-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(toolchain.trim()),
    )
}
