//! Pod names and namespaces by pod UID, for `--kube-metadata`. The index is shared: one task
//! keeps it current, the stages look pods up in it without waiting (a miss is `None`).
//!
//! The task ([`start`]) reads this node's pods from one of two places:
//! - `api`: the API server (`KUBERNETES_SERVICE_HOST`/`_PORT`), pods with
//!   `spec.nodeName=NODE`: a list, then a watch from its resource version, so that a pod
//!   started on the node is named within a second and the API server sends only changes (a
//!   fleet of hundreds of nodes polling full lists would cost it far more). The watch ends
//!   after [`WATCH_SECONDS`] or on an error (410 Gone), and a new list starts the next one.
//! - `kubelet`: the kubelet's own `/pods` on port 10250, which has no watch: a list every
//!   `--kube-refresh`.
//!
//! Every failure (no token, TLS, 401/403, bad JSON, a timeout) is counted by reason
//! (`flowmetrix_kube_errors_total`) and logged in one line: a warning for the first of its
//! kind in an outage, a debug line for the ones like it after, one line at recovery. The task
//! retries with a growing delay (1 s to 1 min, jittered) and the index keeps the last good
//! list meanwhile.

mod error;
mod http;
mod index;
mod pods;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use http_body_util::BodyExt as _;
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tracing::{debug, info, warn};

use crate::metrics::{Counters, KubeCounters};
pub use error::KubeError;
use http::{Client, Endpoint};
pub use index::{PodIndex, PodMeta};
use pods::{Change, PodList, Pods, WatchEvent};

/// Where the ServiceAccount's token and the cluster's CA are mounted in a pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The kubelet's authenticated port.
pub const KUBELET_PORT: u16 = 10250;

/// How long one watch of the API server lasts before a fresh list (the server's own default
/// is 30 to 60 minutes; shorter bounds how long a missed event could go unnoticed).
pub const WATCH_SECONDS: u32 = 300;

/// Where the pod list comes from (`--kube-metadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeSource {
    /// The kubelet's `/pods` (needs `nodes/proxy` get), polled.
    Kubelet,
    /// The API server: list and watch of this node's pods (needs pods list and watch).
    Api,
}

/// `--kube-metadata` and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    pub source: KubeSource,
    /// `https://host:port` of the kubelet or the API server (`http://` for a local proxy).
    pub url: String,
    /// This node's name, as Kubernetes knows it (`spec.nodeName`).
    pub node: String,
    /// The bearer token, re-read for each request; `None`: no `Authorization` header.
    pub token_file: Option<PathBuf>,
    /// The CA that signed the server's certificate (required for `https://`).
    pub ca_file: Option<PathBuf>,
    /// `kubelet`: how often the list is read; `api`: the least time between two lists.
    pub refresh: Duration,
    /// For connecting and for each answer (a list's whole body; a watch's head).
    pub timeout: Duration,
}

/// Starts the task that keeps `index` current from the pod list `settings` name, until
/// `shutdown` turns true (or its sender is gone). It never blocks a lookup: a pod not yet
/// listed is a miss.
pub fn start(
    settings: KubeSettings,
    index: PodIndex,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    counters
        .kube
        .on
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(async move {
        tokio::select! {
            () = keep(&settings, &index, &counters.kube) => {}
            _ = shutdown.wait_for(|&stop| stop) => {}
        }
    })
}

