//! Outbound calls that authenticate a request (OAuth introspection, external validators): one
//! bounded POST, and a cache of answers with one call in flight per credential.
//!
//! Every call has a total timeout, follows no redirects (an answer other than 200 refuses), and
//! reads at most [`MAX_RESPONSE_BYTES`]. Errors are described by their kind, never with the URL
//! (which could carry user information) or anything the caller sent.
//!
//! Each method's endpoint has at most `max_concurrent` calls in flight ([`Limit`]), so a flood
//! of distinct credentials (each a cache miss) cannot open unbounded connections: as many more
//! wait up to the call's timeout for a slot, and the rest are refused at once (429
//! `too_many_requests`, not cached). The URL must be `https` unless its host is loopback or the
//! method says `allow_insecure_http: true` ([`check_url`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use super::Refused;
use super::limit::Slots;
use crate::invalid::Invalid;
use crate::telemetry::labels::Refusal;

/// Largest answer read from an introspection endpoint or a validator.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How long a definitive refusal (an inactive token, a validator's "no") is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// Default `max_concurrent`: calls in flight to one method's endpoint.
pub(crate) fn default_max_concurrent() -> usize {
    64
}

/// The most `max_concurrent` may be.
const MAX_CONCURRENT: usize = 4096;

/// An http(s) URL without user information (credentials come from the environment or a file),
/// `https` unless its host is loopback (`localhost`, `127.0.0.0/8`, `[::1]`) or `allow_insecure`
/// is set: the call carries a credential (a bearer token, a client secret, session headers).
pub(crate) fn check_url(key: &str, url: &str, allow_insecure: bool) -> Result<(), Invalid> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| Invalid::new(key, format!("not a URL: {e}")))?;
    let Some(host) = parsed.host_str() else {
        return Err(Invalid::new(key, "must be an http(s) URL with a host"));
    };
    match parsed.scheme() {
        "https" => {}
        "http" if allow_insecure || crate::listen::is_loopback_authority(host) => {}
        "http" => {
            return Err(Invalid::new(
                key,
                "must be https (plain http only to a loopback host, or with allow_insecure_http: true)",
            ));
        }
        _ => return Err(Invalid::new(key, "must be an http(s) URL with a host")),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Invalid::new(
            key,
            "must not carry credentials; use the secret settings",
        ));
    }
    Ok(())
}

/// A call-out timeout: 1 ms to 60 s.
pub(crate) fn check_timeout(key: &str, ms: u64) -> Result<(), Invalid> {
    if ms == 0 || ms > 60_000 {
        return Err(Invalid::new(key, "between 1 and 60000"));
    }
    Ok(())
}

/// `max_concurrent`: 1 to 4096.
pub(crate) fn check_max_concurrent(key: &str, n: usize) -> Result<(), Invalid> {
    if n == 0 || n > MAX_CONCURRENT {
        return Err(Invalid::new(key, format!("between 1 and {MAX_CONCURRENT}")));
    }
    Ok(())
}

/// The cap on one method's calls in flight: `max` at once, as many more waiting at most
/// `wait` for a slot.
#[derive(Debug)]
pub struct Limit {
    slots: Slots,
    wait: Duration,
}

impl Limit {
    pub fn new(max: usize, wait: Duration) -> Self {
        Self {
            slots: Slots::new(max, max),
            wait,
        }
    }

    /// A slot for one call, held until the permit is dropped; a refusal (429) when none
    /// frees up in time.
    pub async fn slot(&self) -> Result<OwnedSemaphorePermit, Refused> {
        self.slots
            .acquire(Some(self.wait))
            .await
            .map_err(|_| Refused {
                code: Refusal::TooManyRequests,
                reason: "too many call-outs in flight".into(),
            })
    }
}

/// A client for authentication call-outs: `timeout` for the whole exchange, no redirects.
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    crate::services::callout_client(timeout).map_err(|e| describe(&e))
}

/// A reqwest error by its kind and root cause, without the URL.
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_redirect() {
        "redirect refused"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else {
        "request failed"
    };
    // The innermost cause (an I/O error, hyper's message) names no URL.
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut root = None;
    while let Some(s) = source {
        root = Some(s);
        source = s.source();
    }
    match root {
        Some(r) if !e.is_timeout() => format!("{kind}: {r}"),
        _ => kind.to_string(),
    }
}

