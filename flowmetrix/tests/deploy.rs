//! The files an SRE deploys with: the systemd unit passes `systemd-analyze verify`, the
//! Grafana dashboard is valid JSON whose queries are the documented ones, the example config
//! is accepted, and completions and the man page come from the flag definitions.

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
fn dashboard_is_valid_json_with_the_documented_queries() {
    let text = std::fs::read_to_string(deploy("grafana/flowmetrix-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let readme = std::fs::read_to_string(deploy("README.md")).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Packets per second",
        "Bytes per second",
        "Top talkers",
        "Top applications",
        "TCP SYN without ACK",
    ] {
        assert!(
            titles.iter().any(|t| t.starts_with(want)),
            "no {want} panel: {titles:?}"
        );
    }
    for p in panels {
        let sql = p["targets"][0]["rawSql"].as_str().unwrap();
        assert!(sql.contains("FROM packet_data"), "{sql}");
        assert!(
            readme.contains(sql),
            "query not documented in deploy/README.md:\n{sql}"
        );
        assert!(readme.contains(p["title"].as_str().unwrap()));
    }
    // Counts are scaled back by the sample rate.
    let scaled = panels
        .iter()
        .filter(|p| {
            p["targets"][0]["rawSql"]
                .as_str()
                .unwrap()
                .contains("sample_rate")
        })
        .count();
    assert_eq!(scaled, panels.len());
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