/// Reads the pod list again and again; a failure waits a growing delay.
async fn keep(settings: &KubeSettings, index: &PodIndex, counters: &KubeCounters) {
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(60))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    // The reason of the failures since the last good read, and how many: the first of a
    // kind is a warning, the ones like it after it are debug lines, the recovery one line.
    let mut failing: Option<(usize, u64)> = None;
    let mut client = None;
    loop {
        let started = Instant::now();
        match round(settings, &mut client, index, counters).await {
            Ok(()) => {
                if let Some((_, failures)) = failing.take() {
                    info!(
                        "--kube-metadata: the pod list is read again after {failures} failed attempts ({} pods)",
                        Counters::get(&counters.pods)
                    );
                }
                delays = backoff();
                tokio::time::sleep_until(started + settings.refresh).await;
            }
            Err(e) => {
                let reason = e.reason();
                Counters::add(&counters.errors[reason], 1);
                client = None; // made afresh: the CA or the endpoint may have changed
                let delay = delays.next().unwrap_or(Duration::from_secs(60));
                let message = format!(
                    "--kube-metadata: cannot read the pod list from {}: {e}; keeping the last one ({} pods), retrying in {delay:.1?}",
                    settings.url,
                    Counters::get(&counters.pods),
                );
                match &mut failing {
                    Some((last, failures)) if *last == reason => {
                        *failures += 1;
                        debug!("{message}");
                    }
                    _ => {
                        let failures = failing.map_or(0, |(_, n)| n);
                        failing = Some((reason, failures + 1));
                        warn!("{message}");
                    }
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One list (and, from the API server, one watch after it).
async fn round(
    settings: &KubeSettings,
    client: &mut Option<Client>,
    index: &PodIndex,
    counters: &KubeCounters,
) -> Result<(), KubeError> {
    let client = match client {
        Some(c) => c,
        None => client.insert(Client::new(
            Endpoint::parse(&settings.url).map_err(KubeError::Http)?,
            settings.ca_file.as_deref(),
            settings.token_file.clone(),
            settings.timeout,
        )?),
    };
    let pods_path = match settings.source {
        KubeSource::Kubelet => "/pods".to_owned(),
        KubeSource::Api => format!(
            "/api/v1/pods?fieldSelector=spec.nodeName%3D{}",
            settings.node
        ),
    };
    let body = client.get_all(&pods_path).await?;
    let list: PodList =
        serde_json::from_slice(&body).map_err(|e| KubeError::Json(e.to_string()))?;
    let mut pods = list.pods();
    publish(index, &pods, counters);
    debug!(
        "--kube-metadata: {} pods on {} from {}",
        pods.len(),
        settings.node,
        client.endpoint().authority()
    );
    let (KubeSource::Api, Some(version)) = (settings.source, list.metadata.resource_version) else {
        return Ok(());
    };
    let watch_path = format!(
        "{pods_path}&watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}&resourceVersion={version}"
    );
    let body = client.get(&watch_path).await?;
    let limit = Duration::from_secs(u64::from(WATCH_SECONDS)) + client.timeout;
    match tokio::time::timeout(limit, follow(body, &mut pods, index, counters)).await {
        Ok(result) => result,
        Err(_) => Err(KubeError::Timeout(limit)),
    }
}

/// Applies a watch's events to `pods` and the index as they come, until the server ends it.
async fn follow(
    mut body: hyper::body::Incoming,
    pods: &mut Pods,
    index: &PodIndex,
    counters: &KubeCounters,
) -> Result<(), KubeError> {
    let mut version = None;
    let mut line = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| KubeError::Http(format!("the watch broke: {e}")))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let mut changed = false;
        for piece in data.split_inclusive(|&b| b == b'\n') {
            line.extend_from_slice(piece);
            if line.len() > http::MAX_BODY {
                return Err(KubeError::Json("a watch event of over 64 MiB".into()));
            }
            if line.last() != Some(&b'\n') {
                continue;
            }
            let event = std::mem::take(&mut line);
            if event.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let event: WatchEvent =
                serde_json::from_slice(&event).map_err(|e| KubeError::Json(e.to_string()))?;
            match event.apply(pods, &mut version) {
                Change::Pods => changed = true,
                Change::Nothing => {}
                Change::Relist(why) => {
                    if changed {
                        publish(index, pods, counters);
                    }
                    debug!("--kube-metadata: {why}; listing again");
                    return Ok(());
                }
            }
        }
        if changed {
            publish(index, pods, counters);
        }
    }
    Ok(())
}

/// `pods` becomes what lookups see.
fn publish(index: &PodIndex, pods: &Pods, counters: &KubeCounters) {
    index.replace(pods.clone());
    Counters::add(&counters.updates, 1);
    Counters::set(&counters.pods, pods.len() as u64);
}
