//! OAuth 2.0 token introspection (RFC 7662): the bearer token is POSTed to the authorization
//! server's introspection endpoint, authenticated as a client, and only an answer of
//! `{"active": true, ...}` whose `exp`/`nbf`/`iss`/`aud` hold is accepted.
//!
//! Answers are cached by the SHA-256 of the token: an active one until the earlier of
//! `cache_ttl_seconds` and its `exp`, a refusal for [`NEGATIVE_TTL`]; failures of the endpoint
//! (time-out, error status, an unreadable answer) are not cached and refuse. Concurrent Checks
//! with the same token share one call.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value as Json};

use super::Refused;
use super::callout::{
    self, AnswerCache, Limit, NEGATIVE_TTL, Source, check_max_concurrent, check_timeout, check_url,
};
use super::config::{ClaimsMap, Method};
use super::identity::Identity;
use super::jwt::{lookup, string_list};
use super::secret::SecretSource;
use crate::env::Env;
use crate::invalid::Invalid;
use crate::telemetry::labels::Refusal;

/// `oauth:` of a policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    pub introspection_url: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// How the client authenticates to the endpoint.
    #[serde(default)]
    pub auth: ClientAuth,
    /// Sent as `token_type_hint`; empty: not sent.
    #[serde(default = "default_hint")]
    pub token_type_hint: String,
    /// The request header carrying the token, and the scheme before it.
    #[serde(default = "default_header")]
    pub header: String,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    #[serde(default = "default_ttl")]
    pub cache_ttl_seconds: u64,
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Every listed scope must be in the answer's `scope` (else 403 `insufficient_scope`).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// When set, the answer's `iss` must equal it.
    #[serde(default)]
    pub issuer: Option<String>,
    /// When set, the answer's `aud` (a string or an array) must name one of them.
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u64,
    #[serde(default)]
    pub claims: ClaimsMap,
    #[serde(default = "default_max_token")]
    pub max_token_bytes: usize,
    /// Introspection calls in flight at once; as many more wait up to `timeout_ms`.
    #[serde(default = "callout::default_max_concurrent")]
    pub max_concurrent: usize,
    /// Allows a plain `http` URL to a host that is not loopback (a mesh whose sidecars add
    /// mTLS; tests).
    #[serde(default)]
    pub allow_insecure_http: bool,
}

/// `oauth.auth`: HTTP Basic (`client_secret_basic`) or form fields (`client_secret_post`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Basic,
    Post,
}

fn default_hint() -> String {
    "access_token".into()
}
fn default_header() -> String {
    "authorization".into()
}
fn default_scheme() -> String {
    "Bearer".into()
}
fn default_ttl() -> u64 {
    60
}
fn default_cache_size() -> usize {
    10_000
}
fn default_timeout() -> u64 {
    1000
}
fn default_skew() -> u64 {
    30
}
fn default_max_token() -> usize {
    16 * 1024
}

impl OAuthConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_url(
            "introspection_url",
            &self.introspection_url,
            self.allow_insecure_http,
        )?;
        if self.client_id.trim().is_empty() {
            return Err(Invalid::new("client_id", "must not be empty"));
        }
        if usize::from(self.client_secret_env.is_some())
            + usize::from(self.client_secret_file.is_some())
            != 1
        {
            return Err(Invalid::new(
                "client_secret_env",
                "set exactly one of client_secret_env, client_secret_file",
            ));
        }
        if self.header.trim().is_empty() {
            return Err(Invalid::new("header", "must not be empty"));
        }
        check_timeout("timeout_ms", self.timeout_ms)?;
        check_max_concurrent("max_concurrent", self.max_concurrent)?;
        if self.cache_size == 0 {
            return Err(Invalid::new("cache_size", "must be > 0"));
        }
        if self.clock_skew_seconds > 600 {
            return Err(Invalid::new("clock_skew_seconds", "at most 600"));
        }
        Ok(())
    }
}

type Answer = Result<Arc<Identity>, Refused>;

/// The `oauth` method of one policy.
pub struct OAuthMethod {
    pub header: String,
    pub scheme: String,
    config: OAuthConfig,
    secret: SecretSource,
    client: reqwest::Client,
    limit: Limit,
    cache: AnswerCache<Answer>,
}

impl std::fmt::Debug for OAuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthMethod")
            .field("introspection_url", &self.config.introspection_url)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

impl OAuthMethod {
    pub fn new(config: &OAuthConfig, env: &dyn Env) -> Result<Self, String> {
        let vars: Vec<String> = config.client_secret_env.iter().cloned().collect();
        let secret = SecretSource::open(
            env,
            &vars,
            config.client_secret_file.as_deref(),
            1,
            "oauth.client_secret",
        )?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = callout::client(timeout)?;
        Ok(Self {
            header: config.header.to_ascii_lowercase(),
            scheme: config.scheme.clone(),
            config: config.clone(),
            secret,
            client,
            limit: Limit::new(config.max_concurrent, timeout),
            cache: AnswerCache::new(config.cache_size),
        })
    }

    pub fn max_token_bytes(&self) -> usize {
        self.config.max_token_bytes
    }

