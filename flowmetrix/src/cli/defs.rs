//! The flags, each defined once (clap derive): name, help, default, value parser, and the
//! `FLOWMETRIX_*` environment variable of each. `--help`, the man page, the completions,
//! the config file's keys and `--print-config` all come from this one definition.

use std::{path::PathBuf, time::Duration};

use clap::{ArgAction, Command, CommandFactory, Parser, ValueEnum, ValueHint};
use flowmetrix_common::{DEFAULT_SNAPLEN, MAX_SNAPLEN, flow_key::DEFAULT_FLOW_MAX_ENTRIES};

use super::values::{
    parse_duration, parse_endpoint, parse_flow_interval, parse_host_name, parse_name,
    parse_ring_bytes, parse_size, parse_switch, parse_ttl,
};
use crate::{offset::VMWARE_DEFAULT, sink::greptime::Compression};

/// Sample packets with XDP and write one row per sampled packet.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "flowmetrix",
    version,
    about,
    max_term_width = 100,
    after_help = AFTER_HELP
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

    /// Replay a pcap or pcapng file instead of capturing (`-`: standard input): Ethernet,
    /// Linux cooked, raw IP and loopback captures; ts comes from the file.
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

    /// GreptimeDB table of the flow rows (created at start if missing, append-only).
    #[arg(help_heading = "Flows", long, default_value = "flow_data", value_name = "NAME",
          value_parser = parse_name)]
    pub flow_table: String,

    /// GreptimeDB table of the DNS transactions, one row per query and its answer (created at
    /// start if missing, append-only; with --mode flows|both).
    #[arg(help_heading = "Flows", long, default_value = "dns_data", value_name = "NAME",
          value_parser = parse_name)]
    pub dns_table: String,

    /// How long a DNS query waits for its answer before its row says TIMEOUT (e.g. 5s).
    #[arg(help_heading = "Flows", long, default_value = "5s", value_name = "DURATION",
          value_parser = parse_flow_interval)]
    pub dns_timeout: Duration,

    /// More ports DNS is served on, besides 53 (UDP and TCP); repeat or separate by commas.
    #[arg(help_heading = "Flows", long, value_name = "PORT", value_delimiter = ',',
          value_parser = clap::value_parser!(u16).range(1..))]
    pub dns_port: Vec<u16>,

    /// TCP health on the flow rows: local sockets' retransmits and smoothed RTT (kernel
    /// tracing hooks, probed at start) and handshake latency; off leaves those columns null.
    #[arg(help_heading = "Flows", long, value_enum, default_value_t = OnOff::On,
          value_name = "ON|OFF")]
    pub tcp_health: OnOff,

    /// Kernel drops by reason on the flow rows (drop_packets, drop_bytes, drop_reason) and
    /// as flowmetrix_kernel_drops_total{reason}: skb:kfree_skb, reasons named by the running
    /// kernel (with --mode flows|both; off by itself where the kernel lacks the hook).
    #[arg(help_heading = "Flows", long, value_enum, default_value_t = OnOff::On,
          value_name = "ON|OFF")]
    pub drops: OnOff,

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

    /// Rows that may wait for the output before new ones go to the spool or are dropped (and
    /// counted).
    // 32 768 packet rows are 9.2 MiB; 65 536 (the default until 2026-12-06) put the
    // collector's peak RSS at 67–74 MiB with GreptimeDB stalled or behind (BENCHMARKS.md).
    #[arg(help_heading = "Output", long, default_value_t = 32_768, value_name = "ROWS",
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

    /// Table of the packet rows (created at start if missing, append-only).
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

    /// Name each row's pod and namespace from this node's pod list: read from the API server
    /// (list and watch), from the kubelet (polled), or not at all. Uses the pod's
    /// ServiceAccount token and CA; --host-name is the node's name.
    #[arg(help_heading = "Kubernetes", long, value_enum, default_value_t = KubeMetadataArg::Off,
          value_name = "FROM")]
    pub kube_metadata: KubeMetadataArg,

    /// Where --kube-metadata reads the pod list; default: the API server at
    /// KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT, or the kubelet at https://NODE:10250.
    #[arg(help_heading = "Kubernetes", long, value_name = "URL")]
    pub kube_url: Option<String>,

    /// The host's cgroup2 tree, where a cgroup id is looked up to name its container and pod
    /// (a DaemonSet mounts the host's /sys/fs/cgroup there); default: this process's cgroup2
    /// mount.
    #[arg(help_heading = "Kubernetes", long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub cgroup_root: Option<PathBuf>,

    /// How often the kubelet's pod list is read (the API server's is watched).
    #[arg(help_heading = "Kubernetes", long, default_value = "10s", value_name = "DURATION",
          value_parser = parse_duration)]
    pub kube_refresh: Duration,

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

/// What `--help` and the man page (its EXTRA section) say after the flags.
macro_rules! notes {
    () => {
        "\
Long flags also take one dash, as in the original tool: -offset 24, -auto-detect, -no-log.
Durations take a unit: 500ms, 10s, 2m, 1h (--ttl also d, w, y).
Ctrl+C or SIGTERM detaches, writes what is queued, prints a summary and exits.
Man page and shell completions: flowmetrix --generate man|bash|zsh|fish"
    };
}

/// The man page's notes: [`AFTER_HELP`] without the examples (it has an EXAMPLES section).
pub(super) const NOTES: &str = notes!();

/// After the flags in `--help`: the examples a new user starts from, then the notes.
const AFTER_HELP: &str = concat!(
    "\
Examples:
  flowmetrix -i eth0 --output jsonl              JSON lines on stdout, one row per packet
  flowmetrix -i eth0                             into GreptimeDB at 127.0.0.1:4001
  flowmetrix -i eth0 --mode both --sample-rate 100
                                                 exact flow rows and 1 in 100 packets
  flowmetrix --pcap capture.pcap --output jsonl  replay a capture file (- for stdin)
  flowmetrix -i 'veth*' --print-config           the effective settings and their sources

",
    notes!(),
    "\nExit status: 0 success, 1 runtime failure, 2 usage or config error (man page: EXIT STATUS)."
);

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
    /// Sampled packet rows, one per sampled packet (the default).
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
    /// Packets arriving on the interface (XDP, or TC with --ingress-hook tc).
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

/// A part switched on or off (`--tcp-health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// `--kube-metadata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KubeMetadataArg {
    /// No pod names (the default).
    Off,
    /// The kubelet's /pods, polled every --kube-refresh (needs nodes/proxy).
    Kubelet,
    /// The API server: this node's pods, listed and watched (needs pods list and watch).
    Api,
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

/// The GreptimeDB password is read from the environment only, never from a flag or file.
pub const PASSWORD_ENV: &str = "FLOWMETRIX_GREPTIME_PASSWORD";
