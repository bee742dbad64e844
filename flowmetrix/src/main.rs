//! `flowmetrix`: the command. Exit codes: 0 success, 1 runtime failure, 2 usage error,
//! 3 rows lost (the run ended as asked, but rows were not written: the last line says how
//! many and why).

use std::{io::IsTerminal as _, process::ExitCode};

use flowmetrix::{
    cli::{self, LogFormat, PASSWORD_ENV, Parsed, spool::SpoolCommand},
    metrics::{Shape, Summary},
    pipeline::{self, PipelineSettings},
    settings::{LogLevel, LogSettings, Settings},
    sink::greptime::spool::{SpoolError, list},
};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    bound_malloc();
    let args: Vec<_> = std::env::args_os().collect();
    if let Some(cmd) = cli::spool::parse(&args) {
        return spool_command(cmd);
    }
    // Before the flags are read, their errors follow `--log-format json` if it is there.
    let early = Say {
        json: json_asked(&args),
    };
    let settings = match cli::parse(args) {
        Ok(Parsed::Run(cli, file)) => {
            let say = Say {
                json: cli.log_format == LogFormat::Json,
            };
            match Settings::new(&cli, &file, std::env::var(PASSWORD_ENV).ok()) {
                Ok(s) => s,
                Err(e) => return usage_error(say, &e.0),
            }
        }
        Ok(Parsed::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => return usage_error(early, &msg),
    };
    init_logging(&settings.log);
    let say = Say {
        json: settings.log.format == LogFormat::Json,
    };

    match run(settings.pipeline, say) {
        Ok(Ended::Clean) => ExitCode::SUCCESS,
        Ok(Ended::Lost) => ExitCode::from(LOST),
        Ok(Ended::Failed) => ExitCode::from(1),
        Err(e) => {
            say.error(&one_line(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

/// The exit code of a run that ended as asked but lost rows.
const LOST: u8 = 3;

/// How a run that started ended.
enum Ended {
    Clean,
    /// Rows were lost (said in the last line).
    Lost,
    /// A runtime failure after the start (said, with the summary).
    Failed,
}

/// The lines printed whatever the log level: the summary and the errors, as text, or with
/// `--log-format json` as one JSON object each, like the log lines.
#[derive(Clone, Copy)]
struct Say {
    json: bool,
}

impl Say {
    fn line(&self, level: &str, message: &str, fields: Option<(&str, serde_json::Value)>) {
        if !self.json {
            eprintln!("{}: {message}", level.to_ascii_lowercase());
            return;
        }
        let mut f = serde_json::Map::new();
        f.insert("message".into(), message.into());
        if let Some((k, v)) = fields {
            f.insert(k.into(), v);
        }
        let line = serde_json::json!({
            "timestamp": chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": level,
            "fields": f,
        });
        eprintln!("{line}");
    }

    fn error(&self, message: &str) {
        self.line("ERROR", message, None);
    }

    fn summary(&self, summary: &Summary, shape: &Shape) {
        if self.json {
            self.line("INFO", "summary", Some(("summary", summary.json(shape))));
        } else {
            eprintln!("summary: {}", summary.text(shape));
        }
    }
}

/// `flowmetrix spool`: list the spool, drop it, or send it to another database.
fn spool_command(cmd: Result<SpoolCommand, String>) -> ExitCode {
    let args = match cmd {
        Ok(SpoolCommand::Run(a)) => a,
        Ok(SpoolCommand::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => return usage_error(Say { json: false }, &msg),
    };
    let dir = &args.spool_dir;
    // A change to the spool: its line, or the error.
    let changed =
        |done: Result<(u64, usize), SpoolError>, say: &dyn Fn(u64, usize) -> String| match done {
            Ok((rows, files)) => {
                println!("spool {}: {}", dir.display(), say(rows, files));
                ExitCode::SUCCESS
            }
            Err(e) => spool_error(&e),
        };
    if args.drop {
        return changed(list::drop_all(dir), &|rows, files| {
            format!("dropped {rows} rows ({files} file(s))")
        });
    }
    if let Some(database) = &args.replay_to {
        return changed(list::replay_to(dir, database), &|rows, files| {
            format!(
                "{rows} rows ({files} segment(s)) now go to database {database}; the next collector run with this spool replays them there"
            )
        });
    }
    match list::list(dir) {
        Ok(listing) => {
            print!("{listing}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot read the spool {}: {e}", dir.display());
            ExitCode::from(1)
        }
    }
}

/// A spool that could not be changed: the error and its cause, exit 1.
fn spool_error(e: &SpoolError) -> ExitCode {
    let cause = std::error::Error::source(e).map_or(String::new(), |c| format!(": {c}"));
    eprintln!("error: {e}{cause}");
    ExitCode::from(1)
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

fn usage_error(say: Say, msg: &str) -> ExitCode {
    say.error(msg);
    ExitCode::from(2)
}

/// Whether the command line asks for `--log-format json` (read before the flags are, so
/// that their own errors can follow it).
fn json_asked(args: &[std::ffi::OsString]) -> bool {
    args.windows(2)
        .any(|w| w[0] == "--log-format" && w[1] == "json")
        || args.iter().any(|a| a == "--log-format=json")
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

fn run(settings: PipelineSettings, say: Say) -> anyhow::Result<Ended> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // The first Ctrl+C (or SIGTERM) stops the run; the second gives up the wait for
        // the output.
        let (count, signals) = tokio::sync::watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                count.send_modify(|n| *n += 1);
            }
        });
        let nth = |n: u32| {
            let mut signals = signals.clone();
            async move {
                let _ = signals.wait_for(|&c| c >= n).await;
            }
        };
        let outcome = pipeline::run_until(settings, nth(1), nth(2)).await?;
        say.summary(&outcome.summary, &outcome.shape);
        let lost = outcome.summary.lost().describe(outcome.shape.spool);
        if let Some(e) = &outcome.error {
            say.error(&one_line(&format!("{e:#}")));
        }
        // The last line: what the run lost, and why.
        if let Some(lost) = &lost {
            let why = if outcome.gave_up {
                "; given up at the second Ctrl+C"
            } else {
                ""
            };
            say.error(&format!("{lost}{why}"));
        }
        // A failure keeps its own code (1); the line above says what it cost.
        Ok(match (&outcome.error, lost) {
            (Some(_), _) => Ended::Failed,
            (None, Some(_)) => Ended::Lost,
            (None, None) => Ended::Clean,
        })
    })
}

/// glibc's malloc, before any thread starts: two arenas (not eight a core, each keeping what
/// its thread freed), and every block from 256 KiB up (a drain's rows, a batch, an Arrow
/// buffer) mapped on its own and given back when freed, instead of a threshold that rises
/// with each large free. Peak RSS then follows the bounded queues (BENCHMARKS.md, issue 27).
fn bound_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}
