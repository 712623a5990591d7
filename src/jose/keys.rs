//! Verification keys: PEM certificates, PEM public keys (SPKI, or PKCS#1 `RSA PUBLIC KEY`), a
//! JWK, or a JWK Set; and the rules a key must meet ([`KeyRules`]).
//!
//! Text holding a PEM block is read as PEM (exactly one `CERTIFICATE`, `PUBLIC KEY` or `RSA
//! PUBLIC KEY` block), anything else as JSON. In a JWK Set, keys that cannot verify a JWS here
//! (`X25519`, `Ed448`, `secp256k1`, an encryption `alg`), RSA keys below the rules' minimum and
//! (unless the rules keep them) symmetric `oct` keys are skipped rather than failing the set; a
//! single key that breaks a rule is an error.

use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value as Json};
use spki::SubjectPublicKeyInfoRef;
use spki::der::asn1::{AnyRef, ObjectIdentifier, UintRef};
use spki::der::{Decode as _, Reader as _, Tag, TagNumber};

use super::Alg;
use super::b64::{self, Base64};

/// Largest key text read, in bytes (a PEM block, or a JWK Set).
pub const MAX_KEY_BYTES: usize = 1024 * 1024;

/// Most keys a JWK Set may hold; each one may cost a signature verification.
pub const MAX_JWKS_KEYS: usize = 256;

/// The smallest RSA modulus accepted where Portcullis decides (authentication, internal tokens,
/// bundle signatures), in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// The smallest RSA modulus OPA (Go's `crypto/rsa`) accepts, in bits: the Rego builtins'.
pub const OPA_MIN_RSA_BITS: usize = 1024;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Why a key could not be used. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

impl KeyError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// What a key must be to be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRules {
    /// Smallest RSA modulus, in bits.
    pub min_rsa_bits: usize,
    /// Keep symmetric (`oct`) JWKs. Off wherever the key text is public (a JWKS, a `cert`): a
    /// published secret verifies anything anyone signs with it.
    pub keep_symmetric: bool,
}

impl KeyRules {
    /// Authentication, internal tokens, bundle signatures.
    pub const STRICT: KeyRules = KeyRules {
        min_rsa_bits: MIN_RSA_BITS,
        keep_symmetric: false,
    };
    /// The Rego builtins: OPA's floor for RSA; still no symmetric keys from public key text.
    pub const OPA: KeyRules = KeyRules {
        min_rsa_bits: OPA_MIN_RSA_BITS,
        keep_symmetric: false,
    };
}

/// A NIST curve for ECDSA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// Bytes in one coordinate (and in each of `r` and `s`).
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// The JWS algorithm that signs with this curve.
    pub fn alg(self) -> Alg {
        match self {
            Curve::P256 => Alg::ES256,
            Curve::P384 => Alg::ES384,
            Curve::P521 => Alg::ES512,
        }
    }
}

/// Public (or, for HMAC, symmetric) key material.
#[derive(Clone)]
pub enum KeyMaterial {
    Rsa {
        key: DecodingKey,
        /// Modulus length.
        bits: usize,
    },
    /// A SEC1-encoded point on `curve`.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519([u8; 32]),
    /// An HMAC secret.
    Secret(Vec<u8>),
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyMaterial::Rsa { bits, .. } => write!(f, "Rsa({bits} bits)"),
            KeyMaterial::Ec { curve, .. } => write!(f, "Ec({curve:?})"),
            KeyMaterial::Ed25519(_) => f.write_str("Ed25519"),
            KeyMaterial::Secret(_) => f.write_str("Secret(<redacted>)"),
        }
    }
}

impl KeyMaterial {
    /// Whether this key can verify `alg` at all (its type, and its curve for ECDSA).
    pub fn fits(&self, alg: Alg) -> bool {
        match self {
            KeyMaterial::Rsa { .. } => alg.is_rsa(),
            KeyMaterial::Ec { curve, .. } => curve.alg() == alg,
            KeyMaterial::Ed25519(_) => alg == Alg::EdDSA,
            KeyMaterial::Secret(_) => alg.is_hmac(),
        }
    }

    /// What kind of key this is, for messages.
    pub fn describe(&self) -> String {
        match self {
            KeyMaterial::Rsa { bits, .. } => format!("an RSA key ({bits} bits)"),
            KeyMaterial::Ec { curve, .. } => format!("an EC key on {curve:?}"),
            KeyMaterial::Ed25519(_) => "an Ed25519 key".into(),
            KeyMaterial::Secret(_) => "a secret".into(),
        }
    }
}

