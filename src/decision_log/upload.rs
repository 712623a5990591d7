//! OPA's decision-log upload: events are buffered (bounded; overflow drops the oldest, counted)
//! and POSTed as gzip'd JSON arrays of at most `upload_size_limit_bytes` to the service's
//! `resource` (default `/logs`), every `min_delay_seconds`..`max_delay_seconds`. A failed
//! upload puts its events back at the front of the buffer and is retried with exponential
//! backoff from 100 ms up to `max_delay_seconds`.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{DropReason, LogStats};
use crate::services::Bearer;

/// Where and how often to upload.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// The service URL joined with the resource, e.g. `https://logs.example.com/v1/logs`.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub bearer: Option<Bearer>,
    pub timeout: Duration,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Largest gzip'd body.
    pub upload_limit: usize,
    /// Most events buffered.
    pub buffer_events: usize,
    /// Most bytes (uncompressed JSON) buffered, when set.
    pub buffer_bytes: Option<usize>,
}

/// The shortest wait after a failed upload.
const MIN_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Serialized events waiting for upload.
#[derive(Debug)]
pub(crate) struct Buffer {
    inner: Mutex<Inner>,
    max_events: usize,
    max_bytes: usize,
    stats: Arc<LogStats>,
}

#[derive(Debug, Default)]
struct Inner {
    events: VecDeque<Vec<u8>>,
    bytes: usize,
}

impl Buffer {
    pub(crate) fn new(settings: &UploadSettings, stats: Arc<LogStats>) -> Self {
        Self {
            inner: Mutex::default(),
            max_events: settings.buffer_events.max(1),
            max_bytes: settings.buffer_bytes.unwrap_or(usize::MAX),
            stats,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an event, dropping the oldest ones (counted) while over the bounds.
    pub(crate) fn push(&self, event: Vec<u8>) {
        let mut b = self.lock();
        b.bytes += event.len();
        b.events.push_back(event);
        self.evict(&mut b);
    }

    /// Puts events taken by [`Buffer::take`] back at the front, in order.
    fn restore(&self, events: Vec<Vec<u8>>) {
        let mut b = self.lock();
        for e in events.into_iter().rev() {
            b.bytes += e.len();
            b.events.push_front(e);
        }
        self.evict(&mut b);
    }

    fn evict(&self, b: &mut Inner) {
        while b.events.len() > self.max_events || (b.bytes > self.max_bytes && b.events.len() > 1) {
            if let Some(old) = b.events.pop_front() {
                b.bytes -= old.len();
                self.stats.drop_event(DropReason::BufferFull);
            }
        }
        self.stats.set_buffer(b.events.len(), b.bytes);
    }

    /// Takes events from the front up to about `bytes` of JSON (at least one).
    fn take(&self, bytes: usize) -> Vec<Vec<u8>> {
        let mut b = self.lock();
        let mut out = Vec::new();
        let mut total = 0;
        while let Some(front) = b.events.front() {
            if !out.is_empty() && total + front.len() > bytes {
                break;
            }
            total += front.len();
            if let Some(e) = b.events.pop_front() {
                b.bytes -= e.len();
                out.push(e);
            }
        }
        self.stats.set_buffer(b.events.len(), b.bytes);
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// Takes the next chunk: a gzip'd JSON array of at most `limit` bytes and its events. An
    /// event that alone exceeds the limit is dropped (counted).
    fn next_chunk(&self, limit: usize) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
        loop {
            // JSON compresses well; start from a generous guess and shrink.
            let mut events = self.take(limit.saturating_mul(8));
            loop {
                if events.is_empty() {
                    return None;
                }
                let body = gzip_array(&events);
                if body.len() <= limit {
                    return Some((body, events));
                }
                if events.len() == 1 {
                    tracing::warn!(
                        size = events[0].len(),
                        limit,
                        "decision log event exceeds upload_size_limit_bytes; dropped"
                    );
                    self.stats.drop_event(DropReason::TooLarge);
                    break;
                }
                let fit = events.len() * limit / body.len() * 9 / 10;
                let keep = fit.clamp(1, events.len() - 1);
                let rest = events.split_off(keep);
                self.restore(rest);
            }
        }
    }
}

fn gzip_array(events: &[Vec<u8>]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut write = || -> std::io::Result<()> {
        gz.write_all(b"[")?;
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                gz.write_all(b",")?;
            }
            gz.write_all(e)?;
        }
        gz.write_all(b"]")
    };
    // Writing to a Vec cannot fail.
    let _ = write();
    gz.finish().unwrap_or_default()
}

/// A random fraction in [0, 1).
fn random_unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn periodic_delay(s: &UploadSettings) -> Duration {
    let span = s.max_delay.saturating_sub(s.min_delay);
    s.min_delay + span.mul_f64(random_unit())
}

fn retry_delay(s: &UploadSettings, retries: u32) -> Duration {
    let exp = MIN_RETRY_DELAY.saturating_mul(1u32 << retries.min(20));
    let capped = exp.min(s.max_delay.max(MIN_RETRY_DELAY));
    capped.mul_f64(0.8 + 0.4 * random_unit())
}

