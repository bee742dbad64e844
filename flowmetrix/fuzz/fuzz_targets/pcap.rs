//! Any bytes as a pcap or pcapng file, read frame by frame as `--pcap` does and each frame
//! decoded by its link type: never a panic, a hang or an unbounded allocation.
#![no_main]

use flowmetrix::{
    applications::Applications,
    decode::{FrameMeta, decode_link},
    pcap::PcapFrames,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Box::new(std::io::Cursor::new(data.to_vec()));
    let Ok(mut frames) = PcapFrames::from_reader("fuzz".into(), input) else {
        return;
    };
    let apps = Applications::default();
    let mut buf = Vec::new();
    // A frame takes at least 12 bytes of file: more frames than that is a loop.
    for _ in 0..=data.len() / 12 + 1 {
        match frames.next_frame(&mut buf) {
            Ok(Some(info)) => {
                assert!(buf.len() <= data.len(), "{} bytes from a {}-byte file", buf.len(), data.len());
                let meta = FrameMeta {
                    ts: info.ts,
                    wire_len: info.wire_len,
                    sample_rate: 1,
                };
                let _ = decode_link(info.link, &buf, meta, &apps);
            }
            Ok(None) | Err(_) => return,
        }
    }
    panic!("more frames than the file can hold");
});