/// What a call-out answered: the status and the body (at most [`MAX_RESPONSE_BYTES`]).
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends `req` and reads the answer's body, refusing one larger than [`MAX_RESPONSE_BYTES`].
pub async fn send(req: reqwest::RequestBuilder) -> Result<Answer, String> {
    let mut resp = req.send().await.map_err(|e| describe(&e))?;
    let status = resp.status().as_u16();
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(format!(
            "HTTP {status}: answer larger than {MAX_RESPONSE_BYTES} bytes"
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(format!(
                "HTTP {status}: answer larger than {MAX_RESPONSE_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { status, body })
}

/// A cached answer and until when it holds.
struct Cached<V> {
    value: V,
    until: Instant,
}

type Slot<V> = Arc<tokio::sync::OnceCell<Cached<V>>>;

/// Answers by the SHA-256 of a credential (never the credential), at most `max` of them, with
/// one call in flight per key: concurrent callers with the same credential wait for the first.
pub struct AnswerCache<V> {
    slots: Mutex<HashMap<[u8; 32], Slot<V>>>,
    max: usize,
}

/// Whether an answer came from the cache (or from a call another caller made) or from a call
/// of this caller's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Hit,
    Miss,
}

impl<V: Clone> AnswerCache<V> {
    pub fn new(max: usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// The cached answer for `key`, or the one `fetch` gives, which is kept for the duration it
    /// returns (zero: not kept, though callers already waiting for it get it too).
    pub async fn get_or_fetch<F, Fut>(&self, key: [u8; 32], fetch: F) -> (V, Source)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (V, Duration)>,
    {
        let slot = self.slot(key);
        let mut ran = false;
        let cached = slot
            .get_or_init(|| {
                ran = true;
                async {
                    let (value, ttl) = fetch().await;
                    Cached {
                        value,
                        until: Instant::now() + ttl,
                    }
                }
            })
            .await;
        let value = cached.value.clone();
        if ran && cached.until <= Instant::now() {
            self.remove(&key, &slot);
        }
        (value, if ran { Source::Miss } else { Source::Hit })
    }

    /// The slot for `key`: the current one when it is in flight or fresh, else a new one.
    fn slot(&self, key: [u8; 32]) -> Slot<V> {
        let now = Instant::now();
        let mut slots = match self.slots.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(s) = slots.get(&key)
            && s.get().is_none_or(|c| c.until > now)
        {
            return s.clone();
        }
        slots.remove(&key);
        if slots.len() >= self.max {
            slots.retain(|_, s| s.get().is_none_or(|c| c.until > now));
        }
        if slots.len() >= self.max {
            // Still full of fresh answers: forget some (a later call asks again).
            let target = self.max - self.max / 10 - 1;
            let excess = slots.len().saturating_sub(target);
            let victims: Vec<[u8; 32]> = slots
                .iter()
                .filter(|(_, s)| s.get().is_some())
                .map(|(k, _)| *k)
                .take(excess)
                .collect();
            for k in victims {
                slots.remove(&k);
            }
        }
        let slot: Slot<V> = Arc::default();
        if slots.len() < self.max {
            slots.insert(key, slot.clone());
        }
        slot
    }

    fn remove(&self, key: &[u8; 32], slot: &Slot<V>) {
        let mut slots = match self.slots.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if slots.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(key);
        }
    }

    /// How many answers are held (fresh, stale or in flight).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.lock().map_or(0, |s| s.len())
    }
}

/// The cache key of a credential.
pub fn key(credential: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(credential).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn one_call_in_flight_per_key_and_ttl_respected() {
        let cache: Arc<AnswerCache<u64>> = Arc::new(AnswerCache::new(8));
        let calls = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(key(b"t"), || async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        (
                            calls.fetch_add(1, Ordering::SeqCst),
                            Duration::from_secs(60),
                        )
                    })
                    .await
            }));
        }
        let mut misses = 0;
        for t in tasks {
            let (v, source) = t.await.unwrap();
            assert_eq!(v, 0);
            misses += usize::from(source == Source::Miss);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(misses, 1);
        // A zero TTL is handed to the waiting callers but not kept.
        let (v, _) = cache
            .get_or_fetch(key(b"u"), || async { (7, Duration::ZERO) })
            .await;
        assert_eq!(v, 7);
        let (v, s) = cache
            .get_or_fetch(key(b"u"), || async { (8, Duration::ZERO) })
            .await;
        assert_eq!((v, s), (8, Source::Miss));
    }

    #[tokio::test]
    async fn bounded() {
        let cache: AnswerCache<u64> = AnswerCache::new(10);
        for i in 0..1000u64 {
            cache
                .get_or_fetch(key(&i.to_be_bytes()), || async move {
                    (i, Duration::from_secs(60))
                })
                .await;
            assert!(cache.len() <= 10);
        }
    }
}
