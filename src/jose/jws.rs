//! Compact JWS (RFC 7515 §7.1): strict parsing for tokens Portcullis itself accepts, and
//! signature verification under [`Rules`] for everyone, the Rego builtins included.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value as Json};
use sha2::{Sha256, Sha384, Sha512};

use super::Alg;
use super::b64::{self, Base64};
use super::json;
use super::keys::{Curve, KeyMaterial, KeyRules};

/// Longest `kid` accepted in a token header.
pub const MAX_KID_BYTES: usize = 256;

/// How signatures are verified and tokens read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// What keys must be (RSA size, symmetric keys).
    pub keys: KeyRules,
    /// Refuse ECDSA signatures whose `s` lies in the upper half of the group order: `(r, n-s)`
    /// verifies whenever `(r, s)` does, so accepting both lets anyone make a second, different
    /// token string for the same signed claims.
    pub low_s: bool,
    /// Ed25519 as RFC 8032 §5.1.7 with the small-order checks of `verify_strict`.
    pub strict_ed25519: bool,
    /// Refuse duplicate member names in the header and payload JSON (RFC 7515 §5.2 lets a
    /// verifier refuse them; two parsers reading different values of one name is a classic
    /// confusion).
    pub unique_members: bool,
}

impl Rules {
    /// Authentication, internal tokens, gateway tokens, bundle signatures.
    pub const STRICT: Rules = Rules {
        keys: KeyRules::STRICT,
        low_s: true,
        strict_ed25519: true,
        unique_members: true,
    };
    /// The Rego builtins, as OPA (Go's `crypto/ecdsa`, `crypto/ed25519`, `encoding/json`)
    /// behaves: high-S ECDSA signatures verify, and a duplicate JSON member keeps its last value.
    pub const OPA: Rules = Rules {
        keys: KeyRules::OPA,
        low_s: false,
        strict_ed25519: false,
        unique_members: false,
    };
}

/// Why a token was refused. `Display` is for logs: it never holds the token or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("header: {0}")]
    Header(String),
    #[error("signature: {0}")]
    Signature(&'static str),
    #[error("payload: {0}")]
    Payload(String),
    #[error("signing: {0}")]
    Sign(String),
}

/// A compact JWS whose header has been read under the strict rules: three non-empty,
/// unpadded base64url segments; a JSON object header without duplicate members; `alg` on the
/// caller's allow-list; no `crit` (Portcullis understands no extension); a `kid`, when present,
/// a non-empty string of at most [`MAX_KID_BYTES`]. Header parameters that point at keys
/// (`jwk`, `jku`, `x5u`, `x5c`) are never read.
#[derive(Debug)]
pub struct Jws<'a> {
    token: &'a str,
    header_len: usize,
    payload: &'a str,
    signature: Vec<u8>,
    pub header: Map<String, Json>,
    pub alg: Alg,
    pub kid: Option<String>,
}

impl<'a> Jws<'a> {
    /// Splits and reads `token`; `algorithms` is the allow-list.
    pub fn parse(token: &'a str, algorithms: &[Alg], max_bytes: usize) -> Result<Self, JwsError> {
        let (h, p, s) = split(token, max_bytes)?;
        let header_bytes = b64::decode(h, Base64::Url)
            .map_err(|_| JwsError::Malformed("a segment is not unpadded base64url"))?;
        let header = json::object(&header_bytes, true)
            .map_err(|e| JwsError::Header(format!("not a JSON object: {e}")))?;
        let alg_name = header
            .get("alg")
            .and_then(Json::as_str)
            .ok_or_else(|| JwsError::Header("alg missing or not a string".into()))?;
        let alg = Alg::from_name(alg_name)
            .filter(|a| algorithms.contains(a))
            .ok_or_else(|| JwsError::Header(format!("alg {alg_name:?} not allowed")))?;
        if header.contains_key("crit") {
            return Err(JwsError::Header("crit is not supported".into()));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Json::String(k)) if !k.is_empty() && k.len() <= MAX_KID_BYTES => Some(k.clone()),
            Some(_) => {
                return Err(JwsError::Header(
                    "kid is empty, too long or not a string".into(),
                ));
            }
        };
        let signature = b64::decode(s, Base64::Url)
            .map_err(|_| JwsError::Malformed("a segment is not unpadded base64url"))?;
        Ok(Self {
            token,
            header_len: h.len(),
            payload: p,
            signature,
            header,
            alg,
            kid,
        })
    }

    /// `header.payload`, the bytes the signature covers.
    pub fn signing_input(&self) -> &[u8] {
        self.token
            .as_bytes()
            .get(..self.header_len + 1 + self.payload.len())
            .unwrap_or_default()
    }

    /// Whether one of `keys` verifies the signature under `rules`.
    pub fn verify_any<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k KeyMaterial>,
        rules: Rules,
    ) -> bool {
        keys.into_iter()
            .any(|k| verify(self.alg, k, self.signing_input(), &self.signature, rules))
    }

    /// The payload as a JSON object without duplicate members. Read it only after the
    /// signature verified.
    pub fn payload(&self) -> Result<Map<String, Json>, JwsError> {
        let bytes = b64::decode(self.payload, Base64::Url)
            .map_err(|_| JwsError::Malformed("a segment is not unpadded base64url"))?;
        json::object(&bytes, true).map_err(|e| JwsError::Payload(format!("not a JSON object: {e}")))
    }
}

