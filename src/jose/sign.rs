//! Signing compact JWS: HMAC secrets (gateway tokens, HS* bundle signatures), Ed25519 and P-256
//! keys (internal tokens, bundles), P-384 and RSA keys from PEM (bundles).
//!
//! ECDSA signatures are always emitted in low-S form, so that tokens Portcullis signs verify
//! under [`super::Rules::STRICT`]. RSA keys below [`super::keys::MIN_RSA_BITS`] are refused.

use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use serde_json::{Map, Value as Json, json};
use spki::der::asn1::{AnyRef, OctetStringRef, UintRef};
use spki::der::{Decode as _, Reader as _};

use super::Alg;
use super::b64;
use super::jws::JwsError;
use super::keys::{MIN_RSA_BITS, bit_length};

enum Inner {
    Hmac(Vec<u8>),
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Rsa(jsonwebtoken::EncodingKey),
}

/// A key that signs with one algorithm.
pub struct Signer {
    alg: Alg,
    inner: Inner,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn err(message: impl Into<String>) -> JwsError {
    JwsError::Sign(message.into())
}

impl Signer {
    /// An HMAC signer (`HS256`, `HS384`, `HS512`).
    pub fn hmac(alg: Alg, secret: &[u8]) -> Result<Self, JwsError> {
        if !alg.is_hmac() {
            return Err(err(format!("{alg} is not an HMAC algorithm")));
        }
        if secret.is_empty() {
            return Err(err("the HMAC secret is empty"));
        }
        Ok(Self {
            alg,
            inner: Inner::Hmac(secret.to_vec()),
        })
    }

