//! The audit log: one JSON line per authentication failure and per minted internal token.
//!
//! Events carry the decision id, subject, method, result and reason, token details (`jti`,
//! `exp`, audience, scope) and the SHA-256 [`thumbprint`] of the credential that was presented —
//! never the credential itself. Writing happens on a background thread behind a bounded queue,
//! so the Check never waits for the sink; a full queue drops the event and counts it.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};

use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

/// How many events may wait for the writer.
const QUEUE: usize = 4096;

/// The lowercase hex SHA-256 of a credential, for logs.
pub fn thumbprint(credential: &[u8]) -> String {
    hex(&Sha256::digest(credential))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Where audit events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Off,
    Stderr,
    Stdout,
    File(PathBuf),
    /// Kept in memory (tests).
    Memory,
}

impl Sink {
    /// `stderr`, `stdout`, `off`, or a path.
    pub fn parse(text: &str) -> Self {
        match text {
            "off" | "none" | "" => Sink::Off,
            "stderr" => Sink::Stderr,
            "stdout" => Sink::Stdout,
            path => Sink::File(PathBuf::from(path)),
        }
    }
}

/// One audit event, built field by field.
#[derive(Debug, Clone)]
pub struct AuditEvent(Map<String, Json>);

impl AuditEvent {
    /// `kind` is `authn_failure` or `token_minted`.
    pub fn new(kind: &str, decision_id: &str) -> Self {
        let mut m = Map::new();
        m.insert(
            "time".into(),
            Json::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        m.insert("event".into(), Json::from(kind));
        m.insert("decision_id".into(), Json::from(decision_id));
        Self(m)
    }

    pub fn with(mut self, key: &str, value: impl Into<Json>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    pub fn json(&self) -> &Map<String, Json> {
        &self.0
    }
}

/// The audit log handle; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    tx: Option<SyncSender<AuditEvent>>,
    memory: Option<std::sync::Mutex<Vec<AuditEvent>>>,
    dropped: AtomicU64,
}

impl AuditLog {
    /// Opens a sink. A file is opened (append, created) now so that a bad path fails at start.
    pub fn open(sink: &Sink) -> std::io::Result<Self> {
        let writer: Box<dyn Write + Send> = match sink {
            Sink::Off => return Ok(Self::default()),
            Sink::Memory => {
                return Ok(Self {
                    inner: Some(Arc::new(Inner {
                        tx: None,
                        memory: Some(std::sync::Mutex::new(Vec::new())),
                        dropped: AtomicU64::new(0),
                    })),
                });
            }
            Sink::Stderr => Box::new(std::io::stderr()),
            Sink::Stdout => Box::new(std::io::stdout()),
            Sink::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("portcullis-audit".into())
            .spawn(move || write_loop(rx, writer))?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                tx: Some(tx),
                memory: None,
                dropped: AtomicU64::new(0),
            })),
        })
    }

    /// An in-memory log whose events [`AuditLog::events`] returns (tests).
    pub fn memory() -> Self {
        Self::open(&Sink::Memory).unwrap_or_default()
    }

    /// Records an event without waiting.
    pub fn record(&self, event: AuditEvent) {
        let Some(inner) = &self.inner else { return };
        if let Some(mem) = &inner.memory {
            if let Ok(mut v) = mem.lock() {
                v.push(event);
            }
            return;
        }
        if let Some(tx) = &inner.tx
            && let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(event)
        {
            inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events kept by a memory sink.
    pub fn events(&self) -> Vec<Json> {
        self.inner
            .as_ref()
            .and_then(|i| i.memory.as_ref())
            .and_then(|m| {
                m.lock()
                    .ok()
                    .map(|v| v.iter().map(|e| Json::Object(e.0.clone())).collect())
            })
            .unwrap_or_default()
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }
}

fn write_loop(rx: Receiver<AuditEvent>, mut out: Box<dyn Write + Send>) {
    while let Ok(event) = rx.recv() {
        let mut line = serde_json::to_vec(&event.0).unwrap_or_default();
        line.push(b'\n');
        if out.write_all(&line).and_then(|()| out.flush()).is_err() {
            // Nowhere better to report it; keep draining so senders never block.
            continue;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_is_sha256_hex() {
        assert_eq!(
            thumbprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn file_sink_writes_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&Sink::File(path.clone())).unwrap();
        log.record(AuditEvent::new("authn_failure", "d1").with("reason", "expired"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(line) = text.lines().next() {
                let v: Json = serde_json::from_str(line).unwrap();
                assert_eq!(v["decision_id"], "d1");
                assert_eq!(v["reason"], "expired");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "audit line never written"
            );
            std::thread::yield_now();
        }
    }
}
