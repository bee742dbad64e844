//! `cargo xtask <verb>`: thin scripts over cargo and the system tools, printing each command.
//!
//! - `setup`: install what a fresh machine lacks (idempotent, quick when all is present):
//!   Debian packages the tests use, the pinned nightly toolchain with rust-src that builds
//!   the kernel programs, and bpf-linker.
//! - `build`: setup, then a release build with the `ebpf` feature (the kernel programs are
//!   embedded in the binary; without it the binary replays `--pcap` files only).
//! - `run -- ARGS`: setup, build, run `target/release/flowmetrix ARGS` (needs root).
//! - `test [ARGS]`: as root: setup, then format check, clippy and every test of both tiers
//!   (`--features root-tests`: the root tier's targets `tests/root_*` are built too; one
//!   that cannot run fails).
//! - `test unit [ARGS]`: only the no-root tier, as any user: a plain `cargo test` (stable
//!   Rust, no BPF toolchain; the root tier is not built); no fmt or clippy.
//! - `bench [FILTER]`: setup, then the kernel per-packet cost, the capture rate against
//!   tcpdump on veth (root) and the userspace criterion benchmarks (BENCHMARKS.md).
//! - `dist`: setup, release build, then dist/ with the binary, man page, completions and
//!   the deploy/ files. `dist --target x86_64-unknown-linux-musl`: the same for one static
//!   binary, in target/dist/TARGET/ (`fleet.rs`).
//! - `image`: setup, the static binary, then the OCI image `FROM scratch` with buildah:
//!   `flowmetrix:VERSION` in the local store and target/image/flowmetrix-VERSION.oci.tar.
//! - `fuzz [TARGET] [SECONDS]`: setup, then cargo-fuzz on the decoder, the pcap reader, the
//!   offset learner or the DNS parser and matcher (no kernel programs needed).

mod kube_validate;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod fleet;

