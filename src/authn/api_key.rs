//! The API key store: a JSON file holding, per key, only the SHA-256 of the secret, with an id,
//! subject, scopes, expiry and a revoked flag. The file is re-read when it changes.
//!
//! ```json
//! {"keys": [{"id": "key_1a2b", "hash": "sha256:<hex>", "subject": "billing-service",
//!            "scopes": ["orders:read"], "expires_at": 1767225600, "revoked": false}]}
//! ```
//!
//! Look-up: the presented key is hashed, the hash finds at most one record in a map, and the
//! stored hash is then compared with [`subtle`] in constant time. The map probe depends only on
//! the SHA-256 of the presented key, which an attacker cannot steer towards a stored hash.
//!
//! [`ApiKeyStore::create`], [`ApiKeyStore::list`] and [`ApiKeyStore::revoke`] are the API the
//! gateway's `AuthService` calls; changes are written to the file atomically (a temporary file
//! in the same directory, fsync, rename), each a read-modify-write of the file as it is on disk
//! under a lock on `.<name>.lock` beside it, so that writers in other processes (replicas
//! sharing the file, another policy's store on the same path) never undo each other's changes.
//!
//! Use: the first time in a minute that a key authenticates ([`USE_SAMPLE_SECONDS`]; one
//! atomic compare-and-swap decides, no lock on the Check path), its `last_used_at` is queued
//! for a writer thread, which writes the queued times in one batch about a second later, and
//! an `api_key_used` audit event (key id and subject, never the key) is recorded.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::audit::{AuditEvent, AuditLog, hex};
use super::file::WatchedFile;

/// A key's use is written and audited at most once per this many seconds.
pub const USE_SAMPLE_SECONDS: i64 = 60;

/// How long the writer collects uses before it writes them in one batch.
const USE_BATCH_DELAY: Duration = Duration::from_secs(1);

/// How often the writer tries again to write uses it could not write.
const USE_RETRY: Duration = Duration::from_secs(60);

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRecord {
    pub id: String,
    /// `sha256:<64 hex digits>` of the whole key, prefix included.
    pub hash: String,
    pub subject: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Seconds since the epoch; absent: never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Seconds since the epoch of the key's last use, to the minute ([`USE_SAMPLE_SECONDS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    #[serde(default)]
    keys: Vec<ApiKeyRecord>,
}

/// The parsed store: records, an index by hash, and when each key's use was last noted.
#[derive(Debug, Default)]
pub struct Keys {
    records: Vec<ApiKeyRecord>,
    by_hash: HashMap<[u8; 32], usize>,
    /// Per record: the time its use was last noted ([`i64::MIN`]: never).
    noted: Vec<AtomicI64>,
}

