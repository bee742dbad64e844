//! The original Go tool took long flags with a single dash (`-offset 24`, `-auto-detect`,
//! `-no-log`); [`normalize_go_flags`] rewrites every single-dash spelling of a long flag
//! defined in [`Cli`] to its `--` form before clap sees it.
//!
//! A negative number after a flag that takes a value (`-offset -3`) is that flag's value,
//! joined to it (`--offset=-3`), so that the flag's range check answers rather than clap's
//! "unexpected argument '-3'" (it reads `-3` as a short flag otherwise).

use std::ffi::OsString;

use clap::{ArgAction, CommandFactory as _};

use super::defs::Cli;

/// Rewrites Go-style single-dash long flags (`-offset`, `-no-log`, `-sample-rate=10`, …) to
/// their `--` form. Only names of long flags defined on [`Cli`] are touched, so short-flag
/// clusters such as `-id` are left alone; nothing after `--` is touched.
pub fn normalize_go_flags<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    let cmd = Cli::command();
    let longs: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
    let takes_value = |flag: &str| {
        cmd.get_arguments().any(|a| {
            matches!(a.get_action(), ArgAction::Set | ArgAction::Append)
                && (a
                    .get_long()
                    .is_some_and(|l| flag.strip_prefix("--") == Some(l))
                    || a.get_short().is_some_and(|c| flag == format!("-{c}")))
        })
    };
    let mut out: Vec<OsString> = Vec::new();
    let mut rest = false;
    for arg in args {
        if rest {
            out.push(arg);
            continue;
        }
        if let Some(s) = arg.to_str()
            && is_negative_number(s)
            && let Some(prev) = out.last_mut()
            && prev.to_str().is_some_and(&takes_value)
        {
            prev.push("=");
            prev.push(s);
            continue;
        }
        let rewritten = arg.to_str().and_then(|s| {
            if s == "--" {
                return None;
            }
            let body = s.strip_prefix('-').filter(|b| !b.starts_with('-'))?;
            let name = body.split_once('=').map_or(body, |(n, _)| n);
            (name.len() > 1 && longs.contains(&name)).then(|| OsString::from(format!("-{s}")))
        });
        if arg == "--" {
            rest = true;
        }
        out.push(rewritten.unwrap_or(arg));
    }
    out
}

/// `-3`, `-0.5`: a value, not a flag (no flag of ours is a digit).
fn is_negative_number(s: &str) -> bool {
    s.strip_prefix('-')
        .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()) && n.parse::<f64>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn go_flags_are_rewritten_and_others_left_alone() {
        assert_eq!(
            normalize_go_flags(os(&[
                "flowmetrix",
                "-i",
                "eth0",
                "-offset",
                "24",
                "-auto-detect",
                "-no-log",
                "-sample-rate=10",
                "-d",
                "-id",
                "--",
                "-offset"
            ])),
            os(&[
                "flowmetrix",
                "-i",
                "eth0",
                "--offset",
                "24",
                "--auto-detect",
                "--no-log",
                "--sample-rate=10",
                "-d",
                "-id",
                "--",
                "-offset"
            ])
        );
    }

    #[test]
    fn a_negative_number_after_a_flag_is_its_value() {
        assert_eq!(
            normalize_go_flags(os(&[
                "flowmetrix",
                "-offset",
                "-3",
                "--sample-rate",
                "-10",
                "-i",
                "-1",
                "-d",
                "-5",
                "--",
                "-offset",
                "-3"
            ])),
            os(&[
                "flowmetrix",
                "--offset=-3",
                "--sample-rate=-10",
                "-i=-1",
                "-d",
                "-5",
                "--",
                "-offset",
                "-3"
            ])
        );
    }
}
