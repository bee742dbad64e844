//! `flowmetrix`: the command. Exit codes: 0 success, 1 runtime failure, 2 usage error.

use std::{io::IsTerminal as _, process::ExitCode};

use flowmetrix::{
    cli::{self, LogFormat, PASSWORD_ENV, Parsed},
    pipeline::{self, PipelineSettings},
    settings::{LogLevel, LogSettings, Settings},
};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let settings = match cli::parse(std::env::args_os()) {
        Ok(Parsed::Run(cli, file)) => {
            match Settings::new(&cli, &file, std::env::var(PASSWORD_ENV).ok()) {
                Ok(s) => s,
                Err(e) => return usage_error(&e.0),
            }
        }
        Ok(Parsed::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => return usage_error(&msg),
    };
    init_logging(&settings.log);

    match run(settings.pipeline) {
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

fn init_logging(log: &LogSettings) {
    let Some(level) = log.level else {
        return;
    };
    // -d is about FlowMetrix (and its XDP program), not the loader's internals; RUST_LOG,
    // when set, overrides both.
    let default = match level {
        LogLevel::Debug => "info,flowmetrix=debug,flowmetrix_ebpf=debug",
        LogLevel::Info => "info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false);
    match log.format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => fmt.json().init(),
    }
}

fn run(settings: PipelineSettings) -> anyhow::Result<()> {
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
        let outcome = pipeline::run(settings, shutdown).await?;
        eprintln!("summary: {}", outcome.summary);
        outcome.error.map_or(Ok(()), Err)
    })
}
