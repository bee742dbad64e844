//! Command-line flags, defined once (clap derive). `--help` comes from this definition.
//!
//! The original Go tool took long flags with a single dash (`-offset 24`, `-auto-detect`,
//! `-no-log`); [`normalize_go_flags`] rewrites every single-dash spelling of a long flag
//! defined here to its `--` form before clap sees it.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{
    ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches, Parser, ValueEnum, ValueHint,
    error::{ContextKind, ContextValue, ErrorKind},
    parser::ValueSource,
};
use flowmetrix_common::{DEFAULT_SNAPLEN, MAX_SNAPLEN, flow_key::DEFAULT_FLOW_MAX_ENTRIES};

use crate::{
    config::{self, FileSettings},
    offset::VMWARE_DEFAULT,
    sink::greptime::Compression,
};

/// Sample packets with XDP and write one row per sampled packet.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "flowmetrix",
    version,
    about,
    max_term_width = 100,
    after_help = "Long flags also take one dash, as in the original tool: -offset 24, -auto-detect, -no-log.\n\
                  Ctrl+C or SIGTERM detaches, writes what is queued, prints a summary and exits 0."
)]
pub struct Cli {
    /// Interface(s) to capture on: names and patterns (`veth*`, `ens?`), comma-separated or
    /// repeated; patterns also take interfaces that appear later.
    #[arg(
        help_heading = "Capture",
        short = 'i',
        long = "interface",
        value_name = "IFACE",
        value_hint = ValueHint::Other,
        value_delimiter = ',',
        required_unless_present_any = ["pcap", "print_config"]
    )]
    pub interface: Vec<String>,

    /// Replay a pcap or pcapng file (Ethernet) instead of capturing; ts comes from the file.
    #[arg(
        help_heading = "Capture",
        long,
        value_name = "FILE",
        conflicts_with_all = ["interface", "xdp_mode", "sample_rate", "snaplen", "ring_bytes", "direction", "ingress_hook", "tc_attach"]
    )]
    pub pcap: Option<PathBuf>,

    /// Which packets to capture: arriving (ingress), leaving (egress, a TC program) or both.
    #[arg(help_heading = "Capture", long, value_enum, default_value_t = DirectionArg::Ingress, value_name = "DIR")]
    pub direction: DirectionArg,

    /// Where ingress is sampled: XDP, or a TC program where the driver's XDP is unsuitable.
    #[arg(help_heading = "Capture", long, value_enum, default_value_t = IngressHookArg::Xdp, value_name = "HOOK")]
    pub ingress_hook: IngressHookArg,

    /// How TC programs are attached: auto (TCX, else a clsact filter), tcx or netlink. For
    /// tests and old kernels.
    #[arg(long, value_enum, default_value_t = TcAttachArg::Auto, value_name = "HOW", hide = true)]
    pub tc_attach: TcAttachArg,

    /// XDP attach mode: native (driver) with fallback to skb (generic), or one forced.
    #[arg(help_heading = "Capture", long, value_enum, default_value_t = XdpModeArg::Auto, value_name = "MODE")]
    pub xdp_mode: XdpModeArg,

    /// Sample 1 packet in N (per CPU, randomised stride). 1 samples every packet.
    #[arg(help_heading = "Capture", long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub sample_rate: u32,

    /// Bytes of each sampled frame to capture (1-256).
    #[arg(help_heading = "Capture", long, default_value_t = DEFAULT_SNAPLEN, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(1..=MAX_SNAPLEN as i64))]
    pub snaplen: u32,

    /// Size of the kernel ring buffer: a power of two of at least 4K (suffixes K, M, G).
    #[arg(help_heading = "Capture", long, default_value = "8M", value_name = "SIZE", value_parser = parse_ring_bytes)]
    pub ring_bytes: u32,

    /// Skip BYTES before the Ethernet header (VMware prefix); without a value, 24.
    #[arg(help_heading = "Capture", long, value_name = "BYTES", num_args = 0..=1,
          default_missing_value = VMWARE_DEFAULT_STR,
          value_parser = clap::value_parser!(u16).range(0..=(MAX_SNAPLEN as i64 - 14)))]
    pub offset: Option<u16>,

    /// Learn the VMware prefix length from the traffic (0 to 64 bytes).
    #[arg(help_heading = "Capture", long, conflicts_with = "offset")]
    pub auto_detect: bool,

    /// What to write: sampled packet rows, exact flow rows (every packet counted in the
    /// kernel, one row per flow and --flow-interval), or both.
    #[arg(help_heading = "Flows", long, value_enum, default_value_t = ModeArg::Packets, value_name = "MODE")]
    pub mode: ModeArg,

    /// How often flows are collected and written, one row per flow and interval (e.g. 10s,
    /// 500ms; 100ms to 1h).
    #[arg(help_heading = "Flows", long, default_value = "10s", value_name = "DURATION",
          value_parser = parse_flow_interval)]
    pub flow_interval: Duration,

    /// Flows each of the kernel's two flow maps holds; packets of flows beyond it still
    /// count, through the ring (16 to 16M).
    #[arg(help_heading = "Flows", long, default_value_t = DEFAULT_FLOW_MAX_ENTRIES, value_name = "N",
          value_parser = clap::value_parser!(u32).range(i64::from(MIN_FLOW_MAX_ENTRIES)..=i64::from(MAX_FLOW_MAX_ENTRIES)))]
    pub flow_max_entries: u32,

    /// GreptimeDB table of the flow rows (created by the first insert, append-only).
    #[arg(help_heading = "Flows", long, default_value = "flow_data", value_name = "NAME",
          value_parser = parse_name)]
    pub flow_table: String,

    /// Where rows go: GreptimeDB, JSON lines on stdout, or nowhere (decode and count only).
    #[arg(help_heading = "Output", long, value_enum, default_value_t = Output::Greptimedb, value_name = "KIND")]
    pub output: Output,

    /// The `host` column of every row (e.g. a Kubernetes node name); default: the host name.
    #[arg(help_heading = "Output", long, value_name = "NAME", value_parser = parse_host_name)]
    pub host_name: Option<String>,

    /// Rows per batch handed to the output.
    #[arg(help_heading = "Output", long, default_value_t = 1024, value_name = "ROWS",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_size: u32,

    /// Rows that may wait for the output before new ones are dropped (and counted).
    #[arg(help_heading = "Output", long, default_value_t = 65_536, value_name = "ROWS",
          value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    pub queue_size: u32,

    /// GreptimeDB gRPC endpoint(s), host:port, comma-separated.
    #[arg(help_heading = "GreptimeDB", long, env = "FLOWMETRIX_GREPTIME_ENDPOINT", default_value = "127.0.0.1:4001",
          value_delimiter = ',', value_name = "HOST:PORT", value_parser = parse_endpoint)]
    pub greptime_endpoint: Vec<String>,

    /// GreptimeDB database to write to.
    #[arg(help_heading = "GreptimeDB", long, env = "FLOWMETRIX_GREPTIME_DATABASE", default_value = "public",
          value_name = "NAME", value_parser = parse_name)]
    pub database: String,

    /// Table to write to (created by the first insert, append-only).
    #[arg(help_heading = "GreptimeDB", long, env = "FLOWMETRIX_GREPTIME_TABLE", default_value = "packet_data",
          value_name = "NAME", value_parser = parse_name)]
    pub table: String,

    /// GreptimeDB user; the password comes from FLOWMETRIX_GREPTIME_PASSWORD only.
    #[arg(
        help_heading = "GreptimeDB",
        long,
        env = "FLOWMETRIX_GREPTIME_USERNAME",
        value_name = "USER"
    )]
    pub greptime_username: Option<String>,

    /// gRPC compression of requests to GreptimeDB.
    #[arg(help_heading = "GreptimeDB", long, value_enum, default_value_t = CompressionArg::None, value_name = "KIND")]
    pub compression: CompressionArg,

    /// How rows go to GreptimeDB: bulk writes (Arrow Flight) once the table exists, else row
    /// inserts; or row inserts only.
    #[arg(help_heading = "GreptimeDB", long, value_enum, default_value_t = WritePathArg::Bulk, value_name = "PATH")]
    pub write_path: WritePathArg,

    /// Longest a row waits in a partial batch before it is sent (e.g. 500ms, 1s).
    #[arg(help_heading = "GreptimeDB", long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration)]
    pub flush_interval: Duration,

    /// Time-to-live of the tables the collector creates (e.g. 7d, 12h); default: none.
    #[arg(help_heading = "GreptimeDB", long, value_name = "DURATION", value_parser = parse_ttl)]
    pub ttl: Option<String>,

    /// Write requests to GreptimeDB in flight at once.
    #[arg(help_heading = "GreptimeDB", long, default_value_t = 4, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_in_flight: u32,

    /// On exit, how long to keep trying to write queued rows.
    #[arg(help_heading = "GreptimeDB", long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// TLS to GreptimeDB: the CA certificate (PEM) that signed the server's certificate.
    #[arg(help_heading = "GreptimeDB", long, env = "FLOWMETRIX_GREPTIME_TLS_CA_FILE", value_name = "PATH",
          requires_all = ["tls_cert_file", "tls_key_file"])]
    pub tls_ca_file: Option<PathBuf>,

    /// TLS client certificate (PEM); the GreptimeDB ingester connects with one.
    #[arg(
        help_heading = "GreptimeDB",
        long,
        env = "FLOWMETRIX_GREPTIME_TLS_CERT_FILE",
        value_name = "PATH",
        requires = "tls_ca_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// TLS client key (PEM).
    #[arg(
        help_heading = "GreptimeDB",
        long,
        env = "FLOWMETRIX_GREPTIME_TLS_KEY_FILE",
        value_name = "PATH",
        requires = "tls_ca_file"
    )]
    pub tls_key_file: Option<PathBuf>,

    /// Directory of the disk spool that keeps rows while GreptimeDB is away.
    #[arg(
        help_heading = "GreptimeDB",
        long,
        default_value = "/var/lib/flowmetrix/spool",
        value_name = "DIR"
    )]
    pub spool_dir: PathBuf,

    /// Largest the spool may grow; beyond it the oldest rows are dropped (and counted).
    #[arg(help_heading = "GreptimeDB", long, default_value = "2G", value_name = "SIZE",
          value_parser = parse_size)]
    pub spool_max_bytes: u64,

    /// No spool: rows GreptimeDB cannot take are retried until the exit deadline, then
    /// counted as write errors.
    #[arg(help_heading = "GreptimeDB", long)]
    pub no_spool: bool,

    /// Do not create the tables at start (for who manages the DDL): the first insert then
    /// creates a missing table, without indexes.
    #[arg(help_heading = "GreptimeDB", long)]
    pub no_create_table: bool,

    /// Do not create the per-minute rollups (GreptimeDB Flows) at start.
    #[arg(help_heading = "GreptimeDB", long)]
    pub no_rollups: bool,

    /// Partition the tables the collector creates by host, split at these names, in order
    /// (e.g. `m` gives host < 'm' and host >= 'm'): for a fleet writing to a cluster.
    #[arg(help_heading = "GreptimeDB", long, value_delimiter = ',', value_name = "HOST",
          value_parser = parse_host_name)]
    pub partition_hosts: Vec<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464); off by default.
    #[arg(help_heading = "Operations", long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// How often to log a status line (rates, and losses since the last line).
    #[arg(help_heading = "Operations", long, default_value = "10s", value_name = "DURATION",
          value_parser = parse_duration)]
    pub stats_interval: Duration,

    /// Log format on stderr.
    #[arg(help_heading = "Logging", long, value_enum, default_value_t = LogFormat::Text,
          value_name = "FORMAT")]
    pub log_format: LogFormat,

    /// Config file (TOML, keys are the long flag names); default: /etc/flowmetrix/flowmetrix.toml
    /// when it exists. The environment and flags override it.
    #[arg(
        help_heading = "Settings",
        long,
        env = "FLOWMETRIX_CONFIG",
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,

    /// Print a shell completion script or the man page (for packaging), and exit.
    #[arg(long, value_enum, hide = true, value_name = "WHAT")]
    pub generate: Option<Generate>,

    /// Print the effective settings (and where each comes from) as a config file, and exit.
    #[arg(help_heading = "Settings", long)]
    pub print_config: bool,

    /// Debug logging.
    #[arg(help_heading = "Logging", short = 'd', long)]
    pub debug: bool,

    /// No logging at all (the exit summary is still printed).
    #[arg(help_heading = "Logging", long, conflicts_with = "debug")]
    pub no_log: bool,
}