/// Splits a compact token strictly into its three non-empty segments.
pub fn split(token: &str, max_bytes: usize) -> Result<(&str, &str, &str), JwsError> {
    if token.len() > max_bytes {
        return Err(JwsError::Malformed("token too large"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed("not three segments"));
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(JwsError::Malformed("empty segment"));
    }
    Ok((h, p, s))
}

/// The payload of a compact token whose signature is NOT verified: only to pick how to verify
/// it (which issuer), or for a client to read the ids of a token it holds.
pub fn unverified_payload(token: &str, max_bytes: usize) -> Option<Map<String, Json>> {
    let (_, p, _) = split(token, max_bytes).ok()?;
    serde_json::from_slice(&b64::decode(p, Base64::Url).ok()?).ok()
}

/// Verifies a JWS `signature` over `message` with one key under `rules`; `false` whenever the
/// key does not fit the algorithm (an RSA key for `HS256`, a P-384 key for `ES256`, ...) or
/// breaks the rules.
pub fn verify(alg: Alg, key: &KeyMaterial, message: &[u8], signature: &[u8], rules: Rules) -> bool {
    match (alg, key) {
        (Alg::HS256, KeyMaterial::Secret(k)) => hmac_verify::<Hmac<Sha256>>(k, message, signature),
        (Alg::HS384, KeyMaterial::Secret(k)) => hmac_verify::<Hmac<Sha384>>(k, message, signature),
        (Alg::HS512, KeyMaterial::Secret(k)) => hmac_verify::<Hmac<Sha512>>(k, message, signature),
        (alg, KeyMaterial::Rsa { key, bits }) if alg.is_rsa() => {
            *bits >= rules.keys.min_rsa_bits && rsa_verify(alg, key, message, signature)
        }
        (Alg::ES256 | Alg::ES384 | Alg::ES512, KeyMaterial::Ec { curve, point })
            if curve.alg() == alg =>
        {
            ecdsa_verify(*curve, point, message, signature, rules.low_s)
        }
        (Alg::EdDSA, KeyMaterial::Ed25519(key)) => {
            ed25519_verify(key, message, signature, rules.strict_ed25519)
        }
        _ => false,
    }
}

fn hmac_verify<M: Mac + KeyInit>(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    match <M as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message);
            // constant-time comparison
            mac.verify_slice(signature).is_ok()
        }
        Err(_) => false,
    }
}

/// RSA PKCS#1 v1.5 and PSS through jsonwebtoken.
fn rsa_verify(alg: Alg, key: &jsonwebtoken::DecodingKey, message: &[u8], signature: &[u8]) -> bool {
    let Some(algorithm) = alg.jsonwebtoken() else {
        return false;
    };
    // jsonwebtoken wants the signature as unpadded base64url.
    jsonwebtoken::crypto::verify(&b64::encode(signature), message, key, algorithm).unwrap_or(false)
}

/// ECDSA with the curve's own hash; the signature is `r || s` at the curve's size (RFC 7518
/// §3.4).
fn ecdsa_verify(curve: Curve, point: &[u8], message: &[u8], signature: &[u8], low_s: bool) -> bool {
    macro_rules! verify_on {
        ($krate:ident) => {{
            use $krate::ecdsa::signature::Verifier as _;
            let Ok(key) = $krate::ecdsa::VerifyingKey::from_sec1_bytes(point) else {
                return false;
            };
            let Ok(sig) = $krate::ecdsa::Signature::from_slice(signature) else {
                return false;
            };
            if low_s && sig.normalize_s().is_some() {
                return false;
            }
            key.verify(message, &sig).is_ok()
        }};
    }
    if signature.len() != 2 * curve.coordinate_len() {
        return false;
    }
    match curve {
        Curve::P256 => verify_on!(p256),
        Curve::P384 => verify_on!(p384),
        Curve::P521 => verify_on!(p521),
    }
}

fn ed25519_verify(key: &[u8; 32], message: &[u8], signature: &[u8], strict: bool) -> bool {
    use ed25519_dalek::Verifier as _;
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(key) else {
        return false;
    };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    if strict {
        key.verify_strict(message, &sig).is_ok()
    } else {
        key.verify(message, &sig).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_split() {
        assert!(split("a.b.c", 10).is_ok());
        for bad in ["a.b", "a.b.c.d", ".b.c", "a..c", "a.b."] {
            assert!(split(bad, 100).is_err(), "{bad}");
        }
        assert!(split("a.b.c", 4).is_err());
    }

    #[test]
    fn high_s_ecdsa_signatures_are_refused_under_strict_rules_only() {
        use p256::ecdsa::signature::Signer as _;
        let sk = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let point = sk
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        let key = KeyMaterial::Ec {
            curve: Curve::P256,
            point,
        };
        let msg = b"header.payload";
        let sig: p256::ecdsa::Signature = sk.sign(msg);
        // The signer produces low-S; its twin (r, n - s) is high-S.
        let low = sig.normalize_s().unwrap_or(sig);
        let (r, s) = low.split_scalars();
        let high = p256::ecdsa::Signature::from_scalars(r, -*s.as_ref()).unwrap();
        assert!(high.normalize_s().is_some());
        for rules in [Rules::STRICT, Rules::OPA] {
            assert!(verify(Alg::ES256, &key, msg, &low.to_bytes(), rules));
        }
        assert!(!verify(
            Alg::ES256,
            &key,
            msg,
            &high.to_bytes(),
            Rules::STRICT
        ));
        assert!(verify(Alg::ES256, &key, msg, &high.to_bytes(), Rules::OPA));
        // A P-256 key never verifies ES384.
        assert!(!verify(Alg::ES384, &key, msg, &low.to_bytes(), Rules::OPA));
    }
}