fn parse_hash(h: &str) -> Option<[u8; 32]> {
    let hexd = h.strip_prefix("sha256:")?;
    if hexd.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(hexd.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Keys {
    fn parse(text: &str) -> Result<Self, String> {
        let file: StoreFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Self::from_records(file.keys)
    }

    fn from_records(records: Vec<ApiKeyRecord>) -> Result<Self, String> {
        let mut by_hash = HashMap::with_capacity(records.len());
        let mut ids = std::collections::HashSet::new();
        for (i, r) in records.iter().enumerate() {
            let h = parse_hash(&r.hash)
                .ok_or_else(|| format!("key {:?}: hash must be sha256:<64 hex digits>", r.id))?;
            if !ids.insert(r.id.as_str()) {
                return Err(format!("key id {:?} is used twice", r.id));
            }
            if by_hash.insert(h, i).is_some() {
                return Err(format!("key {:?}: the same hash is stored twice", r.id));
            }
        }
        let noted = records
            .iter()
            .map(|r| AtomicI64::new(r.last_used_at.unwrap_or(i64::MIN)))
            .collect();
        Ok(Self {
            records,
            by_hash,
            noted,
        })
    }

    /// Carries the uses noted in `old` over to the same ids here, so a rewrite of the file
    /// never lets a key be sampled twice in a minute.
    fn carry_noted(self, old: &Keys) -> Self {
        let old_by_id: HashMap<&str, i64> = old
            .records
            .iter()
            .zip(&old.noted)
            .map(|(r, n)| (r.id.as_str(), n.load(Ordering::Relaxed)))
            .collect();
        for (r, n) in self.records.iter().zip(&self.noted) {
            if let Some(&t) = old_by_id.get(r.id.as_str()) {
                n.fetch_max(t, Ordering::Relaxed);
            }
        }
        self
    }

    /// Notes a use of record `i` at `now`: `true` for the first in [`USE_SAMPLE_SECONDS`].
    fn note_use(&self, i: usize, now: i64) -> bool {
        let Some(noted) = self.noted.get(i) else {
            return false;
        };
        let prev = noted.load(Ordering::Relaxed);
        now.saturating_sub(prev) >= USE_SAMPLE_SECONDS
            && noted
                .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Why a presented key was refused (for logs; the caller only sees `invalid_api_key`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("unknown key")]
    Unknown,
    #[error("key {0} is revoked")]
    Revoked(String),
    #[error("key {0} is expired")]
    Expired(String),
}

/// A freshly created key: the secret is shown here once and never stored.
#[derive(Debug, Clone)]
pub struct CreatedApiKey {
    pub secret: String,
    pub record: ApiKeyRecord,
}

/// What [`ApiKeyStore::create`] needs.
#[derive(Debug, Clone, Default)]
pub struct NewApiKey {
    pub subject: String,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub expires_at: Option<i64>,
    /// E.g. `sk_live_`.
    pub prefix: String,
}

impl NewApiKey {
    /// A new secret (the prefix and 32 random bytes, base64url) and its record, not stored.
    pub fn generate(self) -> Result<CreatedApiKey, String> {
        let mut secret_bytes = [0u8; 32];
        OsRng.fill_bytes(&mut secret_bytes);
        let secret = format!(
            "{}{}",
            self.prefix,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret_bytes)
        );
        let record = self.record(&secret)?;
        Ok(CreatedApiKey { secret, record })
    }

    /// The record of `secret` (its hash, never the secret) with a new id, not stored.
    pub fn record(self, secret: &str) -> Result<ApiKeyRecord, String> {
        if self.subject.is_empty() {
            return Err("subject must not be empty".into());
        }
        let mut id_bytes = [0u8; 8];
        OsRng.fill_bytes(&mut id_bytes);
        Ok(ApiKeyRecord {
            id: format!("key_{}", hex(&id_bytes)),
            hash: format!("sha256:{}", hex(&key_hash(secret))),
            subject: self.subject,
            scopes: self.scopes,
            roles: self.roles,
            expires_at: self.expires_at,
            revoked: false,
            created_at: Some(chrono::Utc::now().timestamp()),
            last_used_at: None,
        })
    }
}

/// The key store.
#[derive(Debug)]
pub struct ApiKeyStore {
    shared: Arc<Shared>,
    /// Wakes the use writer; dropping it (with the store) ends the writer after a last batch.
    wake: SyncSender<()>,
    audit: AuditLog,
    /// The policy named in `api_key_used` events.
    policy: String,
}

/// What the store and its use writer share.
#[derive(Debug)]
struct Shared {
    file: WatchedFile<Keys>,
    write: Mutex<()>,
    /// Uses noted and not yet written: key id → time.
    pending: Mutex<HashMap<String, i64>>,
}

/// SHA-256 of a key.
pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeyStore {
    pub fn open(path: &Path) -> Result<Self, String> {
        let shared = Arc::new(Shared {
            file: WatchedFile::open(path, Keys::parse)?,
            write: Mutex::new(()),
            pending: Mutex::new(HashMap::new()),
        });
        let (wake, woken) = std::sync::mpsc::sync_channel(1);
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("portcullis-key-use".into())
            .spawn(move || write_uses(&writer, &woken))
            .map_err(|e| format!("starting the key use writer: {e}"))?;
        Ok(Self {
            shared,
            wake,
            audit: AuditLog::default(),
            policy: String::new(),
        })
    }

    /// Records `api_key_used` events in `audit`, naming `policy`.
    pub fn with_audit(mut self, audit: AuditLog, policy: &str) -> Self {
        self.audit = audit;
        self.policy = policy.to_string();
        self
    }

    /// The record of a valid key. The first use of a key in a minute is queued to be written
    /// as its `last_used_at` and recorded as an `api_key_used` audit event.
    pub fn authenticate(&self, presented: &str, now: i64) -> Result<ApiKeyRecord, ApiKeyError> {
        let keys = self.shared.file.get();
        let hash = key_hash(presented);
        let (i, record) = keys
            .by_hash
            .get(&hash)
            .and_then(|&i| Some((i, keys.records.get(i)?)))
            .filter(|(_, r)| parse_hash(&r.hash).is_some_and(|h| bool::from(h.ct_eq(&hash))))
            .ok_or(ApiKeyError::Unknown)?;
        if record.revoked {
            return Err(ApiKeyError::Revoked(record.id.clone()));
        }
        if record.expires_at.is_some_and(|e| now >= e) {
            return Err(ApiKeyError::Expired(record.id.clone()));
        }
        if keys.note_use(i, now) {
            self.used(record, now);
        }
        Ok(record.clone())
    }

    /// Queues a sampled use for the writer and audits it.
    fn used(&self, record: &ApiKeyRecord, now: i64) {
        if let Ok(mut pending) = self.shared.pending.lock() {
            let t = pending.entry(record.id.clone()).or_insert(now);
            *t = (*t).max(now);
        }
        match self.wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {
                tracing::warn!(api_key.id = %record.id, "the key use writer has stopped");
            }
        }
        self.audit.record(
            AuditEvent::new("api_key_used", "")
                .with("policy", self.policy.as_str())
                .with("key_id", record.id.as_str())
                .with("subject", record.subject.as_str()),
        );
    }

    /// Every record (hashes, never secrets), with uses noted but not yet written.
    pub fn list(&self) -> Vec<ApiKeyRecord> {
        let keys = self.shared.file.get();
        keys.records
            .iter()
            .zip(&keys.noted)
            .map(|(r, n)| {
                let mut r = r.clone();
                let noted = n.load(Ordering::Relaxed);
                if noted != i64::MIN {
                    r.last_used_at = r.last_used_at.max(Some(noted));
                }
                r
            })
            .collect()
    }

    /// Creates a key, stores its hash, and returns the secret (once).
    pub fn create(&self, new: NewApiKey) -> Result<CreatedApiKey, String> {
        let created = new.generate()?;
        self.shared.update(|records| {
            records.push(created.record.clone());
            Ok(())
        })?;
        Ok(created)
    }

    /// Marks a key revoked; `false` when no key has that id.
    pub fn revoke(&self, id: &str) -> Result<bool, String> {
        let mut found = false;
        self.shared.update(|records| {
            for r in records.iter_mut().filter(|r| r.id == id) {
                r.revoked = true;
                found = true;
            }
            Ok(())
        })?;
        Ok(found)
    }
}

impl Shared {
    /// Applies `f` to the records as they are on disk now and writes the result, holding this
    /// process's write lock and the lock file, so no concurrent change is lost.
    fn update(
        &self,
        f: impl FnOnce(&mut Vec<ApiKeyRecord>) -> Result<(), String>,
    ) -> Result<(), String> {
        let _guard = self
            .write
            .lock()
            .map_err(|_| "key store lock poisoned".to_string())?;
        let path = self.file.path();
        let named = |e: std::io::Error| format!("{}: {e}", path.display());
        let _lock = lock_beside(path).map_err(named)?;
        let text = std::fs::read_to_string(path).map_err(named)?;
        let mut records = Keys::parse(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .records;
        f(&mut records)?;
        let keys = Keys::from_records(records)?.carry_noted(&self.file.get());
        let text = serde_json::to_vec_pretty(&StoreFile {
            keys: keys.records.clone(),
        })
        .map_err(|e| e.to_string())?;
        write_atomically(path, &text).map_err(named)?;
        self.file.set(keys);
        Ok(())
    }

    /// Writes the queued uses in one update; on failure they stay queued for the next try.
    fn flush_uses(&self) -> Result<(), String> {
        let pending = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return Err("key use queue poisoned".into()),
        };
        if pending.is_empty() {
            return Ok(());
        }
        let result = self.update(|records| {
            for r in records.iter_mut() {
                if let Some(&t) = pending.get(&r.id) {
                    r.last_used_at = r.last_used_at.max(Some(t));
                }
            }
            Ok(())
        });
        if result.is_err()
            && let Ok(mut p) = self.pending.lock()
        {
            for (id, t) in pending {
                let e = p.entry(id).or_insert(t);
                *e = (*e).max(t);
            }
        }
        result
    }
}

/// The use writer: after a wake-up it waits [`USE_BATCH_DELAY`] for more uses, then writes
/// them all at once; queued uses it could not write are tried again every [`USE_RETRY`]. A
/// failure is logged when it starts and when it ends, not at every try (a read-only store).
fn write_uses(shared: &Shared, woken: &Receiver<()>) {
    let mut failing = false;
    loop {
        let last = match woken.recv_timeout(USE_RETRY) {
            Ok(()) => {
                std::thread::sleep(USE_BATCH_DELAY);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        match shared.flush_uses() {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(file = %shared.file.path().display(), "API key uses are written again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot write API key uses (last_used_at); trying again");
            }
            Err(_) => {}
        }
        if last {
            return;
        }
    }
}

/// The lock file beside `path` (`.<name>.lock`, created owner-only), locked exclusively
/// until the returned file is dropped.
fn lock_beside(path: &Path) -> std::io::Result<std::fs::File> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    super::file::lock_exclusive(&path.with_file_name(format!(".{name}.lock")))
}

/// Writes `bytes` to a temporary file next to `path`, syncs it, and renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut rnd = [0u8; 6];
    OsRng.fill_bytes(&mut rnd);
    let tmp = dir.join(format!(".{name}.{}.tmp", hex(&rnd)));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Shared handle.
pub type SharedApiKeyStore = Arc<ApiKeyStore>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_authenticate_revoke_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(&path, "{\"keys\": []}").unwrap();
        let store = ApiKeyStore::open(&path).unwrap();
        let created = store
            .create(NewApiKey {
                subject: "svc".into(),
                scopes: vec!["a".into()],
                prefix: "sk_test_".into(),
                ..Default::default()
            })
            .unwrap();
        assert!(created.secret.starts_with("sk_test_"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&created.secret),
            "the secret must never be stored"
        );
        assert_eq!(
            store.authenticate(&created.secret, 0).unwrap().subject,
            "svc"
        );
        assert_eq!(
            store.authenticate("sk_test_nope", 0),
            Err(ApiKeyError::Unknown)
        );
        // A second store opened on the same file sees the key (persisted).
        let other = ApiKeyStore::open(&path).unwrap();
        assert!(other.authenticate(&created.secret, 0).is_ok());
        assert!(store.revoke(&created.record.id).unwrap());
        assert!(matches!(
            store.authenticate(&created.secret, 0),
            Err(ApiKeyError::Revoked(_))
        ));
        assert!(!store.revoke("nope").unwrap());
        assert_eq!(store.list().len(), 1);
    }

    #[test]
    fn uses_are_sampled_once_a_minute_and_listed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(&path, "{\"keys\": []}").unwrap();
        let audit = AuditLog::memory();
        let store = ApiKeyStore::open(&path)
            .unwrap()
            .with_audit(audit.clone(), "p");
        let key = store
            .create(NewApiKey {
                subject: "svc".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(store.list()[0].last_used_at, None);
        for (t, want) in [(1000, 1000), (1030, 1000), (1059, 1000), (1060, 1060)] {
            store.authenticate(&key.secret, t).unwrap();
            assert_eq!(store.list()[0].last_used_at, Some(want), "at {t}");
        }
        let events = audit.events();
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(events.iter().all(|e| e["event"] == "api_key_used"
            && e["key_id"] == key.record.id.as_str()
            && !e.to_string().contains(&key.secret)));
        // A failed authentication is no use.
        assert!(store.authenticate("nope", 2000).is_err());
        assert_eq!(audit.events().len(), 2);
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(
            Keys::parse("{\"keys\": [{\"id\": \"a\", \"hash\": \"md5:00\", \"subject\": \"s\"}]}")
                .is_err()
        );
        assert!(Keys::parse("{\"keys\": [], \"x\": 1}").is_err());
    }
}