/// A key to verify with, with the `alg` and `kid` a JWK may carry.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub material: KeyMaterial,
    pub alg: Option<Alg>,
    pub kid: Option<String>,
}

impl PublicKey {
    fn bare(material: KeyMaterial) -> Self {
        Self {
            material,
            alg: None,
            kid: None,
        }
    }

    /// Whether this key may verify `alg` (its own `alg`, if any, must be that one).
    pub fn allows(&self, alg: Alg) -> bool {
        self.alg.is_none_or(|a| a == alg)
    }
}

/// Parses a PEM certificate, a PEM public key, a JWK or a JWK Set.
pub fn parse(text: &str, rules: KeyRules) -> Result<Vec<PublicKey>, KeyError> {
    if text.len() > MAX_KEY_BYTES {
        return Err(KeyError::new(format!(
            "key text is larger than {MAX_KEY_BYTES} bytes"
        )));
    }
    if text.contains("-----BEGIN") {
        parse_pem(text, rules).map(|key| vec![key])
    } else {
        parse_jwks(text, rules)
    }
}

/// Parses exactly one PEM public key or certificate.
pub fn parse_pem(text: &str, rules: KeyRules) -> Result<PublicKey, KeyError> {
    let blocks = pem::parse_many(text).map_err(|_| KeyError::new("failed to parse a PEM block"))?;
    let [block] = blocks.as_slice() else {
        return Err(KeyError::new(
            "expected exactly one PEM block, a certificate or a public key",
        ));
    };
    let material = match block.tag() {
        "CERTIFICATE" => from_spki(certificate_spki(block.contents())?)?,
        "PUBLIC KEY" => from_spki(
            SubjectPublicKeyInfoRef::from_der(block.contents())
                .map_err(|e| KeyError::new(format!("failed to parse a PEM public key: {e}")))?,
        )?,
        "RSA PUBLIC KEY" => rsa_from_pkcs1(block.contents())?,
        _ => {
            return Err(KeyError::new(
                "failed to extract a key from the PEM block: not a CERTIFICATE or PUBLIC KEY",
            ));
        }
    };
    check(&material, rules)?;
    Ok(PublicKey::bare(material))
}

/// Refuses material that breaks `rules`.
fn check(material: &KeyMaterial, rules: KeyRules) -> Result<(), KeyError> {
    match material {
        KeyMaterial::Rsa { bits, .. } if *bits < rules.min_rsa_bits => Err(KeyError::new(format!(
            "an RSA key of {bits} bits is too small (at least {} bits)",
            rules.min_rsa_bits
        ))),
        KeyMaterial::Secret(_) if !rules.keep_symmetric => {
            Err(KeyError::new("a symmetric (oct) key is not accepted here"))
        }
        _ => Ok(()),
    }
}

/// The SubjectPublicKeyInfo of a DER X.509 certificate (RFC 5280 §4.1). Only the structure is
/// read: the certificate's own signature, validity and extensions are not checked, as in OPA.
fn certificate_spki(der: &[u8]) -> Result<SubjectPublicKeyInfoRef<'_>, KeyError> {
    let parse = || -> spki::der::Result<SubjectPublicKeyInfoRef<'_>> {
        let tbs = AnyRef::from_der(der)?.sequence(|cert| {
            let tbs = AnyRef::decode(cert)?;
            let _signature_algorithm = AnyRef::decode(cert)?;
            let _signature = AnyRef::decode(cert)?;
            Ok(tbs)
        })?;
        tbs.sequence(|tbs| {
            let version = Tag::ContextSpecific {
                constructed: true,
                number: TagNumber::N0,
            };
            if tbs.peek_tag()? == version {
                AnyRef::decode(tbs)?;
            }
            // serialNumber, signature, issuer, validity, subject
            for _ in 0..5 {
                AnyRef::decode(tbs)?;
            }
            let spki = SubjectPublicKeyInfoRef::decode(tbs)?;
            // issuerUniqueID, subjectUniqueID, extensions
            while !tbs.is_finished() {
                AnyRef::decode(tbs)?;
            }
            Ok(spki)
        })
    };
    parse().map_err(|e| KeyError::new(format!("failed to parse a PEM certificate: {e}")))
}

