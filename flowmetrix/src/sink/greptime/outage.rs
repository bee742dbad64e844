//! The outage log: one line when writes begin to fail, one when they succeed again, and each
//! kind of failure a retry cannot fix once. Shared by the start-up work and the sink loop.

use std::{collections::HashSet, sync::Mutex, time::Instant};

use tracing::{error, info, warn};

use super::retry::Problem;

pub struct OutageLog {
    /// What is written to: `GreptimeDB at … (database …, table …)`.
    target: String,
    /// Rows go to the disk spool during an outage (else they wait in the queue).
    spooling: bool,
    /// When the current outage began (None while writes succeed).
    since: Mutex<Option<Instant>>,
    /// Fatal problems already reported (each is logged once).
    reported: Mutex<HashSet<Problem>>,
}

impl OutageLog {
    pub fn new(target: String, spooling: bool) -> Self {
        Self {
            target,
            spooling,
            since: Mutex::new(None),
            reported: Mutex::new(HashSet::new()),
        }
    }

    pub fn began(&self, why: &str) {
        self.began_at(why, Instant::now());
    }

    /// An outage whose first failed attempt started at `started` (a request that timed out
    /// after 10 s began 10 s before it failed).
    pub fn began_at(&self, why: &str, started: Instant) {
        let mut outage = self.since.lock().unwrap_or_else(|e| e.into_inner());
        if outage.is_none() {
            *outage = Some(started);
            let meanwhile = if self.spooling {
                "rows go to the disk spool meanwhile"
            } else {
                "rows wait in the queue meanwhile"
            };
            warn!("{} failed: {why}; retrying ({meanwhile})", self.target);
        }
    }

    pub fn succeeded(&self) {
        let mut outage = self.since.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = outage.take() {
            info!(
                "{} is writable again after {:.1}s",
                self.target,
                since.elapsed().as_secs_f64()
            );
        }
    }

    pub fn fatal(&self, kind: Problem, message: &str) {
        let first = self
            .reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind);
        if first {
            error!("{}: {message}", self.target);
        }
    }
}
