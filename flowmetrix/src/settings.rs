//! One step from what was asked for (flags, environment, config file: [`cli`](crate::cli))
//! to typed settings for each stage, with every check that spans several settings done here,
//! each failure one line (exit 2). Only [`cli`](crate::cli) knows clap; the stages only know
//! their own settings types.

use std::{path::Path, sync::Arc};

use crate::{
    applications::Applications,
    attribution::kube::{KUBELET_PORT, KubeSettings, KubeSource, SERVICE_ACCOUNT_DIR},
    capture::{self, CaptureConfig, Directions, FlowsConfig, IngressHook, TcAttach, XdpMode},
    cli::{
        Cli, DirectionArg, FileSettings, IngressHookArg, KubeMetadataArg, LogFormat, ModeArg,
        OnOff, Output, PASSWORD_ENV, TcAttachArg, XdpModeArg,
    },
    decoder::DecodeSettings,
    dns::{DnsSettings, dns_ports},
    flows::FlowSettings,
    offset::Prefix,
    pipeline::{MetricsSettings, PipelineSettings},
    sink::{
        SinkConfig, SinkSettings,
        greptime::{DdlOptions, GreptimeConfig, SpoolConfig, Tls, WritePath},
    },
    source::SourceSettings,
    watch,
};

/// Test hook (the fault tests): delay every spool append by this many milliseconds, as a
/// stalled disk would.
pub const SPOOL_STALL_ENV: &str = "FLOWMETRIX_TEST_SPOOL_STALL_MS";

/// Test hook (the flows tests): the flow event ring's size in bytes, to fill it with few
/// packets.
pub const FLOW_EVENTS_BYTES_ENV: &str = "FLOWMETRIX_TEST_FLOW_EVENTS_BYTES";

/// Ethernet II header length: the least a sample must hold after the prefix.
const ETHERNET_HEADER: u32 = 14;

/// How much to log, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// `None`: no logging at all (`-no-log`).
    pub level: Option<LogLevel>,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    /// `-d`: debug for FlowMetrix (and its XDP program), not for the libraries.
    Debug,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub pipeline: PipelineSettings,
    pub log: LogSettings,
}

/// A setting, or a combination of settings, that cannot work; one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

impl Settings {
    /// The settings for `cli` (which already holds the config file's values) and the
    /// file's `[applications]`; `password` is the GreptimeDB password from the environment.
    pub fn new(
        cli: &Cli,
        file: &FileSettings,
        password: Option<String>,
    ) -> Result<Self, UsageError> {
        if cli.auto_detect && cli.mode == ModeArg::Flows {
            return Err(usage(
                "-auto-detect learns the prefix from sampled packets, and --mode flows samples none: use --mode both, or give the prefix with -offset",
            ));
        }
        let source = source(cli)?;
        let host = cli.host_name.clone().unwrap_or_else(host_name);
        let kube = kube(cli, &host, |name| std::env::var(name).ok())?;
        let decode = DecodeSettings {
            prefix: if cli.auto_detect {
                Prefix::Auto
            } else {
                Prefix::Fixed(cli.offset.map_or(0, usize::from))
            },
            applications: Arc::new(Applications::new(file.applications.iter().cloned())),
            host: host.into(),
        };
        let sink = SinkSettings {
            output: output(cli, password)?,
            queue_rows: cli.queue_size as usize,
        };
        Ok(Self {
            pipeline: PipelineSettings {
                source,
                decode,
                sink,
                packets: cli.mode != ModeArg::Flows,
                flows: (cli.mode != ModeArg::Packets).then(|| FlowSettings {
                    interval: cli.flow_interval,
                    table: cli.flow_table.clone(),
                    // `--tcp-health off` turns it off.
                    handshakes: cli.tcp_health == OnOff::On,
                    egress_watched: cli.direction != DirectionArg::Ingress,
                }),
                dns: (cli.mode != ModeArg::Packets).then(|| DnsSettings {
                    timeout: cli.dns_timeout,
                    ports: dns_ports(&cli.dns_port),
                    table: cli.dns_table.clone(),
                    ..DnsSettings::default()
                }),
                metrics: MetricsSettings {
                    addr: cli.metrics_addr,
                    stats_interval: cli.stats_interval,
                },
                kube,
                cgroup_root: cli.cgroup_root.clone(),
            },
            log: LogSettings {
                level: match (cli.no_log, cli.debug) {
                    (true, _) => None,
                    (false, true) => Some(LogLevel::Debug),
                    (false, false) => Some(LogLevel::Info),
                },
                format: cli.log_format,
            },
        })
    }
}