const VMWARE_DEFAULT_STR: &str = {
    assert!(VMWARE_DEFAULT == 24);
    "24"
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum XdpModeArg {
    /// Native (driver) mode, falling back to skb mode where the driver lacks XDP.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode only.
    Skb,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Sampled packet rows (as before).
    Packets,
    /// Flow rows only: every packet counted, no packet rows.
    Flows,
    /// Both.
    Both,
}

/// Bounds of `--flow-max-entries`.
pub const MIN_FLOW_MAX_ENTRIES: u32 = 16;
pub const MAX_FLOW_MAX_ENTRIES: u32 = 16 << 20;

/// `--direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    /// Packets arriving on the interface (XDP, as before).
    Ingress,
    /// Packets leaving the interface (TC).
    Egress,
    /// Both.
    Both,
}

/// `--ingress-hook`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IngressHookArg {
    Xdp,
    Tc,
}

/// `--tc-attach` (hidden).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TcAttachArg {
    Auto,
    Tcx,
    Netlink,
}

/// `--write-path`, as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WritePathArg {
    Rows,
    Bulk,
}

/// `--compression`, as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Zstd,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::None => Self::None,
            CompressionArg::Gzip => Self::Gzip,
            CompressionArg::Zstd => Self::Zstd,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generate {
    Bash,
    Zsh,
    Fish,
    Man,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Rows into GreptimeDB over gRPC.
    Greptimedb,
    /// One JSON object per line on stdout.
    Jsonl,
    /// Decode and count, write nothing (benchmarks).
    None,
}

