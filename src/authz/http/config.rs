//! `plugins.envoy_ext_authz_http`: the HTTP authorization listener's settings.

use serde::Deserialize;

use crate::invalid::Invalid;
use crate::listen::ListenAddr;
use crate::tls::TlsConfig;

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
    /// One listener for several proxies: the mode chosen by the authorization request's path
    /// (longest `path_prefix` wins; a path under none is answered 404). With `routes`, the
    /// top-level `mode` and `path_prefix` stay unset.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// HTTPS, and client certificates (`input.tls_client`), as on the other listeners.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// One entry of `routes`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// `/segments`, without a trailing `/`: the route serves this path and the paths below it.
    pub path_prefix: String,
    /// How requests on this route are read; in `envoy` mode the prefix is stripped from the
    /// path, as the top-level `path_prefix` is.
    #[serde(default)]
    pub mode: Mode,
}

/// Whether `path` is `prefix` or below it (`/a` serves `/a` and `/a/b`, not `/ab`).
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether `p` is a path prefix as `path_prefix` takes it: `/segments` without a trailing `/`,
/// with no `?`, `#`, `%` and no empty, `.` or `..` segment.
fn valid_prefix(p: &str) -> bool {
    p.starts_with('/')
        && !p.ends_with('/')
        && !p.contains(['?', '#', '%'])
        && !p
            .split('/')
            .skip(1)
            .any(|s| s.is_empty() || s == "." || s == "..")
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
            routes: Vec::new(),
            tls: None,
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

    /// The mode and the prefix to strip (envoy mode) for an authorization request on `path`:
    /// the longest route `path` is under, or without routes the top-level `mode` and
    /// `path_prefix`. `None`: no route serves `path`.
    pub fn route(&self, path: &str) -> Option<(Mode, &str)> {
        if self.routes.is_empty() {
            return Some((self.mode, self.path_prefix.as_str()));
        }
        self.routes
            .iter()
            .filter(|r| under(path, &r.path_prefix))
            .max_by_key(|r| r.path_prefix.len())
            .map(|r| (r.mode, r.path_prefix.as_str()))
    }

    /// The body limit, when the body is read.
    pub fn body_limit(&self) -> Option<usize> {
        self.with_body.filter(|n| *n > 0)
    }

    /// Checks every value; keys are relative to the section.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.socket_addr()?;
        let p = &self.path_prefix;
        if !p.is_empty() && !valid_prefix(p) {
            return Err(Invalid::new(
                "path_prefix",
                format!("expected empty or a path like /ext_authz without a trailing /, got {p:?}"),
            ));
        }
        self.validate_routes()?;
        if let Some(tls) = &self.tls {
            tls.validate().map_err(|e| e.under("tls"))?;
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

    /// `routes`: each prefix valid and distinct, the top-level `mode`/`path_prefix` unset, and
    /// no route below an `envoy` or `auto` route's prefix (there the rest of the path is the
    /// client's: a client of that proxy could choose the other route, and its trusted headers).
    fn validate_routes(&self) -> Result<(), Invalid> {
        if self.routes.is_empty() {
            return Ok(());
        }
        if !self.path_prefix.is_empty() {
            return Err(Invalid::new(
                "path_prefix",
                "is set beside routes: give each route its own path_prefix",
            ));
        }
        if self.mode != Mode::Auto {
            return Err(Invalid::new(
                "mode",
                "is set beside routes: give each route its own mode",
            ));
        }
        for (i, r) in self.routes.iter().enumerate() {
            let key = format!("routes[{i}].path_prefix");
            let p = &r.path_prefix;
            if !valid_prefix(p) {
                return Err(Invalid::new(
                    key,
                    format!(
                        "expected a path like /nginx (starting with /, no trailing /), got {p:?}"
                    ),
                ));
            }
            for (j, other) in self.routes.iter().enumerate().take(i) {
                if other.path_prefix == *p {
                    return Err(Invalid::new(
                        key,
                        format!("{p:?} is also routes[{j}].path_prefix"),
                    ));
                }
            }
            for (j, other) in self.routes.iter().enumerate() {
                if j != i
                    && matches!(other.mode, Mode::Envoy | Mode::Auto)
                    && under(p, &other.path_prefix)
                {
                    return Err(Invalid::new(
                        key,
                        format!(
                            "{p:?} is below routes[{j}].path_prefix {:?}, whose mode ({}) takes \
                             the rest of the path from the client: a client could reach this \
                             route through it",
                            other.path_prefix,
                            other.mode.as_str()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
