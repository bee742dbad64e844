//! The config file: TOML whose keys are the long flag names (`sample-rate = 10`,
//! `greptime-endpoint = ["db1:4001", "db2:4001"]`), plus an `[applications]` table that adds
//! or overrides port → application names.
//!
//! Layers, lowest first: built-in defaults < config file < environment (`FLOWMETRIX_*`) <
//! flags. The file is turned into flags that are used only where neither the command line
//! nor the environment set that setting, so one definition (clap's) parses and checks every
//! layer; a value clap rejects is reported with the file, line and key.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use std::any::TypeId;

use clap::{Arg, ArgAction, ArgMatches, Command, parser::ValueSource};

use super::{defs::PASSWORD_ENV, suggest::suggest};

/// Read when present and no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/flowmetrix/flowmetrix.toml";

/// Keys that are not settings.
const NOT_IN_FILE: &[&str] = &["config", "help", "version", "print-config", "generate"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {message}")]
    Read { path: String, message: String },
    /// `message`: `line 3, column 1: invalid table header`.
    #[error("config file {path}, {message}")]
    Syntax { path: String, message: String },
    #[error("config file {path}, line {line}: unknown key '{key}'{hint}")]
    UnknownKey {
        path: String,
        line: usize,
        key: String,
        /// `; did you mean '…'?`, or where the setting comes from instead.
        hint: String,
    },
    #[error("config file {path}, line {line}: {key}: {message}")]
    BadValue {
        path: String,
        line: usize,
        key: String,
        message: String,
    },
}

/// What a config file contributes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileSettings {
    pub path: Option<PathBuf>,
    /// Flags for the settings the file sets and no higher layer does.
    pub args: Vec<OsString>,
    /// The long name of each of those flags, with the line it came from.
    pub origins: Vec<(String, usize)>,
    /// `[applications]`: port → name.
    pub applications: Vec<(u16, String)>,
}

impl FileSettings {
    /// Where the setting `long` came from, if from this file.
    pub fn origin(&self, long: &str) -> Option<(&Path, usize)> {
        let path = self.path.as_deref()?;
        self.origins
            .iter()
            .find(|(k, _)| k == long)
            .map(|(_, line)| (path, *line))
    }
}

/// The line a key is defined on (1-based), found by looking for `key =` at a line start.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .or_else(|| l.strip_prefix(&format!("\"{key}\"")))
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

/// Reads `path` and turns it into flags for the settings `matches` did not get from the
/// command line or the environment.
pub fn load(path: &Path, cmd: &Command, matches: &ArgMatches) -> Result<FileSettings, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: name.clone(),
        message: e.to_string(),
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: name.clone(),
            message: syntax_error(&text, &e),
        })?;
    let mut out = FileSettings {
        path: Some(path.to_owned()),
        ..Default::default()
    };
    let bad = |key: &str, message: String| ConfigError::BadValue {
        path: name.clone(),
        line: line_of(&text, key),
        key: key.to_owned(),
        message,
    };
    for (key, value) in &table {
        if key == "applications" {
            out.applications = applications(value).map_err(|(k, m)| ConfigError::BadValue {
                path: name.clone(),
                line: line_of(&text, &k),
                key: format!("applications.{k}"),
                message: m,
            })?;
            continue;
        }
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !NOT_IN_FILE.contains(&key.as_str()))
            .ok_or_else(|| ConfigError::UnknownKey {
                path: name.clone(),
                line: line_of(&text, key),
                key: key.clone(),
                hint: unknown_key_hint(cmd, key),
            })?;
        let id = arg.get_id().as_str();
        if matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue; // a higher layer set it
        }
        let flag = format!("--{key}");
        let is_switch = matches!(arg.get_action(), ArgAction::SetTrue);
        let text_value = |v: &toml::Value| value_text(arg, v).map_err(|m| bad(key, m));
        match value {
            toml::Value::Boolean(on) if is_switch => {
                if *on {
                    out.args.push(flag.into());
                }
            }
            _ if is_switch => return Err(bad(key, "expected true or false".into())),
            toml::Value::Array(items) => {
                if arg.get_value_delimiter().is_none() {
                    return Err(bad(key, "takes one value, not a list".into()));
                }
                let items = items
                    .iter()
                    .map(text_value)
                    .collect::<Result<Vec<_>, _>>()?;
                out.args.push(format!("{flag}={}", items.join(",")).into());
            }
            v => out.args.push(format!("{flag}={}", text_value(v)?).into()),
        }
        out.origins.push((key.clone(), line_of(&text, key)));
    }
    Ok(out)
}