/// A size such as 4096, 64K, 512M or 2G (binary units), in bytes.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size such as 4096, 64K, 512M or 2G"))?;
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(format!("'{s}' has an unknown unit (use K, M, G or T)")),
    };
    Ok(n.saturating_mul(mult))
}

/// The spool limit: at least 64K.
fn parse_size(s: &str) -> Result<u64, String> {
    let bytes = parse_bytes(s)?;
    if bytes < 64 << 10 {
        return Err(format!("{s} is too small (at least 64K)"));
    }
    Ok(bytes)
}

/// The ring buffer size: a power of two from 4K to 1G, as the kernel requires.
fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let bytes = parse_bytes(s)?;
    if !(4096..=1 << 30).contains(&bytes) || !bytes.is_power_of_two() {
        return Err(format!(
            "{s} is not a power of two between 4K and 1G (the kernel requires one)"
        ));
    }
    u32::try_from(bytes).map_err(|_| format!("{s} is too large"))
}

/// `host:port`; spaces around it (`"a:1, b:2"`) are not part of it.
fn parse_endpoint(s: &str) -> Result<String, String> {
    let s = s.trim();
    let bad = || format!("'{s}' is not host:port (e.g. 127.0.0.1:4001)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(s.to_owned())
}

/// A `host` value: 1 to 253 printable characters without spaces.
fn parse_host_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.len() <= 253 && s.chars().all(|c| c.is_ascii_graphic());
    ok.then(|| s.to_owned())
        .ok_or_else(|| format!("'{s}' is not a host name (1-253 printable characters, no spaces)"))
}

