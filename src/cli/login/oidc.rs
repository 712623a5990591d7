//! The OpenID Connect side of `auth login`: discovery, the authorization URL with PKCE (S256),
//! a state and a nonce, and the exchange of the code for an ID token (RFC 6749 §4.1, RFC 7636,
//! OpenID Connect Core §3.1).
//!
//! The provider's URLs must be `https://`, or `http://` on a loopback address (a provider run
//! on the same machine): a code, a verifier or a client secret never crosses a network in
//! clear. Answers are bounded and redirects not followed
//! ([`crate::authn::callout`]); error answers are shown by their OAuth `error` code and a
//! cleaned, shortened description.

use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::authn::callout;
use crate::cli::CliError;
use crate::jose::b64;

/// What discovery tells about a provider.
#[derive(Debug, Clone)]
pub struct Provider {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    /// RFC 9207: the provider names itself (`iss`) in its answer to the redirect URI.
    pub iss_parameter: bool,
}

/// Refuses a URL that is not `https://`, or `http://` on a loopback address.
pub fn check_url(what: &str, url: &str) -> Result<(), CliError> {
    let bad = |m: &str| CliError::Usage(format!("{what} {url:?}: {m}"));
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if crate::listen::is_loopback_authority(host) => Ok(()),
        Some("http") => Err(bad("must be https:// (http:// only on a loopback address)")),
        _ => Err(bad("must be an https:// URL")),
    }
}

/// Reads `<issuer>/.well-known/openid-configuration`; its `issuer` must be `issuer` exactly.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Provider, CliError> {
    check_url("--issuer", issuer)?;
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let fail = |m: String| CliError::Failed(format!("OpenID discovery at {issuer}: {m}"));
    let answer = callout::send(http.get(&url).header("accept", "application/json"))
        .await
        .map_err(fail)?;
    if answer.status != 200 {
        return Err(fail(format!("HTTP status {}", answer.status)));
    }
    let doc: Json = serde_json::from_slice(&answer.body)
        .map_err(|e| fail(format!("not a JSON document: {e}")))?;
    if doc.get("issuer").and_then(Json::as_str) != Some(issuer) {
        return Err(fail("the document names another issuer".into()));
    }
    let endpoint = |k: &str| -> Result<String, CliError> {
        let url = doc
            .get(k)
            .and_then(Json::as_str)
            .ok_or_else(|| fail(format!("no {k}")))?;
        check_url(k, url)?;
        Ok(url.to_string())
    };
    let s256 = match doc.get("code_challenge_methods_supported") {
        None => true,
        Some(v) => v
            .as_array()
            .is_some_and(|a| a.iter().any(|m| m.as_str() == Some("S256"))),
    };
    if !s256 {
        return Err(fail("PKCE with S256 is not supported".into()));
    }
    Ok(Provider {
        issuer: issuer.to_string(),
        authorization_endpoint: endpoint("authorization_endpoint")?,
        token_endpoint: endpoint("token_endpoint")?,
        iss_parameter: doc
            .get("authorization_response_iss_parameter_supported")
            .and_then(Json::as_bool)
            .unwrap_or(false),
    })
}

/// 32 random bytes, base64url: a state, a nonce or a PKCE code verifier (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    b64::encode(bytes)
}

/// The S256 code challenge of a verifier.
pub fn challenge(verifier: &str) -> String {
    b64::encode(Sha256::digest(verifier.as_bytes()))
}

/// What one authorization asks for.
pub struct Request<'a> {
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub state: &'a str,
    pub nonce: &'a str,
    pub verifier: &'a str,
}

/// The URL the user opens to log in.
pub fn authorization_url(p: &Provider, r: &Request<'_>) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", r.client_id)
        .append_pair("redirect_uri", r.redirect_uri)
        .append_pair("scope", r.scope)
        .append_pair("state", r.state)
        .append_pair("nonce", r.nonce)
        .append_pair("code_challenge", &challenge(r.verifier))
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if p.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{}{sep}{query}", p.authorization_endpoint)
}

/// The client's credentials at the token endpoint. `Debug` never shows the secret.
pub struct Client<'a> {
    pub id: &'a str,
    pub secret: Option<&'a str>,
}

