//! Any sequence of frames through the -auto-detect learner: never a panic, every frame
//! handed back exactly once (held frames released in order), offsets in range.
#![no_main]

use std::time::{Duration, Instant};

use flowmetrix::{
    offset::{AutoPrefix, MAX_AUTO_OFFSET, Step, plausible},
    record::UnixNanos,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut learner = AutoPrefix::new();
    let start = Instant::now();
    let mut observed = 0i64;
    let mut returned = Vec::new();
    // Frames are split by their first byte (a length), the wire length by the second.
    let mut rest = data;
    while let [len, extra, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (frame, next) = tail.split_at(n);
        rest = next;
        let wire_len = frame.len() as u32 + u32::from(*extra);
        let now = start + Duration::from_millis(observed as u64 * 100);
        let _ = plausible(frame, usize::from(*extra) % (MAX_AUTO_OFFSET + 1), wire_len);
        match learner.observe(frame, wire_len, UnixNanos(observed), now) {
            Step::Hold => {}
            Step::Use(offset) => {
                assert!(offset <= MAX_AUTO_OFFSET);
                returned.push(observed);
            }
            Step::Release { offset, frames } => {
                assert!(offset <= MAX_AUTO_OFFSET);
                returned.extend(frames.iter().map(|h| h.ts.0));
            }
        }
        observed += 1;
    }
    if let Some((_, frames)) = learner.finish() {
        returned.extend(frames.iter().map(|h| h.ts.0));
    }
    assert_eq!(returned, (0..observed).collect::<Vec<_>>());
});