fn parse_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !s.starts_with(|c: char| c.is_ascii_digit());
    ok.then(|| s.to_owned())
        .ok_or_else(|| format!("'{s}' is not a name (letters, digits, _ and -)"))
}

/// `250ms`, `1s`, `2m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a duration such as 500ms, 1s or 2m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("'{s}' has an unknown unit (use ms, s, m or h)")),
    };
    if d.is_zero() {
        return Err(format!("'{s}' must be more than zero"));
    }
    Ok(d)
}

/// `--flow-interval`: a duration from 100ms to 1h.
fn parse_flow_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&d) {
        return Err(format!("'{s}' is not between 100ms and 1h"));
    }
    Ok(d)
}

/// A GreptimeDB TTL: a number and a unit (`30m`, `12h`, `7d`, `4w`), or `forever`.
fn parse_ttl(s: &str) -> Result<String, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let ok = s == "forever"
        || (!digits.is_empty()
            && digits.parse::<u64>().is_ok_and(|n| n > 0)
            && ["s", "m", "h", "d", "w", "y"].contains(&unit));
    ok.then(|| s.to_owned())
        .ok_or_else(|| format!("'{s}' is not a TTL such as 12h, 7d, 4w or forever"))
}

/// Rewrites Go-style single-dash long flags (`-offset`, `-no-log`, `-sample-rate=10`, …) to
/// their `--` form. Only names of long flags defined on [`Cli`] are touched, so short-flag
/// clusters such as `-id` are left alone; nothing after `--` is touched.
pub fn normalize_go_flags<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    let cmd = Cli::command();
    let longs: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
    let mut out = Vec::new();
    let mut rest = false;
    for arg in args {
        if rest {
            out.push(arg);
            continue;
        }
        let rewritten = arg.to_str().and_then(|s| {
            if s == "--" {
                return None;
            }
            let body = s.strip_prefix('-').filter(|b| !b.starts_with('-'))?;
            let name = body.split_once('=').map_or(body, |(n, _)| n);
            (name.len() > 1 && longs.contains(&name)).then(|| OsString::from(format!("-{s}")))
        });
        if arg == "--" {
            rest = true;
        }
        out.push(rewritten.unwrap_or(arg));
    }
    out
}

/// A switch's value from the environment: 1/0, true/false, yes/no, on/off, in any case.
/// (On the command line a switch takes no value; clap passes "true" when it is given.)
fn parse_switch(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err("a switch is 1, 0, true, false, yes, no, on or off".to_owned()),
    }
}

/// The command: [`Cli`]'s definition, with a `FLOWMETRIX_<LONG_NAME>` environment
/// variable for every setting that does not name its own.
pub fn command() -> Command {
    Cli::command().mut_args(|arg| {
        let arg = if matches!(arg.get_action(), ArgAction::SetTrue) {
            arg.value_parser(parse_switch)
        } else {
            arg
        };
        let skip = arg.get_env().is_some()
            || matches!(arg.get_action(), ArgAction::Help | ArgAction::Version)
            || arg
                .get_long()
                .is_none_or(|l| l == "print-config" || l == "generate");
        if skip {
            return arg;
        }
        let name = arg.get_long().unwrap_or_default();
        let env = format!("FLOWMETRIX_{}", name.to_ascii_uppercase().replace('-', "_"));
        arg.env(env)
    })
}

/// What the command line asked for.
pub enum Parsed {
    Run(Box<Cli>, Box<FileSettings>),
    /// `--help`, `--version` or `--print-config`: print this on stdout and exit 0.
    Print(String),
}

/// The GreptimeDB password is read from the environment only, never from a flag or file.
pub const PASSWORD_ENV: &str = "FLOWMETRIX_GREPTIME_PASSWORD";

/// Parses a command line (program name first) together with the config file (`--config`,
/// or [`config::DEFAULT_PATH`] when it exists). A usage error comes back as one line,
/// without the `error:` prefix.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Parsed, String> {
    parse_with_default(args, Path::new(config::DEFAULT_PATH))
}

fn printable(e: &clap::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    )
}

