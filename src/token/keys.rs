//! The internal token's signing keys: Ed25519 (default) or P-256, loaded from a directory of
//! PKCS#8 PEM files (`<kid>.pem`, the most recently modified signs) or generated at start. All
//! keys are published as a JWK Set; the newest one signs.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use p256::ecdsa::signature::Signer as _;
use rand_core::{OsRng, RngCore};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use super::config::SigningAlg;

enum Inner {
    Ed(ed25519_dalek::SigningKey),
    Es(p256::ecdsa::SigningKey),
}

/// One signing key with its `kid` and public JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: SigningAlg,
    inner: Inner,
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
    fn new(inner: Inner, kid: Option<String>) -> Self {
        let (alg, mut jwk) = match &inner {
            Inner::Ed(k) => (
                SigningAlg::EdDSA,
                json!({"kty": "OKP", "crv": "Ed25519",
                       "x": URL_SAFE_NO_PAD.encode(k.verifying_key().as_bytes())}),
            ),
            Inner::Es(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                let x = point
                    .x()
                    .map(|x| URL_SAFE_NO_PAD.encode(x))
                    .unwrap_or_default();
                let y = point
                    .y()
                    .map(|y| URL_SAFE_NO_PAD.encode(y))
                    .unwrap_or_default();
                (
                    SigningAlg::ES256,
                    json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
                )
            }
        };
        // serde_json's map is sorted, which is RFC 7638's canonical member order.
        let kid = kid
            .unwrap_or_else(|| URL_SAFE_NO_PAD.encode(Sha256::digest(jwk.to_string().as_bytes())));
        if let Json::Object(m) = &mut jwk {
            m.insert("kid".into(), Json::from(kid.clone()));
            m.insert("alg".into(), Json::from(alg.name()));
            m.insert("use".into(), Json::from("sig"));
        }
        Self {
            kid,
            alg,
            inner,
            jwk,
        }
    }

    /// A new random key.
    pub fn generate(alg: SigningAlg) -> Self {
        match alg {
            SigningAlg::EdDSA => {
                let mut seed = [0u8; 32];
                OsRng.fill_bytes(&mut seed);
                Self::new(
                    Inner::Ed(ed25519_dalek::SigningKey::from_bytes(&seed)),
                    None,
                )
            }
            SigningAlg::ES256 => {
                Self::new(Inner::Es(p256::ecdsa::SigningKey::random(&mut OsRng)), None)
            }
        }
    }

    /// A key from PEM text: PKCS#8 `PRIVATE KEY` (Ed25519 or P-256) or SEC1 `EC PRIVATE KEY`.
    pub fn from_pem(text: &str, kid: Option<String>) -> Result<Self, String> {
        let block = pem::parse(text).map_err(|_| "not a PEM file".to_string())?;
        let der = block.contents();
        let inner = match block.tag() {
            "PRIVATE KEY" => {
                if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_der(der) {
                    Inner::Ed(k)
                } else if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
                    Inner::Es(k)
                } else {
                    return Err("a PKCS#8 key that is neither Ed25519 nor P-256".into());
                }
            }
            "EC PRIVATE KEY" => Inner::Es(
                p256::SecretKey::from_sec1_der(der)
                    .map(p256::ecdsa::SigningKey::from)
                    .map_err(|_| "an EC key that is not P-256".to_string())?,
            ),
            other => return Err(format!("unsupported PEM block {other:?}")),
        };
        Ok(Self::new(inner, kid))
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> &Json {
        &self.jwk
    }

    /// Signs `header.payload` and returns the compact token.
    pub fn sign(&self, claims: &Json) -> Result<String, String> {
        let header = json!({"alg": self.alg.name(), "kid": self.kid, "typ": "JWT"});
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(
            &URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).map_err(|e| e.to_string())?),
        );
        let sig: Vec<u8> = match &self.inner {
            Inner::Ed(k) => ed25519_dalek::Signer::sign(k, token.as_bytes())
                .to_bytes()
                .to_vec(),
            Inner::Es(k) => {
                let s: p256::ecdsa::Signature = k.sign(token.as_bytes());
                s.to_bytes().to_vec()
            }
        };
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(token)
    }
}

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
                keys: vec![Arc::new(SigningKey::generate(alg))],
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
