//! `flowmetrix spool`: what the disk spool holds (segments, database, table, rows, oldest
//! and newest timestamps), `--drop` to discard it, `--replay-to DB` to send it to another
//! database. Its own small command line, read
//! before the collector's: the word `spool` first.

use std::{ffi::OsString, path::PathBuf};

use clap::Parser as _;

/// The spool directory when none is given (the collector's `--spool-dir` default).
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/flowmetrix/spool";

/// The subcommand's word.
pub const WORD: &str = "spool";

/// `flowmetrix spool [--spool-dir DIR] [--drop]`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "flowmetrix spool",
    about = "Lists the rows the disk spool keeps for GreptimeDB: per segment, database and table, \
             the rows and their oldest and newest timestamps. A running collector replays them \
             into the database and table each was written for, with their original timestamps.",
    disable_version_flag = true
)]
pub struct SpoolArgs {
    /// The spool directory (the collector's --spool-dir).
    #[arg(long, env = "FLOWMETRIX_SPOOL_DIR", default_value = DEFAULT_SPOOL_DIR, value_name = "DIR")]
    pub spool_dir: PathBuf,

    /// Discard every row in the spool (refused while a collector holds it).
    #[arg(long = "drop", conflicts_with = "replay_to")]
    pub drop: bool,

    /// Send every row in the spool to this database instead of the one it was written for:
    /// the next collector run with this spool replays them there (refused while a collector
    /// holds it; the database must exist).
    #[arg(long, value_name = "DATABASE", value_parser = database_name)]
    pub replay_to: Option<String>,
}

/// A database name a spool record can hold: not empty, at most 255 bytes.
fn database_name(s: &str) -> Result<String, String> {
    use crate::sink::greptime::spool::format::MAX_DATABASE_LEN;
    if s.trim().is_empty() {
        return Err("a database name is not empty".into());
    }
    if s.len() > MAX_DATABASE_LEN {
        return Err(format!(
            "a database name is at most {MAX_DATABASE_LEN} bytes (this one is {})",
            s.len()
        ));
    }
    Ok(s.to_owned())
}

/// What `flowmetrix spool …` asked for.
pub enum SpoolCommand {
    Run(SpoolArgs),
    /// `--help`: print this and exit 0.
    Print(String),
}

/// `args`: the program name, then `spool` and its arguments. None when the command line is
/// not the subcommand's. A usage error is one line, without the `error:` prefix.
pub fn parse(args: &[OsString]) -> Option<Result<SpoolCommand, String>> {
    if args.get(1).is_none_or(|a| a != WORD) {
        return None;
    }
    let rest = std::iter::once(OsString::from("flowmetrix spool")).chain(args[2..].iter().cloned());
    Some(match SpoolArgs::try_parse_from(rest) {
        Ok(a) => Ok(SpoolCommand::Run(a)),
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            Ok(SpoolCommand::Print(e.render().to_string()))
        }
        Err(e) => Err(e
            .render()
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_spool_word_first_is_the_subcommand() {
        assert!(parse(&os(&["fm", "-i", "eth0"])).is_none());
        assert!(parse(&os(&["fm"])).is_none());
        let Some(Ok(SpoolCommand::Run(a))) = parse(&os(&["fm", "spool"])) else {
            panic!("not parsed");
        };
        assert_eq!(
            (a.spool_dir.to_str(), a.drop),
            (Some(DEFAULT_SPOOL_DIR), false)
        );
        let Some(Ok(SpoolCommand::Run(a))) =
            parse(&os(&["fm", "spool", "--spool-dir", "/x", "--drop"]))
        else {
            panic!("not parsed");
        };
        assert_eq!((a.spool_dir.to_str(), a.drop), (Some("/x"), true));
        let Some(Ok(SpoolCommand::Run(a))) = parse(&os(&["fm", "spool", "--replay-to", "trial"]))
        else {
            panic!("not parsed");
        };
        assert_eq!(a.replay_to.as_deref(), Some("trial"));
        for bad in [
            &["fm", "spool", "--replay-to", ""][..],
            &["fm", "spool", "--replay-to", &"d".repeat(256)],
            &["fm", "spool", "--replay-to", "x", "--drop"],
        ] {
            let Some(Err(e)) = parse(&os(bad)) else {
                panic!("{bad:?} accepted");
            };
            assert!(!e.contains('\n'), "{e}");
        }
        assert!(matches!(
            parse(&os(&["fm", "spool", "--help"])),
            Some(Ok(SpoolCommand::Print(_)))
        ));
        let Some(Err(e)) = parse(&os(&["fm", "spool", "--bogus"])) else {
            panic!("no usage error");
        };
        assert!(e.contains("--bogus") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn the_default_directory_is_the_collector_s() {
        let cmd = crate::cli::command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some("spool-dir"))
            .unwrap();
        assert_eq!(arg.get_default_values(), [DEFAULT_SPOOL_DIR]);
    }
}
