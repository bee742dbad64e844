//! The original Go tool took long flags with a single dash (`-offset 24`, `-auto-detect`,
//! `-no-log`); [`normalize_go_flags`] rewrites every single-dash spelling of a long flag
//! defined in [`Cli`] to its `--` form before clap sees it.

use std::ffi::OsString;

use clap::CommandFactory as _;

use super::defs::Cli;

/// Rewrites Go-style single-dash long flags (`-offset`, `-no-log`, `-sample-rate=10`, …) to
/// their `--` form. Only names of long flags defined on [`Cli`] are touched, so short-flag
/// clusters such as `-id` are left alone; nothing after `--` is touched.
pub fn normalize_go_flags<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    let cmd = Cli::command();
    let longs: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
    let mut out = Vec::new();
    let mut rest = false;
    for arg in args {
        if rest {
            out.push(arg);
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
}
