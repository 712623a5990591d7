//! Bundle signatures: OPA's `.signatures.json`.
//!
//! The file holds `{"signatures": ["<JWT>"]}`: exactly one compact JWS whose payload lists every
//! other file of the bundle with a digest, `{"files": [{"name", "hash", "algorithm"}], "keyid",
//! "scope"}`. Verification checks the JWS with the configured key, then that the bundle holds
//! exactly the listed files (less `exclude_files`) with those digests.
//!
//! Digests follow OPA: a structured file (`.manifest`, `data.json`, `data.yaml`, `data.yml`) is
//! hashed over a canonical JSON form of its parsed value (object keys sorted, no whitespace), so
//! that reformatting does not break a signature; any other file is hashed as bytes. Numbers are
//! written in serde_json's canonical form: integers exactly as OPA writes them; a float written
//! with redundant digits in the file (`1.50`) would hash differently from OPA's digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::Digest;

use super::BundleError;
use super::archive::BundleFile;
use super::config::KeyConfig;
use crate::jose::b64::{self, hex};
use crate::jose::keys::{KeyMaterial, KeyRules};
use crate::jose::{Alg, Jws, Rules};

/// How bundle signatures are verified: [`Rules::STRICT`] (RSA keys of at least 2048 bits, no
/// duplicate JSON members) except that a high-S ECDSA signature is accepted, since OPA's own
/// `opa sign` (Go's `crypto/ecdsa`) produces one about half of the time; a bundle's integrity
/// rests on the signed file digests, which malleability does not touch.
const BUNDLE_RULES: Rules = Rules {
    low_s: false,
    ..Rules::STRICT
};

/// The longest `.signatures.json` JWT read.
const MAX_SIGNATURE_BYTES: usize = 32 * 1024 * 1024;

/// The file that holds the signatures.
pub const SIGNATURES_FILE: &str = ".signatures.json";

/// How a bundle's signature is checked: OPA's `keys` plus a bundle's `signing` block.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    pub keys: BTreeMap<String, KeyConfig>,
    /// `signing.keyid`: when set, the only key used (else the JWS `kid`, else the payload's
    /// `keyid`).
    pub key_id: Option<String>,
    /// `signing.scope`: must equal the payload's `scope` (else the key's `scope`).
    pub scope: Option<String>,
    /// `signing.exclude_files`: globs over bundle paths left out of verification.
    pub exclude_files: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
