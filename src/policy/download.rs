//! `bundles.<name>`: download a bundle from a service, activate it, and keep polling.
//!
//! Each configured bundle gets one [`Downloader`]. A poll is a GET of
//! `services.<service>.url` + `/` + `resource` with the service's headers and bearer token, and
//! `If-None-Match` with the ETag of the last activated download:
//!
//! - `304 Not Modified`, or a `200` whose body is byte-for-byte the active archive (servers
//!   without ETags, such as `python3 -m http.server`): nothing changes, nothing recompiles;
//! - `200`: the body (at most `size_limit_bytes`) is parsed, verified and activated as a whole;
//!   on success its ETag is kept, and with `persist: true` the archive is written to
//!   `<persistence_directory>/bundles/<name>/bundle.tar.gz` (atomically, by rename);
//! - anything else, or a bundle that is refused: the error is recorded in the bundle's
//!   [`BundleStatus`], the previous revision keeps serving, and the next poll comes sooner,
//!   backing off exponentially (1 s, 2 s, 4 s ... up to `max_delay_seconds`).
//!
//! After a successful poll the next one comes after a random delay between `min_delay_seconds`
//! and `max_delay_seconds`, so that a fleet does not poll in step. At start, a persisted bundle
//! is activated before the first download, so a sidecar can serve while the bundle server is
//! down.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::PolicyStore;
use crate::bundle::config::BundleConfig;
use crate::bundle::{Bundle, BundleError, Limits, Verification};
use crate::services::Service;

/// Why one poll failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("request to {url} failed: {message}")]
    Request { url: String, message: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("refused: {0}")]
    Bundle(#[from] BundleError),
    #[error("not activated: {0}")]
    Activate(String),
}

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// 304: the active bundle is current.
    NotModified,
    /// A new download was activated as this snapshot revision.
    Activated { revision: String, snapshot: u64 },
}

/// The state of one configured bundle, for status reporting.
#[derive(Debug, Clone, Default)]
pub struct BundleStatus {
    pub name: String,
    /// The manifest revision of the active download, if any.
    pub active_revision: Option<String>,
    pub etag: Option<String>,
    pub last_request: Option<SystemTime>,
    pub last_successful_request: Option<SystemTime>,
    pub last_successful_download: Option<SystemTime>,
    pub last_successful_activation: Option<SystemTime>,
    /// The last poll's error; `None` once a poll succeeds.
    pub last_error: Option<String>,
    /// Consecutive failed polls.
    pub failures: u32,
    /// Polls that activated a download, found the bundle current, or failed (for metrics).
    pub polls_activated: u64,
    pub polls_not_modified: u64,
    pub polls_failed: u64,
}

/// Shared status of every configured bundle.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<Mutex<BTreeMap<String, BundleStatus>>>);

impl StatusBoard {
    /// A copy of every bundle's status.
    pub fn all(&self) -> Vec<BundleStatus> {
        self.0
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut BundleStatus)) {
        if let Ok(mut map) = self.0.lock() {
            let entry = map.entry(name.to_string()).or_insert_with(|| BundleStatus {
                name: name.to_string(),
                ..Default::default()
            });
            f(entry);
        }
    }
}

impl crate::telemetry::metrics::BundleStats for StatusBoard {
    fn bundles(&self) -> Vec<crate::telemetry::metrics::BundleCounters> {
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .ok()
        };
        self.all()
            .into_iter()
            .map(|s| crate::telemetry::metrics::BundleCounters {
                activated: s.polls_activated,
                not_modified: s.polls_not_modified,
                failed: s.polls_failed,
                consecutive_failures: u64::from(s.failures),
                last_activation: s.last_successful_activation.and_then(unix),
                name: s.name,
            })
            .collect()
    }
}

/// Downloads one configured bundle.
#[derive(Debug, Clone)]
pub struct Downloader {
    name: String,
    url: String,
    service: Service,
    config: BundleConfig,
    verification: Option<Verification>,
    limits: Limits,
    persist_file: Option<PathBuf>,
    client: reqwest::Client,
    store: Arc<PolicyStore>,
    status: StatusBoard,
    etag: Arc<Mutex<Option<String>>>,
    /// SHA-256 of the active archive.
    active_digest: Arc<Mutex<Option<[u8; 32]>>>,
}

