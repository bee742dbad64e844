//! The service: the connections to GreptimeDB and what goes over them. Several endpoints,
//! health-aware: one client per endpoint, requests spread
//! round-robin over the healthy ones. An endpoint whose connection fails (refused, reset,
//! timed out: no answer from GreptimeDB proper) is taken out of rotation at once and the
//! request goes to the next one; a background probe puts it back when it answers again.
//! Only when every endpoint is down does a request fail with a retriable error, and only
//! that is an outage for the writer. (The ingester's own `Client::with_urls` picks a random
//! URL per call and never notices a dead one.)

use std::{
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use greptimedb_ingester::{
    api::v1::{
        AuthHeader, Basic, GreptimeRequest, QueryRequest, RequestHeader, RowInsertRequests,
        auth_header::AuthScheme, greptime_database_client::GreptimeDatabaseClient,
        greptime_request::Request, query_request::Query,
    },
    client::Client,
    database::Database,
};
use tonic::Code;
use tracing::{info, warn};

pub mod connect;
pub mod shapes;

use connect::connect_all;
use shapes::Shapes;

use crate::sink::greptime::{
    config::GreptimeConfig,
    error::GreptimeError,
    retry::{Failure, REQUEST_TIMEOUT, classify, classify_status, greptime_code},
};

/// How often a down endpoint is probed, and how long a probe may take.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The endpoints of one sink.
pub struct Endpoints {
    members: Vec<Member>,
    next: AtomicUsize,
    cfg: GreptimeConfig,
    /// The roles of existing tables' columns, as the server told them.
    shapes: Shapes,
}

struct Member {
    addr: String,
    client: Client,
    db: Database,
    /// Since when and why it is out of rotation; None while it is up.
    down: Mutex<Option<(Instant, String)>>,
    /// Requests to it that failed for the endpoint's sake (connection, timeout).
    failures: AtomicU64,
}

/// An endpoint chosen for one request.
#[derive(Clone)]
pub struct Chosen {
    index: usize,
    pub addr: String,
    pub db: Database,
}

/// How [`Endpoints::ensure_append_mode`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendMode {
    /// The table exists and is append-only now.
    Ensured,
    /// No such table yet: the first insert creates it append-only.
    NoTable,
    /// The statement failed (permissions, …): the table may merge rows.
    Failed(String),
}

/// A SQL statement that did not run.
enum SqlError {
    Client(Failure),
    Server(tonic::Status),
}

/// A statement GreptimeDB did not run: its code and message, or no endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementError {
    pub code: Option<u32>,
    pub message: String,
    pub unreachable: bool,
}

impl std::fmt::Display for StatementError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "{} (GreptimeDB code {code})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every endpoint is out of rotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("every GreptimeDB endpoint is down ({0})")]
pub struct AllDown(pub String);

/// One endpoint as the pool sees it (for tests and status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointState {
    pub addr: String,
    pub up: bool,
    pub failures: u64,
}

impl Endpoints {
    /// One client per endpoint of `cfg`, all up until a request says otherwise; starts the
    /// background probe (needs a Tokio runtime).
    pub fn connect(cfg: &GreptimeConfig) -> Result<Arc<Self>, GreptimeError> {
        let members = connect_all(cfg)?
            .into_iter()
            .map(|(addr, client, db)| Member {
                addr,
                client,
                db,
                down: Mutex::new(None),
                failures: AtomicU64::new(0),
            })
            .collect();
        let this = Arc::new(Self {
            members,
            next: AtomicUsize::new(0),
            cfg: cfg.clone(),
            shapes: Shapes::default(),
        });
        tokio::spawn(probe_loop(Arc::downgrade(&this)));
        Ok(this)
    }