    /// The identity the endpoint vouches for, and whether its answer came from the cache.
    pub async fn authenticate(&self, token: &str, thumbprint: &str, now: i64) -> (Answer, Source) {
        let (answer, source) = self
            .cache
            .get_or_fetch(callout::key(token.as_bytes()), || async {
                match self.introspect(token, thumbprint, now).await {
                    Ok(id) => {
                        let left = id.expires_at.map_or(u64::MAX, |exp| {
                            u64::try_from(exp.saturating_sub(now)).unwrap_or(0)
                        });
                        let ttl = self.config.cache_ttl_seconds.min(left);
                        (Ok(Arc::new(id)), Duration::from_secs(ttl))
                    }
                    Err(Failure::Definitive(r)) => (Err(r), NEGATIVE_TTL),
                    Err(Failure::Transient(r)) => (Err(r), Duration::ZERO),
                }
            })
            .await;
        let answer = match answer {
            // A cached identity still expires with its token.
            Ok(id) if id.expires_at.is_some_and(|exp| exp + self.skew() < now) => {
                Err(refused(Refusal::InvalidToken, "token expired".into()))
            }
            Ok(id) => match self
                .config
                .required_scopes
                .iter()
                .find(|s| !id.has_scope(s))
            {
                Some(s) => Err(refused(
                    Refusal::InsufficientScope,
                    format!("required scope {s:?} not granted"),
                )),
                None => Ok(id),
            },
            Err(e) => Err(e),
        };
        (answer, source)
    }

    fn skew(&self) -> i64 {
        i64::try_from(self.config.clock_skew_seconds).unwrap_or(30)
    }

    async fn introspect(
        &self,
        token: &str,
        thumbprint: &str,
        now: i64,
    ) -> Result<Identity, Failure> {
        let c = &self.config;
        let secrets = self.secret.get();
        let secret = secrets
            .0
            .first()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .unwrap_or_default();
        let mut fields: Vec<(&str, &str)> = vec![("token", token)];
        if !c.token_type_hint.is_empty() {
            fields.push(("token_type_hint", &c.token_type_hint));
        }
        let mut req = self
            .client
            .post(&c.introspection_url)
            .header("accept", "application/json");
        match c.auth {
            ClientAuth::Basic => {
                // RFC 6749 §2.3.1: both form-encoded before they are joined.
                use base64::Engine as _;
                let user: String =
                    form_urlencoded::byte_serialize(c.client_id.as_bytes()).collect();
                let pass: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                req = req.header("authorization", format!("Basic {basic}"));
            }
            ClientAuth::Post => {
                fields.push(("client_id", &c.client_id));
                fields.push(("client_secret", &secret));
            }
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let req = req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        let _slot = self.limit.slot().await.map_err(Failure::Transient)?;
        let answer = callout::send(req)
            .await
            .map_err(|e| transient(format!("introspection failed: {e}")))?;
        if answer.status != 200 {
            return Err(transient(format!(
                "introspection answered HTTP {}",
                answer.status
            )));
        }
        let body: Map<String, Json> = serde_json::from_slice(&answer.body)
            .map_err(|_| transient("introspection answer is not a JSON object".into()))?;
        self.identity(body, thumbprint, now)
    }

    /// Checks an introspection answer and builds the identity it stands for.
    fn identity(
        &self,
        body: Map<String, Json>,
        thumbprint: &str,
        now: i64,
    ) -> Result<Identity, Failure> {
        let c = &self.config;
        let skew = self.skew();
        if body.get("active") != Some(&Json::Bool(true)) {
            return Err(definitive("token is not active".into()));
        }
        let time = |name: &str| -> Result<Option<i64>, Failure> {
            match body.get(name) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::Number(n)) => n
                    .as_i64()
                    .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                    .map(Some)
                    .ok_or_else(|| definitive(format!("{name} is not a time"))),
                Some(_) => Err(definitive(format!("{name} is not numeric"))),
            }
        };
        let exp = time("exp")?;
        if exp.is_some_and(|exp| exp + skew < now) {
            return Err(definitive("token expired".into()));
        }
        if time("nbf")?.is_some_and(|nbf| nbf - skew > now) {
            return Err(definitive("token not yet valid (nbf)".into()));
        }
        let iss = body.get("iss").and_then(Json::as_str).map(str::to_owned);
        if let Some(want) = &c.issuer
            && iss.as_deref() != Some(want.as_str())
        {
            return Err(definitive("iss is not the configured issuer".into()));
        }
        if !c.audiences.is_empty() {
            let auds = string_list_strict(body.get("aud"));
            if !auds.iter().any(|a| c.audiences.contains(a)) {
                return Err(definitive("aud names no configured audience".into()));
            }
        }
        let subject = [c.claims.user_id.as_str(), "sub", "username", "client_id"]
            .iter()
            .find_map(|k| {
                lookup(&body, k)
                    .and_then(Json::as_str)
                    .filter(|s| !s.is_empty())
            })
            .ok_or_else(|| definitive("no sub, username or client_id".into()))?
            .to_string();
        let mut id = Identity::new(Method::OAuth, subject, thumbprint.to_string());
        id.issuer = iss;
        id.roles = string_list(lookup(&body, &c.claims.roles));
        id.scopes = string_list(lookup(&body, &c.claims.scopes));
        id.email = lookup(&body, &c.claims.email)
            .and_then(Json::as_str)
            .map(str::to_owned);
        id.expires_at = exp;
        id.claims = body;
        Ok(id)
    }
}

/// `aud` as a list: a string is one audience; an array's strings.
fn string_list_strict(v: Option<&Json>) -> Vec<String> {
    match v {
        Some(Json::String(s)) => vec![s.clone()],
        Some(Json::Array(a)) => a
            .iter()
            .filter_map(Json::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

enum Failure {
    /// The endpoint said no (or said something that can never be accepted): remembered briefly.
    Definitive(Refused),
    /// The endpoint could not be asked: refused now, asked again next time.
    Transient(Refused),
}

fn refused(code: Refusal, reason: String) -> Refused {
    Refused { code, reason }
}

fn definitive(reason: String) -> Failure {
    Failure::Definitive(refused(Refusal::InvalidToken, reason))
}

fn transient(reason: String) -> Failure {
    Failure::Transient(refused(Refusal::InvalidToken, reason))
}
