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
//! in the same directory, fsync, rename).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::audit::hex;
use super::file::WatchedFile;

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
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    #[serde(default)]
    keys: Vec<ApiKeyRecord>,
}

/// The parsed store: records and an index by hash.
#[derive(Debug, Default)]
pub struct Keys {
    records: Vec<ApiKeyRecord>,
    by_hash: HashMap<[u8; 32], usize>,
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
        Ok(Self { records, by_hash })
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
        })
    }
}

/// The key store.
#[derive(Debug)]
pub struct ApiKeyStore {
    file: WatchedFile<Keys>,
    write: Mutex<()>,
}

/// SHA-256 of a key.
pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeyStore {
    pub fn open(path: &Path) -> Result<Self, String> {
        Ok(Self {
            file: WatchedFile::open(path, Keys::parse)?,
            write: Mutex::new(()),
        })
    }

    /// Sets how often the file is checked for changes.
    pub fn with_check_interval(mut self, interval: std::time::Duration) -> Self {
        self.file = self.file.with_interval(interval);
        self
    }

    /// The record of a valid key.
    pub fn authenticate(&self, presented: &str, now: i64) -> Result<ApiKeyRecord, ApiKeyError> {
        let keys = self.file.get();
        let hash = key_hash(presented);
        let record = keys
            .by_hash
            .get(&hash)
            .and_then(|&i| keys.records.get(i))
            .filter(|r| parse_hash(&r.hash).is_some_and(|h| bool::from(h.ct_eq(&hash))))
            .ok_or(ApiKeyError::Unknown)?;
        if record.revoked {
            return Err(ApiKeyError::Revoked(record.id.clone()));
        }
        if record.expires_at.is_some_and(|e| now >= e) {
            return Err(ApiKeyError::Expired(record.id.clone()));
        }
        Ok(record.clone())
    }

    /// Every record (hashes, never secrets).
    pub fn list(&self) -> Vec<ApiKeyRecord> {
        self.file.get().records.clone()
    }

    /// Creates a key, stores its hash, and returns the secret (once).
    pub fn create(&self, new: NewApiKey) -> Result<CreatedApiKey, String> {
        let created = new.generate()?;
        self.update(|records| {
            records.push(created.record.clone());
            Ok(())
        })?;
        Ok(created)
    }

    /// Marks a key revoked; `false` when no key has that id.
    pub fn revoke(&self, id: &str) -> Result<bool, String> {
        let mut found = false;
        self.update(|records| {
            for r in records.iter_mut().filter(|r| r.id == id) {
                r.revoked = true;
                found = true;
            }
            Ok(())
        })?;
        Ok(found)
    }

    fn update(
        &self,
        f: impl FnOnce(&mut Vec<ApiKeyRecord>) -> Result<(), String>,
    ) -> Result<(), String> {
        let _guard = self
            .write
            .lock()
            .map_err(|_| "key store lock poisoned".to_string())?;
        self.file.refresh(true);
        let mut records = self.file.get().records.clone();
        f(&mut records)?;
        let keys = Keys::from_records(records)?;
        let text = serde_json::to_vec_pretty(&StoreFile {
            keys: keys.records.clone(),
        })
        .map_err(|e| e.to_string())?;
        write_atomically(self.file.path(), &text)
            .map_err(|e| format!("{}: {e}", self.file.path().display()))?;
        self.file.set(keys);
        Ok(())
    }
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
    fn bad_files_are_refused() {
        assert!(
            Keys::parse("{\"keys\": [{\"id\": \"a\", \"hash\": \"md5:00\", \"subject\": \"s\"}]}")
                .is_err()
        );
        assert!(Keys::parse("{\"keys\": [], \"x\": 1}").is_err());
    }
}
