//! `--print-config`: the settings in force, as a config file, each with where it came from.

use clap::{ArgAction, ArgMatches, Command, parser::ValueSource};

use super::{defs::PASSWORD_ENV, file::FileSettings};

/// The settings in force, as a config file, each with where it came from; the password
/// is never shown.
pub(super) fn effective_settings(cmd: &Command, m: &ArgMatches, file: &FileSettings) -> String {
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