fn source(cli: &Cli) -> Result<SourceSettings, UsageError> {
    let interfaces = cli
        .interface
        .iter()
        .map(|i| i.trim())
        .filter(|i| !i.is_empty())
        .collect::<Vec<_>>();
    match (&cli.pcap, interfaces.is_empty()) {
        (Some(_), false) => Err(usage(
            "--pcap replays a file instead of capturing: give --interface or --pcap, not both",
        )),
        (Some(file), true) => {
            // A file that is not there is a usage error (exit 2), as a named interface that
            // is not there; one that cannot be read or parsed is a runtime failure.
            if file.as_os_str() != "-"
                && let Err(e) = std::fs::metadata(file)
                && e.kind() == std::io::ErrorKind::NotFound
            {
                return Err(usage(format!("no such pcap file: {}", file.display())));
            }
            Ok(SourceSettings::Pcap(file.clone()))
        }
        (None, true) => Err(usage(
            "the following required arguments were not provided: --interface <IFACE> (see 'flowmetrix --help')",
        )),
        (None, false) => {
            if let Some(offset) = cli.offset
                && u32::from(offset) + ETHERNET_HEADER > cli.snaplen
            {
                return Err(usage(format!(
                    "--offset {offset} leaves no room for an Ethernet header in --snaplen {} bytes",
                    cli.snaplen
                )));
            }
            // Named interfaces must exist; patterns may match nothing yet (a warning then).
            if let Some(iface) = interfaces
                .iter()
                .find(|i| !watch::is_pattern(i) && capture::if_index(i).is_none())
            {
                return Err(usage(format!("no such interface: {iface}")));
            }
            let dns_ports = kernel_dns_ports(&cli.dns_port)?;
            Ok(SourceSettings::Live(CaptureConfig {
                interfaces: interfaces.iter().map(|i| (*i).to_owned()).collect(),
                mode: match cli.xdp_mode {
                    XdpModeArg::Auto => XdpMode::Auto,
                    XdpModeArg::Native => XdpMode::Native,
                    XdpModeArg::Skb => XdpMode::Skb,
                },
                sample_rate: cli.sample_rate,
                snaplen: cli.snaplen,
                ring_bytes: cli.ring_bytes,
                directions: match cli.direction {
                    DirectionArg::Ingress => Directions::Ingress,
                    DirectionArg::Egress => Directions::Egress,
                    DirectionArg::Both => Directions::Both,
                },
                ingress_hook: match cli.ingress_hook {
                    IngressHookArg::Xdp => IngressHook::Xdp,
                    IngressHookArg::Tc => IngressHook::Tc,
                },
                tc_attach: match cli.tc_attach {
                    TcAttachArg::Auto => TcAttach::Auto,
                    TcAttachArg::Tcx => TcAttach::Tcx,
                    TcAttachArg::Netlink => TcAttach::Netlink,
                },
                packets: cli.mode != ModeArg::Flows,
                flows: (cli.mode != ModeArg::Packets).then(|| FlowsConfig {
                    max_entries: cli.flow_max_entries,
                    // With -auto-detect, pushed once learned (FlowMaps::set_prefix).
                    prefix: (!cli.auto_detect).then(|| cli.offset.map_or(0, u32::from)),
                    events_bytes: std::env::var(FLOW_EVENTS_BYTES_ENV)
                        .ok()
                        .and_then(|v| v.parse().ok()),
                    dns_ports,
                    handshakes: cli.tcp_health == OnOff::On,
                    tcp_health: cli.tcp_health == OnOff::On,
                    drops: cli.drops == OnOff::On,
                }),
            }))
        }
    }
}

/// The DNS ports the kernel programs pass to the ring: 53 and at most three more.
fn kernel_dns_ports(extra: &[u16]) -> Result<[u16; flowmetrix_common::DNS_PORTS], UsageError> {
    let ports = dns_ports(extra);
    let mut out = [0; flowmetrix_common::DNS_PORTS];
    if ports.len() > out.len() {
        return Err(UsageError(format!(
            "--dns-port: at most {} ports besides 53 ({} given)",
            out.len() - 1,
            ports.len() - 1
        )));
    }
    out[..ports.len()].copy_from_slice(&ports);
    Ok(out)
}