fn from_spki(spki: SubjectPublicKeyInfoRef<'_>) -> Result<KeyMaterial, KeyError> {
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| KeyError::new("public key is not a whole number of bytes"))?;
    match spki.algorithm.oid {
        RSA_ENCRYPTION => rsa_from_pkcs1(key),
        EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .and_then(|oid| match oid {
                    SECP256R1 => Some(Curve::P256),
                    SECP384R1 => Some(Curve::P384),
                    SECP521R1 => Some(Curve::P521),
                    _ => None,
                })
                .ok_or_else(|| KeyError::new("unsupported elliptic curve"))?;
            ec_point(curve, key.to_vec())
        }
        ED25519 => ed25519(key),
        _ => Err(KeyError::new("unsupported public key algorithm")),
    }
}

/// An RSA key from a PKCS#1 `RSAPublicKey` (RFC 8017 §A.1.1).
fn rsa_from_pkcs1(der: &[u8]) -> Result<KeyMaterial, KeyError> {
    let (n, e) = AnyRef::from_der(der)
        .and_then(|seq| {
            seq.sequence(|r| {
                let n = UintRef::decode(r)?;
                let e = UintRef::decode(r)?;
                Ok((n, e))
            })
        })
        .map_err(|e| KeyError::new(format!("failed to parse an RSA public key: {e}")))?;
    rsa_from_components(n.as_bytes(), e.as_bytes())
}

/// The bit length of a big-endian unsigned integer.
pub fn bit_length(bytes: &[u8]) -> usize {
    let Some(first) = bytes.iter().position(|b| *b != 0) else {
        return 0;
    };
    (bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize
}

fn rsa_from_components(n: &[u8], e: &[u8]) -> Result<KeyMaterial, KeyError> {
    if n.is_empty() || e.is_empty() {
        return Err(KeyError::new("RSA key has an empty modulus or exponent"));
    }
    Ok(KeyMaterial::Rsa {
        key: DecodingKey::from_rsa_raw_components(n, e),
        bits: bit_length(n),
    })
}

/// Checks the shape of a SEC1 point: uncompressed (`04 x y`) or compressed (`02|03 x`).
fn ec_point(curve: Curve, point: Vec<u8>) -> Result<KeyMaterial, KeyError> {
    let len = curve.coordinate_len();
    let well_formed = match point.first() {
        Some(4) => point.len() == 1 + 2 * len,
        Some(2 | 3) => point.len() == 1 + len,
        _ => false,
    };
    if !well_formed {
        return Err(KeyError::new("malformed elliptic curve point"));
    }
    Ok(KeyMaterial::Ec { curve, point })
}

fn ed25519(key: &[u8]) -> Result<KeyMaterial, KeyError> {
    let bytes: [u8; 32] = key
        .try_into()
        .map_err(|_| KeyError::new("an Ed25519 public key has 32 bytes"))?;
    Ok(KeyMaterial::Ed25519(bytes))
}

fn parse_jwks(text: &str, rules: KeyRules) -> Result<Vec<PublicKey>, KeyError> {
    let json: Json = serde_json::from_str(text)
        .map_err(|_| KeyError::new("failed to parse a JWK key (set): invalid JSON"))?;
    let Json::Object(object) = json else {
        return Err(KeyError::new(
            "failed to parse a JWK key (set): not a JSON object",
        ));
    };
    match object.get("keys") {
        Some(Json::Array(keys)) => {
            if keys.len() > MAX_JWKS_KEYS {
                return Err(KeyError::new(format!(
                    "JWK Set holds more than {MAX_JWKS_KEYS} keys"
                )));
            }
            let mut parsed = Vec::with_capacity(keys.len());
            for key in keys {
                let Json::Object(key) = key else {
                    return Err(KeyError::new("a JWK must be a JSON object"));
                };
                if let Some(key) = parse_jwk(key)?
                    && check(&key.material, rules).is_ok()
                {
                    parsed.push(key);
                }
            }
            Ok(parsed)
        }
        Some(_) => Err(KeyError::new("JWK Set `keys` must be an array")),
        None => match parse_jwk(&object)? {
            Some(key) => {
                check(&key.material, rules)?;
                Ok(vec![key])
            }
            None => Ok(Vec::new()),
        },
    }
}

/// One JWK (RFC 7517/7518/8037). `None` for a key that cannot serve any JWS algorithm here.
fn parse_jwk(jwk: &Map<String, Json>) -> Result<Option<PublicKey>, KeyError> {
    let kty = jwk_string(jwk, "kty")?.ok_or_else(|| KeyError::new("JWK has no `kty`"))?;
    let alg = match jwk_string(jwk, "alg")? {
        None => None,
        Some(name) => match Alg::from_name(name) {
            Some(alg) => Some(alg),
            // e.g. an encryption key ("RSA-OAEP") published in the same set
            None => return Ok(None),
        },
    };
    // A key published for encryption only is not a signature key.
    if jwk_string(jwk, "use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let kid = jwk_string(jwk, "kid")?.map(str::to_owned);
    let material = match kty {
        "RSA" => {
            let n = jwk_bytes(jwk, "n")?;
            let e = jwk_bytes(jwk, "e")?;
            rsa_from_components(&n, &e)?
        }
        "EC" => {
            let curve = match jwk_string(jwk, "crv")? {
                Some("P-256") => Curve::P256,
                Some("P-384") => Curve::P384,
                Some("P-521") => Curve::P521,
                _ => return Ok(None),
            };
            let x = jwk_bytes(jwk, "x")?;
            let y = jwk_bytes(jwk, "y")?;
            if x.len() != curve.coordinate_len() || y.len() != curve.coordinate_len() {
                return Err(KeyError::new("JWK EC coordinates have the wrong length"));
            }
            let mut point = Vec::with_capacity(1 + x.len() + y.len());
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            ec_point(curve, point)?
        }
        "OKP" => match jwk_string(jwk, "crv")? {
            Some("Ed25519") => ed25519(&jwk_bytes(jwk, "x")?)?,
            _ => return Ok(None),
        },
        "oct" => KeyMaterial::Secret(jwk_bytes(jwk, "k")?),
        _ => return Ok(None),
    };
    Ok(Some(PublicKey { material, alg, kid }))
}

fn jwk_string<'a>(jwk: &'a Map<String, Json>, field: &str) -> Result<Option<&'a str>, KeyError> {
    match jwk.get(field) {
        None => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(_) => Err(KeyError::new(format!("JWK `{field}` must be a string"))),
    }
}

