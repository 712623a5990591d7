//! `io.jwt.decode`, `io.jwt.decode_verify` and `io.jwt.verify_*` on JWS compact tokens.
//!
//! What is an error (undefined under [`ErrorMode::Undefined`](super::ErrorMode)) and what is an
//! answer follows OPA:
//!
//! - **Errors**: an operand of the wrong type; a token that is not three `.`-separated segments;
//!   a header, payload or signature segment that is not base64url; a header or payload that is
//!   not a JSON object; a JWE header (`enc`); `alg`, `kid`, `typ` or `cty` headers that are not
//!   strings, or a `crit` that is not a non-empty list of strings; a key argument that is not a
//!   PEM certificate, PEM public key or JWK (Set); for `decode_verify`, constraints that are not
//!   an object, an unknown constraint, a constraint of the wrong type, a negative `time`, no key
//!   constraint or both `cert` and `secret`, and a non-numeric `exp` or `nbf` claim.
//! - **`false` / `[false, {}, {}]`**: a signature that does not verify under any usable key, a
//!   key of the wrong type for the algorithm, an unknown or `none` algorithm, a missing `alg`, a
//!   `crit` header naming a parameter this code does not understand, and for `decode_verify` an
//!   `alg`, `iss`, `aud`, `exp` or `nbf` check that fails.
//!
//! Where Portcullis differs from OPA:
//!
//! - `io.jwt.verify_<alg>` answers `false` unless the token's `alg` header names `<alg>`; OPA
//!   only hashes with `<alg>` and ignores the header. `alg: none` never verifies. Because the
//!   header is read, `io.jwt.verify_hs*` also rejects a malformed header, which OPA skips.
//! - A JWK whose `alg` differs from the token's is never used, also when its `kid` matches
//!   (OPA tries a key whose `kid` matches whatever its `alg`).
//! - Keys in a JWK Set of a type or curve that cannot verify a JWS here are skipped; OPA's JWK
//!   parser may reject the whole set. A PEM argument may carry text around its one block.
//! - Tokens over [`MAX_TOKEN_BYTES`], key arguments over
//!   [`MAX_KEY_BYTES`](crate::jose::keys::MAX_KEY_BYTES), JWK Sets over
//!   [`MAX_JWKS_KEYS`](crate::jose::keys::MAX_JWKS_KEYS) keys and tokens nested (`cty: JWT`)
//!   deeper than [`MAX_NESTING`] are errors.
//! - ECDSA signatures must be exactly `r || s` at the curve's size (RFC 7518 §3.4).
//! - Symmetric (`oct`) keys in a key argument or `cert` constraint are ignored: that text is a
//!   public key, and a published secret would verify any token signed with it. HMAC tokens
//!   verify only with `io.jwt.verify_hs*` or a `secret` constraint.
//!
//! The cryptography is [`crate::jose`]'s under [`Rules::OPA`]: as in OPA (Go's `crypto/rsa`,
//! `crypto/ecdsa`), RSA keys of at least 1024 bits are used and a high-S ECDSA signature
//! verifies. Authentication, which Portcullis decides itself, refuses both.
//!
//! Without a `time` constraint, `decode_verify` checks `exp` and `nbf` against the wall clock at
//! the call (OPA uses the query's start time). As in OPA, the token is valid while
//! `time < exp` and once `nbf <= time`, with no leeway.

use regorus::{Rc, Value};

use super::{BuiltinError, BuiltinResult, b64url_decode, cache, string_operand, to_hex};
use crate::jose::keys::{KeyMaterial, KeyRules, PublicKey};
use crate::jose::{Alg, Rules, jws};

/// Largest token accepted, in bytes.
pub(crate) const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Most levels of nested tokens (`cty: JWT`) followed.
pub(crate) const MAX_NESTING: usize = 8;