/// A TOML parse error on one line: where, and the parser's reason (`invalid table header`,
/// `expected `.`, `]``), which its multi-line rendering puts after a picture of the line.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let reason = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let Some(span) = e.span() else {
        return format!("syntax error: {reason}");
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {column}: {reason}")
}

/// After "unknown key 'k'": the key most likely meant, or, for a password, where it goes.
fn unknown_key_hint(cmd: &Command, key: &str) -> String {
    if key.contains("password") {
        return format!(
            ": the password is never read from a file; set {PASSWORD_ENV} in the environment (a systemd EnvironmentFile, say)"
        );
    }
    let keys = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(Arg::get_long)
        .filter(|l| !NOT_IN_FILE.contains(l))
        .chain(["applications"]);
    suggest(key, keys).map_or_else(String::new, |k| format!("; did you mean '{k}'?"))
}

/// Whether `arg` takes a whole number (`sample-rate = 100`), rather than text
/// (`flow-interval = "10s"`, `interface = "eth0"`).
fn takes_number(arg: &Arg) -> bool {
    let t = arg.get_value_parser().type_id();
    [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i64>(),
    ]
    .iter()
    .any(|n| t == *n)
}

/// A (non-switch) value as the flag's text, if its TOML type fits the setting: a number for
/// a number (a quoted one is refused: `sample-rate = "100"`), a string for the others
/// (`interface = 5` is refused). A size such as `ring-bytes = "8M"` is a string.
fn value_text(arg: &Arg, v: &toml::Value) -> Result<String, String> {
    let number = takes_number(arg);
    match v {
        toml::Value::Integer(i) if number => Ok(i.to_string()),
        toml::Value::String(s)
            if number && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Err(format!(
                "expected a number, not a string (write it without quotes: {s})"
            ))
        }
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(_) if is_duration(arg) => {
            Err("expected a duration in quotes, with its unit (such as \"10s\")".into())
        }
        toml::Value::Integer(i) => Err(format!(
            "expected a string, not a number (in quotes: \"{i}\")"
        )),
        toml::Value::Float(_) if number => Err("expected a whole number".into()),
        _ if number => Err("expected a number".into()),
        _ => Err("expected a string (in quotes)".into()),
    }
}

fn is_duration(arg: &Arg) -> bool {
    arg.get_value_names()
        .is_some_and(|n| n.iter().any(|n| n == "DURATION"))
}