fn jwk_bytes(jwk: &Map<String, Json>, field: &str) -> Result<Vec<u8>, KeyError> {
    let text =
        jwk_string(jwk, field)?.ok_or_else(|| KeyError::new(format!("JWK has no `{field}`")))?;
    b64::decode(text, Base64::UrlLenient)
        .map_err(|_| KeyError::new(format!("JWK `{field}` is not base64url")))
}

/// Refuses a private key file that others can read or write.
#[cfg(unix)]
pub fn check_private_key_mode(path: &std::path::Path) -> Result<(), String> {
    check_owner_only(path, "a private key")
}

/// Refuses a file holding `what` (a private key, a secret) that others can read or write.
#[cfg(unix)]
pub fn check_owner_only(path: &std::path::Path, what: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{}: {what} must be readable by its owner only (mode {:o}; chmod 600, or \
             defaultMode: 0400 on a Kubernetes Secret volume)",
            path.display(),
            mode & 0o777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x7f; 256]), 2047);
    }

    #[test]
    fn symmetric_keys_are_dropped_from_public_sets_and_refused_alone() {
        let set = r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}"#;
        assert!(parse(set, KeyRules::STRICT).unwrap().is_empty());
        assert!(parse(set, KeyRules::OPA).unwrap().is_empty());
        let one = r#"{"kty": "oct", "k": "c2VjcmV0"}"#;
        assert!(parse(one, KeyRules::STRICT).is_err());
        let keep = KeyRules {
            keep_symmetric: true,
            ..KeyRules::STRICT
        };
        assert_eq!(parse(one, keep).unwrap().len(), 1);
    }

    #[test]
    fn small_rsa_keys_are_skipped_in_sets_and_refused_alone() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = |bits: usize| {
            let mut n = vec![0xffu8; bits / 8];
            n[bits / 8 - 1] = 0xfb;
            serde_json::json!({"kty": "RSA", "n": b64(&n), "e": b64(&[1, 0, 1])})
        };
        let small = jwk(1024).to_string();
        assert!(parse(&small, KeyRules::STRICT).is_err());
        assert_eq!(parse(&small, KeyRules::OPA).unwrap().len(), 1);
        let set = serde_json::json!({"keys": [jwk(512), jwk(2048)]}).to_string();
        let keys = parse(&set, KeyRules::STRICT).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(matches!(
            keys[0].material,
            KeyMaterial::Rsa { bits: 2048, .. }
        ));
    }
}
