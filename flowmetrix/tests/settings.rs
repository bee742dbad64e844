//! Settings: defaults < config file < environment < flags, one definition for all, the
//! original tool's single-dash command lines, and `--print-config`.

use std::{path::PathBuf, process::Command};

fn flowmetrix(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowmetrix"));
    // Only what the test gives: no FLOWMETRIX_* from the caller's environment.
    for (k, _) in std::env::vars() {
        if k.starts_with("FLOWMETRIX_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.args(args).envs(env.iter().copied()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config_file(name: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("fmx-settings-{}-{name}.toml", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

/// The `key = value  # source` line of `--print-config`.
fn setting(printed: &str, key: &str) -> String {
    printed
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{printed}"))
        .to_owned()
}

#[test]
fn file_env_and_flag_resolve_in_the_documented_order() {
    let file = config_file(
        "order",
        "interface = \"lo\"\nsample-rate = 10\ndatabase = \"fromfile\"\n",
    );
    let cfg = file.to_str().unwrap();
    let env = [("FLOWMETRIX_SAMPLE_RATE", "20")];

    let (code, out, err) = flowmetrix(
        &["--config", cfg, "--sample-rate", "30", "--print-config"],
        &env,
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        setting(&out, "sample-rate"),
        "sample-rate = 30  # command line"
    );

    let (_, out, _) = flowmetrix(&["--config", cfg, "--print-config"], &env);
    assert_eq!(
        setting(&out, "sample-rate"),
        "sample-rate = 20  # environment"
    );

    let (_, out, _) = flowmetrix(&["--config", cfg, "--print-config"], &[]);
    assert_eq!(
        setting(&out, "sample-rate"),
        "sample-rate = 10  # config file"
    );
    assert_eq!(
        setting(&out, "database"),
        "database = \"fromfile\"  # config file"
    );
    assert_eq!(
        setting(&out, "interface"),
        "interface = \"lo\"  # config file"
    );

    let (_, out, _) = flowmetrix(&["-i", "lo", "--print-config"], &[]);
    assert_eq!(setting(&out, "sample-rate"), "sample-rate = 1  # default");

    // The config file's path itself can come from the environment.
    let (_, out, _) = flowmetrix(&["--print-config"], &[("FLOWMETRIX_CONFIG", cfg)]);
    assert_eq!(
        setting(&out, "sample-rate"),
        "sample-rate = 10  # config file"
    );
    std::fs::remove_file(file).unwrap();
}

#[test]
fn a_bad_config_file_names_the_file_line_and_key() {
    let file = config_file(
        "bad",
        "# FlowMetrix\ninterface = \"lo\"\nsampel-rate = 10\n",
    );
    let cfg = file.to_str().unwrap();
    let (code, out, err) = flowmetrix(&["--config", cfg], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "error: config file {cfg}, line 3: unknown key 'sampel-rate'; did you mean 'sample-rate'?\n"
        )
    );

    std::fs::write(&file, "interface = \"lo\"\nsample-rate = \"ten\"\n").unwrap();
    let (code, _, err) = flowmetrix(&["--config", cfg], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "error: config file {cfg}, line 2: sample-rate: invalid value 'ten'"
        )),
        "{err}"
    );

    std::fs::write(&file, "interface = \"lo\"\nsnaplen = 999\n").unwrap();
    let (code, _, err) = flowmetrix(&["--config", cfg], &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("line 2: snaplen: invalid value '999'"),
        "{err}"
    );

    let (code, _, err) = flowmetrix(&["--config", "/nonexistent/fm.toml", "-i", "lo"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with("error: cannot read config file /nonexistent/fm.toml: "),
        "{err}"
    );
    std::fs::remove_file(file).unwrap();
}

#[test]
fn print_config_masks_the_password() {
    let env = [
        ("FLOWMETRIX_GREPTIME_USERNAME", "flow"),
        ("FLOWMETRIX_GREPTIME_PASSWORD", "hunter2-secret"),
    ];
    let (code, out, err) = flowmetrix(&["-i", "lo", "--print-config"], &env);
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains("hunter2-secret"), "{out}");
    assert!(
        out.contains("FLOWMETRIX_GREPTIME_PASSWORD): \"********\""),
        "{out}"
    );
    assert_eq!(
        setting(&out, "greptime-username"),
        "greptime-username = \"flow\"  # environment"
    );
}

#[test]
fn original_single_dash_command_lines_mean_the_same_as_long_forms() {
    let pairs: [(&[&str], &[&str]); 5] = [
        (&["-i", "lo", "-d"], &["--interface", "lo", "--debug"]),
        (
            &["-i", "lo", "-offset", "24"],
            &["--interface=lo", "--offset=24"],
        ),
        (
            &["-i", "lo", "-offset"],
            &["--interface", "lo", "--offset", "24"],
        ),
        (
            &["-i", "lo", "-auto-detect"],
            &["--interface", "lo", "--auto-detect"],
        ),
        (&["-i", "lo", "-no-log"], &["--interface", "lo", "--no-log"]),
    ];
    for (go, long) in pairs {
        let (c1, a, e1) = flowmetrix(&[go, &["--print-config"][..]].concat(), &[]);
        let (c2, b, e2) = flowmetrix(&[long, &["--print-config"][..]].concat(), &[]);
        assert_eq!((c1, c2), (Some(0), Some(0)), "{e1}{e2}");
        assert_eq!(a, b, "{go:?} vs {long:?}");
    }
}

