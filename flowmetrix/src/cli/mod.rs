//! The command line: the only module that knows clap. The flags are defined once
//! ([`defs`]); the config file ([`file`](mod@file)) and the `FLOWMETRIX_*` environment go
//! through the same definition, so one parser checks every layer; [`crate::settings`] then
//! turns the result into typed settings for each stage.
//!
//! - [`defs`]: the flags, their help and environment variables;
//! - `values`: the value parsers (sizes, durations, names);
//! - [`go_flags`]: the original tool's single-dash long flags;
//! - [`file`](mod@file): the config file (TOML), turned into flags;
//! - `usage`: a usage error on one line, naming where the bad value came from;
//! - `generate`: shell completions and the man page;
//! - `print_config`: the effective settings that `--print-config` shows.

pub mod defs;
pub mod file;
mod generate;
pub mod go_flags;
mod print_config;
pub mod spool;
mod suggest;
mod usage;
mod values;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{FromArgMatches, error::ErrorKind};

pub use defs::{
    Cli, CompressionArg, DirectionArg, Generate, IngressHookArg, KubeMetadataArg, LogFormat,
    MAX_FLOW_MAX_ENTRIES, MIN_FLOW_MAX_ENTRIES, ModeArg, OnOff, Output, PASSWORD_ENV, TcAttachArg,
    WritePathArg, XdpModeArg, command,
};
pub use file::{ConfigError, DEFAULT_PATH, FileSettings};
pub use go_flags::normalize_go_flags;

use usage::{describe, one_line};

/// What the command line asked for.
pub enum Parsed {
    Run(Box<Cli>, Box<FileSettings>),
    /// `--help`, `--version` or `--print-config`: print this on stdout and exit 0.
    Print(String),
}

/// Parses a command line (program name first) together with the config file (`--config`,
/// or [`file::DEFAULT_PATH`] when it exists). A usage error comes back as one line,
/// without the `error:` prefix.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Parsed, String> {
    parse_with_default(args, Path::new(file::DEFAULT_PATH))
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
        return Ok(Parsed::Print(generate::generate(what)));
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
        Some(p) => file::load(p, &cmd, &first).map_err(|e| e.to_string())?,
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
        return Ok(Parsed::Print(print_config::effective_settings(
            &cmd, &matches, &file,
        )));
    }
    Ok(Parsed::Run(Box::new(cli), Box::new(file)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use flowmetrix_common::DEFAULT_SNAPLEN;

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
    fn a_negative_number_gets_the_range_message() {
        for args in [
            &["fm", "-i", "x", "-offset", "-3"][..],
            &["fm", "-i", "x", "--offset", "-3"],
            &["fm", "-i", "x", "-offset=-3"],
        ] {
            let Err(e) = parse_with_default(os(args), Path::new("/nonexistent")) else {
                panic!("{args:?} parsed")
            };
            assert!(
                e.starts_with("invalid value '-3' for '--offset [<BYTES>]': -3 is not in 0..="),
                "{args:?}: {e}"
            );
        }
        let Err(e) = parse_with_default(
            os(&["fm", "-i", "x", "--sample-rate", "-10"]),
            Path::new("/nonexistent"),
        ) else {
            panic!()
        };
        assert!(e.contains("-10 is not in 1..=1000000"), "{e}");
        // A short flag's negative value too: the interface "-1" does not exist, which
        // is the settings' check, not clap's "unexpected argument".
        assert_eq!(cli(&["fm", "-i", "-1"]).interface, ["-1"]);
    }

    #[test]
    fn a_misspelt_flag_gets_did_you_mean() {
        for (args, want) in [
            (
                &["fm", "-i", "x", "--sample-rat", "5"][..],
                "unexpected argument '--sample-rat': did you mean '--sample-rate'?",
            ),
            // One dash, as the original tool's flags: clap alone reads it as `-s`.
            (
                &["fm", "-i", "x", "-sample-rat", "5"],
                "unexpected argument '-sample-rat': did you mean '--sample-rate'?",
            ),
            (
                &["fm", "-i", "x", "-flow-intreval=5s"],
                "unexpected argument '-flow-intreval': did you mean '--flow-interval'?",
            ),
        ] {
            let Err(e) = parse_with_default(os(args), Path::new("/nonexistent")) else {
                panic!("{args:?} parsed")
            };
            assert_eq!(e, format!("{want} (see 'flowmetrix --help')"));
        }
        let Err(e) = parse(os(&["fm", "-i", "x", "--frobnicate"])) else {
            panic!()
        };
        assert_eq!(
            e,
            "unexpected argument '--frobnicate' found (see 'flowmetrix --help')"
        );
    }

    #[test]
    fn durations_need_a_unit_and_ports_a_range() {
        for (flag, value) in [
            ("--flow-interval", "5"),
            ("--shutdown-timeout", "10"),
            ("--flush-interval", "1"),
            ("--stats-interval", "10"),
            ("--ttl", "7"),
        ] {
            let Err(e) = parse(os(&["fm", "-i", "x", flag, value])) else {
                panic!("{flag} {value} parsed")
            };
            assert!(
                e.contains(&format!("'{value}' has no unit (write {value}")),
                "{e}"
            );
        }
        let Err(e) = parse(os(&[
            "fm",
            "-i",
            "x",
            "--greptime-endpoint",
            "127.0.0.1:99999",
        ])) else {
            panic!()
        };
        assert!(e.contains("port 99999 is out of range (1-65535)"), "{e}");
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
    fn print_config_needs_no_interface() {
        assert!(matches!(
            parse_with_default(os(&["fm", "--print-config"]), Path::new("/nonexistent")),
            Ok(Parsed::Print(p)) if p.contains("# interface (unset)")
        ));
    }

    #[test]
    fn endpoint_lists_are_split_and_trimmed() {
        let c = cli(&["fm", "-i", "x", "--greptime-endpoint", "a:1,b:2"]);
        assert_eq!(c.greptime_endpoint, ["a:1", "b:2"]);
        let c = cli(&["fm", "-i", "x", "--greptime-endpoint", "a:1, b:2 ,c:3"]);
        assert_eq!(c.greptime_endpoint, ["a:1", "b:2", "c:3"]);
    }

    #[test]
    fn command_line_switches_still_work() {
        // A switch takes no value on the command line (its environment value is parsed).
        let c = cli(&["fm", "-i", "x", "-d"]);
        assert!(c.debug && !c.no_log);
    }

    #[test]
    fn help_and_version_are_printed_not_errors() {
        assert!(matches!(parse(os(&["fm", "--help"])), Ok(Parsed::Print(_))));
        assert!(matches!(parse(os(&["fm", "-V"])), Ok(Parsed::Print(_))));
    }
}
