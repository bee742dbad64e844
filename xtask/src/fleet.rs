//! What a fleet installs: one static `flowmetrix` (musl, the kernel programs embedded) and an
//! OCI image `FROM scratch` holding it and the CA certificates.
//!
//! - `dist --target x86_64-unknown-linux-musl`: the static binary, checked to have no
//!   program interpreter (no libc to match on the host), stripped, with the man page,
//!   completions and deploy files, in `target/dist/TARGET/`.
//! - `image`: that binary and the host's CA bundle in an image built by buildah from
//!   nothing (no base, nothing pulled), tagged `flowmetrix:VERSION` in the local store and
//!   written as an OCI archive to `target/image/flowmetrix-VERSION.oci.tar`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{RELEASE_BUILD, cargo_cmd, dist_into, have, run};

/// The one target the static build and the image are made for.
pub const MUSL: &str = "x86_64-unknown-linux-musl";

/// The CA bundle copied into the image (Debian's `ca-certificates`).
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The image must stay under this many bytes (uncompressed).
const IMAGE_LIMIT: u64 = 30_000_000;

/// Where the binary, the CA bundle and the entrypoint sit in the image.
const IMAGE_BIN: &str = "/usr/bin/flowmetrix";

/// The version the binary and the image carry (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Setup's part for the static build: the musl target of the toolchain cargo runs with
/// (any user; into their own rustup home).
pub fn musl_target() -> anyhow::Result<()> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("cannot run rustc")?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    let lib = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(MUSL)
        .join("lib");
    if !lib.is_dir() {
        run(Command::new("rustup").args(["target", "add", MUSL]))?;
    }
    Ok(())
}

/// `target/dist/TARGET/`: the static binary, the man page, completions and deploy files.
pub fn dist_dir(root: &Path, target: &str) -> PathBuf {
    root.join("target/dist").join(target)
}

/// Builds the static binary for `target` and fills [`dist_dir`]; returns the binary's path.
pub fn static_dist(root: &Path, target: &str) -> anyhow::Result<PathBuf> {
    if target != MUSL {
        bail!(
            "only {MUSL} is set up here; another target (aarch64-unknown-linux-musl) needs its \
             rustup target and a C cross compiler and linker for it (README, \"Install\")"
        );
    }
    if !have("musl-gcc") {
        bail!("musl-gcc is missing (Debian's musl-tools): run `cargo xtask setup` as root");
    }
    // ring and zstd-sys have C parts: the cc crate picks musl-gcc for this target.
    let mut build = cargo_cmd(&[&RELEASE_BUILD[..], &["--target", target]].concat());
    // What cargo set for this process (as `cargo run` of xtask, or a test that runs it):
    // ring's build script reruns when CARGO_MANIFEST_DIR changes, and with it everything
    // above ring. Without them the build is the same from a shell, xtask or a test.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let per_crate = [
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_MANIFEST_",
        ]
        .iter()
        .any(|p| key.starts_with(p));
        if per_crate || ["CARGO_TARGET_TMPDIR", "CARGO_PRIMARY_PACKAGE", "OUT_DIR"].contains(&&*key)
        {
            build.env_remove(&*key);
        }
    }
    run(&mut build)?;
    let built = root.join("target").join(target).join("release/flowmetrix");
    check_static(&built)?;
    let out = dist_dir(root, target);
    dist_into(root, &built, &out)?;
    let bin = out.join("flowmetrix");
    // The symbol table is a sixth of the file; the build in target/TARGET keeps it.
    run(Command::new("strip").arg(&bin))?;
    check_static(&bin)?;
    let size = std::fs::metadata(&bin)?.len();
    eprintln!(
        "xtask: {} is static, {:.1} MB",
        bin.display(),
        size as f64 / 1e6
    );
    Ok(bin)
}

/// Fails unless `bin` is an ELF executable with no program interpreter (PT_INTERP): the
/// kernel runs it with no dynamic loader and no libc from the host. `file` says the same
/// where it is installed.
fn check_static(bin: &Path) -> anyhow::Result<()> {
    let elf = std::fs::read(bin).with_context(|| format!("cannot read {}", bin.display()))?;
    if let Some(interp) = program_interpreter(&elf)? {
        bail!(
            "{} is dynamically linked (interpreter {interp})",
            bin.display()
        );
    }
    if let Ok(out) = Command::new("file").arg("-b").arg(bin).output() {
        let said = String::from_utf8_lossy(&out.stdout);
        if said.contains("dynamically linked") {
            bail!("{}: file says {said}", bin.display());
        }
    }
    Ok(())
}

/// The PT_INTERP path of a 64-bit little-endian ELF file, if it has one.
fn program_interpreter(elf: &[u8]) -> anyhow::Result<Option<String>> {
    let u16_at =
        |o: usize| -> Option<u16> { Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?)) };
    let u32_at =
        |o: usize| -> Option<u32> { Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?)) };
    let u64_at = |o: usize| -> Option<usize> {
        usize::try_from(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?)).ok()
    };
    // ELF magic, ELFCLASS64, ELFDATA2LSB.
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        bail!("not a 64-bit little-endian ELF file");
    }
    let bad = || anyhow::anyhow!("truncated ELF header");
    let phoff = u64_at(0x20).ok_or_else(bad)?;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(bad)?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(bad)?);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        const PT_INTERP: u32 = 3;
        if u32_at(ph).ok_or_else(bad)? == PT_INTERP {
            let (off, len) = (
                u64_at(ph + 0x08).ok_or_else(bad)?,
                u64_at(ph + 0x20).ok_or_else(bad)?,
            );
            let path = elf.get(off..off + len).ok_or_else(bad)?;
            let path = String::from_utf8_lossy(path);
            return Ok(Some(path.trim_end_matches('\0').to_owned()));
        }
    }
    Ok(None)
}