    /// A Database to use now: the next endpoint in rotation.
    pub fn pick(&self) -> Result<Chosen, AllDown> {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let index = (start + i) % n;
            let m = &self.members[index];
            if lock(&m.down).is_none() {
                return Ok(Chosen {
                    index,
                    addr: m.addr.clone(),
                    db: m.db.clone(),
                });
            }
        }
        let why = self
            .members
            .iter()
            .filter_map(|m| {
                lock(&m.down)
                    .as_ref()
                    .map(|(_, w)| format!("{}: {w}", m.addr))
            })
            .collect::<Vec<_>>()
            .join("; ");
        Err(AllDown(why))
    }

    /// Why no endpoint can be picked now, without moving the rotation on; None when one can.
    pub fn all_down(&self) -> Option<AllDown> {
        self.first_up().err()
    }

    /// The first endpoint in rotation, in the order given: where DDL goes, so that every
    /// statement of the start-up runs on one frontend.
    fn first_up(&self) -> Result<Chosen, AllDown> {
        self.members
            .iter()
            .enumerate()
            .find(|(_, m)| lock(&m.down).is_none())
            .map(|(index, m)| Chosen {
                index,
                addr: m.addr.clone(),
                db: m.db.clone(),
            })
            .ok_or_else(|| self.pick().err().unwrap_or_else(|| AllDown(String::new())))
    }

    /// Takes the endpoint out of rotation (logged once, by name, when there are several).
    pub fn mark_down(&self, chosen: &Chosen, why: &str) {
        let m = &self.members[chosen.index];
        m.failures.fetch_add(1, Ordering::Relaxed);
        let mut down = lock(&m.down);
        if down.is_none() {
            *down = Some((Instant::now(), why.to_owned()));
            if self.members.len() > 1 {
                warn!(
                    "GreptimeDB endpoint {} is down: {why}; out of rotation until it answers again",
                    m.addr
                );
            }
        }
    }

    /// Puts the endpoint back into rotation (logged once when there are several).
    fn mark_up(&self, index: usize) {
        let m = &self.members[index];
        if let Some((since, _)) = lock(&m.down).take()
            && self.members.len() > 1
        {
            info!(
                "GreptimeDB endpoint {} answers again after {:.1}s; back in rotation",
                m.addr,
                since.elapsed().as_secs_f64()
            );
        }
    }

    /// Whether some endpoint is in rotation.
    pub fn any_up(&self) -> bool {
        self.members.iter().any(|m| lock(&m.down).is_none())
    }

    pub fn states(&self) -> Vec<EndpointState> {
        self.members
            .iter()
            .map(|m| EndpointState {
                addr: m.addr.clone(),
                up: lock(&m.down).is_none(),
                failures: m.failures.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// One insert, within `budget`: sent to an endpoint in rotation; when that endpoint
    /// fails (connection, timeout), it leaves the rotation and the next one gets the
    /// request. Errs with a retriable failure only when every endpoint is down or GreptimeDB
    /// itself asked for a retry (overloaded, region not ready, …).
    /// Inserts into `database` (`None`: the run's own), failing over between endpoints.
    /// Columns are declared with the roles (tag/field) the table has ([`Shapes`]): a
    /// request refused for a role it declared otherwise is sent again, fitted.
    pub async fn insert(
        &self,
        database: Option<&str>,
        request: &RowInsertRequests,
        hints: &[(&str, &str)],
        budget: Duration,
    ) -> Result<u32, Failure> {
        let started = Instant::now();
        let mut fitted = self.shapes.apply(request);
        loop {
            let req = fitted.as_ref().unwrap_or(request);
            let left = budget.saturating_sub(started.elapsed());
            match self.insert_as_declared(database, req, hints, left).await {
                Err(Failure::Fatal { kind, message }) => {
                    if !self.shapes.learn(req, &message) {
                        return Err(Failure::Fatal { kind, message });
                    }
                    fitted = self.shapes.apply(request);
                }
                other => return other,
            }
        }
    }

    async fn insert_as_declared(
        &self,
        database: Option<&str>,
        request: &RowInsertRequests,
        hints: &[(&str, &str)],
        budget: Duration,
    ) -> Result<u32, Failure> {
        let started = Instant::now();
        // Each endpoint at most once per insert.
        for _ in 0..self.members.len() {
            let chosen = self.pick().map_err(|e| Failure::Retry {
                why: e.to_string(),
                endpoint: false,
            })?;
            let left = budget.saturating_sub(started.elapsed());
            let db = match database {
                Some(name) if name != self.cfg.database => {
                    connect::database(&self.cfg, name, &self.members[chosen.index].client)
                }
                _ => chosen.db.clone(),
            };
            let res =
                tokio::time::timeout(left, db.insert_with_hints(request.clone(), hints)).await;
            let failure = match res {
                Ok(Ok(affected)) => {
                    self.mark_up(chosen.index);
                    return Ok(affected);
                }
                Ok(Err(e)) => classify(&e, &self.cfg),
                // Cut short by the caller's budget (the shutdown deadline), not the
                // endpoint's fault, unless it had the whole request timeout.
                Err(_) => Failure::Retry {
                    why: format!("no answer within {left:?}"),
                    endpoint: left >= REQUEST_TIMEOUT,
                },
            };
            match failure {
                Failure::Retry {
                    why,
                    endpoint: true,
                } => {
                    self.mark_down(&chosen, &why);
                    if !self.any_up() || started.elapsed() >= budget {
                        return Err(Failure::Retry {
                            why,
                            endpoint: true,
                        });
                    }
                }
                other => return Err(other),
            }
        }
        Err(Failure::Retry {
            why: self.pick().err().map_or_else(
                || "every endpoint failed this request".to_owned(),
                |e| e.to_string(),
            ),
            endpoint: true,
        })
    }

    /// Checks every endpoint at once: that it answers, and that the database exists and
    /// takes our credentials. Per endpoint: Ok, or what went wrong (an endpoint that does
    /// not answer is taken out of rotation).
    pub async fn check(&self, timeout: Duration) -> Vec<(String, Result<(), Failure>)> {
        let checks = (0..self.members.len()).map(|index| async move {
            let m = &self.members[index];
            let res = match tokio::time::timeout(timeout, self.check_database(index)).await {
                Ok(res) => res,
                Err(_) => Err(Failure::Retry {
                    why: format!("no answer within {timeout:?}"),
                    endpoint: true,
                }),
            };
            if let Err(Failure::Retry {
                why,
                endpoint: true,
            }) = &res
            {
                let chosen = Chosen {
                    index,
                    addr: m.addr.clone(),
                    db: m.db.clone(),
                };
                self.mark_down(&chosen, why);
            }
            (m.addr.clone(), res)
        });
        futures_join_all(checks).await
    }

    /// `USE <database>` over the gRPC SQL call: GreptimeDB answers 1004 "Failed to find
    /// schema" for an unknown database, and for a known one runs it and refuses to return
    /// its (empty) result over this call: Unimplemented "GreptimeDatabase::Handle for
    /// query", without a greptime code. It passes authentication first, like an insert. (An
    /// empty insert does not look the database up.)
    async fn check_database(&self, index: usize) -> Result<(), Failure> {
        self.sql(index, use_statement(&self.cfg.database))
            .await
            .map_err(|e| match e {
                SqlError::Client(f) => f,
                SqlError::Server(s) => classify_status(&s, &self.cfg),
            })
    }

    /// One SQL statement on endpoint `index`, in the run's database. A statement whose
    /// result cannot come back over this call (Unimplemented without a greptime code) ran.
    async fn sql(&self, index: usize, statement: String) -> Result<(), SqlError> {
        let m = &self.members[index];
        let (_, channel) = m
            .client
            .find_channel()
            .map_err(|e| SqlError::Client(classify(&e, &self.cfg)))?;
        let mut client = GreptimeDatabaseClient::new(channel);
        if let Some(c) = m.client.send_compression() {
            client = client.send_compressed(c);
        }
        if let Some(c) = m.client.accept_compression() {
            client = client.accept_compressed(c);
        }
        let request = GreptimeRequest {
            header: Some(RequestHeader {
                dbname: self.cfg.database.clone(),
                authorization: self.auth_header(),
                ..Default::default()
            }),
            request: Some(Request::Query(QueryRequest {
                query: Some(Query::Sql(statement)),
            })),
        };
        match client.handle(request).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::Unimplemented && greptime_code(&s).is_none() => Ok(()),
            Err(s) => Err(SqlError::Server(s)),
        }
    }

    /// Makes an existing table append-only (`ALTER TABLE … SET 'append_mode' = 'true'`,
    /// which GreptimeDB allows from false to true, and to the value it has): a table created
    /// without it — by the Go original, say — merges rows with equal tags and timestamp.
    /// A table that does not exist yet is created append-only by the first insert.
    pub async fn ensure_append_mode(&self, timeout: Duration) -> AppendMode {
        let Ok(chosen) = self.pick() else {
            return AppendMode::Failed("no endpoint is up".into());
        };
        let statement = format!(
            "ALTER TABLE \"{}\" SET 'append_mode' = 'true'",
            self.cfg.table.replace('"', "\"\"")
        );
        match tokio::time::timeout(timeout, self.sql(chosen.index, statement)).await {
            Err(_) => AppendMode::Failed(format!("no answer within {timeout:?}")),
            Ok(Ok(())) => AppendMode::Ensured,
            Ok(Err(SqlError::Server(s))) if greptime_code(&s) == Some(4001) => AppendMode::NoTable,
            Ok(Err(SqlError::Server(s))) => AppendMode::Failed(s.message().to_owned()),
            Ok(Err(SqlError::Client(f))) => AppendMode::Failed(match f {
                Failure::Retry { why, .. } => why,
                Failure::Fatal { message, .. } => message,
            }),
        }
    }

    /// One DDL statement, once, on the first endpoint in rotation; an endpoint that does
    /// not answer leaves the rotation and the next one gets the statement.
    pub async fn execute(&self, statement: &str, timeout: Duration) -> Result<(), StatementError> {
        let unreachable = |message: String| StatementError {
            code: None,
            message,
            unreachable: true,
        };
        for _ in 0..self.members.len() {
            let chosen = self.first_up().map_err(|e| unreachable(e.to_string()))?;
            let failure =
                match tokio::time::timeout(timeout, self.sql(chosen.index, statement.to_owned()))
                    .await
                {
                    Ok(Ok(())) => {
                        self.mark_up(chosen.index);
                        return Ok(());
                    }
                    Err(_) => Failure::Retry {
                        why: format!("no answer within {timeout:?}"),
                        endpoint: true,
                    },
                    Ok(Err(SqlError::Client(f))) => f,
                    Ok(Err(SqlError::Server(s))) => match classify_status(&s, &self.cfg) {
                        f @ Failure::Retry { endpoint: true, .. } => f,
                        _ => {
                            return Err(StatementError {
                                code: greptime_code(&s),
                                message: s.message().to_owned(),
                                unreachable: false,
                            });
                        }
                    },
                };
            match failure {
                Failure::Retry {
                    why,
                    endpoint: true,
                } => self.mark_down(&chosen, &why),
                Failure::Retry { why, .. } => {
                    return Err(StatementError {
                        code: None,
                        message: why,
                        unreachable: false,
                    });
                }
                Failure::Fatal { message, .. } => {
                    return Err(StatementError {
                        code: None,
                        message,
                        unreachable: false,
                    });
                }
            }
        }
        Err(unreachable(self.pick().err().map_or_else(
            || "no endpoint answered".to_owned(),
            |e| e.to_string(),
        )))
    }

    fn auth_header(&self) -> Option<AuthHeader> {
        self.cfg.username.as_ref().map(|username| AuthHeader {
            auth_scheme: Some(AuthScheme::Basic(Basic {
                username: username.clone(),
                password: self.cfg.password.clone().unwrap_or_default(),
            })),
        })
    }

    /// An empty insert to a down endpoint: any answer from GreptimeDB (even an error with a
    /// greptime code) means it is up again.
    async fn probe(&self, index: usize) {
        let m = &self.members[index];
        let empty = RowInsertRequests { inserts: vec![] };
        let res = tokio::time::timeout(PROBE_TIMEOUT, m.db.insert(empty)).await;
        let up = match res {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => !matches!(
                classify(&e, &self.cfg),
                Failure::Retry { endpoint: true, .. }
            ),
            Err(_) => false,
        };
        if up {
            self.mark_up(index);
        }
    }
}

/// The database part of a `--database` value, as the server reads the header: `cat-db` is
/// database `db` of catalog `cat`; names are lower-cased.
fn schema_of(dbname: &str) -> String {
    dbname
        .split_once('-')
        .map_or(dbname, |(_, schema)| schema)
        .to_lowercase()
}

/// `USE "<database>"`, quoted (some names are keywords).
pub fn use_statement(dbname: &str) -> String {
    format!("USE \"{}\"", schema_of(dbname).replace('"', "\"\""))
}

/// Probes the down endpoints every [`PROBE_INTERVAL`] until the pool is dropped.
async fn probe_loop(pool: Weak<Endpoints>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(pool) = pool.upgrade() else { return };
        let down: Vec<usize> = (0..pool.members.len())
            .filter(|&i| lock(&pool.members[i].down).is_some())
            .collect();
        futures_join_all(down.into_iter().map(|i| pool.probe(i))).await;
    }
}

