//! Verifying an internal token as an upstream would: `portcullis token verify --jwks URL|FILE`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value as Json};

use crate::authn::config::ClaimsMap;
use crate::authn::jwks::{KeySet, KeySource, MAX_JWKS_BYTES, fetch_text};
use crate::authn::jwt::JwtVerifier;
use crate::jose::Alg;

/// What the token must satisfy besides its signature and expiry.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// Reads a JWK Set from an `http(s)://` URL or a file.
pub async fn load_jwks(source: &str) -> Result<String, String> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let client =
            crate::services::http_client(Duration::from_secs(10)).map_err(|e| e.to_string())?;
        fetch_text(&client, source, MAX_JWKS_BYTES).await
    } else {
        std::fs::read_to_string(source).map_err(|e| format!("{source}: {e}"))
    }
}

/// Verifies an internal token (EdDSA or ES256) with a JWK Set; the claims when valid.
pub async fn verify(
    token: &str,
    jwks: &str,
    expect: &Expect,
    now: i64,
) -> Result<Map<String, Json>, String> {
    let set = KeySet::parse(jwks)?;
    let verifier = JwtVerifier {
        issuer: expect.issuer.clone(),
        audiences: expect.audience.iter().cloned().collect(),
        algorithms: vec![Alg::EdDSA, Alg::ES256],
        keys: KeySource::Static(Arc::new(set)),
        skew: 0,
        claims: ClaimsMap::default(),
        max_token_bytes: 64 * 1024,
        email_rule: None,
        grants: Vec::new(),
        cache: Default::default(),
        accept_high_s: false,
    };
    verifier
        .verify(token, now)
        .await
        .map(|v| v.claims)
        .map_err(|e| e.to_string())
}
