//! The connection to GreptimeDB and the start-up check.

use std::{sync::Arc, time::Duration};

use greptimedb_ingester::{
    api::v1::{Basic, RowInsertRequests, auth_header::AuthScheme},
    channel_manager::{ChannelConfig, ChannelManager, ClientTlsOption, GrpcCompression},
    client::Client,
    database::Database,
};
use tracing::info;

use super::{
    retry::{CONNECT_TIMEOUT, Failure, REQUEST_TIMEOUT, classify},
    settings::{Compression, GreptimeConfig},
    writer::Writer,
};
use crate::sink::SinkError;

/// The client for the endpoints, and the database the run writes to.
pub fn connect(cfg: &GreptimeConfig) -> Result<(Database, Client), SinkError> {
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
    let manager = match &cfg.tls {
        None => ChannelManager::with_config(channel),
        Some(tls) => {
            let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
            let option = ClientTlsOption {
                server_ca_cert_path: path(&tls.ca_file),
                client_cert_path: path(&tls.cert_file),
                client_key_path: path(&tls.key_file),
            };
            ChannelManager::with_tls_config(channel.client_tls_config(option))
                .map_err(|e| SinkError::Tls(e.to_string()))?
        }
    };
    let client = Client::with_manager_and_urls(manager, &cfg.endpoints);
    let mut db = Database::new_with_dbname(cfg.database.clone(), client.clone());
    if let Some(auth) = auth(cfg) {
        db.set_auth(auth);
    }
    Ok((db, client))
}

/// The credentials, when a user is set.
pub fn auth(cfg: &GreptimeConfig) -> Option<AuthScheme> {
    cfg.username.as_ref().map(|username| {
        AuthScheme::Basic(Basic {
            username: username.clone(),
            password: cfg.password.clone().unwrap_or_default(),
        })
    })
}

/// Checks at start-up that the endpoint answers and accepts our database and credentials,
/// and says so; capture goes on either way.
pub async fn startup_check(writer: Arc<Writer>) {
    let empty = RowInsertRequests { inserts: vec![] };
    let res = tokio::time::timeout(
        Duration::from_secs(3),
        writer.db.insert_with_hints(empty, &writer.hints()),
    )
    .await;
    match res {
        Ok(Ok(_)) => info!("{} is ready", writer.cfg.describe()),
        Ok(Err(e)) => match classify(&e, &writer.cfg) {
            Failure::Retry(why) => writer.outage_began(&why),
            Failure::Fatal { kind, message } => writer.fatal(kind, &message),
        },
        Err(_) => writer.outage_began("no answer within 3s"),
    }
}