/// The upload loop. Each message on `flush` asks for an upload attempt now and is answered
/// when it is done; the loop ends (after a last attempt) when `flush` closes.
pub(crate) async fn run(
    buffer: Arc<Buffer>,
    settings: UploadSettings,
    stats: Arc<LogStats>,
    mut flush: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let client = match crate::services::http_client(settings.timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "decision log upload disabled: no HTTP client");
            return;
        }
    };
    let mut retries: u32 = 0;
    loop {
        let delay = if retries == 0 {
            periodic_delay(&settings)
        } else {
            retry_delay(&settings, retries - 1)
        };
        let reply = tokio::select! {
            () = tokio::time::sleep(delay) => None,
            f = flush.recv() => match f {
                Some(reply) => Some(reply),
                None => {
                    let _ = upload_all(&client, &buffer, &settings, &stats).await;
                    let left = buffer.len();
                    for _ in 0..left {
                        stats.drop_event(DropReason::Shutdown);
                    }
                    if left > 0 {
                        tracing::warn!(events = left, "decision log events not uploaded at shutdown");
                    }
                    return;
                }
            },
        };
        match upload_all(&client, &buffer, &settings, &stats).await {
            Ok(()) => retries = 0,
            Err(e) => {
                if retries == 0 {
                    tracing::warn!(error = %e, url = %settings.url, "decision log upload failed; will retry");
                } else {
                    tracing::debug!(error = %e, retries, "decision log upload failed again");
                }
                retries = retries.saturating_add(1);
            }
        }
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
    }
}

async fn upload_all(
    client: &reqwest::Client,
    buffer: &Buffer,
    settings: &UploadSettings,
    stats: &LogStats,
) -> Result<(), String> {
    while let Some((body, events)) = buffer.next_chunk(settings.upload_limit) {
        match post(client, settings, body).await {
            Ok(()) => stats.uploaded(events.len()),
            Err(e) => {
                stats.upload_failed();
                buffer.restore(events);
                return Err(e);
            }
        }
    }
    Ok(())
}

async fn post(
    client: &reqwest::Client,
    settings: &UploadSettings,
    body: Vec<u8>,
) -> Result<(), String> {
    let mut req = client
        .post(&settings.url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_ENCODING, "gzip")
        .header(
            http::header::USER_AGENT,
            concat!("portcullis/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in &settings.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(bearer) = &settings.bearer {
        let value = bearer
            .header_value()
            .map_err(|e| format!("bearer token: {e}"))?;
        req = req.header(http::header::AUTHORIZATION, value);
    }
    let resp = req.body(body).send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("server answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(limit: usize, events: usize) -> UploadSettings {
        UploadSettings {
            url: String::new(),
            headers: vec![],
            bearer: None,
            timeout: Duration::from_secs(1),
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(2),
            upload_limit: limit,
            buffer_events: events,
            buffer_bytes: None,
        }
    }

    fn gunzip(body: &[u8]) -> serde_json::Value {
        let mut d = flate2::read::GzDecoder::new(body);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut d, &mut s).unwrap();
        serde_json::from_str(&s).unwrap()
    }

    #[test]
    fn chunks_respect_the_limit_and_keep_order() {
        let stats = Arc::new(LogStats::default());
        let b = Buffer::new(&settings(400, 1000), stats.clone());
        for i in 0..200u32 {
            // Poorly compressible payloads so that several chunks are needed.
            let noise: String = (0..40)
                .map(|j| char::from(b'a' + ((i * 31 + j * 7) % 26) as u8))
                .collect();
            b.push(format!("{{\"n\":{i},\"x\":\"{noise}\"}}").into_bytes());
        }
        let mut seen = Vec::new();
        let mut chunks = 0;
        while let Some((body, events)) = b.next_chunk(400) {
            assert!(body.len() <= 400, "{}", body.len());
            let arr = gunzip(&body);
            assert_eq!(arr.as_array().unwrap().len(), events.len());
            seen.extend(
                arr.as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["n"].as_u64().unwrap()),
            );
            chunks += 1;
        }
        assert!(chunks > 1);
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        assert_eq!(stats.dropped(DropReason::TooLarge), 0);
    }

    #[test]
    fn overflow_drops_the_oldest_and_counts() {
        let stats = Arc::new(LogStats::default());
        let b = Buffer::new(&settings(1000, 3), stats.clone());
        for i in 0..5 {
            b.push(format!("{i}").into_bytes());
        }
        assert_eq!(stats.dropped(DropReason::BufferFull), 2);
        let (body, _) = b.next_chunk(1000).unwrap();
        assert_eq!(gunzip(&body), serde_json::json!([2, 3, 4]));
        let mut x: u32 = 7;
        let big: String = (0..5000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                char::from(b'a' + ((x >> 16) % 26) as u8)
            })
            .collect();
        b.push(format!("\"{big}\"").into_bytes());
        assert!(b.next_chunk(100).is_none());
        assert_eq!(stats.dropped(DropReason::TooLarge), 1);
    }

    #[test]
    fn retry_delays_grow_and_are_capped() {
        let s = settings(1, 1);
        assert!(retry_delay(&s, 0) <= Duration::from_millis(120));
        assert!(retry_delay(&s, 30) <= Duration::from_millis(2400));
        let d = periodic_delay(&s);
        assert!(d >= s.min_delay && d <= s.max_delay);
    }
}
