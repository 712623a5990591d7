//! The `authentication:` config section (DESIGN §5). Only shapes and static checks live here;
//! files and keys are read when the [`Authenticator`](super::Authenticator) is built.

use crate::invalid::Invalid;
use std::path::PathBuf;

use serde::Deserialize;

use crate::jose::Alg;

/// `authentication:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    #[serde(default)]
    pub policies: Vec<AuthPolicy>,
    #[serde(default)]
    pub trust: Trust,
    /// Where audit events (authentication failures, minted tokens) go.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The token deny-list.
    #[serde(default)]
    pub revocation: Option<super::revocation::RevocationConfig>,
}

/// `authentication.audit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `stderr` (default), `stdout`, `off`, or a file path (appended to).
    #[serde(default = "default_sink")]
    pub sink: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            sink: default_sink(),
        }
    }
}

fn default_sink() -> String {
    "stderr".into()
}

/// One named auth policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthPolicy {
    pub name: String,
    #[serde(default, rename = "match")]
    pub matcher: Match,
    pub methods: Vec<Method>,
    #[serde(default = "yes")]
    pub required: bool,
    #[serde(default)]
    pub require: Require,
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    #[serde(default)]
    pub api_key: Option<ApiKeyConfig>,
    #[serde(default)]
    pub basic: Option<BasicConfig>,
    #[serde(default)]
    pub oauth: Option<super::oauth::OAuthConfig>,
    #[serde(default)]
    pub hmac: Option<super::hmac::HmacConfig>,
    #[serde(default)]
    pub custom: Option<super::custom::CustomConfig>,
    #[serde(default)]
    pub x509: Option<super::x509::X509Config>,
}

fn yes() -> bool {
    true
}

/// `match:` — every listed criterion must hold; an empty list matches anything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Exact host names (case-insensitive, port ignored) or `*.suffix` wildcards.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub path_prefixes: Vec<String>,
    /// HTTP methods (case-insensitive).
    #[serde(default)]
    pub methods: Vec<String>,
    /// The `namespace` context extension.
    #[serde(default)]
    pub namespace: Option<String>,
}

pub use crate::telemetry::labels::Method;

/// `require:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Require {
    #[serde(default)]
    pub roles: Option<RoleRequirement>,
    /// Every listed scope must be held.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The credential's `amr` claim must contain `mfa` (RFC 8176).
    #[serde(default)]
    pub mfa: bool,
    /// Every listed method must be in the credential's `amr` claim.
    #[serde(default)]
    pub amr: Vec<String>,
    /// The credential's `acr` claim must be one of these.
    #[serde(default)]
    pub acr: Vec<String>,
}

/// `require.roles`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRequirement {
    #[serde(default)]
    pub any_of: Vec<String>,
    #[serde(default)]
    pub all_of: Vec<String>,
}

/// `jwt:` of a policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The request header carrying the token.
    #[serde(default = "default_jwt_header")]
    pub header: String,
    /// The scheme before the token in that header; empty for a bare token.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The explicit allow-list. Required. (`none` is not an algorithm: naming it is an error.)
    #[serde(default)]
    pub algorithms: Vec<Alg>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Also accepted as `jwks_cache_ttl`.
    #[serde(default = "default_jwks_ttl", alias = "jwks_cache_ttl")]
    pub jwks_cache_ttl_seconds: u64,
    /// Least time between two fetches of `jwks_uri` (unknown `kid`s, failures).
    #[serde(default = "default_cooldown")]
    pub jwks_refresh_cooldown_seconds: u64,
    #[serde(default = "default_fetch_timeout")]
    pub jwks_fetch_timeout_ms: u64,
    /// Environment variable holding the HMAC secret (HS* algorithms only).
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u64,
    #[serde(default)]
    pub claims: ClaimsMap,
    #[serde(default = "default_max_token")]
    pub max_token_bytes: usize,
    /// Accept ECDSA signatures whose `s` is in the upper half of the group order. Off by
    /// default: such a signature is the malleable twin `(r, n-s)` of a valid one. Issuers whose
    /// signing library does not normalize `s` (Go's `crypto/ecdsa`, Java's SunEC, OpenSSL)
    /// produce one for about half of their ES256/384/512 tokens; turn this on for them.
    #[serde(default)]
    pub accept_high_s: bool,
}

fn default_jwt_header() -> String {
    "authorization".into()
}
fn default_scheme() -> String {
    "Bearer".into()
}
fn default_jwks_ttl() -> u64 {
    300
}
fn default_cooldown() -> u64 {
    30
}
fn default_fetch_timeout() -> u64 {
    1500
}
fn default_skew() -> u64 {
    30
}
fn default_max_token() -> usize {
    16 * 1024
}

/// Where identity fields come from in the token's claims. Dotted paths reach into objects
/// (`realm_access.roles`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsMap {
    #[serde(default = "c_sub")]
    pub user_id: String,
    #[serde(default = "c_roles")]
    pub roles: String,
    #[serde(default = "c_scope")]
    pub scopes: String,
    #[serde(default = "c_email")]
    pub email: String,
}

