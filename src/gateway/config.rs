//! The `gateway:` config section and the caller authentication mode.
//!
//! ```yaml
//! gateway:
//!   addr: 127.0.0.1:9292          # TCP; gRPC and gRPC-Web on the same port
//!   allow_open: false             # open mode refuses a non-loopback addr unless true
//!   cors_origins: [https://console.example.com]
//!   audience: portcullis-gateway  # the `aud` gateway JWTs must carry
//!   max_token_ttl_seconds: 86400  # the longest lifetime of a token the gateway issues
//!   api_key_policy: keys          # the authentication policy whose API key store the gateway
//!                                 # manages (default: the first one with `api_key`)
//!   api_key_scopes: [orders:read] # non-gateway scopes a key created here may carry (default none)
//!   # secrets, when not in the environment (the environment wins):
//!   jwt_secret: ...               # GATEWAY_JWT_SECRET
//!   token: ...                    # GATEWAY_TOKEN
//!   password: ...                 # GATEWAY_PASSWORD
//!   tls: {cert_file: ..., key_file: ..., client_ca_file: ..., client_auth: require}
//! ```
//!
//! The mode is the first of `jwt_secret` → `token` → `password` that is set (each read from
//! its environment variable, else from the config), else client certificates when `tls` has a
//! `client_ca_file` (mode `client_cert`), else open. With a secret mode and a `client_ca_file`,
//! the certificate is checked at the handshake and the caller is the secret's. The environment is read
//! through [`crate::env::Env`] so that tests pass a map.

use crate::invalid::Invalid;
use std::net::SocketAddr;

use serde::Deserialize;

use crate::env::Env;
use crate::listen::ListenAddr;

/// The default gateway address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9292";
/// The default `aud` of gateway tokens.
pub const DEFAULT_AUDIENCE: &str = "portcullis-gateway";
/// The shortest accepted `GATEWAY_JWT_SECRET` (HS256 keys should carry 256 bits).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// `gateway:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Serve the gateway (default true when the section is present).
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_addr")]
    pub addr: String,
    #[serde(default)]
    pub allow_open: bool,
    #[serde(default)]
    pub cors_origins: Vec<String>,
    #[serde(default = "default_audience")]
    pub audience: String,
    #[serde(default = "default_max_ttl")]
    pub max_token_ttl_seconds: u64,
    #[serde(default)]
    pub api_key_policy: Option<String>,
    /// Scopes other than `gateway:*` that a key created through the gateway may carry.
    #[serde(default)]
    pub api_key_scopes: Vec<String>,
    #[serde(default)]
    pub jwt_secret: Option<Secret>,
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// TLS and mTLS on the gateway's port.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: default_addr(),
            allow_open: false,
            cors_origins: Vec::new(),
            audience: default_audience(),
            max_token_ttl_seconds: default_max_ttl(),
            api_key_policy: None,
            api_key_scopes: Vec::new(),
            jwt_secret: None,
            token: None,
            password: None,
            tls: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_addr() -> String {
    DEFAULT_ADDR.to_string()
}
fn default_audience() -> String {
    DEFAULT_AUDIENCE.to_string()
}
fn default_max_ttl() -> u64 {
    86_400
}

/// A secret from the config; never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl GatewayConfig {
    /// Checks the section; the key is below `gateway`.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.socket_addr().map_err(|m| Invalid::new("addr", m))?;
        for (i, origin) in self.cors_origins.iter().enumerate() {
            validate_origin(origin).map_err(|m| Invalid::new(format!("cors_origins[{i}]"), m))?;
        }
        if self.audience.trim().is_empty() {
            return Err(Invalid::new("audience", "must not be empty"));
        }
        if let Some(tls) = &self.tls {
            tls.validate().map_err(|e| e.under("tls"))?;
        }
        if self.max_token_ttl_seconds == 0 {
            return Err(Invalid::new(
                "max_token_ttl_seconds",
                "must be greater than 0",
            ));
        }
        Ok(())
    }

    /// The address as a `host:port` to bind (TCP only).
    pub fn socket_addr(&self) -> Result<ListenAddr, String> {
        match ListenAddr::parse(&self.addr)? {
            a @ (ListenAddr::Tcp(_) | ListenAddr::Host(_)) => Ok(a),
            _ => Err("the gateway listens on TCP only".into()),
        }
    }
}

