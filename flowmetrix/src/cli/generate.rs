//! Packaging output (`--generate`): shell completions and the man page, from the one
//! definition of the flags.

use clap::Command;

use super::{
    defs::{Generate, NOTES, PASSWORD_ENV, command},
    file,
};

/// A completion script or the man page, from the one definition of the flags.
pub(super) fn generate(what: Generate) -> String {
    let mut cmd = command();
    let mut out = Vec::new();
    let shell = match what {
        Generate::Bash => clap_complete::Shell::Bash,
        Generate::Zsh => clap_complete::Shell::Zsh,
        Generate::Fish => clap_complete::Shell::Fish,
        Generate::Man => return man_page(cmd),
    };
    clap_complete::generate(shell, &mut cmd, "flowmetrix", &mut out);
    complete_interfaces(what, &String::from_utf8_lossy(&out))
}

/// Where the shells find network interfaces to complete `-i` with.
const NET_CLASS: &str = "/sys/class/net";

/// clap_complete has no value hint for network interfaces: `-i`/`--interface` is declared
/// `ValueHint::Other` (nothing offered), and here given each shell's own interface list.
fn complete_interfaces(what: Generate, script: &str) -> String {
    match what {
        Generate::Bash => {
            // In the `case "${prev}"` of the generated function, replace the body of the
            // `--interface)` and `-i)` branches (up to their `return 0`).
            let mut out = String::new();
            let mut lines = script.lines();
            while let Some(line) = lines.next() {
                out.push_str(line);
                out.push('\n');
                if matches!(line.trim(), "--interface)" | "-i)") {
                    let indent = " ".repeat(line.len() - line.trim_start().len() + 4);
                    out.push_str(&format!(
                        "{indent}COMPREPLY=($(compgen -W \"$(ls {NET_CLASS} 2>/dev/null)\" -- \"${{cur}}\"))\n"
                    ));
                    for skipped in lines.by_ref() {
                        if skipped.trim() == "return 0" {
                            out.push_str(skipped);
                            out.push('\n');
                            break;
                        }
                    }
                }
            }
            out
        }
        // zsh and fish ship interface completers of their own.
        Generate::Zsh => script.replace(":IFACE:'", ":IFACE:_net_interfaces'"),
        Generate::Fish => {
            script
                .lines()
                .map(|l| {
                    if l.contains(" -l interface ") {
                        format!("{l} -a '(__fish_print_interfaces)'")
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        }
        Generate::Man => script.to_owned(),
    }
}

/// Text for a roff document: backslashes and dashes escaped, no line read as a request.
fn roff(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e").replace('-', "\\-");
            if l.starts_with(['.', '\'']) {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One `.TP` item: a bold term and its text.
fn roff_item(term: &str, text: &str) -> String {
    format!(".TP\n\\fB{}\\fR\n{}\n", roff(term), roff(text))
}

/// The man page: clap_mangen's (name, synopsis, options) and our own EXIT STATUS,
/// ENVIRONMENT, FILES and EXAMPLES, with the environment variables taken from the flags.
fn man_page(cmd: Command) -> String {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = clap_mangen::Man::new(cmd.clone().after_help(NOTES)).render(&mut out);
    let generated = String::from_utf8_lossy(&out).into_owned();

    let mut ours = String::from(".SH \"EXIT STATUS\"\n");
    for (code, what) in [
        (
            "0",
            "Success; also after Ctrl+C or SIGTERM, once queued rows are written and the summary line is printed, and when the reader of standard output leaves (--output jsonl | head): the rows it did not take are counted as unread, not lost.",
        ),
        (
            "1",
            "A runtime failure: what was asked for exists but cannot be done: an interface is down, the programs cannot be loaded or attached (no privilege, another collector), a pcap file cannot be read or is damaged, the metrics address cannot be bound.",
        ),
        (
            "2",
            "A usage error, found before anything starts: a bad flag, environment variable or config file value, or a name that does not exist (an interface given by name, a pcap file).",
        ),
        (
            "3",
            "Rows were lost: the run ended as asked, but rows were not written (write errors with no spool to take them, rows dropped on a full queue, rows dropped from the spool, or rows given up at a second Ctrl+C). The last line says how many and why.",
        ),
    ] {
        ours.push_str(&roff_item(code, what));
    }

    ours.push_str(".SH ENVIRONMENT\n");
    ours.push_str(&roff(
        "Every setting can also be given by an environment variable; a flag overrides it, and it overrides the config file. Switches take 1, 0, true, false, yes, no, on or off.",
    ));
    ours.push('\n');
    for arg in cmd.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        ours.push_str(&roff_item(
            &var.to_string_lossy(),
            &format!("--{long}: {}.", help.trim_end_matches('.')),
        ));
    }
    ours.push_str(&roff_item(
        PASSWORD_ENV,
        "The GreptimeDB password (with --greptime-username); it has no flag or config-file key and is never logged or printed.",
    ));
    ours.push_str(&roff_item(
        "RUST_LOG",
        "A tracing filter (e.g. info,flowmetrix=trace) that replaces the one --debug chooses.",
    ));

    let spool = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some("spool-dir"))
        .and_then(|a| a.get_default_values().first())
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    ours.push_str(".SH FILES\n");
    ours.push_str(&roff_item(
        file::DEFAULT_PATH,
        "The config file read when it exists and no --config is given: TOML whose keys are the long flag names, plus an [applications] table of port = \"NAME\".",
    ));
    ours.push_str(&roff_item(
        &spool,
        "The disk spool (--spool-dir) that keeps rows while GreptimeDB is away.",
    ));
    ours.push_str(&roff_item(
        NET_CLASS,
        "The interfaces -i can name (and shell completion offers).",
    ));

    ours.push_str(".SH EXAMPLES\n");
    for (line, what) in [
        (
            "flowmetrix -i eth0 -d",
            "Capture on eth0 into GreptimeDB at 127.0.0.1:4001, with debug logging.",
        ),
        (
            "flowmetrix -i eth0 --sample-rate 100",
            "Sample 1 packet in 100.",
        ),
        (
            "flowmetrix -i eth0 --mode both --flow-interval 10s",
            "Exact flow rows every 10 seconds (every packet counted in the kernel) as well as packet rows.",
        ),
        (
            "flowmetrix -i 'veth*,eth0' --direction both",
            "Packets arriving and leaving on eth0 and on every veth interface, also those that appear later.",
        ),
        (
            "flowmetrix -i ens192 -offset 24",
            "VMware hosts: skip a 24-byte prefix before each Ethernet header (-auto-detect learns it).",
        ),
        (
            "flowmetrix -i eth0 --output jsonl",
            "JSON lines on standard output instead of GreptimeDB.",
        ),
        (
            "flowmetrix --pcap capture.pcap --output jsonl",
            "Replay a pcap or pcapng file through the same decoder.",
        ),
        (
            "tcpdump -i eth0 -w - | flowmetrix --pcap -",
            "Replay a capture read from standard input.",
        ),
        (
            "FLOWMETRIX_SAMPLE_RATE=10 flowmetrix --config ./fm.toml --print-config",
            "Show the effective settings and where each comes from.",
        ),
        (
            "flowmetrix --generate bash > /etc/bash_completion.d/flowmetrix",
            "Install the bash completion (also zsh and fish; --generate man prints this page).",
        ),
    ] {
        ours.push_str(&format!(".TP\n.B {}\n{}\n", roff(line), roff(what)));
    }

    match generated.find(".SH VERSION") {
        Some(at) => format!("{}{ours}{}", &generated[..at], &generated[at..]),
        None => generated + &ours,
    }
}