/// `--kube-metadata`: where the pod list is, for the node named `node` (`--host-name`);
/// `env` reads the environment (the API server's address, as Kubernetes gives it to a pod).
fn kube(
    cli: &Cli,
    node: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<KubeSettings>, UsageError> {
    let source = match cli.kube_metadata {
        KubeMetadataArg::Off => return Ok(None),
        KubeMetadataArg::Kubelet => KubeSource::Kubelet,
        KubeMetadataArg::Api => KubeSource::Api,
    };
    // The node's name goes into the API server's query: a DNS subdomain, as Kubernetes
    // requires of node names.
    let dns = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if node.is_empty() || !node.chars().all(dns) {
        return Err(usage(format!(
            "--kube-metadata: the node name '{node}' is not a Kubernetes node name (lowercase letters, digits, '-' and '.'): set --host-name to the node's name (spec.nodeName)"
        )));
    }
    let url = match (&cli.kube_url, source) {
        (Some(url), _) => url.clone(),
        (None, KubeSource::Kubelet) => format!("https://{node}:{KUBELET_PORT}"),
        (None, KubeSource::Api) => {
            let (Some(host), Some(port)) = (
                env("KUBERNETES_SERVICE_HOST"),
                env("KUBERNETES_SERVICE_PORT"),
            ) else {
                return Err(usage(
                    "--kube-metadata api: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not in a pod?): give the API server with --kube-url",
                ));
            };
            if host.contains(':') {
                format!("https://[{host}]:{port}")
            } else {
                format!("https://{host}:{port}")
            }
        }
    };
    let tls = url.starts_with("https://");
    if !tls && !url.starts_with("http://") {
        return Err(usage(format!(
            "--kube-url {url}: not an https:// (or http://) URL"
        )));
    }
    let account = Path::new(SERVICE_ACCOUNT_DIR);
    Ok(Some(KubeSettings {
        source,
        url,
        node: node.to_owned(),
        // Plain HTTP is a local proxy (`kubectl proxy`) that authenticates by itself: no
        // token goes over it.
        token_file: tls.then(|| account.join("token")),
        ca_file: tls.then(|| account.join("ca.crt")),
        refresh: cli.kube_refresh,
        timeout: KUBE_TIMEOUT,
    }))
}

/// How long the kubelet or the API server may take to answer.
const KUBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn output(cli: &Cli, password: Option<String>) -> Result<SinkConfig, UsageError> {
    Ok(match cli.output {
        Output::Jsonl => SinkConfig::Jsonl,
        Output::None => SinkConfig::None,
        Output::Greptimedb => {
            if password.is_some() && cli.greptime_username.is_none() {
                return Err(usage(format!(
                    "{PASSWORD_ENV} is set but no user: set FLOWMETRIX_GREPTIME_USERNAME or --greptime-username"
                )));
            }
            if cli.partition_hosts.windows(2).any(|w| w[0] >= w[1]) {
                return Err(usage(format!(
                    "--partition-hosts {}: the split points must be in ascending order, each once",
                    cli.partition_hosts.join(",")
                )));
            }
            SinkConfig::Greptime(Box::new(GreptimeConfig {
                endpoints: cli.greptime_endpoint.clone(),
                database: cli.database.clone(),
                table: cli.table.clone(),
                username: cli.greptime_username.clone(),
                password,
                compression: cli.compression.into(),
                write_path: match cli.write_path {
                    crate::cli::WritePathArg::Rows => WritePath::Rows,
                    crate::cli::WritePathArg::Bulk => WritePath::Bulk,
                },
                batch_size: cli.batch_size as usize,
                flush_interval: cli.flush_interval,
                ttl: cli.ttl.clone(),
                max_in_flight: cli.max_in_flight as usize,
                shutdown_timeout: cli.shutdown_timeout,
                tls: tls(cli)?,
                spool: spools(cli).then(|| SpoolConfig {
                    dir: cli.spool_dir.clone(),
                    max_bytes: cli.spool_max_bytes,
                    stall: std::env::var(SPOOL_STALL_ENV)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .map(std::time::Duration::from_millis),
                }),
                ddl: DdlOptions {
                    create_tables: !cli.no_create_table,
                    rollups: !cli.no_rollups,
                    partition_hosts: cli.partition_hosts.clone(),
                    flows: cli.mode != ModeArg::Packets,
                    flow_table: cli.flow_table.clone(),
                    dns_table: cli.dns_table.clone(),
                },
            }))
        }
    })
}

/// TLS files, checked for readability now so that a typo is a usage error, not an outage.
fn tls(cli: &Cli) -> Result<Option<Tls>, UsageError> {
    let (Some(ca), Some(cert), Some(key)) =
        (&cli.tls_ca_file, &cli.tls_cert_file, &cli.tls_key_file)
    else {
        return Ok(None);
    };
    for (flag, path) in [
        ("--tls-ca-file", ca),
        ("--tls-cert-file", cert),
        ("--tls-key-file", key),
    ] {
        readable(flag, path)?;
    }
    Ok(Some(Tls {
        ca_file: ca.clone(),
        cert_file: cert.clone(),
        key_file: key.clone(),
    }))
}

/// This host's name (gethostname), or `localhost` when it has none.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: a buffer of the length given; the name is NUL-terminated within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_owned(),
        _ => "localhost".to_owned(),
    }
}

