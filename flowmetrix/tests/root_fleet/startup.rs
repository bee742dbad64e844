//! Start-up of the static binary (BENCHMARKS.md, "Static binary and image"); run on demand:
//! `cargo test -p flowmetrix --features root-tests --test root_fleet startup -- --ignored
//! --nocapture`. Medians of 5: `--version`, and with `-i` on a veth (chrooted alone in an
//! empty root, as in `static_binary.rs`) the time from spawn to "XDP attached" and to the
//! first JSON row while the peer sends a frame a millisecond.

use std::{
    io::{BufRead as _, BufReader},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use crate::{
    artifacts,
    common::{NetPair, frames::udp_frame},
    jail, static_binary,
};

const RUNS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn startup() {
    let bin = artifacts::static_binary();
    let version: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let out = Command::new(&bin).arg("--version").output().expect("run");
            assert!(out.status.success());
            t.elapsed()
        })
        .collect();

    let net = NetPair::new();
    let root = static_binary::root_with_binary();
    let (mut attached, mut first_row) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (a, r) = one_start(&net, &root);
        attached.push(a);
        first_row.push(r);
    }
    println!(
        "static binary: --version {}; -i veth (chroot): attached {}, first row {} (medians of \
         {RUNS}; attached {:?}, first row {:?})",
        ms(median(version)),
        ms(median(attached.clone())),
        ms(median(first_row.clone())),
        attached.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        first_row.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
    );
}

/// One start: (spawn → "XDP attached", spawn → first row on stdout).
fn one_start(net: &NetPair, root: &jail::EmptyRoot) -> (Duration, Duration) {
    let args = [
        "-i",
        net.if_a.as_str(),
        "--sample-rate",
        "1",
        "--output",
        "jsonl",
    ];
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let frames = net.sender();
        let sending = Arc::clone(&sending);
        std::thread::spawn(move || {
            let mut i = 0;
            while sending.load(Ordering::Relaxed) {
                frames.send(&udp_frame(i));
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let start = Instant::now();
    let mut child = jail::command(&net.ns_a, &root.0, "/flowmetrix", &args)
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("XDP attached") {
                let _ = tx.send(start.elapsed());
            }
        }
    });
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next();
    let row = start.elapsed();
    assert!(first.is_some_and(|l| l.is_ok()), "no row");
    let attached = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("attached line");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = std::thread::spawn(move || lines.for_each(drop));
    let _ = child.wait();
    sending.store(false, Ordering::Relaxed);
    let _ = sender.join();
    (attached, row)
}
