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

use clap::{ArgAction, ArgMatches, Command, parser::ValueSource};

/// Read when present and no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/flowmetrix/flowmetrix.toml";

/// Keys that are not settings.
const NOT_IN_FILE: &[&str] = &["config", "help", "version", "print-config", "generate"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {message}")]
    Read { path: String, message: String },
    #[error("config file {path}: {message}")]
    Syntax { path: String, message: String },
    #[error("config file {path}, line {line}: unknown key '{key}'")]
    UnknownKey {
        path: String,
        line: usize,
        key: String,
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
            message: e
                .to_string()
                .lines()
                .next()
                .unwrap_or("syntax error")
                .to_owned(),
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
        let text_value = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            _ => Err(bad(key, "expected a string or a number".into())),
        };
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
                "config file {}, line 3: unknown key 'sampel-rate'",
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
    fn a_missing_file_is_a_clear_error() {
        let m = cmd().try_get_matches_from(["t"]).unwrap();
        let e = load(Path::new("/nonexistent/fm.toml"), &cmd(), &m).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    }
}