    /// A new random key for `EdDSA` (Ed25519) or `ES256` (P-256).
    pub fn generate(alg: Alg) -> Result<Self, JwsError> {
        use rand_core::{OsRng, RngCore};
        let inner = match alg {
            Alg::EdDSA => {
                let mut seed = [0u8; 32];
                OsRng.fill_bytes(&mut seed);
                Inner::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed))
            }
            Alg::ES256 => Inner::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
            other => return Err(err(format!("cannot generate {other} keys"))),
        };
        Ok(Self { alg, inner })
    }

    /// A private key from PEM: PKCS#8 `PRIVATE KEY` (Ed25519, P-256, P-384, RSA), SEC1 `EC
    /// PRIVATE KEY` (P-256, P-384) or PKCS#1 `RSA PRIVATE KEY`. `alg` picks among the
    /// algorithms the key can serve (RSA: RS* or PS*); `None` takes the key's natural one
    /// (`EdDSA`, `ES256`, `ES384`, `RS256`).
    pub fn from_pem(alg: Option<Alg>, text: &str) -> Result<Self, JwsError> {
        let block = pem::parse(text).map_err(|_| err("not a PEM private key"))?;
        let der = block.contents();
        let mismatch = |key: &str| {
            err(format!(
                "the key is {key}, which cannot sign {}",
                alg.map_or("that algorithm".to_string(), |a| a.to_string())
            ))
        };
        let (natural, inner) = match block.tag() {
            "PRIVATE KEY" => {
                if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_der(der) {
                    (Alg::EdDSA, Inner::Ed25519(k))
                } else if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
                    (Alg::ES256, Inner::P256(k))
                } else if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_der(der) {
                    (Alg::ES384, Inner::P384(k))
                } else if let Some(bits) = pkcs8_rsa_bits(der) {
                    (Alg::RS256, rsa(text, bits)?)
                } else {
                    return Err(err("a PKCS#8 key that is not Ed25519, P-256, P-384 or RSA"));
                }
            }
            "EC PRIVATE KEY" => {
                if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
                    (Alg::ES256, Inner::P256(k.into()))
                } else if let Ok(k) = p384::SecretKey::from_sec1_der(der) {
                    (Alg::ES384, Inner::P384(k.into()))
                } else {
                    return Err(err("an EC key that is not P-256 or P-384"));
                }
            }
            "RSA PRIVATE KEY" => {
                let bits = pkcs1_rsa_bits(der).ok_or_else(|| err("a malformed RSA key"))?;
                (Alg::RS256, rsa(text, bits)?)
            }
            other => return Err(err(format!("unsupported PEM block {other:?}"))),
        };
        let alg = match alg {
            None => natural,
            Some(a) if a == natural => a,
            Some(a) if natural.is_rsa() && a.is_rsa() => a,
            Some(_) => {
                return Err(mismatch(match natural {
                    Alg::EdDSA => "Ed25519",
                    Alg::ES256 => "P-256 (ES256)",
                    Alg::ES384 => "P-384 (ES384)",
                    _ => "RSA (RS*/PS*)",
                }));
            }
        };
        Ok(Self { alg, inner })
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The public key as a JWK (no `kid`, `alg` or `use`), for Ed25519 and P-256 keys.
    pub fn public_jwk(&self) -> Option<Json> {
        match &self.inner {
            Inner::Ed25519(k) => Some(json!({"kty": "OKP", "crv": "Ed25519",
                "x": b64::encode(k.verifying_key().as_bytes())})),
            Inner::P256(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                Some(json!({"kty": "EC", "crv": "P-256",
                    "x": point.x().map(b64::encode).unwrap_or_default(),
                    "y": point.y().map(b64::encode).unwrap_or_default()}))
            }
            _ => None,
        }
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JwsError> {
        use hmac::Mac as _;
        use p256::ecdsa::signature::Signer as _;
        Ok(match &self.inner {
            Inner::Hmac(secret) => {
                macro_rules! mac {
                    ($h:ty) => {{
                        let mut m =
                            <hmac::Hmac<$h> as hmac::digest::KeyInit>::new_from_slice(secret)
                                .map_err(|e| err(e.to_string()))?;
                        m.update(message);
                        m.finalize().into_bytes().to_vec()
                    }};
                }
                match self.alg {
                    Alg::HS384 => mac!(sha2::Sha384),
                    Alg::HS512 => mac!(sha2::Sha512),
                    _ => mac!(sha2::Sha256),
                }
            }
            Inner::Ed25519(k) => ed25519_dalek::Signer::sign(k, message).to_bytes().to_vec(),
            Inner::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(message);
                s.normalize_s().unwrap_or(s).to_bytes().to_vec()
            }
            Inner::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign(message);
                s.normalize_s().unwrap_or(s).to_bytes().to_vec()
            }
            Inner::Rsa(k) => {
                let algorithm = self
                    .alg
                    .jsonwebtoken()
                    .ok_or_else(|| err("no RSA algorithm"))?;
                let encoded = jsonwebtoken::crypto::sign(message, k, algorithm)
                    .map_err(|e| err(e.to_string()))?;
                b64::decode(&encoded, b64::Base64::Url).map_err(|e| err(e.to_string()))?
            }
        })
    }

    /// A compact JWS of `payload` with `header` (its `alg` is set to this key's).
    pub fn compact(
        &self,
        mut header: Map<String, Json>,
        payload: &[u8],
    ) -> Result<String, JwsError> {
        header.insert("alg".into(), Json::from(self.alg.name()));
        let header = serde_json::to_vec(&header).map_err(|e| err(e.to_string()))?;
        let mut token = b64::encode(header);
        token.push('.');
        token.push_str(&b64::encode(payload));
        let signature = self.sign(token.as_bytes())?;
        token.push('.');
        token.push_str(&b64::encode(signature));
        Ok(token)
    }

    /// A compact JWT of `claims`, with `typ: JWT` and `kid` when given.
    pub fn jwt(
        &self,
        kid: Option<&str>,
        claims: &impl serde::Serialize,
    ) -> Result<String, JwsError> {
        let mut header = Map::new();
        header.insert("typ".into(), Json::from("JWT"));
        if let Some(kid) = kid {
            header.insert("kid".into(), Json::from(kid));
        }
        let payload = serde_json::to_vec(claims).map_err(|e| err(e.to_string()))?;
        self.compact(header, &payload)
    }
}

fn rsa(text: &str, bits: usize) -> Result<Inner, JwsError> {
    if bits < MIN_RSA_BITS {
        return Err(err(format!(
            "an RSA key of {bits} bits is too small (at least {MIN_RSA_BITS} bits)"
        )));
    }
    jsonwebtoken::EncodingKey::from_rsa_pem(text.as_bytes())
        .map(Inner::Rsa)
        .map_err(|e| err(format!("not a usable RSA key: {e}")))
}