fn readable(flag: &str, path: &Path) -> Result<(), UsageError> {
    match std::fs::File::open(path) {
        Ok(_) => Ok(()),
        Err(e) => Err(usage(format!("{flag} {}: {e}", path.display()))),
    }
}

/// Whether rows GreptimeDB cannot take go to a disk spool: unless `--no-spool`; and for a
/// replay of a file only when `--spool-dir` names one, so that trial rows never land in the
/// live collector's spool (to be replayed, with their old timestamps, by its next run).
fn spools(cli: &Cli) -> bool {
    let default_dir = cli.spool_dir == Path::new(crate::cli::spool::DEFAULT_SPOOL_DIR);
    let trial = cli.pcap.is_some() && default_dir;
    !(cli.no_spool || trial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{self, Parsed};

    #[test]
    fn a_replay_spools_only_into_a_directory_it_is_given() {
        let spool = |args: &[&str]| match settings(args).unwrap().pipeline.sink.output {
            SinkConfig::Greptime(g) => g.spool.map(|s| s.dir),
            _ => panic!("not GreptimeDB"),
        };
        assert_eq!(spool(&["fm", "--pcap", "/dev/null"]), None);
        assert_eq!(
            spool(&["fm", "--pcap", "/dev/null", "--spool-dir", "/tmp/trial"]),
            Some("/tmp/trial".into())
        );
        assert_eq!(
            spool(&["fm", "-i", "eth0"]),
            Some(cli::spool::DEFAULT_SPOOL_DIR.into())
        );
        assert_eq!(spool(&["fm", "-i", "eth0", "--no-spool"]), None);
    }

    fn settings(args: &[&str]) -> Result<Settings, UsageError> {
        let Ok(Parsed::Run(cli, file)) = cli::parse(args.iter().map(std::ffi::OsString::from))
        else {
            panic!("{args:?} did not parse")
        };
        Settings::new(&cli, &file, None)
    }

    #[test]
    fn mode_and_flow_settings_reach_the_stages() {
        let s = settings(&["fm", "--pcap", "/dev/null"]).unwrap();
        assert!(s.pipeline.packets && s.pipeline.flows.is_none());
        let s = settings(&[
            "fm",
            "--pcap",
            "/dev/null",
            "--mode",
            "both",
            "--flow-interval",
            "200ms",
            "--flow-table",
            "flows2",
        ])
        .unwrap();
        let f = s.pipeline.flows.unwrap();
        assert!(s.pipeline.packets);
        assert_eq!(f.interval, std::time::Duration::from_millis(200));
        assert_eq!(f.table, "flows2");
        let s = settings(&["fm", "--pcap", "/dev/null", "--mode", "flows"]).unwrap();
        assert!(!s.pipeline.packets);
        assert_eq!(s.pipeline.flows.unwrap().table, "flow_data");
        let e = settings(&[
            "fm",
            "--pcap",
            "/dev/null",
            "--mode",
            "flows",
            "-auto-detect",
        ]);
        assert!(e.unwrap_err().0.contains("--mode both"));
        assert!(
            settings(&[
                "fm",
                "--pcap",
                "/dev/null",
                "--mode",
                "both",
                "-auto-detect"
            ])
            .is_ok()
        );
        let live = settings(&[
            "fm",
            "-i",
            "lo",
            "--mode",
            "flows",
            "-offset",
            "--flow-max-entries",
            "64",
        ])
        .unwrap();
        let SourceSettings::Live(c) = live.pipeline.source else {
            panic!("live")
        };
        assert!(!c.packets);
        assert_eq!(
            c.flows,
            Some(FlowsConfig {
                max_entries: 64,
                prefix: Some(24),
                events_bytes: None,
                dns_ports: [53, 0, 0, 0],
                handshakes: true,
                tcp_health: true,
                drops: true,
            })
        );
        let live = settings(&["fm", "-i", "lo", "--mode", "both", "-auto-detect"]).unwrap();
        let SourceSettings::Live(c) = live.pipeline.source else {
            panic!("live")
        };
        assert!(c.packets);
        assert_eq!(c.flows.unwrap().prefix, None);
        // Drops by reason: on by default, `--drops off` (or its variable) turns them off.
        let off = settings(&["fm", "-i", "lo", "--mode", "flows", "--drops", "off"]).unwrap();
        let SourceSettings::Live(c) = off.pipeline.source else {
            panic!("live")
        };
        assert!(!c.flows.unwrap().drops);
        let bad = ["fm", "-i", "lo", "--mode", "flows", "--drops", "maybe"];
        assert!(cli::parse(bad.iter().map(std::ffi::OsString::from)).is_err());
    }

    #[test]
    fn tcp_health_is_on_by_default_and_its_figures_follow_the_watched_directions() {
        let live = |args: &[&str]| {
            let mut all = vec!["fm", "-i", "lo", "--mode", "flows"];
            all.extend(args);
            let s = settings(&all).unwrap();
            let SourceSettings::Live(c) = s.pipeline.source else {
                panic!("live")
            };
            let flows = s.pipeline.flows.unwrap();
            let kernel = c.flows.unwrap();
            // The handshake tracking goes with it, in the kernel and in the stage.
            assert_eq!(kernel.handshakes, kernel.tcp_health);
            assert_eq!(flows.handshakes, kernel.tcp_health);
            (kernel.tcp_health, flows.egress_watched)
        };
        assert_eq!(live(&[]), (true, false));
        assert_eq!(live(&["--direction", "both"]), (true, true));
        assert_eq!(live(&["--direction", "egress"]), (true, true));
        assert_eq!(live(&["--tcp-health", "off"]), (false, false));
        let bad = ["fm", "-i", "lo", "--tcp-health", "maybe"];
        assert!(!matches!(
            cli::parse(bad.iter().map(std::ffi::OsString::from)),
            Ok(Parsed::Run(..))
        ));
    }

    #[test]
    fn each_stage_gets_its_own_settings() {
        let s = settings(&[
            "fm",
            "--pcap",
            "/dev/null",
            "-auto-detect",
            "--queue-size",
            "99",
        ])
        .unwrap();
        assert!(
            matches!(s.pipeline.source, SourceSettings::Pcap(ref p) if p.as_os_str() == "/dev/null")
        );
        assert_eq!(s.pipeline.decode.prefix, Prefix::Auto);
        assert_eq!(s.pipeline.sink.queue_rows, 99);
        assert!(matches!(s.pipeline.sink.output, SinkConfig::Greptime(_)));
        assert_eq!(s.log.level, Some(LogLevel::Info));
        let s = settings(&[
            "fm",
            "--pcap",
            "/dev/null",
            "-offset",
            "--output",
            "jsonl",
            "-no-log",
        ])
        .unwrap();
        assert_eq!(s.pipeline.decode.prefix, Prefix::Fixed(24));
        assert!(matches!(s.pipeline.sink.output, SinkConfig::Jsonl));
        assert_eq!(s.log.level, None);
    }

    #[test]
    fn the_direction_flags_reach_the_capture_config() {
        let live = |args: &[&str]| match settings(args).unwrap().pipeline.source {
            SourceSettings::Live(c) => (c.directions, c.ingress_hook, c.tc_attach),
            SourceSettings::Pcap(_) => panic!("{args:?}: not live"),
        };
        assert_eq!(
            live(&["fm", "-i", "lo"]),
            (Directions::Ingress, IngressHook::Xdp, TcAttach::Auto)
        );
        assert_eq!(
            live(&[
                "fm",
                "-i",
                "lo",
                "--direction",
                "both",
                "--ingress-hook",
                "tc",
                "--tc-attach",
                "netlink"
            ]),
            (Directions::Both, IngressHook::Tc, TcAttach::Netlink)
        );
        assert_eq!(
            live(&["fm", "-i", "lo", "--direction", "egress"]).0,
            Directions::Egress
        );
        // A file has no directions to choose.
        let parsed = cli::parse(
            ["fm", "--pcap", "/dev/null", "--direction", "egress"].map(std::ffi::OsString::from),
        );
        assert!(parsed.is_err());
    }

    #[test]
    fn cross_setting_checks_are_one_line_each() {
        let lo = "lo";
        for (args, want) in [
            (
                vec!["fm", "-i", lo, "--snaplen", "20", "-offset", "10"],
                "--offset 10 leaves no room for an Ethernet header in --snaplen 20 bytes",
            ),
            (
                vec!["fm", "-i", "fmx-nosuch0"],
                "no such interface: fmx-nosuch0",
            ),
            (
                vec!["fm", "--pcap", "/nonexistent/x.pcap"],
                "no such pcap file: /nonexistent/x.pcap",
            ),
        ] {
            let e = settings(&args).unwrap_err();
            assert_eq!(e.0, want);
        }
        // Standard input is no file to look for.
        assert!(settings(&["fm", "--pcap", "-", "--output", "none"]).is_ok());
        // The live-only check does not apply to a file.
        assert!(
            settings(&[
                "fm",
                "--pcap",
                "/dev/null",
                "--output",
                "none",
                "-offset",
                "200"
            ])
            .is_ok()
        );
    }

    #[test]
    fn kube_metadata_finds_the_api_server_or_the_kubelet_and_names_the_node() {
        let kube = |args: &[&str], env: &[(&str, &str)]| {
            let Ok(Parsed::Run(cli, _)) = cli::parse(args.iter().map(std::ffi::OsString::from))
            else {
                panic!("{args:?} did not parse")
            };
            let env = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::HashMap<_, _>>();
            let node = cli.host_name.clone().unwrap_or_default();
            super::kube(&cli, &node, |k| env.get(k).cloned())
        };
        let base = ["fm", "--pcap", "/dev/null", "--host-name", "node-1.zone"];
        assert_eq!(kube(&base, &[]), Ok(None));
        let api = [&base[..], &["--kube-metadata", "api"]].concat();
        let in_pod = [
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
        ];
        let s = kube(&api, &in_pod).unwrap().unwrap();
        assert_eq!(s.source, KubeSource::Api);
        assert_eq!(s.url, "https://10.96.0.1:443");
        assert_eq!(s.node, "node-1.zone");
        assert_eq!(
            s.token_file.as_deref(),
            Some(Path::new(
                "/var/run/secrets/kubernetes.io/serviceaccount/token"
            ))
        );
        assert_eq!(
            s.ca_file.as_deref(),
            Some(Path::new(
                "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
            ))
        );
        assert_eq!(s.refresh, std::time::Duration::from_secs(10));
        let v6 = [
            ("KUBERNETES_SERVICE_HOST", "fd00::1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
        ];
        assert_eq!(
            kube(&api, &v6).unwrap().unwrap().url,
            "https://[fd00::1]:443"
        );
        let e = kube(&api, &[]).unwrap_err();
        assert!(
            e.0.contains("KUBERNETES_SERVICE_HOST") && e.0.contains("--kube-url"),
            "{e}"
        );
        let kubelet = [
            &base[..],
            &["--kube-metadata", "kubelet", "--kube-refresh", "3s"],
        ]
        .concat();
        let s = kube(&kubelet, &in_pod).unwrap().unwrap();
        assert_eq!(s.source, KubeSource::Kubelet);
        assert_eq!(s.url, "https://node-1.zone:10250");
        assert_eq!(s.refresh, std::time::Duration::from_secs(3));
        // A local proxy: no token over plain HTTP.
        let proxy = [&api[..], &["--kube-url", "http://127.0.0.1:8001"]].concat();
        let s = kube(&proxy, &[]).unwrap().unwrap();
        assert_eq!((s.token_file, s.ca_file), (None, None));
        let bad = [&api[..], &["--kube-url", "10.0.0.1:443"]].concat();
        assert!(kube(&bad, &[]).unwrap_err().0.contains("not an https://"));
        let upper = [
            "fm",
            "--pcap",
            "/dev/null",
            "--host-name",
            "Node_1",
            "--kube-metadata",
            "kubelet",
        ];
        let e = kube(&upper, &[]).unwrap_err();
        assert!(
            e.0.contains("'Node_1' is not a Kubernetes node name"),
            "{e}"
        );
    }

    #[test]
    fn a_password_without_a_user_is_refused() {
        let Ok(Parsed::Run(cli, file)) =
            cli::parse(["fm", "--pcap", "/dev/null"].map(std::ffi::OsString::from))
        else {
            panic!()
        };
        let e = Settings::new(&cli, &file, Some("pw".into())).unwrap_err();
        assert!(e.0.starts_with(PASSWORD_ENV), "{e}");
    }
}