/// The image's name in the local store.
pub fn image_tag() -> String {
    format!("localhost/flowmetrix:{VERSION}")
}

/// `target/image/flowmetrix-VERSION.oci.tar`.
pub fn archive_path(root: &Path) -> PathBuf {
    root.join("target/image")
        .join(format!("flowmetrix-{VERSION}.oci.tar"))
}

/// A buildah working container, removed when dropped (also when a step fails).
struct WorkingContainer(String);

impl Drop for WorkingContainer {
    fn drop(&mut self) {
        let _ = Command::new("buildah")
            .args(["rm", &self.0])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// Builds the image from the static binary: `FROM scratch`, the binary, the CA bundle.
pub fn image(root: &Path) -> anyhow::Result<()> {
    if !have("buildah") {
        bail!("buildah is missing: run `cargo xtask setup` as root");
    }
    if !Path::new(CA_BUNDLE).is_file() {
        bail!("{CA_BUNDLE} is missing (Debian's ca-certificates): run `cargo xtask setup`");
    }
    let bin = static_dist(root, MUSL)?;
    let tag = image_tag();
    let before = output(Command::new("buildah").args(["images", "--quiet", "--no-trunc", &tag]))
        .unwrap_or_default();

    // `scratch` is no image: nothing is pulled.
    let ctr = WorkingContainer(output(Command::new("buildah").args(["from", "scratch"]))?);
    let buildah = |args: &[&str]| run(Command::new("buildah").args(args));
    let bin = bin.to_string_lossy();
    buildah(&[
        "copy", "--quiet", "--chmod", "0755", &ctr.0, &bin, IMAGE_BIN,
    ])?;
    buildah(&[
        "copy", "--quiet", "--chmod", "0644", &ctr.0, CA_BUNDLE, CA_BUNDLE,
    ])?;
    let entrypoint = format!("[\"{IMAGE_BIN}\"]");
    let version = format!("org.opencontainers.image.version={VERSION}");
    buildah(&[
        "config",
        "--entrypoint",
        &entrypoint,
        "--cmd",
        "",
        "--os",
        "linux",
        "--arch",
        "amd64",
        "--label",
        "org.opencontainers.image.title=flowmetrix",
        "--label",
        &version,
        "--label",
        "org.opencontainers.image.licenses=MIT OR Apache-2.0",
        "--created-by",
        "cargo xtask image",
        &ctr.0,
    ])?;
    buildah(&["commit", "--quiet", &ctr.0, &tag])?;
    // The tag moved to the new image: the one it named before (if any, and unused) goes.
    let after = output(Command::new("buildah").args(["images", "--quiet", "--no-trunc", &tag]))?;
    if !before.is_empty() && before != after {
        let _ = Command::new("buildah")
            .args(["rmi", &before])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }

    let archive = archive_path(root);
    std::fs::create_dir_all(archive.parent().unwrap_or(root))?;
    // oci-archive: adds to an existing file; start from none.
    let _ = std::fs::remove_file(&archive);
    let dest = format!("oci-archive:{}:flowmetrix:{VERSION}", archive.display());
    buildah(&["push", "--quiet", &tag, &dest])?;

    let size = image_size(&tag)?;
    let archived = std::fs::metadata(&archive)?.len();
    if size >= IMAGE_LIMIT {
        bail!("the image is {size} bytes, over the {IMAGE_LIMIT} limit");
    }
    eprintln!(
        "xtask: image {tag}: {:.1} MB ({:.1} MB as {})",
        size as f64 / 1e6,
        archived as f64 / 1e6,
        archive.display()
    );
    Ok(())
}

/// The image's size in bytes as the store keeps it (layers uncompressed): its manifest's
/// config and layer sizes added up.
fn image_size(tag: &str) -> anyhow::Result<u64> {
    let text = output(Command::new("buildah").args([
        "inspect",
        "--type",
        "image",
        "--format",
        "{{.Manifest}}",
        tag,
    ]))?;
    let manifest: serde_json::Value =
        serde_json::from_str(&text).context("buildah inspect: the manifest is not JSON")?;
    let size = |v: &serde_json::Value| v["size"].as_u64();
    let layers = manifest["layers"]
        .as_array()
        .context("the manifest has no layers")?;
    let config = size(&manifest["config"]).context("the manifest's config has no size")?;
    layers.iter().try_fold(config, |sum, l| {
        Ok(sum + size(l).context("a layer has no size")?)
    })
}

/// Runs `cmd` (printed as `run` prints it) and returns its stdout, trimmed.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::program_interpreter;

    #[test]
    fn a_dynamically_linked_test_binary_names_its_loader() {
        // This test binary is linked against the host's glibc.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let interp = program_interpreter(&me).unwrap();
        assert!(interp.is_some_and(|i| i.contains("ld-linux")));
    }

    #[test]
    fn what_is_no_elf_file_or_is_cut_short_is_an_error() {
        assert!(program_interpreter(b"#!/bin/sh\n").is_err());
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(program_interpreter(&me[..0x30]).is_err());
        // The header alone, its program headers cut off.
        assert!(program_interpreter(&me[..0x40]).is_err());
    }
}
