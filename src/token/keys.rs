//! The internal token's signing keys: Ed25519 (default) or P-256, loaded from a directory of
//! PKCS#8 PEM files (`<kid>.pem`, the most recently modified signs) or generated at start. All
//! keys are published as a JWK Set; the newest one signs. Signing is [`crate::jose`]'s.
//!
//! A key file that others than its owner can read or anyone but its owner can write is refused
//! (mode `0600` or `0400`; for a Kubernetes Secret volume, `defaultMode: 0400`).

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use super::config::SigningAlg;
use crate::jose::{Alg, Signer, b64};

/// One signing key with its `kid` and public JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: SigningAlg,
    signer: Signer,
    jwk: Json,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    fn new(signer: Signer, kid: Option<String>) -> Result<Self, String> {
        let alg = match signer.alg() {
            Alg::EdDSA => SigningAlg::EdDSA,
            Alg::ES256 => SigningAlg::ES256,
            other => {
                return Err(format!(
                    "a {other} key: internal tokens are signed with Ed25519 (EdDSA) or P-256 (ES256)"
                ));
            }
        };
        let mut jwk = signer
            .public_jwk()
            .ok_or_else(|| "the key has no public JWK".to_string())?;
        // serde_json's map is sorted, which is RFC 7638's canonical member order.
        let kid = kid.unwrap_or_else(|| b64::encode(Sha256::digest(jwk.to_string().as_bytes())));
        if let Json::Object(m) = &mut jwk {
            m.insert("kid".into(), Json::from(kid.clone()));
            m.insert("alg".into(), Json::from(alg.name()));
            m.insert("use".into(), Json::from("sig"));
        }
        Ok(Self {
            kid,
            alg,
            signer,
            jwk,
        })
    }

    /// A new random key.
    pub fn generate(alg: SigningAlg) -> Result<Self, String> {
        let jose_alg = match alg {
            SigningAlg::EdDSA => Alg::EdDSA,
            SigningAlg::ES256 => Alg::ES256,
        };
        let signer = Signer::generate(jose_alg).map_err(|e| e.to_string())?;
        Self::new(signer, None)
    }

    /// A key from PEM text: PKCS#8 `PRIVATE KEY` (Ed25519 or P-256) or SEC1 `EC PRIVATE KEY`.
    pub fn from_pem(text: &str, kid: Option<String>) -> Result<Self, String> {
        let signer = Signer::from_pem(None, text).map_err(|e| match e {
            crate::jose::JwsError::Sign(m) => m,
            other => other.to_string(),
        })?;
        Self::new(signer, kid)
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> &Json {
        &self.jwk
    }

    /// Signs `claims` into a compact JWT (`alg`, `kid`, `typ: JWT`).
    pub fn sign(&self, claims: &Json) -> Result<String, String> {
        self.signer
            .jwt(Some(&self.kid), claims)
            .map_err(|e| e.to_string())
    }
}

pub use crate::jose::keys::check_private_key_mode;

/// The published keys, newest first.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<Arc<SigningKey>>,
}

impl KeyRing {
    /// Keys from `dir` (newest first), or one generated key when `dir` is absent or has none.
    pub fn load(dir: Option<&Path>, alg: SigningAlg) -> Result<Self, String> {
        let mut found: Vec<(std::time::SystemTime, String, SigningKey)> = Vec::new();
        if let Some(dir) = dir.filter(|d| d.is_dir()) {
            let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) != Some("pem") {
                    continue;
                }
                let kid = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        format!("{}: the file name is not a usable kid", path.display())
                    })?
                    .to_string();
                check_private_key_mode(&path)?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let key = SigningKey::from_pem(&text, Some(kid.clone()))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let mtime = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                found.push((mtime, kid, key));
            }
        }
        if found.is_empty() {
            return Ok(Self {
                keys: vec![Arc::new(SigningKey::generate(alg)?)],
            });
        }
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
        Ok(Self {
            keys: found.into_iter().map(|(_, _, k)| Arc::new(k)).collect(),
        })
    }

    /// A ring holding these keys, the first one signing.
    pub fn from_keys(keys: Vec<SigningKey>) -> Option<Self> {
        (!keys.is_empty()).then(|| Self {
            keys: keys.into_iter().map(Arc::new).collect(),
        })
    }

    /// The key that signs.
    pub fn current(&self) -> Option<&Arc<SigningKey>> {
        self.keys.first()
    }

    /// This ring with `key` added as the newest (the others stay published).
    pub fn with_new_key(&self, key: SigningKey) -> Self {
        let mut keys = vec![Arc::new(key)];
        keys.extend(self.keys.iter().cloned());
        Self { keys }
    }

    /// `{"keys": [...]}`.
    pub fn jwks(&self) -> Json {
        json!({"keys": self.keys.iter().map(|k| k.jwk().clone()).collect::<Vec<_>>()})
    }
}