fn parse_with_default<I: IntoIterator<Item = OsString>>(
    args: I,
    default_config: &Path,
) -> Result<Parsed, String> {
    let args = normalize_go_flags(args);
    let cmd = command();
    // Packaging output needs no other setting (not even --interface).
    if let Some(what) = cmd
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&args)
        .ok()
        .and_then(|m| m.get_one::<Generate>("generate").copied())
    {
        return Ok(Parsed::Print(generate(what)));
    }
    let first = match cmd.clone().try_get_matches_from(&args) {
        Ok(m) => m,
        Err(e) if printable(&e) => return Ok(Parsed::Print(e.render().to_string())),
        // A required setting may come from the config file: read what was given.
        Err(e) if e.kind() == ErrorKind::MissingRequiredArgument => cmd
            .clone()
            .ignore_errors(true)
            .try_get_matches_from(&args)
            .map_err(|e| one_line(&e.render().to_string()))?,
        Err(e) => return Err(describe(&cmd, &args, &e, None)),
    };
    let path = first
        .get_one::<PathBuf>("config")
        .cloned()
        .or_else(|| default_config.exists().then(|| default_config.to_owned()));
    let file = match &path {
        Some(p) => config::load(p, &cmd, &first).map_err(|e| e.to_string())?,
        None => FileSettings::default(),
    };
    // File settings go right after the program name: they never follow a `--`.
    let mut all = args;
    let rest = all.split_off(1.min(all.len()));
    all.extend(file.args.iter().cloned());
    all.extend(rest);
    let matches = cmd
        .clone()
        .try_get_matches_from(&all)
        .map_err(|e| describe(&cmd, &all, &e, Some(&file)))?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| one_line(&e.render().to_string()))?;
    if cli.print_config {
        return Ok(Parsed::Print(effective_settings(&cmd, &matches, &file)));
    }
    Ok(Parsed::Run(Box::new(cli), Box::new(file)))
}

/// A clap error on one line, naming where the bad value came from: the config file (file,
/// line and key), an environment variable, or else the command line.
fn describe(
    cmd: &Command,
    args: &[OsString],
    e: &clap::Error,
    file: Option<&FileSettings>,
) -> String {
    let rendered = one_line(&e.render().to_string());
    let Some(ContextValue::String(invalid)) = e.get(ContextKind::InvalidArg) else {
        return rendered;
    };
    let Some(arg) = arg_named(cmd, invalid) else {
        return rendered;
    };
    let long = arg.get_long().unwrap_or_default();
    if let Some((path, line)) = file.and_then(|f| f.origin(long)) {
        return format!(
            "config file {}, line {line}: {long}: {}",
            path.display(),
            rendered.trim_end_matches(" (see 'flowmetrix --help')")
        );
    }
    if e.kind() == ErrorKind::ArgumentConflict {
        // Either side of a conflict may come from the environment (a service's
        // environment file under a one-off `--pcap` run, say).
        let Some(ContextValue::String(prior)) = e.get(ContextKind::PriorArg) else {
            return rendered;
        };
        for (this, other) in [(prior, invalid), (invalid, prior)] {
            if let Some(a) = arg_named(cmd, this)
                && let Some(var) = env_culprit(cmd, args, a.get_id().as_str(), e)
            {
                let other = other.split(' ').next().unwrap_or(other);
                return format!(
                    "environment variable {var} (--{}) cannot be used with {other}: unset it for this run",
                    a.get_long().unwrap_or_default()
                );
            }
        }
        return rendered;
    }
    if let Some(var) = env_culprit(cmd, args, arg.get_id().as_str(), e) {
        let msg = rendered
            .replace(&format!(" for '{invalid}'"), "")
            .replace(" (see 'flowmetrix --help')", "");
        return format!("environment variable {var}: {msg}");
    }
    rendered
}

/// The argument clap names as "--sample-rate <N>" or "-i <IFACE>".
fn arg_named<'a>(cmd: &'a Command, named: &str) -> Option<&'a clap::Arg> {
    let flag = named.split([' ', '=']).next().unwrap_or("");
    cmd.get_arguments().find(|a| {
        a.get_long()
            .is_some_and(|l| flag.strip_prefix("--") == Some(l))
            || a.get_short().is_some_and(|c| flag == format!("-{c}"))
    })
}

/// The environment variable of argument `id`, if the error `e` comes from its value: the
/// same parse without that variable no longer fails this way.
fn env_culprit(cmd: &Command, args: &[OsString], id: &str, e: &clap::Error) -> Option<String> {
    let arg = cmd.get_arguments().find(|a| a.get_id() == id)?;
    let var = arg.get_env()?.to_string_lossy().into_owned();
    std::env::var_os(&var)?;
    let without = cmd
        .clone()
        .mut_arg(id, |a| a.env(None))
        .try_get_matches_from(args);
    let same = without
        .err()
        .is_some_and(|e2| e2.kind() == e.kind() && e2.to_string() == e.to_string());
    (!same).then_some(var)
}

/// A completion script or the man page, from the one definition of the flags.
fn generate(what: Generate) -> String {
    let mut cmd = command();
    let mut out = Vec::new();
    let shell = match what {
        Generate::Bash => clap_complete::Shell::Bash,
        Generate::Zsh => clap_complete::Shell::Zsh,
        Generate::Fish => clap_complete::Shell::Fish,
        Generate::Man => return man_page(cmd),
    };
    clap_complete::generate(shell, &mut cmd, "flowmetrix", &mut out);
    complete_interfaces(what, &String::from_utf8_lossy(&out))
}

/// Where the shells find network interfaces to complete `-i` with.
const NET_CLASS: &str = "/sys/class/net";