#[derive(Parser)]
#[command(about = "FlowMetrix developer tasks")]
struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Install the toolchain and tools the build and tests need.
    Setup,
    /// Setup, then build the release binary.
    Build,
    /// Setup, build, and run the collector with the given arguments.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, build, and gather what a package needs in dist/: the binary, the man page,
    /// shell completions, the systemd unit, an example config, the Grafana dashboard.
    Dist {
        /// Build one static binary for this target (x86_64-unknown-linux-musl) instead, into
        /// target/dist/TARGET/.
        #[arg(long)]
        target: Option<String>,
    },
    /// Setup, the static binary, then the OCI image (FROM scratch, buildah, nothing pulled):
    /// flowmetrix:VERSION in the local store and target/image/flowmetrix-VERSION.oci.tar.
    Image,
    /// Setup, then the kernel per-packet cost and the userspace benchmarks; see
    /// BENCHMARKS.md.
    Bench {
        /// Extra arguments for the benchmark binary (e.g. a name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, then run a cargo-fuzz target (decode, pcap, offset_learner, dns) for a while.
    Fuzz {
        /// Fuzz target.
        #[arg(default_value = "decode")]
        target: String,
        /// How long to run, in seconds.
        #[arg(default_value_t = 600)]
        seconds: u64,
    },
    /// Setup, then fmt --check, clippy -D warnings, and all tests of both tiers (as root);
    /// `test unit` runs only the tier that needs no root.
    #[command(args_conflicts_with_subcommands = true)]
    Test {
        #[command(subcommand)]
        tier: Option<Tier>,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum Tier {
    /// Only the tests that need no root (unit tests, the binary without an interface): a
    /// plain `cargo test`, on stable Rust with no BPF toolchain. Any user.
    Unit {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Only the tests against a real GreptimeDB (`live_*`): set FLOWMETRIX_TEST_GREPTIMEDB
    /// (gRPC, host:4001) and FLOWMETRIX_TEST_GREPTIMEDB_HTTP (host:4000). The one through
    /// the real binary needs root; the others run as any user.
    Live {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The GreptimeDB the live tier writes to (gRPC `host:port`).
const LIVE_ENV: &str = "FLOWMETRIX_TEST_GREPTIMEDB";

/// Builds the kernel programs into the binary (flowmetrix/build.rs).
const EBPF: &str = "flowmetrix/ebpf";

/// Also builds and runs the root tier (tests/root_*; implies `ebpf`).
const ROOT_TESTS: &str = "flowmetrix/root-tests";

/// Debian packages: the command (or, from `/`, the file) each provides, and the package.
const APT: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("tcpdump", "tcpdump"),
    // The root tests drop packets with firewall rules (drops by reason) and drop them at random
    // (`numgen random`: the TCP health tests' loss).
    ("nft", "nftables"),
    ("systemd-analyze", "systemd"),
    // The static binary (C parts of ring and zstd against musl) and the image.
    ("musl-gcc", "musl-tools"),
    ("buildah", "buildah"),
    (fleet::CA_BUNDLE, "ca-certificates"),
];
const BPF_LINKER_VERSION: &str = "0.10.4";

fn main() -> std::process::ExitCode {
    match xtask(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn xtask(args: Args) -> anyhow::Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.verb {
        Verb::Setup => setup(&root),
        Verb::Build => {
            setup(&root)?;
            release_build()
        }
        Verb::Run { args } => {
            setup(&root)?;
            release_build()?;
            let bin = root.join("target/release/flowmetrix");
            run(Command::new(bin).args(args))
        }
        Verb::Bench { args } => {
            setup(&root)?;
            bench(&args)
        }
        Verb::Dist { target: None } => {
            setup(&root)?;
            release_build()?;
            let out = root.join("dist");
            dist_into(&root, &root.join("target/release/flowmetrix"), &out)?;
            eprintln!("xtask: wrote {}", out.display());
            Ok(())
        }
        Verb::Dist {
            target: Some(target),
        } => {
            setup(&root)?;
            fleet::static_dist(&root, &target).map(drop)
        }
        Verb::Image => {
            setup(&root)?;
            fleet::image(&root)
        }
        Verb::Fuzz { target, seconds } => {
            setup(&root)?;
            if !have("cargo-fuzz") {
                cargo(&["install", "cargo-fuzz", "--locked"])?;
            }
            let toolchain = std::fs::read_to_string(root.join("flowmetrix-ebpf/TOOLCHAIN"))?;
            let max_time = format!("-max_total_time={seconds}");
            run(Command::new("cargo")
                .current_dir(root.join("flowmetrix"))
                .arg(format!("+{}", toolchain.trim()))
                // The fuzz targets (decoder, pcap reader, offset learner) load no kernel
                // programs: built without the `ebpf` feature.
                .args([
                    "fuzz",
                    "run",
                    &target,
                    "--",
                    &max_time,
                    "-print_final_stats=1",
                ]))
        }
        Verb::Test {
            tier: Some(Tier::Unit { args }),
            ..
        } => {
            // Stable Rust and nothing else: the root tier and the kernel programs are left out.
            let mut test = vec!["test"];
            test.extend(args.iter().map(String::as_str));
            cargo(&test)
        }
        Verb::Test {
            tier: Some(Tier::Live { args }),
            ..
        } => {
            if std::env::var_os(LIVE_ENV).is_none() {
                bail!(
                    "`cargo xtask test live` needs a GreptimeDB: set {LIVE_ENV}=host:4001 and \
                     {LIVE_ENV}_HTTP=host:4000 (and FLOWMETRIX_GREPTIME_USERNAME/_PASSWORD if it \
                     needs them)"
                );
            }
            let mut test = vec!["test", "--package", "flowmetrix"];
            if is_root() {
                rust_tools(&root)?;
                test.extend(["--features", ROOT_TESTS]);
            }
            test.push("live_");
            test.extend(args.iter().map(String::as_str));
            cargo(&test)
        }
        Verb::Test { tier: None, args } => {
            if !is_root() {
                bail!(
                    "`cargo xtask test` runs the root tier (network namespaces, XDP): run it as \
                     root, or `cargo xtask test unit` for the tests that need no root"
                );
            }
            setup(&root)?;
            cargo(&["fmt", "--all", "--check"])?;
            // With the features, so the root tier's code is linted too.
            cargo(&[
                "clippy",
                "--all-targets",
                "--features",
                ROOT_TESTS,
                "--",
                "-D",
                "warnings",
            ])?;
            // The fuzz targets live outside the workspace: check that they still build.
            let fuzz = root.join("flowmetrix/fuzz/Cargo.toml");
            cargo(&[
                "check",
                "--manifest-path",
                &fuzz.to_string_lossy(),
                "--bins",
            ])?;
            let mut test = vec!["test", "--features", ROOT_TESTS];
            test.extend(args.iter().map(String::as_str));
            cargo(&test)
        }
    }
}

/// `cargo` arguments of the release binary with the kernel programs embedded.
const RELEASE_BUILD: [&str; 6] = [
    "build",
    "--release",
    "--package",
    "flowmetrix",
    "--features",
    EBPF,
];

/// The release binary with the kernel programs embedded.
fn release_build() -> anyhow::Result<()> {
    cargo(&RELEASE_BUILD)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn setup(root: &Path) -> anyhow::Result<()> {
    let missing: Vec<&str> = APT
        .iter()
        .filter(|(cmd, _)| {
            if cmd.starts_with('/') {
                !Path::new(cmd).exists()
            } else {
                !have(cmd)
            }
        })
        .map(|&(_, pkg)| pkg)
        .collect();
    if !missing.is_empty() {
        run(Command::new("apt-get").args(["update", "-q", "-o", "DPkg::Lock::Timeout=300"]))?;
        run(Command::new("apt-get")
            // Another apt run (unattended upgrades) may hold the lock for a while.
            .args(["install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"])
            .arg("--no-install-recommends")
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    kube_validate::install(root)?;
    rust_tools(root)
}

/// The part of setup any user can do (into their own rustup and cargo homes): the pinned
/// nightly with rust-src and bpf-linker, which the build needs.
fn rust_tools(root: &Path) -> anyhow::Result<()> {
    let toolchain_file = root.join("flowmetrix-ebpf/TOOLCHAIN");
    let toolchain = std::fs::read_to_string(&toolchain_file)
        .with_context(|| format!("cannot read {}", toolchain_file.display()))?;
    let toolchain = toolchain.trim();
    if !has_rust_src(toolchain) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            toolchain,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
            "--no-self-update",
        ]))?;
    }

    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION));
    if !linker_ok {
        let spec = format!("bpf-linker@{BPF_LINKER_VERSION}");
        cargo(&["install", &spec, "--locked", "--force"])?;
    }
    fleet::musl_target()?;
    eprintln!(
        "xtask: setup complete (toolchain {toolchain}, bpf-linker {BPF_LINKER_VERSION}, target \
         {})",
        fleet::MUSL
    );
    Ok(())
}

/// Whether this process runs as root (the owner of its own /proc entry is its effective
/// user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Fills `out` with the binary `bin`, its man page and shell completions (generated by it),
/// and the deploy/ files.
fn dist_into(root: &Path, bin: &Path, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out.join("completions"))?;
    let generate = |what: &str| -> anyhow::Result<Vec<u8>> {
        let o = Command::new(bin).args(["--generate", what]).output()?;
        if !o.status.success() || o.stdout.is_empty() {
            bail!("{} --generate {what} failed", bin.display());
        }
        Ok(o.stdout)
    };
    std::fs::write(out.join("flowmetrix.1"), generate("man")?)?;
    for (shell, file) in [
        ("bash", "flowmetrix.bash"),
        ("zsh", "_flowmetrix"),
        ("fish", "flowmetrix.fish"),
    ] {
        std::fs::write(out.join("completions").join(file), generate(shell)?)?;
    }
    std::fs::copy(bin, out.join("flowmetrix"))?;
    for file in [
        "flowmetrix.service",
        "flowmetrix.toml",
        "grafana/flowmetrix-dashboard.json",
    ] {
        let name = Path::new(file).file_name().unwrap_or_default();
        std::fs::copy(root.join("deploy").join(file), out.join(name))?;
    }
    Ok(())
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

fn has_rust_src(toolchain: &str) -> bool {
    let Ok(out) = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()
    else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
}

/// Kernel cost per packet (BPF_PROG_TEST_RUN; root), capture rate on veth against tcpdump
/// (root), the spool under an outage (root), then userspace (criterion); each part's time and
/// the whole run's are printed at the end (issue 27 holds the whole run to 20 minutes on a
/// 2-core machine).
fn bench(args: &[String]) -> anyhow::Result<()> {
    let bench = |name| {
        vec![
            "bench",
            "--package",
            "flowmetrix",
            "--features",
            EBPF,
            "--bench",
            name,
        ]
    };
    let mut pipeline = bench("pipeline");
    if !args.is_empty() {
        pipeline.push("--");
        pipeline.extend(args.iter().map(String::as_str));
    }
    let parts: [(&str, Vec<&str>); 4] = [
        ("kernel", bench("kernel")),
        ("capture_rate", bench("capture_rate")),
        (
            // 10 s at 100 000 frames/s with GreptimeDB away, in the release build.
            "outage",
            vec![
                "test",
                "--release",
                "--package",
                "flowmetrix",
                "--features",
                ROOT_TESTS,
                "--test",
                "root_greptime",
                "outage::ten_seconds",
                "--",
                "--nocapture",
            ],
        ),
        ("pipeline", pipeline),
    ];
    let start = std::time::Instant::now();
    let mut took = Vec::new();
    for (name, part) in &parts {
        let t = std::time::Instant::now();
        cargo(part)?;
        took.push(format!("{name} {}", minutes(t.elapsed())));
    }
    eprintln!(
        "xtask: bench took {} ({}), builds included",
        minutes(start.elapsed()),
        took.join(", ")
    );
    Ok(())
}

fn minutes(d: std::time::Duration) -> String {
    let s = d.as_secs();
    format!("{} min {:02} s", s / 60, s % 60)
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run(&mut cargo_cmd(args))
}

fn cargo_cmd(args: &[&str]) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args);
    cmd
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let env: String = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={} ", k.to_string_lossy(), v?.to_string_lossy())))
        .collect();
    let shown = format!(
        "{env}{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    eprintln!("xtask: {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}