#[test]
fn a_bad_environment_value_names_the_variable_not_the_flag() {
    let (code, out, err) = flowmetrix(&["-i", "lo"], &[("FLOWMETRIX_SAMPLE_RATE", "abc")]);
    assert_eq!((code, out.as_str()), (Some(2), ""), "{err}");
    assert_eq!(
        err,
        "error: environment variable FLOWMETRIX_SAMPLE_RATE: invalid value 'abc': invalid digit found in string\n"
    );
    let (code, _, err) = flowmetrix(&["-i", "lo"], &[("FLOWMETRIX_OUTPUT", "csv")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.starts_with("error: environment variable FLOWMETRIX_OUTPUT: invalid value 'csv'")
            && !err.contains("--output")
            && err.lines().count() == 1,
        "{err}"
    );
    // The same value on the command line is still a flag error, even with the variable set
    // to something good.
    let (code, _, err) = flowmetrix(
        &["-i", "lo", "--sample-rate", "abc"],
        &[("FLOWMETRIX_SAMPLE_RATE", "5")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.starts_with("error: invalid value 'abc' for '--sample-rate <N>'"),
        "{err}"
    );
    // A variable that conflicts with a flag is named too.
    let (code, _, err) = flowmetrix(
        &["--pcap", "/dev/null", "--output", "none"],
        &[("FLOWMETRIX_SAMPLE_RATE", "10")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(
        err,
        "error: environment variable FLOWMETRIX_SAMPLE_RATE (--sample-rate) cannot be used with --pcap: unset it for this run\n"
    );
    // A bad variable under a good flag does not matter: the flag wins.
    let (code, out, err) = flowmetrix(
        &["-i", "lo", "--sample-rate", "7", "--print-config"],
        &[("FLOWMETRIX_SAMPLE_RATE", "abc")],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        setting(&out, "sample-rate"),
        "sample-rate = 7  # command line"
    );
}

#[test]
fn switches_from_the_environment_take_the_usual_spellings() {
    for (value, on) in [
        ("1", true),
        ("true", true),
        ("YES", true),
        ("On", true),
        ("0", false),
        ("False", false),
        ("no", false),
        ("OFF", false),
    ] {
        let (code, out, err) = flowmetrix(
            &["-i", "lo", "--print-config"],
            &[("FLOWMETRIX_DEBUG", value)],
        );
        assert_eq!(code, Some(0), "FLOWMETRIX_DEBUG={value}: {err}");
        assert_eq!(
            setting(&out, "debug"),
            format!("debug = {on}  # environment"),
            "FLOWMETRIX_DEBUG={value}"
        );
    }
    let (code, _, err) = flowmetrix(&["-i", "lo"], &[("FLOWMETRIX_NO_LOG", "maybe")]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(
        err,
        "error: environment variable FLOWMETRIX_NO_LOG: invalid value 'maybe': a switch is 1, 0, true, false, yes, no, on or off\n"
    );
    // On the command line a switch still takes no value.
    let (_, out, _) = flowmetrix(&["-i", "lo", "-d", "--print-config"], &[]);
    assert_eq!(setting(&out, "debug"), "debug = true  # command line");
}

#[test]
fn endpoint_lists_are_trimmed_from_every_layer() {
    let want = "greptime-endpoint = [\"a:1\", \"b:2\"]";
    let (code, out, err) = flowmetrix(
        &[
            "-i",
            "lo",
            "--greptime-endpoint",
            "a:1, b:2",
            "--print-config",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        setting(&out, "greptime-endpoint"),
        format!("{want}  # command line")
    );
    let (code, out, err) = flowmetrix(
        &["-i", "lo", "--print-config"],
        &[("FLOWMETRIX_GREPTIME_ENDPOINT", " a:1 ,  b:2 ")],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        setting(&out, "greptime-endpoint"),
        format!("{want}  # environment")
    );
}

#[test]
fn print_config_needs_no_interface_but_a_run_does() {
    let (code, out, err) = flowmetrix(&["--print-config"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("# interface (unset)\n"), "{out}");
    assert_eq!(setting(&out, "sample-rate"), "sample-rate = 1  # default");

    let (code, out, err) = flowmetrix(&[], &[]);
    assert_eq!((code, out.as_str()), (Some(2), ""));
    assert_eq!(
        err,
        "error: the following required arguments were not provided: --interface <IFACE> (see 'flowmetrix --help')\n"
    );
}

#[test]
fn help_and_version_exit_0() {
    for flag in ["--help", "-h", "--version", "-V"] {
        let out = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
            .arg(flag)
            .output()
            .expect("run flowmetrix");
        assert!(out.status.success(), "{flag}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("flowmetrix"), "{flag}: {text}");
    }
}