/// clap_complete has no value hint for network interfaces: `-i`/`--interface` is declared
/// `ValueHint::Other` (nothing offered), and here given each shell's own interface list.
fn complete_interfaces(what: Generate, script: &str) -> String {
    match what {
        Generate::Bash => {
            // In the `case "${prev}"` of the generated function, replace the body of the
            // `--interface)` and `-i)` branches (up to their `return 0`).
            let mut out = String::new();
            let mut lines = script.lines();
            while let Some(line) = lines.next() {
                out.push_str(line);
                out.push('\n');
                if matches!(line.trim(), "--interface)" | "-i)") {
                    let indent = " ".repeat(line.len() - line.trim_start().len() + 4);
                    out.push_str(&format!(
                        "{indent}COMPREPLY=($(compgen -W \"$(ls {NET_CLASS} 2>/dev/null)\" -- \"${{cur}}\"))\n"
                    ));
                    for skipped in lines.by_ref() {
                        if skipped.trim() == "return 0" {
                            out.push_str(skipped);
                            out.push('\n');
                            break;
                        }
                    }
                }
            }
            out
        }
        // zsh and fish ship interface completers of their own.
        Generate::Zsh => script.replace(":IFACE:'", ":IFACE:_net_interfaces'"),
        Generate::Fish => {
            script
                .lines()
                .map(|l| {
                    if l.contains(" -l interface ") {
                        format!("{l} -a '(__fish_print_interfaces)'")
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        }
        Generate::Man => script.to_owned(),
    }
}

/// Text for a roff document: backslashes and dashes escaped, no line read as a request.
fn roff(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e").replace('-', "\\-");
            if l.starts_with(['.', '\'']) {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One `.TP` item: a bold term and its text.
fn roff_item(term: &str, text: &str) -> String {
    format!(".TP\n\\fB{}\\fR\n{}\n", roff(term), roff(text))
}

/// The man page: clap_mangen's (name, synopsis, options) and our own EXIT STATUS,
/// ENVIRONMENT, FILES and EXAMPLES, with the environment variables taken from the flags.
fn man_page(cmd: Command) -> String {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = clap_mangen::Man::new(cmd.clone()).render(&mut out);
    let generated = String::from_utf8_lossy(&out).into_owned();

    let mut ours = String::from(".SH \"EXIT STATUS\"\n");
    for (code, what) in [
        (
            "0",
            "Success; also after Ctrl+C or SIGTERM, once queued rows are written and the summary line is printed.",
        ),
        (
            "1",
            "A runtime failure: the XDP program cannot be loaded or attached, a pcap file is damaged, the metrics address cannot be bound.",
        ),
        (
            "2",
            "A usage error: a bad flag, environment variable or config file value, or a missing interface.",
        ),
    ] {
        ours.push_str(&roff_item(code, what));
    }

    ours.push_str(".SH ENVIRONMENT\n");
    ours.push_str(&roff(
        "Every setting can also be given by an environment variable; a flag overrides it, and it overrides the config file. Switches take 1, 0, true, false, yes, no, on or off.",
    ));
    ours.push('\n');
    for arg in cmd.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        ours.push_str(&roff_item(
            &var.to_string_lossy(),
            &format!("--{long}: {}.", help.trim_end_matches('.')),
        ));
    }
    ours.push_str(&roff_item(
        PASSWORD_ENV,
        "The GreptimeDB password (with --greptime-username); it has no flag or config-file key and is never logged or printed.",
    ));
    ours.push_str(&roff_item(
        "RUST_LOG",
        "A tracing filter (e.g. info,flowmetrix=trace) that replaces the one --debug chooses.",
    ));

    let spool = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some("spool-dir"))
        .and_then(|a| a.get_default_values().first())
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    ours.push_str(".SH FILES\n");
    ours.push_str(&roff_item(
        config::DEFAULT_PATH,
        "The config file read when it exists and no --config is given: TOML whose keys are the long flag names, plus an [applications] table of port = \"NAME\".",
    ));
    ours.push_str(&roff_item(
        &spool,
        "The disk spool (--spool-dir) that keeps rows while GreptimeDB is away.",
    ));
    ours.push_str(&roff_item(
        NET_CLASS,
        "The interfaces -i can name (and shell completion offers).",
    ));

    ours.push_str(".SH EXAMPLES\n");
    for (line, what) in [
        (
            "flowmetrix -i eth0 -d",
            "Capture on eth0 into GreptimeDB at 127.0.0.1:4001, with debug logging.",
        ),
        (
            "flowmetrix -i eth0 --sample-rate 100",
            "Sample 1 packet in 100.",
        ),
        (
            "flowmetrix -i ens192 -offset 24",
            "VMware hosts: skip a 24-byte prefix before each Ethernet header (-auto-detect learns it).",
        ),
        (
            "flowmetrix -i eth0 --output jsonl",
            "JSON lines on standard output instead of GreptimeDB.",
        ),
        (
            "flowmetrix --pcap capture.pcap --output jsonl",
            "Replay a pcap or pcapng file through the same decoder.",
        ),
        (
            "tcpdump -i eth0 -w - | flowmetrix --pcap -",
            "Replay a capture read from standard input.",
        ),
        (
            "FLOWMETRIX_SAMPLE_RATE=10 flowmetrix --config ./fm.toml --print-config",
            "Show the effective settings and where each comes from.",
        ),
    ] {
        ours.push_str(&format!(".TP\n.B {}\n{}\n", roff(line), roff(what)));
    }

    match generated.find(".SH VERSION") {
        Some(at) => format!("{}{ours}{}", &generated[..at], &generated[at..]),
        None => generated + &ours,
    }
}

/// The settings in force, as a config file, each with where it came from; the password
/// is never shown.
fn effective_settings(cmd: &Command, m: &ArgMatches, file: &FileSettings) -> String {
    let mut out = String::from("# flowmetrix: effective settings\n");
    for arg in cmd.get_arguments() {
        let (id, Some(long)) = (arg.get_id().as_str(), arg.get_long()) else {
            continue;
        };
        if ["config", "print-config", "generate", "help", "version"].contains(&long) {
            continue;
        }
        let source = match m.value_source(id) {
            Some(ValueSource::CommandLine) if file.origin(long).is_some() => "config file",
            Some(ValueSource::CommandLine) => "command line",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let value = if matches!(arg.get_action(), ArgAction::SetTrue) {
            m.get_flag(id).to_string()
        } else {
            let raw: Vec<String> = m
                .get_raw(id)
                .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let quote = |s: &String| {
                if s.parse::<i64>().is_ok() {
                    s.clone()
                } else {
                    format!("{s:?}")
                }
            };
            match raw.len() {
                0 => {
                    out.push_str(&format!("# {long} (unset)\n"));
                    continue;
                }
                // One interface is written as the original's single name.
                1 if arg.get_value_delimiter().is_none() || long == "interface" => quote(&raw[0]),
                // List items are trimmed when parsed ("a:1, b:2").
                _ => format!(
                    "[{}]",
                    raw.iter()
                        .map(|s| quote(&s.trim().to_owned()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        };
        out.push_str(&format!("{long} = {value}  # {source}\n"));
    }
    let password = if std::env::var_os(PASSWORD_ENV).is_some() {
        "\"********\"  # environment"
    } else {
        "unset"
    };
    out.push_str(&format!("# password ({PASSWORD_ENV}): {password}\n"));
    if !file.applications.is_empty() {
        out.push_str("\n[applications]  # config file\n");
        for (port, name) in &file.applications {
            out.push_str(&format!("{port} = {name:?}\n"));
        }
    }
    out
}

/// A clap error's message on one line, without its `error: ` prefix (its first line plus
/// the indented lines under it, such as the missing arguments), and a pointer to --help.
fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or("invalid command line");
    let mut msg = first
        .strip_prefix("error: ")
        .unwrap_or(first)
        .trim_end()
        .to_owned();
    for detail in lines.take_while(|l| l.starts_with(' ')) {
        msg.push(' ');
        msg.push_str(detail.trim());
    }
    format!("{msg} (see 'flowmetrix --help')")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn cli(v: &[&str]) -> Cli {
        match parse_with_default(os(v), Path::new("/nonexistent")) {
            Ok(Parsed::Run(c, _)) => *c,
            Ok(Parsed::Print(p)) => panic!("printed {p}"),
            Err(e) => panic!("usage error: {e}"),
        }
    }

    #[test]
    fn go_flags_are_rewritten_and_others_left_alone() {
        assert_eq!(
            normalize_go_flags(os(&[
                "flowmetrix",
                "-i",
                "eth0",
                "-offset",
                "24",
                "-auto-detect",
                "-no-log",
                "-sample-rate=10",
                "-d",
                "-id",
                "--",
                "-offset"
            ])),
            os(&[
                "flowmetrix",
                "-i",
                "eth0",
                "--offset",
                "24",
                "--auto-detect",
                "--no-log",
                "--sample-rate=10",
                "-d",
                "-id",
                "--",
                "-offset"
            ])
        );
    }

    #[test]
    fn original_command_lines_parse_like_their_long_forms() {
        let pairs: [(&[&str], &[&str]); 4] = [
            (
                &["fm", "-i", "eth0", "-d"],
                &["fm", "--interface", "eth0", "--debug"],
            ),
            (
                &["fm", "-i", "ens192", "-offset", "24"],
                &["fm", "--interface=ens192", "--offset=24"],
            ),
            (
                &["fm", "-i", "ens192", "-offset"],
                &["fm", "--interface", "ens192", "--offset"],
            ),
            (
                &["fm", "-i", "eth0", "-no-log"],
                &["fm", "--interface", "eth0", "--no-log"],
            ),
        ];
        for (go, long) in pairs {
            assert_eq!(
                format!("{:?}", cli(go)),
                format!("{:?}", cli(long)),
                "{go:?}"
            );
        }
    }

    #[test]
    fn offset_without_value_is_24_and_absent_is_none() {
        assert_eq!(cli(&["fm", "-i", "x", "-offset"]).offset, Some(24));
        assert_eq!(cli(&["fm", "-i", "x", "-offset", "-d"]).offset, Some(24));
        assert_eq!(cli(&["fm", "--pcap", "f.pcap", "-offset"]).offset, Some(24));
        assert_eq!(cli(&["fm", "-i", "x", "-offset", "16"]).offset, Some(16));
        assert_eq!(cli(&["fm", "-i", "x"]).offset, None);
    }

    #[test]
    fn defaults() {
        let c = cli(&["fm", "-i", "eth0"]);
        assert_eq!(c.sample_rate, 1);
        assert_eq!(c.snaplen, DEFAULT_SNAPLEN);
        assert_eq!(c.ring_bytes, 8 << 20);
        assert_eq!(c.xdp_mode, XdpModeArg::Auto);
        assert_eq!(c.direction, DirectionArg::Ingress);
        assert_eq!(c.ingress_hook, IngressHookArg::Xdp);
        assert_eq!(c.tc_attach, TcAttachArg::Auto);
        assert_eq!(c.output, Output::Greptimedb);
        assert_eq!(c.greptime_endpoint, ["127.0.0.1:4001"]);
        assert_eq!(
            (c.database.as_str(), c.table.as_str()),
            ("public", "packet_data")
        );
        assert_eq!(c.flush_interval, Duration::from_secs(1));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(c.ttl, None);
        assert!(!c.debug && !c.no_log && !c.auto_detect);
    }

    #[test]
    fn usage_errors_are_one_line() {
        for bad in [
            &["fm", "-i", "eth0", "--sample-rate", "ten"][..],
            &["fm", "-i", "eth0", "--bogus"],
            &["fm"],
            &["fm", "-i", "eth0", "--snaplen", "999"],
            &["fm", "-i", "eth0", "--ring-bytes", "5000"],
            &["fm", "-i", "eth0", "-d", "-no-log"],
            &["fm", "-i", "eth0", "--tls-ca-file", "ca.pem"],
            &["fm", "-i", "eth0", "--pcap", "x.pcap"],
            &["fm", "--pcap", "x.pcap", "--sample-rate", "10"],
            &[
                "fm",
                "-i",
                "eth0",
                "--tls-cert-file",
                "c.pem",
                "--tls-key-file",
                "k.pem",
            ],
        ] {
            let Err(e) = parse(os(bad)) else {
                panic!("{bad:?} parsed")
            };
            assert!(!e.contains('\n'), "{e}");
            assert!(e.ends_with("(see 'flowmetrix --help')"), "{e}");
        }
    }

    #[test]
    fn missing_arguments_are_named_on_the_line() {
        let Err(e) = parse(os(&["fm"])) else { panic!() };
        assert_eq!(
            e,
            "the following required arguments were not provided: --interface <IFACE> (see 'flowmetrix --help')"
        );
    }

    #[test]
    fn greptime_settings_are_checked() {
        assert_eq!(
            parse_endpoint("db.example:4001"),
            Ok("db.example:4001".into())
        );
        assert_eq!(parse_endpoint("[::1]:4001"), Ok("[::1]:4001".into()));
        for bad in [
            "4001",
            ":4001",
            "host:",
            "host:0",
            "host:99999",
            "http://h/x:1",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err() && parse_duration("1d").is_err());
        assert_eq!(parse_flow_interval("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_flow_interval("10s"), Ok(Duration::from_secs(10)));
        for bad in ["0", "0ms", "99ms", "2h", "x"] {
            assert!(parse_flow_interval(bad).is_err(), "{bad}");
        }
        assert!(parse_ttl("7d").is_ok() && parse_ttl("forever").is_ok());
        assert!(parse_ttl("7").is_err() && parse_ttl("0d").is_err() && parse_ttl("d").is_err());
        assert!(parse_name("packet_data").is_ok());
        assert!(parse_name("bad;name").is_err() && parse_name("").is_err());
        let c = cli(&["fm", "-i", "x", "--greptime-endpoint", "a:1,b:2"]);
        assert_eq!(c.greptime_endpoint, ["a:1", "b:2"]);
        let c = cli(&["fm", "-i", "x", "--greptime-endpoint", "a:1, b:2 ,c:3"]);
        assert_eq!(c.greptime_endpoint, ["a:1", "b:2", "c:3"]);
    }

    #[test]
    fn switch_values() {
        for on in ["1", "true", "TRUE", "yes", "Yes", "on", "ON"] {
            assert_eq!(parse_switch(on), Ok(true), "{on}");
        }
        for off in ["0", "false", "False", "no", "NO", "off", "Off"] {
            assert_eq!(parse_switch(off), Ok(false), "{off}");
        }
        for bad in ["2", "y", "maybe", "enable"] {
            assert!(parse_switch(bad).is_err(), "{bad}");
        }
        // The command line's switches still work.
        let c = cli(&["fm", "-i", "x", "-d"]);
        assert!(c.debug && !c.no_log);
    }

    #[test]
    fn print_config_needs_no_interface() {
        assert!(matches!(
            parse_with_default(os(&["fm", "--print-config"]), Path::new("/nonexistent")),
            Ok(Parsed::Print(p)) if p.contains("# interface (unset)")
        ));
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(parse_ring_bytes("4096"), Ok(4096));
        assert_eq!(parse_ring_bytes("64K"), Ok(65536));
        assert_eq!(parse_ring_bytes("8M"), Ok(8 << 20));
        assert!(parse_ring_bytes("4095").is_err());
        assert!(parse_ring_bytes("3M").is_err());
        assert!(parse_ring_bytes("2G").is_err());
        assert!(parse_ring_bytes("").is_err());
        assert!(parse_ring_bytes("99999999999999999999").is_err());
    }

    #[test]
    fn help_and_version_are_printed_not_errors() {
        assert!(matches!(parse(os(&["fm", "--help"])), Ok(Parsed::Print(_))));
        assert!(matches!(parse(os(&["fm", "-V"])), Ok(Parsed::Print(_))));
    }
}
