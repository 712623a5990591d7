//! Verification keys from the key argument of `io.jwt.verify_*` and the `cert` constraint of
//! `io.jwt.decode_verify`: a PEM certificate, a PEM public key, or a JWK / JWK Set as JSON.
//!
//! As in OPA, text holding a PEM block is read as PEM (exactly one `CERTIFICATE` or `PUBLIC KEY`
//! block), anything else as JSON; text that parses as neither is an error. In a JWK Set, keys of
//! a type or curve Portcullis cannot verify with (`X25519`, `Ed448`, `secp256k1`, ...), and keys
//! whose `alg` is not a JWS algorithm, are skipped rather than failing the whole set.

use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value as Json};
use spki::SubjectPublicKeyInfoRef;
use spki::der::asn1::{AnyRef, ObjectIdentifier, UintRef};
use spki::der::{Decode as _, Reader as _, Tag, TagNumber};

use super::jwt::Alg;
use super::{BuiltinError, BuiltinResult, b64url_decode};

/// Largest key argument read, in bytes (a PEM block, or a JWK Set).
pub(crate) const MAX_KEY_BYTES: usize = 1024 * 1024;

/// Most keys a JWK Set may hold; each one may cost a signature verification per call.
pub(crate) const MAX_JWKS_KEYS: usize = 256;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// A NIST curve for ECDSA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// Bytes in one coordinate.
    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
}

/// Public (or, from an `oct` JWK, symmetric) key material.
pub(crate) enum KeyMaterial {
    Rsa(DecodingKey),
    /// A SEC1-encoded point on `curve`.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519(DecodingKey),
    /// The secret of a JWK of type `oct`.
    Secret(Vec<u8>),
}

/// A key to verify with, with the `alg` and `kid` a JWK may carry.
pub(crate) struct VerificationKey {
    pub(crate) material: KeyMaterial,
    pub(crate) alg: Option<Alg>,
    pub(crate) kid: Option<String>,
}

impl VerificationKey {
    fn bare(material: KeyMaterial) -> Self {
        Self {
            material,
            alg: None,
            kid: None,
        }
    }
}

/// Parses a PEM certificate, a PEM public key, a JWK or a JWK Set.
pub(crate) fn parse(text: &str) -> BuiltinResult<Vec<VerificationKey>> {
    if text.len() > MAX_KEY_BYTES {
        return Err(BuiltinError::new(format!(
            "key argument is larger than {MAX_KEY_BYTES} bytes"
        )));
    }
    if text.contains("-----BEGIN") {
        parse_pem(text).map(|key| vec![key])
    } else {
        parse_jwks(text)
    }
}

fn parse_pem(text: &str) -> BuiltinResult<VerificationKey> {
    let blocks =
        pem::parse_many(text).map_err(|_| BuiltinError::new("failed to parse a PEM block"))?;
    let [block] = blocks.as_slice() else {
        return Err(BuiltinError::new(
            "expected exactly one PEM block, a certificate or a public key",
        ));
    };
    let material = match block.tag() {
        "CERTIFICATE" => from_spki(certificate_spki(block.contents())?)?,
        "PUBLIC KEY" => from_spki(
            SubjectPublicKeyInfoRef::from_der(block.contents())
                .map_err(|e| BuiltinError::new(format!("failed to parse a PEM public key: {e}")))?,
        )?,
        _ => {
            return Err(BuiltinError::new(
                "failed to extract a key from the PEM block: not a CERTIFICATE or PUBLIC KEY",
            ));
        }
    };
    Ok(VerificationKey::bare(material))
}

/// The SubjectPublicKeyInfo of a DER X.509 certificate (RFC 5280 §4.1). Only the structure is
/// read: the certificate's own signature, validity and extensions are not checked, as in OPA.
fn certificate_spki(der: &[u8]) -> BuiltinResult<SubjectPublicKeyInfoRef<'_>> {
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
    parse().map_err(|e| BuiltinError::new(format!("failed to parse a PEM certificate: {e}")))
}

fn from_spki(spki: SubjectPublicKeyInfoRef<'_>) -> BuiltinResult<KeyMaterial> {
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| BuiltinError::new("public key is not a whole number of bytes"))?;
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
                .ok_or_else(|| BuiltinError::new("unsupported elliptic curve"))?;
            ec_point(curve, key.to_vec())
        }
        ED25519 => ed25519(key),
        _ => Err(BuiltinError::new("unsupported public key algorithm")),
    }
}