/// The three segments of a JWS compact token, still encoded.
struct Token<'a> {
    /// `header.payload`, the bytes the signature covers.
    signing_input: &'a str,
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl<'a> Token<'a> {
    fn parse(text: &'a str) -> BuiltinResult<Self> {
        if text.len() > MAX_TOKEN_BYTES {
            return Err(BuiltinError::new(format!(
                "encoded JWT is larger than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let wrong_count = || {
            BuiltinError::new(format!(
                "encoded JWT must have 3 sections, found {}",
                text.split('.').count()
            ))
        };
        let (signing_input, signature) = text
            .rsplit_once('.')
            .ok_or_else(|| BuiltinError::new("encoded JWT had no period separators"))?;
        let (header, payload) = signing_input.split_once('.').ok_or_else(wrong_count)?;
        if payload.contains('.') {
            return Err(wrong_count());
        }
        Ok(Self {
            signing_input,
            header,
            payload,
            signature,
        })
    }

    /// The header as a JSON object; a JWE header is refused.
    fn header(&self) -> BuiltinResult<Value> {
        let bytes = b64url_decode(self.header)
            .map_err(|_| BuiltinError::new("JWT header had invalid encoding"))?;
        let header = json_object(&bytes, "JWT header")?;
        if header
            .as_object()
            .is_ok_and(|h| h.contains_key(&Value::from("enc")))
        {
            return Err(BuiltinError::new(
                "JWT is a JWE object, which is not supported",
            ));
        }
        Ok(header)
    }

    fn payload(&self) -> BuiltinResult<Vec<u8>> {
        b64url_decode(self.payload)
            .map_err(|_| BuiltinError::new("JWT payload had invalid encoding"))
    }

    fn signature(&self) -> BuiltinResult<Vec<u8>> {
        b64url_decode(self.signature)
            .map_err(|_| BuiltinError::new("JWT signature had invalid encoding"))
    }
}

/// Parses `bytes` as a JSON object (invalid UTF-8 is replaced, as Go's decoder does).
fn json_object(bytes: &[u8], what: &str) -> BuiltinResult<Value> {
    let text = String::from_utf8_lossy(bytes);
    let value = Value::from_json_str(&text)
        .map_err(|_| BuiltinError::new(format!("{what} is not valid JSON")))?;
    match value {
        Value::Object(_) => Ok(value),
        _ => Err(BuiltinError::new(format!("{what} is not a JSON object"))),
    }
}

/// The registered header parameters (RFC 7515 §4.1) the verifiers look at.
#[derive(Default)]
struct HeaderParams {
    alg: String,
    kid: String,
    cty: String,
    crit: Vec<String>,
    unknown: Vec<String>,
}

impl HeaderParams {
    fn parse(header: &Value) -> BuiltinResult<Self> {
        let mut params = Self::default();
        let Ok(object) = header.as_object() else {
            return Err(BuiltinError::new("JWT header is not a JSON object"));
        };
        for (key, value) in object.iter() {
            let Value::String(key) = key else {
                continue;
            };
            let slot = match key.as_ref() {
                "alg" => Some(&mut params.alg),
                "kid" => Some(&mut params.kid),
                "cty" => Some(&mut params.cty),
                // checked for type only
                "typ" => None,
                "crit" => {
                    params.crit = crit_list(value)?;
                    continue;
                }
                other => {
                    params.unknown.push(other.to_owned());
                    continue;
                }
            };
            let Value::String(text) = value else {
                return Err(BuiltinError::new(format!("{key}: must be a string")));
            };
            if let Some(slot) = slot {
                *slot = text.to_string();
            }
        }
        Ok(params)
    }

    /// RFC 7515 §4.1.1 (`alg` present) and §4.1.11 (every critical parameter understood).
    fn valid(&self) -> bool {
        !self.alg.is_empty() && !self.unknown.iter().any(|name| self.crit.contains(name))
    }
}

fn crit_list(value: &Value) -> BuiltinResult<Vec<String>> {
    let Value::Array(items) = value else {
        return Err(BuiltinError::new("crit: must be a list"));
    };
    let names: Vec<String> = items
        .iter()
        .map_while(|item| match item {
            Value::String(s) => Some(s.to_string()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return Err(BuiltinError::new(
            "crit: must be a nonempty list of strings",
        ));
    }
    Ok(names)
}

// --- io.jwt.decode ---------------------------------------------------------------------------

/// `io.jwt.decode(token)`: `[header, payload, signature_hex]`, without verifying anything.
/// A token whose `cty` header is `JWT` is unwrapped and its inner token decoded instead.
pub(crate) fn decode(args: &[Value]) -> BuiltinResult<Value> {
    decode_token(string_operand(args, 0)?, 0)
}

fn decode_token(text: &str, depth: usize) -> BuiltinResult<Value> {
    if depth > MAX_NESTING {
        return Err(BuiltinError::new(format!(
            "JWT nested more than {MAX_NESTING} levels deep"
        )));
    }
    let token = Token::parse(text)?;
    let header = token.header()?;
    let payload = token.payload()?;
    let nested = header
        .as_object()
        .ok()
        .and_then(|h| h.get(&Value::from("cty")))
        .is_some_and(|cty| matches!(cty, Value::String(s) if s.as_ref() == "JWT"));
    if nested {
        // A nested token may arrive quoted, as some encoders produce it.
        let inner = String::from_utf8_lossy(&payload);
        return decode_token(inner.trim_matches(['"', '\'']), depth + 1);
    }
    let payload = json_object(&payload, "JWT payload")?;
    let signature = token.signature()?;
    Ok(Value::from(vec![
        header,
        payload,
        Value::from(to_hex(&signature)),
    ]))
}

// --- io.jwt.verify_* -------------------------------------------------------------------------

pub(crate) fn verify_hs256(args: &[Value]) -> BuiltinResult<Value> {
    verify_hmac(Alg::HS256, args)
}
pub(crate) fn verify_hs384(args: &[Value]) -> BuiltinResult<Value> {
    verify_hmac(Alg::HS384, args)
}
pub(crate) fn verify_hs512(args: &[Value]) -> BuiltinResult<Value> {
    verify_hmac(Alg::HS512, args)
}
pub(crate) fn verify_rs256(args: &[Value]) -> BuiltinResult<Value> {
    verify_public(Alg::RS256, args)
}
pub(crate) fn verify_rs384(args: &[Value]) -> BuiltinResult<Value> {
    verify_public(Alg::RS384, args)
}
pub(crate) fn verify_rs512(args: &[Value]) -> BuiltinResult<Value> {
    verify_public(Alg::RS512, args)
}
pub(crate) fn verify_ps256(args: &[Value]) -> BuiltinResult<Value> {
    verify_public(Alg::PS256, args)
}
pub(crate) fn verify_ps384(args: &[Value]) -> BuiltinResult<Value> {
    verify_public(Alg::PS384, args)
}
pub(crate) fn verify_ps512(args: &[Value]) -> BuiltinResult<Value> {
    verify_public(Alg::PS512, args)
}
pub(crate) fn verify_es256(args: &[Value]) -> BuiltinResult<Value> {
    verify_public(Alg::ES256, args)
}
pub(crate) fn verify_es384(args: &[Value]) -> BuiltinResult<Value> {
    verify_public(Alg::ES384, args)
}
pub(crate) fn verify_es512(args: &[Value]) -> BuiltinResult<Value> {
    verify_public(Alg::ES512, args)
}
pub(crate) fn verify_eddsa(args: &[Value]) -> BuiltinResult<Value> {
    verify_public(Alg::EdDSA, args)
}

/// `io.jwt.verify_hs*(token, secret)`: the secret is used as its UTF-8 bytes.
fn verify_hmac(alg: Alg, args: &[Value]) -> BuiltinResult<Value> {
    let text = string_operand(args, 0)?;
    let secret = string_rc(args, 1)?;
    let verified = cache::verified(text, secret, alg.name(), || {
        let token = Token::parse(text)?;
        let signature = token.signature()?;
        let header = HeaderParams::parse(&token.header()?)?;
        let valid = header.alg == alg.name()
            && verify_with(
                alg,
                &KeyMaterial::Secret(secret.as_bytes().to_vec()),
                &token,
                &signature,
            );
        Ok(valid.then_some((Value::Undefined, Value::Undefined)))
    })?;
    Ok(Value::from(verified.is_some()))
}

/// `io.jwt.verify_{rs,ps,es}*|eddsa(token, key)`: key is a PEM certificate, a PEM public key or
/// a JWK (Set).
fn verify_public(alg: Alg, args: &[Value]) -> BuiltinResult<Value> {
    let text = string_operand(args, 0)?;
    let key_text = string_rc(args, 1)?;
    let verified = cache::verified(text, key_text, alg.name(), || {
        let token = Token::parse(text)?;
        let keys = parse_keys(key_text)?;
        let signature = token.signature()?;
        let header = HeaderParams::parse(&token.header()?)?;
        let valid = header.alg == alg.name()
            && verify_with_keys(alg, &header.kid, &keys, &token, &signature);
        Ok(valid.then_some((Value::Undefined, Value::Undefined)))
    })?;
    Ok(Value::from(verified.is_some()))
}

/// The `index`-th operand as the shared string it is (for cache identity).
fn string_rc(args: &[Value], index: usize) -> BuiltinResult<&Rc<str>> {
    match args.get(index) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(BuiltinError::new(format!(
            "operand {} must be a string",
            index + 1
        ))),
        None => Err(BuiltinError::new(format!("operand {} missing", index + 1))),
    }
}

/// True if a key verifies the token's signature. When the token's `kid` names a key, only that
/// key is tried; otherwise every key whose `alg` (if any) matches.
fn verify_with_keys(
    alg: Alg,
    kid: &str,
    keys: &[PublicKey],
    token: &Token<'_>,
    signature: &[u8],
) -> bool {
    let usable = |key: &PublicKey| {
        key.alg.is_none_or(|key_alg| key_alg == alg)
            && verify_with(alg, &key.material, token, signature)
    };
    if !kid.is_empty()
        && let Some(key) = keys.iter().find(|key| key.kid.as_deref() == Some(kid))
    {
        return usable(key);
    }
    keys.iter().any(usable)
}

/// Verifies `signature` over the token's signing input with one key; `false` whenever the key
/// does not fit the algorithm.
fn verify_with(alg: Alg, key: &KeyMaterial, token: &Token<'_>, signature: &[u8]) -> bool {
    verify_signature(alg, key, token.signing_input.as_bytes(), signature)
}

/// Verifies a JWS `signature` over `message` (the token's `header.payload`) with one key,
/// as OPA does ([`Rules::OPA`]).
fn verify_signature(alg: Alg, key: &KeyMaterial, message: &[u8], signature: &[u8]) -> bool {
    jws::verify(alg, key, message, signature, Rules::OPA)
}

/// A key argument or `cert` constraint: PEM or JWK (Set), under OPA's key rules.
fn parse_keys(text: &str) -> BuiltinResult<Vec<PublicKey>> {
    crate::jose::keys::parse(text, KeyRules::OPA).map_err(|e| BuiltinError::new(e.0))
}

// --- io.jwt.decode_verify --------------------------------------------------------------------

/// The constraints object of `io.jwt.decode_verify`.
struct Constraints {
    /// `cert`: a PEM certificate, PEM public key or JWK (Set), parsed only when a signature
    /// has to be checked (see [`cache`]).
    cert: Option<Rc<str>>,
    secret: Option<Rc<str>>,
    alg: String,
    iss: String,
    aud: String,
    /// Nanoseconds since the Unix epoch.
    time: f64,
}

impl Constraints {
    fn parse(value: Option<&Value>) -> BuiltinResult<Self> {
        let Some(Value::Object(object)) = value else {
            return Err(BuiltinError::new("operand 2 must be an object"));
        };
        let mut constraints = Constraints {
            cert: None,
            secret: None,
            alg: String::new(),
            iss: String::new(),
            aud: String::new(),
            time: -1.0,
        };
        for (name, value) in object.iter() {
            let Value::String(name) = name else {
                return Err(BuiltinError::new("token constraint names must be strings"));
            };
            let string = || match value {
                Value::String(s) => Ok(s.to_string()),
                _ => Err(BuiltinError::new(format!(
                    "{name} constraint: must be a string"
                ))),
            };
            match name.as_ref() {
                "cert" | "secret" => {
                    let Value::String(text) = value else {
                        return Err(BuiltinError::new(format!(
                            "{name} constraint: must be a string"
                        )));
                    };
                    if name.as_ref() == "cert" {
                        constraints.cert = Some(text.clone());
                    } else if !text.is_empty() {
                        constraints.secret = Some(text.clone());
                    }
                }
                "alg" => constraints.alg = string()?,
                "iss" => constraints.iss = string()?,
                "aud" => constraints.aud = string()?,
                "time" => {
                    let time = number_f64(value).ok_or_else(|| {
                        BuiltinError::new("token time constraint: must be a number")
                    })?;
                    if time < 0.0 {
                        return Err(BuiltinError::new(
                            "token time constraint: must not be negative",
                        ));
                    }
                    constraints.time = time;
                }
                other => {
                    return Err(BuiltinError::new(format!(
                        "unknown token validation constraint: {other}"
                    )));
                }
            }
        }
        if constraints.time < 0.0 {
            constraints.time = now_ns();
        }
        match (constraints.cert.is_some(), constraints.secret.is_some()) {
            (true, true) => Err(BuiltinError::new("duplicate key constraints")),
            (false, false) => Err(BuiltinError::new("no key constraint")),
            _ => Ok(constraints),
        }
    }

    /// The key material the signature is checked with, for cache identity.
    fn key_text(&self) -> Option<&Rc<str>> {
        self.cert.as_ref().or(self.secret.as_ref())
    }

    /// Verifies the signature with the configured key(s) or secret; `keys` are the parsed
    /// `cert` (parsed once per call by the caller).
    fn verify(
        &self,
        keys: Option<&[PublicKey]>,
        alg: Alg,
        kid: &str,
        token: &Token<'_>,
        signature: &[u8],
    ) -> bool {
        match (keys, &self.secret) {
            (Some(keys), _) => verify_with_keys(alg, kid, keys, token, signature),
            (None, Some(secret)) => verify_with(
                alg,
                &KeyMaterial::Secret(secret.as_bytes().to_vec()),
                token,
                signature,
            ),
            (None, None) => false,
        }
    }

    /// A token `aud` (string or list of strings) must contain the constraint's `aud`.
    fn audience_matches(&self, aud: &Value) -> bool {
        match aud {
            Value::String(s) => s.as_ref() == self.aud,
            Value::Array(items) => items
                .iter()
                .any(|item| matches!(item, Value::String(s) if s.as_ref() == self.aud)),
            _ => false,
        }
    }
}

fn now_ns() -> f64 {
    crate::jose::clock::now_ns()
}

fn unverified() -> Value {
    Value::from(vec![
        Value::from(false),
        Value::new_object(),
        Value::new_object(),
    ])
}

/// Verifies every level of a (possibly nested, `cty: JWT`) token and decodes the innermost
/// header and payload; `None` when a signature or the `alg` constraint does not hold.
fn verify_and_decode(outer: &str, constraints: &Constraints) -> BuiltinResult<cache::Verified> {
    let keys = match &constraints.cert {
        Some(cert) => Some(parse_keys(cert)?),
        None => None,
    };
    let mut nested: Option<String> = None;
    let mut depth = 0;
    let (header, payload) = loop {
        let token = Token::parse(nested.as_deref().unwrap_or(outer))?;
        let header = token.header()?;
        let params = HeaderParams::parse(&header)?;
        if !params.valid() {
            return Ok(None);
        }
        if !constraints.alg.is_empty() && constraints.alg != params.alg {
            return Ok(None);
        }
        let signature = token.signature()?;
        let Some(alg) = Alg::from_name(&params.alg) else {
            return Ok(None);
        };
        if !constraints.verify(keys.as_deref(), alg, &params.kid, &token, &signature) {
            return Ok(None);
        }
        let payload = token.payload()?;
        if !params.cty.eq_ignore_ascii_case("JWT") {
            break (header, payload);
        }
        depth += 1;
        if depth > MAX_NESTING {
            return Err(BuiltinError::new(format!(
                "JWT nested more than {MAX_NESTING} levels deep"
            )));
        }
        nested = Some(String::from_utf8_lossy(&payload).into_owned());
    };
    let payload = json_object(&payload, "JWT payload")?;
    Ok(Some((header, payload)))
}

/// `io.jwt.decode_verify(token, constraints)`: `[true, header, payload]` when the signature
/// verifies and every constraint holds, else `[false, {}, {}]`.
pub(crate) fn decode_verify(args: &[Value]) -> BuiltinResult<Value> {
    let constraints = Constraints::parse(args.get(1))?;
    let outer = string_operand(args, 0)?;
    let Some(key_text) = constraints.key_text() else {
        return Err(BuiltinError::new("no key constraint"));
    };
    // The signature check and decoding do not depend on time: cached per thread. The `alg`
    // constraint takes part in the cache identity.
    let alg_constraint = Alg::from_name(&constraints.alg).map_or("", Alg::name);
    if !constraints.alg.is_empty() && alg_constraint.is_empty() {
        return Ok(unverified());
    }
    let verified = cache::verified(outer, key_text, alg_constraint, || {
        verify_and_decode(outer, &constraints)
    })?;
    let Some((header, payload)) = verified else {
        return Ok(unverified());
    };
    let Ok(claims) = payload.as_object() else {
        return Err(BuiltinError::new("JWT payload is not a JSON object"));
    };
    let claim = |name: &str| claims.get(&Value::from(name));

    // RFC 7519 §4.1.1
    if !constraints.iss.is_empty()
        && !matches!(claim("iss"), Some(Value::String(iss)) if iss.as_ref() == constraints.iss)
    {
        return Ok(unverified());
    }
    // RFC 7519 §4.1.3: a token with an audience needs a matching `aud` constraint, and an
    // `aud` constraint needs a token with that audience.
    let audience_ok = match claim("aud") {
        Some(aud) => constraints.audience_matches(aud),
        None => constraints.aud.is_empty(),
    };
    if !audience_ok {
        return Ok(unverified());
    }
    let seconds = constraints.time / 1e9;
    // RFC 7519 §4.1.4: valid while time < exp.
    if let Some(exp) = claim("exp")
        && seconds >= numeric_claim(exp, "exp")?
    {
        return Ok(unverified());
    }
    // RFC 7519 §4.1.5: valid once nbf <= time.
    if let Some(nbf) = claim("nbf")
        && seconds < numeric_claim(nbf, "nbf")?
    {
        return Ok(unverified());
    }
    Ok(Value::from(vec![Value::from(true), header, payload]))
}

fn numeric_claim(value: &Value, name: &str) -> BuiltinResult<f64> {
    number_f64(value).ok_or_else(|| BuiltinError::new(format!("{name} value must be a number")))
}

/// A number as `f64`, rounding where needed: nanosecond times exceed 2^53, which regorus'
/// exact `as_f64` refuses. Integers too large for `f64` become infinite; NaN is refused.
fn number_f64(value: &Value) -> Option<f64> {
    let Value::Number(n) = value else {
        return None;
    };
    n.as_f64()
        .or_else(|| n.as_i128().map(|i| i as f64))
        .or_else(|| n.format_decimal().parse::<f64>().ok())
        .filter(|f| !f.is_nan())
}