/// An origin as browsers send it: `scheme://host[:port]`, no path.
fn validate_origin(origin: &str) -> Result<(), String> {
    let uri: http::Uri = origin
        .parse()
        .map_err(|_| format!("{origin:?} is not an origin like https://app.example.com"))?;
    let ok = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some()
        && uri
            .path_and_query()
            .is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty())
        && !origin.ends_with('/');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{origin:?} is not an origin like https://app.example.com (scheme, host, optional \
             port; no path, no wildcard)"
        ))
    }
}

/// How callers authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// HS256 JWTs signed with this secret (`GATEWAY_JWT_SECRET`).
    Jwt(Vec<u8>),
    /// A static bearer token (`GATEWAY_TOKEN`).
    Token(String),
    /// HTTP Basic with this password, any user name (`GATEWAY_PASSWORD`).
    Password(String),
    /// The client certificate verified by the TLS handshake (`gateway.tls.client_ca_file`).
    ClientCert,
    /// No authentication.
    Open,
}

impl std::fmt::Debug for AuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl AuthMode {
    /// `jwt`, `token`, `password` or `open`.
    pub fn name(&self) -> &'static str {
        match self {
            AuthMode::Jwt(_) => "jwt",
            AuthMode::Token(_) => "token",
            AuthMode::Password(_) => "password",
            AuthMode::ClientCert => "client_cert",
            AuthMode::Open => "open",
        }
    }

    /// The mode from the environment and the config, in the order `GATEWAY_JWT_SECRET` →
    /// `GATEWAY_TOKEN` → `GATEWAY_PASSWORD` → client certificates (`gateway.tls` with a
    /// `client_ca_file`) → open. A variable that is set but empty is an
    /// error (never a silent fall-through to a weaker mode), and so is a JWT secret shorter
    /// than [`MIN_JWT_SECRET_BYTES`].
    /// `Err` names where the refused value came from: the variable, or `gateway.<key>`.
    pub fn resolve(config: &GatewayConfig, env: &(impl Env + ?Sized)) -> Result<Self, Invalid> {
        let mut source = String::new();
        let mut pick = |var: &str,
                        key: &str,
                        from_config: &Option<Secret>|
         -> Result<Option<String>, Invalid> {
            let value = env.get(var).map(|v| (v, var.to_string())).or_else(|| {
                from_config
                    .as_ref()
                    .map(|s| (s.0.clone(), format!("gateway.{key}")))
            });
            match value {
                Some((v, from)) if v.is_empty() => Err(Invalid::new(from, "is set but empty")),
                Some((v, from)) => {
                    source = from;
                    Ok(Some(v))
                }
                None => Ok(None),
            }
        };
        if let Some(secret) = pick("GATEWAY_JWT_SECRET", "jwt_secret", &config.jwt_secret)? {
            if secret.len() < MIN_JWT_SECRET_BYTES {
                return Err(Invalid::new(
                    source,
                    format!("the gateway JWT secret must be at least {MIN_JWT_SECRET_BYTES} bytes"),
                ));
            }
            return Ok(AuthMode::Jwt(secret.into_bytes()));
        }
        if let Some(token) = pick("GATEWAY_TOKEN", "token", &config.token)? {
            return Ok(AuthMode::Token(token));
        }
        if let Some(password) = pick("GATEWAY_PASSWORD", "password", &config.password)? {
            return Ok(AuthMode::Password(password));
        }
        if config
            .tls
            .as_ref()
            .is_some_and(|t| t.client_auth() != crate::tls::ClientAuth::None)
        {
            return Ok(AuthMode::ClientCert);
        }
        Ok(AuthMode::Open)
    }

    /// Refuses open mode on a non-loopback address unless `allow_open`.
    pub fn check_bind(&self, addr: &SocketAddr, allow_open: bool) -> Result<(), String> {
        if *self == AuthMode::Open {
            if !addr.ip().is_loopback() && !allow_open {
                return Err(format!(
                    "the gateway has no caller authentication (set GATEWAY_JWT_SECRET, \
                     GATEWAY_TOKEN or GATEWAY_PASSWORD) and refuses to listen on the \
                     non-loopback address {addr}; set gateway.allow_open: true to allow it"
                ));
            }
            tracing::warn!(
                gateway.addr = %addr,
                "the gateway runs in open mode: every caller may read and write policies and data"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn modes_resolve_in_order() {
        let c = GatewayConfig::default();
        let all = env(&[
            ("GATEWAY_JWT_SECRET", SECRET),
            ("GATEWAY_TOKEN", "t"),
            ("GATEWAY_PASSWORD", "p"),
        ]);
        assert_eq!(AuthMode::resolve(&c, &all).unwrap().name(), "jwt");
        let tp = env(&[("GATEWAY_TOKEN", "t"), ("GATEWAY_PASSWORD", "p")]);
        assert_eq!(
            AuthMode::resolve(&c, &tp).unwrap(),
            AuthMode::Token("t".into())
        );
        let p = env(&[("GATEWAY_PASSWORD", "p")]);
        assert_eq!(
            AuthMode::resolve(&c, &p).unwrap(),
            AuthMode::Password("p".into())
        );
        assert_eq!(AuthMode::resolve(&c, &env(&[])).unwrap(), AuthMode::Open);
    }

    #[test]
    fn config_secrets_count_and_the_environment_wins() {
        let c = GatewayConfig {
            token: Some(Secret("from-config".into())),
            ..Default::default()
        };
        assert_eq!(
            AuthMode::resolve(&c, &env(&[])).unwrap(),
            AuthMode::Token("from-config".into())
        );
        assert_eq!(
            AuthMode::resolve(&c, &env(&[("GATEWAY_TOKEN", "env")])).unwrap(),
            AuthMode::Token("env".into())
        );
        assert!(format!("{c:?}").contains("<redacted>"));
        assert!(!format!("{c:?}").contains("from-config"));
    }

    #[test]
    fn empty_or_short_secrets_are_errors() {
        let c = GatewayConfig::default();
        assert!(AuthMode::resolve(&c, &env(&[("GATEWAY_JWT_SECRET", "")])).is_err());
        assert!(AuthMode::resolve(&c, &env(&[("GATEWAY_JWT_SECRET", "short")])).is_err());
        assert!(AuthMode::resolve(&c, &env(&[("GATEWAY_PASSWORD", "")])).is_err());
        // The error names where the value came from, never the value.
        let e = AuthMode::resolve(&c, &env(&[("GATEWAY_JWT_SECRET", "short")])).unwrap_err();
        assert_eq!(e.key, "GATEWAY_JWT_SECRET");
        assert!(!e.to_string().contains("short\""), "{e}");
        let from_config = GatewayConfig {
            password: Some(Secret(String::new())),
            ..Default::default()
        };
        let e = AuthMode::resolve(&from_config, &env(&[])).unwrap_err();
        assert_eq!(e.key, "gateway.password");
    }

    #[test]
    fn open_mode_refuses_non_loopback() {
        let open = AuthMode::Open;
        assert!(
            open.check_bind(&"127.0.0.1:1".parse().unwrap(), false)
                .is_ok()
        );
        assert!(
            open.check_bind(&"0.0.0.0:1".parse().unwrap(), false)
                .is_err()
        );
        assert!(open.check_bind(&"0.0.0.0:1".parse().unwrap(), true).is_ok());
        let token = AuthMode::Token("t".into());
        assert!(
            token
                .check_bind(&"0.0.0.0:1".parse().unwrap(), false)
                .is_ok()
        );
    }

    #[test]
    fn origins_are_checked() {
        assert!(validate_origin("https://app.example.com").is_ok());
        assert!(validate_origin("http://localhost:3000").is_ok());
        for bad in [
            "*",
            "app.example.com",
            "https://a.com/path",
            "ftp://a.com",
            "https://a.com/",
        ] {
            assert!(validate_origin(bad).is_err(), "{bad}");
        }
    }
}