/// Exchanges the code for tokens and returns the ID token.
pub async fn exchange_code(
    http: &reqwest::Client,
    p: &Provider,
    client: &Client<'_>,
    r: &Request<'_>,
    code: &str,
) -> Result<String, CliError> {
    let fail = |m: String| CliError::Failed(format!("token endpoint: {m}"));
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", r.redirect_uri)
        .append_pair("code_verifier", r.verifier);
    let mut req = http
        .post(&p.token_endpoint)
        .header("accept", "application/json")
        .header("content-type", "application/x-www-form-urlencoded");
    match client.secret {
        // client_secret_basic: id and secret form-encoded first (RFC 6749 §2.3.1).
        Some(secret) => {
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                enc(client.id),
                enc(secret)
            ));
            req = req.header("authorization", format!("Basic {basic}"));
        }
        None => {
            form.append_pair("client_id", client.id);
        }
    }
    let answer = callout::send(req.body(form.finish())).await.map_err(fail)?;
    let doc: Json = serde_json::from_slice(&answer.body).unwrap_or(Json::Null);
    if answer.status != 200 {
        return Err(fail(format!(
            "HTTP status {}{}",
            answer.status,
            oauth_error(&doc)
        )));
    }
    doc.get("id_token")
        .and_then(Json::as_str)
        .map(str::to_owned)
        .ok_or_else(|| fail("the answer has no id_token (is `openid` in --scope?)".into()))
}

/// `: <error>: <description>` of an OAuth error answer, cleaned for a terminal and shortened.
pub fn oauth_error(doc: &Json) -> String {
    let field = |k: &str| doc.get(k).and_then(Json::as_str).map(clean);
    match (field("error"), field("error_description")) {
        (Some(e), Some(d)) => format!(": {e}: {d}"),
        (Some(e), None) => format!(": {e}"),
        _ => String::new(),
    }
}

/// At most 200 characters, control characters dropped.
pub fn clean(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// Checks the ID token's `nonce` and `iss` as it states them (OpenID Connect Core §3.1.3.7:
/// the nonce binds the token to this login). Its signature, audience and expiry are the
/// gateway's to verify, with the keys it discovers itself.
pub fn check_id_token(id_token: &str, issuer: &str, nonce: &str) -> Result<(), CliError> {
    let fail = |m: &str| CliError::Failed(format!("ID token: {m}"));
    let (_, payload, _) =
        crate::jose::jws::split(id_token, 64 * 1024).map_err(|_| fail("not a JWS"))?;
    let claims = b64::decode(payload, b64::Base64::Url)
        .ok()
        .and_then(|b| crate::jose::json::object(&b, true).ok())
        .ok_or_else(|| fail("the payload is not a JSON object"))?;
    if claims.get("iss").and_then(Json::as_str) != Some(issuer) {
        return Err(fail("issued by another issuer"));
    }
    let given = claims.get("nonce").and_then(Json::as_str).unwrap_or("");
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        given.as_bytes(),
        nonce.as_bytes(),
    )) {
        return Err(fail("its nonce is not this login's"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let t = random_token();
        assert_eq!(t.len(), 43);
        assert_ne!(t, random_token());
    }

    #[test]
    fn urls_must_be_https_or_loopback() {
        for ok in [
            "https://accounts.example.com",
            "http://127.0.0.1:8080",
            "http://localhost:1/x",
            "http://[::1]:5/",
        ] {
            assert!(check_url("u", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://accounts.example.com",
            "http://127.0.0.1.evil.test/",
            "ftp://127.0.0.1/",
            "javascript:alert(1)",
            "",
        ] {
            assert!(check_url("u", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn id_tokens_must_carry_this_logins_nonce() {
        let token = |claims: &str| format!("e30.{}.sig", b64::encode(claims));
        assert!(check_id_token(&token(r#"{"iss":"i","nonce":"n"}"#), "i", "n").is_ok());
        assert!(check_id_token(&token(r#"{"iss":"i","nonce":"m"}"#), "i", "n").is_err());
        assert!(check_id_token(&token(r#"{"iss":"i"}"#), "i", "n").is_err());
        assert!(check_id_token(&token(r#"{"iss":"j","nonce":"n"}"#), "i", "n").is_err());
        assert!(
            check_id_token(&token(r#"{"iss":"i","nonce":"n","nonce":"n"}"#), "i", "n").is_err()
        );
        assert!(check_id_token("garbage", "i", "n").is_err());
    }

    #[test]
    fn error_descriptions_are_cleaned() {
        let doc =
            serde_json::json!({"error": "invalid_grant", "error_description": "bad\u{1b}[2J code"});
        assert_eq!(oauth_error(&doc), ": invalid_grant: bad[2J code");
    }
}
