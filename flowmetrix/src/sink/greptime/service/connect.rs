//! The connections to GreptimeDB: one client per endpoint over one channel manager (timeouts,
//! compression, TLS), and a database handle with the credentials.

use greptimedb_ingester::{
    api::v1::{Basic, auth_header::AuthScheme},
    channel_manager::{ChannelConfig, ChannelManager, ClientTlsOption, GrpcCompression},
    client::Client,
    database::Database,
};

use crate::sink::greptime::{
    config::{Compression, GreptimeConfig},
    error::GreptimeError,
    retry::{CONNECT_TIMEOUT, REQUEST_TIMEOUT},
};

/// One (address, client, database handle) per endpoint, sharing one channel manager.
pub fn connect_all(cfg: &GreptimeConfig) -> Result<Vec<(String, Client, Database)>, GreptimeError> {
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

fn channel_manager(cfg: &GreptimeConfig) -> Result<ChannelManager, GreptimeError> {
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
                .map_err(|e| GreptimeError::Tls(e.to_string()))
        }
    }
}
