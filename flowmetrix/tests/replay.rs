//! `--pcap` without root: files of every kind (pcap, pcapng, link types, FCS bits, standard
//! input) and their errors, replayed by the real binary. Against a live capture: the root
//! tier's `root_capture/replay.rs`.

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{frames::without_ts, pcap};
use serde_json::Value;

/// A legacy pcap (Ethernet, microseconds) holding these frames, one second apart.
fn pcap_of(frames: &[Vec<u8>]) -> Vec<u8> {
    pcap_with(1, frames)
}

/// A legacy pcap with this link-type field (link type, FCS bits) holding these frames.
fn pcap_with(link_field: u32, frames: &[Vec<u8>]) -> Vec<u8> {
    pcap::classic(link_field, pcap::spaced(Duration::from_secs(1), frames))
}

#[test]
fn config_file_applications_add_and_override_port_names() {
    let dir = std::env::temp_dir().join(format!("fmx-apps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let udp = |dst: u16| {
        common::frames::write(|v| {
            common::frames::eth()
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(40_000, dst)
                .write(v, b"x")
                .unwrap()
        })
    };
    let pcap = dir.join("apps.pcap");
    std::fs::write(&pcap, pcap_of(&[udp(9999), udp(53), udp(80)])).unwrap();
    let cfg = dir.join("apps.toml");
    std::fs::write(
        &cfg,
        "[applications]\n9999 = \"MYAPP\"\n53 = \"RESOLVER\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .arg("--pcap")
        .arg(&pcap)
        .arg("--config")
        .arg(&cfg)
        .args(["--output", "jsonl"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let apps: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["application"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(apps, ["MYAPP", "RESOLVER", "HTTP"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `flowmetrix --pcap ARG --output jsonl -no-log` with `input` on its standard input.
fn replay_with_stdin(arg: &std::ffi::OsStr, input: &[u8]) -> (Option<i32>, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .arg("--pcap")
        .arg(arg)
        .args(["--output", "jsonl", "-no-log"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written from another thread in small pieces, as a pipe from tcpdump would be.
    let writer = std::thread::spawn(move || {
        for chunk in input.chunks(7) {
            if stdin.write_all(chunk).is_err() {
                break;
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pcap_dash_reads_the_capture_from_standard_input() {
    let udp = |dst: u16| {
        common::frames::write(|v| {
            common::frames::eth()
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(40_000, dst)
                .write(v, b"x")
                .unwrap()
        })
    };
    let bytes = pcap_of(&[udp(53), udp(80), udp(443)]);
    let (code, out, err) = replay_with_stdin("-".as_ref(), &bytes);
    assert_eq!(code, Some(0), "{err}");
    let apps: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["application"].to_string())
        .collect();
    assert_eq!(apps, ["\"DNS\"", "\"HTTP\"", "\"HTTPS\""]);
    let s = common::Summary::parse(&err).unwrap();
    assert_eq!((s.seen, s.written), (3, 3));

    // Cut short on standard input: the frames before the cut, then one sentence.
    let (code, out, err) = replay_with_stdin("-".as_ref(), &bytes[..bytes.len() - 5]);
    assert_eq!(code, Some(1));
    assert_eq!(out.lines().count(), 2);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        errors,
        ["error: standard input is truncated: it ends inside a record after 2 frames"],
        "{err}"
    );
}

#[test]
fn pcap_errors_are_plain_sentences() {
    let dir = std::env::temp_dir().join(format!("fmx-pcap-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (code, out, err) = replay_with_stdin(dir.as_os_str(), b"");
    assert_eq!((code, out.as_str()), (Some(1), ""));
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        errors,
        [format!(
            "error: {} is a directory, not a pcap or pcapng file",
            dir.display()
        )],
        "{err}"
    );
    let text = dir.join("notes.txt");
    std::fs::write(&text, "not a capture, just some words in a file").unwrap();
    let (code, _, err) = replay_with_stdin(text.as_os_str(), b"");
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "error: {} is not a pcap or pcapng file",
            text.display()
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_is_heard_while_standard_input_holds_back_the_file() {
    // No root needed: a replay attaches nothing.
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .args(["--pcap", "-", "--output", "none"])
        .stdin(Stdio::piped()) // open, silent: the file header never comes
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let sent = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "no exit after Ctrl+C"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("summary: seen 0, sampled 0"), "{err}");
}

/// `flowmetrix --pcap FILE --output jsonl ARGS`: exit code, rows, standard error.
fn replay_file(bytes: &[u8], name: &str, args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let dir = std::env::temp_dir().join(format!("fmx-links-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flowmetrix"))
        .arg("--pcap")
        .arg(&file)
        .args(["--output", "jsonl"])
        .args(args)
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    let rows = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.code(),
        rows,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const MAC_S: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const MAC_D: [u8; 6] = [0x02, 0, 0, 0, 0, 0x22];

/// IPv4/UDP 10.5.0.1:40000 → 10.5.0.2:53 with a 10-byte payload.
fn ip_udp() -> Vec<u8> {
    common::frames::write(|v| {
        etherparse::PacketBuilder::ipv4([10, 5, 0, 1], [10, 5, 0, 2], 64)
            .udp(40_000, 53)
            .write(v, &[1; 10])
            .unwrap()
    })
}

/// Its row (ts aside): every column.
fn ip_udp_row(size: usize, ether_type: u16, src_mac: Value, dst_mac: Value, mpls: Value) -> Value {
    serde_json::json!({
        "packet_size": size,
        "ether_type": ether_type,
        "src_mac": src_mac,
        "dst_mac": dst_mac,
        "vlan_id": null,
        "protocol": 17,
        "src_ip": "10.5.0.1",
        "dst_ip": "10.5.0.2",
        "src_port": 40_000,
        "dst_port": 53,
        "tcp_flags": null,
        "packet_type": "IPv4",
        "application": "DNS",
        "tunnel": null,
        "inner_src_ip": null,
        "inner_dst_ip": null,
        "inner_protocol": null,
        "inner_src_port": null,
        "inner_dst_port": null,
        "mpls_labels": mpls,
        "sample_rate": 1,
        "direction": "ingress",
        // A file says nothing of sockets.
        "cgroup_id": null,
        "container_id": null,
        "pod_uid": null,
        "pod": null,
        "namespace": null,
    })
}

fn ethernet(ether_type: u16, rest: &[u8]) -> Vec<u8> {
    [&MAC_D[..], &MAC_S, &ether_type.to_be_bytes(), rest].concat()
}

#[test]
fn a_pcap_with_fcs_bits_in_its_link_type_replays_without_the_fcs() {
    // F bit (28) and 2 words of FCS (bits 29-31) above link type 1; each frame ends in 4
    // FCS bytes that would otherwise be taken for payload.
    let mpls = [0x00, 0x01, 0x01, 0x40]; // label 16, bottom of stack
    let frames = vec![
        [ethernet(0x0800, &ip_udp()), vec![0xde, 0xad, 0xbe, 0xef]].concat(),
        [
            ethernet(0x8847, &[&mpls[..], &ip_udp()].concat()),
            vec![0xfc; 4],
        ]
        .concat(),
    ];
    let field = (2 << 29) | (1 << 28) | 1;
    let (code, rows, err) = replay_file(&pcap_with(field, &frames), "fcs.pcap", &[]);
    assert_eq!(code, Some(0), "{err}");
    let mac = |m: [u8; 6]| Value::from(common::mac_str(m));
    let want = [
        ip_udp_row(14 + 38, 0x0800, mac(MAC_S), mac(MAC_D), Value::Null),
        ip_udp_row(14 + 4 + 38, 0x8847, mac(MAC_S), mac(MAC_D), "16".into()),
    ];
    let got: Vec<Value> = rows.iter().map(without_ts).collect();
    assert_eq!(got, want);
}

#[test]
fn every_link_type_replays_with_its_columns_and_pcapng_keeps_each_interfaces() {
    let ip = ip_udp();
    let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 4, 6];
    sll2.extend_from_slice(&MAC_S);
    sll2.extend_from_slice(&[0, 0]);
    let mut sll = vec![0, 0, 0, 1, 0, 6];
    sll.extend_from_slice(&MAC_S);
    sll.extend_from_slice(&[0, 0, 0x08, 0x00]);
    // Ethernet, SLL, SLL2, raw IP, raw IPv4, NULL (little-endian host), LOOP, one
    // interface each.
    let linktypes = [1, 113, 276, 101, 228, 0, 108];
    let packets = vec![
        (0, ethernet(0x0800, &ip)),
        (1, [sll, ip.clone()].concat()),
        (2, [sll2, ip.clone()].concat()),
        (3, ip.clone()),
        (4, ip.clone()),
        (5, [&[2, 0, 0, 0][..], &ip].concat()),
        (6, [&[0, 0, 0, 2][..], &ip].concat()),
    ];
    let bytes = pcap::pcapng(&linktypes, &packets);
    let (code, rows, err) = replay_file(&bytes, "links.pcapng", &[]);
    assert_eq!(code, Some(0), "{err}");
    let mac = |m: [u8; 6]| Value::from(common::mac_str(m));
    let n = Value::Null;
    let l = ip.len();
    let want = [
        ip_udp_row(14 + l, 0x0800, mac(MAC_S), mac(MAC_D), n.clone()),
        ip_udp_row(16 + l, 0x0800, mac(MAC_S), n.clone(), n.clone()),
        ip_udp_row(20 + l, 0x0800, mac(MAC_S), n.clone(), n.clone()),
        ip_udp_row(l, 0x0800, n.clone(), n.clone(), n.clone()),
        ip_udp_row(l, 0x0800, n.clone(), n.clone(), n.clone()),
        ip_udp_row(4 + l, 0x0800, n.clone(), n.clone(), n.clone()),
        ip_udp_row(4 + l, 0x0800, n.clone(), n.clone(), n.clone()),
    ];
    let got: Vec<Value> = rows.iter().map(without_ts).collect();
    assert_eq!(got, want);
}

#[test]
fn offset_and_auto_detect_apply_to_ethernet_and_are_ignored_with_a_warning_otherwise() {
    let ip = ip_udp();
    let framed = [vec![0xee; 24], ethernet(0x0800, &ip)].concat();
    let raw = pcap_with(101, &[ip.clone(), ip.clone()]);
    let eth = pcap_with(1, &[framed.clone(), framed.clone(), framed]);
    let warning = "applies to Ethernet frames only; ignored for raw IP (link type 101)";
    for flags in [&["-offset", "24"][..], &["-auto-detect"]] {
        // Ethernet: the prefix is taken off, as ever; no warning.
        let (code, rows, err) = replay_file(&eth, "eth.pcap", flags);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(rows.len(), 3, "{flags:?}: {err}");
        for r in &rows {
            assert_eq!(r["src_mac"], common::mac_str(MAC_S), "{flags:?}");
            assert_eq!(r["packet_size"], 14 + ip.len(), "{flags:?}");
            assert_eq!(r["dst_port"], 53, "{flags:?}");
        }
        assert!(!err.contains(warning), "{err}");
        // Raw IP: decoded as it is, one warning line naming the flag and the link type.
        let (code, rows, err) = replay_file(&raw, "raw.pcap", flags);
        assert_eq!(code, Some(0), "{err}");
        let n = Value::Null;
        let want = ip_udp_row(ip.len(), 0x0800, n.clone(), n.clone(), n);
        assert_eq!(
            rows.iter().map(without_ts).collect::<Vec<_>>(),
            [want.clone(), want]
        );
        let lines: Vec<&str> = err.lines().filter(|l| l.contains(warning)).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains(flags[0]), "{err}");
        let s = common::Summary::parse(&err).unwrap();
        assert_eq!((s.written, s.decode_errors), (2, 0), "{err}");
    }
}
