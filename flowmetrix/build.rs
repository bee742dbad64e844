//! Builds the XDP program (flowmetrix-ebpf) with the pinned nightly toolchain and puts the
//! object in OUT_DIR, where `capture` embeds it with `include_bytes_aligned!`.
use std::path::Path;

fn main() -> anyhow::Result<()> {
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
