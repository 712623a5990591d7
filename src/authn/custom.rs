//! An external validator: the selected request headers are POSTed as
//! `{"headers": {name: value}}` to a service that answers 200 with the caller's identity
//! (`{"subject", "roles", "scopes", "claims", "expires_at"}`) or anything else to refuse.
//!
//! Answers are cached by the SHA-256 of the selected headers: an identity for
//! `cache_ttl_seconds` (never past its `expires_at`), a 401/403 for a few seconds; a failing
//! validator (time-out, another status, an unreadable answer) refuses and is asked again next
//! time. Concurrent Checks with the same headers share one call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value as Json};

use super::Refused;
use super::callout::{
    self, AnswerCache, Limit, NEGATIVE_TTL, Source, check_max_concurrent, check_timeout, check_url,
};
use super::config::Method;
use super::identity::Identity;
use super::jwt::string_list;
use super::request::RequestView;
use crate::invalid::Invalid;
use crate::telemetry::labels::Refusal;

/// `custom:` of a policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomConfig {
    pub url: String,
    /// The request headers sent to the validator (only these; lowercase).
    pub headers: Vec<String>,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_ttl")]
    pub cache_ttl_seconds: u64,
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// Calls in flight at once; as many more wait up to `timeout_ms`.
    #[serde(default = "callout::default_max_concurrent")]
    pub max_concurrent: usize,
    /// Allows a plain `http` URL to a host that is not loopback (a mesh whose sidecars add
    /// mTLS; tests).
    #[serde(default)]
    pub allow_insecure_http: bool,
}

fn default_timeout() -> u64 {
    1000
}
fn default_ttl() -> u64 {
    60
}
fn default_cache_size() -> usize {
    10_000
}

/// Largest total size of the headers sent.
const MAX_SENT_BYTES: usize = 16 * 1024;

impl CustomConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_url("url", &self.url, self.allow_insecure_http)?;
        if self.headers.is_empty() || self.headers.iter().any(|h| h.trim().is_empty()) {
            return Err(Invalid::new(
                "headers",
                "list the request headers the validator reads",
            ));
        }
        check_timeout("timeout_ms", self.timeout_ms)?;
        check_max_concurrent("max_concurrent", self.max_concurrent)?;
        if self.cache_size == 0 {
            return Err(Invalid::new("cache_size", "must be > 0"));
        }
        Ok(())
    }
}

type Answer = Result<Arc<Identity>, Refused>;

/// The `custom` method of one policy.
pub struct CustomMethod {
    pub headers: Vec<String>,
    url: String,
    ttl: u64,
    client: reqwest::Client,
    limit: Limit,
    cache: AnswerCache<Answer>,
}

impl std::fmt::Debug for CustomMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomMethod")
            .field("url", &self.url)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl CustomMethod {
    pub fn new(c: &CustomConfig) -> Result<Self, String> {
        Ok(Self {
            headers: c
                .headers
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            url: c.url.clone(),
            ttl: c.cache_ttl_seconds,
            client: callout::client(Duration::from_millis(c.timeout_ms))?,
            limit: Limit::new(c.max_concurrent, Duration::from_millis(c.timeout_ms)),
            cache: AnswerCache::new(c.cache_size),
        })
    }

    /// The selected headers as sent (canonical JSON), `None` when the request has none of them.
    pub fn presented(&self, req: &RequestView<'_>) -> Option<String> {
        let selected: BTreeMap<&str, &str> = self
            .headers
            .iter()
            .filter_map(|h| req.header(h).map(|v| (h.as_str(), v)))
            .collect();
        if selected.is_empty() {
            return None;
        }
        serde_json::to_string(&serde_json::json!({ "headers": selected })).ok()
    }

    /// The validator's verdict on `body` (from [`Self::presented`]).
    pub async fn authenticate(&self, body: &str, thumbprint: &str, now: i64) -> (Answer, Source) {
        if body.len() > MAX_SENT_BYTES {
            return (
                Err(refused(
                    Refusal::InvalidToken,
                    "credential headers too large".into(),
                )),
                Source::Miss,
            );
        }
        let (answer, source) = self
            .cache
            .get_or_fetch(callout::key(body.as_bytes()), || async {
                match self.ask(body, thumbprint, now).await {
                    Ok(id) => {
                        let left = id.expires_at.map_or(u64::MAX, |exp| {
                            u64::try_from(exp.saturating_sub(now)).unwrap_or(0)
                        });
                        (Ok(Arc::new(id)), Duration::from_secs(self.ttl.min(left)))
                    }
                    Err((r, definitive)) => {
                        let ttl = if definitive {
                            NEGATIVE_TTL
                        } else {
                            Duration::ZERO
                        };
                        (Err(r), ttl)
                    }
                }
            })
            .await;
        let answer = match answer {
            Ok(id) if id.expires_at.is_some_and(|exp| exp < now) => Err(refused(
                Refusal::InvalidToken,
                "validator's identity expired".into(),
            )),
            other => other,
        };
        (answer, source)
    }

    /// `Err((refusal, definitive))`.
    async fn ask(
        &self,
        body: &str,
        thumbprint: &str,
        now: i64,
    ) -> Result<Identity, (Refused, bool)> {
        let req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body.to_string());
        let _slot = self.limit.slot().await.map_err(|r| (r, false))?;
        let answer = callout::send(req).await.map_err(|e| {
            (
                refused(Refusal::InvalidToken, format!("validator failed: {e}")),
                false,
            )
        })?;
        match answer.status {
            200 => {}
            401 | 403 => {
                return Err((
                    refused(
                        Refusal::InvalidToken,
                        format!("validator refused (HTTP {})", answer.status),
                    ),
                    true,
                ));
            }
            s => {
                return Err((
                    refused(
                        Refusal::InvalidToken,
                        format!("validator answered HTTP {s}"),
                    ),
                    false,
                ));
            }
        }
        let bad = |m: &str| {
            (
                refused(Refusal::InvalidToken, format!("validator answer: {m}")),
                false,
            )
        };
        let v: Map<String, Json> =
            serde_json::from_slice(&answer.body).map_err(|_| bad("not a JSON object"))?;
        let subject = v
            .get("subject")
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("no subject"))?;
        let mut id = Identity::new(Method::Custom, subject.to_string(), thumbprint.to_string());
        id.roles = string_list(v.get("roles"));
        id.scopes = string_list(v.get("scopes"));
        match v.get("claims") {
            None | Some(Json::Null) => {}
            Some(Json::Object(m)) => id.claims = m.clone(),
            Some(_) => return Err(bad("claims is not an object")),
        }
        match v.get("expires_at") {
            None | Some(Json::Null) => {}
            Some(e) => {
                let exp = e.as_i64().ok_or_else(|| bad("expires_at is not seconds"))?;
                if exp < now {
                    return Err(bad("expires_at has passed"));
                }
                id.expires_at = Some(exp);
            }
        }
        Ok(id)
    }
}

fn refused(code: Refusal, reason: String) -> Refused {
    Refused { code, reason }
}
