//! A usage error on one line: clap's message without its `error: ` prefix, naming where a
//! bad value came from (the config file's file, line and key, an environment variable, or
//! the command line).

use std::ffi::OsString;

use clap::{
    Command,
    error::{ContextKind, ContextValue, ErrorKind},
};

use super::{file::FileSettings, suggest::suggest};

/// A clap error on one line, naming where the bad value came from: the config file (file,
/// line and key), an environment variable, or else the command line.
pub(super) fn describe(
    cmd: &Command,
    args: &[OsString],
    e: &clap::Error,
    file: Option<&FileSettings>,
) -> String {
    let rendered = one_line(&e.render().to_string());
    if e.kind() == ErrorKind::UnknownArgument
        && let Some(msg) = unknown_argument(cmd, args, e)
    {
        return msg;
    }
    let Some(ContextValue::String(invalid)) = e.get(ContextKind::InvalidArg) else {
        return rendered;
    };
    let Some(arg) = arg_named(cmd, invalid) else {
        return rendered;
    };
    let long = arg.get_long().unwrap_or_default();
    if let Some((path, line)) = file.and_then(|f| f.origin(long)) {
        return format!(
            "config file {}, line {line}: {long}: {}",
            path.display(),
            rendered.trim_end_matches(" (see 'flowmetrix --help')")
        );
    }
    if e.kind() == ErrorKind::ArgumentConflict {
        // Either side of a conflict may come from the environment (a service's
        // environment file under a one-off `--pcap` run, say).
        let Some(ContextValue::String(prior)) = e.get(ContextKind::PriorArg) else {
            return rendered;
        };
        for (this, other) in [(prior, invalid), (invalid, prior)] {
            if let Some(a) = arg_named(cmd, this)
                && let Some(var) = env_culprit(cmd, args, a.get_id().as_str(), e)
            {
                let other = other.split(' ').next().unwrap_or(other);
                return format!(
                    "environment variable {var} (--{}) cannot be used with {other}: unset it for this run",
                    a.get_long().unwrap_or_default()
                );
            }
        }
        return rendered;
    }
    if let Some(var) = env_culprit(cmd, args, arg.get_id().as_str(), e) {
        let msg = rendered
            .replace(&format!(" for '{invalid}'"), "")
            .replace(" (see 'flowmetrix --help')", "");
        return format!("environment variable {var}: {msg}");
    }
    rendered
}

/// An unknown flag, with the long flag it most likely meant: clap's own suggestion for a
/// `--` spelling, or, for a one-dash spelling (`-sample-rat`, which clap reads as the short
/// flag `-s`), the long flag closest to it.
fn unknown_argument(cmd: &Command, args: &[OsString], e: &clap::Error) -> Option<String> {
    let Some(ContextValue::String(invalid)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let suggested = match e.get(ContextKind::SuggestedArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(s)) => s.first().cloned(),
        _ => None,
    };
    let (word, suggested) = match suggested {
        Some(s) => (invalid.clone(), s),
        None => {
            // clap names only the first letter of a one-dash word: find the word.
            let short = invalid.strip_prefix('-').filter(|s| !s.starts_with('-'))?;
            let word = args.iter().filter_map(|a| a.to_str()).find(|a| {
                a.strip_prefix('-')
                    .is_some_and(|b| b.len() > 2 && b.starts_with(short) && !b.starts_with('-'))
            })?;
            let name = word[1..].split('=').next().unwrap_or_default();
            let longs = cmd
                .get_arguments()
                .filter(|a| !a.is_hide_set())
                .filter_map(|a| a.get_long());
            (format!("-{name}"), format!("--{}", suggest(name, longs)?))
        }
    };
    Some(format!(
        "unexpected argument '{word}': did you mean '{suggested}'? (see 'flowmetrix --help')"
    ))
}

/// The argument clap names as "--sample-rate <N>" or "-i <IFACE>".
fn arg_named<'a>(cmd: &'a Command, named: &str) -> Option<&'a clap::Arg> {
    let flag = named.split([' ', '=']).next().unwrap_or("");
    cmd.get_arguments().find(|a| {
        a.get_long()
            .is_some_and(|l| flag.strip_prefix("--") == Some(l))
            || a.get_short().is_some_and(|c| flag == format!("-{c}"))
    })
}

/// The environment variable of argument `id`, if the error `e` comes from its value: the
/// same parse without that variable no longer fails this way.
fn env_culprit(cmd: &Command, args: &[OsString], id: &str, e: &clap::Error) -> Option<String> {
    let arg = cmd.get_arguments().find(|a| a.get_id() == id)?;
    let var = arg.get_env()?.to_string_lossy().into_owned();
    std::env::var_os(&var)?;
    let without = cmd
        .clone()
        .mut_arg(id, |a| a.env(None))
        .try_get_matches_from(args);
    let same = without
        .err()
        .is_some_and(|e2| e2.kind() == e.kind() && e2.to_string() == e.to_string());
    (!same).then_some(var)
}

/// A clap error's message on one line, without its `error: ` prefix (its first line plus
/// the indented lines under it, such as the missing arguments), and a pointer to --help.
pub(super) fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or("invalid command line");
    let mut msg = first
        .strip_prefix("error: ")
        .unwrap_or(first)
        .trim_end()
        .to_owned();
    for detail in lines.take_while(|l| l.starts_with(' ')) {
        msg.push(' ');
        msg.push_str(detail.trim());
    }
    format!("{msg} (see 'flowmetrix --help')")
}
