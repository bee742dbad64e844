//! `flowmetrix`: the command. Exit codes: 0 success, 1 runtime failure, 2 usage error.

use std::{io::IsTerminal as _, process::ExitCode};

use flowmetrix::{
    capture::{self, CaptureConfig},
    cli::{self, Cli, LogFormat, Output, PASSWORD_ENV, Parsed},
    offset::Offset,
    pipeline::{self, PipelineConfig, Prefix, Source},
    sink::{
        SinkConfig,
        greptime::{GreptimeConfig, SpoolConfig, Tls},
    },
};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os()) {
        Ok(Parsed::Run(cli, file)) => {
            flowmetrix::app::set_overrides(file.applications.iter().cloned());
            cli
        }
        Ok(Parsed::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => return usage_error(&msg),
    };
    if let Some(offset) = cli.offset
        && cli.pcap.is_none()
        && u32::from(offset) + 14 > cli.snaplen
    {
        return usage_error(&format!(
            "--offset {offset} leaves no room for an Ethernet header in --snaplen {} bytes",
            cli.snaplen
        ));
    }
    if let Some(iface) = &cli.interface
        && capture::if_index(iface).is_none()
    {
        return usage_error(&format!("no such interface: {iface}"));
    }
    let output = match sink_config(&cli) {
        Ok(output) => output,
        Err(msg) => return usage_error(&msg),
    };
    init_logging(&cli);

    match run(&cli, output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

/// An error chain on one line: some causes (the kernel verifier's log) span several, and
/// some libraries repeat their message as their own cause.
fn one_line(text: &str) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let mut parts: Vec<&str> = joined.split(": ").collect();
    parts.dedup();
    parts.join(": ")
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn init_logging(cli: &Cli) {
    if cli.no_log {
        return;
    }
    // -d is about FlowMetrix (and its XDP program), not the loader's internals; RUST_LOG,
    // when set, overrides both.
    let default = if cli.debug {
        "info,flowmetrix=debug,flowmetrix_ebpf=debug"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false);
    match cli.log_format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => fmt.json().init(),
    }
}

fn sink_config(cli: &Cli) -> Result<SinkConfig, String> {
    Ok(match cli.output {
        Output::Jsonl => SinkConfig::Jsonl,
        Output::None => SinkConfig::None,
        Output::Greptimedb => {
            let password = std::env::var(PASSWORD_ENV).ok();
            if password.is_some() && cli.greptime_username.is_none() {
                return Err(format!(
                    "{PASSWORD_ENV} is set but no user: set FLOWMETRIX_GREPTIME_USERNAME or --greptime-username"
                ));
            }
            SinkConfig::Greptime(Box::new(GreptimeConfig {
                endpoints: cli.greptime_endpoint.clone(),
                database: cli.database.clone(),
                table: cli.table.clone(),
                username: cli.greptime_username.clone(),
                password,
                compression: cli.compression.into(),
                batch_size: cli.batch_size as usize,
                flush_interval: cli.flush_interval,
                ttl: cli.ttl.clone(),
                max_in_flight: cli.max_in_flight as usize,
                shutdown_timeout: cli.shutdown_timeout,
                tls: tls_config(cli)?,
                spool: (!cli.no_spool).then(|| SpoolConfig {
                    dir: cli.spool_dir.clone(),
                    max_bytes: cli.spool_max_bytes,
                }),
            }))
        }
    })
}

/// TLS files, checked for readability now so that a typo is a usage error, not an outage.
fn tls_config(cli: &Cli) -> Result<Option<Tls>, String> {
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
        if let Err(e) = std::fs::File::open(path) {
            return Err(format!("{flag} {}: {e}", path.display()));
        }
    }
    Ok(Some(Tls {
        ca_file: ca.clone(),
        cert_file: cert.clone(),
        key_file: key.clone(),
    }))
}

fn run(cli: &Cli, output: SinkConfig) -> anyhow::Result<()> {
    let source = match (&cli.pcap, &cli.interface) {
        (Some(file), _) => Source::Pcap(file.clone()),
        (None, Some(iface)) => Source::Live(CaptureConfig {
            interface: iface.clone(),
            mode: cli.xdp_mode,
            sample_rate: cli.sample_rate,
            snaplen: cli.snaplen,
            ring_bytes: cli.ring_bytes,
        }),
        (None, None) => anyhow::bail!("no interface and no --pcap file"),
    };
    let cfg = PipelineConfig {
        source,
        prefix: if cli.auto_detect {
            Prefix::Auto
        } else {
            Prefix::Fixed(Offset(cli.offset.map_or(0, usize::from)))
        },
        output,
        batch_size: cli.batch_size,
        queue_size: cli.queue_size,
        metrics_addr: cli.metrics_addr,
        stats_interval: cli.stats_interval,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        };
        let outcome = pipeline::run(cfg, shutdown).await?;
        eprintln!("summary: {}", outcome.summary);
        outcome.error.map_or(Ok(()), Err)
    })
}