/// The modulus size of a PKCS#1 `RSAPrivateKey` (RFC 8017 §A.1.2).
fn pkcs1_rsa_bits(der: &[u8]) -> Option<usize> {
    AnyRef::from_der(der)
        .and_then(|seq| {
            seq.sequence(|r| {
                let _version = UintRef::decode(r)?;
                let n = UintRef::decode(r)?;
                // the rest of the key is not needed here
                r.read_slice(r.remaining_len())?;
                Ok(bit_length(n.as_bytes()))
            })
        })
        .ok()
}

/// The modulus size of an RSA key in a PKCS#8 `PrivateKeyInfo` (RFC 5208); `None` if the key
/// is not RSA.
fn pkcs8_rsa_bits(der: &[u8]) -> Option<usize> {
    const RSA_ENCRYPTION: spki::der::asn1::ObjectIdentifier =
        spki::der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
    let inner = AnyRef::from_der(der)
        .and_then(|seq| {
            seq.sequence(|r| {
                let _version = UintRef::decode(r)?;
                let algorithm = spki::AlgorithmIdentifierRef::decode(r)?;
                let key = OctetStringRef::decode(r)?;
                r.read_slice(r.remaining_len())?;
                Ok((algorithm.oid, key.as_bytes().to_vec()))
            })
        })
        .ok()?;
    (inner.0 == RSA_ENCRYPTION)
        .then(|| pkcs1_rsa_bits(&inner.1))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::keys::{KeyMaterial, KeyRules};
    use crate::jose::{Jws, Rules};

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/jwt")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn every_signer_verifies_under_strict_rules() {
        for (signer, public) in [
            (Signer::generate(Alg::EdDSA).unwrap(), None),
            (Signer::generate(Alg::ES256).unwrap(), None),
            (
                Signer::from_pem(Some(Alg::PS256), &fixture("rsa-a.key.pem")).unwrap(),
                Some(fixture("rsa-a.crt.pem")),
            ),
            (
                Signer::from_pem(None, &fixture("ec256-a.key.pem")).unwrap(),
                Some(fixture("ec256-a.crt.pem")),
            ),
        ] {
            // Many times: a high-S ECDSA signature would be refused about half of the time.
            for i in 0..16 {
                let token = signer.jwt(Some("k"), &json!({"sub": "a", "n": i})).unwrap();
                let jws = Jws::parse(&token, &[signer.alg()], 4096).unwrap();
                let key = match &public {
                    Some(pem) => {
                        crate::jose::keys::parse_pem(pem, KeyRules::STRICT)
                            .unwrap()
                            .material
                    }
                    None => {
                        crate::jose::keys::parse(
                            &signer.public_jwk().unwrap().to_string(),
                            KeyRules::STRICT,
                        )
                        .unwrap()
                        .remove(0)
                        .material
                    }
                };
                assert!(jws.verify_any([&key], Rules::STRICT), "{:?}", signer.alg());
                assert_eq!(jws.payload().unwrap()["n"], i);
            }
        }
        let hs = Signer::hmac(Alg::HS256, b"0123456789abcdef0123456789abcdef").unwrap();
        let token = hs.jwt(None, &json!({"a": 1})).unwrap();
        let jws = Jws::parse(&token, &[Alg::HS256], 4096).unwrap();
        let key = KeyMaterial::Secret(b"0123456789abcdef0123456789abcdef".to_vec());
        assert!(jws.verify_any([&key], Rules::STRICT));
    }

    #[test]
    fn keys_refuse_algorithms_they_cannot_serve() {
        let ec = fixture("ec256-a.key.pem");
        let e = Signer::from_pem(Some(Alg::RS256), &ec)
            .unwrap_err()
            .to_string();
        assert!(e.contains("P-256"), "{e}");
        assert!(Signer::hmac(Alg::RS256, b"x").is_err());
        assert!(Signer::generate(Alg::RS256).is_err());
    }
}