/// What one downloader fetches and how (composed from the config by
/// `Config::bundle_downloaders`).
#[derive(Debug, Clone)]
pub struct DownloadSpec {
    pub name: String,
    pub url: String,
    pub service: Service,
    pub config: BundleConfig,
    pub verification: Option<Verification>,
    pub limits: Limits,
    pub persist_file: Option<PathBuf>,
    pub client: reqwest::Client,
}

impl Downloader {
    /// A downloader activating into `store`.
    pub fn new(spec: DownloadSpec, store: Arc<PolicyStore>) -> Self {
        Self {
            status: store.bundle_status().clone(),
            name: spec.name,
            url: spec.url,
            service: spec.service,
            config: spec.config,
            verification: spec.verification,
            limits: spec.limits,
            persist_file: spec.persist_file,
            client: spec.client,
            store,
            etag: Arc::new(Mutex::new(None)),
            active_digest: Arc::new(Mutex::new(None)),
        }
    }

    /// The bundle's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL it downloads.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Activates the persisted copy, if there is one. Returns its revision.
    pub async fn load_persisted(&self) -> Option<String> {
        let path = self.persist_file.clone()?;
        let bytes = tokio::fs::read(&path).await.ok()?;
        match self.activate_bytes(bytes, None).await {
            Ok(PollOutcome::Activated { revision, .. }) => {
                self.status.update(&self.name, |s| {
                    s.last_successful_activation = Some(SystemTime::now());
                    s.active_revision = Some(revision.clone());
                });
                tracing::info!(bundle = %self.name, revision = %revision, path = %path.display(), "activated the persisted bundle");
                Some(revision)
            }
            Ok(PollOutcome::NotModified) => None,
            Err(e) => {
                tracing::warn!(bundle = %self.name, error = %e, path = %path.display(), "the persisted bundle was not activated");
                None
            }
        }
    }

    /// One conditional GET, and the activation of what it brings.
    pub async fn poll_once(&self) -> Result<PollOutcome, DownloadError> {
        let result = self.fetch_and_activate().await;
        let now = SystemTime::now();
        self.status.update(&self.name, |s| {
            s.last_request = Some(now);
            match &result {
                Ok(outcome) => {
                    s.last_successful_request = Some(now);
                    s.last_error = None;
                    s.failures = 0;
                    match outcome {
                        PollOutcome::Activated { .. } => s.polls_activated += 1,
                        PollOutcome::NotModified => s.polls_not_modified += 1,
                    }
                    if let PollOutcome::Activated { revision, .. } = outcome {
                        s.last_successful_download = Some(now);
                        s.last_successful_activation = Some(now);
                        s.active_revision = Some(revision.clone());
                        s.etag = self.etag.lock().ok().and_then(|e| e.clone());
                    }
                }
                Err(e) => {
                    s.last_error = Some(e.to_string());
                    s.failures = s.failures.saturating_add(1);
                    s.polls_failed += 1;
                }
            }
        });
        result
    }

