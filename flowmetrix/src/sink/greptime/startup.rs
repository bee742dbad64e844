//! The start-up work, once per run before the first insert: the `USE` check that the
//! endpoints answer and take our database and credentials, the tables and rollups the DDL
//! creates, and the append mode of an existing table. Uses the service; the sink loop asks
//! it whether inserts may go ([`Startup::ready`]).

use std::{
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tracing::{info, warn};

use super::{
    config::GreptimeConfig,
    ddl,
    outage::OutageLog,
    retry::Failure,
    service::{AppendMode, Endpoints, PROBE_INTERVAL},
};

/// How long the start-up check waits for each endpoint.
pub const STARTUP_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the deferred start-up work looks for an endpoint that answers, and how long
/// it waits after a try that found none.
const STARTUP_POLL: Duration = Duration::from_millis(100);
const STARTUP_RETRY: Duration = PROBE_INTERVAL;

/// The start-up work of one sink and what it found.
pub struct Startup {
    endpoints: Arc<Endpoints>,
    cfg: GreptimeConfig,
    log: Arc<OutageLog>,
    /// True once the start-up DDL has run: inserts wait for it ([`Startup::ready`]).
    ran: watch::Sender<bool>,
    /// The tables the start-up work found or created (set before `ran`).
    exist: Mutex<Vec<String>>,
}

impl Startup {
    pub fn new(endpoints: Arc<Endpoints>, cfg: GreptimeConfig, log: Arc<OutageLog>) -> Self {
        Self {
            endpoints,
            // With --no-create-table the first insert makes the table: nothing to wait for.
            ran: watch::Sender::new(!cfg.ddl.create_tables),
            cfg,
            log,
            exist: Mutex::new(Vec::new()),
        }
    }

    /// Checks at start-up that the endpoints answer and accept our database and
    /// credentials, and says so in one line; then creates the tables and rollups that do not
    /// exist (once, on one endpoint) and makes the table append-only. Capture goes on either
    /// way.
    ///
    /// When no endpoint answers, the same work is done in the background as soon as one does
    /// (the endpoints probe the dead ones), and no insert or replay is sent before it has
    /// run ([`Startup::ready`]): the tables are made by their DDL, never by a first insert
    /// after the outage. Rows go to the spool meanwhile, as in any outage. The background
    /// work ends with the last owner of `self`.
    pub async fn run(self: &Arc<Self>) {
        if self.once(Instant::now()).await.is_err() {
            tokio::spawn(when_up(Arc::downgrade(self)));
        }
    }

    /// What waits for GreptimeDB besides the rows, for the outage line.
    fn pending_ddl(&self) -> Option<&'static str> {
        let ddl = &self.cfg.ddl;
        match (ddl.create_tables, ddl.rollups) {
            (false, _) => None,
            (true, true) => {
                Some("the tables and rollups are created when GreptimeDB first answers")
            }
            (true, false) => Some("the tables are created when GreptimeDB first answers"),
        }
    }

    /// The start-up work once. Err: no endpoint answered, so it is worth doing again.
    async fn once(&self, started: Instant) -> Result<(), String> {
        let results = self.endpoints.check(STARTUP_CHECK_TIMEOUT).await;
        let mut up = Vec::new();
        let mut unreachable = Vec::new();
        for (addr, res) in results {
            match res {
                Ok(()) => up.push(addr),
                Err(Failure::Fatal { kind, message }) => {
                    // Wrong database or credentials: the same on every endpoint, logged
                    // once. Inserts fail the same way; nothing to wait for.
                    self.log.fatal(kind, &message);
                    self.prepared(Vec::new());
                    return Ok(());
                }
                Err(Failure::Retry { why, .. }) => unreachable.push((addr, why)),
            }
        }
        if up.is_empty() {
            // The outage line names the endpoints already: one needs no second mention.
            let why = match &unreachable[..] {
                [(_, why)] => why.to_string(),
                all => all
                    .iter()
                    .map(|(addr, why)| format!("{addr}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            };
            self.log.began_then(&why, started, self.pending_ddl());
            return Err(why);
        }
        info!("{} is ready", self.cfg.describe());
        // Once, on one endpoint, however many there are.
        let done = ddl::prepare(&self.endpoints, &self.cfg, self.cfg.ddl.flows).await;
        if let Some(why) = done.unreachable {
            // Gone again before the DDL ran: all of it again later (IF NOT EXISTS).
            return Err(why);
        }
        let mut exist = done.tables;
        let table = &self.cfg.table;
        match self
            .endpoints
            .ensure_append_mode(STARTUP_CHECK_TIMEOUT)
            .await
        {
            AppendMode::Ensured => {
                info!(
                    "table {table} exists; it is append-only (rows with equal tags and timestamp are all kept)"
                );
                exist.push(table.clone());
            }
            AppendMode::NoTable => {}
            AppendMode::Failed(why) => warn!(
                "cannot make table {table} append-only ({why}): if it was created without append mode (by the Go original, say), GreptimeDB merges rows with equal tags and timestamp; run ALTER TABLE \"{table}\" SET 'append_mode' = 'true'"
            ),
        }
        self.prepared(exist);
        Ok(())
    }

    /// The start-up work has run (or there is nothing to wait for); `exist`: the tables it
    /// found or created. Lets inserts and replays go.
    fn prepared(&self, exist: Vec<String>) {
        if let Ok(mut e) = self.exist.lock() {
            *e = exist;
        }
        self.ran.send_replace(true);
    }

    /// Whether the start-up DDL has run.
    pub fn ran(&self) -> bool {
        *self.ran.borrow()
    }

    /// Whether the start-up work found or created `table` (false until it has run).
    pub fn found(&self, table: &str) -> bool {
        self.exist
            .lock()
            .is_ok_and(|e| e.iter().any(|t| t == table))
    }

    /// Whether an insert may go now: only once the start-up DDL has run, so that no insert
    /// reaches a server before the tables' own DDL did. Until then (GreptimeDB has not
    /// answered it yet; this is part of the outage) the reason, at once: the rows go to the
    /// spool, or are retried, as in any outage.
    pub fn ready(&self) -> Result<(), String> {
        if self.ran() {
            return Ok(());
        }
        self.endpoints.pick().map_err(|e| e.to_string())?;
        Err("GreptimeDB answers again; its tables are being made (start-up DDL)".to_owned())
    }
}

/// The start-up work, tried whenever an endpoint is back in rotation, until it has run once
/// or its sink is gone.
async fn when_up(startup: Weak<Startup>) {
    loop {
        tokio::time::sleep(STARTUP_POLL).await;
        let Some(startup) = startup.upgrade() else {
            return;
        };
        if !startup.endpoints.any_up() {
            continue;
        }
        if startup.once(Instant::now()).await.is_ok() {
            return;
        }
        drop(startup);
        tokio::time::sleep(STARTUP_RETRY).await;
    }
}