/// An RSA key from a PKCS#1 `RSAPublicKey` (RFC 8017 §A.1.1).
fn rsa_from_pkcs1(der: &[u8]) -> BuiltinResult<KeyMaterial> {
    let (n, e) = AnyRef::from_der(der)
        .and_then(|seq| {
            seq.sequence(|r| {
                let n = UintRef::decode(r)?;
                let e = UintRef::decode(r)?;
                Ok((n, e))
            })
        })
        .map_err(|e| BuiltinError::new(format!("failed to parse an RSA public key: {e}")))?;
    rsa_from_components(n.as_bytes(), e.as_bytes())
}

fn rsa_from_components(n: &[u8], e: &[u8]) -> BuiltinResult<KeyMaterial> {
    if n.is_empty() || e.is_empty() {
        return Err(BuiltinError::new(
            "RSA key has an empty modulus or exponent",
        ));
    }
    Ok(KeyMaterial::Rsa(DecodingKey::from_rsa_raw_components(n, e)))
}

/// Checks the shape of a SEC1 point: uncompressed (`04 x y`) or compressed (`02|03 x`).
fn ec_point(curve: Curve, point: Vec<u8>) -> BuiltinResult<KeyMaterial> {
    let len = curve.coordinate_len();
    let well_formed = match point.first() {
        Some(4) => point.len() == 1 + 2 * len,
        Some(2 | 3) => point.len() == 1 + len,
        _ => false,
    };
    if !well_formed {
        return Err(BuiltinError::new("malformed elliptic curve point"));
    }
    Ok(KeyMaterial::Ec { curve, point })
}

fn ed25519(key: &[u8]) -> BuiltinResult<KeyMaterial> {
    if key.len() != 32 {
        return Err(BuiltinError::new("an Ed25519 public key has 32 bytes"));
    }
    Ok(KeyMaterial::Ed25519(DecodingKey::from_ed_der(key)))
}

fn parse_jwks(text: &str) -> BuiltinResult<Vec<VerificationKey>> {
    let json: Json = serde_json::from_str(text)
        .map_err(|_| BuiltinError::new("failed to parse a JWK key (set): invalid JSON"))?;
    let Json::Object(object) = json else {
        return Err(BuiltinError::new(
            "failed to parse a JWK key (set): not a JSON object",
        ));
    };
    match object.get("keys") {
        Some(Json::Array(keys)) => {
            if keys.len() > MAX_JWKS_KEYS {
                return Err(BuiltinError::new(format!(
                    "JWK Set holds more than {MAX_JWKS_KEYS} keys"
                )));
            }
            let mut parsed = Vec::with_capacity(keys.len());
            for key in keys {
                let Json::Object(key) = key else {
                    return Err(BuiltinError::new("a JWK must be a JSON object"));
                };
                if let Some(key) = parse_jwk(key)? {
                    parsed.push(key);
                }
            }
            Ok(parsed)
        }
        Some(_) => Err(BuiltinError::new("JWK Set `keys` must be an array")),
        None => Ok(parse_jwk(&object)?.into_iter().collect()),
    }
}

/// One JWK (RFC 7517/7518/8037). `None` for a key that cannot serve any JWS algorithm here.
fn parse_jwk(jwk: &Map<String, Json>) -> BuiltinResult<Option<VerificationKey>> {
    let kty = jwk_string(jwk, "kty")?.ok_or_else(|| BuiltinError::new("JWK has no `kty`"))?;
    let alg = match jwk_string(jwk, "alg")? {
        None => None,
        Some(name) => match Alg::from_name(name) {
            Some(alg) => Some(alg),
            // e.g. an encryption key ("RSA-OAEP") published in the same set
            None => return Ok(None),
        },
    };
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
                return Err(BuiltinError::new(
                    "JWK EC coordinates have the wrong length",
                ));
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
    Ok(Some(VerificationKey { material, alg, kid }))
}

fn jwk_string<'a>(jwk: &'a Map<String, Json>, field: &str) -> BuiltinResult<Option<&'a str>> {
    match jwk.get(field) {
        None => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(_) => Err(BuiltinError::new(format!("JWK `{field}` must be a string"))),
    }
}

fn jwk_bytes(jwk: &Map<String, Json>, field: &str) -> BuiltinResult<Vec<u8>> {
    let text = jwk_string(jwk, field)?
        .ok_or_else(|| BuiltinError::new(format!("JWK has no `{field}`")))?;
    b64url_decode(text).map_err(|_| BuiltinError::new(format!("JWK `{field}` is not base64url")))
}
