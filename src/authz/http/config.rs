//! `plugins.envoy_ext_authz_http`: the HTTP authorization listener's settings.

use serde::Deserialize;

use crate::invalid::Invalid;
use crate::listen::ListenAddr;

/// The largest `with_body` accepted (64 MiB): a body is held in memory while it is decided.
pub const MAX_WITH_BODY: usize = 64 * 1024 * 1024;

/// How the listener reads the original request from the proxy's authorization request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// By which forwarding headers are present: `X-Forwarded-Uri` → `forward_auth`, the
    /// original-URI header → `nginx`, neither → `envoy`; both → refused.
    #[default]
    Auto,
    /// Envoy's `http_service`: the request line is the original method and path, below
    /// `path_prefix`.
    Envoy,
    /// NGINX `auth_request`: the original URI and method in `X-Original-URI` /
    /// `X-Original-Method` (names configurable).
    Nginx,
    /// Traefik ForwardAuth and Caddy `forward_auth`: `X-Forwarded-Method`, `-Proto`, `-Host`,
    /// `-Uri`.
    ForwardAuth,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Envoy => "envoy",
            Mode::Nginx => "nginx",
            Mode::ForwardAuth => "forward_auth",
        }
    }
}

/// `plugins.envoy_ext_authz_http`. Served only when the section is present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAuthzConfig {
    /// Where to listen (TCP): `:9192` by default. Only the proxy may reach it.
    #[serde(default = "default_addr")]
    pub addr: String,
    #[serde(default)]
    pub mode: Mode,
    /// In `envoy` mode, the prefix Envoy's `http_service.path_prefix` puts before the original
    /// path; stripped before the policy sees the path. Empty (default) or `/segments` without a
    /// trailing `/`.
    #[serde(default)]
    pub path_prefix: String,
    /// Read up to this many bytes of the authorization request's body into
    /// `attributes.request.http.body` (larger bodies are cut, `truncated_body` is true). Absent
    /// or 0: the body is not read.
    #[serde(default)]
    pub with_body: Option<usize>,
    /// NGINX mode: the header with the original request URI (path and query).
    #[serde(default = "default_uri_header")]
    pub original_uri_header: String,
    /// NGINX mode: the header with the original method (the authorization request's own method
    /// when absent).
    #[serde(default = "default_method_header")]
    pub original_method_header: String,
    /// NGINX mode: the header with the original host (`Host` when absent).
    #[serde(default = "default_host_header")]
    pub original_host_header: String,
    /// The most bytes all request headers together may take (names and values); more is
    /// answered 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// How long reading the body may take before the request is answered 408.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
}

impl Default for HttpAuthzConfig {
    fn default() -> Self {
        Self {
            addr: default_addr(),
            mode: Mode::default(),
            path_prefix: String::new(),
            with_body: None,
            original_uri_header: default_uri_header(),
            original_method_header: default_method_header(),
            original_host_header: default_host_header(),
            max_header_bytes: default_max_header_bytes(),
            body_timeout_ms: default_body_timeout_ms(),
        }
    }
}

fn default_addr() -> String {
    ":9192".into()
}
fn default_uri_header() -> String {
    "x-original-uri".into()
}
fn default_method_header() -> String {
    "x-original-method".into()
}
fn default_host_header() -> String {
    "x-original-host".into()
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}
fn default_body_timeout_ms() -> u64 {
    10_000
}

impl HttpAuthzConfig {
    /// The address to bind (TCP only).
    pub fn socket_addr(&self) -> Result<ListenAddr, Invalid> {
        match ListenAddr::parse(&self.addr).map_err(|m| Invalid::new("addr", m))? {
            a @ (ListenAddr::Tcp(_) | ListenAddr::Host(_)) => Ok(a),
            _ => Err(Invalid::new(
                "addr",
                "the HTTP authorization listener is TCP only",
            )),
        }
    }

    /// The body limit, when the body is read.
    pub fn body_limit(&self) -> Option<usize> {
        self.with_body.filter(|n| *n > 0)
    }

    /// Checks every value; keys are relative to the section.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.socket_addr()?;
        let p = &self.path_prefix;
        if !p.is_empty()
            && (!p.starts_with('/')
                || p.ends_with('/')
                || p.contains(['?', '#', '%'])
                || p.split('/')
                    .skip(1)
                    .any(|s| s.is_empty() || s == "." || s == ".."))
        {
            return Err(Invalid::new(
                "path_prefix",
                format!("expected empty or a path like /ext_authz without a trailing /, got {p:?}"),
            ));
        }
        if let Some(n) = self.with_body
            && n > MAX_WITH_BODY
        {
            return Err(Invalid::new(
                "with_body",
                format!("at most {MAX_WITH_BODY} bytes, got {n}"),
            ));
        }
        for (key, name) in [
            ("original_uri_header", &self.original_uri_header),
            ("original_method_header", &self.original_method_header),
            ("original_host_header", &self.original_host_header),
        ] {
            let parsed = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Invalid::new(key, format!("{name:?} is not a header name")))?;
            if super::HOP_BY_HOP.contains(&parsed.as_str()) || parsed == http::header::HOST {
                return Err(Invalid::new(
                    key,
                    format!("{name:?} is a header the proxy itself sets or drops"),
                ));
            }
        }
        if self.max_header_bytes < 1024 {
            return Err(Invalid::new("max_header_bytes", "must be at least 1024"));
        }
        if self.body_timeout_ms == 0 {
            return Err(Invalid::new("body_timeout_ms", "must be greater than 0"));
        }
        Ok(())
    }
}
