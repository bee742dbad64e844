//! The files an SRE deploys with: the systemd unit passes `systemd-analyze verify`, no
//! query multiplies `packet_size` without a cast, the example config is accepted, and
//! completions and the man page come from the flag definitions. The Grafana dashboard's
//! queries against the tables and `/metrics` are checked in `tests/dashboard.rs`.

use std::{path::Path, process::Command};

fn deploy(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy("flowmetrix.service")).unwrap();
    assert!(unit.contains("Restart=on-failure"));
    assert!(
        unit.contains("CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SYS_RESOURCE")
    );
    assert!(unit.contains("--config /etc/flowmetrix/flowmetrix.toml"));
    assert!(
        unit.contains("StateDirectory=flowmetrix"),
        "the spool needs a writable state directory"
    );
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = std::env::temp_dir().join(format!("fmx-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("flowmetrix.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/flowmetrix",
            env!("CARGO_BIN_EXE_flowmetrix"),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (cargo xtask setup installs systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn example_config_is_accepted() {
    let out = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .arg("--config")
        .arg(deploy("flowmetrix.toml"))
        .arg("--print-config")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("sample-rate = 100  # config file"),
        "{stdout}"
    );
}

#[test]
fn completions_and_man_page_come_from_the_flags() {
    for (what, needle) in [
        ("bash", "--sample-rate"),
        ("zsh", "--greptime-endpoint"),
        ("fish", "auto-detect"),
        ("man", "sample\\-rate"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
            .args(["--generate", what])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(needle),
            "{what}: {needle} missing"
        );
    }
}

/// Where `packet_size` is multiplied without a cast first, in `text`: UInt16 × UInt32 is
/// computed in 32 bits by GreptimeDB and wraps silently (9000 × 1 000 000 → 410 065 408).
fn uncast_products(text: &str) -> Vec<String> {
    let text = text.replace(['"', '`'], "");
    let mut bad = Vec::new();
    for (at, _) in text.match_indices("packet_size") {
        let before = text[..at].trim_end();
        let after = text[at + "packet_size".len()..].trim_start();
        if before.ends_with('*') || after.starts_with('*') {
            let line = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            bad.push(text[line..end].to_owned());
        }
    }
    bad
}

#[test]
fn no_query_multiplies_packet_size_without_a_cast() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard = std::fs::read_to_string(deploy("grafana/flowmetrix-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut queries: Vec<(String, String)> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| Some(("dashboard".to_owned(), t["rawSql"].as_str()?.to_owned())))
        .collect();
    for file in ["README.md", "deploy/README.md"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        queries.push((file.to_owned(), text));
    }
    let mut casts = 0;
    for (file, text) in &queries {
        let bad = uncast_products(text);
        assert!(
            bad.is_empty(),
            "{file}: packet_size multiplied without a cast: {bad:?}"
        );
        casts += text
            .matches("CAST(packet_size AS BIGINT UNSIGNED) * sample_rate")
            .count();
    }
    // The byte panels, their documentation and the README's example.
    assert!(casts >= 5, "{casts} casts");
    assert_eq!(
        uncast_products("sum(packet_size * sample_rate)\nsum(sample_rate*\"packet_size\")"),
        [
            "sum(packet_size * sample_rate)",
            "sum(sample_rate*packet_size)"
        ]
    );
}

fn generated(what: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .args(["--generate", what])
        .output()
        .unwrap();
    assert!(out.status.success(), "--generate {what}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn man_page_has_exit_status_environment_files_and_examples() {
    let man = generated("man");
    let sections: Vec<&str> = man
        .lines()
        .filter_map(|l| l.strip_prefix(".SH "))
        .map(|s| s.trim_matches('"'))
        .collect();
    for want in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "EXAMPLES",
    ] {
        assert!(sections.contains(&want), "no {want} section: {sections:?}");
    }
    let section = |name: &str| {
        let start = man
            .find(&format!(".SH {name}\n"))
            .or_else(|| man.find(&format!(".SH \"{name}\"\n")))
            .unwrap();
        let rest = &man[start + 4..];
        rest[..rest.find("\n.SH ").unwrap_or(rest.len())].to_owned()
    };
    // Every variable `--help` names (one definition of the flags) is in ENVIRONMENT, and
    // so is the password, which has no flag.
    let help = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let vars: Vec<&str> = help
        .split("[env: ")
        .skip(1)
        .map(|s| s.split(['=', ']']).next().unwrap())
        .collect();
    assert!(vars.len() > 20, "{vars:?}");
    let env = section("ENVIRONMENT");
    for var in vars.iter().chain(&["FLOWMETRIX_GREPTIME_PASSWORD"]) {
        assert!(
            env.contains(&format!("\\fB{var}\\fR")),
            "{var} not in ENVIRONMENT"
        );
    }
    let exit = section("EXIT STATUS");
    for code in ["0", "1", "2"] {
        assert!(exit.contains(&format!("\\fB{code}\\fR")), "{exit}");
    }
    assert!(section("FILES").contains("/etc/flowmetrix/flowmetrix.toml"));
    assert!(section("EXAMPLES").contains("flowmetrix \\-\\-pcap \\-"));
    // It renders: groff reads it without a warning.
    if let Ok(out) = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(man.as_bytes())?;
            child.wait_with_output()
        })
    {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "groff: {err}"
        );
    }
}

#[test]
fn bash_completes_interface_names_for_dash_i() {
    // A directory holding a file, which must not be offered as an interface.
    let dir = std::env::temp_dir().join(format!("fmx-complete-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("capture.pcap"), b"").unwrap();
    let script = dir.join("flowmetrix.bash");
    std::fs::write(&script, generated("bash")).unwrap();
    let mut interfaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    interfaces.sort();
    for (flag, cur) in [("-i", ""), ("--interface", "")] {
        let out = Command::new("bash")
            .current_dir(&dir)
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=(flowmetrix {flag} \"{cur}\"); COMP_CWORD=2; \
                 _flowmetrix flowmetrix \"{cur}\" {flag}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .output()
            .unwrap();
        let mut offered: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        offered.sort();
        assert_eq!(
            offered,
            interfaces,
            "{flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // zsh and fish use their own interface completers.
    assert!(generated("zsh").contains(":IFACE:_net_interfaces'"));
    assert!(
        generated("fish").contains("-l interface")
            && generated("fish").contains("(__fish_print_interfaces)")
    );
    std::fs::remove_dir_all(dir).unwrap();
}