fn applications(value: &toml::Value) -> Result<Vec<(u16, String)>, (String, String)> {
    let toml::Value::Table(t) = value else {
        return Err((String::new(), "expected a table of port = \"NAME\"".into()));
    };
    t.iter()
        .map(|(port, name)| {
            let p = port
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| (port.clone(), "the key must be a port number".to_owned()))?;
            let name = name
                .as_str()
                .filter(|n| {
                    !n.is_empty() && n.len() <= 32 && n.chars().all(|c| c.is_ascii_graphic())
                })
                .ok_or_else(|| {
                    (
                        port.clone(),
                        "the name must be 1-32 printable characters without spaces".to_owned(),
                    )
                })?;
            Ok((p, name.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> Command {
        Command::new("t")
            .arg(
                clap::Arg::new("rate")
                    .long("sample-rate")
                    .value_parser(clap::value_parser!(u32)),
            )
            .arg(
                clap::Arg::new("debug")
                    .long("debug")
                    .action(ArgAction::SetTrue),
            )
            .arg(
                clap::Arg::new("endpoint")
                    .long("greptime-endpoint")
                    .value_delimiter(',')
                    .env("T_ENDPOINT"),
            )
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("fmx-cfg-{}-{name}.toml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn file_values_become_flags_unless_set_higher() {
        let p = write(
            "ok",
            "sample-rate = 10\ndebug = true\ngreptime-endpoint = [\"a:1\", \"b:2\"]\n\n[applications]\n8443 = \"HTTPS-ALT\"\n",
        );
        let m = cmd()
            .try_get_matches_from(["t", "--sample-rate", "5"])
            .unwrap();
        let f = load(&p, &cmd(), &m).unwrap();
        assert_eq!(
            f.args,
            vec![
                OsString::from("--debug"),
                "--greptime-endpoint=a:1,b:2".into()
            ]
        );
        assert_eq!(f.applications, vec![(8443, "HTTPS-ALT".to_owned())]);
        assert_eq!(f.origin("debug").map(|(_, l)| l), Some(2));
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_name_file_line_and_key() {
        let p = write("bad", "# settings\nsample-rate = 10\nsampel-rate = 3\n");
        let m = cmd().try_get_matches_from(["t"]).unwrap();
        let e = load(&p, &cmd(), &m).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "config file {}, line 3: unknown key 'sampel-rate'; did you mean 'sample-rate'?",
                p.display()
            )
        );
        std::fs::write(&p, "debug = 1\n").unwrap();
        let e = load(&p, &cmd(), &m).unwrap_err().to_string();
        assert!(e.ends_with("line 1: debug: expected true or false"), "{e}");
        std::fs::write(&p, "sample-rate = [1, 2]\n").unwrap();
        let e = load(&p, &cmd(), &m).unwrap_err().to_string();
        assert!(
            e.ends_with("line 1: sample-rate: takes one value, not a list"),
            "{e}"
        );
        std::fs::write(&p, "[applications]\nhttp = \"X\"\n").unwrap();
        let e = load(&p, &cmd(), &m).unwrap_err().to_string();
        assert!(
            e.contains("line 2: applications.http: the key must be a port number"),
            "{e}"
        );
        std::fs::write(&p, "sample-rate = \n").unwrap();
        let e = load(&p, &cmd(), &m).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn wrong_types_syntax_errors_and_passwords_are_explained() {
        let m = cmd().try_get_matches_from(["t"]).unwrap();
        let p = write("types", "\n\nsample-rate = \"100\"\n");
        let e = load(&p, &cmd(), &m).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "config file {}, line 3: sample-rate: expected a number, not a string (write it without quotes: 100)",
                p.display()
            )
        );
        std::fs::write(&p, "greptime-endpoint = 5\n").unwrap();
        let e = load(&p, &cmd(), &m).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "line 1: greptime-endpoint: expected a string, not a number (in quotes: \"5\")"
            ),
            "{e}"
        );
        std::fs::write(&p, "greptime-endpoint = [\"a:1\", 2]\n").unwrap();
        let e = load(&p, &cmd(), &m).unwrap_err().to_string();
        assert!(
            e.contains("line 1: greptime-endpoint: expected a string"),
            "{e}"
        );
        std::fs::write(&p, "sample-rate = 1.5\n").unwrap();
        let e = load(&p, &cmd(), &m).unwrap_err().to_string();
        assert!(e.ends_with("sample-rate: expected a whole number"), "{e}");

        // The parser's reason is kept, on one line.
        std::fs::write(&p, "sample-rate = 1\n[bad\n").unwrap();
        let e = load(&p, &cmd(), &m).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("config file {}, line 2, column ", p.display()))
                && e.contains("unclosed table, expected `]`")
                && !e.contains('\n'),
            "{e}"
        );

        std::fs::write(&p, "sample-rate = 1\npassword = \"x\"\n").unwrap();
        let e = load(&p, &cmd(), &m).unwrap_err().to_string();
        assert!(
            e.contains("line 2: unknown key 'password': the password is never read from a file; set FLOWMETRIX_GREPTIME_PASSWORD"),
            "{e}"
        );
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn durations_in_the_file_are_strings_with_a_unit() {
        let c = super::super::command();
        let m = c
            .clone()
            .try_get_matches_from(["t", "--print-config"])
            .unwrap();
        let p = write("durations", "flow-interval = 10\n");
        let e = load(&p, &c, &m).unwrap_err().to_string();
        assert!(
            e.ends_with("line 1: flow-interval: expected a duration in quotes, with its unit (such as \"10s\")"),
            "{e}"
        );
        std::fs::write(&p, "interface = 5\n").unwrap();
        let e = load(&p, &c, &m).unwrap_err().to_string();
        assert!(
            e.ends_with("line 1: interface: expected a string, not a number (in quotes: \"5\")"),
            "{e}"
        );
        std::fs::write(
            &p,
            "flow-interval = \"10s\"\nring-bytes = \"8M\"\nsnaplen = 128\noffset = 24\n",
        )
        .unwrap();
        let f = load(&p, &c, &m).unwrap();
        assert_eq!(f.args.len(), 4, "{:?}", f.args);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn a_missing_file_is_a_clear_error() {
        let m = cmd().try_get_matches_from(["t"]).unwrap();
        let e = load(Path::new("/nonexistent/fm.toml"), &cmd(), &m).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    }
}
