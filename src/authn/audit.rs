//! The audit log: one JSON line per authentication failure, per minted internal token, and per
//! API key use (sampled: at most once a minute per key).
//!
//! Events carry the decision id, subject, method, result and reason, token details (`jti`,
//! `exp`, audience, scope) and the SHA-256 [`thumbprint`] of the credential that was presented —
//! never the credential itself. Writing happens on a background thread behind a bounded queue,
//! so the Check never waits for the sink. A full queue drops the event but never silently: it
//! is counted by event and result, and as soon as the writer has room it writes one
//! `audit_events_dropped` event with those counts, so a flood of one kind of failure cannot
//! hide that others happened. A file sink is created readable by its owner only (0600).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

/// How many events may wait for the writer.
const QUEUE: usize = 4096;

/// The lowercase hex SHA-256 of a credential, for logs.
pub fn thumbprint(credential: &[u8]) -> String {
    hex(&Sha256::digest(credential))
}

pub(crate) use crate::jose::b64::hex;

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
    /// `kind` is `authn_failure`, `token_minted` or `api_key_used`.
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
    /// Dropped events not yet reported, by (event, result).
    pending: Arc<Mutex<BTreeMap<(String, String), u64>>>,
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
                        pending: Arc::default(),
                    })),
                });
            }
            Sink::Stderr => Box::new(std::io::stderr()),
            Sink::Stdout => Box::new(std::io::stdout()),
            Sink::File(path) => {
                use std::os::unix::fs::OpenOptionsExt as _;
                Box::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o600)
                        .open(path)?,
                )
            }
        };
        Self::with_writer(writer, QUEUE)
    }

    /// A log writing to `writer` through a queue of `queue` events.
    fn with_writer(writer: Box<dyn Write + Send>, queue: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(queue);
        let pending: Arc<Mutex<BTreeMap<(String, String), u64>>> = Arc::default();
        let report = pending.clone();
        std::thread::Builder::new()
            .name("portcullis-audit".into())
            .spawn(move || write_loop(rx, writer, &report))?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                tx: Some(tx),
                memory: None,
                dropped: AtomicU64::new(0),
                pending,
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
            && let Err(TrySendError::Full(event) | TrySendError::Disconnected(event)) =
                tx.try_send(event)
        {
            inner.dropped.fetch_add(1, Ordering::Relaxed);
            let field = |k: &str| {
                event
                    .0
                    .get(k)
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            if let Ok(mut pending) = inner.pending.lock() {
                *pending
                    .entry((field("event"), field("result")))
                    .or_default() += 1;
            }
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

fn write_loop(
    rx: Receiver<AuditEvent>,
    mut out: Box<dyn Write + Send>,
    pending: &Mutex<BTreeMap<(String, String), u64>>,
) {
    let mut write = |event: &AuditEvent| {
        let mut line = serde_json::to_vec(&event.0).unwrap_or_default();
        line.push(b'\n');
        // On failure there is nowhere better to report it; keep draining so that senders
        // never block.
        let _ = out.write_all(&line).and_then(|()| out.flush());
    };
    while let Ok(event) = rx.recv() {
        write(&event);
        let dropped = pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        if !dropped.is_empty() {
            let counts: Vec<Json> = dropped
                .into_iter()
                .map(|((event, result), n)| {
                    serde_json::json!({"event": event, "result": result, "dropped": n})
                })
                .collect();
            write(&AuditEvent::new("audit_events_dropped", "").with("counts", counts));
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

    /// A writer that blocks until told to go on, so that the queue fills.
    struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>, Arc<Mutex<Vec<u8>>>);

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (open, cv) = &*self.0;
            let mut g = open.lock().unwrap();
            while !*g {
                g = cv.wait(g).unwrap();
            }
            self.1.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_flood_never_hides_what_was_dropped() {
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let out = Arc::new(Mutex::new(Vec::new()));
        let log = AuditLog::with_writer(Box::new(Gate(gate.clone(), out.clone())), 4).unwrap();
        for i in 0..100 {
            let result = if i == 50 {
                "insufficient_role"
            } else {
                "invalid_token"
            };
            log.record(AuditEvent::new("authn_failure", "d").with("result", result));
        }
        assert!(log.dropped() > 0);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
            if let Some(line) = text.lines().find(|l| l.contains("audit_events_dropped")) {
                let v: Json = serde_json::from_str(line).unwrap();
                let total: u64 = v["counts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["dropped"].as_u64().unwrap())
                    .sum();
                assert_eq!(total, log.dropped());
                assert!(
                    line.contains("insufficient_role"),
                    "the rare failure is reported: {line}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no drop report: {text}"
            );
            std::thread::yield_now();
        }
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