/// Runs futures concurrently on this task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.map(|f| Some(Box::pin(f))).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, fut) in out.iter_mut().zip(futures.iter_mut()) {
            if let Some(f) = fut {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *slot = Some(v);
                        *fut = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asking whether every endpoint is down must not move the rotation on: the write path
    /// asks before each batch, and a rotation moved by it sent every batch to one endpoint.
    #[tokio::test]
    async fn asking_whether_all_are_down_leaves_the_rotation_be() {
        let cfg = GreptimeConfig::new(
            vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            "packet_data",
        );
        let pool = Endpoints::connect(&cfg).unwrap();
        let mut picked = Vec::new();
        for _ in 0..4 {
            assert_eq!(pool.all_down(), None);
            picked.push(pool.pick().unwrap().index);
        }
        assert_eq!(picked, [0, 1, 0, 1]);
        for _ in 0..2 {
            let chosen = pool.pick().unwrap();
            pool.mark_down(&chosen, "refused");
        }
        let down = pool.all_down().expect("both are down");
        assert!(
            down.to_string()
                .starts_with("every GreptimeDB endpoint is down"),
            "{down}"
        );
    }

    #[test]
    fn use_statement_names_the_database_as_the_server_reads_it() {
        assert_eq!(use_statement("public"), "USE \"public\"");
        assert_eq!(use_statement("Flows"), "USE \"flows\"");
        assert_eq!(use_statement("greptime-netflows"), "USE \"netflows\"");
        assert_eq!(use_statement("a\"b"), "USE \"a\"\"b\"");
    }
}
