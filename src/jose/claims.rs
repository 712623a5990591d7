//! The registered claims (RFC 7519 §4.1) checked on every token Portcullis accepts: `exp`
//! required, `nbf` and `iat` numeric and not in the future (with leeway), `iss` and `aud` when
//! the verifier names them.

use serde_json::{Map, Value as Json};

/// Why the claims were refused (for logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("{0} missing")]
    Missing(&'static str),
    #[error("{0} is not a number or out of range")]
    NotNumeric(&'static str),
    #[error("expired")]
    Expired,
    #[error("not valid yet (nbf)")]
    NotYetValid,
    #[error("issued in the future (iat)")]
    IssuedInFuture,
    #[error("iss missing or not the expected issuer")]
    Issuer,
    #[error("aud missing or not an expected audience")]
    Audience,
}

/// What the registered claims must satisfy.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// `iss` must equal this.
    pub issuer: Option<&'a str>,
    /// `aud` (a string, or an array of strings) must name one of these; empty: not checked.
    pub audiences: &'a [String],
    /// Seconds of clock difference tolerated on `exp`, `nbf` and `iat`.
    pub leeway: i64,
}

/// Checks the registered claims at `now`; returns `exp`.
pub fn check(claims: &Map<String, Json>, expect: &Expect<'_>, now: i64) -> Result<i64, ClaimError> {
    let exp = number(claims.get("exp").ok_or(ClaimError::Missing("exp"))?, "exp")?;
    if now >= exp.saturating_add(expect.leeway) {
        return Err(ClaimError::Expired);
    }
    let later = now.saturating_add(expect.leeway);
    if let Some(nbf) = claims.get("nbf")
        && number(nbf, "nbf")? > later
    {
        return Err(ClaimError::NotYetValid);
    }
    if let Some(iat) = claims.get("iat")
        && number(iat, "iat")? > later
    {
        return Err(ClaimError::IssuedInFuture);
    }
    if let Some(issuer) = expect.issuer
        && claims.get("iss").and_then(Json::as_str) != Some(issuer)
    {
        return Err(ClaimError::Issuer);
    }
    if !expect.audiences.is_empty() && !audience_matches(claims.get("aud"), expect.audiences) {
        return Err(ClaimError::Audience);
    }
    Ok(exp)
}

/// `aud` names one of `audiences`: a string, or an array of strings only.
pub fn audience_matches(aud: Option<&Json>, audiences: &[String]) -> bool {
    match aud {
        Some(Json::String(a)) => audiences.contains(a),
        Some(Json::Array(list)) => {
            list.iter().all(Json::is_string)
                && list
                    .iter()
                    .filter_map(Json::as_str)
                    .any(|a| audiences.iter().any(|c| c == a))
        }
        _ => false,
    }
}

/// A NumericDate (RFC 7519 §2): seconds, possibly fractional (rounded down).
pub fn number(v: &Json, name: &'static str) -> Result<i64, ClaimError> {
    match v {
        Json::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                    .map(|f| f.floor() as i64)
            })
            .ok_or(ClaimError::NotNumeric(name)),
        _ => Err(ClaimError::NotNumeric(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Json) -> Map<String, Json> {
        match v {
            Json::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn registered_claims() {
        let aud = ["orders".to_string()];
        let e = Expect {
            issuer: Some("i"),
            audiences: &aud,
            leeway: 30,
        };
        let ok = claims(json!({"exp": 1000, "iss": "i", "aud": ["x", "orders"], "iat": 500}));
        assert_eq!(check(&ok, &e, 900), Ok(1000));
        assert_eq!(check(&ok, &e, 1030), Err(ClaimError::Expired));
        let future = claims(json!({"exp": 5000, "iss": "i", "aud": "orders", "iat": 4000}));
        assert_eq!(check(&future, &e, 1000), Err(ClaimError::IssuedInFuture));
        assert!(check(&future, &e, 3980).is_ok());
        let bad_aud = claims(json!({"exp": 1000, "iss": "i", "aud": ["orders", 1]}));
        assert_eq!(check(&bad_aud, &e, 0), Err(ClaimError::Audience));
        let no_exp = claims(json!({"iss": "i", "aud": "orders"}));
        assert_eq!(check(&no_exp, &e, 0), Err(ClaimError::Missing("exp")));
        let str_exp = claims(json!({"exp": "1000", "iss": "i", "aud": "orders"}));
        assert_eq!(check(&str_exp, &e, 0), Err(ClaimError::NotNumeric("exp")));
        let nbf = claims(json!({"exp": 1000, "nbf": 600, "iss": "i", "aud": "orders"}));
        assert_eq!(check(&nbf, &e, 500), Err(ClaimError::NotYetValid));
        let other_iss = claims(json!({"exp": 1000, "iss": "j", "aud": "orders"}));
        assert_eq!(check(&other_iss, &e, 0), Err(ClaimError::Issuer));
    }
}
