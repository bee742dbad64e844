//! The connections to GreptimeDB (one client per endpoint) and the start-up check.

use std::{sync::Arc, time::Duration};

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

/// Checks at start-up that the endpoints answer and accept our database and credentials,
/// and says so in one line; then creates the tables and rollups that do not exist (once,
/// on one endpoint) and makes the table append-only. Capture goes on either way. Gives the
/// tables known to exist now (for the bulk path, which cannot create one).
pub async fn startup_check(writer: Arc<Writer>) -> Vec<String> {
    let mut exist = Vec::new();
    let started = std::time::Instant::now();
    let results = writer.endpoints.check(STARTUP_CHECK_TIMEOUT).await;
    let mut up = Vec::new();
    let mut unreachable = Vec::new();
    for (addr, res) in results {
        match res {
            Ok(()) => up.push(addr),
            Err(Failure::Fatal { kind, message }) => {
                // Wrong database or credentials: the same on every endpoint, logged once.
                writer.fatal(kind, &message);
                return exist;
            }
            Err(Failure::Retry { why, .. }) => unreachable.push(format!("{addr}: {why}")),
        }
    }
    if !up.is_empty() {
        info!("{} is ready", writer.cfg.describe());
        // Once, on one endpoint, however many there are.
        let prepared =
            super::ddl::prepare(&writer.endpoints, &writer.cfg, writer.cfg.ddl.flows).await;
        exist = prepared.tables;
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
    } else if !unreachable.is_empty() {
        writer.outage_began_at(&unreachable.join("; "), started);
    }
    exist
}
