//! The connections to GreptimeDB (one client per endpoint) and the start-up check.

use std::{
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use greptimedb_ingester::{
    api::v1::{Basic, auth_header::AuthScheme},
    channel_manager::{ChannelConfig, ChannelManager, ClientTlsOption, GrpcCompression},
    client::Client,
    database::Database,
};
use tracing::{info, warn};

use super::{
    endpoints::AppendMode,
    retry::{CONNECT_TIMEOUT, Failure, REQUEST_TIMEOUT},
    settings::{Compression, GreptimeConfig},
    writer::Writer,
};
use crate::sink::SinkError;

/// How long the start-up check waits for each endpoint.
pub const STARTUP_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// One (address, client, database handle) per endpoint, sharing one channel manager.
pub fn connect_all(cfg: &GreptimeConfig) -> Result<Vec<(String, Client, Database)>, SinkError> {
    let manager = channel_manager(cfg)?;
    Ok(cfg
        .endpoints
        .iter()
        .map(|addr| {
            let client = Client::with_manager_and_urls(manager.clone(), [addr]);
            let db = database(cfg, &cfg.database, &client);
            (addr.clone(), client, db)
        })
        .collect())
}

/// `name` on `client`, with the credentials, when a user is set.
pub fn database(cfg: &GreptimeConfig, name: &str, client: &Client) -> Database {
    let mut db = Database::new_with_dbname(name.to_owned(), client.clone());
    if let Some(username) = &cfg.username {
        db.set_auth(AuthScheme::Basic(Basic {
            username: username.clone(),
            password: cfg.password.clone().unwrap_or_default(),
        }));
    }
    db
}

fn channel_manager(cfg: &GreptimeConfig) -> Result<ChannelManager, SinkError> {
    let mut channel = ChannelConfig::default()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let compression = match cfg.compression {
        Compression::None => None,
        Compression::Gzip => Some(GrpcCompression::Gzip),
        Compression::Zstd => Some(GrpcCompression::Zstd),
    };
    if let Some(c) = compression {
        channel = channel.with_send_compression(c).with_accept_compression(c);
    }
    match &cfg.tls {
        None => Ok(ChannelManager::with_config(channel)),
        Some(tls) => {
            let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
            let option = ClientTlsOption {
                server_ca_cert_path: path(&tls.ca_file),
                client_cert_path: path(&tls.cert_file),
                client_key_path: path(&tls.key_file),
            };
            ChannelManager::with_tls_config(channel.client_tls_config(option))
                .map_err(|e| SinkError::Tls(e.to_string()))
        }
    }
}

/// How often the deferred start-up work looks for an endpoint that answers, and how long
/// it waits after a try that found none.
const STARTUP_POLL: Duration = Duration::from_millis(100);
const STARTUP_RETRY: Duration = super::endpoints::PROBE_INTERVAL;

/// Checks at start-up that the endpoints answer and accept our database and credentials,
/// and says so in one line; then creates the tables and rollups that do not exist (once,
/// on one endpoint) and makes the table append-only. Capture goes on either way.
///
/// When no endpoint answers, the same work is done in the background as soon as one does
/// (the endpoints probe the dead ones), and no insert or replay is sent before it has run
/// ([`Writer::tables_ready`]): the tables are made by their DDL, never by a first insert
/// after the outage. Rows go to the spool meanwhile, as in any outage.
pub async fn startup_check(writer: Arc<Writer>) {
    if let Err(why) = startup_work(&writer, Instant::now()).await {
        if writer.cfg.ddl.create_tables {
            info!(
                "tables and rollups are created when GreptimeDB first answers ({why}); rows wait for that"
            );
        }
        tokio::spawn(startup_when_up(Arc::downgrade(&writer)));
    }
}

/// The start-up work once. Err: no endpoint answered, so it is worth doing again.
async fn startup_work(writer: &Writer, started: Instant) -> Result<(), String> {
    let results = writer.endpoints.check(STARTUP_CHECK_TIMEOUT).await;
    let mut up = Vec::new();
    let mut unreachable = Vec::new();
    for (addr, res) in results {
        match res {
            Ok(()) => up.push(addr),
            Err(Failure::Fatal { kind, message }) => {
                // Wrong database or credentials: the same on every endpoint, logged once.
                // Inserts fail the same way; nothing to wait for.
                writer.fatal(kind, &message);
                writer.tables_prepared(Vec::new());
                return Ok(());
            }
            Err(Failure::Retry { why, .. }) => unreachable.push(format!("{addr}: {why}")),
        }
    }
    if up.is_empty() {
        let why = unreachable.join("; ");
        writer.outage_began_at(&why, started);
        return Err(why);
    }
    info!("{} is ready", writer.cfg.describe());
    // Once, on one endpoint, however many there are.
    let done = super::ddl::prepare(&writer.endpoints, &writer.cfg, writer.cfg.ddl.flows).await;
    if let Some(why) = done.unreachable {
        // Gone again before the DDL ran: all of it again later (IF NOT EXISTS).
        return Err(why);
    }
    let mut exist = done.tables;
    let table = &writer.cfg.table;
    match writer
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
    writer.tables_prepared(exist);
    Ok(())
}

/// The start-up work, tried whenever an endpoint is back in rotation, until it has run once
/// or the writer is gone.
async fn startup_when_up(writer: Weak<Writer>) {
    loop {
        tokio::time::sleep(STARTUP_POLL).await;
        let Some(writer) = writer.upgrade() else {
            return;
        };
        if !writer.endpoints.any_up() {
            continue;
        }
        if startup_work(&writer, Instant::now()).await.is_ok() {
            return;
        }
        drop(writer);
        tokio::time::sleep(STARTUP_RETRY).await;
    }
}

impl Writer {
    /// Lets inserts and replays go: the start-up DDL has run (or there is nothing to wait
    /// for).
    /// The start-up work has run; `exist`: the tables it found or created.
    pub(super) fn tables_prepared(&self, exist: Vec<String>) {
        if let Ok(mut e) = self.exist.lock() {
            *e = exist;
        }
        self.ddl_ran.send_replace(true);
    }

    /// Whether an insert may go now: only once the start-up DDL has run, so that no insert
    /// reaches a server before the tables' own DDL did. Until then (GreptimeDB has not
    /// answered it yet; this is part of the outage) the reason, at once: the rows go to the
    /// spool, or are retried, as in any outage.
    pub(super) fn tables_ready(&self) -> Result<(), String> {
        if *self.ddl_ran.borrow() {
            return Ok(());
        }
        self.endpoints.pick().map_err(|e| e.to_string())?;
        Err("GreptimeDB answers again; its tables are being made (start-up DDL)".to_owned())
    }
}
