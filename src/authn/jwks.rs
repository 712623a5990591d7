//! Verification keys for JWTs: an HMAC secret, a JWKS file (re-read when it changes), or a
//! remote JWKS (`jwks_uri`) cached for a TTL.
//!
//! Remote fetches are bounded: every fetch, whatever triggered it (first use, TTL expiry, an
//! unknown `kid`), waits for the cooldown since the previous *attempt*, and concurrent callers
//! share one fetch. A flood of tokens with random `kid`s therefore causes at most one fetch per
//! cooldown. A failed fetch (error status, time-out, unparsable body) keeps the last good set.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::file::WatchedFile;
use super::metrics::AuthnMetrics;
use crate::jose::Alg;
use crate::jose::keys::{self, KeyMaterial, KeyRules, PublicKey};

/// Largest JWKS document read.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// A set of verification keys.
pub struct KeySet {
    pub(crate) keys: Vec<PublicKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl KeySet {
    /// Parses a JWK Set (or one JWK, or a PEM public key) under [`KeyRules::STRICT`]:
    /// symmetric (`oct`) keys and RSA keys under 2048 bits are dropped from a set (HMAC is only
    /// ever verified with a configured secret), and refused when they are the only key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let keys = keys::parse(text, KeyRules::STRICT).map_err(|e| e.to_string())?;
        Ok(Self { keys })
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The keys to try for a token: the key named by `kid` if the token has one (it must also
    /// allow `alg`); for a `kid` no key carries, the keys published without a `kid`; without a
    /// `kid`, every key that allows `alg`.
    pub(crate) fn candidates<'a>(&'a self, kid: Option<&str>, alg: Alg) -> Vec<&'a KeyMaterial> {
        let fits = |k: &&PublicKey| k.allows(alg);
        match kid {
            Some(kid) if self.has_kid(kid) => self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .filter(fits)
                .map(|k| &k.material)
                .collect(),
            // A kid that no key carries may still match a key published without one.
            Some(_) => self
                .keys
                .iter()
                .filter(|k| k.kid.is_none())
                .filter(fits)
                .map(|k| &k.material)
                .collect(),
            None => self.keys.iter().filter(fits).map(|k| &k.material).collect(),
        }
    }
}

/// Where a verifier's keys come from.
pub enum KeySource {
    /// An HMAC secret (`secret_env`).
    Secret(Vec<u8>),
    /// A fixed key set (e.g. `portcullis token verify --jwks FILE`).
    Static(Arc<KeySet>),
    File(WatchedFile<KeySet>),
    Remote(RemoteJwks),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Secret(_) => f.write_str("Secret(<redacted>)"),
            KeySource::Static(s) => write!(f, "Static({} keys)", s.keys.len()),
            KeySource::File(w) => write!(f, "File({})", w.path().display()),
            KeySource::Remote(r) => write!(f, "Remote({})", r.url),
        }
    }
}

impl KeySource {
    pub fn file(path: &Path) -> Result<Self, String> {
        Ok(KeySource::File(WatchedFile::open(path, KeySet::parse)?))
    }
}

/// The result of a key look-up.
pub(crate) enum Keys {
    Secret(KeyMaterial),
    Set(Arc<KeySet>),
    /// No key set could be had (never fetched successfully).
    Unavailable,
}

impl KeySource {
    /// The key set in use now, without fetching or refreshing (`None` for a secret, which never
    /// changes). Cached verifications are valid only while this stays the same set.
    pub(crate) fn current_set(&self) -> Option<Arc<KeySet>> {
        match self {
            KeySource::Secret(_) => None,
            KeySource::Static(s) => Some(s.clone()),
            KeySource::File(w) => Some(w.get()),
            KeySource::Remote(r) => r.current.load_full().map(|f| f.set.clone()),
        }
    }

    /// The keys to verify a token whose header names `kid`.
    pub(crate) async fn keys(&self, kid: Option<&str>) -> Keys {
        match self {
            KeySource::Secret(s) => Keys::Secret(KeyMaterial::Secret(s.clone())),
            KeySource::Static(s) => Keys::Set(s.clone()),
            KeySource::File(w) => Keys::Set(w.get()),
            KeySource::Remote(r) => match r.keys(kid).await {
                Some(set) => Keys::Set(set),
                None => Keys::Unavailable,
            },
        }
    }
}

struct Fetched {
    set: Arc<KeySet>,
    at: Instant,
}

/// A remote JWK Set.
pub struct RemoteJwks {
    url: String,
    client: reqwest::Client,
    ttl: Duration,
    cooldown: Duration,
    current: ArcSwapOption<Fetched>,
    /// When the last fetch was attempted; the lock also makes concurrent callers share a fetch.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    fetches: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    metrics: Option<Arc<AuthnMetrics>>,
}

impl RemoteJwks {
    pub fn new(
        url: String,
        ttl: Duration,
        cooldown: Duration,
        timeout: Duration,
    ) -> Result<Self, String> {
        let client = crate::services::http_client(timeout).map_err(|e| e.to_string())?;
        Ok(Self {
            url,
            client,
            ttl,
            cooldown,
            current: ArcSwapOption::empty(),
            last_attempt: tokio::sync::Mutex::new(None),
            fetches: Arc::new(AtomicU64::new(0)),
            failures: Arc::new(AtomicU64::new(0)),
            metrics: None,
        })
    }

    /// Counts fetches in `metrics` too.
    pub fn with_metrics(mut self, metrics: Arc<AuthnMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Fetch attempts so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Failed fetch attempts so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    async fn keys(&self, kid: Option<&str>) -> Option<Arc<KeySet>> {
        let current = self.current.load_full();
        match &current {
            Some(f) if kid.is_none_or(|k| f.set.has_kid(k)) => {
                if f.at.elapsed() >= self.ttl {
                    // Stale but usable: one caller refreshes, the others go on with it.
                    if let Ok(guard) = self.last_attempt.try_lock() {
                        self.fetch_if_allowed(guard).await;
                    }
                    return self.current.load_full().map(|f| f.set.clone());
                }
                Some(f.set.clone())
            }
            _ => {
                // Never fetched, or an unknown kid: wait for (or make) a fetch.
                let guard = self.last_attempt.lock().await;
                self.fetch_if_allowed(guard).await;
                self.current.load_full().map(|f| f.set.clone())
            }
        }
    }

    async fn fetch_if_allowed(&self, mut last: tokio::sync::MutexGuard<'_, Option<Instant>>) {
        if last.is_some_and(|t| t.elapsed() < self.cooldown) {
            return;
        }
        *last = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match fetch_text(&self.client, &self.url, MAX_JWKS_BYTES)
            .await
            .and_then(|text| KeySet::parse(&text))
        {
            Ok(set) => {
                if let Some(m) = &self.metrics {
                    m.jwks_fetch(true);
                }
                tracing::info!(jwks.uri = %self.url, jwks.keys = set.keys.len(), "JWKS fetched");
                self.current.store(Some(Arc::new(Fetched {
                    set: Arc::new(set),
                    at: Instant::now(),
                })));
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.jwks_fetch(false);
                }
                tracing::warn!(jwks.uri = %self.url, error = %e, "JWKS fetch failed; keeping the last good key set");
            }
        }
    }
}

/// GETs `url` and returns its body as text, refusing non-200 answers and bodies over `max`.
pub async fn fetch_text(client: &reqwest::Client, url: &str, max: usize) -> Result<String, String> {
    let mut resp = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(format!("HTTP status {}", resp.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading body: {e}"))?
    {
        if body.len() + chunk.len() > max {
            return Err(format!("body larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())
}
