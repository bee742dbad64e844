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
        self.began_then(why, started, None);
    }

    /// An outage, and what is done when it ends (`then`: the start-up DDL still to run),
    /// said on the same one line.
    pub fn began_then(&self, why: &str, started: Instant, then: Option<&str>) {
        let mut outage = self.since.lock().unwrap_or_else(|e| e.into_inner());
        if outage.is_none() {
            *outage = Some(started);
            warn!("{}", self.began_line(why, then));
        }
    }

    fn began_line(&self, why: &str, then: Option<&str>) -> String {
        let meanwhile = if self.spooling {
            "rows go to the disk spool meanwhile"
        } else {
            "rows wait in the queue meanwhile"
        };
        let then = then.map_or_else(String::new, |t| format!("; {t}"));
        format!(
            "{} failed: {why}; retrying ({meanwhile}{then})",
            self.target
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_at_start_is_one_line_with_what_waits_for_it() {
        let log = OutageLog::new("GreptimeDB at 127.0.0.1:1 (database public)".into(), true);
        assert_eq!(
            log.began_line(
                "connection refused",
                Some("the tables are created when GreptimeDB first answers")
            ),
            "GreptimeDB at 127.0.0.1:1 (database public) failed: connection refused; retrying (rows go to the disk spool meanwhile; the tables are created when GreptimeDB first answers)"
        );
        let log = OutageLog::new("GreptimeDB at a:1".into(), false);
        assert_eq!(
            log.began_line("timeout", None),
            "GreptimeDB at a:1 failed: timeout; retrying (rows wait in the queue meanwhile)"
        );
    }
}