impl Default for ClaimsMap {
    fn default() -> Self {
        Self {
            user_id: c_sub(),
            roles: c_roles(),
            scopes: c_scope(),
            email: c_email(),
        }
    }
}

fn c_sub() -> String {
    "sub".into()
}
fn c_roles() -> String {
    "roles".into()
}
fn c_scope() -> String {
    "scope".into()
}
fn c_email() -> String {
    "email".into()
}

/// `api_key:` of a policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub query_param: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    /// Accepted key prefixes (`sk_live_`); a string or a list. Empty: any.
    #[serde(default)]
    pub prefix: Prefixes,
    /// The key store (JSON, SHA-256 hashes only).
    pub store: PathBuf,
}

/// One string or a list of them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "PrefixForm")]
pub struct OneOrMany(pub Vec<String>);

/// One prefix or several.
pub type Prefixes = OneOrMany;

#[derive(Deserialize)]
#[serde(untagged)]
enum PrefixForm {
    One(String),
    Many(Vec<String>),
}

impl From<PrefixForm> for OneOrMany {
    fn from(f: PrefixForm) -> Self {
        match f {
            PrefixForm::One(s) => OneOrMany(vec![s]),
            PrefixForm::Many(v) => OneOrMany(v),
        }
    }
}

/// `basic:` of a policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicConfig {
    #[serde(default = "default_realm")]
    pub realm: String,
    /// The users file: JSON (`{"users": [...]}`) or Apache `htpasswd` lines, told apart by
    /// content; argon2id or bcrypt hashes.
    pub users: PathBuf,
    #[serde(default)]
    pub lockout: Lockout,
}

fn default_realm() -> String {
    "portcullis".into()
}

/// `basic.lockout`: after `max_failures` consecutive failures a user is locked for `seconds`,
/// doubled at each further lockout (capped at `max_seconds`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockout {
    #[serde(default = "default_failures")]
    pub max_failures: u32,
    #[serde(default = "default_lock_seconds")]
    pub seconds: u64,
    #[serde(default = "default_lock_max")]
    pub max_seconds: u64,
}

impl Default for Lockout {
    fn default() -> Self {
        Self {
            max_failures: default_failures(),
            seconds: default_lock_seconds(),
            max_seconds: default_lock_max(),
        }
    }
}

fn default_failures() -> u32 {
    5
}
fn default_lock_seconds() -> u64 {
    300
}
fn default_lock_max() -> u64 {
    3600
}

/// `trust:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    #[serde(default)]
    pub oidc: Vec<OidcTrust>,
}

/// One Talon-style trusted OIDC issuer; keys are found through OIDC discovery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcTrust {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default, alias = "allowedDomains")]
    pub allowed_domains: Vec<String>,
    #[serde(default, alias = "allowedEmails")]
    pub allowed_emails: Vec<String>,
    #[serde(default = "default_skew", alias = "clockSkewSeconds")]
    pub clock_skew_seconds: u64,
    /// Grants given to every identity this issuer vouches for.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Asymmetric algorithms accepted (default RS256, ES256, EdDSA).
    #[serde(default)]
    pub algorithms: Vec<Alg>,
    /// As `jwt.accept_high_s`.
    #[serde(default, alias = "acceptHighS")]
    pub accept_high_s: bool,
    #[serde(default)]
    pub claims: ClaimsMap,
    #[serde(default = "default_jwks_ttl", alias = "jwksCacheTtlSeconds")]
    pub jwks_cache_ttl_seconds: u64,
}

/// A Talon-style grant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub kind: GrantKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// `read` or `readwrite`; `readwrite` covers `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantKind {
    Read,
    #[serde(alias = "read_write")]
    Readwrite,
}

impl GrantKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "readwrite" => Some(Self::Readwrite),
            _ => None,
        }
    }
}

