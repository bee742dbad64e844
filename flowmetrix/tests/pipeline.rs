//! The whole pipeline (settings → source → decode stage → sink) through the library, with
//! a pcap file as the source and the in-process GreptimeDB test endpoint as the sink: no
//! root, no network namespace. The kernel source is exercised by the root tier.

mod common;

use std::{path::PathBuf, sync::Arc, time::Duration};

use common::{data, endpoint::Endpoint, frames::udp4, pcap};
use flowmetrix::{
    applications::Applications,
    decoder::DecodeSettings,
    metrics::Summary,
    offset::Prefix,
    pipeline::{self, MetricsSettings, Outcome, PipelineSettings},
    sink::{SinkConfig, SinkSettings, greptime::GreptimeConfig},
    source::SourceSettings,
};

/// UDP frame `i`: src port 10 000 + i, to port 53 (DNS) or 9000 (MINIO, from the table).
fn frame(i: u16, dst_port: u16) -> Vec<u8> {
    let macs = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    udp4(
        macs,
        ([10, 8, 0, 1], 10_000 + i),
        ([10, 8, 0, 2], dst_port),
        &i.to_be_bytes(),
    )
}

/// A classic pcap file of `frames`, one per millisecond from 2026-11-18 11:06:40 UTC.
fn pcap(name: &str, frames: &[Vec<u8>]) -> PathBuf {
    let v = pcap::ethernet(pcap::spaced(Duration::from_millis(1), frames));
    let p = std::env::temp_dir().join(format!("fmx-pipeline-{}-{name}.pcap", std::process::id()));
    std::fs::write(&p, v).unwrap();
    p
}

fn greptime(endpoint: &Endpoint) -> SinkConfig {
    SinkConfig::Greptime(Box::new(GreptimeConfig {
        batch_size: 64,
        flush_interval: Duration::from_millis(50),
        ..data::greptime([endpoint.addr])
    }))
}

fn settings(file: PathBuf, decode: DecodeSettings, output: SinkConfig) -> PipelineSettings {
    PipelineSettings {
        packets: true,
        flows: None,
        dns: None,
        source: SourceSettings::Pcap(file),
        decode,
        sink: SinkSettings {
            output,
            queue_rows: 10_000,
        },
        metrics: MetricsSettings {
            addr: None,
            stats_interval: Duration::from_secs(60),
        },
        kube: None,
        cgroup_root: None,
    }
}

fn run(settings: PipelineSettings) -> Outcome {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(pipeline::run(settings, std::future::pending()))
        .expect("the pipeline starts")
}

fn assert_equation(s: &Summary) {
    assert_eq!(s.unaccounted(), 0, "loss equation: {s:?}");
}

#[test]
fn a_file_goes_through_every_stage_into_greptimedb() {
    let endpoint = Endpoint::start(None);
    let frames: Vec<Vec<u8>> = (0..500)
        .map(|i| frame(i, if i % 2 == 0 { 53 } else { 9000 }))
        .collect();
    let file = pcap("all", &frames);
    let decode = DecodeSettings {
        prefix: Prefix::Fixed(0),
        applications: Arc::new(Applications::new([(9000, "MINIO".to_owned())])),
        host: "node-7".into(),
    };
    let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
    let out = run(settings(file.clone(), decode, greptime(&endpoint)));
    assert!(out.error.is_none(), "{:?}", out.error);
    let s = out.summary;
    assert_equation(&s);
    assert_eq!(
        (s.kernel.seen, s.kernel.sampled, s.decoded, s.written),
        (500, 500, 500, 500)
    );
    let rows = endpoint.rows("packet_data");
    assert_eq!(rows.len(), 500);
    for r in &rows {
        let port = r["src_port"].as_u64().unwrap() - 10_000;
        let want = if port % 2 == 0 { "DNS" } else { "MINIO" };
        assert_eq!(r["application"], want, "{r}");
        assert_eq!(r["sample_rate"], 1);
        assert_eq!(r["src_ip"], "10.8.0.1");
        assert_eq!(
            (&r["host"], &r["interface"], &r["direction"]),
            (
                &"node-7".into(),
                &file_name.as_str().into(),
                &"ingress".into()
            )
        );
        assert_eq!(r["packet_size"], frames[port as usize].len() as u64);
        let ms = port * 1_000_000;
        assert_eq!(
            r["ts"],
            format!("2026-11-18T11:06:40.{:09}Z", ms),
            "ts from the file"
        );
    }
    std::fs::remove_file(file).unwrap();
}

#[test]
fn auto_detect_learns_the_prefix_of_a_file_and_decodes_every_frame() {
    let endpoint = Endpoint::start(None);
    let frames: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            let mut f = vec![0xab; 24];
            f.extend(frame(i, 53));
            f
        })
        .collect();
    let file = pcap("auto", &frames);
    let decode = DecodeSettings {
        prefix: Prefix::Auto,
        ..Default::default()
    };
    let out = run(settings(file.clone(), decode, greptime(&endpoint)));
    assert!(out.error.is_none());
    assert_equation(&out.summary);
    assert_eq!((out.summary.written, out.summary.decode_errors), (40, 0));
    let rows = endpoint.rows("packet_data");
    assert!(
        rows.iter()
            .all(|r| r["application"] == "DNS" && r["src_mac"] == "02:00:00:00:00:01")
    );
    std::fs::remove_file(file).unwrap();
}

#[test]
fn a_truncated_file_writes_the_frames_before_the_damage_and_says_so() {
    let endpoint = Endpoint::start(None);
    let frames: Vec<Vec<u8>> = (0..300).map(|i| frame(i, 53)).collect();
    let file = pcap("cut", &frames);
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let out = run(settings(
        file.clone(),
        DecodeSettings::default(),
        greptime(&endpoint),
    ));
    let err = out.error.expect("the damage is reported").to_string();
    assert!(err.contains("truncated") && err.contains("299"), "{err}");
    assert_equation(&out.summary);
    assert_eq!(out.summary.written, 299);
    assert_eq!(endpoint.rows("packet_data").len(), 299);
    std::fs::remove_file(file).unwrap();
}

#[test]
fn frames_that_are_not_packets_are_counted_as_decode_errors() {
    let mut frames: Vec<Vec<u8>> = (0..10).map(|i| frame(i, 53)).collect();
    frames.push(vec![1, 2, 3]); // shorter than an Ethernet header
    let file = pcap("bad", &frames);
    let out = run(settings(
        file.clone(),
        DecodeSettings::default(),
        SinkConfig::None,
    ));
    assert!(out.error.is_none());
    assert_equation(&out.summary);
    assert_eq!((out.summary.written, out.summary.decode_errors), (10, 1));
    std::fs::remove_file(file).unwrap();
}

#[test]
fn a_start_up_error_is_returned_before_anything_runs() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let res = runtime.block_on(pipeline::run(
        settings(
            PathBuf::from("/nonexistent/fmx.pcap"),
            DecodeSettings::default(),
            SinkConfig::None,
        ),
        std::future::pending(),
    ));
    let Err(e) = res else { panic!("started") };
    assert!(e.to_string().contains("/nonexistent/fmx.pcap"), "{e}");
}