    async fn fetch_and_activate(&self) -> Result<PollOutcome, DownloadError> {
        let request_error = |e: reqwest::Error| DownloadError::Request {
            url: self.url.clone(),
            message: error_chain(&e),
        };
        let mut request = self.client.get(&self.url);
        for (k, v) in &self.service.headers {
            request = request.header(k, v);
        }
        if let Some(bearer) = self
            .service
            .credentials
            .as_ref()
            .and_then(|c| c.bearer.as_ref())
        {
            let value = bearer
                .header_value()
                .map_err(|e| DownloadError::Credentials(e.to_string()))?;
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let etag = self.etag.lock().ok().and_then(|e| e.clone());
        if let Some(etag) = &etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let mut response = request.send().await.map_err(request_error)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(PollOutcome::NotModified);
        }
        if status != reqwest::StatusCode::OK {
            return Err(DownloadError::Status {
                url: self.url.clone(),
                status: status.as_u16(),
            });
        }
        let new_etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let max = self.limits.max_archive_bytes;
        if response.content_length().is_some_and(|n| n > max) {
            return Err(
                BundleError::TooLarge(format!("the archive is larger than {max} bytes")).into(),
            );
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(BundleError::TooLarge(format!(
                    "the archive is larger than {max} bytes"
                ))
                .into());
            }
            body.extend_from_slice(&chunk);
        }
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&body).into();
        let unchanged = self
            .active_digest
            .lock()
            .is_ok_and(|d| d.as_ref() == Some(&digest));
        if unchanged {
            if let Ok(mut slot) = self.etag.lock() {
                *slot = new_etag;
            }
            return Ok(PollOutcome::NotModified);
        }
        let outcome = self.activate_bytes(body.clone(), new_etag.clone()).await?;
        if let Ok(mut slot) = self.etag.lock() {
            *slot = new_etag;
        }
        if let Some(path) = &self.persist_file
            && let Err(e) = persist(path, &body).await
        {
            tracing::warn!(bundle = %self.name, error = %e, path = %path.display(), "cannot persist the bundle");
        }
        Ok(outcome)
    }

    async fn activate_bytes(
        &self,
        bytes: Vec<u8>,
        etag: Option<String>,
    ) -> Result<PollOutcome, DownloadError> {
        let name = self.name.clone();
        let verification = self.verification.clone();
        let limits = self.limits;
        let store = self.store.clone();
        // Decompression, verification and compilation are CPU work: off the async workers.
        let joined = tokio::task::spawn_blocking(move || {
            let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&bytes).into();
            let mut bundle = Bundle::from_tar_gz(&name, &bytes, verification.as_ref(), &limits)
                .map_err(DownloadError::Bundle)?;
            bundle.etag = etag;
            let revision = bundle.revision().to_string();
            let snapshot = store
                .activate(bundle)
                .map_err(|e| DownloadError::Activate(e.to_string()))?;
            Ok((PollOutcome::Activated { revision, snapshot }, digest))
        })
        .await;
        let (outcome, digest) =
            joined.unwrap_or_else(|e| Err(DownloadError::Activate(e.to_string())))?;
        if let Ok(mut slot) = self.active_digest.lock() {
            *slot = Some(digest);
        }
        Ok(outcome)
    }

    /// Polls until the task is dropped or aborted: the persisted copy first, then downloads on
    /// the polling schedule, backing off after failures.
    pub async fn run(self) {
        self.load_persisted().await;
        let mut failures: u32 = 0;
        loop {
            match self.poll_once().await {
                Ok(PollOutcome::Activated { revision, snapshot }) => {
                    failures = 0;
                    tracing::info!(bundle = %self.name, revision = %revision, snapshot, "bundle activated");
                }
                Ok(PollOutcome::NotModified) => {
                    failures = 0;
                    tracing::debug!(bundle = %self.name, "bundle not modified");
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::error!(bundle = %self.name, url = %self.url, error = %e, failures, "bundle download failed; the active revision keeps serving");
                }
            }
            let delay = if failures == 0 {
                poll_delay(
                    self.config.polling.min_delay_seconds,
                    self.config.polling.max_delay_seconds,
                    random_unit(),
                )
            } else {
                backoff_delay(failures, self.config.polling.max_delay_seconds)
            };
            tokio::time::sleep(delay).await;
        }
    }
}

/// The wait after a successful poll: uniformly between min and max (`unit` in [0, 1)).
pub fn poll_delay(min_seconds: u64, max_seconds: u64, unit: f64) -> Duration {
    let min = min_seconds as f64;
    let max = (max_seconds.max(min_seconds)) as f64;
    Duration::from_secs_f64(min + (max - min) * unit.clamp(0.0, 1.0))
}

/// The wait after `failures` consecutive failures: 1 s, 2 s, 4 s ... capped at `max_seconds`.
pub fn backoff_delay(failures: u32, max_seconds: u64) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let secs = (1u64 << exp).min(max_seconds.max(1));
    Duration::from_secs(secs)
}

fn random_unit() -> f64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let n = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    f64::from(n) / (f64::from(u32::MAX) + 1.0)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn persist(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let secs: Vec<u64> = (1..=8).map(|f| backoff_delay(f, 20).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 20, 20, 20]);
        assert_eq!(backoff_delay(1000, 120), Duration::from_secs(120));
    }

    #[test]
    fn poll_delay_stays_within_bounds() {
        assert_eq!(poll_delay(10, 20, 0.0), Duration::from_secs(10));
        assert_eq!(poll_delay(10, 20, 1.0), Duration::from_secs(20));
        for _ in 0..100 {
            let d = poll_delay(10, 20, random_unit());
            assert!(d >= Duration::from_secs(10) && d <= Duration::from_secs(20));
        }
    }
}