impl Authentication {
    /// Static checks; `Err(Invalid::new(key, message))`.
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.policies.iter().enumerate() {
            let at = |k: &str| format!("policies[{i}].{k}");
            if p.name.trim().is_empty() {
                return Err(Invalid::new(at("name"), "must not be empty"));
            }
            if !names.insert(p.name.as_str()) {
                return Err(Invalid::new(
                    at("name"),
                    format!("{:?} is used twice", p.name),
                ));
            }
            if p.methods.is_empty() {
                return Err(Invalid::new(
                    at("methods"),
                    "list at least one method (jwt, api_key, basic, oauth, hmac, custom, x509)",
                ));
            }
            for prefix in &p.matcher.path_prefixes {
                if !prefix.starts_with('/') {
                    return Err(Invalid::new(
                        at("match.path_prefixes"),
                        format!("{prefix:?} must start with /"),
                    ));
                }
            }
            for m in &p.methods {
                match m {
                    Method::Jwt => {
                        if let Some(jwt) = &p.jwt {
                            jwt.validate().map_err(|e| e.under(&at("jwt")))?;
                        } else if self.trust.oidc.is_empty() {
                            return Err(Invalid::new(
                                at("jwt"),
                                "method jwt needs a jwt block or authentication.trust.oidc issuers",
                            ));
                        }
                    }
                    Method::ApiKey => {
                        let Some(k) = &p.api_key else {
                            return Err(Invalid::new(
                                at("api_key"),
                                "method api_key needs an api_key block",
                            ));
                        };
                        if k.header.is_none() && k.query_param.is_none() && k.cookie.is_none() {
                            return Err(Invalid::new(
                                at("api_key"),
                                "set at least one of header, query_param, cookie",
                            ));
                        }
                    }
                    Method::Basic if p.basic.is_none() => {
                        return Err(Invalid::new(
                            at("basic"),
                            "method basic needs a basic block",
                        ));
                    }
                    Method::OAuth => match &p.oauth {
                        Some(o) => o.validate().map_err(|e| e.under(&at("oauth")))?,
                        None => {
                            return Err(Invalid::new(
                                at("oauth"),
                                "method oauth needs an oauth block",
                            ));
                        }
                    },
                    Method::Hmac => match &p.hmac {
                        Some(h) => h.validate().map_err(|e| e.under(&at("hmac")))?,
                        None => {
                            return Err(Invalid::new(
                                at("hmac"),
                                "method hmac needs an hmac block",
                            ));
                        }
                    },
                    Method::Custom => match &p.custom {
                        Some(c) => c.validate().map_err(|e| e.under(&at("custom")))?,
                        None => {
                            return Err(Invalid::new(
                                at("custom"),
                                "method custom needs a custom block",
                            ));
                        }
                    },
                    Method::X509 => match &p.x509 {
                        Some(x) => x.validate().map_err(|e| e.under(&at("x509")))?,
                        None => {
                            return Err(Invalid::new(
                                at("x509"),
                                "method x509 needs an x509 block",
                            ));
                        }
                    },
                    Method::Basic => {}
                }
            }
            if let Some(b) = &p.basic
                && (b.lockout.max_failures == 0 || b.lockout.seconds == 0)
            {
                return Err(Invalid::new(
                    at("basic.lockout"),
                    "max_failures and seconds must be > 0",
                ));
            }
        }
        for (i, t) in self.trust.oidc.iter().enumerate() {
            let at = |k: &str| format!("trust.oidc[{i}].{k}");
            if !(t.issuer.starts_with("https://") || t.issuer.starts_with("http://")) {
                return Err(Invalid::new(at("issuer"), "must be an http(s) URL"));
            }
            // Without an audience, an ID token the issuer made for any of its clients (any
            // other application) would be accepted here.
            if t.audiences.is_empty() || t.audiences.iter().any(|a| a.trim().is_empty()) {
                return Err(Invalid::new(
                    at("audiences"),
                    "required: the client ids (aud) whose tokens this issuer may present",
                ));
            }
            if let Some(a) = t.algorithms.iter().find(|a| a.is_hmac()) {
                return Err(Invalid::new(
                    at("algorithms"),
                    format!("{a} is not an asymmetric JWS algorithm"),
                ));
            }
        }
        if let Some(r) = &self.revocation {
            r.validate().map_err(|e| e.under("revocation"))?;
        }
        Ok(())
    }
}

impl JwtConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if self.algorithms.is_empty() {
            return Err(Invalid::new(
                "algorithms",
                "an explicit allow-list is required",
            ));
        }
        let hmac = self.algorithms.iter().any(|a| a.is_hmac());
        let asym = self.algorithms.iter().any(|a| !a.is_hmac());
        let sources = usize::from(self.jwks_uri.is_some())
            + usize::from(self.jwks_file.is_some())
            + usize::from(self.secret_env.is_some());
        if sources != 1 {
            return Err(Invalid::new(
                "jwks_uri",
                "set exactly one of jwks_uri, jwks_file, secret_env",
            ));
        }
        if hmac && self.secret_env.is_none() {
            return Err(Invalid::new("algorithms", "HS* algorithms need secret_env"));
        }
        if asym && self.secret_env.is_some() {
            return Err(Invalid::new(
                "algorithms",
                "with secret_env only HS* algorithms are allowed",
            ));
        }
        if let Some(uri) = &self.jwks_uri
            && !(uri.starts_with("https://") || uri.starts_with("http://"))
        {
            return Err(Invalid::new("jwks_uri", "must be an http(s) URL"));
        }
        if self.clock_skew_seconds > 600 {
            return Err(Invalid::new("clock_skew_seconds", "at most 600"));
        }
        if self.header.trim().is_empty() {
            return Err(Invalid::new("header", "must not be empty"));
        }
        Ok(())
    }
}