struct SignaturesFile {
    #[serde(default)]
    signatures: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plugin: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
struct FileInfo {
    name: String,
    hash: String,
    algorithm: String,
}

#[derive(Debug, Deserialize, Serialize)]
struct Payload {
    files: Vec<FileInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keyid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
}

fn bad(message: impl Into<String>) -> BundleError {
    BundleError::Signature(message.into())
}

/// Parses an algorithm name as OPA's `keys.<id>.algorithm` spells it.
pub fn algorithm(name: &str) -> Result<Alg, BundleError> {
    name.parse::<Alg>()
        .map_err(|_| bad(format!("unsupported signing algorithm {name:?}")))
}

/// The key a bundle signature is verified with: the HMAC secret itself, or a PEM public key or
/// certificate that can verify `alg` and meets [`KeyRules::STRICT`].
pub fn verification_key(alg: Alg, key: &str) -> Result<KeyMaterial, BundleError> {
    if alg.is_hmac() {
        if key.is_empty() {
            return Err(bad("the HMAC secret is empty"));
        }
        return Ok(KeyMaterial::Secret(key.as_bytes().to_vec()));
    }
    let material = crate::jose::keys::parse_pem(key, KeyRules::STRICT)
        .map_err(|e| bad(format!("the verification key is not usable: {e}")))?
        .material;
    if !material.fits(alg) {
        return Err(bad(format!(
            "the verification key is {}, which cannot verify {alg}",
            material.describe()
        )));
    }
    Ok(material)
}

/// Whether a path is hashed as structured data.
fn is_structured(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    matches!(
        base,
        ".manifest" | "data.json" | "data.yaml" | "data.yml" | SIGNATURES_FILE
    )
}

/// The hex SHA-256 digest of one bundle file, as OPA computes it.
pub fn file_digest(file: &BundleFile) -> Result<String, BundleError> {
    let mut hasher = sha2::Sha256::new();
    if is_structured(&file.path) {
        let value = parse_structured(file)?;
        let mut out = Vec::new();
        canonical(&value, &mut out);
        hasher.update(&out);
    } else {
        hasher.update(&file.bytes);
    }
    Ok(hex(&hasher.finalize()))
}

fn parse_structured(file: &BundleFile) -> Result<Json, BundleError> {
    let parsed = if file.path.ends_with(".yaml") || file.path.ends_with(".yml") {
        yaml_serde::from_slice::<Json>(&file.bytes).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice::<Json>(&file.bytes).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| bad(format!("{}: cannot parse for its digest: {e}", file.path)))
}

/// Appends OPA's canonical encoding: sorted keys, no whitespace, Go's string escaping.
fn canonical(value: &Json, out: &mut Vec<u8>) {
    match value {
        Json::Object(map) => {
            out.push(b'{');
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(key, out);
                out.push(b':');
                if let Some(v) = map.get(key) {
                    canonical(v, out);
                }
            }
            out.push(b'}');
        }
        Json::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        Json::String(s) => string(s, out),
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// A JSON string as Go's encoder writes it with HTML escaping off: serde_json's escaping plus
/// U+2028 and U+2029 escaped.
fn string(s: &str, out: &mut Vec<u8>) {
    let encoded = Json::String(s.to_string()).to_string();
    out.extend_from_slice(
        encoded
            .replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029")
            .as_bytes(),
    );
}

/// Checks `.signatures.json` against the other files of a bundle.
pub fn verify(
    signatures: &BundleFile,
    files: &[BundleFile],
    config: &Verification,
) -> Result<(), BundleError> {
    let sigs: SignaturesFile = serde_json::from_slice(&signatures.bytes)
        .map_err(|e| bad(format!("{SIGNATURES_FILE}: {e}")))?;
    if let Some(plugin) = sigs.plugin.as_deref().filter(|p| !p.is_empty()) {
        return Err(bad(format!(
            "{SIGNATURES_FILE}: verification plugin {plugin:?} is not supported"
        )));
    }
    let token = match sigs.signatures.as_slice() {
        [one] => one,
        [] => return Err(bad(format!("{SIGNATURES_FILE}: no signature"))),
        _ => {
            return Err(bad(format!(
                "{SIGNATURES_FILE}: more than one signature is not supported"
            )));
        }
    };
    let payload = verify_token(token, config)?;

    let exclude = exclude_set(&config.exclude_files)?;
    let mut listed: BTreeMap<String, FileInfo> = BTreeMap::new();
    for info in payload.files {
        let name = info.name.trim_start_matches('/').to_string();
        if listed.insert(name.clone(), info).is_some() {
            return Err(bad(format!("{name} is listed twice in the signature")));
        }
    }
    for file in files {
        if file.path == SIGNATURES_FILE || exclude.is_match(&file.path) {
            listed.remove(&file.path);
            continue;
        }
        let info = listed
            .remove(&file.path)
            .ok_or_else(|| bad(format!("{} is not covered by the signature", file.path)))?;
        if !info.algorithm.eq_ignore_ascii_case("SHA-256") {
            return Err(bad(format!(
                "{}: digest algorithm {:?} is not supported (SHA-256 is)",
                file.path, info.algorithm
            )));
        }
        let digest = file_digest(file)?;
        if !digest.eq_ignore_ascii_case(&info.hash) {
            return Err(bad(format!(
                "{}: digest mismatch: the file was changed after signing",
                file.path
            )));
        }
    }
    if let Some(name) = listed.keys().next() {
        return Err(bad(format!(
            "{name} is listed in the signature but missing from the bundle"
        )));
    }
    Ok(())
}

fn exclude_set(globs: &[String]) -> Result<globset::GlobSet, BundleError> {
    let mut builder = globset::GlobSetBuilder::new();
    for g in globs {
        let glob = globset::GlobBuilder::new(g)
            .literal_separator(true)
            .build()
            .map_err(|e| bad(format!("exclude_files {g:?}: {e}")))?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|e| bad(format!("exclude_files: {e}")))
}

fn verify_token(token: &str, config: &Verification) -> Result<Payload, BundleError> {
    let jws = Jws::parse(token, &Alg::ALL, MAX_SIGNATURE_BYTES)
        .map_err(|e| bad(format!("{SIGNATURES_FILE}: malformed JWT: {e}")))?;
    let unverified = unverified_payload(token)?;
    let key_id = config
        .key_id
        .clone()
        .or(jws.kid.clone())
        .or(unverified.keyid.clone())
        .ok_or_else(|| bad("the signature names no key and signing.keyid is not set"))?;
    let key = config
        .keys
        .get(&key_id)
        .ok_or_else(|| bad(format!("no key {key_id:?} is configured under keys")))?;
    let alg = algorithm(&key.algorithm)?;
    let public = key
        .key
        .as_deref()
        .ok_or_else(|| bad(format!("keys.{key_id}.key is not set")))?;
    let material = verification_key(alg, public)?;
    if jws.alg != alg || !jws.verify_any([&material], BUNDLE_RULES) {
        return Err(bad(format!(
            "the signature does not verify with key {key_id:?} ({alg})"
        )));
    }
    let payload: Payload = jws
        .payload()
        .map_err(|e| bad(format!("{SIGNATURES_FILE}: {e}")))
        .and_then(|p| {
            serde_json::from_value(Json::Object(p))
                .map_err(|e| bad(format!("{SIGNATURES_FILE}: malformed payload: {e}")))
        })?;
    let want_scope = config
        .scope
        .clone()
        .or(key.scope.clone())
        .unwrap_or_default();
    if payload.scope.clone().unwrap_or_default() != want_scope {
        return Err(bad("scope mismatch"));
    }
    Ok(payload)
}

fn unverified_payload(token: &str) -> Result<Payload, BundleError> {
    let part = token
        .split('.')
        .nth(1)
        .ok_or_else(|| bad(format!("{SIGNATURES_FILE}: malformed JWT")))?;
    let bytes = b64::decode(part, b64::Base64::UrlLenient)
        .map_err(|e| bad(format!("{SIGNATURES_FILE}: malformed JWT payload: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("{SIGNATURES_FILE}: malformed JWT payload: {e}")))
}

/// What `bundle build --signing-key` signs with.
#[derive(Debug, Clone)]
pub struct Signer {
    pub algorithm: String,
    /// PEM private key, or the HMAC secret.
    pub key: String,
    /// Written as the JWS `kid` (and the payload's `keyid`).
    pub key_id: Option<String>,
    pub scope: Option<String>,
}

/// Builds `.signatures.json` over `files` (which must not include it).
pub fn sign(files: &[BundleFile], signer: &Signer) -> Result<BundleFile, BundleError> {
    let alg = algorithm(&signer.algorithm)?;
    let mut infos = Vec::new();
    for file in files {
        infos.push(FileInfo {
            name: file.path.clone(),
            hash: file_digest(file)?,
            algorithm: "SHA-256".into(),
        });
    }
    let payload = Payload {
        files: infos,
        keyid: signer.key_id.clone(),
        scope: signer.scope.clone(),
        iat: None,
        iss: None,
    };
    let key = if alg.is_hmac() {
        crate::jose::Signer::hmac(alg, signer.key.as_bytes())
    } else {
        crate::jose::Signer::from_pem(Some(alg), &signer.key)
    }
    .map_err(|e| bad(format!("the signing key is not usable: {e}")))?;
    let body = serde_json::to_vec(&payload).map_err(|e| bad(e.to_string()))?;
    let mut header = serde_json::Map::new();
    if let Some(kid) = &signer.key_id {
        header.insert("kid".into(), Json::from(kid.as_str()));
    }
    let token = key
        .compact(header, &body)
        .map_err(|e| bad(format!("signing failed: {e}")))?;
    let body = serde_json::to_vec_pretty(&SignaturesFile {
        signatures: vec![token],
        plugin: None,
    })
    .map_err(|e| bad(e.to_string()))?;
    Ok(BundleFile {
        path: SIGNATURES_FILE.into(),
        bytes: body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_digest_ignores_formatting_and_key_order() {
        let a = BundleFile {
            path: "x/data.json".into(),
            bytes: br#"{"b": [1, 2], "a": "<&>\u2028"}"#.to_vec(),
        };
        let b = BundleFile {
            path: "x/data.json".into(),
            bytes: b"{\"a\":\"<&>\xe2\x80\xa8\",\"b\":[1,2]}".to_vec(),
        };
        assert_eq!(file_digest(&a).unwrap(), file_digest(&b).unwrap());
        let mut out = Vec::new();
        canonical(&serde_json::from_slice(&a.bytes).unwrap(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":"<&>\u2028","b":[1,2]}"#
        );
        let rego = BundleFile {
            path: "p.rego".into(),
            bytes: b"package p\n".to_vec(),
        };
        // sha256("package p\n")
        assert_eq!(
            file_digest(&rego).unwrap(),
            hex(&sha2::Sha256::digest(b"package p\n"))
        );
    }

    #[test]
    fn hmac_sign_and_verify() {
        let files = vec![BundleFile {
            path: "p.rego".into(),
            bytes: b"package p\n".to_vec(),
        }];
        let signer = Signer {
            algorithm: "HS256".into(),
            key: "secret".into(),
            key_id: Some("k".into()),
            scope: None,
        };
        let sig = sign(&files, &signer).unwrap();
        let mut keys = BTreeMap::new();
        keys.insert(
            "k".to_string(),
            KeyConfig {
                algorithm: "HS256".into(),
                key: Some("secret".into()),
                private_key: None,
                scope: None,
            },
        );
        let config = Verification {
            keys,
            ..Default::default()
        };
        verify(&sig, &files, &config).unwrap();
        let tampered = vec![BundleFile {
            path: "p.rego".into(),
            bytes: b"package q\n".to_vec(),
        }];
        let err = verify(&sig, &tampered, &config).unwrap_err().to_string();
        assert!(err.contains("digest mismatch"), "{err}");
        let extra = vec![
            files[0].clone(),
            BundleFile {
                path: "q.rego".into(),
                bytes: b"package q\n".to_vec(),
            },
        ];
        let err = verify(&sig, &extra, &config).unwrap_err().to_string();
        assert!(err.contains("not covered"), "{err}");
        let err = verify(&sig, &[], &config).unwrap_err().to_string();
        assert!(err.contains("missing from the bundle"), "{err}");
        let mut wrong = config.clone();
        if let Some(k) = wrong.keys.get_mut("k") {
            k.key = Some("other".into());
        }
        assert!(verify(&sig, &files, &wrong).is_err());
        let mut scoped = config;
        scoped.scope = Some("write".into());
        assert!(verify(&sig, &files, &scoped).is_err());
    }
}
