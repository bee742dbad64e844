//! Warnings that may repeat many times a second (a full spool, a full queue) are logged at
//! most once per interval, saying how many like them were held back.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use tracing::warn;

/// How often a throttled warning may be logged.
pub const EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct Throttled {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttled {
    /// Logs `message` now if none was logged in the last [`EVERY`]; else counts it.
    pub fn warn(&self, message: impl std::fmt::Display) {
        if let Some(held_back) = self.due(Instant::now()) {
            if held_back > 0 {
                warn!("{message} ({held_back} more like it in the last {EVERY:?})");
            } else {
                warn!("{message}");
            }
        }
    }

    /// Whether a message may be logged at `now`, and how many were held back before it.
    fn due(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.last {
            Some(last) if now.duration_since(last) < EVERY => {
                s.held_back += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_per_interval_and_the_rest_counted() {
        let t = Throttled::default();
        let start = Instant::now();
        assert_eq!(t.due(start), Some(0));
        for i in 1..=5 {
            assert_eq!(t.due(start + Duration::from_millis(i)), None);
        }
        assert_eq!(t.due(start + EVERY), Some(5));
        assert_eq!(t.due(start + EVERY + Duration::from_secs(1)), None);
    }
}
